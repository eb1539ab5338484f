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
        // Keep the newest `keep` of them (ghost.toml [snapshots]); a failure to prune is no
        // reason to refuse the call.
        if let Err(e) = store.prune() {
            eprintln!("ghost agent: snapshots: prune: {e}");
        }
        Ok(Some(m.id))
    }

    fn restore(&self, id: &str) -> Result<(), String> {
        Store::open(&self.root)?.restore(id).map(|_| ())
    }
}

/// The hourly snapshot of ghost.toml's `[snapshots]` policy, taken in the background (hashing
/// the configuration and copying the memory database can take a while) when the newest hourly
/// one is an hour old; then the automatic ones beyond `keep` are pruned.
pub struct Hourly {
    root: PathBuf,
    next_check: std::time::Instant,
    running: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Hourly {
    pub fn new(root: PathBuf) -> Hourly {
        Hourly { root, next_check: std::time::Instant::now(), running: Default::default() }
    }

    pub fn tick(&mut self) {
        use std::sync::atomic::Ordering;
        let now = std::time::Instant::now();
        if now < self.next_check || self.running.load(Ordering::Relaxed) {
            return;
        }
        self.next_check = now + std::time::Duration::from_secs(60);
        let (root, running) = (self.root.clone(), self.running.clone());
        running.store(true, Ordering::Relaxed);
        let spawned = std::thread::Builder::new().name("agent-snapshots".into()).spawn(move || {
            let result = (|| -> Result<Option<String>, String> {
                let store = Store::open(&root)?;
                if !store.policy.hourly {
                    return Ok(None);
                }
                let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
                let newest = store.list()?.iter().filter(|m| m.trigger == Trigger::Hourly).map(|m| m.created_ms).max();
                if newest.is_some_and(|t| now_ms.saturating_sub(t) < 3_600_000) {
                    return Ok(None);
                }
                let m = store.create("hourly", Trigger::Hourly)?;
                store.prune()?;
                Ok(Some(m.id))
            })();
            match result {
                Ok(Some(id)) => eprintln!("ghost agent: hourly snapshot {id}"),
                Ok(None) => {}
                Err(e) => eprintln!("ghost agent: WARNING: hourly snapshot: {e}"),
            }
            running.store(false, Ordering::Relaxed);
        });
        if spawned.is_err() {
            self.running.store(false, Ordering::Relaxed);
        }
    }
}
