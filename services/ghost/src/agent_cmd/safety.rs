//! Safe execution: the snapshots the gate takes around risky tool calls (ghost-snapshot).
//! What a call can touch decides what is snapshotted: the file `fs.write` writes; the
//! configuration (`/etc/ghost` and the wizard's overlay) for `shell.exec` and
//! `service.rollback`. A killed process, a freed port or cleaned temporary files are nothing a
//! snapshot can put back, so those calls run without one (and their records say none was taken).

use std::path::{Path, PathBuf};

use ghost_audit::gate::SafetyNet;
use ghost_audit::tools::ToolCall;
use ghost_snapshot::{Store, Trigger};

pub struct SnapshotNet {
    /// The system's root (`/`, or the hosted root).
    pub root: PathBuf,
}

/// The configuration a shell command or a rollback can change.
const CONFIG: [&str; 2] = ["/etc/ghost", "/var/lib/ghost/etc"];

impl SnapshotNet {
    /// `host` (a path as the tools see it) as a system path under the root.
    fn system_path(&self, host: &str) -> Result<String, String> {
        let rel = Path::new(host).strip_prefix(&self.root).map_err(|_| format!("{host} is outside the system's root {}", self.root.display()))?;
        Ok(format!("/{}", rel.display()))
    }
}

impl SafetyNet for SnapshotNet {
    fn before(&self, call: &ToolCall) -> Result<Option<String>, String> {
        let roots: Vec<String> = match call.tool.as_str() {
            "fs.write" => {
                let path = call.args.get("path").and_then(|p| p.as_str()).ok_or("args.path: missing")?;
                vec![self.system_path(path)?]
            }
            "shell.exec" | "service.rollback" => CONFIG.iter().map(|s| s.to_string()).collect(),
            _ => return Ok(None),
        };
        let store = Store::open(&self.root)?;
        let why: String = call.why.chars().take(80).collect();
        let m = store.create_covering(&roots, &[], &format!("before {}: {why}", call.tool), Trigger::BeforeAction)?;
        Ok(Some(m.id))
    }

    fn restore(&self, id: &str) -> Result<(), String> {
        Store::open(&self.root)?.restore(id).map(|_| ())
    }
}
