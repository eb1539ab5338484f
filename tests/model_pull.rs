//! `ghost model pull|list|verify`, the real binary against a local hub mirror (hub_mirror.rs):
//! the cache layout, resume after a dropped connection and after kill -9, a corrupted byte,
//! 404/500s, an unreachable hub, a revision that moved, a malformed model.toml, and a disk that
//! is too small or fills up mid-download (a size-limited tmpfs in a private mount namespace).

mod hub_mirror;

use ghost_tests::{bin, eventually, free_port};
use hub_mirror::{commit_id, Fault, Mirror};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const REPO: &str = "ghostos/tiny-model";
const MODEL: &str = "model.safetensors";
const MODEL_SIZE: usize = 4 << 20;

/// Deterministic bytes (xorshift), so a "model" needs no network and no real weights.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A repo directory: two small git files, a 4 MiB LFS file, a nested LFS file.
struct Fixture {
    dir: tempfile::TempDir,
    commit: String,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::Builder::new().prefix("ghost-hub-repo-").tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("config.json"), br#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":64}"#).unwrap();
        std::fs::write(d.join("tokenizer.json"), br#"{"version":"1.0","model":{"type":"BPE"}}"#).unwrap();
        std::fs::write(d.join(MODEL), noise(MODEL_SIZE, 7)).unwrap();
        std::fs::create_dir_all(d.join("onnx")).unwrap();
        std::fs::write(d.join("onnx/extra.bin"), noise(100 << 10, 9)).unwrap();
        Fixture { dir, commit: commit_id("tiny-model v1") }
    }

    fn mirror(&self) -> Mirror {
        Mirror::start(&[(REPO, self.dir.path(), &self.commit)])
    }
}

/// A hosted root for `ghost` (GHOST_ROOT).
struct GhostRoot(tempfile::TempDir);

impl GhostRoot {
    fn new() -> GhostRoot {
        GhostRoot(tempfile::Builder::new().prefix("ghost-root-").tempdir().unwrap())
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
    fn models(&self) -> PathBuf {
        self.path().join("var/lib/ghost/models")
    }
    fn repo_dir(&self) -> PathBuf {
        self.models().join("models--ghostos--tiny-model")
    }
    fn model_toml(&self, text: &str) {
        std::fs::create_dir_all(self.path().join("etc/ghost")).unwrap();
        std::fs::write(self.path().join("etc/ghost/model.toml"), text).unwrap();
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("ghost"));
        c.args(args).env("GHOST_ROOT", self.path()).env_remove("HF_ENDPOINT").env_remove("HF_TOKEN");
        c.stdin(Stdio::null());
        c
    }
    fn ghost(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run ghost")
    }
    /// Files under blobs/ (names only).
    fn blobs(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.repo_dir().join("blobs")) else { return Vec::new() };
        let mut v: Vec<String> = rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }
}

fn text(o: &Output) -> String {
    format!("status {:?}\nstdout:\n{}\nstderr:\n{}", o.status.code(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `pull REPO` from the mirror with fast retries.
fn pull_args<'a>(m: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["model", "pull", REPO, "--endpoint", m, "--retry-delay-ms", "20", "--retry-max-delay-ms", "100", "--read-timeout-s", "5"];
    v.extend_from_slice(extra);
    v
}

/// The model's `.incomplete` file in blobs/.
fn model_partial(root: &GhostRoot, m: &Mirror) -> PathBuf {
    root.repo_dir().join("blobs").join(format!("{}.incomplete", m.sha256(REPO, MODEL)))
}

/// The model's snapshot file has exactly the bytes the mirror serves.
fn assert_model_in_place(root: &GhostRoot, fx: &Fixture) {
    let snap = root.repo_dir().join("snapshots").join(&fx.commit).join(MODEL);
    assert_eq!(std::fs::read(snap).unwrap(), std::fs::read(fx.dir.path().join(MODEL)).unwrap());
}

/// GETs of the model's bytes (the CDN URL the resolve URL redirects to).
fn model_gets(m: &Mirror) -> Vec<hub_mirror::Logged> {
    m.log().into_iter().filter(|l| l.method == "GET" && l.path.starts_with("/cdn-lfs/") && l.path.ends_with(MODEL)).collect()
}

#[test]
fn pull_writes_the_hub_cache_layout_then_list_and_verify() {
    let fx = Fixture::new();
    let m = fx.mirror();
    let root = GhostRoot::new();
    let o = root.ghost(&pull_args(&m.url(), &[]));
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("pulled {REPO}@{}", fx.commit)) && out.contains("4 files"), "{out}");

    // refs/main → commit; snapshot links → blobs named by the hub's ETag.
    let r = root.repo_dir();
    assert_eq!(std::fs::read_to_string(r.join("refs/main")).unwrap(), fx.commit);
    let snap = r.join("snapshots").join(&fx.commit);
    let sha = m.sha256(REPO, MODEL);
    assert_eq!(std::fs::read_link(snap.join(MODEL)).unwrap(), Path::new("../../blobs").join(&sha));
    assert_eq!(std::fs::read_link(snap.join("onnx/extra.bin")).unwrap(), Path::new("../../../blobs").join(m.sha256(REPO, "onnx/extra.bin")));
    assert_eq!(std::fs::read_link(snap.join("config.json")).unwrap(), Path::new("../../blobs").join(m.git_sha1(REPO, "config.json")));
    for f in ["config.json", "tokenizer.json", MODEL, "onnx/extra.bin"] {
        assert_eq!(std::fs::read(snap.join(f)).unwrap(), std::fs::read(fx.dir.path().join(f)).unwrap(), "{f}");
    }
    assert!(!root.blobs().iter().any(|b| b.contains("incomplete")), "{:?}", root.blobs());

    // A second pull downloads nothing.
    m.clear_log();
    let o = root.ghost(&pull_args(&m.url(), &[]));
    assert!(o.status.success(), "{}", text(&o));
    assert!(model_gets(&m).is_empty(), "{:?}", m.log());
    assert!(String::from_utf8_lossy(&o.stdout).contains("(0 B downloaded)"), "{}", text(&o));

    let o = root.ghost(&["model", "list", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["repo"], REPO);
    assert_eq!(v[0]["snapshots"][0]["commit"], fx.commit.as_str());
    assert_eq!(v[0]["snapshots"][0]["refs"][0], "main");
    let files = v[0]["snapshots"][0]["files"].as_array().unwrap();
    assert_eq!(files.len(), 4);
    let model = files.iter().find(|f| f["name"] == MODEL).unwrap();
    assert_eq!(model["size"], MODEL_SIZE as u64);
    assert_eq!(model["state"], "verified");
    assert_eq!(model["hash"], format!("sha256:{sha}"));
    let human = String::from_utf8_lossy(&root.ghost(&["model", "list"]).stdout).into_owned();
    assert!(human.contains(&format!("{REPO}@{} (main)", fx.commit)) && human.contains("4.0 MiB") && human.contains("verified"), "{human}");

    let o = root.ghost(&["model", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.starts_with("ok")).count(), 4, "{}", text(&o));

    // Damage one byte of the blob on disk: verify names the file and both hashes.
    let blob = r.join("blobs").join(&sha);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&blob, &bytes).unwrap();
    let o = root.ghost(&["model", "verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out.lines().find(|l| l.starts_with("MISMATCH")).unwrap_or_else(|| panic!("{}", text(&o)));
    assert!(line.contains(REPO) && line.contains(MODEL) && line.contains(&format!("expected sha256 {sha}")) && line.contains("actual "), "{line}");
    let v: serde_json::Value = serde_json::from_slice(&root.ghost(&["model", "list", "--json"]).stdout).unwrap();
    let model = v[0]["snapshots"][0]["files"].as_array().unwrap().iter().find(|f| f["name"] == MODEL).unwrap().clone();
    assert_eq!(model["state"], "unverified", "a blob that failed verify is no longer vouched for");
}

#[test]
fn pull_reads_model_toml_and_hf_endpoint() {
    let fx = Fixture::new();
    let m = fx.mirror();
    let root = GhostRoot::new();
    let sha = m.sha256(REPO, MODEL);
    root.model_toml(&format!("[[model]]\nrepo = \"{REPO}\"\nrevision = \"main\"\nrole = \"generate\"\nfiles = [\"config.json\", {{ name = \"{MODEL}\", sha256 = \"{sha}\" }}]\n"));
    let o = root.cmd(&["model", "pull", "--retries", "0"]).env("HF_ENDPOINT", m.url()).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let snap = root.repo_dir().join("snapshots").join(&fx.commit);
    assert!(snap.join(MODEL).is_file() && snap.join("config.json").is_file());
    assert!(!snap.join("tokenizer.json").exists(), "only the listed files are fetched");

    // A model.toml hash that disagrees with the hub's is refused before any download.
    let other = GhostRoot::new();
    other.model_toml(&format!("[[model]]\nrepo = \"{REPO}\"\nfiles = [{{ name = \"{MODEL}\", sha256 = \"{}\" }}]\n", "0".repeat(64)));
    m.clear_log();
    let o = other.cmd(&["model", "pull", "--retries", "0"]).env("HF_ENDPOINT", m.url()).output().unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(stderr(&o).contains(&format!("model.toml expects sha256 {}", "0".repeat(64))) && stderr(&o).contains(&sha), "{}", text(&o));
    assert!(model_gets(&m).is_empty());
}

#[test]
fn dropped_connection_resumes_with_a_range_request() {
    let fx = Fixture::new();
    let m = fx.mirror();
    let root = GhostRoot::new();
    m.arm(MODEL, Fault::DropAfter((MODEL_SIZE / 2) as u64), 1);
    let o = root.ghost(&pull_args(&m.url(), &["--file", MODEL, "--retries", "0"]));
    assert!(!o.status.success(), "{}", text(&o));
    assert!(stderr(&o).contains("connection") && stderr(&o).contains(MODEL), "{}", text(&o));
    let sha = m.sha256(REPO, MODEL);
    let kept = std::fs::metadata(model_partial(&root, &m)).map(|m| m.len()).unwrap_or(0);
    assert!(kept > 0 && kept <= (MODEL_SIZE / 2) as u64, "partial file has {kept} bytes");
    assert!(!root.repo_dir().join("blobs").join(&sha).exists(), "a partial file is never in place");

    m.clear_log();
    let o = root.ghost(&pull_args(&m.url(), &["--file", MODEL, "--retries", "0"]));
    assert!(o.status.success(), "{}", text(&o));
    assert!(stderr(&o).contains(&format!("resuming at byte {kept}")), "{}", text(&o));
    let gets = model_gets(&m);
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(gets[0].range.as_deref(), Some(format!("bytes={kept}-").as_str()), "{gets:?}");
    assert_eq!(gets[0].status, 206);
    assert_eq!(gets[0].body_bytes, MODEL_SIZE as u64 - kept, "only the rest was sent");
    assert_model_in_place(&root, &fx);
}

#[test]
fn damaged_partial_file_is_detected_and_fetched_again_from_zero() {
    // What a power cut can leave: a partial file whose kept bytes are not what was sent.
    let fx = Fixture::new();
    let m = fx.mirror();
    let root = GhostRoot::new();
    m.arm(MODEL, Fault::DropAfter(1 << 20), 1);
    assert!(!root.ghost(&pull_args(&m.url(), &["--file", MODEL, "--retries", "0"])).status.success());
    let part = model_partial(&root, &m);
    let mut bytes = std::fs::read(&part).unwrap();
    bytes[4242] ^= 0x55;
    std::fs::write(&part, &bytes).unwrap();

    m.clear_log();
    let o = root.ghost(&pull_args(&m.url(), &["--file", MODEL, "--retries", "0"]));
    assert!(o.status.success(), "{}", text(&o));
    assert!(stderr(&o).contains(&format!("sha256 mismatch after resuming at byte {}; downloading it again from byte 0", bytes.len())), "{}", text(&o));
    let ranges: Vec<Option<String>> = model_gets(&m).into_iter().map(|g| g.range).collect();
    assert_eq!(ranges, vec![Some(format!("bytes={}-", bytes.len())), None]);
    assert_model_in_place(&root, &fx);
}

#[test]
fn dropped_connection_is_retried_and_resumed_within_one_pull() {
    let fx = Fixture::new();
    let m = fx.mirror();
    let root = GhostRoot::new();
    m.arm(MODEL, Fault::DropAfter(1 << 20), 2);
    let o = root.ghost(&pull_args(&m.url(), &["--retries", "3"]));
    assert!(o.status.success(), "{}", text(&o));
    assert!(stderr(&o).contains("retry 1 of 3") && stderr(&o).contains("retry 2 of 3"), "{}", text(&o));
    let gets = model_gets(&m);
    assert_eq!(gets.len(), 3, "{gets:?}");
    assert_eq!(gets[0].range, None);
    for g in &gets[1..] {
        let from: u64 = g.range.as_deref().and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.strip_suffix('-')).and_then(|n| n.parse().ok()).unwrap_or(0);
        assert!(from > 0, "a retry started from 0: {gets:?}");
    }
    assert_eq!(gets.iter().map(|g| g.body_bytes).sum::<u64>(), MODEL_SIZE as u64, "no byte was fetched twice: {gets:?}");
}

#[test]
fn pull_killed_with_sigkill_resumes_where_it_stopped() {
    let fx = Fixture::new();
    let m = fx.mirror();
    let root = GhostRoot::new();
    m.arm(MODEL, Fault::StallAfter(1 << 20, Duration::from_secs(30)), 1);
    let mut child = root.cmd(&pull_args(&m.url(), &["--file", MODEL, "--retries", "0"])).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let part = model_partial(&root, &m);
    assert!(eventually(Duration::from_secs(20), || std::fs::metadata(&part).is_ok_and(|md| md.len() >= 1 << 20)), "no 1 MiB partial file appeared");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let kept = std::fs::metadata(&part).unwrap().len();
    assert_eq!(kept, 1 << 20);

    m.clear_log();
    let o = root.ghost(&pull_args(&m.url(), &["--file", MODEL, "--retries", "0"]));
    assert!(o.status.success(), "{}", text(&o));
    let gets = model_gets(&m);
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(gets[0].range.as_deref(), Some("bytes=1048576-"));
    assert_eq!(gets[0].body_bytes, MODEL_SIZE as u64 - kept);
    assert_model_in_place(&root, &fx);
}

#[test]
fn corrupted_byte_is_caught_and_never_moved_into_place() {
    let fx = Fixture::new();
    let m = fx.mirror();
    let root = GhostRoot::new();
    m.arm(MODEL, Fault::CorruptByte(123_457), usize::MAX);
    let o = root.ghost(&pull_args(&m.url(), &["--retries", "1"]));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let sha = m.sha256(REPO, MODEL);
    let e = stderr(&o);
    assert!(e.contains(REPO) && e.contains(MODEL) && e.contains(&format!("expected sha256 {sha}, got ")), "{}", text(&o));
    assert!(!e.contains("retry"), "a hash mismatch is not retried: {e}");
    assert!(!root.blobs().iter().any(|b| b.starts_with(&sha)), "bad file left in blobs/: {:?}", root.blobs());
    assert!(!root.repo_dir().join("snapshots").join(&fx.commit).join(MODEL).exists());
    assert!(!root.repo_dir().join("refs/main").exists(), "a ref only names a complete snapshot");

    m.clear_faults();
    let o = root.ghost(&pull_args(&m.url(), &[]));
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn missing_repo_file_or_revision_is_named() {
    let fx = Fixture::new();
    let m = fx.mirror();
    let root = GhostRoot::new();
    let url = m.url();
    let cases: [(Vec<&str>, String); 3] = [
        (vec!["model", "pull", "ghostos/nope", "--endpoint", &url], format!("ghostos/nope: repository not found on {url}")),
        (pull_args(&url, &["--file", "nope.bin"]), format!("{REPO}@main: file \"nope.bin\" not found")),
        (pull_args(&url, &["--revision", "v9"]), format!("{REPO}: revision \"v9\" not found")),
    ];
    for (args, want) in cases {
        let t = Instant::now();
        let o = root.ghost(&args);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(stderr(&o).contains(&want), "want {want:?}\n{}", text(&o));
        assert!(!stderr(&o).contains("retry"), "not found is not retried: {}", text(&o));
        assert!(t.elapsed() < Duration::from_secs(5));
    }
    assert!(!root.models().join("models--ghostos--nope").join("snapshots").exists());
}

#[test]
fn server_errors_are_retried_then_reported() {
    let fx = Fixture::new();
    let m = fx.mirror();
    let root = GhostRoot::new();
    m.arm("config.json", Fault::Status(500), usize::MAX);
    let o = root.ghost(&pull_args(&m.url(), &["--file", "config.json", "--retries", "2"]));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(stderr(&o).contains("gave up after 3 attempts") && stderr(&o).contains("HTTP 500"), "{}", text(&o));
    let heads = m.log().iter().filter(|l| l.path.contains("/resolve/") && l.path.ends_with("config.json")).count();
    assert_eq!(heads, 3, "{:?}", m.log());

    m.clear_faults();
    m.arm("config.json", Fault::Status(503), 1);
    let o = root.ghost(&pull_args(&m.url(), &["--file", "config.json", "--retries", "2"]));
    assert!(o.status.success(), "{}", text(&o));
    assert!(stderr(&o).contains("HTTP 503") && stderr(&o).contains("retry 1 of 2"), "{}", text(&o));
}

#[test]
fn unreachable_hub_backs_off_then_fails_clearly() {
    let root = GhostRoot::new();
    let url = format!("http://127.0.0.1:{}", free_port());
    let t = Instant::now();
    let o = root.ghost(&["model", "pull", REPO, "--endpoint", &url, "--retries", "3", "--retry-delay-ms", "100", "--retry-max-delay-ms", "200"]);
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let e = stderr(&o);
    assert!(e.contains(&format!("{REPO}@main: gave up after 4 attempts")) && e.contains(&url), "{e}");
    assert!(e.contains("retry 2 of 3 in 0.2s") && e.contains("retry 3 of 3 in 0.2s"), "delays double, then are capped: {e}");
    assert!(took >= Duration::from_millis(100 + 200 + 200), "backoff waited {took:?}");
}

#[test]
fn revision_that_moved_is_refused_when_pinned_and_noted_when_not() {
    let fx = Fixture::new();
    let m = fx.mirror();
    let root = GhostRoot::new();
    root.model_toml(&format!("[[model]]\nrepo = \"{REPO}\"\nrevision = \"main\"\ncommit = \"{}\"\nfiles = [\"config.json\"]\n", fx.commit));
    let pull = |root: &GhostRoot| root.cmd(&["model", "pull", "--retries", "0", "--endpoint", &m.url()]).output().unwrap();
    assert!(pull(&root).status.success());

    let moved = commit_id("tiny-model v2");
    m.move_branch(REPO, &moved);
    let o = pull(&root);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let e = stderr(&o);
    assert!(e.contains("revision \"main\" moved") && e.contains(&format!("model.toml pins commit {}", fx.commit)) && e.contains(&format!("the hub now answers {moved}")), "{e}");
    assert_eq!(std::fs::read_to_string(root.repo_dir().join("refs/main")).unwrap(), fx.commit, "the ref still names the pinned snapshot");

    // Asking for the old commit by its sha still works; an unpinned branch follows the move.
    let o = root.ghost(&pull_args(&m.url(), &["--revision", &fx.commit, "--file", "config.json"]));
    assert!(o.status.success(), "{}", text(&o));
    let o = root.ghost(&pull_args(&m.url(), &["--file", "config.json"]));
    assert!(o.status.success(), "{}", text(&o));
    assert!(stderr(&o).contains(&format!("main moved from {} to {moved}", fx.commit)), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(root.repo_dir().join("refs/main")).unwrap(), moved);
}

#[test]
fn malformed_model_toml_names_the_file_and_key() {
    let root = GhostRoot::new();
    root.model_toml("[[model]]\nrepo = \"a/b\"\nrevison = \"main\"\n");
    let o = root.ghost(&["model", "pull"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let e = stderr(&o);
    assert!(e.contains(&root.path().join("etc/ghost/model.toml").display().to_string()) && e.contains("revison"), "{e}");

    root.model_toml("[[model]]\nrepo = \"a/b\"\nfiles = [{ name = \"x\", sha256 = \"beef\" }]\n");
    let e = stderr(&root.ghost(&["model", "pull"]));
    assert!(e.contains("model[0].files[0].sha256") && e.contains("\"beef\" is not 64 hex digits"), "{e}");

    std::fs::remove_file(root.path().join("etc/ghost/model.toml")).unwrap();
    let e = stderr(&root.ghost(&["model", "pull"]));
    assert!(e.contains("nothing to pull") && e.contains("model.toml does not exist"), "{e}");
}

/// Whether this machine lets the test mount a tmpfs in a private mount namespace.
fn mount_namespaces_available() -> bool {
    let ok = Command::new("unshare").args(["--mount", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"]).status().is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIP: cannot mount a tmpfs in a private mount namespace (needs root and unshare)");
    }
    ok
}

/// Runs `script` with `sh` in a private mount namespace where the models directory is a tmpfs
/// of `size`; `$GHOST`, `$MODELS`, `$ENDPOINT` are set.
fn in_small_disk(root: &GhostRoot, size: &str, m: &Mirror, script: &str) -> Output {
    std::fs::create_dir_all(root.models()).unwrap();
    let full = format!("mount -t tmpfs -o size={size} tmpfs \"$MODELS\" || exit 99\n{script}");
    Command::new("unshare")
        .args(["--mount", "sh", "-c", &full])
        .env("GHOST", bin("ghost"))
        .env("GHOST_ROOT", root.path())
        .env("MODELS", root.models())
        .env("ENDPOINT", m.url())
        .env_remove("HF_ENDPOINT")
        .output()
        .unwrap()
}

#[test]
fn too_little_space_is_reported_before_the_first_byte() {
    if !mount_namespaces_available() {
        return;
    }
    let fx = Fixture::new();
    let m = fx.mirror();
    let root = GhostRoot::new();
    let o = in_small_disk(
        &root,
        "2m",
        &m,
        &format!("\"$GHOST\" model pull {REPO} --endpoint \"$ENDPOINT\" --retries 0; echo rc=$?; find \"$MODELS\" -type f | sed 's/^/file: /'"),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("rc=1"), "{}", text(&o));
    assert!(stderr(&o).contains("not enough free space") && stderr(&o).contains("this pull needs"), "{}", text(&o));
    assert!(!out.contains("file: "), "nothing was written: {out}");
    assert!(model_gets(&m).is_empty(), "no download started: {:?}", m.log());
}

#[test]
fn disk_that_fills_up_mid_download_is_reported_and_nothing_corrupt_stays() {
    if !mount_namespaces_available() {
        return;
    }
    let fx = Fixture::new();
    let m = fx.mirror();
    let root = GhostRoot::new();
    // The space check passes (4.2 MiB needed of 6 MiB); while the mirror stalls after 1 MiB,
    // something else fills the disk.
    m.arm(MODEL, Fault::StallAfter(1 << 20, Duration::from_secs(2)), 1);
    let part = format!("$MODELS/models--ghostos--tiny-model/blobs/{}.incomplete", m.sha256(REPO, MODEL));
    let script = format!(
        r#""$GHOST" model pull {REPO} --endpoint "$ENDPOINT" --retries 0 & pid=$!
        i=0; while [ "$(stat -c %s "{part}" 2>/dev/null || echo 0)" -lt 1048576 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
        dd if=/dev/zero of="$MODELS/filler" bs=64k 2>/dev/null
        wait $pid; echo rc=$?
        rm -f "$MODELS/filler"
        find "$MODELS" -type f -o -type l | sed 's/^/file: /'"#
    );
    let o = in_small_disk(&root, "6m", &m, &script);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("rc=1"), "{}", text(&o));
    let e = stderr(&o);
    assert!(e.contains(&format!("{REPO}: {MODEL}: disk full while writing")) && e.contains("partial file was removed"), "{}", text(&o));
    let sha = m.sha256(REPO, MODEL);
    assert!(!out.contains(&sha), "neither the partial nor a blob of the model stays: {out}");
    assert!(!out.contains(&format!("snapshots/{}/{MODEL}", fx.commit)), "{out}");
}
