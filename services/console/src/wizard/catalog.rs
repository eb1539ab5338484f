//! The models the wizard offers, with their download sizes, and how each choice becomes the
//! `[[model]]` list of the overlay's model.toml (`ghost model serve` fetches it on first boot).
//!
//! Sizes are the hub's listed file sizes (rounded), as shown for these revisions when this
//! list was written; the download itself is verified by sha256, not by size.

/// The id of the choice that keeps what the image's /etc/ghost/model.toml lists.
pub const IMAGE: &str = "image";
/// The id of "no model, stay offline".
pub const NONE: &str = "none";

/// One entry of a model.toml `[[model]]` list.
pub struct Entry {
    pub repo: &'static str,
    pub role: &'static str,
    pub files: &'static [&'static str],
}

pub struct Choice {
    pub id: &'static str,
    pub title: &'static str,
    /// Approximate download, bytes.
    pub bytes: u64,
    /// None: the image's own list.
    pub entries: Option<&'static [Entry]>,
}

const QWEN_TOKENIZER: Entry = Entry { repo: "Qwen/Qwen2.5-0.5B-Instruct", role: "tokenizer", files: &["tokenizer.json", "tokenizer_config.json"] };
const MINILM: Entry = Entry { repo: "sentence-transformers/all-MiniLM-L6-v2", role: "embed", files: &["config.json", "model.safetensors", "tokenizer.json"] };

pub const CHOICES: &[Choice] = &[
    Choice { id: IMAGE, title: "Qwen2.5-0.5B-Instruct Q4_K_M + MiniLM (the image's)", bytes: 590_000_000, entries: None },
    Choice {
        id: "q8_0",
        title: "Qwen2.5-0.5B-Instruct Q8_0 + MiniLM (larger, closer to the full model)",
        bytes: 775_000_000,
        entries: Some(&[
            Entry { repo: "Qwen/Qwen2.5-0.5B-Instruct-GGUF", role: "generate", files: &["qwen2.5-0.5b-instruct-q8_0.gguf"] },
            QWEN_TOKENIZER,
            MINILM,
        ]),
    },
    Choice { id: "embed-only", title: "MiniLM embeddings only (memory search, no chat)", bytes: 91_000_000, entries: Some(&[MINILM]) },
    Choice { id: NONE, title: "no model: stay offline (the agent uses rules only)", bytes: 0, entries: Some(&[]) },
];

impl Choice {
    pub fn find(id: &str) -> Option<&'static Choice> {
        CHOICES.iter().find(|c| c.id == id)
    }

    /// `id  ~N MB  title` for lists.
    pub fn line(&self) -> String {
        format!("{:<10} {:>7}  {}", self.id, size(self.bytes), self.title)
    }

    /// The `model` array of model.toml for this choice, given the image's.
    pub fn models(&self, image: Option<&toml::Value>) -> toml::Value {
        match self.entries {
            None => image.cloned().unwrap_or(toml::Value::Array(Vec::new())),
            Some(list) => toml::Value::Array(
                list.iter()
                    .map(|e| {
                        let mut t = toml::Table::new();
                        t.insert("repo".into(), e.repo.into());
                        t.insert("revision".into(), "main".into());
                        t.insert("role".into(), e.role.into());
                        t.insert("files".into(), toml::Value::Array(e.files.iter().map(|f| (*f).into()).collect()));
                        toml::Value::Table(t)
                    })
                    .collect(),
            ),
        }
    }
}

/// `0 B`, `91 MB`, `0.78 GB`.
pub fn size(bytes: u64) -> String {
    match bytes {
        0 => "0 B".into(),
        b if b < 1_000_000_000 => format!("~{} MB", b.div_ceil(1_000_000)),
        b => format!("~{:.2} GB", b as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_choice_has_a_size_and_a_unique_id() {
        let ids: std::collections::BTreeSet<_> = CHOICES.iter().map(|c| c.id).collect();
        assert_eq!(ids.len(), CHOICES.len());
        assert_eq!(size(0), "0 B");
        assert_eq!(size(91_000_000), "~91 MB");
        assert_eq!(size(1_234_000_000), "~1.23 GB");
        assert!(Choice::find(NONE).unwrap().line().contains("stay offline"));
    }

    #[test]
    fn choices_become_model_lists() {
        let image: toml::Value = toml::Value::Array(vec![toml::Value::Table(toml::Table::from_iter([("repo".to_string(), "a/b".into())]))]);
        assert_eq!(Choice::find(IMAGE).unwrap().models(Some(&image)), image);
        assert_eq!(Choice::find(NONE).unwrap().models(Some(&image)), toml::Value::Array(vec![]));
        let q8 = Choice::find("q8_0").unwrap().models(None);
        let roles: Vec<_> = q8.as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap().to_string()).collect();
        assert_eq!(roles, ["generate", "tokenizer", "embed"]);
    }
}
