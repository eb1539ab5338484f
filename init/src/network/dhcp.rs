//! The DHCP message format (RFC 2131 / RFC 2132): one BOOTP header plus options, encoded and
//! decoded by pure functions. Decoding reads only inside the slice it is given and rejects a
//! short or malformed packet with an error that says what was wrong; it never panics.
//!
//! Written here rather than taken from a crate: the DHCP crates pull in async runtimes or
//! serde machinery that would grow PID 1 by more than this whole file.

use std::fmt;
use std::net::Ipv4Addr;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;

const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
const HTYPE_ETHERNET: u8 = 1;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// The fixed BOOTP header, up to and including the magic cookie.
const HEADER_LEN: usize = 240;
/// Some relays and old servers drop BOOTP messages shorter than the BOOTP minimum.
const MIN_PACKET: usize = 300;
/// The "broadcast" bit of `flags`: the client cannot receive unicast before it has an address.
pub const FLAG_BROADCAST: u16 = 0x8000;
/// resolv.conf reads at most three name servers (MAXNS); more would be carried for nothing.
pub const MAX_DNS: usize = 3;
/// Routers kept from option 3 (only the first is used for the default route).
const MAX_ROUTERS: usize = 3;

pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_LIST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const RENEWAL_T1: u8 = 58;
    pub const REBINDING_T2: u8 = 59;
    pub const CLIENT_ID: u8 = 61;
    pub const END: u8 = 255;
}

/// Option 53.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl MessageType {
    fn from_u8(v: u8) -> Option<MessageType> {
        use MessageType::*;
        Some(match v {
            1 => Discover,
            2 => Offer,
            3 => Request,
            4 => Decline,
            5 => Ack,
            6 => Nak,
            7 => Release,
            8 => Inform,
            _ => return None,
        })
    }
}

/// Why a received packet was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhcpError {
    /// Shorter than the fixed header.
    Truncated { len: usize },
    BadOp(u8),
    /// Not Ethernet addressing (htype 1, hlen 6).
    BadHardware { htype: u8, hlen: u8 },
    BadCookie,
    /// An option whose length runs past the end of the packet.
    OptionOverrun { code: u8 },
    /// An option whose length is wrong for its kind (an address that is not 4 bytes...).
    BadOptionLength { code: u8, len: usize },
    NoMessageType,
    UnknownMessageType(u8),
    /// A subnet mask whose one bits are not contiguous.
    BadSubnetMask(Ipv4Addr),
}

impl fmt::Display for DhcpError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            DhcpError::Truncated { len } => write!(f, "truncated: {len} bytes, a DHCP message has at least {HEADER_LEN}"),
            DhcpError::BadOp(op) => write!(f, "op {op} is neither BOOTREQUEST nor BOOTREPLY"),
            DhcpError::BadHardware { htype, hlen } => write!(f, "hardware type {htype} length {hlen} is not Ethernet"),
            DhcpError::BadCookie => write!(f, "no DHCP magic cookie (plain BOOTP?)"),
            DhcpError::OptionOverrun { code } => write!(f, "option {code} runs past the end of the packet"),
            DhcpError::BadOptionLength { code, len } => write!(f, "option {code} has a bad length {len}"),
            DhcpError::NoMessageType => write!(f, "no message type (option 53)"),
            DhcpError::UnknownMessageType(t) => write!(f, "unknown message type {t}"),
            DhcpError::BadSubnetMask(m) => write!(f, "subnet mask {m} is not contiguous"),
        }
    }
}

/// One DHCP message: the header fields a client uses and the options we know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// True for BOOTREQUEST (client to server).
    pub request: bool,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    pub kind: MessageType,
    pub subnet_mask: Option<Ipv4Addr>,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub hostname: Option<String>,
    pub requested_ip: Option<Ipv4Addr>,
    pub lease_s: Option<u32>,
    pub server_id: Option<Ipv4Addr>,
    pub parameters: Vec<u8>,
    pub message: Option<String>,
    pub t1_s: Option<u32>,
    pub t2_s: Option<u32>,
    pub client_id: Option<Vec<u8>>,
}

impl Packet {
    /// A client message with every optional field empty.
    pub fn client(kind: MessageType, xid: u32, chaddr: [u8; 6]) -> Packet {
        Packet {
            request: true,
            xid,
            secs: 0,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            kind,
            subnet_mask: None,
            routers: Vec::new(),
            dns: Vec::new(),
            hostname: None,
            requested_ip: None,
            lease_s: None,
            server_id: None,
            parameters: Vec::new(),
            message: None,
            t1_s: None,
            t2_s: None,
            client_id: None,
        }
    }

    /// The wire form: header, magic cookie, options, END, padded to the BOOTP minimum.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        b[0] = if self.request { BOOTREQUEST } else { BOOTREPLY };
        b[1] = HTYPE_ETHERNET;
        b[2] = 6;
        b[4..8].copy_from_slice(&self.xid.to_be_bytes());
        b[8..10].copy_from_slice(&self.secs.to_be_bytes());
        b[10..12].copy_from_slice(&self.flags.to_be_bytes());
        b[12..16].copy_from_slice(&self.ciaddr.octets());
        b[16..20].copy_from_slice(&self.yiaddr.octets());
        b[20..24].copy_from_slice(&self.siaddr.octets());
        b[28..34].copy_from_slice(&self.chaddr);
        b[236..240].copy_from_slice(&MAGIC_COOKIE);
        put(&mut b, opt::MESSAGE_TYPE, &[self.kind as u8]);
        if let Some(id) = &self.client_id {
            put(&mut b, opt::CLIENT_ID, id);
        }
        if let Some(m) = self.subnet_mask {
            put(&mut b, opt::SUBNET_MASK, &m.octets());
        }
        put_addrs(&mut b, opt::ROUTER, &self.routers);
        put_addrs(&mut b, opt::DNS, &self.dns);
        if let Some(h) = &self.hostname {
            put(&mut b, opt::HOSTNAME, h.as_bytes());
        }
        if let Some(a) = self.requested_ip {
            put(&mut b, opt::REQUESTED_IP, &a.octets());
        }
        for (code, v) in [(opt::LEASE_TIME, self.lease_s), (opt::RENEWAL_T1, self.t1_s), (opt::REBINDING_T2, self.t2_s)] {
            if let Some(v) = v {
                put(&mut b, code, &v.to_be_bytes());
            }
        }
        if let Some(a) = self.server_id {
            put(&mut b, opt::SERVER_ID, &a.octets());
        }
        if !self.parameters.is_empty() {
            put(&mut b, opt::PARAMETER_LIST, &self.parameters);
        }
        if let Some(m) = &self.message {
            put(&mut b, opt::MESSAGE, m.as_bytes());
        }
        b.push(opt::END);
        if b.len() < MIN_PACKET {
            b.resize(MIN_PACKET, opt::PAD);
        }
        b
    }

    /// Parses a message. Options we do not know are skipped; sname and file are not read
    /// (option overload, 52, is not honoured: no server we meet needs it for these options).
    pub fn decode(b: &[u8]) -> Result<Packet, DhcpError> {
        if b.len() < HEADER_LEN {
            return Err(DhcpError::Truncated { len: b.len() });
        }
        let request = match b[0] {
            BOOTREQUEST => true,
            BOOTREPLY => false,
            op => return Err(DhcpError::BadOp(op)),
        };
        if b[1] != HTYPE_ETHERNET || b[2] != 6 {
            return Err(DhcpError::BadHardware { htype: b[1], hlen: b[2] });
        }
        if b[236..240] != MAGIC_COOKIE {
            return Err(DhcpError::BadCookie);
        }
        let addr = |i: usize| Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3]);
        let mut chaddr = [0u8; 6];
        chaddr.copy_from_slice(&b[28..34]);
        let mut p = Packet::client(MessageType::Discover, u32::from_be_bytes([b[4], b[5], b[6], b[7]]), chaddr);
        p.request = request;
        p.secs = u16::from_be_bytes([b[8], b[9]]);
        p.flags = u16::from_be_bytes([b[10], b[11]]);
        p.ciaddr = addr(12);
        p.yiaddr = addr(16);
        p.siaddr = addr(20);
        let mut kind = None;
        let mut i = HEADER_LEN;
        while i < b.len() {
            let code = b[i];
            if code == opt::PAD {
                i += 1;
                continue;
            }
            if code == opt::END {
                break;
            }
            let len = *b.get(i + 1).ok_or(DhcpError::OptionOverrun { code })? as usize;
            let v = b.get(i + 2..i + 2 + len).ok_or(DhcpError::OptionOverrun { code })?;
            i += 2 + len;
            let bad = || DhcpError::BadOptionLength { code, len };
            match code {
                opt::MESSAGE_TYPE => {
                    let [t] = v else { return Err(bad()) };
                    kind = Some(MessageType::from_u8(*t).ok_or(DhcpError::UnknownMessageType(*t))?);
                }
                opt::SUBNET_MASK => {
                    let m = one_addr(v).ok_or_else(bad)?;
                    if prefix_of_mask(m).is_none() {
                        return Err(DhcpError::BadSubnetMask(m));
                    }
                    p.subnet_mask = Some(m);
                }
                opt::ROUTER => p.routers = addrs(v, MAX_ROUTERS).ok_or_else(bad)?,
                opt::DNS => p.dns = addrs(v, MAX_DNS).ok_or_else(bad)?,
                opt::HOSTNAME => p.hostname = Some(String::from_utf8_lossy(v).into_owned()),
                opt::REQUESTED_IP => p.requested_ip = Some(one_addr(v).ok_or_else(bad)?),
                opt::SERVER_ID => p.server_id = Some(one_addr(v).ok_or_else(bad)?),
                opt::LEASE_TIME => p.lease_s = Some(be32(v).ok_or_else(bad)?),
                opt::RENEWAL_T1 => p.t1_s = Some(be32(v).ok_or_else(bad)?),
                opt::REBINDING_T2 => p.t2_s = Some(be32(v).ok_or_else(bad)?),
                opt::PARAMETER_LIST => p.parameters = v.to_vec(),
                opt::MESSAGE => p.message = Some(String::from_utf8_lossy(v).into_owned()),
                opt::CLIENT_ID => p.client_id = Some(v.to_vec()),
                _ => {}
            }
        }
        p.kind = kind.ok_or(DhcpError::NoMessageType)?;
        Ok(p)
    }
}

fn put(b: &mut Vec<u8>, code: u8, v: &[u8]) {
    // An option holds at most 255 bytes; everything we send is far shorter (a host name is
    // at most 63), so cutting is only a guard.
    let v = &v[..v.len().min(255)];
    b.push(code);
    b.push(v.len() as u8);
    b.extend_from_slice(v);
}

fn put_addrs(b: &mut Vec<u8>, code: u8, list: &[Ipv4Addr]) {
    if !list.is_empty() {
        let bytes: Vec<u8> = list.iter().take(63).flat_map(|a| a.octets()).collect();
        put(b, code, &bytes);
    }
}

fn one_addr(v: &[u8]) -> Option<Ipv4Addr> {
    let [a, b, c, d] = v else { return None };
    Some(Ipv4Addr::new(*a, *b, *c, *d))
}

/// A list of addresses (length a non-zero multiple of 4), keeping the first `max`.
fn addrs(v: &[u8], max: usize) -> Option<Vec<Ipv4Addr>> {
    if v.is_empty() || !v.chunks_exact(4).remainder().is_empty() {
        return None;
    }
    Some(v.chunks_exact(4).take(max).map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3])).collect())
}

fn be32(v: &[u8]) -> Option<u32> {
    let [a, b, c, d] = v else { return None };
    Some(u32::from_be_bytes([*a, *b, *c, *d]))
}

/// The prefix length of a contiguous mask (255.255.255.0 is 24); None when not contiguous.
pub fn prefix_of_mask(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    (m.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn ack() -> Packet {
        let mut p = Packet::client(MessageType::Ack, 0xdead_beef, MAC);
        p.request = false;
        p.flags = FLAG_BROADCAST;
        p.yiaddr = Ipv4Addr::new(10, 0, 2, 15);
        p.siaddr = Ipv4Addr::new(10, 0, 2, 2);
        p.subnet_mask = Some(Ipv4Addr::new(255, 255, 255, 0));
        p.routers = vec![Ipv4Addr::new(10, 0, 2, 2)];
        p.dns = vec![Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)];
        p.hostname = Some("ghost".into());
        p.lease_s = Some(86400);
        p.t1_s = Some(43200);
        p.t2_s = Some(75600);
        p.server_id = Some(Ipv4Addr::new(10, 0, 2, 2));
        p
    }

    #[test]
    fn every_message_round_trips() {
        let a = ack();
        let wire = a.encode();
        assert!(wire.len() >= MIN_PACKET);
        assert_eq!(Packet::decode(&wire).unwrap(), a);

        let mut r = Packet::client(MessageType::Request, 7, MAC);
        r.flags = FLAG_BROADCAST;
        r.requested_ip = Some(Ipv4Addr::new(10, 0, 2, 15));
        r.server_id = Some(Ipv4Addr::new(10, 0, 2, 2));
        r.hostname = Some("box-1".into());
        r.parameters = vec![1, 3, 6, 12, 51, 54, 58, 59];
        r.client_id = Some(vec![1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(Packet::decode(&r.encode()).unwrap(), r);

        let mut n = Packet::client(MessageType::Nak, 9, MAC);
        n.request = false;
        n.message = Some("wrong network".into());
        assert_eq!(Packet::decode(&n.encode()).unwrap(), n);
    }

    #[test]
    fn header_fields_sit_where_rfc_2131_puts_them() {
        let mut d = Packet::client(MessageType::Discover, 0x0102_0304, MAC);
        d.flags = FLAG_BROADCAST;
        let w = d.encode();
        assert_eq!(&w[..4], &[1, 1, 6, 0]);
        assert_eq!(&w[4..8], &[1, 2, 3, 4]);
        assert_eq!(&w[10..12], &[0x80, 0]);
        assert_eq!(&w[28..34], &MAC);
        assert_eq!(&w[236..243], &[99, 130, 83, 99, 53, 1, 1]);
    }

    #[test]
    fn truncated_and_malformed_packets_are_rejected_with_the_reason() {
        let w = ack().encode();
        assert_eq!(Packet::decode(&w[..100]), Err(DhcpError::Truncated { len: 100 }));
        assert_eq!(Packet::decode(&[]), Err(DhcpError::Truncated { len: 0 }));

        let mut bad = w.clone();
        bad[236] = 0;
        assert_eq!(Packet::decode(&bad), Err(DhcpError::BadCookie));

        let mut bad = w.clone();
        bad[0] = 9;
        assert_eq!(Packet::decode(&bad), Err(DhcpError::BadOp(9)));

        let mut bad = w.clone();
        bad[2] = 16;
        assert!(matches!(Packet::decode(&bad), Err(DhcpError::BadHardware { .. })));

        // The header and an option that claims 200 bytes where 3 remain.
        let mut cut = w[..HEADER_LEN].to_vec();
        cut.extend_from_slice(&[53, 1, 2, 6, 200, 10, 0, 2]);
        let e = Packet::decode(&cut).unwrap_err();
        assert_eq!(e, DhcpError::OptionOverrun { code: 6 });
        assert_eq!(e.to_string(), "option 6 runs past the end of the packet");

        // An option code with no length byte at the very end.
        let mut cut = w[..HEADER_LEN].to_vec();
        cut.extend_from_slice(&[53, 1, 2, 51]);
        assert_eq!(Packet::decode(&cut), Err(DhcpError::OptionOverrun { code: 51 }));

        let mut odd = w[..HEADER_LEN].to_vec();
        odd.extend_from_slice(&[53, 1, 2, 3, 5, 10, 0, 2, 2, 9, 255]);
        assert_eq!(Packet::decode(&odd), Err(DhcpError::BadOptionLength { code: 3, len: 5 }));

        let mut holey = w[..HEADER_LEN].to_vec();
        holey.extend_from_slice(&[53, 1, 2, 1, 4, 255, 0, 255, 0, 255]);
        assert!(Packet::decode(&holey).unwrap_err().to_string().contains("not contiguous"));

        let mut none = w[..HEADER_LEN].to_vec();
        none.push(255);
        assert_eq!(Packet::decode(&none), Err(DhcpError::NoMessageType));
        let mut unknown = w[..HEADER_LEN].to_vec();
        unknown.extend_from_slice(&[53, 1, 42, 255]);
        assert_eq!(Packet::decode(&unknown), Err(DhcpError::UnknownMessageType(42)));
    }

    #[test]
    fn pads_unknown_options_and_long_lists_are_handled() {
        let mut w = ack().encode()[..HEADER_LEN].to_vec();
        w.extend_from_slice(&[0, 0, 53, 1, 2, 200, 3, 1, 2, 3, 6, 20]);
        for i in 0..5u8 {
            w.extend_from_slice(&[8, 8, 8, i]);
        }
        w.push(255);
        w.extend_from_slice(&[1, 2, 3]); // bytes after END are ignored
        let p = Packet::decode(&w).unwrap();
        assert_eq!(p.kind, MessageType::Offer);
        assert_eq!(p.dns.len(), MAX_DNS, "only resolv.conf's three are kept");
    }

    #[test]
    fn masks_become_prefixes() {
        assert_eq!(prefix_of_mask(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(prefix_of_mask(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(prefix_of_mask(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(prefix_of_mask(Ipv4Addr::new(255, 255, 240, 0)), Some(20));
        assert_eq!(prefix_of_mask(Ipv4Addr::new(255, 0, 255, 0)), None);
    }
}
