//! VM boot tests: build the image once with `qemu/run --build-only`, boot copies of it under
//! QEMU TCG with a timeout, and judge by the serial console.
//!
//! Run: `cargo test -p ghost-tests --test vm`. Needs qemu-system-x86, ovmf, a kernel in /boot
//! and the image tools; as root, qemu/run installs what is missing, otherwise a test that
//! cannot run says why on stderr and passes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Each boot is stopped after this long; a TCG disk boot takes about 8 s here.
const BOOT_TIMEOUT_S: u64 = 60;
const POWEROFF: &str = "ghost.poweroff_after_ready=1";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// Why the VM tests cannot run on this machine, if they cannot (and cannot install).
fn missing_prerequisite() -> Option<String> {
    let is_root = unsafe { libc::geteuid() } == 0;
    if is_root {
        return None; // qemu/run installs what is missing.
    }
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
    };
    for tool in [
        "qemu-system-x86_64",
        "mkfs.fat",
        "mcopy",
        "mke2fs",
        "objcopy",
        "musl-gcc",
    ] {
        if !on_path(tool) {
            return Some(format!(
                "{tool} is not installed and we are not root (qemu/run lists the apt-get command)"
            ));
        }
    }
    for file in [
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
    ] {
        if !Path::new(file).exists() {
            return Some(format!("{file} is missing and we are not root"));
        }
    }
    None
}

/// Runs `qemu/run ARGS`; returns its exit status and combined output.
fn qemu_run(args: &[&str]) -> (std::process::ExitStatus, String) {
    let out = Command::new(repo_root().join("qemu/run"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("qemu/run can be started");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// Builds the image into target/vm-test-image once for all tests; `None` means skip.
fn image() -> Option<&'static Path> {
    static IMAGE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = IMAGE.get_or_init(|| {
        if let Some(why) = missing_prerequisite() {
            return Err(why);
        }
        let dir = target_dir().join("vm-test-image");
        let started = Instant::now();
        let (status, output) = qemu_run(&[
            "--build-only",
            "--rebuild",
            "--out",
            dir.to_str().expect("utf-8 path"),
        ]);
        assert!(status.success(), "qemu/run --build-only failed:\n{output}");
        eprintln!(
            "vm: image built in {:.1} s (cargo included)",
            started.elapsed().as_secs_f64()
        );
        Ok(dir)
    });
    match built {
        Ok(dir) => Some(dir.as_path()),
        Err(why) => {
            eprintln!("skipping VM test: {why}");
            None
        }
    }
}

/// One boot at a time: two TCG guests on a 2-core machine would each take twice as long.
fn boot_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A private copy of the image's disk (sparse, so the empty state partition costs nothing).
fn disk_copy(image: &Path, dir: &Path) -> PathBuf {
    let copy = dir.join("disk.img");
    let status = Command::new("cp")
        .arg("--sparse=always")
        .arg(image.join("disk.img"))
        .arg(&copy)
        .status()
        .expect("cp runs");
    assert!(status.success(), "copying disk.img failed");
    copy
}

/// Boots `disk` (with OVMF, or directly with `direct`) and returns the serial log.
fn boot(image: &Path, disk: &Path, direct: bool, append: &str, log: &Path) -> String {
    let _one_at_a_time = boot_lock();
    let timeout = BOOT_TIMEOUT_S.to_string();
    let mut args = vec![
        "--no-build",
        "--out",
        image.to_str().unwrap(),
        "--disk",
        disk.to_str().unwrap(),
    ];
    args.extend([
        "--timeout",
        &timeout,
        "--serial-log",
        log.to_str().unwrap(),
        "--append",
        append,
    ]);
    if direct {
        args.push("--direct");
    }
    let started = Instant::now();
    let (status, output) = qemu_run(&args);
    let serial = std::fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    eprintln!(
        "vm: {} boot took {:.1} s wall",
        if direct { "direct" } else { "disk" },
        started.elapsed().as_secs_f64()
    );
    assert!(
        status.success() && started.elapsed() < Duration::from_secs(BOOT_TIMEOUT_S),
        "qemu/run {args:?} failed ({status}):\n{output}\n--- serial ---\n{serial}"
    );
    serial
}

/// The console lines ghost-init printed, in order.
fn init_lines(serial: &str) -> Vec<&str> {
    serial
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| l.starts_with("ghost-init: "))
        .collect()
}

fn assert_booted_and_powered_off(serial: &str) {
    let lines = init_lines(serial);
    let complete = lines
        .iter()
        .position(|l| l.starts_with("ghost-init: boot complete in ") && l.ends_with(" ms"));
    assert!(complete.is_some(), "no `boot complete` line:\n{serial}");
    let last = lines.last().copied().unwrap_or_default();
    assert!(
        last.starts_with("ghost-init: powered off cleanly (") && last.ends_with(" killed)"),
        "the last ghost-init line is not `powered off cleanly`: {last:?}\n{serial}"
    );
}

#[test]
fn disk_boots_with_ovmf_to_boot_complete_and_powers_off_cleanly() {
    let Some(image) = image() else { return };
    let dir = tempfile::tempdir().unwrap();
    let disk = disk_copy(image, dir.path());
    let serial = boot(
        image,
        &disk,
        false,
        POWEROFF,
        &dir.path().join("serial.log"),
    );
    // The EFI stub says this; a direct boot never does, so the UKI on the ESP was booted.
    assert!(
        serial.contains("EFI stub: "),
        "not booted through the UKI:\n{serial}"
    );
    assert!(
        serial.contains(POWEROFF),
        "the appended argument did not reach the kernel:\n{serial}"
    );
    assert_booted_and_powered_off(&serial);
}

#[test]
fn direct_boot_of_the_same_initramfs() {
    let Some(image) = image() else { return };
    let dir = tempfile::tempdir().unwrap();
    let disk = disk_copy(image, dir.path());
    let serial = boot(image, &disk, true, POWEROFF, &dir.path().join("serial.log"));
    assert!(
        !serial.contains("EFI stub: "),
        "a direct boot went through firmware:\n{serial}"
    );
    assert_booted_and_powered_off(&serial);
}

#[test]
fn state_partition_persists_across_boots() {
    let Some(image) = image() else { return };
    let dir = tempfile::tempdir().unwrap();
    let disk = disk_copy(image, dir.path());

    let first = boot(image, &disk, false, POWEROFF, &dir.path().join("first.log"));
    let lines = init_lines(&first);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ghost-init: state ok in ")),
        "state not mounted in the first boot:\n{first}"
    );
    assert!(
        lines.contains(&"ghost-init: first boot"),
        "the first boot did not say so:\n{first}"
    );
    assert_booted_and_powered_off(&first);
    // What the first boot wrote is on the disk itself, not only in the guest's memory.
    let marker = state_file(&disk, "/.ghost-first-boot-done");
    assert!(
        marker.is_some(),
        "the first-boot marker is not on the state partition after the first boot"
    );

    let second = boot(
        image,
        &disk,
        false,
        POWEROFF,
        &dir.path().join("second.log"),
    );
    let lines = init_lines(&second);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ghost-init: state ok in ")),
        "state not mounted in the second boot:\n{second}"
    );
    assert!(
        !lines.contains(&"ghost-init: first boot"),
        "the second boot took itself for the first:\n{second}"
    );
    assert_booted_and_powered_off(&second);
}

/// Reads `path` from the state partition of `disk` with debugfs (`None`: absent or no debugfs).
fn state_file(disk: &Path, path: &str) -> Option<Vec<u8>> {
    let out = Command::new("sgdisk")
        .arg("--info=2")
        .arg(disk)
        .output()
        .ok()?;
    let info = String::from_utf8_lossy(&out.stdout);
    let first: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("First sector: "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let spec = format!("{}?offset={}", disk.display(), first * 512);
    let stat = Command::new("debugfs")
        .arg("-R")
        .arg(format!("stat {path}"))
        .arg(&spec)
        .output()
        .ok()?;
    if !stat.status.success()
        || String::from_utf8_lossy(&stat.stderr).contains("not found")
        || stat.stdout.is_empty()
    {
        return None;
    }
    let cat = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(&spec)
        .output()
        .ok()?;
    Some(cat.stdout)
}

#[test]
fn two_builds_of_the_same_inputs_are_identical() {
    let Some(image) = image() else { return };
    let dir = tempfile::tempdir_in(target_dir()).unwrap();
    let again = dir.path().join("again");
    let (status, output) = qemu_run(&[
        "--build-only",
        "--rebuild",
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(status.success(), "second build failed:\n{output}");
    for name in ["initramfs.cpio.zst", "ghostos.efi", "disk.img", "cmdline"] {
        let (a, b) = (
            std::fs::read(image.join(name)).unwrap(),
            std::fs::read(again.join(name)).unwrap(),
        );
        assert!(
            a == b,
            "{name} differs between two builds of the same inputs ({} vs {} bytes)",
            a.len(),
            b.len()
        );
    }
}
