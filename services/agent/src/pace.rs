//! The heartbeat's pace: slower while nothing happens, faster under a backlog, within bounds
//! (and never faster than the constitution's beats per minute).

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Pace {
    pub min: Duration,
    pub max: Duration,
    current: Duration,
}

impl Pace {
    pub fn new(min: Duration, max: Duration) -> Pace {
        let max = max.max(min);
        Pace { min, max, current: min }
    }

    /// Also honours a beats-per-minute bound: the interval is at least 60 s / bpm.
    pub fn with_max_beats_per_minute(mut self, bpm: u32) -> Pace {
        if bpm > 0 {
            self.min = self.min.max(Duration::from_secs(60) / bpm);
            self.max = self.max.max(self.min);
            self.current = self.current.max(self.min);
        }
        self
    }

    pub fn current(&self) -> Duration {
        self.current
    }

    /// The wait before the next beat, after a beat that saw `observations` and left `backlog`
    /// waiting: back to the fastest pace when anything happened, half as fast again (up to the
    /// slowest) after each quiet beat.
    pub fn after_beat(&mut self, observations: usize, backlog: usize) -> Duration {
        self.current = if backlog > 0 || observations > 0 { self.min } else { (self.current * 2).min(self.max) };
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slows_when_quiet_speeds_up_on_work_and_respects_bounds() {
        let mut p = Pace::new(Duration::from_millis(100), Duration::from_secs(2));
        let quiet: Vec<u128> = (0..7).map(|_| p.after_beat(0, 0).as_millis()).collect();
        assert_eq!(quiet, [200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(p.after_beat(0, 3), Duration::from_millis(100));
        assert_eq!(p.after_beat(1, 0), Duration::from_millis(100));
        let p = Pace::new(Duration::from_millis(100), Duration::from_secs(2)).with_max_beats_per_minute(60);
        assert_eq!(p.current(), Duration::from_secs(1));
    }
}
