//! The strategic layer's daily budget: a ledger per UTC day, shared by every process that uses
//! the same router directory, that a call's worst case must fit in before the call is made.
//!
//! ## Files
//!
//! - `budget-YYYY-MM-DD.json` (UTC day): what the day used and what calls in flight have
//!   reserved. Replaced atomically (write to a temporary file, fsync, rename, fsync the
//!   directory); files older than [`KEEP_DAYS`] days are removed when a new day starts.
//! - `budget.lock`: every read-modify-write of a day file holds an exclusive `flock` on it, so
//!   two processes (or two threads, each with its own open file) never both see room for
//!   the same last tokens. Nothing slow happens under the lock: no network.
//!
//! ## Accounting
//!
//! Money is counted in whole pico-dollars (10⁻¹² USD) so that sums are exact: the per-token
//! prices are rounded up and the daily limit down, which can only make the check stricter.
//!
//! 1. [`Budget::reserve`]: the call's worst case (tokens and price) is added to the day's
//!    reservations if used + reserved + worst case stays within both daily limits; otherwise
//!    the call is refused with the day's figures.
//! 2. After the call, [`Budget::settle`] replaces the reservation with the usage the API
//!    reported (a conforming API never reports more than the worst case, since `max_tokens`
//!    caps the answer; if one does, what it reported is recorded). A call whose outcome is
//!    unknown (timed out after the request was sent, or an answer without usage) is settled
//!    at its worst case: the API may have billed it. [`Budget::release`] drops the reservation
//!    of a call that cannot have been billed (not sent, or answered with an HTTP error).
//! 3. A reservation whose process died before settling expires after the call's timeout plus a
//!    minute and is then charged at its worst case.
//!
//! A ledger that cannot be read or written refuses the call: the budget cannot be checked.

use super::Tokens;
use ghost_proto::civil_from_days;
use rustix::fs::{flock, FlockOperation};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Day files older than this are deleted when a new day's file is first written.
pub const KEEP_DAYS: u64 = 90;

const PICO: f64 = 1e12;

/// Wall-clock time in milliseconds since the Unix epoch; injected so tests can move to the
/// next UTC day.
pub trait Clock: Send + Sync {
    fn now_unix_ms(&self) -> u64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_ms(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }
}

impl<F: Fn() -> u64 + Send + Sync> Clock for F {
    fn now_unix_ms(&self) -> u64 {
        self()
    }
}


/// `YYYY-MM-DD`, the UTC day of a time.
pub fn utc_date(unix_ms: u64) -> String {
    let (y, m, d) = civil_from_days((unix_ms / 86_400_000) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339(unix_ms: u64) -> String {
    let s = unix_ms / 1000;
    let (h, mi, se) = ((s / 3600) % 24, (s / 60) % 60, s % 60);
    format!("{}T{h:02}:{mi:02}:{se:02}.{:03}Z", utc_date(unix_ms), unix_ms % 1000)
}

/// Pico-dollars as dollars.
pub fn usd(pusd: u64) -> f64 {
    pusd as f64 / PICO
}

/// Today's figures of the strategic budget.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Usage {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    pub tokens_used: u64,
    /// Reserved by calls in flight.
    pub tokens_reserved: u64,
    pub daily_tokens: u64,
    pub usd_used: f64,
    pub usd_reserved: f64,
    pub daily_usd: f64,
    /// Calls settled today (answered or charged).
    pub calls: u64,
    /// Calls refused today because they could not fit.
    pub refused: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The call does not fit; the message has the day's figures.
    #[error("{0}")]
    Refused(String),
    /// The ledger could not be read or written.
    #[error("budget ledger {0}")]
    Ledger(String),
}

/// A reservation held by a call in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub day: String,
    pub id: String,
    pub tokens: u64,
    pub pusd: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DayFile {
    day: String,
    tokens_used: u64,
    /// Exact, in 10⁻¹² USD.
    cost_pusd: u64,
    /// `cost_pusd` in dollars, for people reading the file.
    cost_usd: f64,
    calls: u64,
    refused: u64,
    reservations: Vec<Reservation>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reservation {
    id: String,
    tokens: u64,
    pusd: u64,
    expires_unix_ms: u64,
}

impl DayFile {
    fn reserved(&self) -> (u64, u64) {
        self.reservations.iter().fold((0u64, 0u64), |(t, p), r| (t.saturating_add(r.tokens), p.saturating_add(r.pusd)))
    }

    fn charge(&mut self, tokens: u64, pusd: u64) {
        self.tokens_used = self.tokens_used.saturating_add(tokens);
        self.cost_pusd = self.cost_pusd.saturating_add(pusd);
        self.cost_usd = usd(self.cost_pusd);
        self.calls += 1;
    }

    /// Charges reservations whose process never settled them, at their worst case.
    fn expire(&mut self, now_ms: u64) {
        let (stale, live): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reservations).into_iter().partition(|r| r.expires_unix_ms <= now_ms);
        self.reservations = live;
        for r in stale {
            self.charge(r.tokens, r.pusd);
        }
    }
}

/// The ledger of one router directory with the limits of one strategic layer.
pub struct Budget {
    dir: PathBuf,
    daily_tokens: u64,
    daily_pusd: u64,
    /// Per-token prices, rounded up.
    in_pusd: u64,
    out_pusd: u64,
    /// How long a reservation may stay unsettled before it is charged.
    hold_ms: u64,
}

fn pusd_per_token(usd_per_million: f64) -> u64 {
    // USD per million tokens × 10¹² / 10⁶ = pico-dollars per token.
    (usd_per_million * 1e6).ceil().max(0.0) as u64
}

impl Budget {
    pub fn new(dir: &Path, daily_tokens: u64, daily_usd: f64, usd_per_million_input: f64, usd_per_million_output: f64, call_timeout_ms: u64) -> Budget {
        Budget {
            dir: dir.to_path_buf(),
            daily_tokens,
            daily_pusd: (daily_usd * PICO).floor().max(0.0) as u64,
            in_pusd: pusd_per_token(usd_per_million_input),
            out_pusd: pusd_per_token(usd_per_million_output),
            hold_ms: call_timeout_ms.saturating_add(60_000),
        }
    }

    /// What `tokens` cost at the configured prices, in pico-dollars.
    pub fn cost_pusd(&self, tokens: Tokens) -> u64 {
        tokens.prompt.saturating_mul(self.in_pusd).saturating_add(tokens.completion.saturating_mul(self.out_pusd))
    }

    pub fn day_path(&self, day: &str) -> PathBuf {
        self.dir.join(format!("budget-{day}.json"))
    }

    /// Reserves the worst case of a call (`prompt` tokens at most in, `completion` at most out)
    /// if it fits in what is left of the day.
    pub fn reserve(&self, prompt: u64, completion: u64, now_ms: u64) -> Result<Reserved, BudgetError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let day = utc_date(now_ms);
        let tokens = prompt.saturating_add(completion);
        let pusd = self.cost_pusd(Tokens { prompt, completion });
        self.update(&day, now_ms, |f| {
            let (rt, rp) = f.reserved();
            let tokens_after = f.tokens_used.saturating_add(rt).saturating_add(tokens);
            let pusd_after = f.cost_pusd.saturating_add(rp).saturating_add(pusd);
            let refusal = if tokens_after > self.daily_tokens {
                Some(format!(
                    "daily budget: {} of {} tokens used{}; this call may need up to {tokens}",
                    f.tokens_used,
                    self.daily_tokens,
                    if rt > 0 { format!(" and {rt} reserved by calls in flight") } else { String::new() }
                ))
            } else if pusd_after > self.daily_pusd {
                Some(format!(
                    "daily budget: ${:.6} of ${:.6} used{}; this call may cost up to ${:.6}",
                    usd(f.cost_pusd),
                    usd(self.daily_pusd),
                    if rp > 0 { format!(" and ${:.6} reserved by calls in flight", usd(rp)) } else { String::new() },
                    usd(pusd)
                ))
            } else {
                None
            };
            if let Some(msg) = refusal {
                f.refused += 1;
                return Err(BudgetError::Refused(msg));
            }
            let id = format!("{}-{}-{now_ms}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
            f.reservations.push(Reservation { id: id.clone(), tokens, pusd, expires_unix_ms: now_ms.saturating_add(self.hold_ms) });
            Ok(Reserved { day: day.clone(), id, tokens, pusd })
        })
    }

    /// Replaces a reservation with what the call used (`None`: unknown, charge the worst
    /// case). Returns the pico-dollars charged.
    pub fn settle(&self, r: &Reserved, used: Option<Tokens>, now_ms: u64) -> Result<u64, BudgetError> {
        let (tokens, pusd) = match used {
            Some(t) => (t.total(), self.cost_pusd(t)),
            None => (r.tokens, r.pusd),
        };
        self.update(&r.day, now_ms, |f| {
            if let Some(i) = f.reservations.iter().position(|x| x.id == r.id) {
                f.reservations.remove(i);
                f.charge(tokens, pusd);
            } else {
                // Expired and charged at its worst case already; add only what the API
                // reported beyond it.
                f.tokens_used = f.tokens_used.saturating_add(tokens.saturating_sub(r.tokens));
                f.cost_pusd = f.cost_pusd.saturating_add(pusd.saturating_sub(r.pusd));
                f.cost_usd = usd(f.cost_pusd);
            }
            Ok(pusd)
        })
    }

    /// Drops the reservation of a call that cannot have been billed.
    pub fn release(&self, r: &Reserved, now_ms: u64) -> Result<(), BudgetError> {
        self.update(&r.day, now_ms, |f| {
            f.reservations.retain(|x| x.id != r.id);
            Ok(())
        })
    }

    /// Today's figures (reading only; expired reservations are counted as used).
    pub fn usage(&self, now_ms: u64) -> Result<Usage, BudgetError> {
        let day = utc_date(now_ms);
        let _lock = self.lock()?;
        let mut f = self.load(&day)?;
        f.expire(now_ms);
        let (rt, rp) = f.reserved();
        Ok(Usage {
            day,
            tokens_used: f.tokens_used,
            tokens_reserved: rt,
            daily_tokens: self.daily_tokens,
            usd_used: usd(f.cost_pusd),
            usd_reserved: usd(rp),
            daily_usd: usd(self.daily_pusd),
            calls: f.calls,
            refused: f.refused,
        })
    }

    /// Under the lock: load `day`, expire, apply `op`, write back (also after a refusal, to
    /// count it).
    fn update<T>(&self, day: &str, now_ms: u64, op: impl FnOnce(&mut DayFile) -> Result<T, BudgetError>) -> Result<T, BudgetError> {
        let _lock = self.lock()?;
        let mut f = self.load(day)?;
        let new_day = f.day.is_empty();
        f.day = day.to_string();
        f.expire(now_ms);
        let out = op(&mut f);
        self.store(&f)?;
        if new_day {
            self.prune(day);
        }
        out
    }

    fn lock(&self) -> Result<std::fs::File, BudgetError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| BudgetError::Ledger(format!("{}: {e}", self.dir.display())))?;
        let path = self.dir.join("budget.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| BudgetError::Ledger(format!("{}: {e}", path.display())))?;
        // Blocking: holders never wait on anything but the disk while they hold it.
        flock(&f, FlockOperation::LockExclusive).map_err(|e| BudgetError::Ledger(format!("{}: flock: {e}", path.display())))?;
        Ok(f)
    }

    fn load(&self, day: &str) -> Result<DayFile, BudgetError> {
        let path = self.day_path(day);
        match std::fs::read(&path) {
            Ok(b) => {
                let f: DayFile = serde_json::from_slice(&b).map_err(|e| BudgetError::Ledger(format!("{} is damaged: {e}", path.display())))?;
                if f.day != day {
                    return Err(BudgetError::Ledger(format!("{} is for day {:?}", path.display(), f.day)));
                }
                Ok(f)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DayFile::default()),
            Err(e) => Err(BudgetError::Ledger(format!("{}: {e}", path.display()))),
        }
    }

    fn store(&self, f: &DayFile) -> Result<(), BudgetError> {
        let path = self.day_path(&f.day);
        let tmp = path.with_extension("json.tmp");
        let err = |p: &Path, e: std::io::Error| BudgetError::Ledger(format!("{}: {e}", p.display()));
        let text = serde_json::to_vec_pretty(f).map_err(|e| BudgetError::Ledger(e.to_string()))?;
        let mut file = std::fs::File::create(&tmp).map_err(|e| err(&tmp, e))?;
        file.write_all(&text).and_then(|_| file.sync_all()).map_err(|e| err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| err(&path, e))?;
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| err(&self.dir, e))
    }

    /// Removes day files more than [`KEEP_DAYS`] before `today` (best effort).
    fn prune(&self, today: &str) {
        let Some(today_days) = parse_days(today) else { return };
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(day) = name.to_str().and_then(|n| n.strip_prefix("budget-")).and_then(|n| n.strip_suffix(".json")) else { continue };
            if parse_days(day).is_some_and(|d| d + (KEEP_DAYS as i64) < today_days) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Days since the epoch of a `YYYY-MM-DD` this module wrote.
fn parse_days(day: &str) -> Option<i64> {
    let mut it = day.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (it.next()??, it.next()??, it.next()??);
    // days_from_civil (Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::super::config::tempfile_lite::Dir;
    use super::*;

    const DAY_MS: u64 = 86_400_000;
    // 2025-03-01T10:00:00Z
    const T0: u64 = 1_740_823_200_000;

    #[test]
    fn router_budget_dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(T0), "2025-03-01");
        assert_eq!(utc_date(T0 - DAY_MS), "2025-02-28");
        assert_eq!(utc_date(951_782_400_000), "2000-02-29");
        assert_eq!(rfc3339(T0 + 1_234), "2025-03-01T10:00:01.234Z");
        for d in [0i64, 11_016, 20_148, 30_000] {
            assert_eq!(parse_days(&utc_date(d as u64 * DAY_MS)), Some(d));
        }
    }

    #[test]
    fn router_budget_reserve_settle_release() {
        let d = Dir::new("budget");
        let b = Budget::new(d.path(), 1000, 1.0, 0.0, 0.0, 60_000);
        let r1 = b.reserve(100, 300, T0).unwrap();
        let r2 = b.reserve(100, 300, T0).unwrap();
        let e = b.reserve(100, 300, T0).unwrap_err();
        assert_eq!(e, BudgetError::Refused("daily budget: 0 of 1000 tokens used and 800 reserved by calls in flight; this call may need up to 400".into()));
        b.settle(&r1, Some(Tokens { prompt: 20, completion: 80 }), T0).unwrap();
        b.release(&r2, T0).unwrap();
        let u = b.usage(T0).unwrap();
        assert_eq!((u.tokens_used, u.tokens_reserved, u.calls, u.refused), (100, 0, 1, 1));
        // Settling with unknown usage charges the worst case.
        let r3 = b.reserve(100, 300, T0).unwrap();
        b.settle(&r3, None, T0).unwrap();
        assert_eq!(b.usage(T0).unwrap().tokens_used, 500);
        // The next UTC day starts fresh; the old day keeps its file.
        assert_eq!(b.usage(T0 + DAY_MS).unwrap().tokens_used, 0);
        assert!(b.day_path("2025-03-01").is_file());
    }

    #[test]
    fn router_budget_money_is_exact_and_binding() {
        let d = Dir::new("budget-usd");
        // $0.10 a day; $1 per million in, $2 per million out.
        let b = Budget::new(d.path(), u64::MAX, 0.10, 1.0, 2.0, 60_000);
        assert_eq!(b.cost_pusd(Tokens { prompt: 1, completion: 1 }), 3_000_000);
        let mut n = 0;
        // Each call: worst case 10_000 in + 10_000 out = $0.03; settles at exactly that.
        while let Ok(r) = b.reserve(10_000, 10_000, T0) {
            b.settle(&r, Some(Tokens { prompt: 10_000, completion: 10_000 }), T0).unwrap();
            n += 1;
            assert!(n < 10, "the budget never binds");
        }
        assert_eq!(n, 3, "$0.09 fits in $0.10; a fourth $0.03 does not");
        let e = b.reserve(10_000, 10_000, T0).unwrap_err().to_string();
        assert_eq!(e, "daily budget: $0.090000 of $0.100000 used; this call may cost up to $0.030000");
        let u = b.usage(T0).unwrap();
        assert!((u.usd_used - 0.09).abs() < 1e-12 && u.usd_used <= u.daily_usd);
    }

    #[test]
    fn router_budget_abandoned_reservations_expire_at_worst_case() {
        let d = Dir::new("budget-expire");
        let b = Budget::new(d.path(), 1000, 1.0, 0.0, 0.0, 1_000);
        let r = b.reserve(100, 100, T0).unwrap();
        assert_eq!(b.usage(T0 + 60_000).unwrap().tokens_reserved, 200);
        let u = b.usage(T0 + 61_001).unwrap();
        assert_eq!((u.tokens_used, u.tokens_reserved), (200, 0), "charged once expired");
        // A late settlement adds nothing when within the worst case, and the excess beyond it.
        b.settle(&r, Some(Tokens { prompt: 50, completion: 50 }), T0 + 62_000).unwrap();
        assert_eq!(b.usage(T0 + 62_000).unwrap().tokens_used, 200);
    }

    #[test]
    fn router_budget_damaged_ledger_refuses() {
        let d = Dir::new("budget-bad");
        let b = Budget::new(d.path(), 1000, 1.0, 0.0, 0.0, 1_000);
        std::fs::write(b.day_path("2025-03-01"), "{ not json").unwrap();
        let e = b.reserve(1, 1, T0).unwrap_err();
        assert!(matches!(&e, BudgetError::Ledger(m) if m.contains("budget-2025-03-01.json is damaged")), "{e}");
    }

    #[test]
    fn router_budget_prunes_old_days() {
        let d = Dir::new("budget-prune");
        let b = Budget::new(d.path(), 1000, 1.0, 0.0, 0.0, 1_000);
        std::fs::write(d.path().join("budget-2024-01-01.json"), "{}").unwrap();
        std::fs::write(d.path().join("budget-2025-02-01.json"), "{}").unwrap();
        b.reserve(1, 1, T0).unwrap();
        assert!(!d.path().join("budget-2024-01-01.json").exists());
        assert!(d.path().join("budget-2025-02-01.json").exists());
    }

    #[test]
    fn router_budget_threads_cannot_overspend() {
        let d = Dir::new("budget-race");
        let b = std::sync::Arc::new(Budget::new(d.path(), 1000, 1.0, 0.0, 0.0, 60_000));
        let ok: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    let b = b.clone();
                    s.spawn(move || {
                        let mut ok = 0;
                        for _ in 0..5 {
                            if let Ok(r) = b.reserve(50, 50, T0) {
                                b.settle(&r, Some(Tokens { prompt: 50, completion: 50 }), T0).unwrap();
                                ok += 1;
                            }
                        }
                        ok
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(ok, 10);
        assert_eq!(b.usage(T0).unwrap().tokens_used, 1000);
    }
}
