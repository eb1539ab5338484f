//! `ghost-audit`: the agent's identity, constitution, typed tools, policy, approval queue and
//! hash-chained signed audit trail. A library for `ghost agent`; nothing here talks to the
//! control socket or the model.
//!
//! - [`identity`]: UUID v7 + name + creation time, and the ed25519 key on the state partition.
//! - [`constitution`]: `/etc/ghost/constitution.toml` and the [`constitution::RateLimiter`].
//! - [`tools`]: tool specifications with JSON schemas, argument validation, the executor.
//! - [`policy`]: `decide(call, mode, constitution, registry)` → allow / ask / deny.
//! - [`approvals`]: the queue behind `ghostctl approve|deny ID`.
//! - [`audit`]: the append-only trail and `verify`.
//! - [`gate`]: the whole path of one call — decide, audit, queue or run, audit the outcome.

pub mod approvals;
pub mod audit;
pub mod constitution;
pub mod gate;
pub mod identity;
pub mod policy;
pub mod tools;
pub mod util;

use std::path::{Path, PathBuf};

/// Where this crate's files live under a root (`/`, or `GHOST_ROOT` / `--root` when hosted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `/etc/ghost/constitution.toml`
    pub constitution: PathBuf,
    /// `/var/lib/ghost/agent/`: identity.json, agent.key, agent.pub
    pub identity_dir: PathBuf,
    /// `/var/lib/ghost/audit/`
    pub audit_dir: PathBuf,
    /// `/var/log/ghost/`: service logs for `log.tail {"service": NAME}`
    pub log_dir: PathBuf,
}

impl Paths {
    pub fn under(root: &Path) -> Paths {
        Paths {
            constitution: root.join("etc/ghost/constitution.toml"),
            identity_dir: root.join("var/lib/ghost/agent"),
            audit_dir: root.join("var/lib/ghost/audit"),
            log_dir: root.join("var/log/ghost"),
        }
    }

    /// The state paths to add to the protected ones when the root is not `/` (the built-in
    /// list names them under `/`): append to `Constitution::protected_paths` and
    /// `ExecConfig::protected_paths`.
    pub fn protected(&self) -> Vec<String> {
        [&self.identity_dir, &self.audit_dir]
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|p| !policy::paths::PROTECTED.contains(&p.as_str()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_a_root() {
        let p = Paths::under(Path::new("/"));
        assert_eq!(p.audit_dir, Path::new("/var/lib/ghost/audit"));
        assert!(p.protected().is_empty());
        let h = Paths::under(Path::new("/tmp/r"));
        assert_eq!(h.constitution, Path::new("/tmp/r/etc/ghost/constitution.toml"));
        assert_eq!(h.protected(), vec!["/tmp/r/var/lib/ghost/agent", "/tmp/r/var/lib/ghost/audit"]);
    }
}
