//! The last configuration of each service that ran: its service file and the configuration
//! files its command line names under /etc. A copy is taken once a service has stayed up for
//! a while after becoming ready (`config.stable_ms`); `service.rollback` puts the copy back
//! when a crash loop follows a change, keeping the replaced files beside it.
//!
//! Layout: `/var/lib/ghost/agent/known-good/NAME/manifest.json` (the system paths, in order)
//! and `NAME/files/N` (the contents); replaced files go to `NAME/replaced-UNIXMS/N`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::paths::GhostRoot;

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    /// System paths (`/etc/redis/redis.conf`), not host paths.
    files: Vec<String>,
    taken_ms: u64,
}

pub struct KnownGood {
    root: GhostRoot,
    dir: PathBuf,
}

impl KnownGood {
    pub fn new(root: &GhostRoot) -> KnownGood {
        KnownGood { root: root.clone(), dir: root.path("/var/lib/ghost/agent/known-good") }
    }

    /// The configuration files of `service`: its service file, and every absolute path of its
    /// `exec` (also after `=`, as in `--config=/etc/x.conf`) that is a file under /etc.
    pub fn config_files(&self, service: &str) -> Vec<String> {
        let unit = format!("/etc/ghost/services/{service}.toml");
        let mut files = vec![unit.clone()];
        let Ok(text) = std::fs::read_to_string(self.root.path(&unit)) else { return files };
        let Ok(table) = toml::from_str::<toml::Table>(&text) else { return files };
        let args = table.get("exec").and_then(toml::Value::as_array).cloned().unwrap_or_default();
        for a in args.iter().filter_map(toml::Value::as_str) {
            let path = a.rsplit_once('=').map(|(_, p)| p).unwrap_or(a);
            if let Some(system) = self.system_path(path) {
                if system.starts_with("/etc/") && self.root.path(&system).is_file() && !files.contains(&system) {
                    files.push(system);
                }
            }
        }
        files
    }

    /// A path as the running system names it: hosted, a path under the root loses the root.
    fn system_path(&self, p: &str) -> Option<String> {
        if !p.starts_with('/') {
            return None;
        }
        let root = self.root.path("/");
        match Path::new(p).strip_prefix(&root) {
            Ok(rel) if root != Path::new("/") => Some(format!("/{}", rel.display())),
            _ => Some(p.to_string()),
        }
    }

    /// Takes the copy of `service`'s configuration as it is now. Returns whether it changed.
    pub fn snapshot(&self, service: &str) -> std::io::Result<bool> {
        let files = self.config_files(service);
        let dir = self.dir.join(service);
        if self.differs(service, &files).is_empty() && dir.join("manifest.json").is_file() {
            return Ok(false);
        }
        let staging = self.dir.join(format!(".{service}.new"));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(staging.join("files"))?;
        for (i, f) in files.iter().enumerate() {
            std::fs::copy(self.root.path(f), staging.join("files").join(i.to_string()))?;
        }
        let manifest = Manifest { files, taken_ms: now_ms() };
        std::fs::write(staging.join("manifest.json"), serde_json::to_vec_pretty(&manifest)?)?;
        let old = self.dir.join(format!(".{service}.old"));
        let _ = std::fs::remove_dir_all(&old);
        if dir.exists() {
            std::fs::rename(&dir, &old)?;
        }
        std::fs::rename(&staging, &dir)?;
        // Keep the replaced-* backups of earlier rollbacks.
        if old.exists() {
            for e in std::fs::read_dir(&old)?.flatten() {
                if e.file_name().to_string_lossy().starts_with("replaced-") {
                    let _ = std::fs::rename(e.path(), dir.join(e.file_name()));
                }
            }
            let _ = std::fs::remove_dir_all(&old);
        }
        Ok(true)
    }

    fn manifest(&self, service: &str) -> Option<Manifest> {
        serde_json::from_slice(&std::fs::read(self.dir.join(service).join("manifest.json")).ok()?).ok()
    }

    /// The files whose content differs from the copy (all of them when there is none).
    fn differs(&self, service: &str, files: &[String]) -> Vec<String> {
        let Some(m) = self.manifest(service) else { return files.to_vec() };
        let mut out: Vec<String> = files.iter().filter(|f| !m.files.contains(f)).cloned().collect();
        for (i, f) in m.files.iter().enumerate() {
            let saved = std::fs::read(self.dir.join(service).join("files").join(i.to_string())).ok();
            let now = std::fs::read(self.root.path(f)).ok();
            if saved.is_none() || saved != now {
                out.push(f.clone());
            }
        }
        out
    }

    /// Puts the last configuration that ran back in place. Returns what was restored and where
    /// the replaced files went; an error when there is no copy or nothing differs.
    pub fn rollback(&self, service: &str) -> Result<Value, String> {
        let m = self.manifest(service).ok_or_else(|| format!("no configuration of `{service}` is known to have run; nothing to roll back to"))?;
        let changed = self.differs(service, &m.files);
        if changed.is_empty() {
            return Err(format!("the configuration of `{service}` is the one that last ran; nothing to roll back"));
        }
        let dir = self.dir.join(service);
        let backup = dir.join(format!("replaced-{}", now_ms()));
        std::fs::create_dir_all(&backup).map_err(|e| format!("{}: {e}", backup.display()))?;
        let mut restored = Vec::new();
        for (i, f) in m.files.iter().enumerate() {
            if !changed.contains(f) {
                continue;
            }
            let target = self.root.path(f);
            if target.exists() {
                std::fs::copy(&target, backup.join(i.to_string())).map_err(|e| format!("keeping {}: {e}", target.display()))?;
            }
            let saved = std::fs::read(dir.join("files").join(i.to_string())).map_err(|e| format!("the copy of {f}: {e}"))?;
            replace_file(&target, &saved).map_err(|e| format!("{}: {e}", target.display()))?;
            restored.push(f.clone());
        }
        let _ = std::fs::write(backup.join("manifest.json"), serde_json::to_vec_pretty(&m.files).unwrap_or_default());
        Ok(json!({ "service": service, "restored": restored, "replaced_kept_in": backup.display().to_string(), "taken_ms": m.taken_ms }))
    }
}

/// Unix time in milliseconds (the agent's one clock for records and observations).
pub fn now_ms() -> u64 {
    ghost_audit::util::unix_ms(std::time::SystemTime::now())
}

/// Writes `bytes` over `path` atomically and durably, keeping its permission bits.
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o644);
    ghost_audit::util::write_atomic(path, bytes, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_configuration_is_rolled_back_to_the_one_that_ran() {
        let dir = tempfile::tempdir().unwrap();
        let root = GhostRoot::at(dir.path());
        std::fs::create_dir_all(root.path("/etc/ghost/services")).unwrap();
        std::fs::create_dir_all(root.path("/etc/app")).unwrap();
        let conf = root.path("/etc/app/app.conf");
        std::fs::write(&conf, "port 1\n").unwrap();
        let unit = format!("exec = [\"/usr/bin/app\", \"--config={}\", \"/etc/nonexistent\"]\n", conf.display());
        std::fs::write(root.path("/etc/ghost/services/app.toml"), &unit).unwrap();
        let kg = KnownGood::new(&root);
        assert_eq!(kg.config_files("app"), vec!["/etc/ghost/services/app.toml", "/etc/app/app.conf"]);
        assert!(kg.rollback("app").unwrap_err().contains("no configuration"));
        assert!(kg.snapshot("app").unwrap());
        assert!(!kg.snapshot("app").unwrap(), "unchanged: no new copy");
        assert!(kg.rollback("app").unwrap_err().contains("nothing to roll back"));
        std::fs::write(&conf, "port oops\n").unwrap();
        let done = kg.rollback("app").unwrap();
        assert_eq!(done["restored"], json!(["/etc/app/app.conf"]));
        assert_eq!(std::fs::read_to_string(&conf).unwrap(), "port 1\n");
        let kept = PathBuf::from(done["replaced_kept_in"].as_str().unwrap());
        assert_eq!(std::fs::read_to_string(kept.join("1")).unwrap(), "port oops\n", "the bad one is kept");
        // A later snapshot keeps the backups.
        std::fs::write(&conf, "port 2\n").unwrap();
        assert!(kg.snapshot("app").unwrap());
        assert!(kept.is_dir());
    }
}
