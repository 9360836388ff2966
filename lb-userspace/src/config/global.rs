//! The `[global]` table: the settings of the instance as a whole (interface,
//! forwarding defaults, sockets, MTU, flood guard, connection ageing), their
//! defaults and ranges, and their validation.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
};

use serde::Deserialize;

use super::{Config, ConfigError, Forwarding, Mac, NextHop, XdpModeSetting, invalid};

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
    /// Entries of the connection table, fixed when the agent creates it.
    pub conntrack_capacity: u32,
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

/// `global.conntrack_capacity`: a power of two (the table is indexed by the
/// top bits of a hash), from 1024 to 2^24 (1 GiB of kernel memory at 64
/// bytes an entry).
pub const CONNTRACK_CAPACITY_RANGE: std::ops::RangeInclusive<u32> = 1024..=1 << 24;

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGlobal {
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
    conntrack_capacity: Option<u32>,
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

/// The validated `[global]` table, checked before the VIPs that depend on it.
pub(super) fn validate(g: RawGlobal) -> Result<Global, ConfigError> {
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
        conntrack_capacity: g.conntrack_capacity.unwrap_or(lb_common::CONNTRACK_CAPACITY),
        interface_mac: None,
        active_reconcile_ms: g.active_reconcile_ms.unwrap_or(DEFAULT_ACTIVE_RECONCILE_MS),
        tcp_idle_timeout_s: g.tcp_idle_timeout_s.unwrap_or(DEFAULT_TCP_IDLE_TIMEOUT_S),
        udp_idle_timeout_s: g.udp_idle_timeout_s.unwrap_or(DEFAULT_UDP_IDLE_TIMEOUT_S),
    };
    in_range("global.active_reconcile_ms", global.active_reconcile_ms, &ACTIVE_RECONCILE_MS_RANGE)?;
    in_range("global.tcp_idle_timeout_s", global.tcp_idle_timeout_s, &IDLE_TIMEOUT_S_RANGE)?;
    in_range("global.udp_idle_timeout_s", global.udp_idle_timeout_s, &IDLE_TIMEOUT_S_RANGE)?;
    in_range("global.conntrack_capacity", global.conntrack_capacity, &CONNTRACK_CAPACITY_RANGE)?;
    if !global.conntrack_capacity.is_power_of_two() {
        let below = 1u32 << (31 - global.conntrack_capacity.leading_zeros());
        return Err(invalid(
            "global.conntrack_capacity",
            format!("{} must be a power of two, such as {below} or {}", global.conntrack_capacity, below * 2),
        ));
    }
    if let Some(mtu) = global.mtu {
        in_range("global.mtu", mtu, &MTU_RANGE)?;
    }
    Ok(global)
}

/// An error naming `key` unless `v` lies in `range`.
fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    v: T,
    range: &std::ops::RangeInclusive<T>,
) -> Result<(), ConfigError> {
    if range.contains(&v) {
        return Ok(());
    }
    Err(invalid(key, format!("{v} must be from {} to {}", range.start(), range.end())))
}
