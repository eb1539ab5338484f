//! VM boot tests: build the image once with `qemu/run --build-only`, boot copies of it under
//! QEMU TCG with a timeout, and judge by the serial console. The `guest_*` tests share one
//! boot whose services (on the state partition's overlay) exercise cgroup v2 limits, which
//! only the guest has, and a kill inside the guest. The model test boots on its own: the
//! guest's model service pulls a tiny model from a hub mirror on the host, loads it and
//! answers a chat request.
//!
//! Run: `cargo test -p ghost-tests --test vm`. Needs qemu-system-x86, ovmf, a kernel in /boot
//! and the image tools; as root, qemu/run installs what is missing, otherwise a test that
//! cannot run says why on stderr and passes.

mod hub_mirror;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Each boot is stopped after this long; a TCG disk boot takes about 8 s here, the shared guest
/// boot (limits, the agent, snapshots, chat, the crucible's installs) about a minute.
const BOOT_TIMEOUT_S: u64 = 90;
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
        "debugfs",
        "sgdisk",
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

/// What a failed image build says, error first: its last lines without cargo's `Compiling`
/// progress (CI keeps only the head of a long failure), then the disk and memory left.
fn build_failure_report(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .filter(|l| !l.trim_start().starts_with("Compiling "))
        .collect();
    let tail = &lines[lines.len().saturating_sub(60)..];
    let mut report = tail.join("\n");
    for (what, cmd, args) in [
        ("disk", "df", vec!["-h".to_string(), target_dir().display().to_string()]),
        ("memory", "free", vec!["-m".to_string()]),
    ] {
        let said = Command::new(cmd)
            .args(&args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| format!("{cmd}: {e}\n"));
        report.push_str(&format!("\n--- {what} ---\n{said}"));
    }
    report
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
        if !status.success() {
            panic!("qemu/run --build-only failed ({status}):\n{}", build_failure_report(&output));
        }
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

/// One boot of a disk copy.
struct Boot<'a> {
    image: &'a Path,
    disk: &'a Path,
    /// Kernel + initramfs through QEMU's -kernel instead of OVMF and the UKI.
    direct: bool,
    append: &'a str,
    log: &'a Path,
    /// Typed on the serial console once the console shows the first string.
    input: Option<(&'a str, &'a str)>,
    /// Then this, once the console shows its first string (after `input`'s).
    then: Option<(&'a str, &'a str)>,
}

/// Boots `disk` (with OVMF, or directly with `direct`) and returns the serial log.
fn boot(image: &Path, disk: &Path, direct: bool, append: &str, log: &Path) -> String {
    let spec = Boot {
        image,
        disk,
        direct,
        append,
        log,
        input: None,
        then: None,
    };
    try_boot(&spec).unwrap_or_else(|why| panic!("{why}"))
}

/// Boots as `b` says; `Err` holds qemu/run's output and the serial log when QEMU failed or
/// ran into the timeout.
fn try_boot(b: &Boot) -> Result<String, String> {
    let _one_at_a_time = boot_lock();
    let timeout = BOOT_TIMEOUT_S.to_string();
    let mut args = vec![
        "--no-build",
        "--out",
        b.image.to_str().unwrap(),
        "--disk",
        b.disk.to_str().unwrap(),
        "--timeout",
        &timeout,
        "--serial-log",
        b.log.to_str().unwrap(),
        "--append",
        b.append,
    ];
    if b.direct {
        args.push("--direct");
    }
    // qemu/run's own output goes to a file, so that nothing blocks on a full pipe while we
    // watch the serial log.
    let out_path = b.log.with_extension("qemu-run.txt");
    let out = std::fs::File::create(&out_path).expect("qemu/run output file");
    let started = Instant::now();
    let mut child = Command::new(repo_root().join("qemu/run"))
        .args(&args)
        .stdin(if b.input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .spawn()
        .expect("qemu/run can be started");
    let mut stdin = child.stdin.take();
    for (after, text) in [b.input, b.then].into_iter().flatten() {
        // Input sent before the shell reads it could be eaten by the firmware or the kernel,
        // so it waits for the console line; bounded by the boot timeout (qemu/run exits then).
        while !serial_text(b.log).contains(after) && child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(stdin) = stdin.as_mut() {
            let _ = std::io::Write::write_all(stdin, text.as_bytes());
            let _ = std::io::Write::flush(stdin);
        }
    }
    drop(stdin);
    let status = child.wait().expect("qemu/run can be waited for");
    let took = started.elapsed();
    let serial = serial_text(b.log);
    eprintln!(
        "vm: {} boot took {:.1} s wall",
        if b.direct { "direct" } else { "disk" },
        took.as_secs_f64()
    );
    if status.success() && took < Duration::from_secs(BOOT_TIMEOUT_S) {
        return Ok(serial);
    }
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    Err(format!(
        "qemu/run {args:?} failed ({status}) after {:.1} s:\n{output}\n--- serial ---\n{serial}",
        took.as_secs_f64()
    ))
}

fn serial_text(log: &Path) -> String {
    std::fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The console lines ghost-init printed, in order.
fn init_lines(serial: &str) -> Vec<&str> {
    serial
        .lines()
        // QEMU's monitor prompt can share a line with the guest's console (power button test).
        .map(|l| l.trim_end_matches('\r').trim_start_matches("(qemu) "))
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

/// `debugfs`'s name for the state partition (partition 2) of `disk`: `DISK?offset=BYTES`.
fn state_partition(disk: &Path) -> Option<String> {
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
    Some(format!("{}?offset={}", disk.display(), first * 512))
}

/// Reads `path` from the state partition of `disk` with debugfs (`None`: absent or no debugfs).
fn state_file(disk: &Path, path: &str) -> Option<Vec<u8>> {
    let spec = state_partition(disk)?;
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

/// Puts `files` (path relative to the state partition's root, contents) on the state
/// partition of `disk` with `debugfs -w`, creating their directories; no root, no mount.
fn write_state_files(disk: &Path, files: &[(&str, &str)], scratch: &Path) {
    let spec = state_partition(disk).expect("sgdisk finds the state partition");
    let mut dirs: Vec<&str> = files
        .iter()
        .flat_map(|(path, _)| path.match_indices('/').map(move |(i, _)| &path[..i]))
        .collect();
    dirs.sort();
    dirs.dedup();
    let mut script: String = dirs.iter().map(|d| format!("mkdir {d}\n")).collect();
    for (i, (path, text)) in files.iter().enumerate() {
        let source = scratch.join(format!("state-file-{i}"));
        std::fs::write(&source, text).unwrap();
        script += &format!("write {} {path}\n", source.display());
    }
    let script_path = scratch.join("debugfs-commands");
    std::fs::write(&script_path, script).unwrap();
    let out = Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&script_path)
        .arg(&spec)
        .output()
        .expect("debugfs runs");
    // debugfs exits 0 even when a command fails: read every file back instead.
    for (path, text) in files {
        assert_eq!(
            state_file(disk, path).as_deref(),
            Some(text.as_bytes()),
            "debugfs did not write {path}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
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

#[test]
fn image_carries_a_rescue_shell_ghost_ghostctl_and_the_model_service() {
    let Some(image) = image() else { return };
    let listing = Command::new("sh")
        .arg("-c")
        .arg("zstd -dc \"$1\" | cpio -itv --quiet")
        .arg("sh")
        .arg(image.join("initramfs.cpio.zst"))
        .output()
        .expect("zstd and cpio run");
    assert!(listing.status.success(), "cannot list the initramfs");
    let listing = String::from_utf8_lossy(&listing.stdout);
    let entry = |path: &str| {
        listing
            .lines()
            .find(|l| {
                l.split(" -> ")
                    .next()
                    .is_some_and(|l| l.ends_with(&format!(" {path}")))
            })
            .unwrap_or_else(|| panic!("no {path} in the initramfs:\n{listing}"))
            .to_string()
    };
    // Static binaries: no loader or libc came with them.
    assert!(
        !listing.contains("ld-linux") && !listing.contains("libc.so"),
        "shared libraries in the image, so something is not static:\n{listing}"
    );
    assert!(entry("usr/bin/busybox").starts_with("-rwxr-xr-x"));
    assert!(entry("usr/bin/ghostctl").starts_with("-rwxr-xr-x"));
    assert!(entry("usr/bin/ghost").starts_with("-rwxr-xr-x"));
    assert!(entry("etc/ghost/services/model.toml").starts_with("-rw-r--r--"));
    assert!(entry("etc/ghost/services/agent.toml").starts_with("-rw-r--r--"));
    assert!(entry("etc/ghost/rules/sentinel.toml").starts_with("-rw-r--r--"));
    assert!(entry("etc/ghost/constitution.toml").starts_with("-rw-r--r--"));
    // The crucible's sample unit: its sources (not its build outputs) and its unit file.
    assert!(entry("etc/ghost/improve/sample.toml").starts_with("-rw-r--r--"));
    for f in ["Cargo.toml", "Cargo.lock", "src/lib.rs", "src/main.rs", "benches/bench.rs", "tests/primes.rs"] {
        assert!(entry(&format!("usr/src/ghost/sample/{f}")).starts_with("-rw-r--r--"), "{f}");
    }
    assert!(!listing.contains("usr/src/ghost/sample/target"), "build outputs in the image:\n{listing}");
    assert!(entry("bin").ends_with("bin -> usr/bin"));
    for applet in ["sh", "ls", "cat", "ps", "mount", "sleep", "kill", "ip"] {
        assert!(
            entry(&format!("usr/bin/{applet}")).ends_with(" -> busybox"),
            "{applet} is not a link to busybox"
        );
    }
}

/// Service files for the guest's cgroup boot, put on the state partition as the wizard's
/// overlay (/var/lib/ghost/etc/services), so that they need no image of their own.
const GUEST_SERVICES: &[(&str, &str)] = &[
    // tail buffers an endless line, so it eats memory until the OOM killer stops it.
    (
        "etc/services/hog.toml",
        "exec = [\"/bin/busybox\", \"tail\", \"/dev/zero\"]\nmemory_max = \"16M\"\nrestart = \"never\"\n",
    ),
    // The background sleep leaves the process group and the session: only the cgroup holds it.
    (
        "etc/services/escaper.toml",
        "exec = [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox setsid /bin/busybox sleep 1000 & exec /bin/busybox sleep 1000\"]\nrestart = \"never\"\n",
    ),
    // Its fourth process is one too many.
    (
        "etc/services/forker.toml",
        "exec = [\"/bin/busybox\", \"sh\", \"-c\", \"for i in 1 2 3 4 5 6 7 8; do /bin/busybox sleep 1000 & done; wait\"]\npids_max = 4\nrestart = \"never\"\n",
    ),
    (
        "etc/services/spin.toml",
        "exec = [\"/bin/busybox\", \"sh\", \"-c\", \"while :; do :; done\"]\ncpu_max = \"10%\"\nrestart = \"never\"\n",
    ),
    (
        "etc/services/victim.toml",
        "exec = [\"/bin/busybox\", \"sleep\", \"1001\"]\nrestart = \"always\"\n",
    ),
    (
        "etc/services/conductor.toml",
        "exec = [\"/bin/busybox\", \"sh\", \"/var/lib/ghost/conductor.sh\"]\nrestart = \"never\"\n",
    ),
    ("conductor.sh", CONDUCTOR),
];

/// Runs inside the guest: kills the victim once, waits until every limit has shown itself,
/// reports what the cgroup files say, and powers off. Each wait is for a state that ghostctl
/// or the kernel reports (polled every 50 ms); the host's boot timeout bounds them all.
const CONDUCTOR: &str = r#"say() { echo "conductor: $*"; }
# get NAME KEY: one field of `ghostctl --json status NAME`
get() { ghostctl --json status "$1" | sed -n "s/.*\"$2\":\"\{0,1\}\([^\",]*\).*/\1/p"; }
wait_for() { while ! "$@"; do sleep 0.05; done; }
cg=/sys/fs/cgroup/ghost

victim_up() { pid=$(get victim pid); [ -n "$pid" ] && [ "$(get victim state)" = running ]; }
wait_for victim_up
first=$pid
kill -9 "$first"
say "victim: killed pid $first"
victim_back() { victim_up && [ "$pid" != "$first" ]; }
wait_for victim_back
say "victim: back as pid $pid"

# The operator TUI, from ghost.toml's [console]: `ghost console` on tty2 (service console) and
# on the headless port ttyS1 (console-serial). Seen when running with stdin on a terminal; a
# `ghost console` that is not built yet says so in its log (then the wait ends at once).
on_terminal() { pid=$(get "$1" pid); [ -n "$pid" ] && [ "$(get "$1" state)" = running ] && fd0=$(readlink /proc/$pid/fd/0) && case $fd0 in /dev/tty*) true ;; *) false ;; esac; }
not_built() { ghostctl logs "$1" -n 5 2>/dev/null | grep -q "not built yet"; }
for svc in console console-serial; do
    tries=0
    until on_terminal $svc || not_built $svc || [ $tries -ge 600 ]; do tries=$((tries + 1)); sleep 0.05; done
    if on_terminal $svc; then
        set -- $(cat /proc/$pid/stat)
        say "$svc: pid $pid stdin $fd0 stdout $(readlink /proc/$pid/fd/1) session $6 tty_nr $7 TERM $(tr '\0' '\n' < /proc/$pid/environ | sed -n 's/^TERM=//p')"
    else
        say "$svc: not running on a terminal: state $(get $svc state), restarts $(get $svc restarts), log: $(ghostctl logs $svc -n 3 2>&1 | tr '\n' ' ')"
    fi
done

fetch_done() { [ -n "$(get fetch last_exit)" ]; }
wait_for fetch_done
say "fetch: $(get fetch last_exit)"

# The crucible in the booted image (no toolchain here): generations a build host verified,
# fetched from the host's loopback, installed with ghostctl improve (which hands over to ghost).
if [ -f /var/lib/ghost/improve-url ]; then
    url=$(cat /var/lib/ghost/improve-url)
    for i in 0 1 2; do busybox wget -q -O /tmp/sample-$i.bundle "$url/sample-$i.bundle" || say "improve: cannot fetch sample-$i.bundle"; done
    say "improve: fetched $(wc -c /tmp/sample-*.bundle | tail -1)"
    field() { grep -o "\"$1\":\"[^\"]*\"" /tmp/imp.json | head -1 | cut -d'"' -f4; }
    num() { grep -o "\"$1\":[0-9.]*" /tmp/imp.json | head -1 | cut -d: -f2; }
    install() {
        ghostctl improve install sample "$1" --json > /tmp/imp.json 2> /tmp/imp.err
        code=$?
        say "improve: install $(basename $1): exit $code, $(field outcome) at $(field stage), generation $(num generation), origin $(field origin), swap $(num swap) s, total $(num total) s, reason $(field reason)"
        [ $code = 1 ] && say "improve: error: $(tr '\n' ' ' < /tmp/imp.err)"
    }
    ask() { echo "$1" | busybox nc 127.0.0.1 7070 2>/dev/null; }
    current() { readlink /var/lib/ghost/generations/sample/current; }
    install /tmp/sample-0.bundle
    answers() { [ "$(ask 10000)" = 1229 ]; }
    wait_for answers
    say "improve: generation $(current) answers 10000 with $(ask 10000)"
    # A client asks all through the swap to generation 1; every answer must be right.
    rm -f /tmp/answers /tmp/stop
    ( while [ ! -f /tmp/stop ]; do a=$(ask 1000); echo "${a:-none}" >> /tmp/answers; done ) &
    client=$!
    install /tmp/sample-1.bundle
    touch /tmp/stop
    wait $client
    say "improve: the client during the swap:" $(sort /tmp/answers | uniq -c)
    say "improve: generation $(current) answers 10000 with $(ask 10000)"
    install /tmp/sample-2.bundle
    wait_for answers
    say "improve: after the crash: generation $(current) answers 10000 with $(ask 10000)"
fi

hog_oom() { [ "$(get hog last_exit)" = oom ]; }
wait_for hog_oom
say "hog: last exit oom, memory.max $(cat $cg/hog/memory.max)"

forker_done() { [ -n "$(get forker last_exit)" ]; }
wait_for forker_done
say "forker: pids.max $(cat $cg/forker/pids.max), pids.events $(cat $cg/forker/pids.events)"

throttled() { n=$(sed -n 's/^nr_throttled //p' $cg/spin/cpu.stat); [ "${n:-0}" -gt 0 ]; }
wait_for throttled
say "spin: cpu.max $(cat $cg/spin/cpu.max), throttled $n times"

escaped() { [ "$(wc -l < $cg/escaper/cgroup.procs)" -ge 2 ]; }
wait_for escaped
for p in $(cat $cg/escaper/cgroup.procs); do
    set -- $(cat /proc/$p/stat)
    say "escaper: pid $p process group $5 session $6"
done
# The agent of the image: its socket answers with its figures once it has beaten (at most 60 s).
tries=0
beaten() { ghostctl agent --json > /tmp/agent.json 2>/dev/null && ! grep -q '"beats":0,' /tmp/agent.json; }
until beaten || [ $tries -ge 1200 ]; do tries=$((tries + 1)); sleep 0.05; done
say "agent: $(cat /tmp/agent.json 2>/dev/null || echo none)"
# Recovery and conversation in the booted image: a snapshot (ghostctl hands over to ghost), the
# snapshots there (the agent's hourly one too), and a question to the agent.
ghostctl snapshot create -m "in the guest" --json > /tmp/snap.json 2> /tmp/snap.err
say "snapshot: $(cat /tmp/snap.json /tmp/snap.err)"
ghostctl snapshot list --json > /tmp/snaps.json 2>&1
say "snapshots:" $(grep -o '"trigger":"[a-z-]*"' /tmp/snaps.json)
ghostctl chat "how are the services? status please" > /tmp/chat.txt 2>&1
while read -r l; do say "chat: $l"; done < /tmp/chat.txt
for svc in console console-serial; do say "$svc: at the end: pid $(get $svc pid) restarts $(get $svc restarts)"; done
# PID 1 replaces its own program without a reboot: the same processes under it before and after.
pids() { for svc in escaper agent console; do printf '%s=%s ' $svc "$(get $svc pid)"; done; }
before=$(pids)
ghostctl reexec > /tmp/reexec.txt 2>&1; rc=$?
after=$(pids)
say "reexec: exit $rc, before: $before, after: $after"
while read -r l; do say "reexec: $l"; done < /tmp/reexec.txt
say "done: powering off"
exec ghostctl poweroff
"#;

/// One direct boot with `GUEST_SERVICES` (and `ghost.debug=1`, which echoes service output
/// and start lines; `ghost.wizard=skip`), shared by the guest tests; it ends when the
/// conductor powers off. The operator TUI runs as the image has it: on tty2 and on the
/// headless port, whose bytes are kept in [`GUEST_HEADLESS`].
fn guest_boot() -> Option<&'static str> {
    static SERIAL: OnceLock<Result<String, String>> = OnceLock::new();
    let image = image()?;
    let serial = SERIAL.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let disk = disk_copy(image, dir.path());
        // A file on the host's loopback, reached from the guest through QEMU user networking
        // (10.0.2.2 is the host's 127.0.0.1), by a service that waits for the network target.
        let (port, token) = serve_token_on_loopback();
        let fetch = format!(
            "exec = [\"/bin/busybox\", \"wget\", \"-q\", \"-O\", \"-\", \"http://10.0.2.2:{port}/token\"]\nrequires = [\"network\"]\nrestart = \"never\"\n"
        );
        let mut files: Vec<(&str, &str)> = GUEST_SERVICES.to_vec();
        files.push(("etc/services/fetch.toml", &fetch));
        // The crucible's build host, before the boot: the sample judged here for musl, its
        // generations served to the guest, which installs them (the conductor's `improve:`).
        let crucible = CRUCIBLE.get_or_init(|| build_host_bundles(&dir.path().join("build-host")));
        let url = match crucible {
            Ok((bundles, _)) => Some(format!("http://10.0.2.2:{}", serve_files_on_loopback(bundles.clone()))),
            Err(why) => {
                eprintln!("vm: the guest boot installs no crucible bundles: {why}");
                None
            }
        };
        if let Some(url) = &url {
            files.extend([("improve-url", url.as_str()), ("etc/improve/sample.toml", CRUCIBLE_UNIT), ("etc/services/sample.toml", SAMPLE_SERVICE)]);
        }
        write_state_files(&disk, &files, dir.path());
        GUEST_TOKEN.get_or_init(|| token);
        // The headless port (ttyS1): qemu/run puts it on a Unix socket beside the disk.
        let headless = HeadlessPort::listen(PathBuf::from(format!("{}.tty.sock", disk.display())));
        // No first-boot wizard: these services are what the boot is about.
        let booted = try_boot(&Boot {
            image,
            disk: &disk,
            direct: true,
            append: "ghost.debug=1 ghost.wizard=skip",
            log: &dir.path().join("serial.log"),
            input: None,
            then: None,
        });
        GUEST_HEADLESS.get_or_init(|| headless.finish());
        let serial = booted?;
        let lines = init_lines(&serial);
        if !lines
            .contains(&"ghost-init: cgroups: one cgroup v2 per service under /sys/fs/cgroup/ghost")
        {
            return Err(format!(
                "the guest has no cgroups for its services:\n{serial}"
            ));
        }
        Ok(serial)
    });
    match serial {
        Ok(s) => Some(s),
        Err(why) => panic!("the guest boot with cgroup services failed: {why}"),
    }
}

static GUEST_TOKEN: OnceLock<String> = OnceLock::new();
/// What the guest boot's headless port (ttyS1) sent, from QEMU's start to its end.
static GUEST_HEADLESS: OnceLock<Vec<u8>> = OnceLock::new();

/// A reader of the headless serial port's Unix socket: connects as soon as QEMU has made it
/// (polled every 20 ms, for as long as the boot may take) and keeps every byte until QEMU
/// closes it.
struct HeadlessPort {
    bytes: std::sync::Arc<Mutex<Vec<u8>>>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    reader: std::thread::JoinHandle<()>,
}

impl HeadlessPort {
    fn listen(path: PathBuf) -> HeadlessPort {
        use std::sync::atomic::Ordering;
        let bytes = std::sync::Arc::new(Mutex::new(Vec::new()));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (b, d) = (bytes.clone(), done.clone());
        let reader = std::thread::spawn(move || {
            // Until the boot is over (it may first wait for another boot's turn).
            let mut stream = loop {
                if d.load(Ordering::SeqCst) {
                    return;
                }
                match std::os::unix::net::UnixStream::connect(&path) {
                    Ok(s) => break s,
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            };
            // QEMU ends the stream when it exits; the timeout bounds a QEMU that hangs.
            let _ = stream.set_read_timeout(Some(Duration::from_secs(BOOT_TIMEOUT_S + 30)));
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n @ 1..) = std::io::Read::read(&mut stream, &mut buf) {
                b.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        HeadlessPort { bytes, done, reader }
    }

    /// Once QEMU has exited: everything the port sent.
    fn finish(self) -> Vec<u8> {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.reader.join();
        std::mem::take(&mut *self.bytes.lock().unwrap())
    }
}

/// Terminal output as the text a person would read: escape sequences (CSI, OSC, two-byte
/// ESC) and other control characters dropped, cursor moves left as spaces.
fn screen_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                Some('[') => {
                    // Parameters and intermediates up to the final byte (@ to ~).
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                    out.push(' ');
                }
                Some(']') => {
                    // Up to BEL or ESC \.
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\n' | '\r' => out.push('\n'),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// An HTTP server on 127.0.0.1 (a port of its own) that answers every request with a fresh
/// random token, for as long as the test process lives; returns the port and the token.
fn serve_token_on_loopback() -> (u16, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let port = listener.local_addr().unwrap().port();
    let mut bytes = [0u8; 8];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut bytes).unwrap();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let body = format!("token-{token}\n");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            use std::io::{Read, Write};
            let mut conn = conn;
            let mut req = [0u8; 1024];
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = conn.read(&mut req);
            let _ = write!(conn, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        }
    });
    (port, format!("token-{token}"))
}

/// An HTTP server on 127.0.0.1 that answers `GET /NAME` with the file NAME of `files` (404
/// otherwise) for as long as the test process lives; returns its port.
fn serve_files_on_loopback(files: Vec<(String, Vec<u8>)>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            use std::io::{BufRead, Write};
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut line = String::new();
            let _ = std::io::BufReader::new(&conn).read_line(&mut line);
            let name = line.split_whitespace().nth(1).unwrap_or("").trim_start_matches('/');
            let mut conn = conn;
            match files.iter().find(|(n, _)| n == name) {
                Some((_, body)) => {
                    let _ = write!(conn, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                    let _ = conn.write_all(body);
                }
                None => {
                    let _ = write!(conn, "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                }
            }
        }
    });
    port
}

/// The guest's unit: the image's sample.toml with a short probation (on the state partition's
/// overlay, which takes the image's place).
const CRUCIBLE_UNIT: &str = "source = \"/usr/src/ghost/sample\"\nbinary = \"ghost-sample\"\nbench = \"ghost-sample-bench\"\nservice = \"sample\"\ntarget = \"x86_64-unknown-linux-musl\"\nprobation_s = 2\n";

/// The service on the current generation; until the first is installed it waits for it (so
/// that nothing crash-loops before the conductor installs generation 0).
const SAMPLE_SERVICE: &str = "exec = [\"/bin/busybox\", \"sh\", \"-c\", \"until [ -x /var/lib/ghost/generations/sample/current/bin/ghost-sample ]; do /bin/busybox sleep 0.1; done; exec /var/lib/ghost/generations/sample/current/bin/ghost-sample 7070\"]\nrestart = \"always\"\nrestart_delay_ms = 100\n";

/// The build host's bundles (sample-0: the seed, sample-1: the sieve, sample-2: the crasher;
/// name and bytes) and its verdicts.
type BuildHost = (Vec<(String, Vec<u8>)>, Vec<serde_json::Value>);

/// The build host's work, or why there is none.
static CRUCIBLE: OnceLock<Result<BuildHost, String>> = OnceLock::new();

/// The crucible on this machine as a build host: the sample (musl, static) seeded, `crashes`
/// judged (kept: no service runs here), generation 0 put back, `faster` judged, and
/// generations 0, 2 and 1 exported, with the image's own `ghost`.
fn build_host_bundles(dir: &Path) -> Result<BuildHost, String> {
    if unsafe { libc::geteuid() } != 0 {
        return Err("the crucible's sandbox needs root (mount and network namespaces)".into());
    }
    let ghost = target_dir().join("x86_64-unknown-linux-musl/userland/ghost");
    let units = dir.join("etc/ghost/improve");
    std::fs::create_dir_all(&units).map_err(|e| e.to_string())?;
    let unit = format!(
        "source = \"{}\"\nbinary = \"ghost-sample\"\nbench = \"ghost-sample-bench\"\ntarget = \"x86_64-unknown-linux-musl\"\nmin_gain = 0.2\nrounds = 6\n",
        repo_root().join("improve/sample").display()
    );
    std::fs::write(units.join("sample.toml"), unit).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let improve = |args: &[&str]| -> Result<String, String> {
        let out = Command::new(&ghost)
            .arg("improve")
            .args(args)
            .env("GHOST_ROOT", dir)
            .env("GHOST_SOCKET", dir.join("no-ghost-init.sock"))
            .env("GHOST_AGENT_SOCKET", dir.join("no-agent.sock"))
            .output()
            .map_err(|e| format!("{}: {e}", ghost.display()))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!("ghost improve {args:?}: {}\n{text}{}", out.status, String::from_utf8_lossy(&out.stderr)));
        }
        Ok(text)
    };
    let patch = |name: &str| repo_root().join(format!("improve/sample/patches/{name}.patch")).display().to_string();
    improve(&["seed", "sample"])?;
    let mut verdicts = Vec::new();
    for p in ["crashes", "faster"] {
        let out = improve(&["run", "sample", "--patch", &patch(p), "--no-service", "--json"])?;
        verdicts.push(serde_json::from_str(out.trim()).map_err(|e| format!("{e}: {out}"))?);
        improve(&["rollback", "sample"])?;
    }
    let mut bundles = Vec::new();
    for (i, g) in [(0, 0), (1, 2), (2, 1)] {
        let file = dir.join(format!("sample-{i}.bundle"));
        improve(&["export", "sample", &g.to_string(), "--to", file.to_str().unwrap()])?;
        bundles.push((format!("sample-{i}.bundle"), std::fs::read(&file).map_err(|e| e.to_string())?));
    }
    eprintln!(
        "vm: the build host judged and exported the sample in {:.1} s; bundles of {:?} bytes",
        started.elapsed().as_secs_f64(),
        bundles.iter().map(|(_, b)| b.len()).collect::<Vec<_>>()
    );
    Ok((bundles, verdicts))
}

#[test]
fn guest_network_by_dhcp_reaches_a_file_on_the_hosts_loopback() {
    let Some(serial) = guest_boot() else { return };
    let lines = init_lines(serial);
    let network = first_starting_with(&lines, "ghost-init: network: ");
    assert!(network.contains("10.0.2.15/24 via 10.0.2.2") && network.contains("(dhcp"), "{network}");
    let token = GUEST_TOKEN.get().expect("the guest boot served a token");
    let fetched = format!("ghost-init: fetch | {token}");
    assert!(lines.contains(&fetched.as_str()), "the guest did not print the host's token `{token}`:\n{serial}");
    // The fetch waited for the network target: its start comes after the address.
    let at = |prefix: &str| lines.iter().position(|l| l.starts_with(prefix));
    assert!(at("ghost-init: network: ") < at("ghost-init: service fetch (pid"), "{serial}");
    assert!(conductor_says(serial).contains(&"fetch: exit code 0"), "{serial}");
}

/// A direct boot in which, once `boot complete` shows, `command` is typed into QEMU's monitor
/// (Ctrl-A c switches qemu/run's console to it and back); returns the serial log.
fn boot_and_tell_qemu(command: &str) -> Option<String> {
    let image = image()?;
    let dir = tempfile::tempdir().unwrap();
    let disk = disk_copy(image, dir.path());
    let input = format!("\u{1}c{command}\n\u{1}c");
    let serial = try_boot(&Boot {
        image,
        disk: &disk,
        direct: true,
        // No first-boot wizard waiting for a person on the console.
        append: "ghost.wizard=skip",
        log: &dir.path().join("serial.log"),
        input: Some(("ghost-init: boot complete", &input)),
        then: None,
    })
    .unwrap_or_else(|why| panic!("{why}"));
    Some(serial)
}

#[test]
fn the_acpi_power_button_powers_off_cleanly() {
    let Some(serial) = boot_and_tell_qemu("system_powerdown") else { return };
    let lines = init_lines(&serial);
    assert!(lines.iter().any(|l| l.starts_with("ghost-init: power button: /dev/input/event")), "{serial}");
    // The monitor's `(qemu) ` prompt may share the console line with the guest's next line.
    assert!(serial.contains("ghost-init: power button pressed"), "{serial}");
    assert_booted_and_powered_off(&serial);
}

#[test]
fn ctrl_alt_del_reboots_cleanly() {
    // PID 1 turned Ctrl-Alt-Del over to itself (SIGINT); QEMU runs with -no-reboot, so the
    // guest's reboot ends it.
    let Some(serial) = boot_and_tell_qemu("sendkey ctrl-alt-delete") else { return };
    let lines = init_lines(&serial);
    assert!(serial.contains("ghost-init: reboot requested: stopping"), "{serial}");
    let last = lines.last().copied().unwrap_or_default();
    assert!(last.starts_with("ghost-init: rebooting cleanly (") && last.ends_with(" killed)"), "last line {last:?}\n{serial}");
}

/// What the conductor reported, in order, without the console prefix.
fn conductor_says(serial: &str) -> Vec<&str> {
    init_lines(serial)
        .into_iter()
        .filter_map(|l| l.strip_prefix("ghost-init: conductor | conductor: "))
        .collect()
}

/// The first of `lines` that starts with `prefix` (empty if none).
fn first_starting_with<'a>(lines: &[&'a str], prefix: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .copied()
        .unwrap_or_default()
}

/// The number after `prefix` in `line`, up to the next non-digit.
fn number_after(line: &str, prefix: &str) -> Option<u64> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[test]
fn guest_operator_tui_runs_supervised_on_tty2_and_on_the_headless_port() {
    let Some(serial) = guest_boot() else { return };
    let says = conductor_says(serial);
    // tty_nr of /proc/PID/stat: major 4, minor 2 (tty2) and 64 + 1 (ttyS1).
    let mut not_built = Vec::new();
    for (svc, tty, tty_nr, term) in [("console", "/dev/tty2", 4 * 256 + 2, "linux"), ("console-serial", "/dev/ttyS1", 4 * 256 + 65, "vt220")] {
        let seen = first_starting_with(&says, &format!("{svc}: "));
        if seen.contains("ghost console is not built yet") {
            not_built.push(svc);
            continue;
        }
        let pid = number_after(seen, "pid ").unwrap_or_else(|| panic!("{svc} was not seen running on a terminal: {seen:?}\n{serial}"));
        let want = format!("{svc}: pid {pid} stdin {tty} stdout {tty} session {pid} tty_nr {tty_nr} TERM {term}");
        assert_eq!(seen, want, "{svc} is not `ghost console` as the session leader on {tty}:\n{serial}");
        // Still the same process at the end of the boot: it did not crash and come back.
        let end = format!("{svc}: at the end: pid {pid} restarts 0");
        assert!(says.contains(&end.as_str()), "{svc} did not keep running (want `{end}`): {says:#?}\n{serial}");
    }
    let headless = GUEST_HEADLESS.get().expect("the guest boot read the headless port");
    let screen = screen_text(headless);
    eprintln!("vm: the headless port sent {} bytes; the TUI: {:?}", headless.len(), says.iter().filter(|l| l.starts_with("console")).collect::<Vec<_>>());
    if not_built.contains(&"console-serial") {
        eprintln!(
            "the headless port's screen is not checked: `ghost console` in this image says it is not built yet ({} bytes on ttyS1)",
            headless.len()
        );
        return;
    }
    // The TUI's screen on the headless port, as a person at the other end would read it.
    assert!(
        screen.contains("Services") && ["victim", "agent", "conductor"].iter().any(|s| screen.contains(s)),
        "the headless port does not show the services ({} bytes; as text):\n{screen}",
        headless.len()
    );
}

#[test]
fn screen_text_drops_escape_sequences() {
    let raw = b"\x1b[?1049h\x1b[1;1H\x1b[38;5;4mServices\x1b[0m\x1b[2;3Hvictim\x1b]0;title\x07 running\r\n";
    assert_eq!(screen_text(raw), "   Services  victim running\n\n");
}

#[test]
fn guest_memory_max_turns_into_an_oom_reported_as_oom() {
    let Some(serial) = guest_boot() else { return };
    let lines = init_lines(serial);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ghost-init: service hog (pid ")
                && l.ends_with("): out of memory: killed by the OOM killer (signal 9)")),
        "no OOM line for hog:\n{serial}"
    );
    let says = conductor_says(serial);
    assert!(
        says.contains(&"hog: last exit oom, memory.max 16777216"),
        "ghostctl did not report hog's last exit as oom under a 16 MiB limit: {says:#?}\n{serial}"
    );
}

#[test]
fn guest_cgroup_kill_leaves_no_grandchild_behind() {
    let Some(serial) = guest_boot() else { return };
    let says = conductor_says(serial);
    // Two processes in escaper's cgroup, in two process groups and sessions: stopping the
    // main process's group would miss the grandchild.
    let groups: Vec<(u64, u64)> = says
        .iter()
        .filter(|l| l.starts_with("escaper: pid "))
        .filter_map(|l| {
            Some((
                number_after(l, "process group ")?,
                number_after(l, "session ")?,
            ))
        })
        .collect();
    assert!(
        groups.len() == 2 && groups[0].0 != groups[1].0 && groups[0].1 != groups[1].1,
        "escaper's grandchild did not leave its process group and session: {says:#?}\n{serial}"
    );
    let lines = init_lines(serial);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ghost-init: service escaper (pid ")
                && l.contains("): stopped (")),
        "escaper was not stopped at power-off:\n{serial}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("left behind by services")),
        "processes were left behind:\n{serial}"
    );
    let last = lines.last().copied().unwrap_or_default();
    assert!(
        last.starts_with("ghost-init: powered off cleanly (")
            && last.ends_with(" services stopped, 0 killed)"),
        "power-off had to kill something: {last:?}\n{serial}"
    );
}

#[test]
fn guest_pids_max_and_cpu_max_are_enforced() {
    let Some(serial) = guest_boot() else { return };
    assert!(
        init_lines(serial)
            .iter()
            .any(|l| l.starts_with("ghost-init: forker | ") && l.contains("can't fork")),
        "forker's shell could fork past pids_max = 4:\n{serial}"
    );
    let says = conductor_says(serial);
    let forker = first_starting_with(&says, "forker: ");
    assert!(
        forker.starts_with("forker: pids.max 4, pids.events max ")
            && number_after(forker, "pids.events max ").is_some_and(|n| n > 0),
        "pids.max was not 4 or never refused a fork: {forker:?}\n{serial}"
    );
    let spin = first_starting_with(&says, "spin: ");
    assert!(
        spin.starts_with("spin: cpu.max 10000 100000, throttled ")
            && number_after(spin, "throttled ").is_some_and(|n| n > 0),
        "cpu_max = 10% was not written as 10000/100000 or never throttled: {spin:?}\n{serial}"
    );
}

#[test]
fn the_agent_runs_in_the_guest_with_the_sentinel_rules_and_durable_memory() {
    let Some(serial) = guest_boot() else { return };
    let says = conductor_says(serial);
    let line = first_starting_with(&says, "agent: ");
    let status: serde_json::Value = serde_json::from_str(line.trim_start_matches("agent: "))
        .unwrap_or_else(|e| panic!("the agent did not answer in the guest ({e}): {line:?}\n{serial}"));
    assert_eq!(status["rules"], 5, "{status}");
    assert_eq!(status["memory"], "sqlite", "memory on the state partition: {status}");
    assert!(status["beats"].as_u64().is_some_and(|b| b > 0), "{status}");
    // The victim (restart = "always") came back by itself: the Sentinel did not act twice.
    assert_eq!(status["repairs_failed"], 0, "{status}");
}

#[test]
fn pid1_reexecs_in_the_booted_image_keeping_every_service() {
    let Some(serial) = guest_boot() else { return };
    let says = conductor_says(serial);
    let line = first_starting_with(&says, "reexec: exit ");
    let (head, pids) = line.split_once(", before: ").unwrap_or_else(|| panic!("{line}\n{serial}"));
    assert_eq!(head, "reexec: exit 0", "ghostctl reexec failed in the guest: {says:#?}\n{serial}");
    let (before, after) = pids.split_once(", after: ").unwrap();
    assert!(!before.contains("=  ") && before.matches('=').count() == 3, "every service had a pid before: {before}");
    assert_eq!(before.trim(), after.trim(), "the services' processes changed across the re-exec");
    let report: Vec<&str> = says.iter().filter_map(|l| l.strip_prefix("reexec: ")).collect();
    assert!(report.iter().any(|l| l.starts_with("program") && l.contains("pid 1")) && report.iter().any(|l| l.starts_with("re-execs  1")), "{report:#?}");
    let init = init_lines(serial);
    assert!(init.iter().any(|l| l.starts_with("ghost-init: re-exec: ") && l.contains("service(s) kept")), "no re-exec line from the new PID 1:\n{serial}");
}

#[test]
fn snapshots_and_chat_work_in_the_booted_image() {
    let Some(serial) = guest_boot() else { return };
    let says = conductor_says(serial);
    let snap = first_starting_with(&says, "snapshot: ");
    let v: serde_json::Value = serde_json::from_str(snap.trim_start_matches("snapshot: ")).unwrap_or_else(|e| panic!("no snapshot in the guest ({e}): {snap:?}\n{serial}"));
    assert!(v["id"].as_str().is_some_and(|i| i.len() == 26) && v["files"].as_u64().unwrap_or(0) > 3, "{v}");
    let list = first_starting_with(&says, "snapshots: ");
    assert!(list.contains("\"trigger\":\"manual\"") && list.contains("\"trigger\":\"hourly\""), "the operator's and the agent's hourly snapshot: {list}\n{serial}");
    let chat: Vec<&str> = says.iter().filter_map(|l| l.strip_prefix("chat: ")).collect();
    assert!(chat.iter().any(|l| l.starts_with("Services:")) && chat.iter().any(|l| l.contains("agent: running")), "the agent answers about the services: {chat:#?}\n{serial}");
}

#[test]
fn the_crucible_installs_generations_verified_on_the_build_host_in_the_booted_image() {
    let Some(serial) = guest_boot() else { return };
    let (_, host) = match CRUCIBLE.get().expect("the guest boot ran the build host") {
        Ok(c) => c,
        Err(why) => {
            eprintln!("skipped: no crucible on the build host: {why}");
            return;
        }
    };
    // On the build host: both candidates passed tests and bench (no service there to crash).
    for (v, origin) in host.iter().zip(["crashes", "faster"]) {
        assert_eq!((v["outcome"].as_str(), v["stage"].as_str()), (Some("kept"), Some("probation")), "{origin}: {v}");
        assert!(v["limits"].as_str().is_some_and(|l| !l.is_empty()), "the verdict says what bounded the build: {v}");
    }
    let says = conductor_says(serial);
    let improve: Vec<&str> = says.iter().filter_map(|l| l.strip_prefix("improve: ")).collect();
    eprintln!("vm: the crucible in the guest: {improve:#?}");
    let install = |n: u32| {
        let prefix = format!("install sample-{n}.bundle: ");
        improve.iter().find_map(|l| l.strip_prefix(prefix.as_str())).unwrap_or_else(|| panic!("no install of sample-{n}: {improve:#?}\n{serial}"))
    };
    // Generation 0 seeds the machine from the build host; the service answers on it.
    let seed = install(0);
    assert!(seed.starts_with("exit 0, seeded at swap, generation 0, origin build-host:"), "{seed}\n{improve:#?}");
    assert!(improve.contains(&"generation 0 answers 10000 with 1229"), "{improve:#?}\n{serial}");
    // Generation 1 (the sieve, kept on the build host) is swapped in and passes probation here.
    let kept = install(1);
    assert!(kept.starts_with("exit 0, kept at probation, generation 1, origin build-host:"), "{kept}\n{improve:#?}");
    let client = improve.iter().find(|l| l.starts_with("the client during the swap:")).copied().unwrap_or_default();
    let answers: Vec<&str> = client.trim_start_matches("the client during the swap:").split_whitespace().collect();
    assert!(answers.len() >= 2 && answers.chunks(2).all(|c| c.get(1).is_some_and(|a| *a == "168" || *a == "none")) && answers.contains(&"168"), "every answer during the swap is right (or none while it restarts): {client:?}");
    assert!(improve.contains(&"generation 1 answers 10000 with 1229"), "{improve:#?}");
    // Generation 2 passed everything on the build host but crashes here: rolled back to 1.
    let crashed = install(2);
    assert!(crashed.starts_with("exit 4, rolled-back at probation, generation 2,") && crashed.contains("died in probation") && crashed.ends_with("generation 1 is back"), "{crashed}\n{improve:#?}");
    assert!(improve.contains(&"after the crash: generation 1 answers 10000 with 1229"), "{improve:#?}\n{serial}");
}

#[test]
fn guest_service_killed_inside_the_guest_comes_back() {
    let Some(serial) = guest_boot() else { return };
    let says = conductor_says(serial);
    let killed = says
        .iter()
        .find_map(|l| number_after(l, "victim: killed pid "));
    let back = says
        .iter()
        .find_map(|l| number_after(l, "victim: back as pid "));
    let (Some(killed), Some(back)) = (killed, back) else {
        panic!("the conductor did not kill the victim and see it back: {says:#?}\n{serial}");
    };
    assert_ne!(killed, back);
    let lines = init_lines(serial);
    let exited = format!("ghost-init: service victim (pid {killed}): exited: signal 9");
    let started = format!("ghost-init: service victim (pid {back}): started");
    let at = |want: &str| lines.iter().position(|l| *l == want);
    assert!(
        matches!((at(&exited), at(&started)), (Some(e), Some(s)) if e < s),
        "ghost-init did not report `{exited}` and then `{started}`:\n{serial}"
    );
}

#[test]
fn rescue_shell_runs_commands_on_the_serial_console() {
    let Some(image) = image() else { return };
    let dir = tempfile::tempdir().unwrap();
    let disk = disk_copy(image, dir.path());
    // The shell computes 42 (the echo of the typed line shows only the expression); SIGUSR2
    // asks ghost-init to power off.
    let serial = try_boot(&Boot {
        image,
        disk: &disk,
        direct: true,
        append: "ghost.emergency=1",
        log: &dir.path().join("serial.log"),
        input: Some((
            "rescue console: /bin/sh started",
            "echo rescue-$((6*7)); ghostctl --version\nkill -USR2 1\n",
        )),
        then: None,
    })
    .unwrap_or_else(|why| panic!("{why}"));
    let lines: Vec<&str> = serial.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(
        lines.contains(&"rescue-42"),
        "the rescue shell did not run the command:\n{serial}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("ghostctl ")),
        "ghostctl did not run in the rescue shell:\n{serial}"
    );
    let last = init_lines(&serial).last().copied().unwrap_or_default();
    assert!(
        last.starts_with("ghost-init: powered off cleanly ("),
        "the rescue boot did not power off cleanly: {last:?}\n{serial}"
    );
}

// --- the model service in the guest -----------------------------------------------------------

/// The tiny random-weight Qwen2 of the model boot, as on the hub: GGUF (Q8_0) in one repo,
/// its tokenizer in another. Not MiniLM: loading it under TCG would take too long.
const MODEL_REPO: &str = "ghostos/tiny-qwen2-GGUF";
const MODEL_GGUF: &str = "model-q8_0.gguf";
const MODEL_TOKENIZER_REPO: &str = "ghostos/tiny-qwen2";
/// GHOST_ROOT of the guest's model service, on the state partition: its model.toml is
/// there (`ghost` reads /etc/ghost/model.toml under GHOST_ROOT, not the wizard's overlay on
/// the state partition), and so are its cache and socket.
const MODEL_ROOT: &str = "/var/lib/ghost/vm-model";

/// Runs in the guest: waits until ghostctl reports the model service serving, shows its
/// status, asks the model for a few tokens over the API's TCP listener, and powers off.
const MODEL_WATCH: &str = r#"say() { echo "modelwatch: $*"; }
serving() { ghostctl status model | grep -q '^  status: *serving '; }
while ! serving; do sleep 0.2; done
ghostctl status model | while read -r line; do say "$line"; done
body='{"messages":[{"role":"user","content":"Is the disk full?"}],"max_tokens":4,"seed":1}'
answer=$(/bin/busybox timeout 60 /bin/busybox wget -q -O - --header 'Content-Type: application/json' --post-data "$body" http://127.0.0.1:8080/v1/chat/completions)
say "chat: $(echo "$answer" | grep -o '"object":"[a-z.]*"') $(echo "$answer" | grep -o '"completion_tokens":[0-9]*')"
say "done: powering off"
exec ghostctl poweroff
"#;

/// The image's own model service file, pointed at the hub `endpoint` and at [`MODEL_ROOT`].
fn guest_model_service(endpoint: &str) -> String {
    let shipped = std::fs::read_to_string(repo_root().join("initramfs/etc/ghost/services/model.toml"))
        .expect("initramfs/etc/ghost/services/model.toml");
    let exec = "exec = [\"/usr/bin/ghost\", \"model\", \"serve\"]";
    assert!(
        shipped.contains(exec) && !shipped.lines().any(|l| l.trim_start().starts_with("env")),
        "the shipped model service changed its exec or sets env itself; adapt this test:\n{shipped}"
    );
    // A service's `env` wins over ghost-init's own GHOST_ROOT=/.
    format!("{shipped}env = {{ HF_ENDPOINT = \"{endpoint}\", GHOST_ROOT = \"{MODEL_ROOT}\" }}\n")
}

#[test]
fn model_service_in_the_guest_pulls_from_a_hub_mirror_on_the_host_and_serves() {
    use ghost_model::fixture::{self, FixtureForms, FixtureSpec};
    use hub_mirror::{commit_id, Mirror};
    let Some(image) = image() else { return };
    let dir = tempfile::tempdir().unwrap();
    let all = dir.path().join("fixture");
    let forms = FixtureForms { safetensors: false, gguf_q8_0: true, gguf_q4_k_m: false };
    fixture::write(&all, &FixtureSpec::tiny(), forms).expect("writing the tiny model");
    let (gguf_repo, tokenizer_repo) = (dir.path().join("repo-gguf"), dir.path().join("repo-tokenizer"));
    std::fs::create_dir_all(&gguf_repo).unwrap();
    std::fs::create_dir_all(&tokenizer_repo).unwrap();
    std::fs::copy(all.join(MODEL_GGUF), gguf_repo.join(MODEL_GGUF)).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(all.join(f), tokenizer_repo.join(f)).unwrap();
    }
    // On the host's 127.0.0.1; the guest reaches it as 10.0.2.2 (QEMU user networking).
    let mirror = Mirror::start(&[
        (MODEL_REPO, &gguf_repo, &commit_id("gguf v1")),
        (MODEL_TOKENIZER_REPO, &tokenizer_repo, &commit_id("tokenizer v1")),
    ]);
    let port = mirror.url().rsplit(':').next().unwrap().to_string();
    let endpoint = format!("http://10.0.2.2:{port}");
    let model_toml = format!(
        "[[model]]\nrepo = \"{MODEL_REPO}\"\nrole = \"generate\"\nfiles = [\"{MODEL_GGUF}\"]\n\n\
         [[model]]\nrepo = \"{MODEL_TOKENIZER_REPO}\"\nrole = \"tokenizer\"\nfiles = [\"tokenizer.json\", \"tokenizer_config.json\"]\n\n\
         [serve]\nthreads = 1\nqueue = 4\nlisten = \"127.0.0.1:8080\"\n"
    );
    let service = guest_model_service(&endpoint);
    let model_root_rel = MODEL_ROOT.strip_prefix("/var/lib/ghost/").unwrap();
    let model_toml_at = format!("{model_root_rel}/etc/ghost/model.toml");
    let disk = disk_copy(image, dir.path());
    write_state_files(
        &disk,
        &[
            ("etc/services/model.toml", &service),
            (&model_toml_at, &model_toml),
            (
                "etc/services/modelwatch.toml",
                "exec = [\"/bin/busybox\", \"sh\", \"/var/lib/ghost/modelwatch.sh\"]\nrestart = \"never\"\n",
            ),
            ("modelwatch.sh", MODEL_WATCH),
        ],
        dir.path(),
    );
    // ghost.debug=1: every status line of the service (not one per 5 s) and its own output
    // reach the console, so a failure shows why.
    let serial = try_boot(&Boot {
        image,
        disk: &disk,
        direct: true,
        append: "ghost.debug=1 ghost.wizard=skip",
        log: &dir.path().join("serial.log"),
        input: None,
        then: None,
    })
    .unwrap_or_else(|why| panic!("the boot with the model service failed: {why}"));

    let lines = init_lines(&serial);
    let at = |pred: &dyn Fn(&str) -> bool| lines.iter().position(|l| pred(l));
    let model_says = |l: &str, what: &str| l.starts_with("ghost-init: service model (pid ") && l.contains(&format!("): {what}"));
    let pulling = at(&|l| model_says(l, &format!("downloading {MODEL_REPO}@main from {endpoint}")));
    let progress = at(&|l| model_says(l, &format!("downloading {MODEL_REPO}: {MODEL_GGUF} ")));
    let ready = at(&|l| model_says(l, "ready"));
    let serving = at(&|l| model_says(l, &format!("serving {MODEL_REPO}")));
    let complete = at(&|l| l.starts_with("ghost-init: boot complete in "));
    assert!(pulling.is_some() && progress.is_some(), "no download progress of the model on the console:\n{serial}");
    assert!(ready.is_some() && serving.is_some(), "the model service did not become ready serving {MODEL_REPO}:\n{serial}");
    assert!(pulling < progress && progress < ready, "download, then ready:\n{serial}");
    // Boot did not wait for the model (the service is not critical).
    assert!(complete.is_some() && complete < ready, "boot complete came after the model was ready:\n{serial}");

    // What modelwatch printed, with runs of blanks (ghostctl aligns its fields) made one.
    let says: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("ghost-init: modelwatch | modelwatch: "))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(says.iter().any(|l| l.starts_with("state: running, pid ")), "ghostctl did not show the service running: {says:#?}\n{serial}");
    assert!(
        says.contains(&format!("status: serving {MODEL_REPO}")),
        "ghostctl status model does not say `serving {MODEL_REPO}`: {says:#?}\n{serial}"
    );
    let chat = says.iter().find(|l| l.starts_with("chat: ")).map(String::as_str).unwrap_or_default();
    assert!(
        chat.contains("\"object\":\"chat.completion\"") && number_after(chat, "\"completion_tokens\":").is_some_and(|n| n > 0),
        "no chat completion from the model in the guest: {chat:?}\n{serial}"
    );
    // The guest fetched the weights from this mirror, through the LFS redirect.
    let log = mirror.log();
    assert!(
        log.iter().any(|r| r.method == "GET" && r.path.starts_with("/cdn-lfs/") && r.path.ends_with(MODEL_GGUF) && r.status == 200),
        "the mirror never sent the weights: {log:#?}"
    );
    assert_booted_and_powered_off(&serial);
    let last = lines.last().copied().unwrap_or_default();
    assert!(last.ends_with(" 0 killed)"), "power-off had to kill something (the model service?): {last:?}\n{serial}");
}

/// The first-boot wizard as a person meets it: on the serial console of a fresh disk, before
/// the services; a wrong host name is refused on screen, the answers are written to the state
/// partition, boot goes on with them, and the next boot does not ask again.
#[test]
fn the_first_boot_wizard_asks_on_the_console_and_boot_goes_on_with_its_answers() {
    let Some(image) = image() else { return };
    let dir = tempfile::tempdir().unwrap();
    let disk = disk_copy(image, dir.path());
    // Enter on the welcome screen; Ctrl-U clears a field. A bad host name first, then: vmbox,
    // DHCP, model 4 (none: stay offline), security, operator and time zone as offered, and
    // Enter on the summary.
    let keys = "\r\u{15}bad name!\r\u{15}vmbox\r\r4\r\r\r\r\r";
    let serial = try_boot(&Boot {
        image,
        disk: &disk,
        direct: true,
        append: "",
        log: &dir.path().join("serial.log"),
        // Typed once the wizard has drawn its first screen (its terminal is in raw mode then).
        input: Some(("first-boot setup", keys)),
        // Then the ACPI power button, once boot has gone on.
        then: Some(("ghost-init: boot complete", "\u{1}csystem_powerdown\n\u{1}c")),
    })
    .unwrap_or_else(|why| panic!("{why}"));
    let screen = screen_text(serial.as_bytes());
    assert!(screen.contains("bad name!") && screen.contains("not a valid host name"), "the refusal is on screen:\n{screen}");
    let lines = init_lines(&serial);
    let at = |prefix: &str| lines.iter().position(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no line {prefix:?}:\n{serial}"));
    assert!(at("ghost-init: first boot") < at("ghost-init: wizard ok in"), "{serial}");
    assert!(at("ghost-init: wizard ok in") < at("ghost-init: config: using the overlay /var/lib/ghost/etc/ghost.toml"), "{serial}");
    assert!(at("ghost-init: wizard ok in") < at("ghost-init: services ok in"), "the services wait for the wizard:\n{serial}");
    assert!(serial.contains("offline"), "the model service knows no model was chosen:\n{serial}");
    // On the state partition, as answered.
    let ghost_toml = String::from_utf8(state_file(&disk, "/etc/ghost.toml").expect("the wizard's ghost.toml")).unwrap();
    assert!(ghost_toml.contains("hostname = \"vmbox\""), "{ghost_toml}");
    let model_toml = String::from_utf8(state_file(&disk, "/etc/model.toml").expect("the wizard's model.toml")).unwrap();
    assert!(model_toml.contains("offline = true"), "{model_toml}");
    // The next boot of the same disk does not ask again.
    let again = boot(image, &disk, true, "ghost.poweroff_after_ready=1", &dir.path().join("serial-2.log"));
    assert!(!init_lines(&again).iter().any(|l| l.starts_with("ghost-init: first boot") || l.starts_with("ghost-init: wizard")), "{again}");
}
