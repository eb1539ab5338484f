//! An improvable unit: `/etc/ghost/improve/UNIT.toml`.
//!
//! ```toml
//! source = "/usr/src/ghost/sample"   # the crate (its own workspace) generation 0 is built from
//! binary = "ghost-sample"            # the [[bin]] the service runs
//! bench = "ghost-sample-bench"       # the [[bin]] whose run is the benchmark's one workload
//! service = "sample"                 # the ghost-init service that runs `binary`
//! protected = ["tests", "benches", "Cargo.toml", "Cargo.lock", "build.rs"]  # the judge: a
//!                                    # candidate touching any of these is refused
//! min_gain = 0.05                    # the least gain worth a swap (5% less time)
//! rounds = 10                        # benchmark pairs, incumbent and candidate interleaved
//! build_timeout_s = 600
//! test_timeout_s = 300
//! probation_s = 10                   # after a swap: a crash or failed health rolls back
//! target = "x86_64-unknown-linux-musl" # build for this target triple (a static binary for the
//!                                    # image); default: the build host's own
//! build_memory_max = "2G"            # cgroup v2 memory.max of the build and the tests
//! build_pids_max = 512               # cgroup v2 pids.max of the build and the tests
//! ```
//!
//! Every key but `source`, `binary` and `bench` is optional; an unknown key or a bad value is an
//! error that names the file and the key.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub name: String,
    pub source: PathBuf,
    pub binary: String,
    pub bench: String,
    pub service: Option<String>,
    pub protected: Vec<String>,
    pub min_gain: f64,
    pub rounds: usize,
    pub build_timeout: Duration,
    pub test_timeout: Duration,
    pub probation: Duration,
    /// `--target` of the build, tests and bench (binaries under target/TRIPLE/release).
    pub target: Option<String>,
    /// memory.max (bytes) and pids.max of the cgroup the build and tests run in, where there is one.
    pub build_memory_max: u64,
    pub build_pids_max: u64,
    /// `package`: the crate to build and test when `source` is a workspace (`cargo -p`).
    pub package: Option<String>,
    /// `swap = "reexec"`: the binary is PID 1 itself, swapped in by re-executing ghost-init
    /// (`ghostctl reexec`), not by restarting a service.
    pub reexec: bool,
    /// A candidate may not touch a `#[cfg(test)]` module (tests inside source files are part
    /// of the judge too); on unless `protect_test_modules = false`.
    pub protect_test_modules: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    source: PathBuf,
    binary: String,
    bench: String,
    service: Option<String>,
    protected: Option<Vec<String>>,
    min_gain: Option<f64>,
    rounds: Option<usize>,
    build_timeout_s: Option<u64>,
    test_timeout_s: Option<u64>,
    probation_s: Option<f64>,
    target: Option<String>,
    build_memory_max: Option<String>,
    build_pids_max: Option<u64>,
    package: Option<String>,
    swap: Option<String>,
    protect_test_modules: Option<bool>,
}

pub const DEFAULT_BUILD_MEMORY_MAX: u64 = 2 << 30;
pub const DEFAULT_BUILD_PIDS_MAX: u64 = 512;

pub use ghost_proto::parse_size;

/// A target triple as rustc names them: ARCH-VENDOR-OS[-ENV], letters, digits, `_` and `.`.
fn valid_triple(t: &str) -> bool {
    let parts: Vec<&str> = t.split('-').collect();
    (3..=4).contains(&parts.len()) && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.'))
}

pub const DEFAULT_PROTECTED: [&str; 5] = ["tests", "benches", "Cargo.toml", "Cargo.lock", "build.rs"];

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Unit {
    /// Reads `dir/NAME.toml`.
    pub fn load(dir: &Path, name: &str) -> Result<Unit, String> {
        if !valid_name(name) {
            return Err(format!("{name:?} is not a unit name (letters, digits, - and _)"));
        }
        let path = dir.join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Unit::parse(name, &text, &path.display().to_string())
    }

    pub fn parse(name: &str, text: &str, origin: &str) -> Result<Unit, String> {
        let f: File = toml::from_str(text).map_err(|e| format!("{origin}: {}", e.message()))?;
        let bad = |key: &str, why: &str| Err(format!("{origin}: {key}: {why}"));
        if !f.source.is_absolute() {
            return bad("source", "must be an absolute path");
        }
        for (key, v) in [("binary", &f.binary), ("bench", &f.bench)] {
            if !valid_name(v) {
                return bad(key, "must be a binary name (letters, digits, - and _)");
            }
        }
        let min_gain = f.min_gain.unwrap_or(0.05);
        if !(0.0..1.0).contains(&min_gain) {
            return bad("min_gain", "must be at least 0 and below 1 (0.05 is 5% less time)");
        }
        let rounds = f.rounds.unwrap_or(10);
        if !(2..=1000).contains(&rounds) {
            return bad("rounds", "must be from 2 to 1000");
        }
        let probation_s = f.probation_s.unwrap_or(10.0);
        if !(0.0..=86_400.0).contains(&probation_s) {
            return bad("probation_s", "must be from 0 to 86400");
        }
        let protected = f.protected.unwrap_or_else(|| DEFAULT_PROTECTED.iter().map(|s| s.to_string()).collect());
        if let Some(p) = protected.iter().find(|p| p.is_empty() || p.starts_with('/') || p.split('/').any(|c| c == "..")) {
            return bad("protected", &format!("{p:?} is not a path inside the unit"));
        }
        if let Some(t) = f.target.as_deref().filter(|t| !valid_triple(t)) {
            return bad("target", &format!("{t:?} is not a target triple (like x86_64-unknown-linux-musl)"));
        }
        let build_memory_max = match f.build_memory_max.as_deref() {
            None => DEFAULT_BUILD_MEMORY_MAX,
            Some(v) => match parse_size(v) {
                Some(b) if b >= 1 << 20 => b,
                _ => return bad("build_memory_max", &format!("{v:?} is not a size of at least 1M (like \"2G\" or \"512M\")")),
            },
        };
        let build_pids_max = f.build_pids_max.unwrap_or(DEFAULT_BUILD_PIDS_MAX);
        if build_pids_max < 8 {
            return bad("build_pids_max", "must be at least 8 (cargo and rustc need a few processes)");
        }
        if let Some(p) = f.package.as_deref().filter(|p| !valid_name(p)) {
            return bad("package", &format!("{p:?} is not a package name (letters, digits, - and _)"));
        }
        let reexec = match f.swap.as_deref() {
            None | Some("restart") => false,
            Some("reexec") => true,
            Some(other) => return bad("swap", &format!("{other:?} is not one of restart (a service), reexec (PID 1 itself)")),
        };
        if reexec && f.service.is_some() {
            return bad("swap", "reexec swaps PID 1 itself: leave `service` out");
        }
        let secs = |key: &str, v: Option<u64>, default: u64| match v {
            Some(0) => Err(format!("{origin}: {key}: must be at least 1")),
            Some(n) => Ok(Duration::from_secs(n)),
            None => Ok(Duration::from_secs(default)),
        };
        Ok(Unit {
            name: name.to_string(),
            source: f.source,
            binary: f.binary,
            bench: f.bench,
            service: f.service,
            protected,
            min_gain,
            rounds,
            build_timeout: secs("build_timeout_s", f.build_timeout_s, 600)?,
            test_timeout: secs("test_timeout_s", f.test_timeout_s, 300)?,
            probation: Duration::from_secs_f64(probation_s),
            target: f.target,
            build_memory_max,
            build_pids_max,
            package: f.package,
            reexec,
            protect_test_modules: f.protect_test_modules.unwrap_or(true),
        })
    }

    /// Whether `path` (relative to the unit's root) is part of the judge.
    pub fn is_protected(&self, path: &str) -> bool {
        let path = path.trim_start_matches("./");
        self.protected.iter().any(|p| path == p || path.starts_with(&format!("{p}/")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_unit_gets_the_defaults() {
        let u = Unit::parse("sample", "source = \"/usr/src/ghost/sample\"\nbinary = \"ghost-sample\"\nbench = \"ghost-sample-bench\"\n", "sample.toml").unwrap();
        assert_eq!((u.min_gain, u.rounds, u.probation), (0.05, 10, Duration::from_secs(10)));
        assert!(u.is_protected("tests/primes.rs") && u.is_protected("Cargo.toml") && u.is_protected("benches"));
        assert!(!u.is_protected("src/lib.rs") && !u.is_protected("testsuite.rs"));
        assert_eq!((u.target, u.build_memory_max, u.build_pids_max), (None, 2 << 30, 512));
        let u = Unit::parse("s", "source = \"/s\"\nbinary = \"b\"\nbench = \"c\"\ntarget = \"x86_64-unknown-linux-musl\"\nbuild_memory_max = \"512M\"\nbuild_pids_max = 64\n", "s.toml").unwrap();
        assert_eq!((u.target.as_deref(), u.build_memory_max, u.build_pids_max), (Some("x86_64-unknown-linux-musl"), 512 << 20, 64));
    }

    #[test]
    fn bad_values_name_the_file_and_key() {
        let base = "source = \"/s\"\nbinary = \"b\"\nbench = \"c\"\n";
        for (extra, want) in [
            ("min_gain = 1.5\n", "u.toml: min_gain: must be at least 0"),
            ("rounds = 1\n", "u.toml: rounds: must be from 2"),
            ("protected = [\"../x\"]\n", "u.toml: protected: \"../x\""),
            ("colour = 1\n", "unknown field `colour`"),
            ("build_timeout_s = 0\n", "u.toml: build_timeout_s: must be at least 1"),
            ("target = \"musl\"\n", "u.toml: target: \"musl\" is not a target triple"),
            ("target = \"x86_64-unknown-linux-musl --offline\"\n", "u.toml: target:"),
            ("build_memory_max = \"lots\"\n", "u.toml: build_memory_max: \"lots\" is not a size"),
            ("build_memory_max = \"100K\"\n", "u.toml: build_memory_max:"),
            ("build_pids_max = 2\n", "u.toml: build_pids_max: must be at least 8"),
            ("swap = \"swap\"\n", "u.toml: swap: \"swap\" is not one of restart"),
            ("swap = \"reexec\"\nservice = \"x\"\n", "u.toml: swap: reexec swaps PID 1 itself"),
            ("package = \"a b\"\n", "u.toml: package: \"a b\" is not a package name"),
        ] {
            let e = Unit::parse("u", &format!("{base}{extra}"), "u.toml").unwrap_err();
            assert!(e.contains(want), "{extra}: {e}");
        }
        let e = Unit::parse("u", "source = \"s\"\nbinary = \"b\"\nbench = \"c\"\n", "u.toml").unwrap_err();
        assert!(e.contains("source: must be an absolute path"), "{e}");
        assert!(Unit::load(Path::new("/nonexistent"), "../etc").unwrap_err().contains("not a unit name"));
    }
}
