//! `ghost model embed [--json] TEXT…`: sentence vectors from the local embedding model, one
//! line of space-separated floats per text (or, with --json, an array of arrays). Without
//! TEXT, each line of stdin is a text.

use super::local::{self, LocalModels};
use crate::paths::GhostRoot;
use anyhow::bail;
use clap::Args;
use ghost_model::embed::Embedder;
use ghost_model::hub::ModelCache;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct EmbedArgs {
    /// Texts to embed; none: one per line of stdin.
    texts: Vec<String>,
    /// A JSON array with one array of floats per text.
    #[arg(long)]
    json: bool,
    /// A model directory (config.json, model.safetensors, tokenizer.json) instead of the
    /// pulled `role = "embed"` model of model.toml.
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
}

pub fn run(a: EmbedArgs, root: &GhostRoot) -> anyhow::Result<ExitCode> {
    let dir = match &a.model {
        Some(d) => d.clone(),
        None => {
            let manifest = root.model_toml();
            let models = LocalModels::load(&manifest)?;
            local::embed_dir(&ModelCache::new(root.models_dir()), &models, &manifest)?
        }
    };
    let texts: Vec<String> = if a.texts.is_empty() {
        std::io::stdin().lock().lines().collect::<Result<_, _>>()?
    } else {
        a.texts
    };
    if texts.is_empty() {
        bail!("nothing to embed: give TEXT arguments or lines on stdin");
    }
    let embedder = Embedder::load(&dir)?;
    let mut out = std::io::stdout().lock();
    // Batches bound the memory of a long stdin.
    let mut all = Vec::new();
    for chunk in texts.chunks(64) {
        let vectors = embedder.embed(chunk)?;
        if a.json {
            all.extend(vectors);
        } else {
            for v in vectors {
                let line: Vec<String> = v.iter().map(|x| format!("{x:.6}")).collect();
                writeln!(out, "{}", line.join(" "))?;
            }
        }
    }
    if a.json {
        writeln!(out, "{}", serde_json::to_string(&all)?)?;
    }
    Ok(ExitCode::SUCCESS)
}
