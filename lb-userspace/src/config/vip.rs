//! The `[[vip]]` tables and their `[[vip.backend]]` entries: as written
//! (`VipSpec`, `BackendSpec`, also what the API takes), as validated (`Vip`,
//! `BackendConfig`), and the rules that turn one into the other.

use std::{
    collections::HashSet,
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use lb_common::{DEFAULT_RING_SIZE, LC_MAX_CANDIDATES, MAX_RING_SIZE, VipKey};
use serde::Deserialize;

use super::{
    AdminState, AgentCheck, Algorithm, AllDown, ConfigError, Forwarding, Global, HealthCheck, Mac, OnDown, Protocol,
    checks, health::check_health, invalid,
};

#[derive(Clone, Debug, PartialEq)]
pub struct Vip {
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub ring_size: u32,
    pub algorithm: Algorithm,
    /// The operator acknowledged that the algorithm is per instance.
    pub per_instance: bool,
    pub forwarding: Forwarding,
    pub health_check: Option<HealthCheck>,
    pub on_down: OnDown,
    pub all_down: AllDown,
    pub backends: Vec<BackendConfig>,
    /// Ramp of a backend entering the table, in ms (0: off).
    pub slowstart_ms: u64,
    pub agent_check: Option<AgentCheck>,
}

impl Vip {
    pub fn key(&self) -> VipKey {
        VipKey::new(self.address, self.port, self.protocol.number())
    }

    pub fn id(&self) -> VipId {
        VipId { address: self.address, port: self.port, protocol: self.protocol }
    }
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.id().fmt(f)
    }
}

/// How a VIP is named on the command line and in the API:
/// `198.18.100.1:80/tcp`, `[2001:db8::1]:443/tcp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipId {
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for VipId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", SocketAddr::new(self.address, self.port), self.protocol)
    }
}

impl FromStr for VipId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a VIP like 198.18.100.1:80/tcp or [2001:db8::1]:443/udp");
        let (addr, proto) = s.rsplit_once('/').ok_or_else(bad)?;
        let protocol = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => return Err(bad()),
        };
        let sa: SocketAddr = addr.parse().map_err(|_| bad())?;
        Ok(VipId { address: sa.ip(), port: sa.port(), protocol })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct BackendConfig {
    pub address: IpAddr,
    /// Relative share of new flows; 0 takes no new flows but keeps the
    /// established ones (a drain).
    pub weight: u32,
    pub mac: Option<Mac>,
    pub state: AdminState,
}

/// Largest backend weight.
pub const MAX_WEIGHT: u32 = 10_000;

/// A VIP as written in the file or sent to the API.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct VipSpec {
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub ring_size: Option<u32>,
    pub algorithm: Option<Algorithm>,
    pub per_instance: Option<bool>,
    pub forwarding: Option<Forwarding>,
    pub health_check: Option<HealthCheck>,
    pub on_down: Option<OnDown>,
    pub all_down: Option<AllDown>,
    #[serde(default)]
    pub backend: Vec<BackendSpec>,
    pub slowstart_ms: Option<u64>,
    pub agent_check: Option<AgentCheck>,
}

/// A backend as written in the file or sent to the API.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    pub address: IpAddr,
    pub weight: Option<u32>,
    pub mac: Option<String>,
    pub state: Option<AdminState>,
}

impl BackendSpec {
    /// The validated backend of a VIP using `forwarding`; `key` names it in errors.
    pub fn validate(
        self,
        key: &str,
        vip_address: IpAddr,
        forwarding: Forwarding,
    ) -> Result<BackendConfig, ConfigError> {
        if self.address.is_ipv4() != vip_address.is_ipv4() {
            return Err(invalid(
                format!("{key}.address"),
                format!("{} is not of the VIP's family ({vip_address})", self.address),
            ));
        }
        if self.address.is_unspecified() || self.address.is_multicast() || self.address.is_loopback() {
            return Err(invalid(format!("{key}.address"), format!("{} cannot be a backend", self.address)));
        }
        let weight = self.weight.unwrap_or(1);
        if weight > MAX_WEIGHT {
            return Err(invalid(format!("{key}.weight"), format!("{weight} is above the maximum {MAX_WEIGHT}")));
        }
        let mac =
            self.mac.as_deref().map(|s| s.parse::<Mac>().map_err(|e| invalid(format!("{key}.mac"), e))).transpose()?;
        if forwarding == Forwarding::L2dsr && mac.is_none() {
            return Err(invalid(format!("{key}.mac"), "required: the VIP uses l2dsr forwarding"));
        }
        Ok(BackendConfig { address: self.address, weight, mac, state: self.state.unwrap_or_default() })
    }
}

pub(super) fn validate_vip(key: &str, v: VipSpec, default_fwd: Forwarding, g: &Global) -> Result<Vip, ConfigError> {
    if v.port == 0 {
        return Err(invalid(format!("{key}.port"), "must be 1-65535"));
    }
    if v.address.is_unspecified() || v.address.is_multicast() {
        return Err(invalid(format!("{key}.address"), format!("{} cannot be a VIP", v.address)));
    }
    let ring_size = v.ring_size.unwrap_or(DEFAULT_RING_SIZE);
    if !(2..=MAX_RING_SIZE).contains(&ring_size) || !is_prime(ring_size) {
        return Err(invalid(
            format!("{key}.ring_size"),
            format!("{ring_size} must be a prime from 2 to {MAX_RING_SIZE}"),
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
    if let Some(hc) = &v.health_check {
        check_health(&format!("{key}.health_check"), hc)?;
    }
    checks::check_slowstart(key, v.slowstart_ms.unwrap_or(0))?;
    if let Some(a) = &v.agent_check {
        checks::check_agent(&format!("{key}.agent_check"), a)?;
    }
    let backends = v
        .backend
        .into_iter()
        .enumerate()
        .map(|(j, b)| b.validate(&format!("{key}.backend[{j}]"), v.address, forwarding))
        .collect::<Result<Vec<_>, _>>()?;
    let vip = Vip {
        address: v.address,
        port: v.port,
        protocol: v.protocol,
        ring_size,
        algorithm: v.algorithm.unwrap_or_default(),
        per_instance: v.per_instance.unwrap_or(false),
        forwarding,
        health_check: v.health_check,
        on_down: v.on_down.unwrap_or_default(),
        all_down: v.all_down.unwrap_or_default(),
        backends,
        slowstart_ms: v.slowstart_ms.unwrap_or(0),
        agent_check: v.agent_check,
    };
    check_backends(key, &vip)?;
    Ok(vip)
}

/// Rules about a VIP's backend list as a whole.
pub(super) fn check_backends(key: &str, vip: &Vip) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for (j, b) in vip.backends.iter().enumerate() {
        if !seen.insert(b.address) {
            return Err(invalid(format!("{key}.backend[{j}].address"), format!("{} is listed twice", b.address)));
        }
    }
    if vip.algorithm == Algorithm::LeastConnections && vip.backends.len() > LC_MAX_CANDIDATES as usize {
        return Err(invalid(
            format!("{key}.backend"),
            format!(
                "{} backends; a least-connections VIP may have at most {LC_MAX_CANDIDATES} (the program \
                 compares them all for every new flow)",
                vip.backends.len()
            ),
        ));
    }
    if vip.backends.len() > vip.ring_size as usize {
        return Err(invalid(
            format!("{key}.ring_size"),
            format!(
                "{} is smaller than the {} backends; Maglev needs one entry per backend at least",
                vip.ring_size,
                vip.backends.len()
            ),
        ));
    }
    Ok(())
}

pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}
