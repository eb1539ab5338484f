//! One unit's crucible: generations on disk, candidates judged against the running one, the
//! swap, probation and rollback.
//!
//! ```text
//! /var/lib/ghost/generations/UNIT/
//!   0/ 1/ …             source/ (the crate), bin/ (BINARY and BENCH), build.log, test.log, verdict.json
//!   current -> N        what the service runs: its exec names …/UNIT/current/bin/BINARY
//!   candidates/ID/      a refused candidate: its patch, logs and verdict
//!   history.jsonl       every verdict, one per line, oldest first
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::patch;
use crate::run::{self, Sandbox};
use crate::stats::{self, Comparison};
use crate::unit::Unit;

/// What happened to a candidate (or a generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Generation 0, built and tested from the unit's source.
    Seeded,
    /// Swapped in, and it passed probation.
    Kept,
    /// Refused before any swap.
    Refused,
    /// Swapped in, misbehaved in probation, and the previous generation is back.
    RolledBack,
    /// An operator put the previous generation back.
    Reverted,
}

/// The stage a verdict was reached at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Patch,
    Build,
    Tests,
    Bench,
    Swap,
    Probation,
    Operator,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub unit: String,
    pub candidate: String,
    /// Where the candidate came from: `file:PATH`, `proposals:DIR`, `operator`, `model`.
    pub origin: String,
    pub outcome: Outcome,
    pub stage: Stage,
    pub reason: String,
    /// The generation it became (kept, rolled back, seeded) or went back to (reverted).
    pub generation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bench: Option<Value>,
    /// Seconds per stage: build, tests, bench, swap (service down), probation, total.
    pub seconds: Value,
    /// What bounded the build and the tests: cgroup limits, or the timeout only (and why).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub limits: String,
    pub unix_ms: u64,
}

/// The service side of a swap (ghost-init's control socket; a fake in unit tests).
pub trait Supervisor {
    fn restart(&self, service: &str) -> Result<(), String>;
    /// (state, pid, restarts) of the service.
    fn status(&self, service: &str) -> Result<(String, Option<i32>, u32), String>;
    /// PID 1 re-executes as `binary` (units with `swap = "reexec"`); what it then reports.
    fn reexec(&self, _binary: &Path) -> Result<ghost_proto::InitInfo, String> {
        Err("this supervisor cannot re-execute PID 1".into())
    }
    /// What PID 1 is now (its program, re-execs).
    fn init(&self) -> Result<ghost_proto::InitInfo, String> {
        Err("this supervisor does not report PID 1".into())
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

/// Copies the tree at `from` into `to` (created), leaving out `target/` and `.git/`.
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(io_err(to))?;
    for entry in std::fs::read_dir(from).map_err(io_err(from))? {
        let entry = entry.map_err(io_err(from))?;
        let name = entry.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        let kind = entry.file_type().map_err(io_err(&src))?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst).map_err(io_err(&src))?;
        } else if kind.is_symlink() {
            let link = std::fs::read_link(&src).map_err(io_err(&src))?;
            std::os::unix::fs::symlink(link, &dst).map_err(io_err(&dst))?;
        }
    }
    Ok(())
}

pub struct Crucible<'a> {
    pub unit: Unit,
    /// generations/UNIT
    pub dir: PathBuf,
    pub supervisor: Option<&'a dyn Supervisor>,
    /// Progress lines (the CLI prints them; tests collect them).
    pub say: &'a dyn Fn(&str),
    /// Where build cgroups go, or why there are none (looked up at the first build).
    cgroups: std::sync::OnceLock<Result<PathBuf, String>>,
}

/// A built tree: where its binaries are.
struct Built {
    binary: PathBuf,
    bench: PathBuf,
}

impl<'a> Crucible<'a> {
    pub fn new(unit: Unit, generations: &Path, supervisor: Option<&'a dyn Supervisor>, say: &'a dyn Fn(&str)) -> Crucible<'a> {
        let dir = generations.join(&unit.name);
        Crucible { unit, dir, supervisor, say, cgroups: std::sync::OnceLock::new() }
    }

    /// The generation `current` points at.
    pub fn current(&self) -> Option<u64> {
        std::fs::read_link(self.dir.join("current")).ok()?.to_str()?.parse().ok()
    }

    fn generations(&self) -> Vec<u64> {
        let mut v: Vec<u64> = std::fs::read_dir(&self.dir).into_iter().flatten().flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
        v.sort_unstable();
        v
    }

    pub fn history(&self) -> Vec<Verdict> {
        std::fs::read_to_string(self.dir.join("history.jsonl")).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    fn record(&self, v: &Verdict, also: Option<&Path>) -> Result<(), String> {
        use std::io::Write;
        let line = serde_json::to_string(v).map_err(|e| e.to_string())? + "\n";
        let path = self.dir.join("history.jsonl");
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
        f.write_all(line.as_bytes()).and_then(|_| f.sync_data()).map_err(io_err(&path))?;
        if let Some(dir) = also {
            let p = dir.join("verdict.json");
            std::fs::write(&p, serde_json::to_string_pretty(v).unwrap_or_default() + "\n").map_err(io_err(&p))?;
        }
        Ok(())
    }

    /// Where this machine puts build cgroups, or why it has none (found once per crucible; said
    /// once).
    fn cgroups(&self) -> &Result<PathBuf, String> {
        self.cgroups.get_or_init(|| {
            let found = crate::cgroup::locate_here();
            (self.say)(&self.limits_note_of(&found));
            found
        })
    }

    fn limits_note_of(&self, found: &Result<PathBuf, String>) -> String {
        match found {
            Ok(parent) => format!(
                "build and tests in cgroups of their own under {}: memory.max {} MiB, pids.max {}, killed with cgroup.kill at the deadline",
                parent.display(),
                self.unit.build_memory_max >> 20,
                self.unit.build_pids_max
            ),
            Err(why) => format!("no cgroup v2 controllers here ({why}): the build is bounded by its timeout only"),
        }
    }

    /// What bounds the build and the tests on this machine, in words (the verdict's `limits`).
    pub fn limits_note(&self) -> String {
        self.limits_note_of(self.cgroups())
    }

    /// `cargo SUBCOMMAND --release --offline [--target T] ARGS` in `tree`: sandboxed, bounded by
    /// `timeout`, in a cgroup of its own with the unit's limits where the machine has cgroup v2.
    fn cargo(&self, sub: &str, args: &[&str], tree: &Path, timeout: Duration, log: &Path) -> Result<run::Ended, String> {
        let mut c = Command::new("cargo");
        c.args([sub, "--release", "--offline", "--quiet"]).args(args).current_dir(tree);
        if let Some(p) = &self.unit.package {
            c.args(["-p", p]);
        }
        if let Some(t) = &self.unit.target {
            c.args(["--target", t]);
        }
        let tmp = tree.join("target/tmp");
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        c.env("CARGO_TARGET_DIR", tree.join("target")).env("TMPDIR", &tmp);
        let sb = Sandbox { writable: vec![tree.to_path_buf()] };
        let note = |line: &str| {
            use std::io::Write;
            let _ = std::fs::OpenOptions::new().create(true).append(true).open(log).and_then(|mut f| writeln!(f, "ghost improve: {line}"));
        };
        let cg = match self.cgroups() {
            Ok(parent) => {
                let name = format!("improve-{}-{}-{sub}", self.unit.name, std::process::id());
                let cg = crate::cgroup::Cgroup::create(parent, &name, self.unit.build_memory_max, self.unit.build_pids_max)?;
                note(&format!("cargo {sub} in cgroup {}: memory.max {} MiB, pids.max {}", cg.dir.display(), self.unit.build_memory_max >> 20, self.unit.build_pids_max));
                Some(cg)
            }
            Err(_) => {
                note(&self.limits_note());
                None
            }
        };
        let ran = run::run(c, timeout, Some(&sb), cg.as_ref(), log).map_err(|e| format!("cargo {sub}: {e}"));
        if let Some(cg) = cg {
            note(&format!("cgroup {}: {}", cg.dir.display(), cg.report()));
            cg.remove();
        }
        Ok(ran?.0)
    }

    /// Where cargo puts release binaries: target/[TRIPLE/]release.
    fn release_dir(&self, tree: &Path) -> PathBuf {
        match &self.unit.target {
            Some(t) => tree.join("target").join(t).join("release"),
            None => tree.join("target/release"),
        }
    }

    /// Builds the crate in `tree` (release, offline, sandboxed, bounded).
    fn build(&self, tree: &Path, log: &Path) -> Result<Built, String> {
        let ended = self.cargo("build", &["--bins"], tree, self.unit.build_timeout, log)?;
        if !ended.ok() {
            return Err(format!("does not build ({ended}): {}", run::tail(log, 8)));
        }
        let bin = |name: &str| {
            let p = self.release_dir(tree).join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(format!("the build made no binary {name} in {} (is it a [[bin]] of the crate?)", self.release_dir(tree).display()))
            }
        };
        Ok(Built { binary: bin(&self.unit.binary)?, bench: bin(&self.unit.bench)? })
    }

    /// Runs the crate's tests in `tree` in the sandbox.
    fn test(&self, tree: &Path, log: &Path) -> Result<(), String> {
        let ended = self.cargo("test", &[], tree, self.unit.test_timeout, log)?;
        if ended.ok() {
            Ok(())
        } else {
            Err(format!("its tests fail ({ended}): {}", run::tail(log, 12)))
        }
    }

    /// Times `incumbent` and `candidate` benchmark runs interleaved, A B A B …, each a whole
    /// sandboxed process timed from outside; one untimed run of each first.
    fn bench(&self, incumbent: &Path, candidate: &Path, scratch: &Path, log: &Path) -> Result<Comparison, String> {
        let sb = Sandbox { writable: vec![scratch.to_path_buf()] };
        let once = |bin: &Path| -> Result<f64, String> {
            let mut c = Command::new(bin);
            c.current_dir(scratch).env("TMPDIR", scratch);
            let (ended, took) = run::run(c, self.unit.test_timeout, Some(&sb), None, log).map_err(|e| format!("{}: {e}", bin.display()))?;
            if !ended.ok() {
                return Err(format!("the benchmark failed ({ended}) with {}: {}", bin.display(), run::tail(log, 4)));
            }
            Ok(took.as_secs_f64())
        };
        once(incumbent)?;
        once(candidate)?;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..self.unit.rounds {
            a.push(once(incumbent)?);
            b.push(once(candidate)?);
        }
        Ok(stats::compare(&a, &b, self.unit.min_gain))
    }

    /// Generation 0: the unit's source, built and tested, becomes what the service runs.
    pub fn seed(&self) -> Result<Verdict, String> {
        if let Some(g) = self.current() {
            return Err(format!("{} already has generation {g}; `ghost improve run` tries candidates against it", self.unit.name));
        }
        let t = Instant::now();
        let tmp = self.dir.join("0.new");
        let _ = std::fs::remove_dir_all(&tmp);
        let src = tmp.join("source");
        (self.say)(&format!("seeding {} from {}", self.unit.name, self.unit.source.display()));
        copy_tree(&self.unit.source, &src)?;
        let built = self.build(&src, &tmp.join("build.log"))?;
        let build_s = t.elapsed().as_secs_f64();
        self.test(&src, &tmp.join("test.log"))?;
        self.install_bins(&built, &tmp)?;
        let _ = std::fs::remove_dir_all(src.join("target"));
        let gen = self.dir.join("0");
        std::fs::rename(&tmp, &gen).map_err(io_err(&gen))?;
        self.point_current(0)?;
        let v = Verdict {
            unit: self.unit.name.clone(),
            candidate: "seed".into(),
            origin: format!("source:{}", self.unit.source.display()),
            outcome: Outcome::Seeded,
            stage: Stage::Swap,
            reason: "built and tested from the unit's source".into(),
            generation: Some(0),
            bench: None,
            seconds: serde_json::json!({ "build": build_s, "total": t.elapsed().as_secs_f64() }),
            limits: self.limits_note(),
            unix_ms: unix_ms(),
        };
        self.record(&v, Some(&gen))?;
        Ok(v)
    }

    fn install_bins(&self, built: &Built, gen_dir: &Path) -> Result<(), String> {
        let bin = gen_dir.join("bin");
        std::fs::create_dir_all(&bin).map_err(io_err(&bin))?;
        for (from, name) in [(&built.binary, &self.unit.binary), (&built.bench, &self.unit.bench)] {
            let to = bin.join(name);
            std::fs::copy(from, &to).map_err(io_err(&to))?;
        }
        Ok(())
    }

    /// `current` → generation `n`, atomically (a new symlink renamed over the old one).
    fn point_current(&self, n: u64) -> Result<(), String> {
        let new = self.dir.join("current.new");
        let _ = std::fs::remove_file(&new);
        std::os::unix::fs::symlink(n.to_string(), &new).map_err(io_err(&new))?;
        let cur = self.dir.join("current");
        std::fs::rename(&new, &cur).map_err(io_err(&cur))?;
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_err(&self.dir))
    }

    /// Judges the candidate `patch_file`; swaps it in only when every test passes and it is
    /// measurably faster, then watches it through probation.
    pub fn try_candidate(&self, patch_file: &Path, origin: &str) -> Result<Verdict, String> {
        let Some(incumbent) = self.current() else {
            return Err(format!("{} has no generation yet: run `ghost improve seed {}` first", self.unit.name, self.unit.name));
        };
        let t = Instant::now();
        let id = format!("c{}", unix_ms());
        let work = self.dir.join("candidates").join(&id);
        std::fs::create_dir_all(&work).map_err(io_err(&work))?;
        std::fs::copy(patch_file, work.join("candidate.patch")).map_err(io_err(patch_file))?;
        let mut seconds = serde_json::Map::new();
        let verdict = |outcome, stage, reason: String, generation, bench: Option<&Comparison>, seconds: &serde_json::Map<String, Value>| Verdict {
            unit: self.unit.name.clone(),
            candidate: id.clone(),
            origin: origin.to_string(),
            outcome,
            stage,
            reason,
            generation,
            bench: bench.map(|b| serde_json::to_value(b).unwrap_or(Value::Null)),
            seconds: Value::Object(seconds.clone()),
            limits: if seconds.contains_key("build") { self.limits_note() } else { String::new() },
            unix_ms: unix_ms(),
        };
        let refuse = |stage, reason: String, bench: Option<&Comparison>, seconds: &mut serde_json::Map<String, Value>| -> Result<Verdict, String> {
            seconds.insert("total".into(), t.elapsed().as_secs_f64().into());
            (self.say)(&format!("refused at {stage:?}: {reason}"));
            let v = verdict(Outcome::Refused, stage, reason, None, bench, seconds);
            let _ = std::fs::remove_dir_all(work.join("source"));
            self.record(&v, Some(&work))?;
            Ok(v)
        };

        // The judge is the incumbent's: a candidate that touches it is refused unread.
        let text = std::fs::read_to_string(patch_file).map_err(io_err(patch_file))?;
        let touched = match patch::touched_paths(&text) {
            Ok(t) => t,
            Err(e) => return refuse(Stage::Patch, format!("not taken: {e}"), None, &mut seconds),
        };
        if let Some(p) = touched.iter().find(|p| self.unit.is_protected(p)) {
            return refuse(Stage::Patch, format!("it edits {p}, which is part of how it is judged (protected: {})", self.unit.protected.join(", ")), None, &mut seconds);
        }
        let inc_dir = self.dir.join(incumbent.to_string());
        if self.unit.protect_test_modules {
            if let Some(p) = patch::touches_test_module(&text, &inc_dir.join("source")) {
                return refuse(Stage::Patch, format!("it changes the #[cfg(test)] module of {p}, which is part of how it is judged"), None, &mut seconds);
            }
        }
        let src = work.join("source");
        copy_tree(&inc_dir.join("source"), &src)?;
        (self.say)(&format!("candidate {id} for {} (generation {incumbent} runs): {} file(s): {}", self.unit.name, touched.len(), touched.join(", ")));
        if let Err(e) = patch::apply(&src, patch_file) {
            return refuse(Stage::Patch, e, None, &mut seconds);
        }

        let s = Instant::now();
        (self.say)("building");
        let built = match self.build(&src, &work.join("build.log")) {
            Ok(b) => b,
            Err(e) => {
                seconds.insert("build".into(), s.elapsed().as_secs_f64().into());
                return refuse(Stage::Build, e, None, &mut seconds);
            }
        };
        seconds.insert("build".into(), s.elapsed().as_secs_f64().into());

        let s = Instant::now();
        (self.say)("testing (sandboxed: read-only system, no network)");
        let tested = self.test(&src, &work.join("test.log"));
        seconds.insert("tests".into(), s.elapsed().as_secs_f64().into());
        if let Err(e) = tested {
            return refuse(Stage::Tests, e, None, &mut seconds);
        }

        let s = Instant::now();
        (self.say)(&format!("benchmarking: {} rounds, incumbent and candidate interleaved", self.unit.rounds));
        let cmp = self.bench(&inc_dir.join("bin").join(&self.unit.bench), &built.bench, &src, &work.join("bench.log"));
        seconds.insert("bench".into(), s.elapsed().as_secs_f64().into());
        let cmp = match cmp {
            Ok(c) => c,
            Err(e) => return refuse(Stage::Bench, e, None, &mut seconds),
        };
        if !cmp.faster {
            return refuse(Stage::Bench, cmp.reason.clone(), Some(&cmp), &mut seconds);
        }

        // Swap: a new generation, `current` moved, the service restarted on it.
        let n = self.generations().last().map_or(0, |g| g + 1);
        let gen = self.dir.join(n.to_string());
        self.install_bins(&built, &work)?;
        let _ = std::fs::remove_dir_all(src.join("target"));
        std::fs::rename(&work, &gen).map_err(io_err(&gen))?;
        let trouble = self.swap_in(n, Some(incumbent), &cmp.reason, &mut seconds)?;
        seconds.insert("total".into(), t.elapsed().as_secs_f64().into());
        let v = match trouble {
            Some((stage, why)) => verdict(Outcome::RolledBack, stage, why, Some(n), Some(&cmp), &seconds),
            None => {
                (self.say)(&format!("kept generation {n}"));
                verdict(Outcome::Kept, Stage::Probation, cmp.reason.clone(), Some(n), Some(&cmp), &seconds)
            }
        };
        self.record(&v, Some(&gen))?;
        Ok(v)
    }

    /// Puts generation `n` (already on disk) in place of `previous` (`None`: the machine had
    /// none) and watches it: `current` switched atomically, the service restarted on it until it
    /// runs as a new process, then `probation_s` in which a crash, a restart or any state but
    /// running puts `previous` back. `Ok(None)`: it stays; `Ok(Some((stage, why)))`: it was
    /// rolled back. Fills `seconds` (swap, probation, rollback). Both a judged candidate and an
    /// installed bundle go through here.
    fn swap_in(&self, n: u64, previous: Option<u64>, why_swapped: &str, seconds: &mut serde_json::Map<String, Value>) -> Result<Option<(Stage, String)>, String> {
        let s = Instant::now();
        self.point_current(n)?;
        (self.say)(&format!("swapped: generation {n} ({why_swapped})"));
        if self.unit.reexec {
            return self.swap_pid1(n, previous, s, seconds);
        }
        let mut before = None;
        if let (Some(sv), Some(service)) = (self.supervisor, &self.unit.service) {
            let old_pid = sv.status(service).ok().and_then(|(_, pid, _)| pid);
            match sv.restart(service).and_then(|()| self.wait_running(sv, service, old_pid)) {
                Ok(st) => before = Some(st),
                Err(e) => {
                    seconds.insert("swap".into(), s.elapsed().as_secs_f64().into());
                    let back = self.put_back(previous)?;
                    return Ok(Some((Stage::Swap, format!("{service} did not come up on it: {e}; {back}"))));
                }
            }
        }
        seconds.insert("swap".into(), s.elapsed().as_secs_f64().into());

        // Probation: a crash, a restart or a state other than running rolls back.
        let s = Instant::now();
        let trouble = self.probation(before);
        seconds.insert("probation".into(), s.elapsed().as_secs_f64().into());
        let Some(why) = trouble else { return Ok(None) };
        let r = Instant::now();
        let back = self.put_back(previous)?;
        seconds.insert("rollback".into(), r.elapsed().as_secs_f64().into());
        Ok(Some((Stage::Probation, format!("{why}; {back}"))))
    }

    /// `swap_in` for PID 1 (`swap = "reexec"`): ghost-init re-executes as the generation's
    /// binary. A new program its own checks refuse, or one that fails them after the exec (PID 1
    /// then runs the previous program again by itself), is a failed swap; in probation PID 1 must
    /// answer all along and go on running the new program (no fall-back, no other re-exec).
    fn swap_pid1(&self, n: u64, previous: Option<u64>, s: Instant, seconds: &mut serde_json::Map<String, Value>) -> Result<Option<(Stage, String)>, String> {
        let Some(sv) = self.supervisor else {
            seconds.insert("swap".into(), s.elapsed().as_secs_f64().into());
            return Ok(None);
        };
        let binary = self.dir.join(n.to_string()).join("bin").join(&self.unit.binary);
        // What PID 1 runs now is what a failed probation puts back.
        let ran_before = sv.init()?.binary;
        let swapped = sv.reexec(&binary).and_then(|info| match info.last_reexec.as_ref().and_then(|r| r.fell_back.clone()) {
            Some(why) => Err(format!("the new PID 1 failed its checks ({why}) and PID 1 went back to its previous program")),
            None => Ok(info),
        });
        seconds.insert("swap".into(), s.elapsed().as_secs_f64().into());
        let after = match swapped {
            Ok(info) => info,
            Err(e) => {
                // PID 1 still runs what it ran: only `current` goes back.
                let back = self.put_back(previous)?;
                return Ok(Some((Stage::Swap, format!("PID 1 did not take it: {e}; {back}"))));
            }
        };
        if let Some(r) = &after.last_reexec {
            seconds.insert("reexec_ms".into(), (r.took_us as f64 / 1000.0).into());
        }
        let p = Instant::now();
        let trouble = self.watch(|| match sv.init() {
            Err(e) => Some(format!("PID 1 did not answer in probation: {e}")),
            Ok(i) if i.reexecs != after.reexecs || i.binary != after.binary => Some(format!("PID 1 changed program in probation: it runs {} (re-exec {})", i.binary, i.reexecs)),
            Ok(_) => None,
        });
        seconds.insert("probation".into(), p.elapsed().as_secs_f64().into());
        let Some(why) = trouble else { return Ok(None) };
        let r = Instant::now();
        let back = self.put_back(previous)?;
        let pid1 = match sv.reexec(Path::new(&ran_before)) {
            Ok(_) => format!("PID 1 runs {ran_before} again"),
            Err(e) => format!("WARNING: PID 1 could not go back to {ran_before}: {e}"),
        };
        seconds.insert("rollback".into(), r.elapsed().as_secs_f64().into());
        Ok(Some((Stage::Probation, format!("{why}; {back}; {pid1}"))))
    }

    /// After a failed swap: `current` back on `previous` (or removed, when there was none) and
    /// the service restarted on it; says what is back.
    fn put_back(&self, previous: Option<u64>) -> Result<String, String> {
        let back = match previous {
            Some(p) => {
                self.point_current(p)?;
                format!("generation {p} is back")
            }
            None => {
                let cur = self.dir.join("current");
                std::fs::remove_file(&cur).map_err(io_err(&cur))?;
                "there was no earlier generation: `current` is removed".to_string()
            }
        };
        if let (Some(sv), Some(service), Some(p)) = (self.supervisor, &self.unit.service, previous) {
            if let Err(e) = sv.restart(service) {
                (self.say)(&format!("WARNING: {service} could not be restarted on generation {p}: {e}"));
            }
        }
        (self.say)(&format!("rolled back: {back}"));
        Ok(back)
    }

    /// After a restart: until the service runs again as a new process (at most 30 s).
    fn wait_running(&self, sv: &dyn Supervisor, service: &str, old_pid: Option<i32>) -> Result<(String, Option<i32>, u32), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let st = sv.status(service)?;
            if st.0 == "running" && st.1.is_some() && st.1 != old_pid {
                return Ok(st);
            }
            if matches!(st.0.as_str(), "crash-loop" | "backoff" | "stopped" | "blocked") {
                return Err(format!("it is {} after the restart", st.0));
            }
            if Instant::now() >= deadline {
                return Err(format!("not running 30 s after the restart (state {})", st.0));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Watches the service for the unit's probation window; `Some(why)` when it misbehaved.
    fn probation(&self, after_swap: Option<(String, Option<i32>, u32)>) -> Option<String> {
        let (Some(sv), Some(service)) = (self.supervisor, &self.unit.service) else { return None };
        let (_, pid0, restarts0) = after_swap.unwrap_or_default();
        self.watch(|| match sv.status(service) {
            Err(e) => Some(format!("its status cannot be read: {e}")),
            Ok((state, pid, restarts)) if restarts > restarts0 || (pid0.is_some() && pid != pid0) => {
                Some(format!("{service} died in probation (state {state}, {} restart(s))", restarts - restarts0.min(restarts)))
            }
            Ok((state, ..)) if state != "running" => Some(format!("{service} is {state} in probation")),
            Ok(_) => None,
        })
    }

    /// Polls `trouble` for the unit's probation window (every 50 ms: ghost-init has no
    /// "changed" notification for one service or for itself); the first complaint, if any.
    fn watch(&self, mut trouble: impl FnMut() -> Option<String>) -> Option<String> {
        let deadline = Instant::now() + self.unit.probation;
        loop {
            if let Some(why) = trouble() {
                return Some(why);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
        }
    }

    /// Writes generation `gen` (default: the current one) to `to` as a bundle for a machine
    /// without a toolchain; only a verified generation (seeded or kept) ships.
    pub fn export(&self, gen: Option<u64>, to: &Path) -> Result<crate::bundle::Header, String> {
        let Some(g) = gen.or_else(|| self.current()) else { return Err(format!("{} has no generation yet: run `ghost improve seed {}` first", self.unit.name, self.unit.name)) };
        let dir = self.dir.join(g.to_string());
        if !dir.is_dir() {
            return Err(format!("{} has no generation {g} (in {})", self.unit.name, self.dir.display()));
        }
        let path = dir.join("verdict.json");
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        let v: Verdict = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if !matches!(v.outcome, Outcome::Kept | Outcome::Seeded) {
            return Err(format!("generation {g} of {} was {:?} at {:?} ({}): only a verified generation (seeded or kept) is shipped", self.unit.name, v.outcome, v.stage, v.reason));
        }
        let h = crate::bundle::write(&self.unit.name, g, &dir, &v, to)?;
        (self.say)(&format!("generation {g} of {} ({:?} here: {}) → {}: {} files", self.unit.name, v.outcome, v.reason, to.display(), h.files.len()));
        Ok(h)
    }

    /// Installs a bundle a build host verified as the next generation (generation 0 on a machine
    /// that has none) and swaps it in exactly as a judged candidate is: restart, probation,
    /// rollback. Every check (unit, sizes, SHA-256, static binaries) passes before anything is
    /// written.
    pub fn install(&self, file: &Path) -> Result<Verdict, String> {
        let t = Instant::now();
        let b = crate::bundle::read(file, &self.unit.name)?;
        for name in [&self.unit.binary, &self.unit.bench] {
            if !b.header.files.iter().any(|f| f.path == format!("bin/{name}")) {
                return Err(format!("{}: no bin/{name} in it, which the unit runs", file.display()));
            }
        }
        let h = &b.header;
        let previous = self.current();
        let n = self.generations().last().map_or(0, |g| g + 1);
        let tmp = self.dir.join(format!("{n}.new"));
        let _ = std::fs::remove_dir_all(&tmp);
        b.unpack(&tmp)?;
        let p = tmp.join("build-host-verdict.json");
        std::fs::write(&p, serde_json::to_string_pretty(&h.verdict).unwrap_or_default() + "\n").map_err(io_err(&p))?;
        let gen = self.dir.join(n.to_string());
        std::fs::rename(&tmp, &gen).map_err(io_err(&gen))?;
        let mut seconds = serde_json::Map::new();
        seconds.insert("install".into(), t.elapsed().as_secs_f64().into());
        let from = format!("generation {} verified on {} ({:?}: {})", h.generation, h.host, h.verdict.outcome, h.verdict.reason);
        (self.say)(&format!("installing {} as generation {n}: {from}", file.display()));
        let trouble = self.swap_in(n, previous, &from, &mut seconds)?;
        seconds.insert("total".into(), t.elapsed().as_secs_f64().into());
        let (outcome, stage, reason) = match trouble {
            Some((stage, why)) => (Outcome::RolledBack, stage, why),
            None if previous.is_none() => (Outcome::Seeded, Stage::Swap, format!("seeded from the build host: {from}")),
            None => (Outcome::Kept, Stage::Probation, format!("{from}; it ran through {:.0} s of probation here", self.unit.probation.as_secs_f64())),
        };
        let v = Verdict {
            unit: self.unit.name.clone(),
            candidate: h.verdict.candidate.clone(),
            origin: format!("build-host:{}", h.host),
            outcome,
            stage,
            reason,
            generation: Some(n),
            bench: h.verdict.bench.clone(),
            seconds: Value::Object(seconds),
            limits: h.verdict.limits.clone(),
            unix_ms: unix_ms(),
        };
        if outcome != Outcome::RolledBack {
            (self.say)(&format!("kept generation {n}"));
        }
        self.record(&v, Some(&gen))?;
        Ok(v)
    }

    /// Puts the generation before the current one back (an operator's call).
    pub fn rollback(&self) -> Result<Verdict, String> {
        let Some(cur) = self.current() else { return Err(format!("{} has no generation yet", self.unit.name)) };
        // The newest generation before the current one that was kept or seeded.
        let good: Vec<u64> = self.history().iter().filter(|v| matches!(v.outcome, Outcome::Kept | Outcome::Seeded)).filter_map(|v| v.generation).filter(|g| *g < cur).collect();
        let Some(&prev) = good.last() else { return Err(format!("{} runs generation {cur}; there is no earlier good generation to go back to", self.unit.name)) };
        self.point_current(prev)?;
        if let (Some(sv), Some(service)) = (self.supervisor, &self.unit.service) {
            sv.restart(service)?;
        }
        if let (true, Some(sv)) = (self.unit.reexec, self.supervisor) {
            let info = sv.reexec(&self.dir.join(prev.to_string()).join("bin").join(&self.unit.binary))?;
            if let Some(why) = info.last_reexec.and_then(|r| r.fell_back) {
                return Err(format!("`current` is generation {prev} again, but PID 1 refused to re-execute it ({why}) and runs {}", info.binary));
            }
        }
        let v = Verdict {
            unit: self.unit.name.clone(),
            candidate: format!("generation {cur}"),
            origin: "operator".into(),
            outcome: Outcome::Reverted,
            stage: Stage::Operator,
            reason: format!("the operator put generation {prev} back in place of {cur}"),
            generation: Some(prev),
            bench: None,
            seconds: serde_json::json!({}),
            limits: String::new(),
            unix_ms: unix_ms(),
        };
        self.record(&v, None)?;
        Ok(v)
    }
}

/// A candidate source: a directory of proposals (`*.patch`, oldest name first); each one taken
/// is moved to `DIR/done/` so it is judged once.
pub fn next_proposal(dir: &Path) -> Option<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "patch" || e == "diff")).collect();
    v.sort();
    v.into_iter().next()
}

pub fn take_proposal(dir: &Path, p: &Path) -> Result<PathBuf, String> {
    let done = dir.join("done");
    std::fs::create_dir_all(&done).map_err(io_err(&done))?;
    let to = done.join(p.file_name().unwrap_or_default());
    std::fs::rename(p, &to).map_err(io_err(p))?;
    Ok(to)
}

/// ghost-init's control socket as the crucible's supervisor.
pub struct ControlSocket;

impl ControlSocket {
    fn request(&self, req: &ghost_proto::Request) -> Result<ghost_proto::Reply, String> {
        ghostctl::client::control_request(req).map_err(|f| f.to_string())
    }
}

impl Supervisor for ControlSocket {
    fn reexec(&self, binary: &Path) -> Result<ghost_proto::InitInfo, String> {
        use ghostctl::client::{socket_path_from_env, Connection, Endpoint};
        let socket = socket_path_from_env(Endpoint::Control, None);
        let mut c = Connection::open(&socket).map_err(|f| f.to_string())?;
        ghostctl::client::reexec_and_wait(&mut c, &socket, Some(binary.display().to_string())).map_err(|f| f.to_string())
    }

    fn init(&self) -> Result<ghost_proto::InitInfo, String> {
        self.request(&ghost_proto::Request::Init)?.init.ok_or_else(|| "ghost-init sent no init report".into())
    }

    fn restart(&self, service: &str) -> Result<(), String> {
        self.request(&ghost_proto::Request::Restart { name: service.to_string() }).map(|_| ())
    }

    fn status(&self, service: &str) -> Result<(String, Option<i32>, u32), String> {
        let reply = self.request(&ghost_proto::Request::Status { name: Some(service.to_string()) })?;
        let s = reply.services.and_then(|mut v| v.pop()).ok_or_else(|| format!("ghost-init has no service {service}"))?;
        let state = serde_json::to_value(s.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        Ok((state, s.pid, s.restarts))
    }
}

/// Hands a verdict to the agent, which appends it to the signed audit trail and keeps it in
/// memory; returns what the agent answered (`audit_seq`, `memory_id`).
pub fn tell_agent(v: &Verdict) -> Result<Value, String> {
    use ghostctl::client::{socket_path_from_env, Connection, Endpoint};
    let outcome = serde_json::to_value(v.outcome).ok().and_then(|o| o.as_str().map(str::to_string)).unwrap_or_default();
    let gen = v.generation.map(|g| format!(" (generation {g})")).unwrap_or_default();
    let text = format!("crucible: {} candidate {} {outcome}{gen} at {:?}: {}", v.unit, v.candidate, v.stage, v.reason);
    let data = serde_json::to_value(v).map_err(|e| e.to_string())?;
    let req = ghost_proto::agent::AgentRequest::Verdict { unit: v.unit.clone(), outcome, text, data };
    let socket = socket_path_from_env(Endpoint::Agent, None);
    let mut c = Connection::open(&socket).map_err(|f| f.to_string())?;
    c.agent_request::<Value>(&req).map_err(|f| f.to_string()).map(|r| r.unwrap_or(Value::Null))
}
