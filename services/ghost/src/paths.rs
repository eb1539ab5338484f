//! The files of DESIGN.md section 3, under `GHOST_ROOT` (default `/`) so the whole userland
//! runs hosted, as `--root` does for ghost-init.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct GhostRoot(PathBuf);

impl GhostRoot {
    pub fn from_env() -> GhostRoot {
        GhostRoot(std::env::var_os("GHOST_ROOT").filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/")))
    }

    /// The root at `dir` (tests).
    #[cfg(test)]
    pub fn at(dir: &Path) -> GhostRoot {
        GhostRoot(dir.to_path_buf())
    }

    /// The root itself (`/` on a real system).
    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// `abs` (a path of the running system, e.g. `/etc/ghost/model.toml`) under the root.
    pub fn path(&self, abs: &str) -> PathBuf {
        self.0.join(Path::new(abs).strip_prefix("/").unwrap_or(Path::new(abs)))
    }

    /// A file of /etc/ghost (`ghost.toml`, `model.toml`), or the first-boot wizard's copy on
    /// the state partition (/var/lib/ghost/etc/NAME) when there is one: the overlay ghost-init
    /// reads the same way (init/src/paths.rs `etc`).
    pub fn etc(&self, name: &str) -> PathBuf {
        let over = self.path("/var/lib/ghost/etc").join(name);
        if over.exists() {
            over
        } else {
            self.path("/etc/ghost").join(name)
        }
    }

    pub fn model_toml(&self) -> PathBuf {
        self.etc("model.toml")
    }

    pub fn models_dir(&self) -> PathBuf {
        self.path("/var/lib/ghost/models")
    }

    /// The intelligence router's budget ledger and call log.
    pub fn router_dir(&self) -> PathBuf {
        self.path("/var/lib/ghost/router")
    }

    /// A path of the running system (from a configuration file) under the root; a relative
    /// path is left as it is.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        match p.strip_prefix("/") {
            Ok(rel) => self.0.join(rel),
            Err(_) => p.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_live_under_the_root() {
        let r = GhostRoot(PathBuf::from("/tmp/r"));
        assert_eq!(r.models_dir(), Path::new("/tmp/r/var/lib/ghost/models"));
        assert_eq!(GhostRoot(PathBuf::from("/")).model_toml(), Path::new("/etc/ghost/model.toml"));
        assert_eq!(r.router_dir(), Path::new("/tmp/r/var/lib/ghost/router"));
        assert_eq!(r.resolve(Path::new("/etc/ghost/keys/k")), Path::new("/tmp/r/etc/ghost/keys/k"));
        assert_eq!(GhostRoot(PathBuf::from("/")).resolve(Path::new("/run/ghost/model.sock")), Path::new("/run/ghost/model.sock"));
    }

    #[test]
    fn the_wizards_model_toml_overlays_the_images() {
        let d = tempfile::tempdir().unwrap();
        let r = GhostRoot::at(d.path());
        assert_eq!(r.model_toml(), d.path().join("etc/ghost/model.toml"));
        std::fs::create_dir_all(d.path().join("var/lib/ghost/etc")).unwrap();
        std::fs::write(d.path().join("var/lib/ghost/etc/model.toml"), "offline = true\n").unwrap();
        assert_eq!(r.model_toml(), d.path().join("var/lib/ghost/etc/model.toml"));
    }
}
