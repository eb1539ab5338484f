//! The crucible's benchmark of PID 1 (improve/README.md, unit `swap = "reexec"`): one run is
//! 20 boots of the `ghost-init` beside this binary in hosted mode, each with 20 services
//! (`/bin/sleep`), readiness and an orderly power-off (`ghost.poweroff_after_ready=1`). The
//! crucible times whole runs from outside; this program only checks that every boot ended
//! cleanly (exit 0), and fails otherwise.

use std::process::{Command, Stdio};

const BOOTS: usize = 20;
const SERVICES: usize = 20;

fn main() {
    if let Err(e) = run() {
        eprintln!("ghost-init-bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let me = std::env::current_exe().map_err(|e| format!("where am I: {e}"))?;
    let init = me.with_file_name("ghost-init");
    if !init.is_file() {
        return Err(format!("{}: not found beside the benchmark", init.display()));
    }
    let root = std::env::temp_dir().join(format!("ghost-init-bench-{}", std::process::id()));
    let services = root.join("etc/ghost/services");
    std::fs::create_dir_all(&services).map_err(|e| format!("{}: {e}", services.display()))?;
    for i in 0..SERVICES {
        let p = services.join(format!("s{i}.toml"));
        std::fs::write(&p, "exec = [\"/bin/sleep\", \"1000\"]\nstop_timeout_s = 2\n").map_err(|e| format!("{}: {e}", p.display()))?;
    }
    let result = (0..BOOTS).try_for_each(|n| {
        let out = Command::new(&init)
            .args(["--hosted", "--root"])
            .arg(&root)
            .args(["--cmdline", "ghost.poweroff_after_ready=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("{}: {e}", init.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(format!("boot {n}: {} ({})", out.status, err.lines().last().unwrap_or("")))
        }
    });
    let _ = std::fs::remove_dir_all(&root);
    result
}
