//! The crucible end to end with the sample unit (improve/sample): real cargo builds of each
//! candidate, its tests in the sandbox, the interleaved benchmark, the swap under a hosted
//! ghost-init with the service answering, probation and rollback.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ghost_tests::agent_world::World;
use ghost_tests::{bin, eventually, free_port, status, wait_for_control, workspace_root, Ghost, Isolation, Root};
use serde_json::Value;

fn patch(name: &str) -> PathBuf {
    workspace_root().join("improve/sample/patches").join(format!("{name}.patch"))
}

fn sandbox_possible() -> bool {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the crucible's sandbox needs root (mount and network namespaces)");
        return false;
    }
    true
}

/// A root with the sample unit described (`extra` lines added to its unit file) and, with a
/// port, its service.
fn described(service: Option<u16>, extra: &str) -> Root {
    let root = Root::new();
    let units = root.path().join("etc/ghost/improve");
    std::fs::create_dir_all(&units).unwrap();
    let service_line = if service.is_some() { "service = \"sample\"\n" } else { "" };
    std::fs::write(
        units.join("sample.toml"),
        format!("source = \"{}\"\nbinary = \"ghost-sample\"\nbench = \"ghost-sample-bench\"\n{service_line}min_gain = 0.2\nrounds = 6\nprobation_s = 3\n{extra}", workspace_root().join("improve/sample").display()),
    )
    .unwrap();
    if let Some(port) = service {
        let exe = root.path().join("var/lib/ghost/generations/sample/current/bin/ghost-sample");
        root.service("sample", &format!("exec = [\"{}\", \"{port}\"]\nready = \"tcp:{port}\"\nrestart = \"always\"\nrestart_delay_ms = 50\n", exe.display()));
    }
    root
}

/// A root with the sample unit described and seeded as generation 0.
fn seeded(service: Option<u16>) -> Root {
    seeded_with(service, "")
}

fn seeded_with(service: Option<u16>, extra: &str) -> Root {
    let root = described(service, extra);
    let (code, out, err) = improve(&root, &["seed", "sample"]);
    assert_eq!(code, 0, "seed: {out}{err}");
    assert!(out.contains("Seeded"), "{out}");
    root
}

fn improve(root: &Root, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("ghost"))
        .arg("improve")
        .args(args)
        .env("GHOST_ROOT", root.path())
        .env("GHOST_SOCKET", root.path().join("run/ghost/control.sock"))
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn verdict(root: &Root, p: &Path) -> (i32, Value, String) {
    let (code, out, err) = improve(root, &["run", "sample", "--patch", p.to_str().unwrap(), "--json"]);
    let v = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    (code, v, err)
}

fn current(root: &Root) -> String {
    std::fs::read_link(root.path().join("var/lib/ghost/generations/sample/current")).unwrap().display().to_string()
}

fn ask(port: u16, n: u64) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    writeln!(s, "{n}").ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    Some(line.trim().to_string()).filter(|l| !l.is_empty())
}

#[test]
fn wrong_slow_judge_editing_and_broken_candidates_are_refused() {
    if !sandbox_possible() {
        return;
    }
    let root = seeded(None);
    // Faster but wrong: a test fails.
    let (code, v, err) = verdict(&root, &patch("wrong"));
    assert_eq!((code, v["outcome"].as_str(), v["stage"].as_str()), (4, Some("refused"), Some("tests")), "{v} {err}");
    assert!(v["reason"].as_str().unwrap().contains("tests fail"), "{v}");
    // Correct but not faster.
    let (code, v, err) = verdict(&root, &patch("not-faster"));
    assert_eq!((code, v["outcome"].as_str(), v["stage"].as_str()), (4, Some("refused"), Some("bench")), "{v} {err}");
    assert!(v["bench"]["faster"] == false && v["bench"]["incumbent"]["n"] == 6, "{v}");
    // Edits its own tests to match its wrong answers: refused before anything is built.
    let (code, v, _) = verdict(&root, &patch("edits-tests"));
    assert_eq!((code, v["stage"].as_str()), (4, Some("patch")), "{v}");
    assert!(v["reason"].as_str().unwrap().contains("tests/primes.rs"), "{v}");
    assert!(v["seconds"]["build"].is_null(), "nothing was built: {v}");
    // Does not apply to the running source.
    let t = tempfile::tempdir().unwrap();
    let stale = t.path().join("stale.patch");
    std::fs::write(&stale, "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1 +1 @@\n-no such line\n+x\n").unwrap();
    let (code, v, _) = verdict(&root, &stale);
    assert_eq!((code, v["stage"].as_str()), (4, Some("patch")), "{v}");
    assert!(v["reason"].as_str().unwrap().contains("does not apply"), "{v}");
    // Generation 0 still runs; every verdict is on record.
    assert_eq!(current(&root), "0");
    let (_, out, _) = improve(&root, &["history", "sample", "--json"]);
    let outcomes: Vec<String> = out.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["outcome"].as_str().unwrap().to_string()).collect();
    assert_eq!(outcomes, ["seeded", "refused", "refused", "refused", "refused"]);
    let (_, out, _) = improve(&root, &["status", "sample"]);
    assert!(out.contains("generation 0; 5 verdicts, 4 refused, 0 rolled back"), "{out}");
    // ghostctl improve is the same command (it hands over to the userland on PATH).
    let path = format!("{}:{}", bin("ghost").parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    let ctl = Command::new(bin("ghostctl")).args(["improve", "status", "sample", "--json"]).env("GHOST_ROOT", root.path()).env("PATH", path).output().unwrap();
    let status: Value = serde_json::from_slice(&ctl.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&ctl.stderr)));
    assert_eq!((status[0]["unit"].as_str(), status[0]["generation"].as_u64(), status[0]["refused"].as_u64()), (Some("sample"), Some(0), Some(4)), "{status}");
}

#[test]
fn a_faster_correct_candidate_is_swapped_in_with_the_service_answering() {
    if !sandbox_possible() {
        return;
    }
    let port = free_port();
    // With the agent beside it: verdicts go to the signed audit trail and to memory.
    let w = World::start_in(seeded(Some(port)), &[], |r| r, Isolation::Subreaper, &World::fast_config(&[]), |_| {});
    let root = &w.root;
    assert!(eventually(Duration::from_secs(20), || ask(port, 10_000).as_deref() == Some("1229")), "generation 0 answers");
    let pid0 = status(&root, "sample").pid;

    // A client asking all along: every answer must be right; the longest gap is the downtime.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new((0u32, 0u32, Duration::ZERO)));
    let client = {
        let (stop, seen) = (stop.clone(), seen.clone());
        std::thread::spawn(move || {
            let mut last_ok = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let answer = ask(port, 1_000);
                let mut s = seen.lock().unwrap();
                match answer.as_deref() {
                    Some("168") => {
                        s.0 += 1;
                        s.2 = s.2.max(last_ok.elapsed());
                        last_ok = Instant::now();
                    }
                    Some(other) => panic!("a wrong answer during the swap: {other}"),
                    None => s.1 += 1,
                }
            }
        })
    };
    let t = Instant::now();
    let (code, v, err) = verdict(root, &patch("faster"));
    let cycle = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    assert_eq!((code, v["outcome"].as_str(), v["generation"].as_u64()), (0, Some("kept"), Some(1)), "{v}\n{err}");
    assert!(v["bench"]["gain"].as_f64().unwrap() > 0.2, "{v}");
    assert!(v["bench"]["candidate"]["ci_high"].as_f64().unwrap() < v["bench"]["incumbent"]["ci_low"].as_f64().unwrap(), "{v}");
    assert_eq!(current(&root), "1");
    assert_ne!(status(&root, "sample").pid, pid0, "the service runs the new generation");
    assert_eq!(ask(port, 10_000).as_deref(), Some("1229"));
    let (answers, failures, gap) = *seen.lock().unwrap();
    assert!(answers > 0, "the client was answered during the cycle");
    eprintln!("crucible cycle {cycle:?}; swap {:.1} ms as the crucible measured it; client: {answers} answers, {failures} failed, longest gap {gap:?}", v["seconds"]["swap"].as_f64().unwrap() * 1e3);
    // The generation keeps its source, binaries, logs and verdict.
    let gen = root.path().join("var/lib/ghost/generations/sample/1");
    for f in ["source/src/lib.rs", "bin/ghost-sample", "bin/ghost-sample-bench", "test.log", "verdict.json", "candidate.patch"] {
        assert!(gen.join(f).exists(), "{f}");
    }
    assert!(std::fs::read_to_string(gen.join("source/src/lib.rs")).unwrap().contains("sieve"));

    // On record: in the audit trail as the crucible's, with its numbers, and in memory.
    assert!(err.contains("recorded by the agent: audit seq"), "{err}");
    let records = w.audit_records();
    let kept = records.iter().find(|r| r["who"]["actor"] == "crucible" && r["what"]["data"]["outcome"] == "kept").unwrap_or_else(|| panic!("no crucible record: {records:?}"));
    assert_eq!(kept["what"]["data"]["generation"], 1, "{kept}");
    assert!(kept["what"]["data"]["bench"]["gain"].as_f64().unwrap() > 0.2, "{kept}");
    let hits = w.ctl_json(&["memory", "search", "crucible sample kept"]);
    assert!(hits.as_array().unwrap().iter().any(|h| h["text"].as_str().unwrap().contains("sample candidate") && h["text"].as_str().unwrap().contains("kept")), "{hits}");
    w.audit_intact();

    // The operator puts generation 0 back.
    let (code, out, err) = improve(root, &["rollback", "sample"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(current(&root), "0");
    assert!(eventually(Duration::from_secs(10), || ask(port, 10_000).as_deref() == Some("1229")));
}

#[test]
fn a_candidate_that_crashes_after_the_swap_is_rolled_back_in_probation() {
    if !sandbox_possible() {
        return;
    }
    let port = free_port();
    let root = seeded(Some(port));
    let _ghost = Ghost::start(&root, Isolation::Subreaper, "");
    wait_for_control(&root, Duration::from_secs(10));
    assert!(eventually(Duration::from_secs(20), || ask(port, 100).as_deref() == Some("25")));
    let (code, v, err) = verdict(&root, &patch("crashes"));
    assert_eq!((code, v["outcome"].as_str(), v["stage"].as_str()), (4, Some("rolled-back"), Some("probation")), "{v}\n{err}");
    assert!(v["reason"].as_str().unwrap().contains("generation 0 is back"), "{v}");
    assert_eq!(current(&root), "0");
    // Generation 0 serves again, and stays up.
    assert!(eventually(Duration::from_secs(10), || ask(port, 100).as_deref() == Some("25")));
    let pid = status(&root, "sample").pid;
    assert!(eventually(Duration::from_secs(2), || status(&root, "sample").state == ghost_proto::State::Running));
    assert_eq!(status(&root, "sample").pid, pid);
    eprintln!("rolled back {:.0} ms after the swap's probation caught it (rollback itself {:.1} ms)", v["seconds"]["probation"].as_f64().unwrap() * 1e3, v["seconds"]["rollback"].as_f64().unwrap() * 1e3);
}

/// A stand-in for a remote code model behind the router's strategic layer (no model that writes
/// correct diffs can run here): it checks that the prompt shows the running source and marks the
/// judge, and answers with the faster patch in a ```diff block, as a chat model would.
fn fake_code_model() -> (u16, std::thread::JoinHandle<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let diff = std::fs::read_to_string(patch("faster")).unwrap();
    let h = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let mut body = vec![0; len];
        std::io::Read::read_exact(&mut r, &mut body).unwrap();
        let body = String::from_utf8(body).unwrap();
        let content = format!("The sieve of Eratosthenes does the same work in far less time.\n```diff\n{diff}```\n");
        let reply = serde_json::json!({ "model": "fake-coder", "choices": [{ "message": { "role": "assistant", "content": content } }], "usage": { "prompt_tokens": 900, "completion_tokens": 300 } }).to_string();
        let mut s = s;
        write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}", reply.len()).unwrap();
        body
    });
    (port, h)
}

#[test]
fn a_candidate_asked_of_the_model_router_is_judged_like_any_other() {
    if !sandbox_possible() {
        return;
    }
    let root = seeded(None);
    let (port, model) = fake_code_model();
    std::fs::write(root.path().join("etc/ghost/api.key"), "sk-test\n").unwrap();
    std::fs::write(
        root.path().join("etc/ghost/model.toml"),
        format!("[router.strategic]\napi = \"openai\"\nurl = \"http://127.0.0.1:{port}/v1\"\nmodel = \"fake-coder\"\napi_key_file = \"/etc/ghost/api.key\"\ndaily_tokens = 100000\ndaily_usd = 1.0\nusd_per_million_input = 0.0\nusd_per_million_output = 0.0\ntimeout_s = 30\n"),
    )
    .unwrap();
    let (code, out, err) = improve(&root, &["run", "sample", "--from-model", "--json"]);
    let prompt = model.join().unwrap();
    assert!(prompt.contains("count_primes") && prompt.contains("benches/bench.rs (protected)") && prompt.contains("src/lib.rs (may change)"), "{prompt}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    assert_eq!((code, v["outcome"].as_str(), v["generation"].as_u64()), (0, Some("kept"), Some(1)), "{v}\n{err}");
    assert!(v["origin"].as_str().unwrap().starts_with("model:strategic:"), "{v}");
    assert_eq!(current(&root), "1");
}

/// A build host (musl target, no service) judges `faster` and `crashes` and exports generations
/// 0, 1 and 2; a machine with a running ghost-init installs them: 0 seeds it, 1 is swapped in
/// with a client answered all through, 2 crashes in probation and 1 comes back. Broken, foreign
/// and dynamically linked bundles are refused before anything is written.
#[test]
fn bundles_verified_on_a_build_host_are_installed_swapped_and_rolled_back_on_the_machine() {
    if !sandbox_possible() {
        return;
    }
    let host = seeded_with(None, "target = \"x86_64-unknown-linux-musl\"\n");
    // Both patches are against generation 0: `crashes` is judged first (kept: the build host
    // runs no service), the operator puts 0 back, then `faster`.
    for (p, gen) in [("crashes", 1), ("faster", 2)] {
        let (code, v, err) = verdict(&host, &patch(p));
        assert_eq!((code, v["outcome"].as_str(), v["generation"].as_u64()), (0, Some("kept"), Some(gen)), "{p}: {v}\n{err}");
        assert!(v["limits"].as_str().is_some_and(|l| !l.is_empty()), "the verdict says what bounded the build: {v}");
        let (code, out, err) = improve(&host, &["rollback", "sample"]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let bin = host.path().join("var/lib/ghost/generations/sample/2/bin/ghost-sample");
    let elf = std::fs::read(&bin).unwrap();
    assert!(ghost_improve::bundle::interpreter(&elf).is_none(), "a musl build is static");
    let t = tempfile::tempdir().unwrap();
    // Shipped in the order the machine installs them: the seed, the sieve, the crasher.
    let bundle = |i: u64| t.path().join(format!("sample-{i}.bundle"));
    for (i, g) in [(0, 0), (1, 2), (2, 1)] {
        let (code, out, err) = improve(&host, &["export", "sample", &g.to_string(), "--to", bundle(i).to_str().unwrap()]);
        assert_eq!(code, 0, "export {g}: {out}{err}");
        assert!(out.contains(&format!("sample generation {g} (")), "{out}");
    }
    eprintln!("bundle sizes: {:?} bytes", (0..3).map(|g| std::fs::metadata(bundle(g)).unwrap().len()).collect::<Vec<_>>());

    let port = free_port();
    let machine = described(Some(port), "");
    let _ghost = Ghost::start(&machine, Isolation::Subreaper, "");
    wait_for_control(&machine, Duration::from_secs(10));
    let gens = machine.path().join("var/lib/ghost/generations/sample");
    let install = |file: &Path| {
        let (code, out, err) = improve(&machine, &["install", "sample", file.to_str().unwrap(), "--json"]);
        let v: Value = if code == 1 { Value::Null } else { serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}{err}")) };
        (code, v, err)
    };

    // Refused before anything is written: corrupted, truncated, another unit's, dynamic.
    let good = std::fs::read(bundle(1)).unwrap();
    let bad = t.path().join("bad.bundle");
    let mut flipped = good.clone();
    let at = flipped.len() - 100;
    flipped[at] ^= 0xff;
    std::fs::write(&bad, &flipped).unwrap();
    let (code, _, err) = install(&bad);
    assert!(code == 1 && err.contains("bad.bundle: ") && err.contains("is corrupted: SHA-256"), "{code} {err}");
    std::fs::write(&bad, &good[..good.len() / 2]).unwrap();
    let (code, _, err) = install(&bad);
    assert!(code == 1 && err.contains("bad.bundle: truncated: "), "{code} {err}");
    std::fs::write(&bad, String::from_utf8_lossy(&good).replacen("\"unit\":\"sample\"", "\"unit\":\"other\"", 1).as_bytes()).unwrap();
    let (code, _, err) = install(&bad);
    assert!(code == 1 && err.contains("a bundle of unit \"other\", not of \"sample\""), "{code} {err}");
    let glibc = seeded(None);
    let (code, out, err) = improve(&glibc, &["export", "sample", "--to", bad.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = install(&bad);
    assert!(code == 1 && err.contains("bin/ghost-sample is dynamically linked") && err.contains("the image has no dynamic loader"), "{code} {err}");
    assert!(!gens.exists() || std::fs::read_dir(&gens).unwrap().next().is_none(), "a refused bundle wrote nothing");

    // Generation 0 seeds the machine and its service comes up on it.
    let (code, v, err) = install(&bundle(0));
    assert_eq!((code, v["outcome"].as_str(), v["generation"].as_u64()), (0, Some("seeded"), Some(0)), "{v}\n{err}");
    assert!(v["origin"].as_str().unwrap().starts_with("build-host:"), "{v}");
    assert!(eventually(Duration::from_secs(20), || ask(port, 10_000).as_deref() == Some("1229")), "generation 0 answers");

    // Generation 1 (the sieve) is swapped in while a client asks.
    let stop = Arc::new(AtomicBool::new(false));
    let wrong = Arc::new(Mutex::new(Vec::new()));
    let client = {
        let (stop, wrong) = (stop.clone(), wrong.clone());
        std::thread::spawn(move || {
            let mut answered = 0;
            while !stop.load(Ordering::Relaxed) {
                match ask(port, 1_000).as_deref() {
                    Some("168") => answered += 1,
                    Some(other) => wrong.lock().unwrap().push(other.to_string()),
                    None => {}
                }
            }
            answered
        })
    };
    let (code, v, err) = install(&bundle(1));
    stop.store(true, Ordering::Relaxed);
    let answered = client.join().unwrap();
    assert_eq!((code, v["outcome"].as_str(), v["generation"].as_u64(), v["stage"].as_str()), (0, Some("kept"), Some(1), Some("probation")), "{v}\n{err}");
    assert!(v["bench"]["gain"].as_f64().unwrap() > 0.2, "the build host's numbers travel with it: {v}");
    assert!(wrong.lock().unwrap().is_empty() && answered > 0, "{:?}, {answered} answers", wrong.lock().unwrap());
    assert_eq!(current(&machine), "1");
    assert!(std::fs::read_to_string(gens.join("1/source/src/lib.rs")).unwrap().contains("sieve"));
    assert!(gens.join("1/build-host-verdict.json").is_file());
    eprintln!("install of generation 1: {} (seconds)", v["seconds"]);

    // Generation 2 passed everything on the build host, but crashes here: rolled back.
    let (code, v, err) = install(&bundle(2));
    assert_eq!((code, v["outcome"].as_str(), v["stage"].as_str()), (4, Some("rolled-back"), Some("probation")), "{v}\n{err}");
    assert!(v["reason"].as_str().unwrap().contains("died in probation") && v["reason"].as_str().unwrap().contains("generation 1 is back"), "{v}");
    assert_eq!(current(&machine), "1");
    assert!(eventually(Duration::from_secs(10), || ask(port, 10_000).as_deref() == Some("1229")));
    let (_, out, _) = improve(&machine, &["history", "sample", "--json"]);
    let outcomes: Vec<String> = out.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["outcome"].as_str().unwrap().to_string()).collect();
    assert_eq!(outcomes, ["seeded", "kept", "rolled-back"]);
    // A rolled-back generation does not ship on.
    let (code, _, err) = improve(&machine, &["export", "sample", "2", "--to", bad.to_str().unwrap()]);
    assert!(code == 1 && err.contains("only a verified generation (seeded or kept) is shipped"), "{code} {err}");
}

/// PID 1 as an improvable unit (`swap = "reexec"`): its source cut out of this workspace
/// (`ghost improve workspace-source`), seeded by a real release build and its own tests in the
/// sandbox; a candidate that edits a test module inside a source file is refused unbuilt; a
/// verified generation is swapped in by re-executing ghost-init (every service keeps its
/// process) and survives probation; a generation PID 1 refuses is rolled back with PID 1
/// untouched; the operator's rollback re-executes the previous generation.
#[test]
fn pid1_is_a_unit_swapped_in_by_reexec_with_every_service_kept() {
    if !sandbox_possible() {
        return;
    }
    if let Err(why) = ghost_tests::pid_namespaces_available() {
        eprintln!("SKIP pid1_is_a_unit_swapped_in_by_reexec_with_every_service_kept: {why}");
        return;
    }
    let root = Root::new();
    root.service("steady", "exec = [\"/bin/sleep\", \"1000\"]\n");
    let g = Ghost::start(&root, Isolation::PidNamespace, "");
    g.console.wait_for("boot complete", Duration::from_secs(20));
    let src = root.path().join("usr/src/ghost/ghost-init");
    let repo = workspace_root();
    let (code, out, err) = improve(&root, &["workspace-source", repo.to_str().unwrap(), "--members", "init,init/proto", "--to", src.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let units = root.path().join("etc/ghost/improve");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::write(
        units.join("ghost-init.toml"),
        format!("source = \"{}\"\npackage = \"ghost-init\"\nbinary = \"ghost-init\"\nbench = \"ghost-init-bench\"\ntarget = \"x86_64-unknown-linux-musl\"\nswap = \"reexec\"\nrounds = 3\nprobation_s = 1\nprotected = [\"Cargo.toml\", \"Cargo.lock\", \"init/Cargo.toml\", \"init/proto/Cargo.toml\", \"init/src/bin\"]\n", src.display()),
    )
    .unwrap();
    let pid_of = || status(&root, "steady").pid;
    let steady = pid_of();
    assert!(steady.is_some());

    let (code, out, err) = improve(&root, &["seed", "ghost-init"]);
    assert_eq!(code, 0, "seeding ghost-init (release build and its tests, sandboxed): {out}{err}");

    // A candidate that makes a test in a source file agree with it is refused before any build.
    let file = std::fs::read_to_string(src.join("init/src/supervisor/handover.rs")).unwrap();
    let at = file.lines().position(|l| l.contains("assert_eq!(back.services[0].restarts, 3);")).expect("the round-trip test of handover.rs") + 1;
    let cheat = format!("--- a/init/src/supervisor/handover.rs\n+++ b/init/src/supervisor/handover.rs\n@@ -{at},1 +{at},0 @@\n-        assert_eq!(back.services[0].restarts, 3);\n");
    let cheat_file = root.path().join("cheat.patch");
    std::fs::write(&cheat_file, cheat).unwrap();
    let (code, out, err) = improve(&root, &["run", "ghost-init", "--patch", cheat_file.to_str().unwrap(), "--json"]);
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    assert_eq!((code, v["outcome"].as_str(), v["stage"].as_str()), (4, Some("refused"), Some("patch")), "{v}");
    assert!(v["reason"].as_str().unwrap().contains("#[cfg(test)] module of init/src/supervisor/handover.rs"), "{v}");

    // The verified generation, shipped as a build host would, swapped into PID 1.
    let bundle = root.path().join("gen0.bundle");
    let (code, out, err) = improve(&root, &["export", "ghost-init", "0", "--to", bundle.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = improve(&root, &["install", "ghost-init", bundle.to_str().unwrap(), "--json"]);
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    assert_eq!((code, v["outcome"].as_str(), v["generation"].as_u64()), (0, Some("kept"), Some(1)), "{v}\n{err}\n{}", g.console.text());
    let info = ghost_tests::control(&root, "{\"cmd\":\"init\"}").init.unwrap();
    let gen1 = root.path().join("var/lib/ghost/generations/ghost-init/1/bin/ghost-init");
    assert_eq!((info.pid, info.reexecs, Path::new(&info.binary)), (1, 1, gen1.as_path()), "PID 1 runs generation 1: {info:?}");
    assert!(v["seconds"]["reexec_ms"].as_f64().is_some_and(|ms| ms < 1000.0), "{v}");
    assert_eq!(pid_of(), steady, "the service kept its process through PID 1's swap");

    // A generation PID 1 refuses to take over (busybox is no ghost-init): rolled back at once.
    let fake = root.path().join("fake-gen");
    ghost_improve::crucible::copy_tree(&root.path().join("var/lib/ghost/generations/ghost-init/0"), &fake).unwrap();
    std::fs::copy("/bin/busybox", fake.join("bin/ghost-init")).expect("busybox-static for a static binary that is not ghost-init");
    let verdict0: ghost_improve::crucible::Verdict = serde_json::from_str(&std::fs::read_to_string(fake.join("verdict.json")).unwrap()).unwrap();
    let bad = root.path().join("bad.bundle");
    ghost_improve::bundle::write("ghost-init", 0, &fake, &verdict0, &bad).unwrap();
    let (code, out, err) = improve(&root, &["install", "ghost-init", bad.to_str().unwrap(), "--json"]);
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    assert_eq!((code, v["outcome"].as_str(), v["stage"].as_str()), (4, Some("rolled-back"), Some("swap")), "{v}");
    assert!(v["reason"].as_str().unwrap().contains("refused the handover"), "{v}");
    let info = ghost_tests::control(&root, "{\"cmd\":\"init\"}").init.unwrap();
    assert_eq!((info.reexecs, Path::new(&info.binary)), (1, gen1.as_path()), "PID 1 untouched: {info:?}");
    let cur = std::fs::read_link(root.path().join("var/lib/ghost/generations/ghost-init/current")).unwrap();
    assert_eq!(cur, Path::new("1"));

    // The operator puts generation 0 back: PID 1 re-executes it.
    let (code, out, err) = improve(&root, &["rollback", "ghost-init", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let info = ghost_tests::control(&root, "{\"cmd\":\"init\"}").init.unwrap();
    assert_eq!((info.reexecs, Path::new(&info.binary)), (2, root.path().join("var/lib/ghost/generations/ghost-init/0/bin/ghost-init").as_path()), "{info:?}");
    assert_eq!(pid_of(), steady);
    drop(g);
}
