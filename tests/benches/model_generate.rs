//! Benchmark: prompt processing and generation tokens/s of Candle on a random-weight model with
//! the exact dimensions of Qwen2.5-0.5B, as GGUF Q4_K_M, GGUF Q8_0 and f32 safetensors.
//!
//! Run: `cargo bench -p ghost-tests --bench model_generate` (release build). Settings from the
//! environment: `GHOST_BENCH_THREADS` (2), `GHOST_BENCH_PROMPT` (prompt tokens, 128),
//! `GHOST_BENCH_GEN` (generated tokens, 64), `GHOST_BENCH_REPS` (3), `GHOST_BENCH_DIR` (where the
//! ~2.9 GB of fixture files are written once and reused; default target/bench-fixtures),
//! `GHOST_BENCH_FORMS` (comma list of q4_k_m,q8_0,f32; all by default), `GHOST_BENCH_DEPTH`
//! (tokens in the context before generation is timed, 0; llama-bench's `-d`).
//!
//! Measured the way llama.cpp's llama-bench measures, so the figures compare with
//! `llama-bench -m FILE.gguf -t 2 -p 128 -n 64 -r 3`: pp = prompt tokens / time of the one
//! forward pass over the whole prompt; tg = single-token forward passes from an empty context
//! (after a one-token prompt, as llama-bench's tg starts at position 0) / their time (here
//! including sampling and detokenizing, which llama-bench leaves out). End-of-sequence tokens are
//! masked so every run generates the full count. One untimed warm-up run, then the median of
//! the repetitions.
//!
//! Build with `RUSTFLAGS="-C target-cpu=native"` to compare with a native llama.cpp build:
//! Candle picks its AVX quantized dot products at compile time (`cfg(target_feature)`), so a
//! baseline x86-64 build runs the scalar ones. Note that Qwen2.5-0.5B's Q4_K_M is mostly Q5_0
//! (its 896-wide rows are not whole k-quant super-blocks), and Candle 0.11 has no SIMD Q5_0 dot
//! product.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use ghost_model::fixture::{self, FixtureForms, FixtureSpec};
use ghost_model::generate::{GenerateOptions, Generator, LoadOptions, Prompt};

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Writes the Qwen2.5-0.5B-shaped fixture into `dir` unless a complete one is there.
fn fixture_dir(dir: &Path, forms: FixtureForms) -> PathBuf {
    let spec = FixtureSpec::qwen2_5_0_5b_shape();
    let marker = dir.join(format!(
        "complete-seed{}-st{}-q8{}-q4{}",
        spec.seed, forms.safetensors as u8, forms.gguf_q8_0 as u8, forms.gguf_q4_k_m as u8
    ));
    if !marker.exists() {
        eprintln!(
            "writing the Qwen2.5-0.5B-shaped fixture into {} ...",
            dir.display()
        );
        let t = std::time::Instant::now();
        fixture::write(dir, &spec, forms).expect("write fixture");
        std::fs::write(&marker, b"").expect("write marker");
        eprintln!("fixture written in {:.1} s", t.elapsed().as_secs_f64());
    }
    dir.to_path_buf()
}

fn main() {
    let threads = env_usize("GHOST_BENCH_THREADS", 2);
    let prompt_len = env_usize("GHOST_BENCH_PROMPT", 128);
    let gen_len = env_usize("GHOST_BENCH_GEN", 64);
    let depth = env_usize("GHOST_BENCH_DEPTH", 0);
    let reps = env_usize("GHOST_BENCH_REPS", 3).max(1);
    let forms_env = std::env::var("GHOST_BENCH_FORMS").unwrap_or_else(|_| "q4_k_m,q8_0,f32".into());
    let wanted: Vec<&str> = forms_env.split(',').map(str::trim).collect();
    let forms = FixtureForms {
        safetensors: wanted.contains(&"f32"),
        gguf_q8_0: wanted.contains(&"q8_0"),
        gguf_q4_k_m: wanted.contains(&"q4_k_m"),
    };
    let dir = std::env::var_os("GHOST_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/bench-fixtures/qwen2.5-0.5b-shape")
        });
    let dir = fixture_dir(&dir, forms);

    println!("model_generate: Qwen2.5-0.5B shape, random weights, {threads} threads, pp{prompt_len} tg{gen_len} at depth {depth}, median of {reps}");
    println!(
        "{:<8} {:>10} {:>10} {:>10}",
        "form", "load s", "pp tok/s", "tg tok/s"
    );
    for form in wanted {
        let file = match form {
            "q4_k_m" => dir.join("model-q4_k_m.gguf"),
            "q8_0" => dir.join("model-q8_0.gguf"),
            "f32" => dir.join("model.safetensors"),
            other => panic!("unknown form {other}"),
        };
        let t = std::time::Instant::now();
        let mut g = Generator::load(
            &file,
            &LoadOptions {
                threads,
                weights: None,
                candle_only: false,
            },
        )
        .expect("load");
        let load_s = t.elapsed().as_secs_f64();
        // Ordinary tokens (no specials), the same for every form.
        let prompt: Vec<u32> = (0..prompt_len as u32).map(|i| (i * 7) % 900).collect();
        let depth_prompt: Vec<u32> = (0..depth.max(1) as u32).map(|i| (i * 7) % 900).collect();
        let eos = g.eos_token_ids().to_vec();
        let opts = GenerateOptions {
            max_tokens: gen_len,
            temperature: 0.0,
            seed: Some(0),
            ..Default::default()
        };
        let (mut pp, mut tg) = (Vec::new(), Vec::new());
        let mut run = |prompt: &[u32], max_tokens: usize| {
            let mut no_eos = |_: &[u32], logits: &mut [f32]| {
                for &id in &eos {
                    logits[id as usize] = f32::NEG_INFINITY;
                }
            };
            let opts = GenerateOptions { max_tokens, ..opts.clone() };
            // Every pass from an empty cache, as llama-bench's.
            g.forget_cache();
            g.generate(Prompt::Tokens(prompt), &opts, &mut |_| ControlFlow::Continue(()), Some(&mut no_eos)).expect("generate")
        };
        for rep in 0..=reps {
            // As llama-bench: pp is the prompt's one forward pass; tg is `gen_len` single-token
            // passes from an empty context (a one-token prompt), or after `depth` tokens
            // (llama-bench's `-d`).
            let prompt_run = run(&prompt, 1);
            let gen_run = run(&depth_prompt[..depth.max(1)], gen_len + 1);
            if rep == 0 {
                continue; // warm-up
            }
            pp.push(prompt_len as f64 / prompt_run.prompt_time.as_secs_f64());
            // The last sampled token is not run through the model.
            let forwards = gen_run.completion_tokens.saturating_sub(1).max(1);
            tg.push(forwards as f64 / gen_run.generation_time.as_secs_f64());
        }
        println!(
            "{form:<8} {load_s:>10.2} {:>10.2} {:>10.2}",
            median(pp),
            median(tg)
        );
    }
}
