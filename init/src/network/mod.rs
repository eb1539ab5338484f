//! The network step of boot: the first Ethernet interface (or ghost.toml's `interface`) gets
//! an address by DHCP or statically (`ghost.ip=` on the kernel command line wins over
//! ghost.toml's `[network]`), a default route and /etc/resolv.conf; the `network` target that
//! services `requires` goes up only once the interface has its address.
//!
//! Design: the DHCP client is a non-blocking state machine inside PID 1's event loop — its
//! UDP socket is one more descriptor in the epoll set (`Token::Dhcp`) and its retransmission
//! and lease timers one more deadline folded into the loop's single timerfd — rather than a
//! re-executed helper process. The loop already serves non-blocking sockets (tcp/http probes)
//! this way; a helper would need its own supervision, restart and readiness plumbing in
//! PID 1, and the target would still depend on a message from it. What makes it safe here:
//! the packet parser and the state machine are pure and unit-tested on malformed input, every
//! buffer is bounded (one 1.5 KiB datagram at a time, at most 16 per wakeup, three name
//! servers), nothing waits (rtnetlink answers inside sendmsg), and each event runs under the
//! loop's catch_unwind.
//!
//! In hosted mode the host's network is used and `network` is up at once, unless `--cmdline`
//! names `ghost.ip=`: then the step runs for real (in a network namespace, as the tests do).

pub mod client;
mod dhcp;
mod iface;
mod netlink;
mod resolv;
mod settings;
mod sockets;

use std::net::Ipv4Addr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::init::Init;
use crate::reactor::Token;
use crate::say;
use client::{Action, Client, Lease};
use iface::Interface;
use netlink::{IfAddr, RouteProtocol};
use settings::Mode;
use sockets::{DhcpSocket, RouteSocket};

const SYS_CLASS_NET: &str = "/sys/class/net";
/// The built-in target this step raises.
const TARGET: &str = "network";
/// How long the first DISCOVER waits for the link to report carrier: a packet sent before the
/// kernel activates the link's queue is dropped, and the next try would come 4 s later.
const LINK_WAIT: Duration = Duration::from_secs(3);
const LINK_POLL: Duration = Duration::from_millis(50);
/// Datagrams read per wakeup, so a flood of DHCP traffic cannot keep the loop here.
const MAX_DATAGRAMS_PER_WAKEUP: usize = 16;

/// DHCP on one interface, for as long as the system runs.
pub struct Dhcp {
    iface: Interface,
    client: Client,
    socket: Option<DhcpSocket>,
    /// What is configured on the interface now.
    configured: Option<Lease>,
    /// Until carrier (or the give-up time), the first DISCOVER waits: (give up, next poll).
    link_wait: Option<(Instant, Instant)>,
    started: Instant,
    /// Whether `network ok` / `network failed` was said (once per boot).
    reported: bool,
}

/// How the step ended synchronously.
enum Begun {
    /// Hosted without `ghost.ip=`: the host's network is up already; nothing is said.
    Host,
    /// Configured (static, off): the line to say before `network ok`.
    Up(String),
    /// DHCP is under way; the loop finishes the step.
    Pending(Box<Dhcp>),
}

/// Addresses, route and name servers to put on an interface.
struct Settled<'a> {
    addr: IfAddr,
    gateway: Option<Ipv4Addr>,
    dns: &'a [Ipv4Addr],
    proto: RouteProtocol,
}

impl Init {
    /// The boot step `network`: static and off finish here; DHCP finishes in the event loop.
    pub fn start_network(&mut self) {
        let t = Instant::now();
        let forced = self.cmdline.debug_panic.as_deref() == Some(TARGET);
        let r = catch_unwind(AssertUnwindSafe(|| {
            if forced {
                panic!("ghost.debug_panic=network on the kernel command line");
            }
            self.begin_network(t)
        }));
        match r {
            Ok(Ok(Begun::Host)) => self.network_target(true),
            Ok(Ok(Begun::Up(line))) => {
                say!("{line}");
                say!("network ok in {} ms", t.elapsed().as_millis());
                self.network_target(true);
            }
            Ok(Ok(Begun::Pending(d))) => {
                self.network = Some(*d);
                self.network_tick();
            }
            Ok(Err(why)) => say!("network failed: {why}; the network target stays down"),
            Err(p) => say!("network failed: panicked: {}; the network target stays down", crate::boot::panic_text(&*p)),
        }
    }

    fn begin_network(&mut self, t: Instant) -> Result<Begun, String> {
        if self.hosted && self.cmdline.ip.is_none() {
            // The host's network is the network: nothing to wait for.
            return Ok(Begun::Host);
        }
        let origin = self.paths.etc("ghost.toml").display().to_string();
        let s = settings::resolve(self.cmdline.ip.as_deref(), &self.config.network, &origin)?;
        let sys = Path::new(SYS_CLASS_NET);
        match s.mode {
            Mode::Off => Ok(Begun::Up(format!("network: off ({}); only loopback", s.source))),
            Mode::Static(st) => {
                let i = iface::choose(sys, s.interface.as_deref())?;
                let mut rt = route_socket()?;
                rt.request(|seq| netlink::link_up(seq, i.ifindex)).map_err(|e| format!("{}: link up: {e}", i.name))?;
                let addr = IfAddr { ifindex: i.ifindex, address: st.address, prefix: st.prefix };
                let settled = Settled { addr, gateway: st.gateway, dns: &st.dns, proto: RouteProtocol::Static };
                self.settle(&i.name, &settled, &format!("static, {}", s.source))?;
                Ok(Begun::Up(describe(&i.name, &settled, &format!("static, {}", s.source))))
            }
            Mode::Dhcp => {
                let i = iface::choose(sys, s.interface.as_deref())?;
                let mut rt = route_socket()?;
                rt.request(|seq| netlink::link_up(seq, i.ifindex)).map_err(|e| format!("{}: link up: {e}", i.name))?;
                if let Some(w) = reverse_path_filter_warning(Path::new("/proc/sys/net/ipv4/conf"), &i.name) {
                    say!("network: {}: {w}", i.name);
                }
                let socket = DhcpSocket::open(&i.name).map_err(|e| format!("{}: DHCP socket on port 68: {e}", i.name))?;
                self.reactor.add(socket.raw(), Token::Dhcp, false).map_err(|e| format!("{}: watching the DHCP socket: {e}", i.name))?;
                let hostname = Some(self.config.hostname.clone()).filter(|h| !h.is_empty());
                let client = Client::new(i.mac, hostname, seed(&i.mac), t);
                // Carrier already on when the link was opened (virtio, veth): the kernel
                // activated its queue inside the open, so the first DISCOVER can go at once.
                // Otherwise wait for operstate `up`, which linkwatch sets up to 1 s later.
                let link_wait = (!iface::has_carrier(sys, &i.name)).then_some((t + LINK_WAIT, t));
                Ok(Begun::Pending(Box::new(Dhcp {
                    iface: i,
                    client,
                    socket: Some(socket),
                    configured: None,
                    link_wait,
                    started: t,
                    reported: false,
                })))
            }
        }
    }

    /// The lease DHCP put on the interface (a re-execution hands it on).
    pub fn dhcp_lease(&self) -> Option<Lease> {
        self.network.as_ref()?.configured.clone()
    }

    /// After a re-execution: DHCP again on the interface, which keeps `lease` (its address,
    /// route and name servers stay as they are) until the server answers; the same lease
    /// back changes nothing.
    pub fn resume_dhcp(&mut self, lease: Lease) {
        match self.begin_network(Instant::now()) {
            Ok(Begun::Pending(mut d)) => {
                d.configured = Some(lease);
                d.reported = true;
                self.network = Some(*d);
                self.network_tick();
            }
            Ok(_) => say!("network: the configuration no longer asks for DHCP; the lease of {} stays until reboot", lease.address),
            Err(why) => say!("network: DHCP again after the re-exec: {why}; the lease of {} stays until it ends", lease.address),
        }
    }

    /// When the network step next needs the loop to wake it.
    pub fn network_deadline(&self) -> Option<Instant> {
        let d = self.network.as_ref()?;
        match d.link_wait {
            Some((_, poll)) => Some(poll),
            None => d.client.next_deadline(),
        }
    }

    /// The timer fired (for us or for someone else: early calls do nothing).
    pub fn network_tick(&mut self) {
        let now = Instant::now();
        let Some(d) = &mut self.network else { return };
        if let Some((give_up, poll)) = d.link_wait {
            if now < poll {
                return;
            }
            if !iface::link_ready(Path::new(SYS_CLASS_NET), &d.iface.name) && now < give_up {
                d.link_wait = Some((give_up, now + LINK_POLL));
                return;
            }
            d.link_wait = None;
        }
        let actions = d.client.on_timer(now);
        self.network_act(actions);
    }

    /// The DHCP socket is readable.
    pub fn network_readable(&mut self) {
        let mut buf = [0u8; 1536];
        for _ in 0..MAX_DATAGRAMS_PER_WAKEUP {
            let Some(d) = &mut self.network else { return };
            let Some(sock) = &d.socket else { return };
            let Some(packet) = sock.recv(&mut buf) else { return };
            match d.client.on_packet(packet, Instant::now()) {
                Ok(actions) => self.network_act(actions),
                Err(why) => {
                    if self.cmdline.debug {
                        say!("network: {}: DHCP message ignored while {}: {why}", d.iface.name, d.client.state_name());
                    }
                }
            }
        }
    }

    fn network_act(&mut self, actions: Vec<Action>) {
        // Before sending: a client that just left BOUND (T1) needs its socket back first.
        self.sync_dhcp_socket();
        for a in actions {
            let Some(d) = &mut self.network else { return };
            let name = d.iface.name.clone();
            match a {
                Action::Send { packet, to } => {
                    if let Some(Err(e)) = d.socket.as_ref().map(|s| s.send(&packet, to)) {
                        if self.cmdline.debug {
                            say!("network: {name}: sending to {to}: {e}");
                        }
                    }
                }
                Action::Bound(lease) => self.dhcp_bound(lease, None),
                Action::Renewed { lease, rebinding } => self.dhcp_bound(lease, Some(if rebinding { "rebound (broadcast)" } else { "renewed" })),
                Action::Lost(why) => {
                    self.dhcp_unsettle();
                    say!("network: {name}: {why}; address removed, the network target is down until a new lease");
                    self.network_target(false);
                }
                Action::NoAnswer(why) => {
                    let first = !std::mem::replace(&mut d.reported, true);
                    if first {
                        say!("network failed: {name}: {why}; the network target stays down (still asking every 64 s)");
                    }
                }
                Action::Note(text) => say!("network: {name}: {text}"),
            }
        }
        self.sync_dhcp_socket();
    }

    /// A lease arrived (new, or an extension of the one we hold, `renewal` saying how):
    /// configure what changed.
    fn dhcp_bound(&mut self, lease: Lease, renewal: Option<&str>) {
        let Some(d) = &self.network else { return };
        let name = d.iface.name.clone();
        let ifindex = d.iface.ifindex;
        let same = d.configured.as_ref().is_some_and(|c| (c.address, c.prefix, c.router) == (lease.address, lease.prefix, lease.router));
        let dns_same = d.configured.as_ref().is_some_and(|c| c.dns == lease.dns);
        let how = format!("dhcp, lease {}", lease.duration_text());
        let settled = Settled { addr: IfAddr { ifindex, address: lease.address, prefix: lease.prefix }, gateway: lease.router, dns: &lease.dns, proto: RouteProtocol::Dhcp };
        // The lease already on the interface (a renewal, or the first lease after a re-exec).
        if let (true, true) = (same, dns_same) {
            let how = renewal.unwrap_or("taken up again");
            say!("network: {name}: lease of {} {how} ({})", lease.address, lease.duration_text());
            if let Some(d) = &mut self.network {
                d.configured = Some(lease);
            }
            return;
        }
        if !same {
            self.dhcp_unsettle();
        }
        let result = self.settle(&name, &settled, &format!("dhcp on {name}"));
        let line = describe(&name, &settled, &how);
        let Some(d) = &mut self.network else { return };
        match result {
            Ok(()) => {
                say!("{line}");
                d.configured = Some(lease);
                if !std::mem::replace(&mut d.reported, true) {
                    say!("network ok in {} ms", d.started.elapsed().as_millis());
                }
                self.network_target(true);
            }
            Err(why) => {
                if !std::mem::replace(&mut d.reported, true) {
                    say!("network failed: {why}; the network target stays down");
                } else {
                    say!("network: {why}");
                }
            }
        }
    }

    /// Removes what the current lease put on the interface.
    fn dhcp_unsettle(&mut self) {
        let Some(d) = &mut self.network else { return };
        let Some(old) = d.configured.take() else { return };
        let addr = IfAddr { ifindex: d.iface.ifindex, address: old.address, prefix: old.prefix };
        let name = d.iface.name.clone();
        let Ok(mut rt) = route_socket() else { return };
        if let Some(gw) = old.router {
            // Deleting the address takes the route with it on most kernels; ESRCH is fine.
            let _ = rt.request(|seq| netlink::del_default_route(seq, addr.ifindex, gw, RouteProtocol::Dhcp));
        }
        if let Err(e) = rt.request(|seq| netlink::del_address(seq, &addr)) {
            say!("network: {name}: removing {}/{}: {e}", addr.address, addr.prefix);
        }
    }

    /// Keeps the DHCP socket open exactly while the client needs one.
    fn sync_dhcp_socket(&mut self) {
        let Some(d) = &mut self.network else { return };
        match (d.client.listening(), &d.socket) {
            (false, Some(s)) => {
                self.reactor.remove(s.raw());
                d.socket = None;
            }
            (true, None) => match DhcpSocket::open(&d.iface.name) {
                Ok(s) => {
                    if let Err(e) = self.reactor.add(s.raw(), Token::Dhcp, false) {
                        say!("network: {}: watching the DHCP socket: {e}", d.iface.name);
                    }
                    d.socket = Some(s);
                }
                Err(e) => say!("network: {}: DHCP socket on port 68: {e} (the next timer tries again)", d.iface.name),
            },
            _ => {}
        }
    }

    /// Address, default route and resolv.conf onto the interface.
    fn settle(&self, name: &str, s: &Settled, origin: &str) -> Result<(), String> {
        let mut rt = route_socket()?;
        let a = s.addr;
        rt.request(|seq| netlink::add_address(seq, &a)).map_err(|e| format!("{name}: address {}/{}: {e}", a.address, a.prefix))?;
        if let Some(gw) = s.gateway {
            rt.request(|seq| netlink::replace_default_route(seq, a.ifindex, gw, !a.contains(gw), s.proto))
                .map_err(|e| format!("{name}: default route via {gw}: {e}"))?;
        }
        if !s.dns.is_empty() {
            resolv::write_atomically(&self.paths.at("etc/resolv.conf"), &resolv::content(s.dns, origin))?;
        }
        Ok(())
    }

    /// Raises or lowers the `network` target; raising it starts the services that wait for it.
    fn network_target(&mut self, up: bool) {
        let has = self.supervisor.targets_up.iter().any(|t| t == TARGET);
        if up && !has {
            self.supervisor.targets_up.push(TARGET.into());
            let mut notes = Vec::new();
            self.supervisor.advance(&mut self.os, Instant::now(), &mut notes);
            self.publish_notes(notes);
        } else if !up && has {
            self.supervisor.targets_up.retain(|t| t != TARGET);
        }
    }
}

fn route_socket() -> Result<RouteSocket, String> {
    RouteSocket::open().map_err(|e| format!("rtnetlink socket: {e}"))
}

/// The UDP socket cannot hear replies from a server before the interface has an address when
/// reverse-path filtering is on (the kernel's default is off, as in the guest); a line that
/// says so, since otherwise DHCP would only look unanswered.
fn reverse_path_filter_warning(conf: &Path, iface: &str) -> Option<String> {
    let read = |d: &str| std::fs::read_to_string(conf.join(d).join("rp_filter")).ok()?.trim().parse::<u8>().ok();
    let value = read("all").into_iter().chain(read(iface)).max().filter(|v| *v > 0)?;
    Some(format!(
        "reverse-path filtering is on (net.ipv4.conf.{{all,{iface}}}.rp_filter = {value}); DHCP replies are dropped until it is 0"
    ))
}

/// `network: eth0 10.0.2.15/24 via 10.0.2.2 dns 10.0.2.3 (dhcp, lease 86400 s)`.
fn describe(name: &str, s: &Settled, how: &str) -> String {
    let via = s.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
    let dns: Vec<String> = s.dns.iter().map(|d| d.to_string()).collect();
    let dns = if dns.is_empty() { String::new() } else { format!(" dns {}", dns.join(",")) };
    format!("network: {name} {}/{}{via}{dns} ({how})", s.addr.address, s.addr.prefix)
}

/// A seed for transaction ids and jitter: the kernel's random bytes, else the clock and MAC.
fn seed(mac: &[u8; 6]) -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into an 8-byte buffer; GRND_NONBLOCK never waits.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), libc::GRND_NONBLOCK) };
    if n == 8 {
        return u64::from_ne_bytes(b);
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    mac.iter().fold(t ^ std::process::id() as u64, |acc, &m| acc.rotate_left(8) ^ m as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_line_says_where_how_and_via_what() {
        let dns = [Ipv4Addr::new(10, 0, 2, 3)];
        let s = Settled { addr: IfAddr { ifindex: 2, address: Ipv4Addr::new(10, 0, 2, 15), prefix: 24 }, gateway: Some(Ipv4Addr::new(10, 0, 2, 2)), dns: &dns, proto: RouteProtocol::Dhcp };
        assert_eq!(describe("eth0", &s, "dhcp, lease 86400 s"), "network: eth0 10.0.2.15/24 via 10.0.2.2 dns 10.0.2.3 (dhcp, lease 86400 s)");
        let bare = Settled { gateway: None, dns: &[], ..s };
        assert_eq!(describe("eth0", &bare, "static, ghost.ip"), "network: eth0 10.0.2.15/24 (static, ghost.ip)");
    }

    #[test]
    fn reverse_path_filtering_is_named_when_on() {
        let t = tempfile::tempdir().unwrap();
        for (d, v) in [("all", "0"), ("eth0", "0")] {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
            std::fs::write(t.path().join(d).join("rp_filter"), format!("{v}\n")).unwrap();
        }
        assert_eq!(reverse_path_filter_warning(t.path(), "eth0"), None);
        std::fs::write(t.path().join("all/rp_filter"), "2\n").unwrap();
        let w = reverse_path_filter_warning(t.path(), "eth0").unwrap();
        assert!(w.contains("rp_filter = 2"), "{w}");
        assert_eq!(reverse_path_filter_warning(&t.path().join("absent"), "eth0"), None);
    }

    #[test]
    fn seeds_differ() {
        assert_ne!(seed(&[0; 6]), seed(&[0; 6]));
    }
}
