//! `[network]`: user-mode NAT with port forwards, a bridge, a tap, or none.

use std::fmt;
use std::net::Ipv4Addr;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

use crate::config::checker::{parts, Checker, S};
use crate::config::error::ProblemKind as K;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum WireNetworkMode {
    User,
    Bridge,
    Tap,
    None,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireNetwork {
    mode: S<WireNetworkMode>,
    bridge: S<String>,
    forward: S<Vec<Spanned<String>>>,
    mac: S<String>,
    ifname: S<String>,
    model: S<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A user-mode network port forward, `tcp:[HOSTADDR:]HOSTPORT:GUESTPORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortForward {
    pub protocol: Protocol,
    /// The host address QEMU listens on; 127.0.0.1 unless the rule names one.
    pub host_addr: Ipv4Addr,
    pub host_port: u16,
    pub guest_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortForwardError {
    #[error("expected PROTOCOL:[HOSTADDR:]HOSTPORT:GUESTPORT")]
    Shape,
    #[error("`{0}` is not an IPv4 address")]
    Address(String),
    #[error("protocol `{0}` is not tcp or udp")]
    Protocol(String),
    #[error("`{0}` is not a port from 1 to 65535")]
    Port(String),
}

impl FromStr for PortForward {
    type Err = PortForwardError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        let (proto, addr, host, guest) = match parts.as_slice() {
            [proto, host, guest] => (*proto, None, *host, *guest),
            [proto, addr, host, guest] => (*proto, Some(*addr), *host, *guest),
            _ => return Err(PortForwardError::Shape),
        };
        let protocol = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => return Err(PortForwardError::Protocol(other.to_string())),
        };
        let port = |p: &str| match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(PortForwardError::Port(p.to_string())),
        };
        // Listening on every interface exposes the guest's port to the
        // network; a rule asks for it by naming `0.0.0.0` (or an address).
        let host_addr = match addr {
            None => Ipv4Addr::LOCALHOST,
            Some(a) => a
                .parse()
                .map_err(|_| PortForwardError::Address(a.to_string()))?,
        };
        Ok(Self {
            protocol,
            host_addr,
            host_port: port(host)?,
            guest_port: port(guest)?,
        })
    }
}

/// A unicast Ethernet address; shown lowercase, `52:54:00:ab:cd:ef`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacAddress([u8; 6]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacAddressError {
    #[error("not six hex pairs separated by `:`")]
    Malformed,
    #[error("the multicast bit is set")]
    Multicast,
}

impl MacAddress {
    pub fn octets(self) -> [u8; 6] {
        self.0
    }
}

impl FromStr for MacAddress {
    type Err = MacAddressError;

    /// Six hex pairs separated by `:`, with the multicast bit clear.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let pairs: Vec<&str> = s.split(':').collect();
        let mut octets = [0u8; 6];
        if pairs.len() != octets.len() {
            return Err(MacAddressError::Malformed);
        }
        for (octet, pair) in octets.iter_mut().zip(&pairs) {
            if pair.len() != 2 || !pair.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(MacAddressError::Malformed);
            }
            *octet = u8::from_str_radix(pair, 16).map_err(|_| MacAddressError::Malformed)?;
        }
        if octets[0] & 1 != 0 {
            return Err(MacAddressError::Multicast);
        }
        Ok(Self(octets))
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Serialize for MacAddress {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum NetworkMode {
    User { forward: Vec<PortForward> },
    Bridge { bridge: String },
    Tap { ifname: String },
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Network {
    pub mode: NetworkMode,
    /// Derived from the VM name when not given.
    pub mac: Option<MacAddress>,
    /// QEMU NIC device model, `virtio-net-pci` by default.
    pub model: String,
}

pub(crate) fn check(n: S<WireNetwork>, v: &mut Checker<'_>) -> Network {
    let (span, n) = n.map(parts).unwrap_or_default();
    let mode = n
        .mode
        .as_ref()
        .map_or(WireNetworkMode::User, |m| *m.get_ref());
    let only_with = [
        (
            "network.forward",
            n.forward.as_ref().map(Spanned::span),
            WireNetworkMode::User,
            "user",
        ),
        (
            "network.bridge",
            n.bridge.as_ref().map(Spanned::span),
            WireNetworkMode::Bridge,
            "bridge",
        ),
        (
            "network.ifname",
            n.ifname.as_ref().map(Spanned::span),
            WireNetworkMode::Tap,
            "tap",
        ),
    ];
    for (key, given, needed, name) in only_with {
        if let Some(s) = given.filter(|_| mode != needed) {
            v.err(key, s, K::OnlyWithMode { mode: name });
        }
    }
    let mode_span = n.mode.as_ref().map_or(span, |m| m.span());
    let mode = match mode {
        WireNetworkMode::User => NetworkMode::User {
            forward: forwards(n.forward.map(Spanned::into_inner).unwrap_or_default(), v),
        },
        WireNetworkMode::Bridge => NetworkMode::Bridge {
            bridge: ifname(n.bridge, "network.bridge", "bridge", &mode_span, v),
        },
        WireNetworkMode::Tap => NetworkMode::Tap {
            ifname: ifname(n.ifname, "network.ifname", "tap", &mode_span, v),
        },
        WireNetworkMode::None => NetworkMode::None,
    };
    let mac = n.mac.map(parts).and_then(|(s, text)| match text.parse() {
        Ok(mac) => Some(mac),
        Err(MacAddressError::Malformed) => {
            v.err("network.mac", s, K::BadMac(text));
            None
        }
        Err(MacAddressError::Multicast) => {
            v.err("network.mac", s, K::MulticastMac(text));
            None
        }
    });
    Network {
        mode,
        mac,
        model: v.non_empty_or("network.model", n.model, "virtio-net-pci"),
    }
}

/// Each forward parsed; a host port forwarded twice is refused.
fn forwards(list: Vec<Spanned<String>>, v: &mut Checker<'_>) -> Vec<PortForward> {
    let mut forward: Vec<PortForward> = Vec::new();
    for f in list {
        let (s, text) = parts(f);
        let reason = match text.parse::<PortForward>() {
            Ok(fw)
                if forward
                    .iter()
                    .any(|o| o.protocol == fw.protocol && o.host_port == fw.host_port) =>
            {
                format!("host port {} is already forwarded", fw.host_port)
            }
            Ok(fw) => {
                forward.push(fw);
                continue;
            }
            Err(e) => e.to_string(),
        };
        let value = text;
        v.err("network.forward", s, K::BadForward { value, reason });
    }
    forward
}

/// A Linux interface name: 1-15 bytes (IFNAMSIZ - 1), no `/` or space.
fn ifname(
    name: S<String>,
    key: &'static str,
    mode: &'static str,
    mode_span: &Range<usize>,
    v: &mut Checker<'_>,
) -> String {
    let Some((s, name)) = name.map(parts) else {
        let short = key.trim_start_matches("network.");
        v.err(key, mode_span.clone(), K::ModeNeeds { mode, key: short });
        return String::new();
    };
    let ok = !name.is_empty()
        && name.len() <= 15
        && !name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace());
    if !ok {
        v.err(key, s, K::BadIfname(name.clone()));
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vm::testing::{assert_problems, check, errors};

    #[test]
    fn forward_parses_and_rejects() {
        assert_eq!(
            "udp:5000:53".parse(),
            Ok(PortForward {
                protocol: Protocol::Udp,
                host_addr: Ipv4Addr::LOCALHOST,
                host_port: 5000,
                guest_port: 53
            })
        );
        assert_eq!(
            "tcp:0.0.0.0:2222:22"
                .parse::<PortForward>()
                .map(|f| f.host_addr),
            Ok(Ipv4Addr::UNSPECIFIED)
        );
        assert_eq!(
            "tcp:192.168.1.5:2222:22"
                .parse::<PortForward>()
                .map(|f| f.host_addr),
            Ok(Ipv4Addr::new(192, 168, 1, 5))
        );
        let bad = |s: &str| s.parse::<PortForward>().err();
        assert_eq!(bad("tcp:1"), Some(PortForwardError::Shape));
        assert_eq!(bad(""), Some(PortForwardError::Shape));
        assert_eq!(bad("tcp:a:b:1:1"), Some(PortForwardError::Shape));
        for addr in ["localhost", "1.2.3", "1.2.3.256", ""] {
            assert_eq!(
                bad(&format!("tcp:{addr}:1:1")),
                Some(PortForwardError::Address(addr.into())),
                "{addr}"
            );
        }
        assert_eq!(
            bad("sctp:1:1"),
            Some(PortForwardError::Protocol("sctp".into()))
        );
        for port in ["tcp:0:1", "tcp:1:65536", "tcp:+1:1"] {
            assert!(
                matches!(bad(port), Some(PortForwardError::Port(_))),
                "{port}"
            );
        }
    }

    #[test]
    fn duplicate_forward_host_port_is_rejected() {
        let e = errors("[network]\nforward = [\"tcp:80:80\", \"tcp:80:8080\"]\n");
        assert!(matches!(e[..], [K::BadForward { .. }]));
    }

    #[test]
    fn each_broken_rule_is_reported() {
        let bridge = K::ModeNeeds {
            mode: "bridge",
            key: "bridge",
        };
        assert_problems(&[
            (
                "[network]\nmode = \"none\"\nforward = [\"tcp:1:1\"]\n",
                &[K::OnlyWithMode { mode: "user" }],
            ),
            (
                "[network]\nmac = \"01:00:5e:00:00:01\"\n",
                &[K::MulticastMac("01:00:5e:00:00:01".into())],
            ),
            ("[network]\nmode = \"bridge\"\n", &[bridge]),
        ]);
    }

    #[test]
    fn mac_parses_and_shows_lowercase() {
        let mac: MacAddress = "52:54:00:AB:cd:ef".parse().expect("valid");
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:ef");
        assert_eq!(mac.octets(), [0x52, 0x54, 0, 0xab, 0xcd, 0xef]);
    }

    #[test]
    fn malformed_mac_is_rejected() {
        for bad in [
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:eg",
            "525:4:00:ab:cd:ef",
            "",
        ] {
            assert_eq!(
                bad.parse::<MacAddress>(),
                Err(MacAddressError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn multicast_mac_is_rejected() {
        let mac = "01:00:5e:00:00:01".parse::<MacAddress>();
        assert_eq!(mac, Err(MacAddressError::Multicast));
    }

    #[test]
    fn tap_mode_needs_a_valid_ifname() {
        assert!(matches!(
            errors("[network]\nmode = \"tap\"\n")[..],
            [K::ModeNeeds { mode: "tap", .. }]
        ));
        assert!(matches!(
            errors("[network]\nmode = \"tap\"\nifname = \"a/b\"\n")[..],
            [K::BadIfname(_)]
        ));
    }

    #[test]
    fn user_mode_is_the_default() {
        let c = check("").expect("valid");
        assert_eq!(c.network.mode, NetworkMode::User { forward: vec![] });
        assert_eq!(c.network.model, "virtio-net-pci");
    }
}
