//! The `ghost-image` command line: `build` makes the initramfs, UKI and disk; `uki` remakes
//! only the UKI (for another command line) and can put it into an existing disk's ESP.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ghost_image::{disk, fat, kernel::Kernel, pipeline, uki};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "ghost-image",
    version,
    about = "Builds the ghostos initramfs, UKI and GPT disk image"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build initramfs.cpio.zst, ghostos.efi and disk.img into --out.
    Build(Build),
    /// Build a UKI from a kernel and an initramfs; optionally install it into a disk's ESP.
    Uki(Uki),
}

#[derive(clap::Args)]
struct Build {
    /// The kernel (an x86 bzImage, e.g. /boot/vmlinuz-VERSION).
    #[arg(long)]
    kernel: PathBuf,
    /// That kernel's modules directory (/lib/modules/VERSION).
    #[arg(long)]
    modules: PathBuf,
    /// PID 1, placed at /init and /sbin/init.
    #[arg(long)]
    init: PathBuf,
    /// A ghostos binary for /usr/bin (repeatable).
    #[arg(long = "bin")]
    bins: Vec<PathBuf>,
    /// Any other binary for /usr/bin, with the shared libraries it links (repeatable).
    #[arg(long = "extra-binary")]
    extra_binaries: Vec<PathBuf>,
    /// The tree copied to / of the initramfs (its etc/ghost/ghost.toml names the modules).
    #[arg(long, default_value = "initramfs")]
    initramfs_tree: PathBuf,
    /// A source tree for the initramfs, DEST=DIR (e.g. usr/src/ghost/sample=improve/sample),
    /// without its target/ and .git/ (repeatable).
    #[arg(long = "source", value_name = "DEST=DIR", value_parser = parse_source)]
    sources: Vec<(String, PathBuf)>,
    /// The kernel command line baked into the UKI.
    #[arg(long, default_value = pipeline::DEFAULT_CMDLINE)]
    cmdline: String,
    /// A model directory placed at models/NAME on the state partition, for offline first boot.
    #[arg(long)]
    preseed_model: Option<PathBuf>,
    /// systemd's EFI stub.
    #[arg(long, default_value = uki::DEFAULT_STUB)]
    stub: PathBuf,
    /// Timestamp of every file in the outputs (seconds since 1970).
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = 0)]
    epoch: u64,
    /// zstd level of the initramfs (1-22).
    #[arg(long, default_value_t = 19, value_parser = clap::value_parser!(i32).range(1..=22))]
    zstd_level: i32,
    /// Size of the state partition in MiB (default: 256, or more if the preseed needs it).
    #[arg(long)]
    state_size: Option<u64>,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct Uki {
    #[arg(long)]
    kernel: PathBuf,
    #[arg(long)]
    initramfs: PathBuf,
    #[arg(long, default_value = pipeline::DEFAULT_CMDLINE)]
    cmdline: String,
    #[arg(long, default_value = uki::DEFAULT_STUB)]
    stub: PathBuf,
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = 0)]
    epoch: u64,
    /// Where to write the UKI.
    #[arg(long)]
    out: PathBuf,
    /// Also replace EFI/BOOT/BOOTX64.EFI in this disk image made by `build` (the state
    /// partition is left as it is).
    #[arg(long)]
    install_into: Option<PathBuf>,
}

fn parse_source(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((dest, dir)) if !dest.trim_matches('/').is_empty() && !dest.split('/').any(|c| c == "..") && !dir.is_empty() => {
            Ok((dest.trim_matches('/').to_string(), PathBuf::from(dir)))
        }
        _ => Err(format!("{s:?}: want DEST=DIR, DEST a path in the initramfs (usr/src/ghost/NAME)")),
    }
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("ghost-image: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Build(b) => build(b),
        Cmd::Uki(u) => make_uki(u),
    }
}

fn build(b: Build) -> Result<()> {
    let opts = pipeline::BuildOptions {
        kernel: b.kernel,
        modules: b.modules,
        init: b.init,
        bins: b.bins,
        extra_binaries: b.extra_binaries,
        initramfs_tree: b.initramfs_tree,
        sources: b.sources,
        cmdline: b.cmdline,
        preseed_model: b.preseed_model,
        stub: b.stub,
        epoch: b.epoch,
        zstd_level: b.zstd_level,
        state_mib: b.state_size,
        out: b.out.clone(),
    };
    let started = std::time::Instant::now();
    let mut stage = 0;
    let s = pipeline::build(&opts, &mut |what| {
        stage += 1;
        eprintln!(
            "ghost-image: [{stage}/6] {what} ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
    })?;
    let mib = |n: u64| n as f64 / (1 << 20) as f64;
    eprintln!(
        "ghost-image: done in {:.1} s → {}: {} {:.1} MiB (cpio {:.1} MiB, {} modules), {} {:.1} MiB, {} {:.0} MiB (ESP {:.0} MiB, state {:.0} MiB)",
        s.seconds,
        b.out.display(),
        pipeline::INITRAMFS,
        mib(s.initramfs),
        mib(s.initramfs_raw),
        s.modules,
        pipeline::UKI,
        mib(s.uki),
        pipeline::DISK,
        mib(s.disk),
        mib(s.esp),
        mib(s.state),
    );
    Ok(())
}

fn make_uki(u: Uki) -> Result<()> {
    let kernel = Kernel::load(&u.kernel)?;
    let initrd = std::fs::read(&u.initramfs)
        .with_context(|| format!("initramfs {}: cannot read", u.initramfs.display()))?;
    let parent = u
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let work = tempfile::Builder::new()
        .prefix(".ghost-uki-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a work directory in {}", parent.display()))?;
    let staged = work.path().join("uki.efi");
    let os_release = pipeline::os_release();
    let parts = uki::UkiParts {
        kernel: &kernel.bytes,
        initrd: &initrd,
        cmdline: &u.cmdline,
        os_release: &os_release,
    };
    uki::build(&u.stub, &parts, work.path(), &staged)?;
    if let Some(disk_path) = &u.install_into {
        fat::replace_uki(disk_path, disk::ESP_OFFSET, &staged, u.epoch)
            .with_context(|| format!("installing the UKI into {}", disk_path.display()))?;
    }
    std::fs::rename(&staged, &u.out)
        .with_context(|| format!("moving the UKI to {}", u.out.display()))?;
    Ok(())
}
