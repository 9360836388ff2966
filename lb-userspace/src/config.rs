//! The configuration file: parsed strictly (unknown keys are errors), then
//! validated as a whole before anything touches the kernel. Every error names
//! the key it is about.

use std::{
    collections::HashSet,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    str::FromStr,
};

use lb_common::{DEFAULT_RING_SIZE, LC_MAX_CANDIDATES, MAX_BACKENDS, MAX_RING_SIZE, MAX_VIPS, VipKey};
use serde::Deserialize;

mod algorithm;
mod bgp;
mod checks;
pub use algorithm::Algorithm;
pub use bgp::BgpConfig;
pub use checks::{AgentCheck, INTERVAL_RANGE_MS, MAX_AGENT_SEND, MAX_SLOWSTART_MS};
mod hotspot;
pub use hotspot::HotSpotConfig;
mod values;
pub use values::{AdminState, AllDown, CheckKind, Forwarding, Mac, NextHop, OnDown, Protocol, XdpModeSetting};

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

impl Config {
    /// Fills what the file leaves to the host: `nexthop_mac = "auto"` becomes
    /// the gateway's MAC on `iface`, an unset `mtu` the interface's MTU, and
    /// the interface's own MAC is recorded.
    pub fn resolve_for(&mut self, iface: &str) -> Result<(), crate::neighbour::NeighbourError> {
        if self.global.nexthop_mac == Some(NextHop::Auto) {
            self.global.nexthop_mac = Some(NextHop::Mac(crate::neighbour::gateway_mac(iface)?));
        }
        if self.global.mtu.is_none() {
            self.global.mtu = Some(crate::neighbour::interface_mtu(iface)?);
        }
        self.global.interface_mac = Some(crate::neighbour::interface_mac(iface)?);
        Ok(())
    }
}

/// A VIP's health check, as HAProxy defines one.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// Port probed on each backend's own address (default: the VIP's port).
    pub port: Option<u16>,
    /// HTTP only: path requested (default "/").
    #[serde(default = "default_path")]
    pub path: String,
    /// HTTP only: status that counts as healthy (default 200).
    #[serde(default = "default_status")]
    pub expect_status: u16,
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Interval while a backend is changing state (up with failed probes,
    /// or down with good ones), as HAProxy's `fastinter` (default: interval).
    pub fastinter_ms: Option<u64>,
    /// Interval while a backend is down, as HAProxy's `downinter` (default: interval).
    pub downinter_ms: Option<u64>,
    /// Consecutive successes that bring a down backend back.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

fn default_path() -> String {
    "/".into()
}
fn default_status() -> u16 {
    200
}
fn default_interval() -> u64 {
    2000
}
fn default_timeout() -> u64 {
    1000
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub global: Global,
    pub vips: Vec<Vip>,
    /// `[bgp]`: announce the VIPs through the local BIRD; read at start only.
    pub bgp: Option<BgpConfig>,
    /// `[hot_spot]`: detection (and optional per-instance correction) of
    /// backends taking more than their weighted share.
    pub hot_spot: HotSpotConfig,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Global {
    pub interface: Option<String>,
    pub xdp_mode: XdpModeSetting,
    pub forwarding: Forwarding,
    pub nexthop_mac: Option<NextHop>,
    pub tunnel_source_v4: Option<Ipv4Addr>,
    pub tunnel_source_v6: Option<Ipv6Addr>,
    pub control_socket: PathBuf,
    pub metrics_listen: SocketAddr,
    pub pin_path: PathBuf,
    /// Path MTU toward the backends; `None`: the interface's MTU, read at start.
    pub mtu: Option<u16>,
    pub too_big: TooBig,
    /// New flows each CPU records in the connection table per second (the
    /// flood guard); 0: no limit.
    pub new_flow_limit: u32,
    /// The attach interface's MAC, read at start (not a file key): the
    /// program forwards only frames addressed to it.
    pub interface_mac: Option<Mac>,
    /// How often the agent recounts active connections from the connection
    /// table.
    pub active_reconcile_ms: u64,
    /// A TCP flow not seen for this long no longer counts as active.
    pub tcp_idle_timeout_s: u32,
    /// A UDP flow not seen for this long no longer counts as active.
    pub udp_idle_timeout_s: u32,
}

/// Defaults and ranges of the active-connection keys.
pub const DEFAULT_ACTIVE_RECONCILE_MS: u64 = 1000;
pub const ACTIVE_RECONCILE_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=60_000;
pub const DEFAULT_TCP_IDLE_TIMEOUT_S: u32 = 300;
pub const DEFAULT_UDP_IDLE_TIMEOUT_S: u32 = 30;
pub const IDLE_TIMEOUT_S_RANGE: std::ops::RangeInclusive<u32> = 1..=86_400;

/// Default of `global.new_flow_limit`: far above what a CPU accepts in
/// legitimate new connections, far below what a SYN flood brings.
pub const DEFAULT_NEW_FLOW_LIMIT: u32 = 250_000;

/// What to do with a packet that encapsulation would make larger than the MTU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TooBig {
    /// Answer with ICMP fragmentation-needed / ICMPv6 packet-too-big, so the
    /// client's path MTU discovery lowers its packet size.
    #[default]
    Icmp,
    /// Drop and count (`drop_too_big`).
    Drop,
}

/// Smallest and largest accepted `global.mtu`.
pub const MTU_RANGE: std::ops::RangeInclusive<u16> = 1280..=9216;

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

// The file's shape, exactly as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    global: RawGlobal,
    #[serde(default)]
    vip: Vec<VipSpec>,
    bgp: Option<bgp::RawBgp>,
    hot_spot: Option<hotspot::RawHotSpot>,
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
    control_socket: Option<PathBuf>,
    metrics_listen: Option<SocketAddr>,
    pin_path: Option<PathBuf>,
    mtu: Option<u16>,
    #[serde(default)]
    too_big: TooBig,
    new_flow_limit: Option<u32>,
    active_reconcile_ms: Option<u64>,
    tcp_idle_timeout_s: Option<u32>,
    udp_idle_timeout_s: Option<u32>,
}

/// Default control socket.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/lb/lb.sock";
/// Default metrics and status listener: loopback only.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9641";
/// Default bpffs directory; the layout version is appended.
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/lb";

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

    pub fn vip(&self, id: &VipId) -> Option<&Vip> {
        self.vips.iter().find(|v| v.id() == *id)
    }

    /// This configuration plus one VIP, validated like the file.
    pub fn with_vip(&self, spec: VipSpec) -> Result<Config, ConfigError> {
        let key = format!("vip[{}]", self.vips.len());
        let vip = validate_vip(&key, spec, self.global.forwarding, &self.global)?;
        let mut next = self.clone();
        next.vips.push(vip);
        next.check_whole()?;
        Ok(next)
    }

    /// This configuration with the VIP's backends changed by `edit`, validated.
    pub fn with_backends(
        &self,
        id: &VipId,
        edit: impl FnOnce(&mut Vec<BackendConfig>) -> Result<(), ConfigError>,
    ) -> Result<Config, ConfigError> {
        let mut next = self.clone();
        let (i, vip) = next
            .vips
            .iter_mut()
            .enumerate()
            .find(|(_, v)| v.id() == *id)
            .ok_or_else(|| invalid("vip", format!("no VIP {id}")))?;
        edit(&mut vip.backends)?;
        check_backends(&format!("vip[{i}]"), vip)?;
        next.check_whole()?;
        Ok(next)
    }

    /// Warnings for VIPs whose algorithm is per instance and not
    /// acknowledged (`per_instance = true`): logged at load and reload.
    pub fn per_instance_warnings(&self) -> Vec<String> {
        self.vips
            .iter()
            .filter(|v| v.algorithm.per_instance() && !v.per_instance)
            .map(|v| {
                format!(
                    "{v} uses {}: each lb instance decides from its own state, so several instances behind \
                     ECMP may send one flow to different backends; set per_instance = true to acknowledge",
                    v.algorithm
                )
            })
            .collect()
    }

    /// Rules about the configuration as a whole.
    fn check_whole(&self) -> Result<(), ConfigError> {
        if self.vips.len() > MAX_VIPS as usize {
            return Err(invalid("vip", format!("{} VIPs configured, at most {MAX_VIPS}", self.vips.len())));
        }
        let mut seen = HashSet::new();
        for (i, vip) in self.vips.iter().enumerate() {
            if !seen.insert(vip.key()) {
                return Err(invalid(format!("vip[{i}]"), format!("{vip} is configured twice")));
            }
        }
        if self.bgp.is_some()
            && let Some((i, vip)) =
                self.vips.iter().enumerate().find(|(_, v)| v.algorithm.per_instance() && !v.per_instance)
        {
            return Err(invalid(
                format!("vip[{i}].per_instance"),
                format!(
                    "{vip} uses {}, which each lb instance decides from its own state; with [bgp] several \
                     instances share the VIP behind ECMP, and a flow whose route moves to another instance \
                     may reach another backend. Set per_instance = true to accept that, or use maglev or source-hash",
                    vip.algorithm
                ),
            ));
        }
        let backends = self.backend_entries();
        if backends > MAX_BACKENDS as usize {
            return Err(invalid("vip.backend", format!("{backends} backends over all VIPs, at most {MAX_BACKENDS}")));
        }
        Ok(())
    }
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

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let g = raw.global;
    if let Some(iface) = g.interface.as_ref().filter(|i| i.is_empty() || i.len() > 15 || i.contains(['/', ' '])) {
        return Err(invalid("global.interface", format!("{iface:?} is not a valid interface name")));
    }
    let nexthop_mac = g
        .nexthop_mac
        .as_deref()
        .map(|s| s.parse::<NextHop>().map_err(|e| invalid("global.nexthop_mac", e)))
        .transpose()?;
    let metrics_listen = g.metrics_listen.unwrap_or_else(|| DEFAULT_METRICS_LISTEN.parse().unwrap());
    let global = Global {
        interface: g.interface,
        xdp_mode: g.xdp_mode,
        forwarding: g.forwarding,
        nexthop_mac,
        tunnel_source_v4: g.tunnel_source_v4,
        tunnel_source_v6: g.tunnel_source_v6,
        control_socket: g.control_socket.unwrap_or_else(|| DEFAULT_CONTROL_SOCKET.into()),
        metrics_listen,
        pin_path: g.pin_path.unwrap_or_else(|| DEFAULT_PIN_PATH.into()),
        mtu: g.mtu,
        too_big: g.too_big,
        new_flow_limit: g.new_flow_limit.unwrap_or(DEFAULT_NEW_FLOW_LIMIT),
        interface_mac: None,
        active_reconcile_ms: g.active_reconcile_ms.unwrap_or(DEFAULT_ACTIVE_RECONCILE_MS),
        tcp_idle_timeout_s: g.tcp_idle_timeout_s.unwrap_or(DEFAULT_TCP_IDLE_TIMEOUT_S),
        udp_idle_timeout_s: g.udp_idle_timeout_s.unwrap_or(DEFAULT_UDP_IDLE_TIMEOUT_S),
    };
    if !ACTIVE_RECONCILE_MS_RANGE.contains(&global.active_reconcile_ms) {
        return Err(invalid(
            "global.active_reconcile_ms",
            format!(
                "{} must be from {} to {}",
                global.active_reconcile_ms,
                ACTIVE_RECONCILE_MS_RANGE.start(),
                ACTIVE_RECONCILE_MS_RANGE.end()
            ),
        ));
    }
    for (key, v) in [
        ("global.tcp_idle_timeout_s", global.tcp_idle_timeout_s),
        ("global.udp_idle_timeout_s", global.udp_idle_timeout_s),
    ] {
        if !IDLE_TIMEOUT_S_RANGE.contains(&v) {
            return Err(invalid(
                key,
                format!("{v} must be from {} to {}", IDLE_TIMEOUT_S_RANGE.start(), IDLE_TIMEOUT_S_RANGE.end()),
            ));
        }
    }
    if let Some(mtu) = global.mtu.filter(|m| !MTU_RANGE.contains(m)) {
        return Err(invalid("global.mtu", format!("{mtu} must be from {} to {}", MTU_RANGE.start(), MTU_RANGE.end())));
    }
    if raw.vip.len() > MAX_VIPS as usize {
        return Err(invalid("vip", format!("{} VIPs configured, at most {MAX_VIPS}", raw.vip.len())));
    }
    let mut vips = Vec::with_capacity(raw.vip.len());
    for (i, v) in raw.vip.into_iter().enumerate() {
        vips.push(validate_vip(&format!("vip[{i}]"), v, global.forwarding, &global)?);
    }
    let bgp = raw.bgp.map(bgp::validate).transpose()?;
    let hot_spot = hotspot::validate(raw.hot_spot)?;
    let config = Config { global, vips, bgp, hot_spot };
    config.check_whole()?;
    Ok(config)
}

fn validate_vip(key: &str, v: VipSpec, default_fwd: Forwarding, g: &Global) -> Result<Vip, ConfigError> {
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
fn check_backends(key: &str, vip: &Vip) -> Result<(), ConfigError> {
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

fn check_health(key: &str, hc: &HealthCheck) -> Result<(), ConfigError> {
    if hc.port == Some(0) {
        return Err(invalid(format!("{key}.port"), "must be 1-65535"));
    }
    checks::check_intervals(key, hc)?;
    for (name, v) in [("rise", hc.rise), ("fall", hc.fall)] {
        if !(1..=100).contains(&v) {
            return Err(invalid(format!("{key}.{name}"), format!("{v} must be from 1 to 100")));
        }
    }
    if hc.kind == CheckKind::Http && !hc.path.starts_with('/') {
        return Err(invalid(format!("{key}.path"), format!("{:?} must start with /", hc.path)));
    }
    if !(100..=599).contains(&hc.expect_status) {
        return Err(invalid(format!("{key}.expect_status"), format!("{} is not an HTTP status", hc.expect_status)));
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

#[cfg(test)]
pub(crate) mod tests;
