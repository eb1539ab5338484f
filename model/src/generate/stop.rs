//! When generation ends: end-of-sequence and stop tokens (checked on ids, before any text is
//! made), and stop strings (checked on the text). Text that might be the start of a stop string
//! is held back from the stream until it is known not to be, so a streaming client never sees
//! part of a stop string that the final text leaves out.

use std::collections::BTreeSet;

/// Stop tokens and stop strings of one request, and the text not yet released to the stream.
pub struct StopCondition {
    stop_ids: BTreeSet<u32>,
    stop_strings: Vec<String>,
    /// Decoded text not yet released (it may begin a stop string).
    pending: String,
}

/// What [`StopCondition::push_text`] decided.
pub struct Released {
    /// Text safe to stream now.
    pub text: String,
    /// A stop string was found; `text` ends right before it and generation must end.
    pub stopped: bool,
}

impl StopCondition {
    pub fn new(stop_ids: impl IntoIterator<Item = u32>, stop_strings: &[String]) -> Self {
        StopCondition {
            stop_ids: stop_ids.into_iter().collect(),
            stop_strings: stop_strings
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
            pending: String::new(),
        }
    }

    pub fn is_stop_token(&self, id: u32) -> bool {
        self.stop_ids.contains(&id)
    }

    /// Adds newly decoded text; releases what cannot be part of a stop string.
    pub fn push_text(&mut self, piece: &str) -> Released {
        self.pending.push_str(piece);
        // The earliest stop string in the pending text wins.
        let found = self
            .stop_strings
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = found {
            let text = self.pending[..at].to_string();
            self.pending.clear();
            return Released {
                text,
                stopped: true,
            };
        }
        let keep = self.longest_stop_prefix_suffix();
        let split = self.pending.len() - keep;
        let text = self.pending[..split].to_string();
        self.pending.drain(..split);
        Released {
            text,
            stopped: false,
        }
    }

    /// Releases whatever is held back (generation ended for another reason).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Length in bytes of the longest suffix of `pending` that is a proper prefix of a stop string.
    fn longest_stop_prefix_suffix(&self) -> usize {
        let mut best = 0;
        for (start, _) in self.pending.char_indices() {
            let suffix = &self.pending[start..];
            if self
                .stop_strings
                .iter()
                .any(|s| s.len() > suffix.len() && s.starts_with(suffix))
            {
                best = best.max(suffix.len());
                break; // char_indices runs from the longest suffix down
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_stop_string_is_cut_and_its_prefix_is_held_back() {
        let mut stop = StopCondition::new([7], &["END".to_string()]);
        assert!(stop.is_stop_token(7) && !stop.is_stop_token(8));
        let r = stop.push_text("hello E");
        assert_eq!((r.text.as_str(), r.stopped), ("hello ", false));
        let r = stop.push_text("N");
        assert_eq!((r.text.as_str(), r.stopped), ("", false));
        let r = stop.push_text("Dless");
        assert_eq!((r.text.as_str(), r.stopped), ("", true));

        let mut stop = StopCondition::new([], &["END".to_string()]);
        assert_eq!(stop.push_text("E").text, "");
        let r = stop.push_text("x");
        assert_eq!((r.text.as_str(), r.stopped), ("Ex", false));
        assert_eq!(stop.push_text("EN").text, "");
        assert_eq!(stop.finish(), "EN");
    }
}
