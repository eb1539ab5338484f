//! Reading a systemd unit file as systemd.syntax(7) describes it: `[Section]` headers,
//! `Key=Value` lines in order, `#`/`;` comments, and lines continued with a trailing backslash.

/// One assignment, in file order. Repeated keys stay separate; the importer decides whether a
/// key is a list (After=, Environment=) or takes the last value (User=).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub section: String,
    pub key: String,
    pub value: String,
    /// 1-based line where the assignment starts.
    pub line: usize,
}

/// A line that is neither a section, an assignment nor a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Garbage {
    pub line: usize,
    pub text: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnitFile {
    pub entries: Vec<Entry>,
    pub garbage: Vec<Garbage>,
}

impl UnitFile {
    pub fn parse(text: &str) -> UnitFile {
        let mut unit = UnitFile::default();
        let mut section = String::new();
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        while let Some((number, raw)) = lines.next() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            // A trailing backslash joins the next line with a space; comment lines in the middle
            // of a continued value are skipped, as systemd does.
            let mut logical = line.to_string();
            while logical.ends_with('\\') {
                logical.pop();
                logical.push(' ');
                let Some((_, next)) = lines.by_ref().map(|(n, l)| (n, l.trim())).find(|(_, l)| !(l.starts_with('#') || l.starts_with(';'))) else {
                    break;
                };
                logical.push_str(next);
            }
            let logical = logical.trim_end();
            if let Some(name) = logical.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.trim().to_string();
            } else if let Some((key, value)) = logical.split_once('=') {
                unit.entries.push(Entry { section: section.clone(), key: key.trim().to_string(), value: value.trim().to_string(), line: number });
            } else {
                unit.garbage.push(Garbage { line: number, text: logical.to_string() });
            }
        }
        unit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_keys_comments_and_continuations() {
        let u = UnitFile::parse(
            "# top comment\n[Unit]\nDescription = A thing \n; another\n\n[Service]\nExecStart=/bin/echo a \\\n# inside\n  b\\\n c\nEnvironment=\nEnvironment=A=1\nnonsense\n",
        );
        let kv: Vec<(&str, &str, &str, usize)> = u.entries.iter().map(|e| (e.section.as_str(), e.key.as_str(), e.value.as_str(), e.line)).collect();
        assert_eq!(
            kv,
            [
                ("Unit", "Description", "A thing", 3),
                ("Service", "ExecStart", "/bin/echo a  b c", 7),
                ("Service", "Environment", "", 11),
                ("Service", "Environment", "A=1", 12),
            ]
        );
        assert_eq!(u.garbage, [Garbage { line: 13, text: "nonsense".into() }]);
    }
}
