//! Candidates as unified diffs: which files they touch (so a candidate that edits its judge is
//! refused before anything runs), and applying them to a scratch copy with GNU patch.

use std::path::Path;
use std::process::Command;

/// The paths (relative to the unit's root, `-p1`) a unified diff touches, or why it is not one
/// the crucible takes.
pub fn touched_paths(diff: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    let add = |raw: &str, out: &mut Vec<String>| -> Result<(), String> {
        // `--- a/src/lib.rs<TAB>2025-01-01 …` or `+++ b/src/lib.rs`
        let name = raw.split('\t').next().unwrap_or("").trim_end();
        if name == "/dev/null" {
            return Ok(());
        }
        let rel = if name.starts_with('/') { "" } else { name.split_once('/').map(|(_, rest)| rest).unwrap_or("") };
        if rel.is_empty() || rel.starts_with('/') || rel.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(format!("{name:?} is not a path inside the unit (expected a/PATH and b/PATH, as diff -ru and git diff write)"));
        }
        if !out.iter().any(|p| p == rel) {
            out.push(rel.to_string());
        }
        Ok(())
    };
    for line in diff.lines() {
        if line.starts_with("GIT binary patch") || line.starts_with("Binary files ") {
            return Err("binary patches are not taken".into());
        }
        if let Some(rest) = line.strip_prefix("--- ").or_else(|| line.strip_prefix("+++ ")) {
            add(rest, &mut out)?;
        } else if let Some(rest) = line.strip_prefix("rename from ").or_else(|| line.strip_prefix("rename to ")).or_else(|| line.strip_prefix("copy to ")) {
            add(&format!("x/{rest}"), &mut out)?;
        }
    }
    if out.is_empty() {
        return Err("no file headers (--- a/PATH, +++ b/PATH): not a unified diff".into());
    }
    Ok(out)
}

/// The first file in which `diff` changes a line inside a `#[cfg(test)]` module of the
/// incumbent sources under `root` (from the file's first `#[cfg(test)]` line on: the tests
/// that live in source files are part of the judge). Lines added just before it are fine.
pub fn touches_test_module(diff: &str, root: &Path) -> Option<String> {
    let mut file: Option<(String, usize)> = None; // (path, first test line, 1-based; 0: none)
    let mut old_line = 0usize;
    for line in diff.lines() {
        if let Some(rest) = line.strip_prefix("--- ") {
            let name = rest.split('\t').next().unwrap_or("").trim_end();
            let rel = name.split_once('/').map(|(_, r)| r.to_string()).unwrap_or_default();
            let first = std::fs::read_to_string(root.join(&rel))
                .ok()
                .filter(|_| rel.ends_with(".rs"))
                .and_then(|t| t.lines().position(|l| l.trim_start().starts_with("#[cfg(test)]")).map(|i| i + 1))
                .unwrap_or(0);
            file = Some((rel, first));
            continue;
        }
        if line.starts_with("+++ ") {
            continue;
        }
        if let Some(h) = line.strip_prefix("@@ -") {
            old_line = h.split([',', ' ']).next().and_then(|n| n.parse().ok()).unwrap_or(0);
            continue;
        }
        let Some((path, first)) = &file else { continue };
        if *first == 0 {
            continue;
        }
        match line.as_bytes().first() {
            Some(b' ') => old_line += 1,
            Some(b'-') => {
                if old_line >= *first {
                    return Some(path.clone());
                }
                old_line += 1;
            }
            // An added line goes before the old line `old_line`.
            Some(b'+') if old_line > *first => return Some(path.clone()),
            _ => {}
        }
    }
    None
}

/// Applies `diff` (the text of a unified diff) inside `dir`: first a dry run, so a patch that
/// does not apply leaves `dir` as it was.
pub fn apply(dir: &Path, diff_file: &Path) -> Result<(), String> {
    let run = |dry: bool| {
        let mut c = Command::new("patch");
        c.args(["-p1", "--batch", "--forward", "--no-backup-if-mismatch", "--reject-file=-", "--silent"]);
        if dry {
            c.arg("--dry-run");
        }
        c.arg("-d").arg(dir).arg("-i").arg(diff_file);
        let out = c.output().map_err(|e| format!("patch (GNU patch, from the Debian package `patch`): {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
            Err(format!("does not apply: {}", text.trim().lines().take(6).collect::<Vec<_>>().join("; ")))
        }
    };
    run(true)?;
    run(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_inside_a_test_module_are_found_and_changes_before_it_are_not() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("src")).unwrap();
        std::fs::write(d.path().join("src/lib.rs"), "fn a() {}\nfn b() {}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn t() { assert!(true) }\n}\n").unwrap();
        let head = "--- a/src/lib.rs\n+++ b/src/lib.rs\n";
        // Line 2 changed, line 3 added before the test module (context reaches into it).
        let before = format!("{head}@@ -1,5 +1,6 @@\n fn a() {{}}\n-fn b() {{}}\n+fn b() {{ 1; }}\n+fn c() {{}}\n \n #[cfg(test)]\n mod tests {{\n");
        assert_eq!(touches_test_module(&before, d.path()), None);
        let inside = format!("{head}@@ -6,2 +6,2 @@\n     #[test]\n-    fn t() {{ assert!(true) }}\n+    fn t() {{}}\n");
        assert_eq!(touches_test_module(&inside, d.path()).as_deref(), Some("src/lib.rs"));
        let added = format!("{head}@@ -5,1 +5,2 @@\n mod tests {{\n+    fn extra() {{}}\n");
        assert_eq!(touches_test_module(&added, d.path()).as_deref(), Some("src/lib.rs"));
    }

    #[test]
    fn paths_come_from_both_headers_once() {
        let d = "diff -ruN a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\t2026-01-01\n+++ b/src/lib.rs\t2026-01-01\n@@ -1 +1 @@\n-x\n+y\n--- /dev/null\n+++ b/src/new.rs\n@@ -0,0 +1 @@\n+z\n";
        assert_eq!(touched_paths(d).unwrap(), vec!["src/lib.rs", "src/new.rs"]);
        let git = "diff --git a/tests/t.rs b/tests/u.rs\nrename from tests/t.rs\nrename to tests/u.rs\n";
        assert_eq!(touched_paths(git).unwrap(), vec!["tests/t.rs", "tests/u.rs"]);
    }

    #[test]
    fn escapes_and_non_diffs_are_refused() {
        assert!(touched_paths("--- a/../etc/passwd\n+++ b/../etc/passwd\n").unwrap_err().contains("not a path inside"));
        assert!(touched_paths("--- /etc/passwd\n+++ /etc/passwd\n").is_err());
        assert!(touched_paths("hello\n").unwrap_err().contains("not a unified diff"));
        assert!(touched_paths("--- a/x\n+++ b/x\nGIT binary patch\n").unwrap_err().contains("binary"));
    }

    #[test]
    fn a_patch_applies_or_leaves_the_tree_alone() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("src")).unwrap();
        std::fs::write(t.path().join("src/lib.rs"), "one\ntwo\n").unwrap();
        let good = t.path().join("good.patch");
        std::fs::write(&good, "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1,2 +1,2 @@\n one\n-two\n+three\n").unwrap();
        apply(t.path(), &good).unwrap();
        assert_eq!(std::fs::read_to_string(t.path().join("src/lib.rs")).unwrap(), "one\nthree\n");
        // Half of this one applies; the dry run keeps the tree as it was.
        let bad = t.path().join("bad.patch");
        std::fs::write(&bad, "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1,2 +1,2 @@\n one\n-three\n+four\n--- a/src/other.rs\n+++ b/src/other.rs\n@@ -1 +1 @@\n-x\n+y\n").unwrap();
        let e = apply(t.path(), &bad).unwrap_err();
        assert!(e.starts_with("does not apply"), "{e}");
        assert_eq!(std::fs::read_to_string(t.path().join("src/lib.rs")).unwrap(), "one\nthree\n");
    }
}
