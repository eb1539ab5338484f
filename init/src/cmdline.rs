//! The kernel command line: the `ghost.*` switches of DESIGN.md section 4.
//!
//! Parsing is pure (a string in, a struct out) so it is unit-tested without a kernel. Unknown
//! `ghost.*` keys are kept as warnings, never errors: a typo on a boot prompt must not stop boot.

/// What the operator asked for on the kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    /// The line as given (a re-execution hands it on).
    pub line: String,
    /// `ghost.poweroff_after_ready=1`: power off as soon as boot is complete.
    pub poweroff_after_ready: bool,
    /// `ghost.wizard=skip`: no first-boot wizard.
    pub wizard_skip: bool,
    /// `ghost.emergency=1`: stop after mounting and open the rescue console.
    pub emergency: bool,
    /// `ghost.debug=1`: verbose boot log.
    pub debug: bool,
    /// `ghost.ip=...`: network configuration, kept verbatim for the network step.
    pub ip: Option<String>,
    /// `ghost.debug_panic=STEP`: make boot step STEP panic, to prove that PID 1 survives it.
    pub debug_panic: Option<String>,
    /// Lines to print once the console is up: unknown keys, bad values.
    pub warnings: Vec<String>,
}

impl Cmdline {
    /// Parses a command line as the kernel shows it in /proc/cmdline.
    pub fn parse(line: &str) -> Cmdline {
        let mut c = Cmdline { line: line.trim().to_string(), ..Cmdline::default() };
        for word in split_words(line) {
            let Some(rest) = word.strip_prefix("ghost.") else { continue };
            let (key, value) = match rest.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (rest, None),
            };
            match key {
                "poweroff_after_ready" => c.poweroff_after_ready = c.flag(key, value),
                "emergency" => c.emergency = c.flag(key, value),
                "debug" => c.debug = c.flag(key, value),
                "wizard" => match value {
                    Some("skip") => c.wizard_skip = true,
                    Some("run") | Some("auto") => c.wizard_skip = false,
                    other => c.warnings.push(format!(
                        "kernel command line: ghost.wizard={} is not one of skip, run, auto; ignored",
                        other.unwrap_or("")
                    )),
                },
                "ip" => match value {
                    Some(v) if !v.is_empty() => c.ip = Some(v.to_string()),
                    _ => c.warnings.push("kernel command line: ghost.ip needs a value (dhcp or ADDR/PREFIX,GATEWAY[,DNS]); ignored".into()),
                },
                "debug_panic" => c.debug_panic = value.map(str::to_string),
                _ => c.warnings.push(format!("kernel command line: unknown key ghost.{key}; ignored")),
            }
        }
        c
    }

    fn flag(&mut self, key: &str, value: Option<&str>) -> bool {
        match value {
            None | Some("1") | Some("yes") | Some("true") | Some("on") => true,
            Some("0") | Some("no") | Some("false") | Some("off") => false,
            Some(other) => {
                self.warnings.push(format!(
                    "kernel command line: ghost.{key}={other} is not a boolean (1/0, yes/no, true/false, on/off); taken as off"
                ));
                false
            }
        }
    }
}

/// Splits a command line into words the way the kernel does: on whitespace, except inside
/// double quotes, which are removed (`a="b c"` is one word `a=b c`).
pub fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut have = false;
    for ch in line.chars() {
        match ch {
            '"' => {
                in_quotes = !in_quotes;
                have = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if have {
                    words.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            c => {
                cur.push(c);
                have = true;
            }
        }
    }
    if have {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ghost_switches_and_ignores_the_rest() {
        let c = Cmdline::parse(
            "BOOT_IMAGE=/vmlinuz root=/dev/vda quiet ghost.poweroff_after_ready=1 ghost.wizard=skip ghost.ip=10.0.2.15/24,10.0.2.2 console=ttyS0\n",
        );
        assert!(c.poweroff_after_ready);
        assert!(c.wizard_skip);
        assert!(!c.emergency);
        assert!(!c.debug);
        assert_eq!(c.ip.as_deref(), Some("10.0.2.15/24,10.0.2.2"));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn bare_switch_means_on_and_zero_means_off() {
        let c = Cmdline::parse("ghost.emergency ghost.debug=0");
        assert!(c.emergency);
        assert!(!c.debug);
    }

    #[test]
    fn bad_values_and_unknown_keys_are_warnings_naming_the_key() {
        let c = Cmdline::parse("ghost.debug=maybe ghost.colour=blue ghost.wizard=later ghost.ip");
        assert!(!c.debug);
        assert_eq!(c.warnings.len(), 4, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("ghost.debug=maybe"));
        assert!(c.warnings[1].contains("ghost.colour"));
        assert!(c.warnings[2].contains("ghost.wizard=later"));
        assert!(c.warnings[3].contains("ghost.ip"));
    }

    #[test]
    fn quotes_group_words() {
        assert_eq!(
            split_words(r#"a "b c" d="e f"g  h"#),
            vec!["a", "b c", "d=e fg", "h"]
        );
        assert_eq!(split_words("  \n"), Vec::<String>::new());
        assert_eq!(split_words(r#"x="""#), vec!["x="]);
    }

    #[test]
    fn debug_panic_names_a_step() {
        assert_eq!(Cmdline::parse("ghost.debug_panic=hostname").debug_panic.as_deref(), Some("hostname"));
    }
}
