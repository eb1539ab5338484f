//! `ghost model generate --prompt TEXT [--max-tokens N] [--seed S] …`: one completion from the
//! local model, streamed to stdout; the figures (tokens, speed, why it ended) go to stderr.

use super::local::{self, LocalModels};
use crate::paths::GhostRoot;
use clap::Args;
use ghost_model::generate::{ChatMessage, GenerateOptions, Generator, LoadOptions, Prompt};
use ghost_model::hub::ModelCache;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct GenerateArgs {
    /// The user's message (or, with --raw, the whole prompt).
    #[arg(long)]
    prompt: String,
    /// A system message before it.
    #[arg(long)]
    system: Option<String>,
    /// Use the prompt as is, without the chat template.
    #[arg(long)]
    raw: bool,
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Fixed seed: the same completion every time.
    #[arg(long)]
    seed: Option<u64>,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    #[arg(long, default_value_t = 0.9)]
    top_p: f32,
    #[arg(long, default_value_t = 1.1)]
    repeat_penalty: f32,
    /// Stop before this text (repeatable).
    #[arg(long = "stop", value_name = "TEXT")]
    stop: Vec<String>,
    /// Inference threads; 0 is one per core.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// A model directory or weights file instead of the pulled model of model.toml.
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// Print one JSON object (text, finish_reason, token counts, speeds) instead of streaming.
    #[arg(long)]
    json: bool,
}

pub fn run(a: GenerateArgs, root: &GhostRoot) -> anyhow::Result<ExitCode> {
    let (weights, tokenizer) = match &a.model {
        Some(p) => (p.clone(), None),
        None => {
            let manifest = root.model_toml();
            let models = LocalModels::load(&manifest)?;
            local::generate_paths(&ModelCache::new(root.models_dir()), &models, &manifest)?
        }
    };
    let started = std::time::Instant::now();
    let mut model = Generator::load_with_tokenizer(&weights, tokenizer.as_deref(), &LoadOptions { threads: a.threads, weights: None, candle_only: false })?;
    eprintln!(
        "loaded {} ({:?}, {:?}, engine {}) in {:.1} s on {} threads",
        model.weights_path().display(),
        model.architecture(),
        model.format(),
        model.engine(),
        started.elapsed().as_secs_f64(),
        model.threads()
    );
    let mut messages = Vec::new();
    if let Some(s) = &a.system {
        messages.push(ChatMessage::system(s));
    }
    messages.push(ChatMessage::user(&a.prompt));
    let prompt = if a.raw { Prompt::Text(&a.prompt) } else { Prompt::Chat { messages: &messages, tools: None } };
    let opts = GenerateOptions {
        max_tokens: a.max_tokens,
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
        repeat_penalty: a.repeat_penalty,
        stop: a.stop.clone(),
        ..Default::default()
    };
    let mut stdout = std::io::stdout().lock();
    let json = a.json;
    let mut on_piece = |piece: &str| {
        if json {
            return ControlFlow::Continue(());
        }
        // A closed pipe (`| head`) ends generation quietly.
        match write!(stdout, "{piece}").and_then(|_| stdout.flush()) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    };
    let out = model.generate(prompt, &opts, &mut on_piece, None)?;
    let pp = out.prompt_tokens as f64 / out.prompt_time.as_secs_f64().max(1e-9);
    let tg = out.completion_tokens as f64 / out.generation_time.as_secs_f64().max(1e-9);
    if json {
        let v = serde_json::json!({
            "text": out.text, "finish_reason": out.finish_reason.as_str(),
            "prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens,
            "prompt_tokens_per_second": pp, "tokens_per_second": tg,
        });
        writeln!(stdout, "{v}")?;
    } else {
        let _ = writeln!(stdout);
        eprintln!(
            "{} prompt tokens ({pp:.1}/s), {} generated ({tg:.1}/s), finish: {}",
            out.prompt_tokens,
            out.completion_tokens,
            out.finish_reason.as_str()
        );
    }
    Ok(ExitCode::SUCCESS)
}
