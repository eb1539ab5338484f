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
use crate::supervisor::{Note, Supervisor};
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

    /// The rest of boot: identity, network basics, services, and `boot complete`.
    pub fn boot_services(&mut self) {
        if !self.hosted {
            self.step("hostname", |init| sys::sethostname(&init.config.hostname).map_err(|e| format!("{}: {e}", init.config.hostname)));
            self.step("loopback", |_| sys::interface_up("lo").map_err(|e| format!("lo: {e}")));
        }
        self.step("services", |init| init.start_services());
        if self.critical_failed {
            say!("a critical service could not start; opening the rescue console");
            self.enter_rescue();
            return;
        }
        self.boot_complete();
    }

    pub fn boot_complete(&mut self) {
        self.phase = Phase::Running;
        let took = self.start.elapsed();
        say!("boot complete in {} ms", took.as_millis());
        if self.cmdline.debug {
            say!("boot complete: {} us from exec", took.as_micros());
        }
        if self.first_boot {
            let marker = self.paths.first_boot_marker();
            if let Err(e) = std::fs::write(&marker, format!("first boot completed {} ms after exec\n", self.start.elapsed().as_millis())) {
                say!("state: cannot record first boot in {}: {e}", marker.display());
            }
        }
        if self.cmdline.poweroff_after_ready {
            say!("ghost.poweroff_after_ready=1: shutting down");
            self.begin_shutdown(sys::PowerAction::PowerOff);
        }
    }

    fn load_config(&mut self) -> Result<(), String> {
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

    /// Reads the service files and starts them; sets `critical_failed` when a critical one failed.
    fn start_services(&mut self) -> Result<(), String> {
        let (files, mut problems) = read_service_files(&self.paths.services_dirs());
        let (mut sup, more) = Supervisor::new(files, Duration::from_secs(self.config.stop_timeout_s));
        problems.extend(more);
        for p in &problems {
            say!("services: {p}");
        }
        for s in &sup.services {
            let later = s.spec.not_yet_enforced();
            if !later.is_empty() {
                say!("services: {}: key(s) {} are read but not acted on by this ghost-init yet", s.name, later.join(", "));
            }
        }
        self.spawner.first_boot = self.first_boot;
        let mut notes = Vec::new();
        sup.start_all(&mut self.spawner, Instant::now(), &mut notes);
        self.supervisor = sup;
        let failed: Vec<String> = notes.iter().filter_map(|n| if let Note::StartFailed { name, .. } = n { Some(name.clone()) } else { None }).collect();
        let critical = notes.iter().any(|n| matches!(n, Note::StartFailed { critical: true, .. }));
        self.say_notes(&notes);
        let total = self.supervisor.services.len();
        self.critical_failed = critical;
        if !failed.is_empty() {
            return Err(format!("{} of {total} services failed to start: {}", failed.len(), failed.join(", ")));
        }
        if !problems.is_empty() {
            return Err(format!("{} service file problem(s); {total} services started", problems.len()));
        }
        Ok(())
    }

    pub fn say_notes(&self, notes: &[Note]) {
        for n in notes {
            match n {
                Note::Started { name, pid } => {
                    if self.cmdline.debug {
                        say!("service {name}: started, pid {pid}");
                    }
                }
                Note::StartFailed { name, why, critical } => {
                    say!("service {name}: failed to start: {why}{}", if *critical { " (critical)" } else { "" })
                }
                Note::Exited { name, exit } => say!("service {name}: exited with {exit}"),
                Note::Restarting { name, delay } => say!("service {name}: restarting in {} ms", delay.as_millis()),
                Note::GaveUp { name, why } => say!("service {name}: not restarting ({why})"),
                Note::Killed { name } => say!("service {name}: did not stop in time; killed"),
            }
        }
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
