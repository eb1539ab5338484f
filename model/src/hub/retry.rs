//! Exponential backoff for an unreachable or failing hub: bounded in attempts and in delay,
//! configurable from the command line, so first boot keeps trying for a while and then says
//! why it stopped.

use super::error::PullError;
use super::progress::Progress;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Tries after the first one.
    pub retries: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// 8 retries from 1 s doubling up to 60 s: about 3 minutes before giving up.
    fn default() -> Backoff {
        Backoff { retries: 8, base: Duration::from_secs(1), max: Duration::from_secs(60) }
    }
}

impl Backoff {
    /// Delay before retry number `n` (0-based): base·2ⁿ, capped at max.
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// Runs `op` until it succeeds, fails for good, or the retries are spent; each retry is
    /// a note on `progress`. `sleep` is a parameter so tests run without waiting.
    pub fn run<T>(
        &self,
        what: &str,
        progress: &mut dyn Progress,
        mut op: impl FnMut(&mut dyn Progress) -> Result<T, PullError>,
        mut sleep: impl FnMut(Duration),
    ) -> Result<T, PullError> {
        let mut n = 0;
        loop {
            match op(progress) {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && n < self.retries => {
                    let d = self.delay(n);
                    progress.note(&format!("{what}: {e}; retry {} of {} in {:.1}s", n + 1, self.retries, d.as_secs_f64()));
                    sleep(d);
                    n += 1;
                }
                Err(e) if e.is_transient() && n > 0 => return Err(PullError::GaveUp { what: what.to_string(), attempts: n + 1, last: Box::new(e) }),
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Notes(Vec<String>);
    impl Progress for Notes {
        fn note(&mut self, line: &str) {
            self.0.push(line.to_string());
        }
        fn bytes(&mut self, _: &str, _: u64, _: u64) {}
        fn finished(&mut self, _: &str, _: u64) {}
    }

    fn down() -> PullError {
        PullError::Transport { url: "http://127.0.0.1:9".into(), message: "connection refused".into() }
    }

    #[test]
    fn hub_retry_delays_double_and_cap() {
        let b = Backoff { retries: 5, base: Duration::from_millis(100), max: Duration::from_millis(500) };
        let d: Vec<u64> = (0..6).map(|n| b.delay(n).as_millis() as u64).collect();
        assert_eq!(d, vec![100, 200, 400, 500, 500, 500]);
        assert_eq!(b.delay(200), Duration::from_millis(500));
    }

    #[test]
    fn hub_retry_gives_up_with_the_last_error() {
        let b = Backoff { retries: 2, base: Duration::from_millis(1), max: Duration::from_millis(1) };
        let (mut calls, mut notes, mut slept) = (0, Notes::default(), 0);
        let r: Result<(), _> = b.run("repo info", &mut notes, |_| { calls += 1; Err(down()) }, |_| slept += 1);
        let e = r.unwrap_err().to_string();
        assert_eq!((calls, slept, notes.0.len()), (3, 2, 2));
        assert!(e.contains("gave up after 3 attempts") && e.contains("connection refused"), "{e}");
        assert!(notes.0[0].contains("retry 1 of 2"), "{:?}", notes.0);
    }

    #[test]
    fn hub_retry_stops_at_once_on_permanent_errors_and_recovers_from_transient_ones() {
        let b = Backoff { retries: 5, base: Duration::ZERO, max: Duration::ZERO };
        let mut calls = 0;
        let r: Result<(), _> = b.run("x", &mut Notes::default(), |_| { calls += 1; Err(PullError::RepoNotFound { repo: "a/b".into(), endpoint: "e".into() }) }, |_| {});
        assert!(matches!(r, Err(PullError::RepoNotFound { .. })));
        assert_eq!(calls, 1);
        let mut calls = 0;
        let r = b.run("x", &mut Notes::default(), |_| { calls += 1; if calls < 3 { Err(PullError::Http { url: "u".into(), status: 503, detail: String::new() }) } else { Ok(7) } }, |_| {});
        assert_eq!(r.unwrap(), 7);
    }
}
