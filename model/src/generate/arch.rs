//! Which transformer family a model belongs to, read from config.json (`architectures`, then
//! `model_type`) or from GGUF metadata (`general.architecture`). Only families that Candle runs
//! and that we test are accepted; anything else is refused by name before a weight is read.

use std::path::Path;

use super::GenerateError;

/// A supported model family. Qwen2 covers Qwen2 and Qwen2.5; Llama covers TinyLlama, SmolLM
/// and the Llama 2/3 models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Qwen2,
    Qwen3,
    Llama,
}

impl Architecture {
    /// From a parsed config.json. `path` is only used to name the file in errors.
    pub fn from_config(config: &serde_json::Value, path: &Path) -> Result<Self, GenerateError> {
        let declared = config
            .get("architectures")
            .and_then(|a| a.as_array())
            .and_then(|a| a.first())
            .and_then(|a| a.as_str());
        if let Some(name) = declared {
            return match name {
                "Qwen2ForCausalLM" => Ok(Architecture::Qwen2),
                "Qwen3ForCausalLM" => Ok(Architecture::Qwen3),
                "LlamaForCausalLM" => Ok(Architecture::Llama),
                other => Err(unsupported(path, other)),
            };
        }
        match config.get("model_type").and_then(|m| m.as_str()) {
            Some(model_type) => {
                Self::from_name(model_type).ok_or_else(|| unsupported(path, model_type))
            }
            None => Err(GenerateError::BadConfig {
                path: path.to_path_buf(),
                reason: "neither `architectures` nor `model_type` is set".into(),
            }),
        }
    }

    /// From GGUF `general.architecture` (llama.cpp's names, which equal HF's `model_type`).
    pub fn from_gguf_name(name: &str, path: &Path) -> Result<Self, GenerateError> {
        Self::from_name(name).ok_or_else(|| unsupported(path, name))
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "qwen2" => Some(Architecture::Qwen2),
            "qwen3" => Some(Architecture::Qwen3),
            "llama" => Some(Architecture::Llama),
            _ => None,
        }
    }

    /// The prefix of this family's GGUF metadata keys (`qwen2.context_length`, …).
    pub fn gguf_name(self) -> &'static str {
        match self {
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
            Architecture::Llama => "llama",
        }
    }
}

fn unsupported(path: &Path, name: &str) -> GenerateError {
    GenerateError::UnsupportedArchitecture {
        path: path.to_path_buf(),
        architecture: name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_arch_names_supported_and_refuses_others_by_name() {
        let p = Path::new("config.json");
        let qwen =
            serde_json::json!({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"});
        assert_eq!(
            Architecture::from_config(&qwen, p).unwrap(),
            Architecture::Qwen2
        );
        let by_type = serde_json::json!({"model_type": "llama"});
        assert_eq!(
            Architecture::from_config(&by_type, p).unwrap(),
            Architecture::Llama
        );
        let mamba = serde_json::json!({"architectures": ["MambaForCausalLM"]});
        let err = Architecture::from_config(&mamba, p)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("MambaForCausalLM") && err.contains("config.json"),
            "{err}"
        );
        let err = Architecture::from_gguf_name("gemma3", Path::new("m.gguf"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("gemma3") && err.contains("m.gguf"), "{err}");
    }
}
