//! Which pulled files the local commands use, read from /etc/ghost/model.toml: the model with
//! `role = "generate"` (or the first without a role), the tokenizer repository paired with a
//! GGUF-only repository (`role = "tokenizer"`), and the embedding model (`role = "embed"`).

use anyhow::{bail, Context};
use ghost_model::hub::{Manifest, ModelCache, ModelSpec};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub struct LocalModels {
    pub generate: Option<ModelSpec>,
    pub tokenizer: Option<ModelSpec>,
    pub embed: Option<ModelSpec>,
}

impl LocalModels {
    pub fn from_manifest(m: &Manifest) -> LocalModels {
        let by_role = |role: &str| m.models.iter().find(|s| s.role.as_deref() == Some(role)).cloned();
        LocalModels {
            generate: by_role("generate").or_else(|| m.models.iter().find(|s| s.role.is_none()).cloned()),
            tokenizer: by_role("tokenizer"),
            embed: by_role("embed"),
        }
    }

    pub fn load(path: &Path) -> anyhow::Result<LocalModels> {
        if !path.exists() {
            bail!("{} does not exist: it names the models to use (see `ghost model pull --help`)", path.display());
        }
        Ok(LocalModels::from_manifest(&Manifest::load(path)?))
    }

    /// Every model listed, in the order to fetch them.
    pub fn specs(&self) -> Vec<&ModelSpec> {
        [&self.generate, &self.tokenizer, &self.embed].into_iter().flatten().collect()
    }
}

/// The snapshot directory of a pulled model, when every file it lists is in place (or, for a
/// model that lists no files, when its revision has been pulled at all).
pub fn snapshot_dir(cache: &ModelCache, spec: &ModelSpec) -> Option<PathBuf> {
    match spec.files.first() {
        Some(first) => {
            let path = cache.snapshot_file(&spec.repo, &spec.revision, &first.name)?;
            let dir = path.parent()?.to_path_buf();
            spec.files.iter().all(|f| dir.join(&f.name).is_file()).then_some(dir)
        }
        None => {
            let repo = cache.repo(&spec.repo);
            let commit = if ghost_model::hub::cache::is_commit_hash(&spec.revision) { spec.revision.clone() } else { repo.read_ref(&spec.revision)? };
            let dir = repo.snapshots_dir().join(commit);
            dir.is_dir().then_some(dir)
        }
    }
}

/// The file to load for generation: the first listed .gguf or .safetensors, else the directory.
pub fn weights_path(dir: &Path, spec: &ModelSpec) -> PathBuf {
    spec.files
        .iter()
        .find(|f| f.name.ends_with(".gguf") || f.name.ends_with(".safetensors"))
        .map(|f| dir.join(&f.name))
        .unwrap_or_else(|| dir.to_path_buf())
}

/// The generation model's weights and the directory of its tokenizer, from the cache.
pub fn generate_paths(cache: &ModelCache, models: &LocalModels, manifest: &Path) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    let spec = models.generate.as_ref().with_context(|| format!("{} names no model to generate with (role = \"generate\")", manifest.display()))?;
    let dir = snapshot_dir(cache, spec).with_context(|| format!("{}@{} is not pulled yet: run `ghost model pull`", spec.repo, spec.revision))?;
    let tokenizer = match &models.tokenizer {
        Some(t) => Some(snapshot_dir(cache, t).with_context(|| format!("tokenizer {}@{} is not pulled yet: run `ghost model pull`", t.repo, t.revision))?),
        None => None,
    };
    Ok((weights_path(&dir, spec), tokenizer))
}

pub fn embed_dir(cache: &ModelCache, models: &LocalModels, manifest: &Path) -> anyhow::Result<PathBuf> {
    let spec = models.embed.as_ref().with_context(|| format!("{} names no embedding model (role = \"embed\")", manifest.display()))?;
    snapshot_dir(cache, spec).with_context(|| format!("{}@{} is not pulled yet: run `ghost model pull`", spec.repo, spec.revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model.toml the image ships parses, names all three roles, and its [serve] and
    /// [router] tables are valid.
    #[test]
    fn shipped_model_toml_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../initramfs/etc/ghost/model.toml");
        let m = LocalModels::load(&path).unwrap();
        let generate = m.generate.as_ref().unwrap();
        assert!(generate.files[0].name.ends_with(".gguf"), "{generate:?}");
        assert!(m.tokenizer.as_ref().unwrap().files.iter().any(|f| f.name == "tokenizer.json"));
        assert_eq!(m.embed.as_ref().unwrap().repo, "sentence-transformers/all-MiniLM-L6-v2");
        ghost_model::serve::ServeConfig::load(&path).unwrap();
        ghost_model::router::RouterConfig::load(&path, &|p: &Path| p.to_path_buf()).unwrap();
    }
}
