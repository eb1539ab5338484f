//! `ghost-image build`: checks every input first, builds the initramfs, the UKI, the ESP,
//! the state file system and the disk in a temporary directory beside `--out`, and moves
//! the finished files into `--out` only when all of them exist.

use crate::disk::{self, DiskIds};
use crate::gpt::Guid;
use crate::kernel::Kernel;
use crate::modules::{ModuleIndex, Selection};
use crate::{cpio::Archive, ext4, fat, initramfs, libs, uki};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const INITRAMFS: &str = "initramfs.cpio.zst";
pub const UKI: &str = "ghostos.efi";
pub const DISK: &str = "disk.img";
/// The command line baked into the UKI, also written out for `qemu/run --direct`.
pub const CMDLINE: &str = "cmdline";
/// tty0 first so `--gui` shows the kernel log; ttyS0 last, so it is /dev/console.
/// panic=-1: a kernel panic reboots at once, which QEMU's -no-reboot turns into an exit.
pub const DEFAULT_CMDLINE: &str = "console=tty0 console=ttyS0 panic=-1";
const MIB: u64 = 1 << 20;

/// Everything `build` takes; nothing else (clock, environment) is read.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub kernel: PathBuf,
    pub modules: PathBuf,
    pub init: PathBuf,
    pub bins: Vec<PathBuf>,
    pub extra_binaries: Vec<PathBuf>,
    pub initramfs_tree: PathBuf,
    /// Source trees (destination in the initramfs, directory) placed without target/ and .git/.
    pub sources: Vec<(String, PathBuf)>,
    pub cmdline: String,
    pub preseed_model: Option<PathBuf>,
    pub stub: PathBuf,
    /// Mtime of every file in the outputs, and the seed of their GUIDs with the contents.
    pub epoch: u64,
    pub zstd_level: i32,
    /// Size of the state partition in MiB; `None`: 256 MiB or what the preseed needs.
    pub state_mib: Option<u64>,
    pub out: PathBuf,
}

/// Sizes and times, for the summary line.
#[derive(Debug, Default)]
pub struct Summary {
    pub initramfs_raw: u64,
    pub initramfs: u64,
    pub uki: u64,
    pub esp: u64,
    pub state: u64,
    pub disk: u64,
    pub modules: usize,
    pub seconds: f64,
}

/// The inputs, read and checked, before anything is written.
struct Inputs {
    kernel: Kernel,
    archive: Archive,
    modules: Selection,
    state_bytes: u64,
}

pub fn build(o: &BuildOptions, progress: &mut dyn FnMut(&str)) -> Result<Summary> {
    let started = Instant::now();
    progress("checking inputs");
    let inputs = check_inputs(o)?;
    let parent = out_parent(&o.out)?;
    let work = tempfile::Builder::new()
        .prefix(".ghost-image-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a work directory in {}", parent.display()))?;
    let staged = work.path().join("out");
    std::fs::create_dir(&staged).with_context(|| format!("creating {}", staged.display()))?;
    let mut s = Summary {
        modules: inputs.modules.files.len(),
        ..Summary::default()
    };

    progress(&format!(
        "initramfs: {} entries, {} modules, zstd level {}",
        inputs.archive.paths().count(),
        s.modules,
        o.zstd_level
    ));
    let (initrd, raw_len) = initramfs::compress(&inputs.archive, o.epoch, o.zstd_level)?;
    write(&staged.join(INITRAMFS), &initrd)?;
    (s.initramfs_raw, s.initramfs) = (raw_len as u64, initrd.len() as u64);

    progress("UKI: kernel, initramfs, command line and os-release on the systemd EFI stub");
    let uki_path = staged.join(UKI);
    let parts = uki::UkiParts {
        kernel: &inputs.kernel.bytes,
        initrd: &initrd,
        cmdline: &o.cmdline,
        os_release: &os_release(),
    };
    uki::build(&o.stub, &parts, work.path(), &uki_path)?;
    write(&staged.join(CMDLINE), format!("{}\n", o.cmdline).as_bytes())?;
    let uki_bytes =
        std::fs::read(&uki_path).with_context(|| format!("reading {}", uki_path.display()))?;
    s.uki = uki_bytes.len() as u64;

    // Every GUID, the volume id and the hash seed follow from the bootable contents and the epoch.
    let seed = Sha256::new()
        .chain_update(&uki_bytes)
        .chain_update(o.epoch.to_le_bytes())
        .chain_update(inputs.state_bytes.to_le_bytes())
        .finalize();

    progress("ESP: FAT32 with EFI/BOOT/BOOTX64.EFI");
    let esp_path = work.path().join("esp.fat");
    // Room for a UKI rebuilt with a longer command line (qemu/run --append) next to this one.
    s.esp = ((s.uki * 5 / 4 + 8 * MIB).div_ceil(MIB) * MIB).max(64 * MIB);
    let volume_id = u32::from_le_bytes(
        Guid::derive(&seed, "esp-volume-id").0[..4]
            .try_into()
            .unwrap_or_default(),
    );
    fat::make_esp(&esp_path, s.esp, volume_id, o.epoch, &uki_path)?;

    progress(&format!(
        "state: ext4 {} of {} MiB",
        ext4::LABEL,
        inputs.state_bytes / MIB
    ));
    let state_path = work.path().join("state.ext4");
    let state_tree = match &o.preseed_model {
        Some(model) => Some(stage_preseed(model, &work.path().join("state"))?),
        None => None,
    };
    s.state = inputs.state_bytes;
    ext4::make_state(
        &state_path,
        s.state,
        Guid::derive(&seed, "state-fs-uuid"),
        Guid::derive(&seed, "state-fs-hash-seed"),
        o.epoch,
        state_tree.as_deref(),
    )?;

    progress("disk: GPT with the ESP and the state partition");
    let ids = DiskIds {
        disk: Guid::derive(&seed, "disk"),
        esp: Guid::derive(&seed, "esp"),
        state: Guid::derive(&seed, "state"),
    };
    s.disk = disk::assemble(&staged.join(DISK), &esp_path, &state_path, &ids)?;

    publish(&staged, &o.out)?;
    s.seconds = started.elapsed().as_secs_f64();
    Ok(s)
}

fn check_inputs(o: &BuildOptions) -> Result<Inputs> {
    let kernel = Kernel::load(&o.kernel)?;
    let index = ModuleIndex::load(&o.modules)?;
    let config_path = o.initramfs_tree.join("etc/ghost/ghost.toml");
    let wanted = configured_modules(&config_path)?;
    let modules = index.select(&wanted)?;
    index.check_version(&modules, &kernel.release)?;
    std::fs::metadata(&o.stub).with_context(|| {
        format!(
            "EFI stub {}: cannot read (Debian package: systemd-boot-efi)",
            o.stub.display()
        )
    })?;
    if !o.initramfs_tree.is_dir() {
        bail!(
            "initramfs tree {}: not a directory",
            o.initramfs_tree.display()
        );
    }

    let init = std::fs::read(&o.init)
        .with_context(|| format!("init {}: cannot read", o.init.display()))?;
    if !init.starts_with(b"\x7fELF") {
        bail!("init {}: not an ELF executable", o.init.display());
    }
    let mut archive = initramfs::skeleton(Vec::new());
    initramfs::add_tree(&mut archive, &o.initramfs_tree)?;
    for (dest, dir) in &o.sources {
        if !dir.is_dir() {
            bail!("source {}: not a directory (for {dest})", dir.display());
        }
        initramfs::add_source_tree(&mut archive, dir, dest)?;
    }
    for bin in o.bins.iter().chain(&o.extra_binaries) {
        let needs = libs::runtime_files(bin)?;
        initramfs::add_binary(&mut archive, bin, &needs)?;
    }
    // The init's own libraries, should it be linked dynamically (ghost-init is static).
    let init_needs = libs::runtime_files(&o.init)?;
    for lib in &init_needs {
        let data = std::fs::read(lib)
            .with_context(|| format!("init {}: reading {}", o.init.display(), lib.display()))?;
        archive.insert(
            &lib.to_string_lossy(),
            crate::cpio::Entry::file(data, 0o755),
        );
    }
    archive.insert("init", crate::cpio::Entry::file(init, 0o755));
    initramfs::add_modules(&mut archive, &index, &modules, &kernel.release)?;

    let preseed_bytes = match &o.preseed_model {
        Some(dir) => tree_bytes(dir).with_context(|| format!("preseed model {}", dir.display()))?,
        None => 0,
    };
    // ext4 metadata and the journal take up to about 10% plus 32 MiB on small file systems.
    let needed = preseed_bytes + preseed_bytes / 10 + 32 * MIB;
    let state_bytes = match o.state_mib {
        Some(mib) if mib * MIB < needed => bail!(
            "state partition of {mib} MiB is too small for its contents: the preseed model {} needs at least {} MiB",
            o.preseed_model.as_deref().unwrap_or(Path::new("(none)")).display(),
            needed.div_ceil(MIB)
        ),
        Some(mib) => mib * MIB,
        None => needed.div_ceil(MIB).max(256) * MIB,
    };
    Ok(Inputs {
        kernel,
        archive,
        modules,
        state_bytes,
    })
}

/// The `modules` list of ghost.toml in the initramfs tree (none if the file is absent).
fn configured_modules(path: &Path) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(default)]
        modules: Vec<String>,
    }
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(toml::from_str::<Config>(&text)
            .with_context(|| format!("{}: reading `modules`", path.display()))?
            .modules),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub fn os_release() -> String {
    format!(
        "NAME=\"ghostos\"\nID=ghostos\nPRETTY_NAME=\"ghostos {v}\"\nVERSION_ID={v}\nHOME_URL=\"https://github.com/ghostos\"\n",
        v = env!("CARGO_PKG_VERSION")
    )
}

fn tree_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let meta = e.path().symlink_metadata()?;
        total += if meta.is_dir() {
            tree_bytes(&e.path())? + 4096
        } else {
            meta.len().div_ceil(4096) * 4096
        };
    }
    Ok(total)
}

/// Places the model directory at `models/NAME` of a staging tree for `mke2fs -d`. Files
/// are hard-linked where possible (a model is large); their times are fixed in the image.
fn stage_preseed(model: &Path, staging: &Path) -> Result<PathBuf> {
    let name = model
        .file_name()
        .with_context(|| format!("preseed model {}: has no directory name", model.display()))?;
    link_tree(model, &staging.join("models").join(name))
        .with_context(|| format!("staging preseed model {}", model.display()))?;
    Ok(staging.to_path_buf())
}

fn link_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let src = e?.path();
        let target = to.join(src.file_name().unwrap_or_default());
        let meta = src.symlink_metadata()?;
        if meta.is_dir() {
            link_tree(&src, &target)?;
        } else if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &target)?;
        } else if std::fs::hard_link(&src, &target).is_err() {
            std::fs::copy(&src, &target)?;
        }
    }
    Ok(())
}

fn out_parent(out: &Path) -> Result<PathBuf> {
    let abs = if out.is_absolute() {
        out.to_path_buf()
    } else {
        std::env::current_dir()?.join(out)
    };
    let parent = abs
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    if !parent.is_dir() {
        bail!(
            "--out {}: its parent directory {} does not exist",
            out.display(),
            parent.display()
        );
    }
    Ok(parent)
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

/// Moves the finished outputs into `out`: the whole directory when `out` is new, else file
/// by file, so that other files there (qemu/run's firmware variables, sockets) stay.
fn publish(staged: &Path, out: &Path) -> Result<()> {
    if !out.exists() {
        return std::fs::rename(staged, out)
            .with_context(|| format!("moving the outputs to {}", out.display()));
    }
    for name in [INITRAMFS, UKI, CMDLINE, DISK] {
        let to = out.join(name);
        std::fs::rename(staged.join(name), &to)
            .with_context(|| format!("moving {}", to.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake kernel, a modules dir for it with one module, a tree naming that module, an init.
    struct Fixture {
        dir: tempfile::TempDir,
        opts: BuildOptions,
    }

    fn fixture(release: &str, modules_for: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let mut kernel = vec![0u8; 0x1000];
        kernel[0x202..0x206].copy_from_slice(b"HdrS");
        kernel[0x20e..0x210].copy_from_slice(&0x200u16.to_le_bytes());
        kernel[0x400..0x400 + release.len() + 1].copy_from_slice(format!("{release} ").as_bytes());
        std::fs::write(p.join("vmlinuz"), kernel).unwrap();
        let modules = p.join("lib/modules").join(modules_for);
        std::fs::create_dir_all(modules.join("kernel")).unwrap();
        std::fs::write(
            modules.join("kernel/virtio_blk.ko"),
            format!("\x7fELF vermagic={modules_for} SMP\0"),
        )
        .unwrap();
        std::fs::write(modules.join("modules.dep"), "kernel/virtio_blk.ko:\n").unwrap();
        std::fs::create_dir_all(p.join("tree/etc/ghost")).unwrap();
        std::fs::write(
            p.join("tree/etc/ghost/ghost.toml"),
            "modules = [\"virtio_blk\"]\n",
        )
        .unwrap();
        std::fs::create_dir(p.join("parent")).unwrap();
        let opts = BuildOptions {
            kernel: p.join("vmlinuz"),
            modules,
            init: std::env::current_exe().unwrap(),
            bins: vec![],
            extra_binaries: vec![],
            initramfs_tree: p.join("tree"),
            sources: vec![],
            cmdline: DEFAULT_CMDLINE.into(),
            preseed_model: None,
            stub: p.join("vmlinuz"), // only its presence is checked before writing
            epoch: 1,
            zstd_level: 3,
            state_mib: None,
            out: p.join("parent/out"),
        };
        Fixture { dir, opts }
    }

    /// Builds, expects an error naming `names`, and checks that nothing was written.
    fn refused(f: &Fixture, names: &[&str]) {
        let err = format!("{:#}", build(&f.opts, &mut |_| {}).unwrap_err());
        for n in names {
            assert!(err.contains(n), "error does not name {n}: {err}");
        }
        let left: Vec<_> = std::fs::read_dir(f.dir.path().join("parent"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "a failed build left {left:?}");
    }

    #[test]
    fn good_inputs_pass_the_checks() {
        let f = fixture("6.1.0-test", "6.1.0-test");
        let inputs = check_inputs(&f.opts).unwrap();
        assert_eq!(inputs.modules.files, ["kernel/virtio_blk.ko"]);
        assert!(inputs
            .archive
            .get("lib/modules/6.1.0-test/modules.dep")
            .is_some());
        assert!(inputs
            .archive
            .get("lib/modules/6.1.0-test/kernel/virtio_blk.ko")
            .is_some());
        assert_eq!(inputs.state_bytes, 256 * MIB);
    }

    #[test]
    fn a_kernel_that_is_not_one_is_named() {
        let mut f = fixture("6.1.0-test", "6.1.0-test");
        f.opts.kernel = f.opts.init.clone();
        refused(
            &f,
            &[&f.opts.kernel.display().to_string(), "not a Linux bzImage"],
        );
    }

    #[test]
    fn modules_of_another_kernel_are_refused() {
        let f = fixture("6.1.0-test", "6.1.0-other");
        refused(
            &f,
            &[
                "6.1.0-other",
                "6.1.0-test",
                &f.opts.modules.display().to_string(),
            ],
        );
    }

    #[test]
    fn a_missing_module_is_named() {
        let f = fixture("6.1.0-test", "6.1.0-test");
        std::fs::write(
            f.opts.initramfs_tree.join("etc/ghost/ghost.toml"),
            "modules = [\"virtio_blk\", \"e1000e\"]\n",
        )
        .unwrap();
        refused(&f, &["`e1000e`"]);
    }

    #[test]
    fn an_extra_binary_that_is_not_a_program_is_named() {
        let mut f = fixture("6.1.0-test", "6.1.0-test");
        let script = f.dir.path().join("redis-server");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        f.opts.extra_binaries.push(script);
        refused(&f, &["redis-server"]);
    }

    #[test]
    fn a_state_partition_too_small_for_the_preseed_is_refused() {
        let mut f = fixture("6.1.0-test", "6.1.0-test");
        let model = f.dir.path().join("tiny-model");
        std::fs::create_dir(&model).unwrap();
        std::fs::write(model.join("model.safetensors"), vec![1u8; 3 << 20]).unwrap();
        f.opts.preseed_model = Some(model);
        f.opts.state_mib = Some(16);
        refused(&f, &["16 MiB is too small", "tiny-model"]);
    }
}
