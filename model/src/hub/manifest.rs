//! `/etc/ghost/model.toml`: which models to fetch. Every error names the file and the key.
//!
//! ```toml
//! [[model]]
//! repo = "Qwen/Qwen2.5-0.5B-Instruct-GGUF"
//! revision = "main"                  # branch, tag or 40-hex commit; default "main"
//! commit = "9217f5db79a29953eb74d5343926648285ec7e67"  # optional pin for a branch or tag
//! role = "generate"                  # optional: what the model is for (generate, embed, …)
//! files = [
//!     "config.json",                                   # verified by the hub's git hash
//!     { name = "qwen2.5-0.5b-instruct-q4_k_m.gguf", sha256 = "…64 hex…" },
//! ]
//! ```
//!
//! Keys inside a `[[model]]` are closed (a typo is an error naming it); other top-level tables
//! are left to the modules that own them.

use super::cache::{is_commit_hash, validate_file_path, validate_repo_id, validate_revision};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ManifestError {
    pub path: PathBuf,
    pub message: String,
}

/// The models of model.toml, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub models: Vec<ModelSpec>,
}

/// One model to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// `ORG/NAME` on the hub.
    pub repo: String,
    /// Branch, tag or commit sha.
    pub revision: String,
    /// The commit a branch or tag must resolve to; a hub that answers another one is refused.
    pub commit: Option<String>,
    /// Files to fetch; empty means every file of the revision.
    pub files: Vec<FileSpec>,
    pub role: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub name: String,
    /// Lower-case hex sha256 the file must have.
    pub sha256: Option<String>,
}

impl ModelSpec {
    /// A model given on the command line: `REPO [--revision R] [--file F]…`.
    pub fn new(repo: &str, revision: &str, files: &[String]) -> Result<ModelSpec, String> {
        validate_repo_id(repo)?;
        validate_revision(revision)?;
        for f in files {
            validate_file_path(f)?;
        }
        Ok(ModelSpec {
            repo: repo.to_string(),
            revision: revision.to_string(),
            commit: None,
            files: files.iter().map(|f| FileSpec { name: f.clone(), sha256: None }).collect(),
            role: None,
        })
    }
}

#[derive(Deserialize)]
struct RawManifest {
    #[serde(default)]
    model: Vec<RawModel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    repo: String,
    #[serde(default = "default_revision")]
    revision: String,
    commit: Option<String>,
    #[serde(default)]
    files: Vec<RawFile>,
    role: Option<String>,
}

fn default_revision() -> String {
    "main".to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileTable {
    name: String,
    sha256: Option<String>,
}

/// A file entry: a bare name, or `{ name, sha256 }`. Written by hand because serde's untagged
/// enums lose the useful message ("unknown field `sha265`") of the table form.
struct RawFile(RawFileTable);

impl<'de> Deserialize<'de> for RawFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawFile;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a file name or a table { name = \"…\", sha256 = \"…\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawFile, E> {
                Ok(RawFile(RawFileTable { name: v.to_string(), sha256: None }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawFile, A::Error> {
                RawFileTable::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawFile)
            }
        }
        d.deserialize_any(V)
    }
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError { path: path.to_path_buf(), message: e.to_string() })?;
        Manifest::parse(&text, path)
    }

    /// Parses model.toml text; `path` is only used to name the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        let err = |message: String| ManifestError { path: path.to_path_buf(), message };
        // toml's message already names the key and shows the line; keep it whole.
        let raw: RawManifest = toml::from_str(text).map_err(|e| err(e.to_string().trim_end().to_string()))?;
        let mut models = Vec::with_capacity(raw.model.len());
        for (i, m) in raw.model.into_iter().enumerate() {
            let key = |k: &str| format!("model[{i}].{k}");
            validate_repo_id(&m.repo).map_err(|e| err(format!("{}: {e}", key("repo"))))?;
            validate_revision(&m.revision).map_err(|e| err(format!("{}: {e}", key("revision"))))?;
            if let Some(c) = &m.commit {
                if !is_commit_hash(c) {
                    return Err(err(format!("{}: {c:?} is not a 40-hex commit sha", key("commit"))));
                }
                if is_commit_hash(&m.revision) && *c != m.revision {
                    return Err(err(format!("{}: {c} contradicts revision {}", key("commit"), m.revision)));
                }
            }
            let mut files: Vec<FileSpec> = Vec::with_capacity(m.files.len());
            for (j, RawFile(f)) in m.files.into_iter().enumerate() {
                validate_file_path(&f.name).map_err(|e| err(format!("{}: {e}", key(&format!("files[{j}].name")))))?;
                if files.iter().any(|g| g.name == f.name) {
                    return Err(err(format!("{}: {:?} is listed twice", key(&format!("files[{j}].name")), f.name)));
                }
                let sha256 = match f.sha256 {
                    Some(h) if is_sha256_hex(&h.to_ascii_lowercase()) => Some(h.to_ascii_lowercase()),
                    Some(h) => return Err(err(format!("{}: {h:?} is not 64 hex digits", key(&format!("files[{j}].sha256"))))),
                    None => None,
                };
                files.push(FileSpec { name: f.name, sha256 });
            }
            models.push(ModelSpec { repo: m.repo, revision: m.revision, commit: m.commit, files, role: m.role });
        }
        Ok(Manifest { models })
    }
}

pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Manifest, String> {
        Manifest::parse(t, Path::new("/etc/ghost/model.toml")).map_err(|e| e.to_string())
    }

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn hub_manifest_full_entry() {
        let m = parse(&format!(
            r#"
            [[model]]
            repo = "Qwen/Qwen2.5-0.5B-Instruct-GGUF"
            revision = "main"
            commit = "0123456789abcdef0123456789abcdef01234567"
            role = "generate"
            files = ["config.json", {{ name = "q.gguf", sha256 = "{}" }}]

            [[model]]
            repo = "sentence-transformers/all-MiniLM-L6-v2"
            "#,
            SHA.to_uppercase()
        ))
        .unwrap();
        assert_eq!(m.models.len(), 2);
        let q = &m.models[0];
        assert_eq!(q.commit.as_deref(), Some("0123456789abcdef0123456789abcdef01234567"));
        assert_eq!(q.files[0], FileSpec { name: "config.json".into(), sha256: None });
        assert_eq!(q.files[1].sha256.as_deref(), Some(SHA), "hashes are normalised to lower case");
        assert_eq!(m.models[1].revision, "main");
        assert!(m.models[1].files.is_empty());
    }

    #[test]
    fn hub_manifest_errors_name_file_and_key() {
        let cases = [
            ("[[model]]\nrepo = \"a/b\"\nrevison = \"main\"\n", "revison"),
            ("[[model]]\nrepo = \"a/b\"\nfiles = [{ name = \"x\", sha265 = \"00\" }]\n", "sha265"),
            ("[[model]]\nrepo = \"a/b\"\nfiles = [{ name = \"x\", sha256 = \"00\" }]\n", "model[0].files[0].sha256"),
            ("[[model]]\nrepo = \"nobody\"\n", "model[0].repo"),
            ("[[model]]\nrepo = \"a/b\"\nfiles = [\"../../etc/shadow\"]\n", "model[0].files[0].name"),
            ("[[model]]\nrepo = \"a/b\"\ncommit = \"main\"\n", "model[0].commit"),
            ("[[model]]\nrepo = \"a/b\"\nfiles = [\"x\", \"x\"]\n", "listed twice"),
            ("[[model]]\nrepo = \"a/b\"\nfiles = [3]\n", "file name or a table"),
            ("[[model]]\nrevision = \"main\"\n", "repo"),
            ("[[model]\n", "model.toml"),
        ];
        for (text, needle) in cases {
            let e = parse(text).expect_err(text);
            assert!(e.starts_with("/etc/ghost/model.toml: "), "{e}");
            assert!(e.contains(needle), "{text:?}: {e:?} should name {needle:?}");
        }
    }

    #[test]
    fn hub_manifest_other_tables_are_left_alone() {
        let m = parse("[generate]\nthreads = 2\n\n[[model]]\nrepo = \"a/b\"\n").unwrap();
        assert_eq!(m.models.len(), 1);
    }
}
