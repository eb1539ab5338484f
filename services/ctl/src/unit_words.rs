//! The words of a unit value as systemd reads them: split at whitespace with single and double
//! quotes and C-style backslash escapes, `%` specifiers, and `$VAR`/`${VAR}` in command lines.

use std::collections::BTreeMap;

/// Splits `s` into words: quotes group, backslash escapes (`\n`, `\t`, `\s`, `\xHH`, `\nnn`,
/// `\uXXXX`, ...) are decoded inside and outside quotes, and `""` is an empty word.
pub fn split(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\\') => {
                let decoded = unescape(&mut chars).ok_or_else(|| format!("bad backslash escape in `{s}`"))?;
                word.get_or_insert_with(String::new).push(decoded);
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} quote in `{s}`"));
    }
    words.extend(word);
    Ok(words)
}

/// Decodes the escape after a backslash; `None` for an unknown or truncated one.
fn unescape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<char> {
    fn hex(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, n: usize) -> Option<char> {
        let digits: String = (0..n).map(|_| chars.next()).collect::<Option<String>>()?;
        char::from_u32(u32::from_str_radix(&digits, 16).ok()?)
    }
    let c = match chars.next()? {
        'a' => '\x07',
        'b' => '\x08',
        'f' => '\x0c',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'v' => '\x0b',
        's' => ' ',
        'x' => return hex(chars, 2),
        'u' => return hex(chars, 4),
        'U' => return hex(chars, 8),
        d @ '0'..='7' => {
            let mut v = d.to_digit(8)?;
            for _ in 0..2 {
                v = v * 8 + chars.next()?.to_digit(8)?;
            }
            return char::from_u32(v);
        }
        c @ ('\\' | '"' | '\'' | ' ' | '$' | '%' | ';') => c,
        _ => return None,
    };
    Some(c)
}

/// What `%` specifiers stand for in one unit; those systemd fills in at run time (the user's
/// home, the host name, the machine id) are left as they are and reported.
#[derive(Debug, Clone)]
pub struct Specifiers {
    /// The unit's full name, `redis-server.service` or `getty@tty1.service`.
    pub unit: String,
}

impl Specifiers {
    fn stem(&self) -> &str {
        self.unit.rsplit_once('.').map_or(self.unit.as_str(), |(s, _)| s)
    }
    fn prefix(&self) -> &str {
        self.stem().split_once('@').map_or(self.stem(), |(p, _)| p)
    }
    fn instance(&self) -> &str {
        self.stem().split_once('@').map_or("", |(_, i)| i)
    }

    /// `s` with the specifiers it knows replaced; the unknown ones (`%h`, `%H`, ...) are kept
    /// and returned in the second value.
    pub fn expand(&self, s: &str) -> (String, Vec<String>) {
        let mut out = String::with_capacity(s.len());
        let mut unknown = Vec::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let Some(spec) = chars.next() else {
                out.push('%');
                break;
            };
            let value = match spec {
                '%' => "%",
                'n' => &self.unit,
                'N' => self.stem(),
                'p' | 'P' => self.prefix(),
                'i' | 'I' => self.instance(),
                't' => "/run",
                'S' => "/var/lib",
                'C' => "/var/cache",
                'L' => "/var/log",
                'E' => "/etc",
                'T' => "/tmp",
                'V' => "/var/tmp",
                other => {
                    unknown.push(format!("%{other}"));
                    out.push('%');
                    out.push(other);
                    continue;
                }
            };
            out.push_str(value);
        }
        (out, unknown)
    }
}

/// Environment variables in command-line words, as systemd expands them: `${VAR}` anywhere in
/// a word is replaced by the value, `$VAR` as a whole word by the value split at whitespace,
/// `$$` is a `$`. Variables not in `env` (from an EnvironmentFile=, or set by systemd) are left
/// as written and returned, since ghost runs argv without any expansion.
pub fn expand_vars(words: &[String], env: &BTreeMap<String, String>) -> (Vec<String>, Vec<String>) {
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for w in words {
        if let Some(name) = w.strip_prefix('$').filter(|n| is_var_name(n)) {
            match env.get(name) {
                Some(v) => out.extend(v.split_whitespace().map(str::to_string)),
                None => {
                    unknown.push(w.clone());
                    out.push(w.clone());
                }
            }
            continue;
        }
        let mut word = String::new();
        let mut rest = w.as_str();
        while let Some(at) = rest.find('$') {
            word.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                word.push('$');
                rest = tail;
            } else if let Some((name, tail)) = after.strip_prefix('{').and_then(|a| a.split_once('}')).filter(|(n, _)| is_var_name(n)) {
                match env.get(name) {
                    Some(v) => word.push_str(v),
                    None => {
                        unknown.push(format!("${{{name}}}"));
                        word.push_str(&format!("${{{name}}}"));
                    }
                }
                rest = tail;
            } else {
                word.push('$');
                rest = after;
            }
        }
        word.push_str(rest);
        out.push(word);
    }
    (out, unknown)
}

fn is_var_name(n: &str) -> bool {
    !n.is_empty() && !n.starts_with(|c: char| c.is_ascii_digit()) && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        split(s).unwrap()
    }

    #[test]
    fn splits_like_systemd() {
        assert_eq!(w("/usr/sbin/nginx -g 'daemon on; master_process on;'"), ["/usr/sbin/nginx", "-g", "daemon on; master_process on;"]);
        assert_eq!(w(r#"/bin/echo "a b" c"d e"f '' "#), ["/bin/echo", "a b", "cd ef", ""]);
        assert_eq!(w(r#"/bin/printf a\tb\sc \x41\101\u00e9 "q\"q" 'it\'s'"#), ["/bin/printf", "a\tb c", "AAé", "q\"q", "it's"]);
        assert_eq!(w(r"one\ word"), ["one word"]);
        assert_eq!(w("  "), Vec::<String>::new());
        assert!(split("/bin/echo 'open").unwrap_err().contains("unterminated"));
        assert!(split(r"/bin/echo \q").unwrap_err().contains("escape"));
        assert!(split(r"/bin/echo \x4").is_err());
    }

    #[test]
    fn specifiers_of_a_plain_and_a_template_unit() {
        let plain = Specifiers { unit: "redis-server.service".into() };
        assert_eq!(plain.expand("%t/%N/%p.pid 100%%"), ("/run/redis-server/redis-server.pid 100%".into(), vec![]));
        let tpl = Specifiers { unit: "getty@tty1.service".into() };
        assert_eq!(tpl.expand("/dev/%i %n %h"), ("/dev/tty1 getty@tty1.service %h".into(), vec!["%h".into()]));
    }

    #[test]
    fn variables_expand_from_environment_and_unknown_ones_are_kept_and_reported() {
        let env = BTreeMap::from([("OPTS".to_string(), "-a  -b".to_string()), ("DIR".to_string(), "/srv x".to_string())]);
        let words: Vec<String> = ["/bin/d", "$OPTS", "--dir=${DIR}", "$$HOME", "${NOPE}", "$EXTRA", "a$b"].map(String::from).to_vec();
        let (out, unknown) = expand_vars(&words, &env);
        assert_eq!(out, ["/bin/d", "-a", "-b", "--dir=/srv x", "$HOME", "${NOPE}", "$EXTRA", "a$b"]);
        assert_eq!(unknown, ["${NOPE}", "$EXTRA"]);
    }
}
