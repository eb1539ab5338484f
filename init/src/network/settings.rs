//! What the network step is asked to do: `ghost.ip=` on the kernel command line (it wins), or
//! ghost.toml's `[network]`. Pure: strings in, `Settings` out, or one line that names the key
//! and the value that is wrong.

use std::net::Ipv4Addr;

use crate::config;
// The address rules are shared with the first-boot wizard.
pub use ghost_proto::settings::{check_gateway, parse_cidr, parse_host};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Off,
    Dhcp,
    Static(Static),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Static {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub mode: Mode,
    /// None: the first Ethernet interface.
    pub interface: Option<String>,
    /// Where the mode came from, for messages: `ghost.ip` or the ghost.toml path.
    pub source: String,
}

const IP_SYNTAX: &str = "dhcp, off or ADDR/PREFIX,GATEWAY[,DNS]";

/// The settings in force: the command line's `ghost.ip` if given, else ghost.toml's.
pub fn resolve(cmdline_ip: Option<&str>, net: &config::Network, config_origin: &str) -> Result<Settings, String> {
    let interface = net.interface.clone();
    if let Some(v) = cmdline_ip {
        let mode = parse_cmdline_ip(v).map_err(|why| format!("kernel command line: ghost.ip={v}: {why}"))?;
        return Ok(Settings { mode, interface, source: "ghost.ip".into() });
    }
    let key = |k: &str, why: String| format!("{config_origin}: [network] {k}: {why}");
    let mode = match net.mode.as_str() {
        "off" => Mode::Off,
        "dhcp" => Mode::Dhcp,
        "static" => {
            let a = net.address.as_deref().ok_or_else(|| key("address", "missing; mode `static` needs ADDR/PREFIX".into()))?;
            let (address, prefix) = parse_cidr(a).map_err(|w| key("address", w))?;
            let gateway = net.gateway.as_deref().map(|g| parse_host(g, "gateway")).transpose().map_err(|w| key("gateway", w))?;
            let dns = net.dns.iter().map(|d| parse_host(d, "name server")).collect::<Result<Vec<_>, _>>().map_err(|w| key("dns", w))?;
            Mode::Static(checked(Static { address, prefix, gateway, dns }).map_err(|w| key("gateway", w))?)
        }
        other => return Err(key("mode", format!("`{other}` is not one of dhcp, static, off"))),
    };
    Ok(Settings { mode, interface, source: config_origin.into() })
}

/// `dhcp`, `off`, or `ADDR/PREFIX,GATEWAY[,DNS[,DNS...]]`.
pub fn parse_cmdline_ip(v: &str) -> Result<Mode, String> {
    match v {
        "dhcp" => return Ok(Mode::Dhcp),
        "off" | "none" => return Ok(Mode::Off),
        _ => {}
    }
    if !v.contains('/') {
        return Err(format!("expected {IP_SYNTAX}"));
    }
    let mut parts = v.split(',');
    let (address, prefix) = parse_cidr(parts.next().unwrap_or(""))?;
    let gw = parts.next().filter(|g| !g.is_empty()).ok_or_else(|| format!("a gateway is needed after the address ({IP_SYNTAX})"))?;
    let gateway = Some(parse_host(gw, "gateway")?);
    let dns = parts.map(|d| parse_host(d, "name server")).collect::<Result<Vec<_>, _>>()?;
    checked(Static { address, prefix, gateway, dns }).map(Mode::Static)
}

fn checked(s: Static) -> Result<Static, String> {
    check_gateway(s.address, s.gateway)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(mode: &str, address: Option<&str>, gateway: Option<&str>, dns: &[&str]) -> config::Network {
        config::Network {
            mode: mode.into(),
            interface: None,
            address: address.map(Into::into),
            gateway: gateway.map(Into::into),
            dns: dns.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_command_line_wins_over_ghost_toml() {
        let mut cfg = net("static", Some("192.168.1.5/24"), None, &[]);
        cfg.interface = Some("eth1".into());
        let s = resolve(Some("dhcp"), &cfg, "/etc/ghost/ghost.toml").unwrap();
        assert_eq!((s.mode, s.interface.as_deref(), s.source.as_str()), (Mode::Dhcp, Some("eth1"), "ghost.ip"));
        let s = resolve(None, &cfg, "/etc/ghost/ghost.toml").unwrap();
        assert_eq!(s.mode, Mode::Static(Static { address: Ipv4Addr::new(192, 168, 1, 5), prefix: 24, gateway: None, dns: vec![] }));
        assert_eq!(resolve(None, &net("off", None, None, &[]), "g").unwrap().mode, Mode::Off);
    }

    #[test]
    fn static_on_the_command_line() {
        assert_eq!(
            parse_cmdline_ip("10.0.2.15/24,10.0.2.2,10.0.2.3").unwrap(),
            Mode::Static(Static {
                address: Ipv4Addr::new(10, 0, 2, 15),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
                dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
            })
        );
        let Mode::Static(s) = parse_cmdline_ip("10.1.2.3/32,10.0.0.1").unwrap() else { panic!() };
        assert_eq!((s.prefix, s.dns.len()), (32, 0));
    }

    #[test]
    fn garbage_is_one_line_naming_the_key_and_value() {
        let cfg = net("dhcp", None, None, &[]);
        let err = |v: &str| resolve(Some(v), &cfg, "g").unwrap_err();
        let e = err("dhcpp");
        assert_eq!(e, "kernel command line: ghost.ip=dhcpp: expected dhcp, off or ADDR/PREFIX,GATEWAY[,DNS]");
        assert!(err("10.0.2.300/24,10.0.2.2").contains("address `10.0.2.300` is not an IPv4 address"));
        assert!(err("10.0.2.15/33,10.0.2.2").contains("`/33` is not a prefix length"));
        assert!(err("10.0.2.15/x,10.0.2.2").contains("`/x` is not a prefix length"));
        assert!(err("10.0.2.15/24").contains("a gateway is needed"));
        assert!(err("10.0.2.15/24,").contains("a gateway is needed"));
        assert!(err("10.0.2.15/24,10.0.2.15").contains("is the address itself"));
        assert!(err("10.0.2.15/24,10.0.2.2,dns").contains("name server `dns` is not an IPv4 address"));
        assert!(err("0.0.0.0/8,10.0.2.2").contains("address 0.0.0.0 cannot be used"));
        assert!(err("224.0.0.1/4,10.0.2.2").contains("cannot be used"));
        for v in ["dhcpp", "10.0.2.15/33,10.0.2.2"] {
            assert!(err(v).starts_with(&format!("kernel command line: ghost.ip={v}: ")));
        }
    }

    #[test]
    fn bad_ghost_toml_values_name_the_file_and_key() {
        let e = resolve(None, &net("static", Some("10.0.0.5"), None, &[]), "/etc/ghost/ghost.toml").unwrap_err();
        assert_eq!(e, "/etc/ghost/ghost.toml: [network] address: `10.0.0.5` has no /PREFIX (e.g. 10.0.2.15/24)");
        let e = resolve(None, &net("static", Some("10.0.0.5/24"), Some("router"), &[]), "g.toml").unwrap_err();
        assert!(e.starts_with("g.toml: [network] gateway: gateway `router`"), "{e}");
        let e = resolve(None, &net("static", Some("10.0.0.5/24"), None, &["1.1.1.1", "x"]), "g.toml").unwrap_err();
        assert!(e.starts_with("g.toml: [network] dns: name server `x`"), "{e}");
        let e = resolve(None, &net("static", None, None, &[]), "g.toml").unwrap_err();
        assert!(e.contains("[network] address: missing"), "{e}");
    }
}
