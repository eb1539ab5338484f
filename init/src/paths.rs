//! Where things live: the paths of DESIGN.md section 3, under `/` as PID 1 or under `--root`
//! in hosted mode.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Paths {
    root: PathBuf,
}

impl Paths {
    pub fn new(root: impl Into<PathBuf>) -> Paths {
        Paths { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `rel` (given without a leading slash) under the root.
    pub fn at(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    pub fn state(&self) -> PathBuf {
        self.at("var/lib/ghost")
    }

    /// A file of /etc/ghost, as overlaid by the wizard's copy on the state partition.
    pub fn etc(&self, rel: &str) -> PathBuf {
        let over = self.state().join("etc").join(rel);
        if over.exists() {
            over
        } else {
            self.at("etc/ghost").join(rel)
        }
    }

    pub fn services_dirs(&self) -> [PathBuf; 2] {
        [self.at("etc/ghost/services"), self.state().join("etc/services")]
    }

    pub fn run(&self) -> PathBuf {
        self.at("run/ghost")
    }

    pub fn control_socket(&self) -> PathBuf {
        self.run().join("control.sock")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.at("var/log/ghost")
    }

    pub fn first_boot_marker(&self) -> PathBuf {
        self.state().join(".ghost-first-boot-done")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_wins_when_present() {
        let d = tempfile::tempdir().unwrap();
        let p = Paths::new(d.path());
        assert_eq!(p.etc("ghost.toml"), d.path().join("etc/ghost/ghost.toml"));
        std::fs::create_dir_all(d.path().join("var/lib/ghost/etc")).unwrap();
        std::fs::write(d.path().join("var/lib/ghost/etc/ghost.toml"), "").unwrap();
        assert_eq!(p.etc("ghost.toml"), d.path().join("var/lib/ghost/etc/ghost.toml"));
        assert_eq!(Paths::new("/").control_socket(), PathBuf::from("/run/ghost/control.sock"));
    }
}
