//! The configuration file: parsed strictly (unknown keys are errors), then
//! validated as a whole before anything touches the kernel. Every error names
//! the key it is about.

use std::{
    collections::HashSet,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    str::FromStr,
};

use lb_common::{DEFAULT_RING_SIZE, MAX_BACKENDS, MAX_RING_SIZE, MAX_VIPS, VipKey, net};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{0}")]
    Parse(String),
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), reason: reason.into() }
}

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
            if part.len() != 2 {
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

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeSetting {
    /// Driver (native) mode: the fast path.
    #[default]
    Native,
    /// Generic mode, for drivers without XDP support.
    Skb,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forwarding {
    /// IP-in-IP to the backend through the next-hop router.
    #[default]
    Ipip,
    /// L2 direct server return: the backend's MAC, same L2 segment.
    L2dsr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
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

/// A validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub global: Global,
    pub vips: Vec<Vip>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Global {
    pub interface: Option<String>,
    pub xdp_mode: XdpModeSetting,
    pub nexthop_mac: Option<Mac>,
    pub tunnel_source_v4: Option<Ipv4Addr>,
    pub tunnel_source_v6: Option<Ipv6Addr>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Vip {
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub ring_size: u32,
    pub forwarding: Forwarding,
    pub backends: Vec<BackendConfig>,
}

impl Vip {
    pub fn key(&self) -> VipKey {
        VipKey::new(self.address, self.port, self.protocol.number())
    }
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            IpAddr::V4(a) => write!(f, "{a}:{}/{}", self.port, self.protocol),
            IpAddr::V6(a) => write!(f, "[{a}]:{}/{}", self.port, self.protocol),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct BackendConfig {
    pub address: IpAddr,
    /// Relative share of new flows; 0 takes no new flows but keeps the
    /// established ones (a drain).
    pub weight: u32,
    pub mac: Option<Mac>,
}

/// Largest backend weight.
pub const MAX_WEIGHT: u32 = 10_000;

// The file's shape, exactly as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    global: RawGlobal,
    #[serde(default)]
    vip: Vec<RawVip>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGlobal {
    interface: Option<String>,
    #[serde(default)]
    xdp_mode: XdpModeSetting,
    #[serde(default)]
    forwarding: Forwarding,
    nexthop_mac: Option<String>,
    tunnel_source_v4: Option<Ipv4Addr>,
    tunnel_source_v6: Option<Ipv6Addr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVip {
    address: IpAddr,
    port: u16,
    protocol: Protocol,
    ring_size: Option<u32>,
    forwarding: Option<Forwarding>,
    #[serde(default)]
    backend: Vec<RawBackend>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    address: IpAddr,
    weight: Option<u32>,
    mac: Option<String>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::from_toml_str(&text)
    }

    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        validate(raw)
    }

    /// Backend entries the data path needs: one per backend of each VIP.
    pub fn backend_entries(&self) -> usize {
        self.vips.iter().map(|v| v.backends.len()).sum()
    }
}

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let g = raw.global;
    if let Some(iface) = &g.interface {
        if iface.is_empty() || iface.len() > 15 || iface.contains(['/', ' ']) {
            return Err(invalid("global.interface", format!("{iface:?} is not a valid interface name")));
        }
    }
    let nexthop_mac = g
        .nexthop_mac
        .as_deref()
        .map(|s| s.parse::<Mac>().map_err(|e| invalid("global.nexthop_mac", e)))
        .transpose()?;
    let global = Global {
        interface: g.interface,
        xdp_mode: g.xdp_mode,
        nexthop_mac,
        tunnel_source_v4: g.tunnel_source_v4,
        tunnel_source_v6: g.tunnel_source_v6,
    };
    if raw.vip.len() > MAX_VIPS as usize {
        return Err(invalid("vip", format!("{} VIPs configured, at most {MAX_VIPS}", raw.vip.len())));
    }
    let mut seen = HashSet::new();
    let mut vips = Vec::with_capacity(raw.vip.len());
    for (i, v) in raw.vip.into_iter().enumerate() {
        let vip = validate_vip(&format!("vip[{i}]"), v, g.forwarding, &global)?;
        if !seen.insert(vip.key()) {
            return Err(invalid(format!("vip[{i}]"), format!("{vip} is configured twice")));
        }
        vips.push(vip);
    }
    let config = Config { global, vips };
    let backends = config.backend_entries();
    if backends > MAX_BACKENDS as usize {
        return Err(invalid("vip.backend", format!("{backends} backends over all VIPs, at most {MAX_BACKENDS}")));
    }
    Ok(config)
}

fn validate_vip(key: &str, v: RawVip, default_fwd: Forwarding, g: &Global) -> Result<Vip, ConfigError> {
    if v.port == 0 {
        return Err(invalid(format!("{key}.port"), "must be 1-65535"));
    }
    if v.address.is_unspecified() || v.address.is_multicast() {
        return Err(invalid(format!("{key}.address"), format!("{} cannot be a VIP", v.address)));
    }
    let ring_size = v.ring_size.unwrap_or(DEFAULT_RING_SIZE);
    if !(2..=MAX_RING_SIZE).contains(&ring_size) || !is_prime(ring_size) {
        return Err(invalid(format!("{key}.ring_size"), format!("{ring_size} must be a prime from 2 to {MAX_RING_SIZE}")));
    }
    if v.backend.len() > ring_size as usize {
        return Err(invalid(
            format!("{key}.ring_size"),
            format!("{ring_size} is smaller than the {} backends; Maglev needs one entry per backend at least", v.backend.len()),
        ));
    }
    let forwarding = v.forwarding.unwrap_or(default_fwd);
    if forwarding == Forwarding::Ipip {
        if g.nexthop_mac.is_none() {
            return Err(invalid("global.nexthop_mac", format!("required: {key} uses ipip forwarding")));
        }
        let missing = match v.address {
            IpAddr::V4(_) if g.tunnel_source_v4.is_none() => Some("global.tunnel_source_v4"),
            IpAddr::V6(_) if g.tunnel_source_v6.is_none() => Some("global.tunnel_source_v6"),
            _ => None,
        };
        if let Some(k) = missing {
            return Err(invalid(k, format!("required: {key} is an ipip VIP of that family")));
        }
    }
    let mut seen = HashSet::new();
    let mut backends = Vec::with_capacity(v.backend.len());
    for (j, b) in v.backend.into_iter().enumerate() {
        let bkey = format!("{key}.backend[{j}]");
        if b.address.is_ipv4() != v.address.is_ipv4() {
            return Err(invalid(format!("{bkey}.address"), format!("{} is not of the VIP's family ({})", b.address, v.address)));
        }
        if b.address.is_unspecified() || b.address.is_multicast() || b.address.is_loopback() {
            return Err(invalid(format!("{bkey}.address"), format!("{} cannot be a backend", b.address)));
        }
        if !seen.insert(b.address) {
            return Err(invalid(format!("{bkey}.address"), format!("{} is listed twice", b.address)));
        }
        let weight = b.weight.unwrap_or(1);
        if weight > MAX_WEIGHT {
            return Err(invalid(format!("{bkey}.weight"), format!("{weight} is above the maximum {MAX_WEIGHT}")));
        }
        let mac = b.mac.as_deref().map(|s| s.parse::<Mac>().map_err(|e| invalid(format!("{bkey}.mac"), e))).transpose()?;
        if forwarding == Forwarding::L2dsr && mac.is_none() {
            return Err(invalid(format!("{bkey}.mac"), "required: the VIP uses l2dsr forwarding"));
        }
        backends.push(BackendConfig { address: b.address, weight, mac });
    }
    Ok(Vip { address: v.address, port: v.port, protocol: v.protocol, ring_size, forwarding, backends })
}

pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests;
