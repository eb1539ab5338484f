//! The first-boot wizard for real: `ghost wizard` in a tmux pane (100×30) over a temporary
//! GHOST_ROOT, driven with send-keys and read with capture-pane, as an operator at the console
//! would; seed files unattended; ghost-init running it on a hosted first boot; the model
//! service honouring the "no model, stay offline" choice.

use ghost_tests::{bin, workspace_root, Ghost, Isolation, Root};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long one screen may take to appear (a loaded 2-core machine, a debug build).
const SCREEN: Duration = Duration::from_secs(20);
/// How long a hosted boot may take.
const BOOT: Duration = Duration::from_secs(30);

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJrZ8vXoq+2oCP5hZbW3ZPp7tM1oN0GFUk1dJ4pk7s0Y ops@desk";

/// A root with the image's /etc/ghost (ghost.toml and model.toml as shipped).
fn image_root() -> Root {
    let root = Root::new();
    for f in ["ghost.toml", "model.toml"] {
        std::fs::copy(workspace_root().join("initramfs/etc/ghost").join(f), root.path().join("etc/ghost").join(f)).expect("copy the image's file");
    }
    root
}

fn overlay(root: &Root) -> PathBuf {
    root.path().join("var/lib/ghost/etc")
}

fn read_toml(p: &Path) -> toml::Table {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", p.display()))
}

/// Files the overlay holds (none when the directory is not there).
fn overlay_files(root: &Root) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(overlay(root)).map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
    v.sort();
    v
}

/// tmux, or why this machine has none (the tests then say so and return).
fn tmux_missing() -> Option<String> {
    match Command::new("tmux").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!("tmux -V failed: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Some(format!("no tmux ({e}); tests/install-deps installs it")),
    }
}

/// One tmux server of our own (its own socket), running `ghost wizard` in a 100×30 pane.
struct Pane {
    socket: String,
}

impl Pane {
    fn start(root: &Root) -> Pane {
        static N: AtomicU32 = AtomicU32::new(0);
        let socket = format!("ghost-wizard-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
        // The exit code is printed when the wizard ends; the shell then stays, so the pane
        // (and what the wizard left on it) can still be read. kill-server ends it.
        let script = format!("{} wizard; echo wizard-exit=$?; exec sleep 3600", bin("ghost").display());
        let st = Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d", "-s", "wiz", "-x", "100", "-y", "30"])
            .args(["-e", &format!("GHOST_ROOT={}", root.path().display())])
            .args(["sh", "-c", &script])
            .status()
            .expect("run tmux");
        assert!(st.success(), "tmux new-session failed");
        Pane { socket }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").args(["-L", &self.socket]).args(args).output().expect("run tmux");
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "wiz"])
    }

    /// Waits (bounded) until the pane shows `needle`; returns the screen.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + SCREEN;
        loop {
            let s = self.screen();
            if s.contains(needle) {
                return s;
            }
            assert!(Instant::now() < deadline, "the pane never showed {needle:?}; it shows:\n{s}");
            std::thread::yield_now();
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Named keys (Enter, Down, C-u, Escape, BTab…).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "wiz"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// Text, typed literally.
    fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "wiz", "-l", text]);
    }

    /// Clears the field and types `text`, then Enter.
    fn answer(&self, text: &str) {
        self.keys(&["C-u"]);
        self.type_text(text);
        self.keys(&["Enter"]);
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).status();
    }
}

#[test]
fn wrong_values_are_refused_on_screen_and_the_corrected_answers_are_written() {
    if let Some(why) = tmux_missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let root = image_root();
    let pane = Pane::start(&root);
    pane.wait_for("Welcome to ghostos.");
    pane.keys(&["Enter"]);
    pane.wait_for("Step 1 of 6 · Host name");
    pane.answer("bad name!");
    let s = pane.wait_for("is not a valid host name");
    assert!(s.contains("! hostname: `bad name!` is not a valid host name"), "{s}");
    assert!(s.contains("Step 1 of 6 · Host name"), "a refused host name moved on:\n{s}");
    pane.answer("box-1");
    pane.wait_for("Step 2 of 6 · Network");
    pane.keys(&["Down", "Enter"]);
    pane.wait_for("Step 3 of 9 · Static address");
    pane.answer("10.0.0.300/24");
    let s = pane.wait_for("is not an IPv4 address");
    assert!(s.contains("! network.address: address `10.0.0.300` is not an IPv4 address"), "{s}");
    pane.answer("10.0.0.5/24");
    pane.wait_for("Step 4 of 9 · Gateway");
    pane.answer("10.0.0.1");
    pane.wait_for("Step 5 of 9 · Name servers");
    pane.answer("10.0.0.1, 1.1.1.1");
    let s = pane.wait_for("Step 6 of 9 · Language model");
    assert!(s.contains("stay offline") && s.contains("~91 MB"), "the model list has no sizes or no offline choice:\n{s}");
    pane.keys(&["Down", "Down", "Down", "Enter"]);
    pane.wait_for("Step 7 of 9 · Security mode");
    pane.keys(&["Down", "Enter"]);
    pane.wait_for("Step 8 of 9 · Operator access");
    pane.answer("ssh-rsa AAAA");
    pane.wait_for("! operator:");
    pane.answer(KEY);
    pane.wait_for("Step 9 of 9 · Time zone");
    pane.answer("Europe/Paris");
    let s = pane.wait_for("Summary: check, then confirm");
    for want in ["box-1", "static 10.0.0.5/24 via 10.0.0.1, dns 10.0.0.1 1.1.1.1", "none (0 B)", "paranoid", "key ssh-ed25519", "Europe/Paris"] {
        assert!(s.contains(want), "the summary lacks {want:?}:\n{s}");
    }
    assert!(overlay_files(&root).is_empty(), "something was written before the summary was confirmed: {:?}", overlay_files(&root));
    pane.keys(&["Enter"]);
    pane.wait_for("wizard-exit=0");

    assert_eq!(overlay_files(&root), ["ghost.toml", "model.toml", "timezone"]);
    let g = read_toml(&overlay(&root).join("ghost.toml"));
    assert_eq!(g["hostname"].as_str(), Some("box-1"));
    assert_eq!(g["security"].as_str(), Some("paranoid"));
    assert_eq!(g["network"]["mode"].as_str(), Some("static"));
    assert_eq!(g["network"]["address"].as_str(), Some("10.0.0.5/24"));
    assert_eq!(g["network"]["gateway"].as_str(), Some("10.0.0.1"));
    let dns: Vec<&str> = g["network"]["dns"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(dns, ["10.0.0.1", "1.1.1.1"]);
    assert_eq!(g["operator"]["key"].as_str(), Some(KEY));
    // The image's other keys come along (modules, console).
    let image = read_toml(&root.path().join("etc/ghost/ghost.toml"));
    assert_eq!(g["modules"], image["modules"]);
    let m = read_toml(&overlay(&root).join("model.toml"));
    assert_eq!(m["offline"].as_bool(), Some(true));
    assert!(m["model"].as_array().unwrap().is_empty());
    assert_eq!(m["serve"], read_toml(&root.path().join("etc/ghost/model.toml"))["serve"]);
    assert_eq!(std::fs::read_to_string(overlay(&root).join("timezone")).unwrap(), "Europe/Paris\n");
}

#[test]
fn leaving_before_the_summary_is_confirmed_writes_nothing_even_with_a_seed_on_the_machine() {
    if let Some(why) = tmux_missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let root = image_root();
    // A seed an install left behind does not take the screens from a person at a terminal.
    std::fs::create_dir_all(root.path().join("var/lib/ghost")).unwrap();
    std::fs::write(root.path().join("var/lib/ghost/seed.toml"), "hostname = \"from-seed\"\n").unwrap();
    let pane = Pane::start(&root);
    pane.wait_for("Welcome to ghostos.");
    pane.keys(&["Enter"]);
    pane.wait_for("Step 1 of 6 · Host name");
    pane.answer("box-9");
    pane.wait_for("Step 2 of 6 · Network");
    pane.keys(&["Escape"]);
    pane.wait_for("Leave setup without saving?");
    pane.keys(&["n"]);
    pane.wait_for("Step 2 of 6 · Network");
    pane.keys(&["Escape"]);
    pane.wait_for("Leave setup without saving?");
    pane.keys(&["y"]);
    let s = pane.wait_for("wizard-exit=3");
    assert!(s.contains("left without saving; nothing written"), "{s}");
    assert!(overlay_files(&root).is_empty(), "{:?}", overlay_files(&root));
}

fn wizard(root: &Root, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("ghost")).arg("wizard").args(args).env("GHOST_ROOT", root.path()).stdin(Stdio::null()).output().expect("run ghost wizard");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_seed_answers_unattended_and_a_bad_seed_writes_nothing_and_names_the_key() {
    let root = image_root();
    std::fs::create_dir_all(root.path().join("var/lib/ghost")).unwrap();
    let seed = root.path().join("var/lib/ghost/seed.toml");
    std::fs::write(&seed, "hostname = \"seeded\"\n[network]\nmode = \"static\"\naddress = \"10.0.0.300/24\"\n[operator]\ngroup = \"ops\"\n").unwrap();
    let (code, _, err) = wizard(&root, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{}: network.address: address `10.0.0.300` is not an IPv4 address", seed.display())), "{err}");
    assert!(overlay_files(&root).is_empty(), "a bad seed wrote {:?}", overlay_files(&root));

    std::fs::write(&seed, "hostname = \"seeded\"\nmodel = \"embed-only\"\n[network]\nmode = \"static\"\naddress = \"10.0.0.30/24\"\n[operator]\ngroup = \"ops\"\n").unwrap();
    let (code, _, err) = wizard(&root, &["--check"]);
    assert_eq!(code, 0, "{err}");
    assert!(overlay_files(&root).is_empty(), "--check wrote {:?}", overlay_files(&root));
    // Not a terminal: the seed is found and applied without a screen.
    let (code, out, err) = wizard(&root, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("answers from {}", seed.display())), "{out}");
    let g = read_toml(&overlay(&root).join("ghost.toml"));
    assert_eq!(g["hostname"].as_str(), Some("seeded"));
    assert_eq!(g["network"]["address"].as_str(), Some("10.0.0.30/24"));
    assert_eq!(g["operator"]["group"].as_str(), Some("ops"));
    let m = read_toml(&overlay(&root).join("model.toml"));
    let repos: Vec<&str> = m["model"].as_array().unwrap().iter().filter_map(|e| e["repo"].as_str()).collect();
    assert_eq!(repos, ["sentence-transformers/all-MiniLM-L6-v2"]);

    // No terminal and no seed: nothing to answer with, said plainly.
    let bare = image_root();
    let (code, _, err) = wizard(&bare, &[]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("not a terminal and there is no seed file"), "{err}");
}

/// A hosted root whose /usr/bin/ghost is the built userland, so that ghost-init can run it.
fn root_with_userland() -> Root {
    let root = image_root();
    std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
    std::os::unix::fs::symlink(bin("ghost"), root.path().join("usr/bin/ghost")).unwrap();
    // Hosted, the image's modules and console mean nothing; a plain ghost.toml.
    root.ghost_toml("hostname = \"image\"\nstop_timeout_s = 2\n");
    root
}

#[test]
fn ghost_init_runs_the_wizard_on_a_first_boot_before_the_services_and_reads_its_answers() {
    let root = root_with_userland();
    root.service("early", "exec = [\"/bin/sh\", \"-c\", \"echo early-ran; exec sleep 60\"]\n");
    std::fs::create_dir_all(root.path().join("var/lib/ghost")).unwrap();
    std::fs::write(root.path().join("var/lib/ghost/seed.toml"), "hostname = \"from-seed\"\nstop_timeout_s = 1\n").unwrap();
    // First a bad seed (an unknown key): reported, nothing written, boot goes on.
    let mut g = Ghost::start(&root, Isolation::Subreaper, "");
    let failed = g.console.wait_for("ghost-init: wizard failed:", BOOT);
    assert!(failed.contains("the seed file has problems"), "{failed}");
    g.console.wait_for("seed.toml: stop_timeout_s: unknown key", BOOT);
    g.console.wait_for("ghost-init: boot complete", BOOT);
    assert!(overlay_files(&root).is_empty());
    g.signal(libc::SIGTERM);
    assert!(g.wait_exit(Duration::from_secs(20)).is_some());
    drop(g);

    // A good seed, on a machine whose first boot has not completed yet.
    std::fs::remove_file(root.path().join("var/lib/ghost/.ghost-first-boot-done")).unwrap();
    std::fs::write(root.path().join("var/lib/ghost/seed.toml"), "hostname = \"from-seed\"\nsecurity = \"safe\"\n").unwrap();
    let mut g = Ghost::start(&root, Isolation::Subreaper, "");
    let ok = g.console.wait_for("ghost-init: wizard ok in ", BOOT);
    g.console.wait_for("ghost-init: config: using the overlay", BOOT);
    g.console.wait_for("ghost-init: boot complete", BOOT);
    let lines: Vec<String> = g.console.text().lines().map(str::to_string).collect();
    let at = |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle:?} in:\n{}", lines.join("\n")));
    assert!(at("ghost-init: wizard ok in ") < at("ghost-init: services "), "the services started before the wizard ended:\n{}", lines.join("\n"));
    assert!(ok.trim_end().ends_with(" ms"), "{ok}");
    // ghost-init takes every key the wizard wrote.
    let complaint = format!("ghost-init: config: {}: ", overlay(&root).join("ghost.toml").display());
    assert!(!lines.iter().any(|l| l.starts_with(&complaint)), "ghost-init complains about the wizard's file:\n{}", lines.join("\n"));
    let written = read_toml(&overlay(&root).join("ghost.toml"));
    assert_eq!(written["hostname"].as_str(), Some("from-seed"));
    assert_eq!(written["stop_timeout_s"].as_integer(), Some(2), "the image's own keys were lost");
    g.signal(libc::SIGTERM);
    assert!(g.wait_exit(Duration::from_secs(20)).is_some());
    drop(g);

    // Not a first boot any more: the wizard does not run again.
    let mut g = Ghost::start(&root, Isolation::Subreaper, "");
    g.console.wait_for("ghost-init: boot complete", BOOT);
    assert!(!g.console.text().contains("wizard"), "the wizard ran on a later boot:\n{}", g.console.text());
    g.signal(libc::SIGTERM);
    assert!(g.wait_exit(Duration::from_secs(20)).is_some());
}

#[test]
fn the_model_service_stays_up_offline_when_no_model_was_chosen() {
    let root = image_root();
    std::fs::create_dir_all(root.path().join("var/lib/ghost")).unwrap();
    let seed = root.path().join("seed.toml");
    std::fs::write(&seed, "model = \"none\"\n").unwrap();
    let (code, out, err) = wizard(&root, &["--seed", seed.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let sock = root.path().join("model.sock");
    let mut child = Command::new(bin("ghost"))
        .args(["model", "serve", "--socket", sock.to_str().unwrap()])
        .env("GHOST_ROOT", root.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ghost model serve");
    let mut said = Vec::new();
    let mut offline = false;
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        offline = line.contains("offline: ") && line.contains("var/lib/ghost/etc/model.toml");
        said.push(line);
        if offline {
            break;
        }
    }
    let still_running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(offline, "the server did not say it is offline with the wizard's model.toml:\n{}", said.join("\n"));
    assert!(still_running, "the server exited instead of staying up offline:\n{}", said.join("\n"));
}
