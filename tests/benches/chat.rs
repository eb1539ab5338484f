//! Chat first-token latency (issue 9) with the local model: `ghost model serve` with the
//! random-weight model of Qwen2.5-0.5B's exact shape (GGUF Q8_0, from a local hub mirror) and the
//! agent beside it; `ghostctl chat` timed from its start to the first piece of the answer
//! (retrieval, the first round's tool call through policy and audit, then the streamed answer).
//! Baseline in the same run: the same server's first streamed token for the same question asked
//! directly (no facts, no tools).
//!
//! Run: `cargo build -p ghost && cargo bench -p ghost-tests --bench chat`; the fixture is the one
//! `--bench model_generate` writes (`GHOST_BENCH_DIR`, default target/bench-fixtures/qwen2.5-0.5b-shape;
//! written here when missing, ~1 GB for Q8_0). `GHOST_BENCH_REPS` (3).

#[path = "../hub_mirror.rs"]
mod hub_mirror;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ghost_model::fixture::{self, FixtureForms, FixtureSpec};
use ghost_tests::agent_world::World;
use ghost_tests::{bin, eventually, workspace_root, Isolation, Root};

const QUESTION: &str = "is everything all right with the services?";

fn fixture_dir() -> PathBuf {
    let dir = std::env::var_os("GHOST_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target/bench-fixtures/qwen2.5-0.5b-shape"));
    if !dir.join("model-q8_0.gguf").is_file() || !dir.join("tokenizer.json").is_file() {
        eprintln!("writing the Qwen2.5-0.5B-shaped fixture (Q8_0) into {} ...", dir.display());
        fixture::write(&dir, &FixtureSpec::qwen2_5_0_5b_shape(), FixtureForms { safetensors: false, gguf_q8_0: true, gguf_q4_k_m: false }).expect("write fixture");
    }
    dir
}

/// Time to the first streamed piece of content of a direct request.
fn direct_first_token(sock: &Path) -> f64 {
    let body = serde_json::json!({ "model": "ghost", "messages": [{ "role": "user", "content": QUESTION }], "max_tokens": 64, "temperature": 0, "stream": true }).to_string();
    let t = Instant::now();
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    write!(s, "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    // The first event after the one that only names the role: the first generated token (a
    // piece of text, or the end when the model stops at once).
    let mut events = 0;
    let mut first = None;
    while r.read_line(&mut line).unwrap_or(0) > 0 {
        if line.starts_with("data: ") {
            events += 1;
            if events == 2 && first.is_none() {
                first = Some(t.elapsed().as_secs_f64());
            }
        }
        line.clear();
    }
    first.expect("the server streamed no token")
}

/// Time from `ghostctl chat` to its first `text` event (or `done`, when the model's answer is
/// empty), and the whole answer's time.
fn chat_first_token(w: &World) -> (f64, f64) {
    let t = Instant::now();
    let mut child = Command::new(bin("ghostctl")).args(["chat", "--json", QUESTION]).env("GHOST_ROOT", w.root.path()).stdout(Stdio::piped()).spawn().unwrap();
    let mut first = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok) {
        if std::env::var_os("GHOST_BENCH_SHOW").is_some() {
            eprintln!("{line}");
        }
        if first.is_none() && (line.contains("\"event\":\"text\"") || line.contains("\"event\":\"done\"")) {
            first = Some(t.elapsed().as_secs_f64());
        }
    }
    assert!(child.wait().unwrap().success());
    (first.expect("no text event"), t.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let reps: usize = std::env::var("GHOST_BENCH_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let dir = fixture_dir();
    let repo = tempfile::tempdir().unwrap();
    for f in ["model-q8_0.gguf", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::hard_link(dir.join(f), repo.path().join(f)).or_else(|_| std::fs::copy(dir.join(f), repo.path().join(f)).map(|_| ())).unwrap();
    }
    let mirror = hub_mirror::Mirror::start(&[("bench/qwen-shape", repo.path(), &hub_mirror::commit_id("bench"))]);
    // The server, under a root of its own.
    let serve = Root::new();
    std::fs::write(
        serve.path().join("etc/ghost/model.toml"),
        "[[model]]\nrepo = \"bench/qwen-shape\"\nrole = \"generate\"\nfiles = [\"model-q8_0.gguf\"]\n\n[[model]]\nrepo = \"bench/qwen-shape\"\nrole = \"tokenizer\"\nfiles = [\"tokenizer.json\", \"tokenizer_config.json\"]\n\n[serve]\nthreads = 2\n",
    )
    .unwrap();
    let log = std::fs::File::create(serve.path().join("serve.log")).unwrap();
    let mut server = Command::new(bin("ghost")).args(["model", "serve"]).env("GHOST_ROOT", serve.path()).env("HF_ENDPOINT", mirror.url()).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
    let sock = serve.path().join("run/ghost/model.sock");
    let up = eventually(Duration::from_secs(600), || {
        std::os::unix::net::UnixStream::connect(&sock)
            .ok()
            .and_then(|mut s| {
                write!(s, "GET /health HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n").ok()?;
                let mut t = String::new();
                s.read_to_string(&mut t).ok()?;
                Some(t.starts_with("HTTP/1.1 200"))
            })
            .unwrap_or(false)
    });
    assert!(up, "the model server never became healthy:\n{}", std::fs::read_to_string(serve.path().join("serve.log")).unwrap_or_default());
    let link = sock.clone();
    let w = World::start_in(Root::new(), &[], |r| r, Isolation::Subreaper, "[metrics]\ndisks = []\n[model]\nsocket = \"/var/lib/model.sock\"\nmax_tokens = 64\ntimeout_ms = 600000\n", move |root| {
        std::fs::create_dir_all(root.join("var/lib")).unwrap();
        std::os::unix::fs::symlink(&link, root.join("var/lib/model.sock")).unwrap();
    });
    direct_first_token(&sock); // warm-up
    let (mut direct, mut chat, mut whole) = (vec![], vec![], vec![]);
    for _ in 0..reps {
        direct.push(direct_first_token(&sock));
        let (f, all) = chat_first_token(&w);
        chat.push(f);
        whole.push(all);
    }
    let (d, c) = (median(direct.clone()), median(chat.clone()));
    println!("chat first-token latency, Qwen2.5-0.5B-shaped random weights (GGUF Q8_0), 2 threads, median of {reps}");
    println!("| measure | ghostctl chat | the server asked directly (baseline) | ratio |");
    println!("| --- | --- | --- | --- |");
    println!("| first piece of the answer | {c:.2} s | {d:.2} s | {:.1} |", c / d);
    println!("| whole chat (64 tokens at most per round) | {:.2} s | | |", median(whole.clone()));
    println!("raw: direct {direct:.2?} chat {chat:.2?} whole {whole:.2?}");
    let _ = server.kill();
    let _ = server.wait();
}
