//! The network step of ghost-init for real (issue 4, "Networking in the guest"): its DHCP
//! client against Debian's dnsmasq across a veth pair between two network namespaces that
//! each test makes and removes itself (server end and client end; the host's own network is
//! never touched), and a static address from `ghost.ip=`. ghost-init runs hosted inside the
//! client namespace with `--cmdline ghost.ip=...`, which makes the hosted mode configure the
//! interface for real. Asserted: the address, the default route, resolv.conf, a renewal at
//! T1, the `network` target holding back a service until the address is there, and the lines
//! for no answer, a bad `ghost.ip=` and no Ethernet interface.

use ghost_tests::{bin, status, wait_for_control, Root};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// The client end's interface, as the console names it.
const IFACE: &str = "ghc0";

fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP {test}: needs root to create network namespaces");
        return false;
    }
    true
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("ip {args:?}: {e} (iproute2 is in tests/install-deps)"));
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces joined by a veth pair (`ghs0` on the server side with `SUBNET.1/24`,
/// `ghc0` on the client side, unconfigured), and dnsmasq when asked; all gone on drop, even
/// when the test failed half-way.
struct Link {
    server: String,
    client: String,
    subnet: &'static str,
    dnsmasq: Option<Child>,
    dir: tempfile::TempDir,
}

impl Link {
    fn new(tag: &str, subnet: &'static str) -> Link {
        let base = format!("ghost-test-{}-{tag}", std::process::id());
        let link = Link { server: format!("{base}-s"), client: format!("{base}-c"), subnet, dnsmasq: None, dir: tempfile::tempdir().unwrap() };
        ip(&["netns", "add", &link.server]);
        ip(&["netns", "add", &link.client]);
        // Reverse-path filtering off, as in the guest's kernel: a new namespace may inherit the
        // host's setting, and with it on no client hears a reply before it has an address.
        for ns in [&link.server, &link.client] {
            for k in ["all", "default"] {
                ip(&["netns", "exec", ns, "sysctl", "-qw", &format!("net.ipv4.conf.{k}.rp_filter=0")]);
            }
        }
        ip(&["link", "add", "ghs0", "netns", &link.server, "type", "veth", "peer", "name", IFACE, "netns", &link.client]);
        ip(&["-n", &link.server, "addr", "add", &format!("{subnet}.1/24"), "dev", "ghs0"]);
        ip(&["-n", &link.server, "link", "set", "ghs0", "up"]);
        link
    }

    /// A namespace with loopback only (the client end of nothing).
    fn lonely(tag: &str) -> Link {
        let base = format!("ghost-test-{}-{tag}", std::process::id());
        let link = Link { server: String::new(), client: format!("{base}-c"), subnet: "", dnsmasq: None, dir: tempfile::tempdir().unwrap() };
        ip(&["netns", "add", &link.client]);
        link
    }

    /// dnsmasq as the DHCP server on `ghs0`: a 2-minute lease (dnsmasq's minimum) with T1 and
    /// T2 of a few seconds, so one renewal fits in a short test.
    fn serve_dhcp(&mut self, t1: u32, t2: u32) {
        let s = self.subnet;
        let log = std::fs::File::create(self.dir.path().join("dnsmasq.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.server, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null"])
            .args(["--port=0", "--interface=ghs0", "--bind-interfaces", "--except-interface=lo", "--log-dhcp", "--log-facility=-"])
            // No ping before offering: dnsmasq would hold the first OFFER back for seconds.
            .arg("--no-ping")
            .arg(format!("--dhcp-range={s}.50,{s}.60,255.255.255.0,2m"))
            .arg(format!("--dhcp-option=option:router,{s}.1"))
            .arg(format!("--dhcp-option=option:dns-server,{s}.2,{s}.3"))
            .arg(format!("--dhcp-option=option:T1,{t1}"))
            .arg(format!("--dhcp-option=option:T2,{t2}"))
            .arg(format!("--dhcp-leasefile={}", self.dir.path().join("leases").display()))
            .arg(format!("--pid-file={}", self.dir.path().join("dnsmasq.pid").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dnsmasq (dnsmasq-base is in tests/install-deps)");
        self.dnsmasq = Some(child);
        let log = self.dir.path().join("dnsmasq.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&log).unwrap_or_default().contains("DHCP, sockets bound") {
            assert!(Instant::now() < deadline, "dnsmasq did not start:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn dnsmasq_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(mut c) = self.dnsmasq.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.server, &self.client] {
            if !ns.is_empty() {
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
            }
        }
    }
}

/// ghost-init hosted inside the client namespace, its console lines arriving on a channel.
struct Init {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Init {
    fn start(link: &Link, root: &Root, cmdline: &str) -> Init {
        // `ip netns exec` execs ghost-init in place (same pid) after entering the namespace and
        // mounting a sysfs of that namespace, where the network step finds the interface.
        let mut child = Command::new("ip")
            .args(["netns", "exec", &link.client])
            .arg(bin("ghost-init"))
            .arg("--hosted")
            .arg("--root")
            .arg(root.path())
            .arg("--cmdline")
            .arg(cmdline)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ghost-init");
        let (tx, lines) = channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Init { child, lines, seen: Vec::new() }
    }

    /// The first line containing `needle` (seen before or arriving within `timeout`).
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!("no line containing {needle:?} within {timeout:?}; console:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on the ghost-init this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let st = self.child.wait().unwrap();
        assert!(st.success(), "ghost-init exited with {st}");
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A service that records the client's IPv4 addresses at the moment it starts.
fn address_recorder(root: &Root) -> std::path::PathBuf {
    let seen = root.path().join("addresses-at-start");
    root.service(
        "needs-net",
        &format!(
            "exec = [\"/bin/sh\", \"-c\", \"ip -4 -o addr show dev {IFACE} > {} ; exec sleep 1000\"]\nenv = {{ PATH = \"/usr/sbin:/usr/bin:/sbin:/bin\" }}\nrequires = [\"network\"]\n",
            seen.display()
        ),
    );
    seen
}

#[test]
fn dhcp_gives_address_route_resolv_conf_renews_at_t1_and_raises_the_network_target() {
    if !root_or_skip("dhcp") {
        return;
    }
    let mut link = Link::new("dhcp", "10.77.1");
    link.serve_dhcp(2, 4);
    let root = Root::new();
    let seen = address_recorder(&root);
    let mut init = Init::start(&link, &root, "ghost.ip=dhcp");

    let line = init.wait_for("network: ghc0 ", Duration::from_secs(20));
    let ok_at = Instant::now();
    let addr = line.split_whitespace().nth(3).unwrap().to_string();
    assert!(addr.starts_with("10.77.1.5") || addr == "10.77.1.60/24", "{line}");
    assert!(
        line.ends_with(&format!("{addr} via 10.77.1.1 dns 10.77.1.2,10.77.1.3 (dhcp, lease 120 s)")),
        "{line}"
    );
    init.wait_for("ghost-init: network ok in ", Duration::from_secs(1));

    let shown = ip(&["-n", &link.client, "-4", "-o", "addr", "show", "dev", IFACE]);
    assert!(shown.contains(&format!("inet {addr} brd 10.77.1.255")), "{shown}");
    let route = ip(&["-n", &link.client, "route", "show", "default"]);
    assert!(route.contains(&format!("default via 10.77.1.1 dev {IFACE} proto dhcp")), "{route}");
    let resolv = std::fs::read_to_string(root.path().join("etc/resolv.conf")).unwrap();
    assert_eq!(resolv, format!("# written by ghost-init from dhcp on {IFACE}\nnameserver 10.77.1.2\nnameserver 10.77.1.3\n"));

    // The service that requires `network` started only once the address was there.
    wait_for_control(&root, Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&seen).unwrap_or_default().is_empty() {
        assert!(Instant::now() < deadline, "needs-net never started: {:?}", status(&root, "needs-net"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let at_start = std::fs::read_to_string(&seen).unwrap();
    assert!(at_start.contains(&format!("inet {addr}")), "needs-net started before the address: {at_start:?}");

    // T1 is 2 s: a unicast RENEW to the server (RENEWING, not REBINDING) extends the lease.
    let ip_only = addr.split('/').next().unwrap().to_string();
    init.wait_for(&format!("network: ghc0: lease of {ip_only} renewed (120 s)"), Duration::from_secs(10));
    let took = ok_at.elapsed();
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(5), "renewal {took:?} after the lease, T1 is 2 s");
    let requests = link.dnsmasq_log().matches(&format!("DHCPREQUEST(ghs0) {ip_only} ")).count();
    assert!(requests >= 2, "one REQUEST for the lease and one renewal at least:\n{}", link.dnsmasq_log());
    assert!(ip(&["-n", &link.client, "-4", "-o", "addr", "show", "dev", IFACE]).contains(&addr), "the address stays through renewal");
    init.stop();
}

#[test]
fn a_static_address_from_ghost_ip() {
    if !root_or_skip("static") {
        return;
    }
    let link = Link::new("static", "10.77.2");
    let root = Root::new();
    let seen = address_recorder(&root);
    let mut init = Init::start(&link, &root, "ghost.ip=10.77.2.9/24,10.77.2.1,10.77.2.53");
    let line = init.wait_for("network: ghc0 ", Duration::from_secs(10));
    assert!(line.ends_with("network: ghc0 10.77.2.9/24 via 10.77.2.1 dns 10.77.2.53 (static, ghost.ip)"), "{line}");
    init.wait_for("ghost-init: network ok in ", Duration::from_secs(1));
    assert!(ip(&["-n", &link.client, "-4", "-o", "addr", "show", "dev", IFACE]).contains("inet 10.77.2.9/24 brd 10.77.2.255"));
    let route = ip(&["-n", &link.client, "route", "show", "default"]);
    assert!(route.contains("default via 10.77.2.1 dev ghc0 proto static"), "{route}");
    let resolv = std::fs::read_to_string(root.path().join("etc/resolv.conf")).unwrap();
    assert_eq!(resolv, "# written by ghost-init from static, ghost.ip\nnameserver 10.77.2.53\n");
    wait_for_control(&root, Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&seen).unwrap_or_default().contains("10.77.2.9") {
        assert!(Instant::now() < deadline, "needs-net did not start with the address");
        std::thread::sleep(Duration::from_millis(20));
    }
    init.stop();
}

#[test]
fn no_dhcp_answer_is_said_once_and_the_network_target_stays_down() {
    if !root_or_skip("silence") {
        return;
    }
    let link = Link::new("silence", "10.77.3");
    let root = Root::new();
    let seen = address_recorder(&root);
    let mut init = Init::start(&link, &root, "ghost.ip=dhcp");
    init.wait_for("ghost-init: boot complete in ", Duration::from_secs(10));
    // Three unanswered DISCOVERs, 4 + 8 + 16 s apart (each ±1 s).
    let failed = init.wait_for("ghost-init: network failed: ", Duration::from_secs(40));
    assert!(failed.contains("ghc0: no DHCP offer after 3 DISCOVERs in "), "{failed}");
    assert!(failed.ends_with("the network target stays down (still asking every 64 s)"), "{failed}");
    let s = status(&root, "needs-net");
    assert!(s.pid.is_none() && !Path::new(&seen).exists(), "a service that requires network started without it: {s:?}");
    assert!(!init.seen.iter().any(|l| l.contains("network ok")), "{:?}", init.seen);
    init.stop();
}

#[test]
fn bad_ghost_ip_and_no_ethernet_interface_are_one_line_each_and_boot_goes_on() {
    if !root_or_skip("bad input") {
        return;
    }
    let link = Link::new("bad", "10.77.4");
    let root = Root::new();
    let mut init = Init::start(&link, &root, "ghost.ip=10.77.4.300/24,10.77.4.1");
    let l = init.wait_for("ghost-init: network failed: ", Duration::from_secs(10));
    assert_eq!(
        l,
        "ghost-init: network failed: kernel command line: ghost.ip=10.77.4.300/24,10.77.4.1: address `10.77.4.300` is not an IPv4 address; the network target stays down"
    );
    init.wait_for("ghost-init: boot complete in ", Duration::from_secs(10));
    assert!(!ip(&["-n", &link.client, "-4", "-o", "addr", "show", "dev", IFACE]).contains("inet "));
    init.stop();

    let lonely = Link::lonely("lonely");
    let root = Root::new();
    let mut init = Init::start(&lonely, &root, "ghost.ip=dhcp");
    let l = init.wait_for("ghost-init: network failed: ", Duration::from_secs(10));
    assert_eq!(l, "ghost-init: network failed: no Ethernet interface in /sys/class/net (present: lo); the network target stays down");
    init.wait_for("ghost-init: boot complete in ", Duration::from_secs(10));
    init.stop();
}
