//! Kernel modules: resolve names through `modules.dep` of the running kernel and load them,
//! dependencies first, from `.ko`, `.ko.xz` or `.ko.zst` files.
//!
//! Compressed modules go to finit_module(2) with MODULE_INIT_COMPRESSED_FILE where the kernel
//! decompresses itself (Linux 6.2+ with CONFIG_MODULE_DECOMPRESS); otherwise PID 1 decompresses
//! in-process and uses init_module(2). The loader is a trait so that resolution and the
//! fallback are tested on a fake module tree without root.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Xz,
    Zstd,
}

impl Compression {
    pub fn of(path: &str) -> Option<Compression> {
        if path.ends_with(".ko") {
            Some(Compression::None)
        } else if path.ends_with(".ko.xz") {
            Some(Compression::Xz)
        } else if path.ends_with(".ko.zst") {
            Some(Compression::Zstd)
        } else {
            None
        }
    }
}

/// Canonical module name: file name without `.ko*`, dashes as underscores (as the kernel does).
pub fn module_name(path_or_name: &str) -> String {
    let base = path_or_name.rsplit('/').next().unwrap_or(path_or_name);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

/// `modules.dep` of one kernel: for each module, its file (relative) and direct dependencies.
#[derive(Debug, Default)]
pub struct ModulesDep {
    entries: HashMap<String, (String, Vec<String>)>,
    builtin: HashSet<String>,
}

impl ModulesDep {
    pub fn parse(dep: &str, builtin: &str) -> ModulesDep {
        let mut entries = HashMap::new();
        for line in dep.lines() {
            let Some((file, deps)) = line.split_once(':') else { continue };
            let file = file.trim();
            if Compression::of(file).is_none() {
                continue;
            }
            let deps = deps.split_whitespace().map(module_name).collect();
            entries.insert(module_name(file), (file.to_string(), deps));
        }
        let builtin = builtin.lines().map(str::trim).filter(|l| !l.is_empty()).map(module_name).collect();
        ModulesDep { entries, builtin }
    }

    /// Reads `DIR/modules.dep` and `DIR/modules.builtin` (the latter optional).
    pub fn load(dir: &Path) -> Result<ModulesDep, String> {
        let dep_path = dir.join("modules.dep");
        let dep = std::fs::read_to_string(&dep_path).map_err(|e| format!("{}: {e}", dep_path.display()))?;
        let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
        Ok(ModulesDep::parse(&dep, &builtin))
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&module_name(name))
    }

    /// The files to load for `name`, dependencies first, each once; built-in modules need none.
    pub fn resolve(&self, name: &str) -> Result<Vec<String>, String> {
        let name = module_name(name);
        if self.is_builtin(&name) && !self.entries.contains_key(&name) {
            return Ok(Vec::new());
        }
        let mut order = Vec::new();
        let mut done = HashSet::new();
        let mut path = Vec::new();
        self.visit(&name, &mut order, &mut done, &mut path)?;
        Ok(order)
    }

    fn visit(&self, name: &str, order: &mut Vec<String>, done: &mut HashSet<String>, path: &mut Vec<String>) -> Result<(), String> {
        if done.contains(name) || self.is_builtin(name) && !self.entries.contains_key(name) {
            return Ok(());
        }
        if path.iter().any(|p| p == name) {
            return Err(format!("dependency cycle: {} -> {name}", path.join(" -> ")));
        }
        let Some((file, deps)) = self.entries.get(name) else {
            return Err(match path.last() {
                Some(parent) => format!("module {name} (needed by {parent}) is not in modules.dep"),
                None => format!("module {name} is not in modules.dep"),
            });
        };
        path.push(name.to_string());
        // modules.dep lists the deepest dependency last; load from the end, as modprobe does.
        for dep in deps.iter().rev() {
            self.visit(dep, order, done, path)?;
        }
        path.pop();
        done.insert(name.to_string());
        order.push(file.clone());
        Ok(())
    }
}

/// How a module reaches the kernel.
pub trait Loader {
    /// finit_module(2) on an open file, with MODULE_INIT_COMPRESSED_FILE when `compressed`.
    fn load_file(&mut self, file: &std::fs::File, compressed: bool) -> Result<(), i32>;
    /// init_module(2) on a decompressed image.
    fn load_image(&mut self, image: &[u8]) -> Result<(), i32>;
}

/// The outcome of loading one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    Loaded,
    /// The kernel decompressed it.
    LoadedKernelDecompressed,
    /// PID 1 decompressed it (the kernel could not).
    LoadedDecompressedHere,
    AlreadyLoaded,
}

/// Loads one module file (path relative to `dir`).
pub fn load_one(loader: &mut dyn Loader, dir: &Path, rel: &str) -> Result<Loaded, String> {
    let path: PathBuf = dir.join(rel);
    let kind = Compression::of(rel).ok_or_else(|| format!("{}: not a .ko, .ko.xz or .ko.zst file", path.display()))?;
    let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let errno_text = |e: i32| format!("{}: {}", path.display(), std::io::Error::from_raw_os_error(e));
    if kind == Compression::None {
        return match loader.load_file(&file, false) {
            Ok(()) => Ok(Loaded::Loaded),
            Err(libc::EEXIST) => Ok(Loaded::AlreadyLoaded),
            Err(e) => Err(errno_text(e)),
        };
    }
    match loader.load_file(&file, true) {
        Ok(()) => return Ok(Loaded::LoadedKernelDecompressed),
        Err(libc::EEXIST) => return Ok(Loaded::AlreadyLoaded),
        // EINVAL: the flag is unknown (before 6.2); EOPNOTSUPP: no CONFIG_MODULE_DECOMPRESS.
        // ENOSYS: no finit_module at all. In each case the kernel wants the plain image.
        Err(libc::EINVAL) | Err(libc::EOPNOTSUPP) | Err(libc::ENOSYS) => {}
        Err(e) => return Err(errno_text(e)),
    }
    let image = decompress(file, kind).map_err(|e| format!("{}: cannot decompress: {e}", path.display()))?;
    match loader.load_image(&image) {
        Ok(()) => Ok(Loaded::LoadedDecompressedHere),
        Err(libc::EEXIST) => Ok(Loaded::AlreadyLoaded),
        Err(e) => Err(errno_text(e)),
    }
}

/// Decompresses a whole module; modules are a few MiB at most, so memory is bounded by the file.
pub fn decompress(file: std::fs::File, kind: Compression) -> Result<Vec<u8>, String> {
    let mut input = std::io::BufReader::new(file);
    let mut out = Vec::new();
    match kind {
        Compression::None => input.read_to_end(&mut out).map(|_| ()).map_err(|e| e.to_string())?,
        Compression::Xz => lzma_rs::xz_decompress(&mut input, &mut out).map_err(|e| format!("xz: {e:?}"))?,
        Compression::Zstd => {
            let mut dec = ruzstd::decoding::StreamingDecoder::new(&mut input).map_err(|e| format!("zstd: {e}"))?;
            dec.read_to_end(&mut out).map_err(|e| format!("zstd: {e}"))?;
        }
    }
    Ok(out)
}

/// Names of the modules the kernel has loaded, from /proc/modules.
pub fn loaded_modules(proc_modules: &str) -> HashSet<String> {
    proc_modules.lines().filter_map(|l| l.split_whitespace().next()).map(module_name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.zst kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko.zst: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/a/cyc-a.ko: kernel/drivers/a/cyc_b.ko
kernel/drivers/a/cyc_b.ko: kernel/drivers/a/cyc-a.ko
kernel/drivers/x/broken.ko: kernel/drivers/x/gone.ko
not a module line
";
    const BUILTIN: &str = "kernel/fs/ext4/ext4.ko\nkernel/lib/crc32c.ko\n";

    #[test]
    fn names_are_canonical() {
        assert_eq!(module_name("kernel/drivers/a/cyc-a.ko.zst"), "cyc_a");
        assert_eq!(module_name("virtio-net"), "virtio_net");
    }

    #[test]
    fn resolves_dependencies_first_each_once() {
        let d = ModulesDep::parse(DEP, BUILTIN);
        assert_eq!(
            d.resolve("virtio-net").unwrap(),
            [
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/net/core/failover.ko",
                "kernel/drivers/net/net_failover.ko.zst",
                "kernel/drivers/net/virtio_net.ko.xz",
            ]
        );
    }

    #[test]
    fn builtin_needs_nothing_and_unknowns_are_named() {
        let d = ModulesDep::parse(DEP, BUILTIN);
        assert_eq!(d.resolve("ext4").unwrap(), Vec::<String>::new());
        assert_eq!(d.resolve("nosuch").unwrap_err(), "module nosuch is not in modules.dep");
        assert_eq!(d.resolve("broken").unwrap_err(), "module gone (needed by broken) is not in modules.dep");
        assert!(d.resolve("cyc_a").unwrap_err().contains("cycle"));
    }

    /// Records what reached the "kernel"; can pretend the kernel cannot decompress.
    struct FakeKernel {
        can_decompress: bool,
        files: Vec<bool>,
        images: Vec<Vec<u8>>,
    }

    impl Loader for FakeKernel {
        fn load_file(&mut self, _f: &std::fs::File, compressed: bool) -> Result<(), i32> {
            if compressed && !self.can_decompress {
                return Err(libc::EINVAL);
            }
            self.files.push(compressed);
            Ok(())
        }
        fn load_image(&mut self, image: &[u8]) -> Result<(), i32> {
            if self.images.iter().any(|i| i == image) {
                return Err(libc::EEXIST);
            }
            self.images.push(image.to_vec());
            Ok(())
        }
    }

    fn fake_tree() -> (tempfile::TempDir, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..20_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let m = dir.path().join("kernel/m");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("plain.ko"), &body).unwrap();
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &body[..], &mut xz).unwrap();
        std::fs::write(m.join("x.ko.xz"), &xz).unwrap();
        let zst = ruzstd::encoding::compress_to_vec(&body[..], ruzstd::encoding::CompressionLevel::Fastest);
        std::fs::write(m.join("z.ko.zst"), &zst).unwrap();
        std::fs::write(m.join("bad.ko.zst"), b"not zstd at all").unwrap();
        (dir, body)
    }

    #[test]
    fn kernel_decompression_is_used_where_the_kernel_has_it() {
        let (dir, _) = fake_tree();
        let mut k = FakeKernel { can_decompress: true, files: vec![], images: vec![] };
        assert_eq!(load_one(&mut k, dir.path(), "kernel/m/plain.ko").unwrap(), Loaded::Loaded);
        assert_eq!(load_one(&mut k, dir.path(), "kernel/m/x.ko.xz").unwrap(), Loaded::LoadedKernelDecompressed);
        assert_eq!(load_one(&mut k, dir.path(), "kernel/m/z.ko.zst").unwrap(), Loaded::LoadedKernelDecompressed);
        assert_eq!(k.files, [false, true, true]);
        assert!(k.images.is_empty());
    }

    #[test]
    fn decompresses_in_process_when_the_kernel_cannot() {
        let (dir, body) = fake_tree();
        let mut k = FakeKernel { can_decompress: false, files: vec![], images: vec![] };
        assert_eq!(load_one(&mut k, dir.path(), "kernel/m/x.ko.xz").unwrap(), Loaded::LoadedDecompressedHere);
        assert_eq!(load_one(&mut k, dir.path(), "kernel/m/z.ko.zst").unwrap(), Loaded::AlreadyLoaded);
        assert_eq!(k.images, [body]);
        let err = load_one(&mut k, dir.path(), "kernel/m/bad.ko.zst").unwrap_err();
        assert!(err.contains("bad.ko.zst") && err.contains("cannot decompress"), "{err}");
        let err = load_one(&mut k, dir.path(), "kernel/m/missing.ko").unwrap_err();
        assert!(err.contains("missing.ko"), "{err}");
    }

    #[test]
    fn proc_modules_names() {
        let l = loaded_modules("virtio_net 61440 0 - Live 0x0\nfailover 16384 1 net_failover, Live 0x0\n");
        assert!(l.contains("virtio_net") && l.contains("failover") && l.len() == 2);
    }
}
