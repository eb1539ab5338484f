//! Kernel module selection: the closure of the configured modules under `modules.dep`, and a
//! fresh `modules.dep` that covers exactly the modules placed in the image.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    #[error("modules dir {dir}: cannot read {file}: {source}")]
    Read {
        dir: PathBuf,
        file: &'static str,
        source: std::io::Error,
    },
    #[error("module `{name}`{needed_by} is not in {dir}/modules.dep nor built in")]
    Missing {
        name: String,
        needed_by: String,
        dir: PathBuf,
    },
    #[error("module `{name}`: file {path} is listed in modules.dep but missing")]
    MissingFile { name: String, path: PathBuf },
    #[error(
        "modules dir {dir} is for kernel {modules_version}, but the kernel is {kernel_version}"
    )]
    WrongKernel {
        dir: PathBuf,
        modules_version: String,
        kernel_version: String,
    },
}

/// Canonical module name: file name without `.ko*`, dashes as underscores (as the kernel does).
pub fn module_name(path_or_name: &str) -> String {
    let base = path_or_name.rsplit('/').next().unwrap_or(path_or_name);
    base.split(".ko").next().unwrap_or(base).replace('-', "_")
}

/// The `modules.dep` and `modules.builtin` of one kernel's modules directory.
#[derive(Debug)]
pub struct ModuleIndex {
    pub dir: PathBuf,
    /// name → (relative path, direct dependencies as relative paths), in file order.
    entries: BTreeMap<String, (String, Vec<String>)>,
    builtin: BTreeSet<String>,
    /// modules.builtin as found, copied into the image unchanged.
    pub builtin_text: String,
}

/// The modules to place in the image, by relative path, and the files describing them.
#[derive(Debug, PartialEq, Eq)]
pub struct Selection {
    /// Relative paths (under the modules dir) of every module in the closure, sorted.
    pub files: Vec<String>,
    /// `modules.dep` restricted to `files`.
    pub modules_dep: String,
}

impl ModuleIndex {
    pub fn load(dir: &Path) -> Result<ModuleIndex, ModulesError> {
        let read = |file: &'static str| {
            std::fs::read_to_string(dir.join(file)).map_err(|source| ModulesError::Read {
                dir: dir.to_path_buf(),
                file,
                source,
            })
        };
        let dep = read("modules.dep")?;
        let builtin_text = read("modules.builtin").unwrap_or_default();
        Ok(ModuleIndex::parse(dir, &dep, builtin_text))
    }

    pub fn parse(dir: &Path, dep: &str, builtin_text: String) -> ModuleIndex {
        let mut entries = BTreeMap::new();
        for line in dep.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let deps = deps.split_whitespace().map(str::to_string).collect();
            entries.insert(module_name(path), (path.trim().to_string(), deps));
        }
        let builtin = builtin_text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(module_name)
            .collect();
        ModuleIndex {
            dir: dir.to_path_buf(),
            entries,
            builtin,
            builtin_text,
        }
    }

    /// The configured modules with all their dependencies; built-in ones need no file.
    pub fn select(&self, names: &[String]) -> Result<Selection, ModulesError> {
        let mut files = BTreeSet::new();
        let mut todo: Vec<(String, String)> = names
            .iter()
            .map(|n| (module_name(n), String::new()))
            .collect();
        while let Some((name, needed_by)) = todo.pop() {
            match self.entries.get(&name) {
                Some((path, deps)) => {
                    if files.insert(path.clone()) {
                        todo.extend(
                            deps.iter()
                                .map(|d| (module_name(d), format!(" (needed by {name})"))),
                        );
                    }
                }
                None if self.builtin.contains(&name) => {}
                None => {
                    return Err(ModulesError::Missing {
                        name,
                        needed_by,
                        dir: self.dir.clone(),
                    })
                }
            }
        }
        for rel in &files {
            let path = self.dir.join(rel);
            if !path.is_file() {
                return Err(ModulesError::MissingFile {
                    name: module_name(rel),
                    path,
                });
            }
        }
        let mut modules_dep = String::new();
        for (path, deps) in self.entries.values() {
            if files.contains(path) {
                modules_dep.push_str(&format!("{path}:"));
                for d in deps {
                    modules_dep.push(' ');
                    modules_dep.push_str(d);
                }
                modules_dep.push('\n');
            }
        }
        Ok(Selection {
            files: files.into_iter().collect(),
            modules_dep,
        })
    }

    /// Checks that these modules were built for `kernel_version`: by the `vermagic` of the
    /// selected modules, or by the directory's name when no module is selected.
    pub fn check_version(
        &self,
        selection: &Selection,
        kernel_version: &str,
    ) -> Result<(), ModulesError> {
        let wrong = |modules_version: String| ModulesError::WrongKernel {
            dir: self.dir.clone(),
            modules_version,
            kernel_version: kernel_version.to_string(),
        };
        if selection.files.is_empty() {
            let name = self
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            return if name == kernel_version {
                Ok(())
            } else {
                Err(wrong(name))
            };
        }
        for rel in &selection.files {
            let path = self.dir.join(rel);
            let bytes = std::fs::read(&path).map_err(|source| ModulesError::Read {
                dir: self.dir.clone(),
                file: "a module file",
                source,
            })?;
            // Compressed modules hide their vermagic; the directory name is then the only witness.
            let version = match vermagic(&bytes) {
                Some(v) => v,
                None => self
                    .dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            if version != kernel_version {
                return Err(wrong(version));
            }
        }
        Ok(())
    }
}

/// The kernel release in a module's `vermagic=` modinfo string (its first word).
pub fn vermagic(module: &[u8]) -> Option<String> {
    let key = b"vermagic=";
    let at = module.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &module[at..];
    let end = rest
        .iter()
        .position(|&b| b == 0 || b == b' ')
        .unwrap_or(rest.len());
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/fs/unrelated.ko:
";

    fn index(dir: &Path) -> ModuleIndex {
        for line in DEP.lines() {
            let rel = line.split(':').next().unwrap();
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"\x7fELF...vermagic=6.1.0-test SMP mod_unload \0").unwrap();
        }
        ModuleIndex::parse(dir, DEP, "kernel/fs/ext4/ext4.ko\n".into())
    }

    #[test]
    fn closure_follows_dependencies_and_dep_file_covers_exactly_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = index(dir.path())
            .select(&["virtio_net".into(), "ext4".into()])
            .unwrap();
        assert_eq!(
            s.files,
            [
                "kernel/drivers/net/net_failover.ko",
                "kernel/drivers/net/virtio_net.ko",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/net/core/failover.ko",
            ]
        );
        let dep_paths: Vec<&str> = s
            .modules_dep
            .lines()
            .map(|l| l.split(':').next().unwrap())
            .collect();
        let mut sorted = dep_paths.clone();
        sorted.sort();
        assert_eq!(sorted, s.files);
        assert!(s
            .modules_dep
            .contains("kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n"));
    }

    #[test]
    fn dashes_and_underscores_name_the_same_module() {
        let dir = tempfile::tempdir().unwrap();
        let s = index(dir.path()).select(&["virtio-pci".into()]).unwrap();
        assert_eq!(s.files.len(), 5);
    }

    #[test]
    fn a_missing_module_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = index(dir.path())
            .select(&["virtio_blk".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`virtio_blk`") && err.contains("modules.dep"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_dependency_names_who_needs_it() {
        let dir = tempfile::tempdir().unwrap();
        let idx = ModuleIndex::parse(dir.path(), "kernel/a.ko: kernel/b.ko\n", String::new());
        std::fs::create_dir_all(dir.path().join("kernel")).unwrap();
        std::fs::write(dir.path().join("kernel/a.ko"), b"").unwrap();
        let err = idx.select(&["a".into()]).unwrap_err().to_string();
        assert!(err.contains("`b` (needed by a)"), "{err}");
    }

    #[test]
    fn version_is_checked_against_vermagic() {
        let dir = tempfile::tempdir().unwrap();
        let idx = index(dir.path());
        let s = idx.select(&["virtio".into()]).unwrap();
        idx.check_version(&s, "6.1.0-test").unwrap();
        let err = idx
            .check_version(&s, "6.1.0-other")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is for kernel 6.1.0-test, but the kernel is 6.1.0-other"),
            "{err}"
        );
    }
}
