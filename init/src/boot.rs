//! The boot sequence: each step timed, printed as `ghost-init: <step> ok in N ms` or
//! `... failed: <reason>`, run under catch_unwind so that a panicking step is a failed step
//! and boot goes on.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::GhostConfig;
use crate::init::{Init, Phase};
use crate::modules::{self, ModulesDep};
use crate::mounts::{self, EARLY_MOUNTS};
use crate::service_file::ServiceFile;
use crate::state;
use crate::supervisor::Supervisor;
use crate::{say, sys};

impl Init {
    /// Runs one boot step; `None` when it failed or panicked.
    pub fn step<T>(&mut self, name: &str, f: impl FnOnce(&mut Init) -> Result<T, String>) -> Option<T> {
        let t = Instant::now();
        let forced = self.cmdline.debug_panic.as_deref() == Some(name);
        let r = catch_unwind(AssertUnwindSafe(|| {
            if forced {
                panic!("ghost.debug_panic={name} on the kernel command line");
            }
            f(self)
        }));
        let ms = t.elapsed().as_millis();
        match r {
            Ok(Ok(v)) => {
                say!("{name} ok in {ms} ms");
                Some(v)
            }
            Ok(Err(why)) => {
                say!("{name} failed: {why}");
                None
            }
            Err(panic) => {
                say!("{name} failed: panicked: {}; boot goes on", panic_text(&*panic));
                None
            }
        }
    }

    /// Everything up to the point where `ghost.emergency=1` stops.
    pub fn boot_system(&mut self) {
        if !self.hosted {
            self.step("mounts", |_| mount_api_filesystems());
            self.step("console", |_| {
                let r = sys::console_on_stdio("/dev/console").map_err(|e| format!("/dev/console: {e}"));
                crate::log::replay_if_missed();
                // A serial console is slow: PID 1 drops (and counts) lines rather than wait.
                if r.is_ok() {
                    crate::log::console_non_blocking();
                }
                r
            });
            // /proc exists now: read the real kernel command line.
            let line = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
            self.set_cmdline(&line);
        } else {
            say!("hosted mode, root {}: no mounts, modules, hostname or reboot; the host keeps those", self.paths.root().display());
        }
        self.step("config", |init| init.load_config());
        if !self.hosted {
            self.step("modules", |init| load_modules(&init.config.modules));
        }
        self.step("state", |init| init.prepare_state());
    }

    /// The rest of boot: identity, network basics, the control plane, services; `boot
    /// complete` follows once every critical service is ready.
    pub fn boot_services(&mut self) {
        if !self.hosted {
            self.step("hostname", |init| sys::sethostname(&init.config.hostname).map_err(|e| format!("{}: {e}", init.config.hostname)));
            self.step("loopback", |_| sys::interface_up("lo").map_err(|e| format!("lo: {e}")));
            self.watch_power_button();
        }
        // Raises the `network` target once the interface has its address (for DHCP, later,
        // from the event loop); hosted without ghost.ip=, the host's network is used.
        self.start_network();
        self.step("control", |init| init.open_control_plane());
        self.step("services", |init| init.start_services());
        self.phase = Phase::WaitingForCritical;
        self.check_critical();
    }

    pub fn boot_complete(&mut self) {
        self.phase = Phase::Running;
        let took = self.start.elapsed();
        say!("boot complete in {} ms", took.as_millis());
        if self.cmdline.debug {
            say!("boot complete: {} us from exec", took.as_micros());
        }
        self.publish_event(ghost_proto::Event { ts_ms: crate::logbook::now_ms(), kind: ghost_proto::EventKind::BootComplete, service: None, pid: None, detail: format!("{} ms", took.as_millis()) });
        if self.first_boot {
            let marker = self.paths.first_boot_marker();
            if let Err(e) = std::fs::write(&marker, format!("first boot completed {} ms after exec\n", took.as_millis())) {
                say!("state: cannot record first boot in {}: {e}", marker.display());
            }
        }
        if self.cmdline.poweroff_after_ready {
            say!("ghost.poweroff_after_ready=1: shutting down");
            self.begin_shutdown(sys::PowerAction::PowerOff);
        }
    }

    /// The ACPI power button powers off (needs the `button` and `evdev` modules).
    pub fn watch_power_button(&mut self) {
        let paths = crate::power_button::find(Path::new("/sys/class/input"), Path::new("/dev/input"));
        let (buttons, fds) = crate::power_button::PowerButtons::open(&paths);
        for fd in &fds {
            if let Err(e) = self.reactor.add(*fd, crate::reactor::Token::PowerButton, false) {
                say!("power button: cannot watch it: {e}");
            }
        }
        if fds.is_empty() {
            say!("power button: none found (load the `button` and `evdev` modules); SIGTERM or ghostctl poweroff still power off");
        } else {
            say!("power button: {} powers the machine off", paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
        }
        self.power_buttons = buttons;
    }

    /// cgroups, the notify socket and the control socket: before any service starts.
    fn open_control_plane(&mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        let (mount, dir) = if self.hosted {
            (Path::new("/sys/fs/cgroup").to_path_buf(), format!("ghost-hosted-{}", std::process::id()))
        } else {
            (Path::new("/sys/fs/cgroup").to_path_buf(), "ghost".to_string())
        };
        match crate::cgroup::Cgroups::setup(&mount, &dir) {
            Ok(cg) => {
                self.os.cgroups = cg;
                say!("cgroups: one cgroup v2 per service under {}", mount.join(&dir).display());
            }
            Err(why) => say!("cgroups: {why}; falling back to process groups and rlimits (memory_max, cpu_max and pids_max are not enforced)"),
        }
        let run = self.paths.run();
        std::fs::create_dir_all(&run).map_err(|e| format!("{}: {e}", run.display()))?;
        let notify_path = run.join("notify.sock");
        match crate::notify::NotifySocket::bind(&notify_path) {
            Ok(n) => {
                if let Err(e) = self.reactor.add(n.raw(), crate::reactor::Token::Notify, false) {
                    problems.push(format!("notify socket: {e}"));
                }
                self.os.notify_socket = Some(notify_path.display().to_string());
                self.notify = Some(n);
            }
            Err(e) => problems.push(format!("{}: {e} (services with ready = \"notify\" will never be ready)", notify_path.display())),
        }
        let access = self.control_access();
        let sock = self.paths.control_socket();
        match crate::control::ControlServer::bind(&sock, access) {
            Ok(c) => {
                if let Err(e) = self.reactor.add(c.listener_fd(), crate::reactor::Token::ControlListener, false) {
                    problems.push(format!("control socket: {e}"));
                }
                self.control = Some(c);
            }
            Err(e) => problems.push(format!("{}: {e} (ghostctl will not reach this init)", sock.display())),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Who may use the control socket: root, the operator group, and hosted, the owner.
    pub fn control_access(&self) -> crate::control::Access {
        let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
        crate::control::Access {
            // The operator group (ghost.toml [operator] group, `ghost` by default).
            ghost_gid: {
                let name = self.config.operator.socket_group();
                crate::identity::lookup_group(&groups, name).filter(|_| groups.lines().any(|l| l.starts_with(&format!("{name}:"))))
            },
            // SAFETY: getuid has no failure mode.
            owner_uid: self.hosted.then(|| unsafe { libc::getuid() }),
        }
    }

    pub fn reload_config(&mut self) -> Result<(), String> {
        self.load_config()
    }

    pub fn load_config(&mut self) -> Result<(), String> {
        let path = self.paths.etc("ghost.toml");
        if !path.exists() {
            say!("config: {} not found; using defaults", path.display());
            self.config = GhostConfig::default();
            return Ok(());
        }
        let loaded = GhostConfig::load(&path);
        self.config = loaded.config;
        for p in &loaded.problems {
            say!("config: {p}");
        }
        match loaded.problems.len() {
            0 => Ok(()),
            n => Err(format!("{n} problem(s) in {}; defaults used where named", path.display())),
        }
    }

    fn prepare_state(&mut self) -> Result<(), String> {
        let dir = self.paths.state();
        let mut result = Ok(());
        if !self.hosted {
            result = mount_state_partition(&dir);
            if let Err(why) = &result {
                say!("state: WARNING: {why}");
                say!("state: WARNING: /var/lib/ghost is a tmpfs: NOTHING WILL PERSIST across reboots");
                if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| {
                    sys::mount("tmpfs", &dir.to_string_lossy(), "tmpfs", libc::MS_NOSUID | libc::MS_NODEV, "mode=0755")
                }) {
                    say!("state: tmpfs at {}: {e}", dir.display());
                }
            }
            // The wizard's configuration may live on the state partition: read it now.
            if self.paths.state().join("etc/ghost.toml").exists() {
                say!("config: using the overlay {}", self.paths.etc("ghost.toml").display());
                let _ = self.load_config();
            }
        }
        // A wizard commit cut short by a power cut: finished if it reached its commit point,
        // dropped if not, so that the overlay is the old set of files or the new one.
        match ghost_proto::settings::finish_overlay_commit(&dir.join("etc")) {
            Ok(moved) if !moved.is_empty() => {
                say!("state: finished the wizard's interrupted write of {}", moved.join(", "));
                let _ = self.load_config();
            }
            Ok(_) => {}
            Err(e) => say!("state: the wizard's interrupted write in {}: {e}", dir.join("etc").display()),
        }
        for sub in ["models", "audit", "generations", "snapshots", "etc"] {
            let _ = std::fs::create_dir_all(dir.join(sub));
        }
        for d in [self.paths.run(), self.paths.log_dir()] {
            if let Err(e) = std::fs::create_dir_all(&d) {
                say!("state: {}: {e}", d.display());
            }
        }
        self.first_boot = !self.paths.first_boot_marker().exists();
        if self.first_boot {
            say!("first boot");
        }
        result
    }

    /// Reads the service files and starts them.
    fn start_services(&mut self) -> Result<(), String> {
        let (mut files, mut problems) = read_service_files(&self.paths.services_dirs());
        // The operator TUI of [console]; hosted, ghost-init leaves the host's terminals alone.
        if !self.hosted {
            crate::service_file::add_console_services(&mut files, &self.config.console);
        }
        let (mut sup, more) = Supervisor::new(files, Duration::from_secs(self.config.stop_timeout_s));
        problems.extend(more);
        for p in &problems {
            say!("services: {p}");
            self.publish_event(ghost_proto::Event { ts_ms: crate::logbook::now_ms(), kind: ghost_proto::EventKind::ConfigError, service: None, pid: None, detail: p.clone() });
        }
        sup.targets_up = std::mem::take(&mut self.supervisor.targets_up);
        self.os.first_boot = self.first_boot;
        self.supervisor = sup;
        let mut notes = Vec::new();
        self.supervisor.start_wanted(&mut self.os, Instant::now(), &mut notes);
        let failed: Vec<String> = notes
            .iter()
            .filter(|n| n.kind == ghost_proto::EventKind::Exited && n.detail.starts_with("failed to start"))
            .map(|n| n.service.clone())
            .collect();
        self.publish_notes(notes);
        let total = self.supervisor.services.len();
        if !failed.is_empty() {
            return Err(format!("{} of {total} services failed to start: {}", failed.len(), failed.join(", ")));
        }
        if !problems.is_empty() {
            return Err(format!("{} service file problem(s); {total} services started", problems.len()));
        }
        Ok(())
    }
}

/// The service files of every directory, later directories overriding earlier ones by name.
pub fn read_service_files(dirs: &[std::path::PathBuf]) -> (BTreeMap<String, ServiceFile>, Vec<String>) {
    let mut paths: BTreeMap<String, std::path::PathBuf> = BTreeMap::new();
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(dir) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) == Some("toml") {
                if let Some(stem) = p.file_stem().and_then(|s| s.to_str()) {
                    paths.insert(stem.to_string(), p);
                }
            }
        }
    }
    let mut files = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, path) in paths {
        match ServiceFile::load(&path) {
            Ok(f) => {
                files.insert(name, f);
            }
            Err(e) => problems.push(format!("{e}; service {name} left out")),
        }
    }
    (files, problems)
}

fn mount_api_filesystems() -> Result<(), String> {
    let mut failures = Vec::new();
    for m in EARLY_MOUNTS {
        let table = std::fs::read_to_string("/proc/self/mountinfo").map(|t| mounts::parse_mountinfo(&t)).unwrap_or_default();
        if mounts::is_mounted(&table, m.target) {
            continue;
        }
        let r = std::fs::create_dir_all(m.target).and_then(|_| sys::mount(m.source, m.target, m.fstype, m.flags, m.data));
        if let Err(e) = r {
            failures.push(format!("{} ({}): {e}", m.target, m.fstype));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

fn load_modules(names: &[String]) -> Result<(), String> {
    if names.is_empty() {
        return Ok(());
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").map_err(|e| format!("/proc/sys/kernel/osrelease: {e}"))?;
    let dir = Path::new("/lib/modules").join(release.trim());
    let dep = ModulesDep::load(&dir)?;
    let mut loaded = modules::loaded_modules(&std::fs::read_to_string("/proc/modules").unwrap_or_default());
    let mut kernel = sys::KernelModules;
    let mut failures = Vec::new();
    let mut count = 0;
    let mut decompressed_here = 0;
    for name in names {
        let files = match dep.resolve(name) {
            Ok(f) => f,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let mut ok = true;
        for f in files {
            let m = modules::module_name(&f);
            if loaded.contains(&m) {
                continue;
            }
            match modules::load_one(&mut kernel, &dir, &f) {
                Ok(how) => {
                    decompressed_here += (how == modules::Loaded::LoadedDecompressedHere) as usize;
                    loaded.insert(m);
                }
                Err(e) => {
                    failures.push(format!("{name}: {e}"));
                    ok = false;
                    break;
                }
            }
        }
        count += ok as usize;
    }
    if decompressed_here > 0 {
        say!("modules: {decompressed_here} decompressed by ghost-init (this kernel cannot decompress modules itself)");
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} ({count} of {} loaded)", failures.join("; "), names.len()))
    }
}

fn mount_state_partition(dir: &Path) -> Result<(), String> {
    let names = state::block_devices(Path::new("/sys/class/block"));
    let (dev, sb) = state::find_by_label(Path::new("/dev"), &names, state::LABEL)
        .ok_or_else(|| format!("no ext4 partition labelled {} among {} block device(s)", state::LABEL, names.len()))?;
    let devs = dev.display().to_string();
    match state::fsck_binary(Path::new("/")) {
        Some(fsck) => {
            let code = sys::command(&fsck).args(["-p", &devs]).status().map_err(|e| format!("{}: {e}", fsck.display()))?;
            let verdict = state::fsck_verdict(code.code().unwrap_or(8)).map_err(|e| format!("{devs}: {e}"))?;
            say!("state: {devs}: e2fsck: {verdict}");
        }
        None if sb.has_errors => say!("state: {devs}: the filesystem records errors and the image has no e2fsck; mounting anyway"),
        None if !sb.clean => say!("state: {devs}: not cleanly unmounted; the ext4 journal will recover it"),
        None => {}
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    sys::mount(&devs, &dir.to_string_lossy(), "ext4", libc::MS_NOATIME | libc::MS_NODEV | libc::MS_NOSUID, "errors=remount-ro")
        .map_err(|e| format!("mount {devs} on {}: {e}", dir.display()))?;
    say!("state: {devs} ({}) mounted on {}", state::LABEL, dir.display());
    Ok(())
}

pub fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}
