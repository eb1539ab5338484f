//! The DHCP client as a pure state machine (RFC 2131 section 4.4): SELECTING (DISCOVER until
//! an OFFER), REQUESTING (REQUEST until an ACK), BOUND, RENEWING at T1 (unicast to the
//! server), REBINDING at T2 (broadcast), and back to SELECTING when the lease expires or a
//! server says NAK. It is fed packets and the time and answers with actions; it never touches
//! a socket or reads the clock, so its timing is tested with a fake clock.
//!
//! Retransmission follows RFC 2131 4.1: 4 s, 8 s, 16 s, ... capped at 64 s, each randomised by
//! ±1 s. After three unanswered DISCOVERs (about 28 s) the client says so once (the boot step
//! fails and the `network` target stays down) and goes on asking every 64 s, so a network
//! that appears later is still picked up; nothing grows while it waits.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::dhcp::{self, DhcpError, MessageType, Packet, FLAG_BROADCAST};

/// Unanswered DISCOVERs after which the boot step is reported failed.
pub const DISCOVERS_BEFORE_FAILURE: u32 = 3;
/// REQUESTs sent for one OFFER before starting over with a DISCOVER.
const REQUESTS_PER_OFFER: u32 = 4;
const FIRST_RETRANSMIT: Duration = Duration::from_secs(4);
const MAX_RETRANSMIT: Duration = Duration::from_secs(64);
/// RFC 2131 4.4.5: in RENEWING and REBINDING, wait half the time that is left, at least 60 s.
const MIN_RENEW_RETRANSMIT: Duration = Duration::from_secs(60);
/// Option 51's "infinity".
const INFINITE: u32 = u32::MAX;
const PARAMETERS: [u8; 8] = [
    dhcp::opt::SUBNET_MASK,
    dhcp::opt::ROUTER,
    dhcp::opt::DNS,
    dhcp::opt::HOSTNAME,
    dhcp::opt::LEASE_TIME,
    dhcp::opt::SERVER_ID,
    dhcp::opt::RENEWAL_T1,
    dhcp::opt::REBINDING_T2,
];

/// What a server leased to us.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Ipv4Addr,
    /// Seconds; None for an infinite lease.
    pub lease_s: Option<u32>,
    pub t1_s: u32,
    pub t2_s: u32,
}

impl Lease {
    /// The lease an ACK describes; `server` is the one we asked, for ACKs without option 54.
    fn from_ack(p: &Packet, server: Ipv4Addr) -> Result<Lease, String> {
        if p.yiaddr.is_unspecified() || p.yiaddr.is_broadcast() || p.yiaddr.is_multicast() {
            return Err(format!("ACK offers no usable address ({})", p.yiaddr));
        }
        let lease = p.lease_s.ok_or("ACK without a lease time (option 51)")?;
        let prefix = match p.subnet_mask {
            Some(m) => dhcp::prefix_of_mask(m).unwrap_or(24),
            None => classful_prefix(p.yiaddr),
        };
        let lease_s = (lease != INFINITE).then_some(lease.max(1));
        let (t1_s, t2_s) = match lease_s {
            None => (INFINITE, INFINITE),
            Some(l) => {
                // RFC 2131 4.4.5 defaults; a server's T1/T2 are taken when they are in order.
                let (d1, d2) = (l / 2, (l as u64 * 7 / 8) as u32);
                match (p.t1_s, p.t2_s) {
                    (Some(t1), Some(t2)) if t1 <= t2 && t2 <= l => (t1, t2),
                    (Some(t1), None) if t1 <= d2 => (t1, d2),
                    (None, Some(t2)) if d1 <= t2 && t2 <= l => (d1, t2),
                    _ => (d1, d2),
                }
            }
        };
        Ok(Lease {
            address: p.yiaddr,
            prefix,
            router: p.routers.iter().copied().find(|r| !r.is_unspecified()),
            dns: p.dns.clone(),
            server: p.server_id.unwrap_or(server),
            lease_s,
            t1_s,
            t2_s,
        })
    }

    /// Seconds as the console shows them: `86400 s` or `infinite`.
    pub fn duration_text(&self) -> String {
        self.lease_s.map_or("infinite".into(), |s| format!("{s} s"))
    }
}

/// The network mask of an address's old class, for servers that send no option 1.
fn classful_prefix(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// What the client wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this message to port 67 of `to` (255.255.255.255 or the server).
    Send { packet: Vec<u8>, to: Ipv4Addr },
    /// A new lease: configure the interface.
    Bound(Lease),
    /// The lease was extended, by its server (RENEWING) or by any (REBINDING); the address
    /// may be the same.
    Renewed { lease: Lease, rebinding: bool },
    /// The lease is gone (expired, or NAKed): remove the address.
    Lost(String),
    /// The first DISCOVERs went unanswered (said once).
    NoAnswer(String),
    /// Something worth a console line that changes no configuration.
    Note(String),
}

/// Why a received packet changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    Malformed(DhcpError),
    NotAReply,
    /// A reply to someone else's transaction, or to one we have given up.
    WrongXid { got: u32 },
    NotOurMac,
    /// A message that means nothing in the current state (an OFFER while bound...).
    Unexpected(MessageType),
    BadLease(String),
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Ignored::Malformed(e) => write!(f, "malformed: {e}"),
            Ignored::NotAReply => write!(f, "not a server reply"),
            Ignored::WrongXid { got } => write!(f, "transaction id {got:#010x} is not ours"),
            Ignored::NotOurMac => write!(f, "for another hardware address"),
            Ignored::Unexpected(k) => write!(f, "unexpected {k:?}"),
            Ignored::BadLease(why) => write!(f, "{why}"),
        }
    }
}

#[derive(Debug, Clone)]
enum State {
    Selecting { xid: u32, started: Instant, attempt: u32, next: Instant },
    Requesting { xid: u32, started: Instant, offered: Ipv4Addr, server: Ipv4Addr, attempt: u32, next: Instant },
    Bound { lease: Lease, at: Instant },
    Renewing { lease: Lease, at: Instant, xid: u32, next: Instant },
    Rebinding { lease: Lease, at: Instant, xid: u32, next: Instant },
}

pub struct Client {
    mac: [u8; 6],
    hostname: Option<String>,
    rng: u64,
    state: State,
    discovers_unanswered: u32,
    said_no_answer: bool,
    /// NAKs in a row: each restart after one waits longer, so a server that NAKs everything
    /// does not make us spin.
    naks: u32,
}

impl Client {
    /// A client that sends its first DISCOVER at `now`.
    pub fn new(mac: [u8; 6], hostname: Option<String>, seed: u64, now: Instant) -> Client {
        let mut c = Client {
            mac,
            hostname,
            rng: seed | 1,
            state: State::Selecting { xid: 0, started: now, attempt: 0, next: now },
            discovers_unanswered: 0,
            said_no_answer: false,
            naks: 0,
        };
        let xid = c.random() as u32;
        c.state = State::Selecting { xid, started: now, attempt: 0, next: now };
        c
    }

    /// Whether a socket is needed now (not while quietly bound between renewals).
    pub fn listening(&self) -> bool {
        !matches!(self.state, State::Bound { .. })
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Selecting { next, .. } | State::Requesting { next, .. } => Some(*next),
            State::Bound { lease, at } => lease.lease_s.map(|_| *at + secs(lease.t1_s)),
            State::Renewing { next, .. } | State::Rebinding { next, .. } => Some(*next),
        }
    }

    /// The state's name, for the console.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Selecting { .. } => "selecting",
            State::Requesting { .. } => "requesting",
            State::Bound { .. } => "bound",
            State::Renewing { .. } => "renewing",
            State::Rebinding { .. } => "rebinding",
        }
    }

    /// Acts on the time: (re)transmits, moves to RENEWING / REBINDING, or lets a lease expire.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match self.state.clone() {
            State::Selecting { xid, started, attempt, next } if now >= next => {
                if attempt > 0 {
                    self.discovers_unanswered += 1;
                }
                if self.discovers_unanswered >= DISCOVERS_BEFORE_FAILURE && !self.said_no_answer {
                    self.said_no_answer = true;
                    out.push(Action::NoAnswer(format!(
                        "no DHCP offer after {} DISCOVERs in {} s",
                        self.discovers_unanswered,
                        now.saturating_duration_since(started).as_secs()
                    )));
                }
                let mut p = self.message(MessageType::Discover, xid, started, now);
                p.flags = FLAG_BROADCAST;
                out.push(Action::Send { packet: p.encode(), to: Ipv4Addr::BROADCAST });
                let next = now + self.backoff(attempt);
                self.state = State::Selecting { xid, started, attempt: attempt + 1, next };
            }
            State::Requesting { xid, started, offered, server, attempt, next } if now >= next => {
                if attempt >= REQUESTS_PER_OFFER {
                    self.restart(now, now);
                    return self.on_timer(now);
                }
                out.push(self.request(xid, started, now, offered, server));
                let next = now + self.backoff(attempt);
                self.state = State::Requesting { xid, started, offered, server, attempt: attempt + 1, next };
            }
            State::Bound { lease, at } if lease.lease_s.is_some() && now >= at + secs(lease.t1_s) => {
                let xid = self.random() as u32;
                self.state = State::Renewing { lease, at, xid, next: now };
                return self.on_timer(now);
            }
            State::Renewing { lease, at, xid, next } if now >= next => {
                let t2 = at + secs(lease.t2_s);
                if now >= t2 {
                    self.state = State::Rebinding { lease, at, xid, next: now };
                    return self.on_timer(now);
                }
                // RENEWING: unicast to the server that leased it, from the leased address.
                let mut p = self.message(MessageType::Request, xid, at, now);
                p.ciaddr = lease.address;
                out.push(Action::Send { packet: p.encode(), to: lease.server });
                let next = renew_retransmit(now, t2);
                self.state = State::Renewing { lease, at, xid, next };
            }
            State::Rebinding { lease, at, xid, next } if now >= next => {
                let expiry = at + secs(lease.lease_s.unwrap_or(INFINITE));
                if now >= expiry {
                    out.push(Action::Lost(format!("lease of {} expired without a renewal", lease.address)));
                    self.restart(now, now);
                    out.extend(self.on_timer(now));
                    return out;
                }
                // REBINDING: any server may extend it, so broadcast.
                let mut p = self.message(MessageType::Request, xid, at, now);
                p.ciaddr = lease.address;
                out.push(Action::Send { packet: p.encode(), to: Ipv4Addr::BROADCAST });
                let next = renew_retransmit(now, expiry);
                self.state = State::Rebinding { lease, at, xid, next };
            }
            _ => {}
        }
        out
    }

    /// Acts on one received datagram (the UDP payload).
    pub fn on_packet(&mut self, bytes: &[u8], now: Instant) -> Result<Vec<Action>, Ignored> {
        let p = Packet::decode(bytes).map_err(Ignored::Malformed)?;
        if p.request {
            return Err(Ignored::NotAReply);
        }
        if p.chaddr != self.mac {
            return Err(Ignored::NotOurMac);
        }
        let xid = match &self.state {
            State::Selecting { xid, .. } | State::Requesting { xid, .. } | State::Renewing { xid, .. } | State::Rebinding { xid, .. } => *xid,
            State::Bound { .. } => return Err(Ignored::Unexpected(p.kind)),
        };
        if p.xid != xid {
            return Err(Ignored::WrongXid { got: p.xid });
        }
        let mut out = Vec::new();
        match (self.state.clone(), p.kind) {
            (State::Selecting { xid, started, .. }, MessageType::Offer) => {
                let server = p.server_id.ok_or_else(|| Ignored::BadLease("OFFER without a server identifier (option 54)".into()))?;
                if p.yiaddr.is_unspecified() {
                    return Err(Ignored::BadLease("OFFER of address 0.0.0.0".into()));
                }
                self.discovers_unanswered = 0;
                out.push(self.request(xid, started, now, p.yiaddr, server));
                let next = now + self.backoff(0);
                self.state = State::Requesting { xid, started, offered: p.yiaddr, server, attempt: 1, next };
            }
            (State::Requesting { server, .. }, MessageType::Ack) => {
                let lease = Lease::from_ack(&p, server).map_err(Ignored::BadLease)?;
                self.naks = 0;
                self.state = State::Bound { lease: lease.clone(), at: now };
                out.push(Action::Bound(lease));
            }
            (State::Renewing { lease: old, .. }, MessageType::Ack) => out.push(self.extended(&p, &old, false, now)?),
            (State::Rebinding { lease: old, .. }, MessageType::Ack) => out.push(self.extended(&p, &old, true, now)?),
            (State::Requesting { .. }, MessageType::Nak) => {
                let why = p.message.map(|m| format!(": {m}")).unwrap_or_default();
                let delay = self.nak_delay();
                self.restart(now, now + delay);
                // Nothing was configured yet, so nothing is lost.
                out.push(Action::Note(format!("server refused the address (NAK{why}); asking again in {} s", delay.as_secs())));
            }
            (State::Renewing { lease, .. } | State::Rebinding { lease, .. }, MessageType::Nak) => {
                let why = p.message.map(|m| format!(": {m}")).unwrap_or_default();
                out.push(Action::Lost(format!("server refused to extend the lease of {} (NAK{why})", lease.address)));
                let delay = self.nak_delay();
                self.restart(now, now + delay);
            }
            (_, kind) => return Err(Ignored::Unexpected(kind)),
        }
        Ok(out)
    }

    /// An ACK in RENEWING or REBINDING: bound again, the times counted from now.
    fn extended(&mut self, p: &Packet, old: &Lease, rebinding: bool, now: Instant) -> Result<Action, Ignored> {
        let lease = Lease::from_ack(p, old.server).map_err(Ignored::BadLease)?;
        self.naks = 0;
        self.state = State::Bound { lease: lease.clone(), at: now };
        Ok(Action::Renewed { lease, rebinding })
    }

    /// Back to SELECTING with a new transaction; the first DISCOVER goes out at `at`.
    fn restart(&mut self, now: Instant, at: Instant) {
        let xid = self.random() as u32;
        self.state = State::Selecting { xid, started: now, attempt: 0, next: at };
    }

    fn nak_delay(&mut self) -> Duration {
        self.naks = (self.naks + 1).min(7);
        Duration::from_secs(1 << (self.naks - 1)).min(MAX_RETRANSMIT)
    }

    fn request(&self, xid: u32, started: Instant, now: Instant, offered: Ipv4Addr, server: Ipv4Addr) -> Action {
        let mut p = self.message(MessageType::Request, xid, started, now);
        p.flags = FLAG_BROADCAST;
        p.requested_ip = Some(offered);
        p.server_id = Some(server);
        Action::Send { packet: p.encode(), to: Ipv4Addr::BROADCAST }
    }

    fn message(&self, kind: MessageType, xid: u32, started: Instant, now: Instant) -> Packet {
        let mut p = Packet::client(kind, xid, self.mac);
        p.secs = now.saturating_duration_since(started).as_secs().min(u16::MAX as u64) as u16;
        p.hostname = self.hostname.clone();
        p.parameters = PARAMETERS.to_vec();
        let mut id = vec![1u8];
        id.extend_from_slice(&self.mac);
        p.client_id = Some(id);
        p
    }

    /// RFC 2131 4.1: 4 s doubling to 64 s, randomised by ±1 s.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let base = FIRST_RETRANSMIT.saturating_mul(1 << attempt.min(4)).min(MAX_RETRANSMIT);
        let jitter_ms = self.random() % 2001;
        base + Duration::from_millis(jitter_ms) - Duration::from_millis(1000)
    }

    /// xorshift64*: enough to make transaction ids and jitter unpredictable between clients.
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(s as u64)
}

/// Half the time left until `limit`, at least 60 s, never past `limit`.
fn renew_retransmit(now: Instant, limit: Instant) -> Instant {
    let half = limit.saturating_duration_since(now) / 2;
    (now + half.max(MIN_RENEW_RETRANSMIT)).min(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

    fn sent(actions: &[Action]) -> Vec<(Packet, Ipv4Addr)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { packet, to } => Some((Packet::decode(packet).unwrap(), *to)),
                _ => None,
            })
            .collect()
    }

    fn reply(kind: MessageType, xid: u32, f: impl FnOnce(&mut Packet)) -> Vec<u8> {
        let mut p = Packet::client(kind, xid, MAC);
        p.request = false;
        p.yiaddr = ME;
        p.server_id = Some(SERVER);
        p.subnet_mask = Some(Ipv4Addr::new(255, 255, 255, 0));
        p.routers = vec![SERVER];
        p.dns = vec![Ipv4Addr::new(10, 0, 2, 3)];
        p.lease_s = Some(86400);
        f(&mut p);
        p.encode()
    }

    /// A client bound at `t0`, and the xid it used.
    fn bound(t0: Instant, lease: u32, t1: Option<u32>, t2: Option<u32>) -> Client {
        let mut c = Client::new(MAC, Some("ghost".into()), 42, t0);
        let d = sent(&c.on_timer(t0));
        let xid = d[0].0.xid;
        c.on_packet(&reply(MessageType::Offer, xid, |_| {}), t0).unwrap();
        let a = c.on_packet(&reply(MessageType::Ack, xid, |p| {
            p.lease_s = Some(lease);
            p.t1_s = t1;
            p.t2_s = t2;
        }), t0).unwrap();
        assert!(matches!(a[0], Action::Bound(_)));
        c
    }

    #[test]
    fn discover_offer_request_ack_binds_a_lease() {
        let t0 = Instant::now();
        let mut c = Client::new(MAC, Some("ghost".into()), 7, t0);
        let d = sent(&c.on_timer(t0));
        assert_eq!(d.len(), 1);
        let (disc, to) = &d[0];
        assert_eq!((disc.kind, *to, disc.flags), (MessageType::Discover, Ipv4Addr::BROADCAST, FLAG_BROADCAST));
        assert_eq!(disc.hostname.as_deref(), Some("ghost"));
        assert!(disc.parameters.contains(&58) && disc.parameters.contains(&59));

        let r = sent(&c.on_packet(&reply(MessageType::Offer, disc.xid, |_| {}), t0).unwrap());
        let (req, to) = &r[0];
        assert_eq!((req.kind, *to, req.xid), (MessageType::Request, Ipv4Addr::BROADCAST, disc.xid));
        assert_eq!((req.requested_ip, req.server_id), (Some(ME), Some(SERVER)));
        assert!(c.listening());

        let a = c.on_packet(&reply(MessageType::Ack, disc.xid, |_| {}), t0).unwrap();
        let want = Lease { address: ME, prefix: 24, router: Some(SERVER), dns: vec![Ipv4Addr::new(10, 0, 2, 3)], server: SERVER, lease_s: Some(86400), t1_s: 43200, t2_s: 75600 };
        assert_eq!(a, vec![Action::Bound(want)]);
        assert!(!c.listening(), "no socket is needed while bound");
        assert_eq!(c.next_deadline(), Some(t0 + Duration::from_secs(43200)));
    }

    #[test]
    fn wrong_xid_other_mac_requests_and_garbage_are_ignored() {
        let t0 = Instant::now();
        let mut c = Client::new(MAC, None, 7, t0);
        let xid = sent(&c.on_timer(t0))[0].0.xid;
        let other = xid.wrapping_add(1);
        assert_eq!(c.on_packet(&reply(MessageType::Offer, other, |_| {}), t0), Err(Ignored::WrongXid { got: other }));
        assert_eq!(c.on_packet(&reply(MessageType::Offer, xid, |p| p.chaddr = [1; 6]), t0), Err(Ignored::NotOurMac));
        assert_eq!(c.on_packet(&reply(MessageType::Offer, xid, |p| p.request = true), t0), Err(Ignored::NotAReply));
        assert!(matches!(c.on_packet(&[1, 2, 3], t0), Err(Ignored::Malformed(DhcpError::Truncated { len: 3 }))));
        assert_eq!(c.on_packet(&reply(MessageType::Ack, xid, |_| {}), t0), Err(Ignored::Unexpected(MessageType::Ack)));
        let no_server = c.on_packet(&reply(MessageType::Offer, xid, |p| p.server_id = None), t0).unwrap_err();
        assert!(no_server.to_string().contains("option 54"), "{no_server}");
        assert_eq!(c.state_name(), "selecting", "nothing above may move the client on");
        // A good offer still works after all that.
        assert!(c.on_packet(&reply(MessageType::Offer, xid, |_| {}), t0).is_ok());
        assert_eq!(c.state_name(), "requesting");
    }

    #[test]
    fn discovers_back_off_and_no_answer_is_said_once() {
        let t0 = Instant::now();
        let mut c = Client::new(MAC, None, 99, t0);
        let mut now = t0;
        let mut gaps = Vec::new();
        let mut said = Vec::new();
        let mut last = None;
        for _ in 0..8 {
            let acts = c.on_timer(now);
            assert_eq!(sent(&acts).len(), 1, "one DISCOVER each time");
            said.extend(acts.iter().filter_map(|a| match a {
                Action::NoAnswer(w) => Some((now - t0, w.clone())),
                _ => None,
            }));
            if let Some(l) = last {
                gaps.push(now - l);
            }
            last = Some(now);
            // Early timer calls do nothing.
            assert!(c.on_timer(now + Duration::from_millis(1)).is_empty());
            now = c.next_deadline().unwrap();
        }
        for (gap, base) in gaps.iter().zip([4u64, 8, 16, 32, 64, 64, 64]) {
            let (lo, hi) = (Duration::from_secs(base - 1), Duration::from_secs(base + 1));
            assert!(*gap >= lo && *gap <= hi, "gap {gap:?} not within {base} ± 1 s ({gaps:?})");
        }
        assert_eq!(said.len(), 1, "{said:?}");
        let (when, text) = &said[0];
        assert!(*when >= Duration::from_secs(25) && *when <= Duration::from_secs(31), "said at {when:?}");
        assert!(text.starts_with("no DHCP offer after 3 DISCOVERs in "), "{text}");
    }

    #[test]
    fn renews_at_t1_unicast_rebinds_at_t2_broadcast_and_expires() {
        let t0 = Instant::now();
        let mut c = bound(t0, 1000, None, None);
        assert!(c.on_timer(t0 + Duration::from_secs(499)).is_empty());
        let t1 = t0 + Duration::from_secs(500);
        let r = sent(&c.on_timer(t1));
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].0.kind, r[0].1, r[0].0.ciaddr, r[0].0.flags), (MessageType::Request, SERVER, ME, 0));
        assert_eq!((r[0].0.server_id, r[0].0.requested_ip), (None, None), "RENEWING names neither (RFC 2131 4.3.2)");
        assert_eq!(c.state_name(), "renewing");
        // Half of the 375 s left until T2 (875 s).
        assert_eq!(c.next_deadline(), Some(t1 + Duration::from_millis(187_500)));

        let t2 = t0 + Duration::from_secs(875);
        let mut now = c.next_deadline().unwrap();
        while now < t2 {
            assert_eq!(sent(&c.on_timer(now))[0].1, SERVER);
            now = c.next_deadline().unwrap();
        }
        let b = sent(&c.on_timer(t2));
        assert_eq!((b[0].1, b[0].0.ciaddr), (Ipv4Addr::BROADCAST, ME));
        assert_eq!(c.state_name(), "rebinding");
        assert_eq!(c.next_deadline(), Some(t2 + Duration::from_millis(62_500)), "half of 125 s left, at least 60 s");

        let mut now = c.next_deadline().unwrap();
        let expiry = t0 + Duration::from_secs(1000);
        while now < expiry {
            c.on_timer(now);
            now = c.next_deadline().unwrap();
        }
        assert_eq!(now, expiry);
        let a = c.on_timer(expiry);
        assert!(matches!(&a[0], Action::Lost(w) if w.contains("10.0.2.15 expired")), "{a:?}");
        assert_eq!(sent(&a)[0].0.kind, MessageType::Discover, "expiry starts over at once");
        assert_eq!(c.state_name(), "selecting");
    }

    #[test]
    fn an_ack_while_renewing_extends_the_lease_from_then() {
        let t0 = Instant::now();
        let mut c = bound(t0, 120, Some(3), Some(6));
        assert_eq!(c.next_deadline(), Some(t0 + Duration::from_secs(3)), "the server's T1 is used");
        let t1 = t0 + Duration::from_secs(3);
        let r = sent(&c.on_timer(t1));
        let xid = r[0].0.xid;
        assert_eq!(c.on_packet(&reply(MessageType::Ack, xid ^ 1, |_| {}), t1), Err(Ignored::WrongXid { got: xid ^ 1 }));
        let later = t1 + Duration::from_millis(20);
        let a = c.on_packet(&reply(MessageType::Ack, xid, |p| {
            p.lease_s = Some(120);
            p.t1_s = Some(3);
            p.t2_s = Some(6);
        }), later).unwrap();
        assert!(matches!(&a[0], Action::Renewed { lease, rebinding: false } if lease.address == ME && lease.lease_s == Some(120)));
        assert_eq!(c.next_deadline(), Some(later + Duration::from_secs(3)));
    }

    #[test]
    fn a_nak_while_renewing_drops_the_address_and_starts_over() {
        let t0 = Instant::now();
        let mut c = bound(t0, 100, None, None);
        let t1 = t0 + Duration::from_secs(50);
        let xid = sent(&c.on_timer(t1))[0].0.xid;
        let a = c.on_packet(&reply(MessageType::Nak, xid, |p| p.message = Some("moved".into())), t1).unwrap();
        assert!(matches!(&a[0], Action::Lost(w) if w.contains("NAK: moved")), "{a:?}");
        assert_eq!(c.state_name(), "selecting");
        assert_eq!(c.next_deadline(), Some(t1 + Duration::from_secs(1)));
    }

    #[test]
    fn requests_without_ack_fall_back_to_discover() {
        let t0 = Instant::now();
        let mut c = Client::new(MAC, None, 3, t0);
        let xid = sent(&c.on_timer(t0))[0].0.xid;
        c.on_packet(&reply(MessageType::Offer, xid, |_| {}), t0).unwrap();
        let mut kinds = Vec::new();
        for _ in 0..4 {
            let now = c.next_deadline().unwrap();
            kinds.extend(sent(&c.on_timer(now)).into_iter().map(|(p, _)| p.kind));
        }
        assert_eq!(kinds, [MessageType::Request, MessageType::Request, MessageType::Request, MessageType::Discover]);
    }

    #[test]
    fn lease_times_are_sanitised() {
        let p = |lease, t1, t2| {
            let mut p = Packet::client(MessageType::Ack, 1, MAC);
            p.yiaddr = ME;
            p.lease_s = lease;
            p.t1_s = t1;
            p.t2_s = t2;
            Lease::from_ack(&p, SERVER)
        };
        let l = p(Some(100), Some(90), Some(80)).unwrap();
        assert_eq!((l.t1_s, l.t2_s), (50, 87), "T1 after T2: the defaults");
        let l = p(Some(u32::MAX), None, None).unwrap();
        assert_eq!((l.lease_s, l.duration_text()), (None, "infinite".to_string()));
        assert_eq!(l.prefix, 8, "10/8 without option 1");
        assert!(p(None, None, None).unwrap_err().contains("option 51"));
        assert_eq!(l.server, SERVER);
    }

    #[test]
    fn an_infinite_lease_sets_no_timer() {
        let t0 = Instant::now();
        let c = bound(t0, u32::MAX, None, None);
        assert_eq!(c.next_deadline(), None);
    }
}
