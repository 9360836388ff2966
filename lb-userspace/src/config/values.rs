//! The small value types of the configuration: addresses, modes and states
//! as the file spells them.

use std::{fmt, str::FromStr};

use lb_common::net;
use serde::Deserialize;

/// An Ethernet address, written `02:00:00:00:00:01`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad = || format!("{s:?} is not a MAC address like 02:00:00:00:00:01");
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(parts) {
            // from_str_radix alone would take "+2"
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        Ok(Mac(mac))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

/// Where encapsulated packets go: a fixed MAC, or the MAC of the
/// interface's IPv4 default gateway found in the neighbour table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextHop {
    Mac(Mac),
    Auto,
}

impl FromStr for NextHop {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            Ok(NextHop::Auto)
        } else {
            s.parse().map(NextHop::Mac).map_err(|e| format!("{e}, or \"auto\""))
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeSetting {
    /// Driver (native) mode: the fast path.
    #[default]
    Native,
    /// Generic mode, for drivers without XDP support.
    Skb,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Forwarding {
    /// IP-in-IP to the backend through the next-hop router.
    #[default]
    Ipip,
    /// L2 direct server return: the backend's MAC, same L2 segment.
    L2dsr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => net::IPPROTO_TCP,
            Protocol::Udp => net::IPPROTO_UDP,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// What to do with established flows of a backend that fails its checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnDown {
    /// Re-pick them to a healthy backend (the client reconnects sooner).
    #[default]
    Repick,
    /// Keep sending them to it (it may still serve them), as a drain does.
    Keep,
}

/// What a VIP does when none of its backends is healthy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllDown {
    /// Ignore health and use every backend not in maintenance, as AWS NLB
    /// does: a failing health check path should not take the service down.
    #[default]
    FailOpen,
    /// Empty the table: new flows are dropped and counted (`drop_no_backend`).
    Drop,
}

/// An operator's state for a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// In service when healthy.
    #[default]
    Up,
    /// No new flows; established flows stay. Checks continue.
    Drain,
    /// Out of service: established flows are re-picked, checks paused.
    Maint,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Tcp,
    Http,
}
