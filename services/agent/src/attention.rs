//! The attention filter: what reaches deliberation when observations pour in.
//!
//! - Floods are cut at the key (source, kind, service): within a window only the first
//!   `per_key` observations of a key pass; the rest are counted, and when the window closes
//!   one summary observation ("412 more like this in 10 s") takes their place, so a flood is
//!   neither lost nor allowed to drown everything else.
//! - The queue is bounded: when full, the least salient observation goes (the newest one, if
//!   it is the least salient), and the count of what was dropped is kept.
//! - Deliberation takes the most salient first; equal salience, the oldest first.

use std::collections::HashMap;

use crate::observation::{Observation, Source};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Accepted,
    /// Counted into its key's flood summary.
    Suppressed,
    /// Accepted, and the least salient waiting observation was dropped for it.
    DisplacedAnother,
    /// The queue is full of more salient observations; this one was dropped.
    Dropped,
}

#[derive(Debug)]
struct Window {
    start_ms: u64,
    passed: u32,
    suppressed: u32,
    /// The last suppressed observation, the template of the summary.
    last: Option<Observation>,
}

#[derive(Debug)]
pub struct Attention {
    capacity: usize,
    per_key: u32,
    window_ms: u64,
    queue: Vec<Observation>,
    windows: HashMap<(Source, String, String), Window>,
    pub dropped: u64,
    pub suppressed: u64,
}

impl Attention {
    pub fn new(capacity: usize, per_key: u32, window_ms: u64) -> Attention {
        Attention { capacity: capacity.max(1), per_key: per_key.max(1), window_ms: window_ms.max(1), queue: Vec::new(), windows: HashMap::new(), dropped: 0, suppressed: 0 }
    }

    pub fn backlog(&self) -> usize {
        self.queue.len()
    }

    pub fn offer(&mut self, obs: Observation) -> Offer {
        let (source, kind, service) = obs.key();
        let key = (source, kind.to_string(), service.to_string());
        let w = self.windows.entry(key).or_insert(Window { start_ms: obs.ts_ms, passed: 0, suppressed: 0, last: None });
        if obs.ts_ms.saturating_sub(w.start_ms) >= self.window_ms && w.suppressed == 0 {
            // A quiet key starts a new window at once; one with a pending summary waits for
            // `close_windows` so that the summary is not lost.
            *w = Window { start_ms: obs.ts_ms, passed: 0, suppressed: 0, last: None };
        }
        if w.passed >= self.per_key {
            w.suppressed += 1;
            w.last = Some(obs);
            self.suppressed += 1;
            return Offer::Suppressed;
        }
        w.passed += 1;
        self.push(obs)
    }

    fn push(&mut self, obs: Observation) -> Offer {
        if self.queue.len() < self.capacity {
            self.queue.push(obs);
            return Offer::Accepted;
        }
        // The least salient, and among those the newest, is the one to go.
        let (i, least) = self
            .queue
            .iter()
            .enumerate()
            .min_by(|(_, a), (_, b)| a.salience.total_cmp(&b.salience).then(b.ts_ms.cmp(&a.ts_ms)))
            .map(|(i, o)| (i, o.salience))
            .expect("a full queue is not empty");
        self.dropped += 1;
        if obs.salience > least {
            self.queue.swap_remove(i);
            self.queue.push(obs);
            Offer::DisplacedAnother
        } else {
            Offer::Dropped
        }
    }

    /// Ends the windows that are over at `now_ms`: each key that had observations suppressed
    /// gets one summary observation in the queue.
    pub fn close_windows(&mut self, now_ms: u64) {
        let window_ms = self.window_ms;
        let mut summaries = Vec::new();
        self.windows.retain(|_, w| {
            if now_ms.saturating_sub(w.start_ms) < window_ms {
                return true;
            }
            if let Some(mut last) = w.last.take() {
                let secs = (now_ms.saturating_sub(w.start_ms) as f64 / 1000.0).max(0.001);
                last.text = format!("{} more like this in {secs:.0} s; the last: {}", w.suppressed, last.text);
                last.data = serde_json::json!({ "suppressed": w.suppressed, "last": last.data });
                last.ts_ms = now_ms;
                summaries.push(last);
            }
            false
        });
        for s in summaries {
            self.push(s);
        }
    }

    /// Up to `n` observations, the most salient first (equal salience: oldest first).
    pub fn take(&mut self, n: usize) -> Vec<Observation> {
        self.queue.sort_by(|a, b| b.salience.total_cmp(&a.salience).then(a.ts_ms.cmp(&b.ts_ms)));
        let n = n.min(self.queue.len());
        self.queue.drain(..n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(kind: &str, service: &str, ts: u64, salience: f32) -> Observation {
        Observation::new(Source::Log, kind, &format!("{kind} {service} {ts}"), ts).service(service).salience(salience)
    }

    #[test]
    fn a_flood_is_cut_to_a_few_and_one_summary_and_others_still_get_through() {
        let mut a = Attention::new(100, 3, 10_000);
        for ts in 0..1000 {
            a.offer(obs("error", "web", ts, 0.5));
        }
        assert_eq!(a.offer(obs("oom", "db", 1000, 0.9)), Offer::Accepted);
        assert_eq!(a.backlog(), 4);
        assert_eq!(a.suppressed, 997);
        a.close_windows(5_000);
        assert_eq!(a.backlog(), 4, "windows not over yet");
        a.close_windows(10_001);
        let got = a.take(10);
        assert_eq!(got[0].kind, "oom", "most salient first");
        let summary = got.iter().find(|o| o.text.contains("997 more like this")).expect("a summary");
        assert_eq!(summary.data["suppressed"], 997);
        assert_eq!(got.len(), 5);
        // After the window, the key passes again.
        assert_eq!(a.offer(obs("error", "web", 20_000, 0.5)), Offer::Accepted);
    }

    #[test]
    fn a_full_queue_drops_the_least_salient() {
        let mut a = Attention::new(2, 10, 1000);
        assert_eq!(a.offer(obs("a", "x", 1, 0.2)), Offer::Accepted);
        assert_eq!(a.offer(obs("b", "x", 2, 0.8)), Offer::Accepted);
        assert_eq!(a.offer(obs("c", "x", 3, 0.1)), Offer::Dropped);
        assert_eq!(a.offer(obs("d", "x", 4, 0.9)), Offer::DisplacedAnother);
        let kinds: Vec<String> = a.take(5).into_iter().map(|o| o.kind).collect();
        assert_eq!(kinds, ["d", "b"]);
        assert_eq!(a.dropped, 2);
    }
}
