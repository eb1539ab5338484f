//! rtnetlink messages (link up, address, default route) built and their acknowledgements read
//! by pure functions; `sockets::RouteSocket` carries them to the kernel. This is what `ip link
//! set up`, `ip addr add` and `ip route replace default` send, without the `ip` binary.
//!
//! The constants are the kernel's stable ABI (linux/netlink.h, linux/rtnetlink.h,
//! linux/if_addr.h); they are spelled out here because the libc crate does not carry all of
//! them for every target. Integers are in host byte order, addresses in network order.

use std::net::Ipv4Addr;

pub const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const IFF_UP: u32 = 0x1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;
/// The gateway is reachable on the link even though it is outside the prefix.
const RTNH_F_ONLINK: u32 = 0x4;

/// Who installed a route, as `ip route` shows it (`proto dhcp`, `proto static`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteProtocol {
    Static = 4,
    Dhcp = 16,
}

/// An address with its prefix on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfAddr {
    pub ifindex: u32,
    pub address: Ipv4Addr,
    pub prefix: u8,
}

impl IfAddr {
    /// The subnet's broadcast address; none for /31 and /32, which have no broadcast.
    pub fn broadcast(&self) -> Option<Ipv4Addr> {
        (self.prefix < 31).then(|| Ipv4Addr::from(u32::from(self.address) | (u32::MAX >> self.prefix)))
    }

    /// Whether `other` is inside this address's subnet.
    pub fn contains(&self, other: Ipv4Addr) -> bool {
        let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
        u32::from(self.address) & mask == u32::from(other) & mask
    }
}

/// A netlink message under construction: header, fixed part, attributes.
struct Message {
    buf: Vec<u8>,
}

impl Message {
    fn new(kind: u16, flags: u16, seq: u32) -> Message {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        Message { buf }
    }

    fn bytes(mut self, b: &[u8]) -> Message {
        self.buf.extend_from_slice(b);
        self
    }

    /// One rtattr, padded to 4 bytes.
    fn attr(mut self, kind: u16, data: &[u8]) -> Message {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len().next_multiple_of(4), 0);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// `ip link set IFACE up`: RTM_NEWLINK changing only IFF_UP.
pub fn link_up(seq: u32, ifindex: u32) -> Vec<u8> {
    // struct ifinfomsg: family, pad, type, index, flags, change.
    let mut ifi = vec![AF_UNSPEC, 0, 0, 0];
    ifi.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    ifi.extend_from_slice(&IFF_UP.to_ne_bytes());
    ifi.extend_from_slice(&IFF_UP.to_ne_bytes());
    Message::new(RTM_NEWLINK, 0, seq).bytes(&ifi).finish()
}

fn address_message(kind: u16, flags: u16, seq: u32, a: &IfAddr) -> Vec<u8> {
    // struct ifaddrmsg: family, prefixlen, flags, scope, index.
    let mut ifa = vec![AF_INET, a.prefix, 0, RT_SCOPE_UNIVERSE];
    ifa.extend_from_slice(&a.ifindex.to_ne_bytes());
    let mut m = Message::new(kind, flags, seq).bytes(&ifa).attr(IFA_LOCAL, &a.address.octets()).attr(IFA_ADDRESS, &a.address.octets());
    if let Some(b) = a.broadcast() {
        m = m.attr(IFA_BROADCAST, &b.octets());
    }
    m.finish()
}

/// `ip addr replace ADDR/PREFIX broadcast + dev IFACE`.
pub fn add_address(seq: u32, a: &IfAddr) -> Vec<u8> {
    address_message(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, seq, a)
}

/// `ip addr del ADDR/PREFIX dev IFACE`.
pub fn del_address(seq: u32, a: &IfAddr) -> Vec<u8> {
    address_message(RTM_DELADDR, 0, seq, a)
}

fn route_message(kind: u16, flags: u16, seq: u32, ifindex: u32, gateway: Ipv4Addr, onlink: bool, proto: RouteProtocol) -> Vec<u8> {
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    let mut rtm = vec![AF_INET, 0, 0, 0, RT_TABLE_MAIN, proto as u8, RT_SCOPE_UNIVERSE, RTN_UNICAST];
    rtm.extend_from_slice(&(if onlink { RTNH_F_ONLINK } else { 0 }).to_ne_bytes());
    Message::new(kind, flags, seq).bytes(&rtm).attr(RTA_GATEWAY, &gateway.octets()).attr(RTA_OIF, &ifindex.to_ne_bytes()).finish()
}

/// `ip route replace default via GATEWAY dev IFACE [onlink] proto PROTO`. `onlink` when the
/// gateway lies outside the address's prefix (some hosting networks hand out a /32).
pub fn replace_default_route(seq: u32, ifindex: u32, gateway: Ipv4Addr, onlink: bool, proto: RouteProtocol) -> Vec<u8> {
    route_message(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, seq, ifindex, gateway, onlink, proto)
}

/// `ip route del default via GATEWAY dev IFACE`.
pub fn del_default_route(seq: u32, ifindex: u32, gateway: Ipv4Addr, proto: RouteProtocol) -> Vec<u8> {
    route_message(RTM_DELROUTE, 0, seq, ifindex, gateway, false, proto)
}

/// What the kernel answered to request `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// An acknowledgement: 0 for success, or a positive errno.
    Ack(i32),
    /// Nothing in this buffer answers `seq`.
    NotYet,
}

/// Finds the acknowledgement of `seq` among the messages in `buf` (one recv's worth).
/// Messages with another sequence number, and a malformed tail, are skipped.
pub fn find_ack(buf: &[u8], seq: u32) -> Answer {
    let mut i = 0;
    while i + NLMSG_HDRLEN <= buf.len() {
        let h = &buf[i..];
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let kind = u16::from_ne_bytes([h[4], h[5]]);
        let mseq = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]);
        if len < NLMSG_HDRLEN || i + len > buf.len() {
            break;
        }
        if kind == NLMSG_ERROR && mseq == seq && len >= NLMSG_HDRLEN + 4 {
            let e = i32::from_ne_bytes([h[16], h[17], h[18], h[19]]);
            return Answer::Ack(-e);
        }
        i += len.next_multiple_of(4);
    }
    Answer::NotYet
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], i: usize) -> u16 {
        u16::from_ne_bytes([b[i], b[i + 1]])
    }
    fn u32_at(b: &[u8], i: usize) -> u32 {
        u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
    }

    /// The attributes after a fixed part of `fixed` bytes, as (type, data).
    fn attrs(m: &[u8], fixed: usize) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        let mut i = NLMSG_HDRLEN + fixed;
        while i < m.len() {
            let len = u16_at(m, i) as usize;
            out.push((u16_at(m, i + 2), m[i + 4..i + len].to_vec()));
            i += len.next_multiple_of(4);
        }
        out
    }

    #[test]
    fn link_up_sets_only_the_up_flag() {
        let m = link_up(5, 2);
        assert_eq!((u32_at(&m, 0) as usize, m.len()), (32, 32));
        assert_eq!((u16_at(&m, 4), u16_at(&m, 6), u32_at(&m, 8)), (RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, 5));
        assert_eq!((u32_at(&m, 20), u32_at(&m, 24), u32_at(&m, 28)), (2, IFF_UP, IFF_UP));
    }

    #[test]
    fn address_carries_local_address_and_broadcast() {
        let a = IfAddr { ifindex: 3, address: Ipv4Addr::new(10, 0, 2, 15), prefix: 24 };
        let m = add_address(9, &a);
        assert_eq!(u32_at(&m, 0) as usize, m.len());
        assert_eq!(u16_at(&m, 4), RTM_NEWADDR);
        assert_eq!(u16_at(&m, 6), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE);
        assert_eq!(&m[16..20], &[AF_INET, 24, 0, 0]);
        assert_eq!(u32_at(&m, 20), 3);
        assert_eq!(
            attrs(&m, 8),
            vec![(IFA_LOCAL, vec![10, 0, 2, 15]), (IFA_ADDRESS, vec![10, 0, 2, 15]), (IFA_BROADCAST, vec![10, 0, 2, 255])]
        );
        let host = IfAddr { prefix: 32, ..a };
        assert_eq!(attrs(&del_address(1, &host), 8).len(), 2, "a /32 has no broadcast");
        assert_eq!(u16_at(&del_address(1, &host), 4), RTM_DELADDR);
    }

    #[test]
    fn default_route_names_gateway_interface_and_protocol() {
        let m = replace_default_route(11, 2, Ipv4Addr::new(10, 0, 2, 2), false, RouteProtocol::Dhcp);
        assert_eq!(u32_at(&m, 0) as usize, m.len());
        assert_eq!(u16_at(&m, 4), RTM_NEWROUTE);
        assert_eq!(&m[16..24], &[AF_INET, 0, 0, 0, RT_TABLE_MAIN, 16, RT_SCOPE_UNIVERSE, RTN_UNICAST]);
        assert_eq!(u32_at(&m, 24), 0);
        assert_eq!(attrs(&m, 12), vec![(RTA_GATEWAY, vec![10, 0, 2, 2]), (RTA_OIF, 2u32.to_ne_bytes().to_vec())]);
        let onlink = replace_default_route(1, 2, Ipv4Addr::new(192, 168, 0, 1), true, RouteProtocol::Static);
        assert_eq!((onlink[21], u32_at(&onlink, 24)), (4, RTNH_F_ONLINK));
        assert_eq!(u16_at(&del_default_route(1, 2, Ipv4Addr::new(10, 0, 2, 2), RouteProtocol::Dhcp), 4), RTM_DELROUTE);
    }

    fn error_message(seq: u32, errno: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&(-errno).to_ne_bytes());
        m.extend_from_slice(&[0u8; 16]); // the echoed request header
        m
    }

    #[test]
    fn acknowledgements_are_matched_by_sequence() {
        let mut buf = error_message(4, 0);
        buf.extend(error_message(5, libc::EEXIST));
        assert_eq!(find_ack(&buf, 4), Answer::Ack(0));
        assert_eq!(find_ack(&buf, 5), Answer::Ack(libc::EEXIST));
        assert_eq!(find_ack(&buf, 6), Answer::NotYet);
        assert_eq!(find_ack(&buf[..20], 4), Answer::NotYet, "a cut message is not read past its end");
        let mut lying = error_message(4, 0);
        lying[..4].copy_from_slice(&4000u32.to_ne_bytes());
        assert_eq!(find_ack(&lying, 4), Answer::NotYet);
        lying[..4].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(find_ack(&lying, 4), Answer::NotYet, "a zero length must not loop forever");
    }

    #[test]
    fn subnets() {
        let a = IfAddr { ifindex: 1, address: Ipv4Addr::new(10, 0, 2, 15), prefix: 24 };
        assert!(a.contains(Ipv4Addr::new(10, 0, 2, 2)));
        assert!(!a.contains(Ipv4Addr::new(10, 0, 3, 2)));
        let host = IfAddr { prefix: 32, ..a };
        assert!(!host.contains(Ipv4Addr::new(10, 0, 2, 2)));
        let all = IfAddr { prefix: 0, ..a };
        assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8)));
        assert_eq!(IfAddr { prefix: 30, ..a }.broadcast(), Some(Ipv4Addr::new(10, 0, 2, 15)));
    }
}
