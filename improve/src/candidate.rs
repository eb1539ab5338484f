//! Where candidates come from besides a patch file or a proposals directory: a model. The
//! prompt carries the unit's code, its benchmark and tests (to read, not to change) and the
//! goal; the answer must hold a unified diff, which is judged like any other candidate.

use std::path::Path;

use crate::unit::Unit;

/// At most this much source goes into a prompt; the rest is named, not shown.
const MAX_PROMPT_SOURCE: usize = 48 * 1024;

fn files(dir: &Path, rel: &str, out: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir.join(rel)) else { return };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
        match e.file_type() {
            Ok(t) if t.is_dir() && name != "target" && !name.starts_with('.') => files(dir, &path, out),
            Ok(t) if t.is_file() && (name.ends_with(".rs") || name == "Cargo.toml") => {
                if let Ok(text) = std::fs::read_to_string(e.path()) {
                    out.push((path, text));
                }
            }
            _ => {}
        }
    }
}

/// The prompt asking for a faster version of the unit whose running source is `source`.
pub fn prompt(unit: &Unit, source: &Path, goal: &str) -> String {
    let mut all = Vec::new();
    files(source, "", &mut all);
    let mut p = format!(
        "You improve the Rust crate `{}` of a running system. Goal: {goal}\n\n\
         Rules: answer with ONE unified diff (paths a/PATH and b/PATH relative to the crate root, \
         as `diff -ru` or `git diff` writes them) inside a ```diff block. Change only files that are \
         not protected; protected, and judged as they are: {}. Every test must still pass, and the \
         benchmark (the [[bin]] `{}`, timed as a whole process) must get measurably faster.\n\n",
        unit.name,
        unit.protected.join(", "),
        unit.bench
    );
    let mut used = 0;
    for (path, text) in all {
        let role = if unit.is_protected(&path) { "protected" } else { "may change" };
        if used + text.len() > MAX_PROMPT_SOURCE {
            p.push_str(&format!("--- {path} ({role}; {} bytes, not shown)\n", text.len()));
            continue;
        }
        used += text.len();
        p.push_str(&format!("--- {path} ({role})\n```rust\n{text}\n```\n"));
    }
    p
}

/// The unified diff in a model's answer: a ```diff (or ```patch) block, else everything from the
/// first `diff ` or `--- ` line on; `None` when there is none.
pub fn extract_diff(answer: &str) -> Option<String> {
    for fence in ["```diff", "```patch"] {
        if let Some(start) = answer.find(fence) {
            let body = &answer[start + fence.len()..];
            let body = body.strip_prefix('\n').or_else(|| body.find('\n').map(|i| &body[i + 1..])).unwrap_or("");
            let end = body.find("\n```").map_or(body.len(), |i| i + 1);
            let d = &body[..end];
            return d.contains("\n+++ ").then(|| d.to_string()).or_else(|| d.starts_with("--- ").then(|| d.to_string()));
        }
    }
    let start = answer.lines().position(|l| l.starts_with("diff ") || l.starts_with("--- "))?;
    let d: String = answer.lines().skip(start).map(|l| format!("{l}\n")).collect();
    d.contains("\n+++ ").then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fenced_or_bare_diff_is_found() {
        let d = "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1 +1 @@\n-x\n+y\n";
        assert_eq!(extract_diff(&format!("Here:\n```diff\n{d}```\nDone.")).as_deref(), Some(d));
        assert_eq!(extract_diff(&format!("Sure.\n{d}")).as_deref(), Some(d));
        assert_eq!(extract_diff("I cannot help with that."), None);
        assert_eq!(extract_diff("```diff\nnot a diff\n```"), None);
    }

    #[test]
    fn the_prompt_shows_the_code_and_marks_the_judge() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("src")).unwrap();
        std::fs::create_dir_all(t.path().join("tests")).unwrap();
        std::fs::write(t.path().join("src/lib.rs"), "pub fn slow() {}").unwrap();
        std::fs::write(t.path().join("tests/t.rs"), "#[test] fn t() {}").unwrap();
        let u = Unit::parse("u", "source = \"/s\"\nbinary = \"b\"\nbench = \"c\"\n", "u.toml").unwrap();
        let p = prompt(&u, t.path(), "make it faster");
        assert!(p.contains("Goal: make it faster"));
        assert!(p.contains("--- src/lib.rs (may change)\n```rust\npub fn slow() {}"), "{p}");
        assert!(p.contains("--- tests/t.rs (protected)"), "{p}");
    }
}
