//! The generation queue: one model, many clients, served in turn.
//!
//! Requests are grouped by client (the request's `user` field, else the `X-Ghost-Client`
//! header, else one shared anonymous client). Clients take turns: the client served last goes
//! behind every other client that is waiting, so a client with ten requests queued cannot hold
//! back one that sent a single request after them — the newcomer is next. Within a client,
//! requests keep their order. The queue is bounded; a full queue refuses at once (the server
//! answers 503 with the queue's length) instead of letting latency grow without limit.

use std::collections::VecDeque;

/// A bounded round-robin queue of `T`, keyed by client.
#[derive(Debug)]
pub struct FairQueue<T> {
    /// Clients with work waiting, in turn order.
    clients: VecDeque<(String, VecDeque<T>)>,
    /// The client whose request was taken last.
    last_served: Option<String>,
    len: usize,
    capacity: usize,
}

impl<T> FairQueue<T> {
    pub fn new(capacity: usize) -> Self {
        FairQueue { clients: VecDeque::new(), last_served: None, len: 0, capacity: capacity.max(1) }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues `item` for `client`; gives it back when the queue is full.
    pub fn push(&mut self, client: &str, item: T) -> Result<(), T> {
        if self.len >= self.capacity {
            return Err(item);
        }
        match self.clients.iter_mut().find(|(c, _)| c == client) {
            Some((_, q)) => q.push_back(item),
            None => self.clients.push_back((client.to_string(), VecDeque::from([item]))),
        }
        self.len += 1;
        Ok(())
    }

    /// The next request: the first waiting client's oldest, unless that client was served last
    /// and another one is waiting.
    pub fn pop(&mut self) -> Option<(String, T)> {
        if self.clients.len() > 1 && self.clients.front().map(|(c, _)| Some(c)) == Some(self.last_served.as_ref()) {
            self.clients.rotate_left(1);
        }
        let (client, mut items) = self.clients.pop_front()?;
        let item = items.pop_front().expect("a client in the queue has work");
        self.len -= 1;
        if !items.is_empty() {
            self.clients.push_back((client.clone(), items));
        }
        self.last_served = Some(client.clone());
        Some((client, item))
    }

    /// Drops every queued item for which `keep` is false (requests whose client went away).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for (_, q) in self.clients.iter_mut() {
            q.retain(&mut keep);
        }
        self.clients.retain(|(_, q)| !q.is_empty());
        self.len = self.clients.iter().map(|(_, q)| q.len()).sum();
    }

    /// How many are waiting per client, in turn order.
    pub fn waiting(&self) -> Vec<(String, usize)> {
        self.clients.iter().map(|(c, q)| (c.clone(), q.len())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &mut FairQueue<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| q.pop().map(|(_, i)| i)).collect()
    }

    #[test]
    fn serve_queue_a_newcomer_goes_before_a_busy_clients_second_request() {
        let mut q = FairQueue::new(16);
        q.push("a", "a0").unwrap();
        assert_eq!(q.pop().unwrap().1, "a0"); // a0 is running
        q.push("a", "a1").unwrap();
        q.push("a", "a2").unwrap();
        q.push("b", "b1").unwrap();
        assert_eq!(drain(&mut q), ["b1", "a1", "a2"]);
    }

    #[test]
    fn serve_queue_clients_take_turns_and_keep_their_own_order() {
        let mut q = FairQueue::new(16);
        for i in ["a1", "a2", "a3"] {
            q.push("a", i).unwrap();
        }
        for i in ["b1", "b2"] {
            q.push("b", i).unwrap();
        }
        q.push("c", "c1").unwrap();
        assert_eq!(q.len(), 6);
        assert_eq!(drain(&mut q), ["a1", "b1", "c1", "a2", "b2", "a3"]);
        assert!(q.is_empty());
    }

    #[test]
    fn serve_queue_is_bounded_and_retain_drops_abandoned_work() {
        let mut q = FairQueue::new(2);
        q.push("a", "a1").unwrap();
        q.push("b", "b1").unwrap();
        assert_eq!(q.push("a", "a2"), Err("a2"));
        q.retain(|i| *i != "a1");
        assert_eq!(q.len(), 1);
        assert_eq!(q.waiting(), [("b".to_string(), 1)]);
        q.push("a", "a2").unwrap();
        assert_eq!(drain(&mut q), ["b1", "a2"]);
    }
}
