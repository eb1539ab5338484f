//! A unit's source cut out of a larger workspace: PID 1 (`ghost-init` with its protocol crate)
//! lives in the ghostos workspace, whose other members (the model, the agent…) a crucible build
//! of PID 1 needs none of. `subset` writes a workspace of only the named members, with the
//! whole workspace's lock file, profiles and shared dependency versions, so that the unit
//! builds offline exactly as it does in the full tree.

use std::path::Path;

use crate::crucible::copy_tree;

/// Writes into `to` (created) the workspace at `repo` reduced to `members` (paths relative to
/// `repo`, such as `init` and `init/proto`).
pub fn subset(repo: &Path, members: &[String], to: &Path) -> Result<(), String> {
    let manifest = repo.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let mut doc: toml::Table = toml::from_str(&text).map_err(|e| format!("{}: {}", manifest.display(), e.message()))?;
    let ws = doc.get_mut("workspace").and_then(|w| w.as_table_mut()).ok_or_else(|| format!("{}: no [workspace]", manifest.display()))?;
    if members.is_empty() {
        return Err("name at least one member".into());
    }
    for m in members {
        if m.starts_with('/') || m.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(format!("{m:?} is not a path inside {}", repo.display()));
        }
        if !repo.join(m).join("Cargo.toml").is_file() {
            return Err(format!("{}: no Cargo.toml: not a member of {}", repo.join(m).display(), repo.display()));
        }
    }
    ws.insert("members".into(), toml::Value::Array(members.iter().map(|m| toml::Value::String(m.clone())).collect()));
    ws.remove("exclude");
    ws.remove("default-members");
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let out = toml::to_string(&doc).map_err(|e| format!("writing the reduced manifest: {e}"))?;
    let header = format!("# The workspace of {} reduced to {} (ghost improve workspace-source).\n", repo.display(), members.join(", "));
    std::fs::write(to.join("Cargo.toml"), header + &out).map_err(|e| format!("{}: {e}", to.join("Cargo.toml").display()))?;
    let lock = repo.join("Cargo.lock");
    if lock.is_file() {
        std::fs::copy(&lock, to.join("Cargo.lock")).map_err(|e| format!("{}: {e}", lock.display()))?;
    }
    // A member nested in another (init/proto in init) comes with its parent.
    for m in members {
        if members.iter().any(|o| o != m && m.starts_with(&format!("{o}/"))) {
            continue;
        }
        copy_tree(&repo.join(m), &to.join(m))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_members_and_the_shared_settings() {
        let repo = tempfile::tempdir().unwrap();
        let r = repo.path();
        std::fs::write(r.join("Cargo.toml"), "[workspace]\nmembers = [\"a\", \"a/p\", \"big\"]\nexclude = [\"x\"]\n\n[workspace.dependencies]\nserde = \"1\"\n\n[profile.release]\npanic = \"unwind\"\n").unwrap();
        std::fs::write(r.join("Cargo.lock"), "# lock\n").unwrap();
        for m in ["a", "a/p", "big"] {
            std::fs::create_dir_all(r.join(m).join("src")).unwrap();
            std::fs::write(r.join(m).join("Cargo.toml"), "[package]\n").unwrap();
        }
        std::fs::create_dir_all(r.join("a/target")).unwrap();
        let out = tempfile::tempdir().unwrap();
        let to = out.path().join("ws");
        subset(r, &["a".into(), "a/p".into()], &to).unwrap();
        let doc: toml::Table = toml::from_str(&std::fs::read_to_string(to.join("Cargo.toml")).unwrap()).unwrap();
        assert_eq!(doc["workspace"]["members"].as_array().unwrap().len(), 2);
        assert!(doc["workspace"].get("exclude").is_none());
        assert_eq!(doc["workspace"]["dependencies"]["serde"].as_str(), Some("1"));
        assert_eq!(doc["profile"]["release"]["panic"].as_str(), Some("unwind"));
        assert!(to.join("a/p/Cargo.toml").is_file() && to.join("Cargo.lock").is_file());
        assert!(!to.join("big").exists() && !to.join("a/target").exists());
        let e = subset(r, &["nope".into()], &out.path().join("w2")).unwrap_err();
        assert!(e.contains("nope") && e.contains("not a member"), "{e}");
        assert!(subset(r, &["../a".into()], &out.path().join("w3")).unwrap_err().contains("not a path inside"));
    }
}
