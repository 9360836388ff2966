//! A reusable test network: one L2 segment (a Linux bridge in a "switch"
//! namespace) with a client, the load balancer, a router (the IPIP next
//! hop) and N backends, each in its own namespace and connected to the
//! bridge by a veth pair.
//!
//! ```text
//!   client 198.18.0.1  ──┐
//!   lb     198.18.0.2  ──┤  (lb0: `lb run`, native XDP; its switch-side
//!   router 198.18.0.254──┤   peer runs an XDP_PASS program for XDP_TX)
//!   backendN 198.18.0.1N─┘  (eth0: `lb decap`; VIPs on lo; HTTP + UDP echo)
//! ```
//!
//! Addresses come only from 198.18.0.0/15 and 2001:db8::/32; no namespace
//! is routed to the host. Everything (servers, child processes, XDP links,
//! namespaces with their veths, temp files) is removed on drop, also while
//! a test panics.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::netns::{self, ChildGuard, Netns, XdpLink, in_netns, ip_in, run};
use crate::traffic::Servers;

mod agent;
mod build;
mod cleanup;
mod spec;
#[cfg(test)]
mod tests;

pub use agent::default_lb_bin;
pub(crate) use agent::warn_if_stale;
pub(crate) use build::mount_bpffs;
pub(crate) use cleanup::{remove_topology_dir, sweep_stale_dirs};
pub use spec::{Forwarding, Proto, VipSpec};

/// Prefix of the VIPs (IPv4) that the client routes through the lb.
pub const VIP_NET_V4: &str = "198.18.100.0/24";
/// Prefix of the VIPs (IPv6) that the client routes through the lb.
pub const VIP_NET_V6: &str = "2001:db8:100::/64";
/// Default IPv4 VIP.
pub const VIP_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
/// Default IPv6 VIP (2001:db8:100::1).
pub const VIP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
/// MTU of the client's interface (IPIP adds 20 / 40 bytes; others keep 1500).
pub const CLIENT_MTU: u32 = 1400;
/// Name of the lb's interface (where `lb run` attaches).
pub const LB_IFACE: &str = "lb0";
/// How long `lb run` / `lb decap` may take to print `ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// What to build.
#[derive(Debug, Clone)]
pub struct TopologyOptions {
    /// Number of backends (1..=9).
    pub backends: usize,
    /// IPv4 VIPs put on every backend's `lo` (must lie in [`VIP_NET_V4`]).
    pub vips_v4: Vec<Ipv4Addr>,
    /// IPv6 VIPs put on every backend's `lo` (must lie in [`VIP_NET_V6`]).
    pub vips_v6: Vec<Ipv6Addr>,
    /// TCP ports the backends' HTTP servers listen on (on every VIP).
    pub tcp_ports: Vec<u16>,
    /// UDP ports the backends' echo servers listen on (on every VIP).
    pub udp_ports: Vec<u16>,
    /// Run `lb decap` on every backend (needs the lb binary).
    pub start_decap: bool,
    /// Start the in-process servers on the backends.
    pub servers: bool,
    /// Path of the `lb` binary; `None`: [`default_lb_bin`].
    pub lb_bin: Option<PathBuf>,
    /// XDP mode for `lb decap` and in generated configs (`native` | `skb`).
    pub xdp_mode: String,
    /// MTU of the client's link: [`CLIENT_MTU`] leaves room for IP-in-IP;
    /// 1500 makes lb answer too-big packets (path MTU discovery).
    pub client_mtu: u32,
}

impl Default for TopologyOptions {
    fn default() -> Self {
        TopologyOptions {
            backends: 3,
            vips_v4: vec![VIP_V4],
            vips_v6: vec![VIP_V6],
            tcp_ports: vec![80],
            udp_ports: vec![5353],
            start_decap: true,
            servers: true,
            lb_bin: None,
            xdp_mode: "native".into(),
            client_mtu: CLIENT_MTU,
        }
    }
}
/// One host of the topology.
#[derive(Debug, Clone)]
pub struct Host {
    /// Role name: `client`, `lb`, `router`, `backend1`, ...
    pub name: String,
    /// Its namespace.
    pub ns: String,
    /// Its interface towards the switch.
    pub ifname: String,
    /// MAC of that interface.
    pub mac: String,
    /// Name of the switch-side veth peer (in the switch namespace).
    pub port: String,
    /// MAC of the switch-side peer.
    pub port_mac: String,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}
static TOPOLOGIES: AtomicUsize = AtomicUsize::new(0);

/// A built topology; see the module docs. Dropping it tears everything down.
pub struct Topology {
    prefix: String,
    dir: PathBuf,
    opts: TopologyOptions,
    lb_bin: PathBuf,
    switch_ns: String,
    client: Host,
    lb: Host,
    router: Host,
    backends: Vec<Host>,
    // Teardown order (see Drop): servers, lb, decaps, XDP links, namespaces.
    servers: Vec<Servers>,
    lb_proc: Option<ChildGuard>,
    decaps: Vec<ChildGuard>,
    xdp_links: Vec<XdpLink>,
    namespaces: Vec<Netns>,
    configs: usize,
    /// An `lb run` without `--detach-on-exit` ran (or one was killed): its
    /// pinned maps and link may still be there; drop runs `lb detach`.
    pins_left: bool,
}

fn mac(host: u8, side: u8) -> String {
    format!("02:00:00:00:{host:02x}:{side:02x}")
}
impl Topology {
    fn hosts(&self) -> Vec<Host> {
        let mut v = vec![self.client.clone(), self.lb.clone(), self.router.clone()];
        v.extend(self.backends.iter().cloned());
        v
    }
    /// Prefix of every namespace of this topology (`lbt<pid>x<n>-`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// Directory of this topology's configs and logs (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn switch_ns(&self) -> &str {
        &self.switch_ns
    }
    pub fn client(&self) -> &Host {
        &self.client
    }
    pub fn lb(&self) -> &Host {
        &self.lb
    }
    pub fn router(&self) -> &Host {
        &self.router
    }
    pub fn backends(&self) -> &[Host] {
        &self.backends
    }
    /// Backend names (`backend1`, ...), as the servers answer.
    pub fn backend_names(&self) -> Vec<String> {
        self.backends.iter().map(|b| b.name.clone()).collect()
    }
    pub fn lb_bin(&self) -> &Path {
        &self.lb_bin
    }
    pub fn options(&self) -> &TopologyOptions {
        &self.opts
    }
    /// The bpffs directory `lb run` pins under (`global.pin_path`): a
    /// private bpffs mounted in the topology's directory.
    pub fn pin_path(&self) -> PathBuf {
        self.dir.join("bpffs")
    }

    /// The control socket of `lb run` (`global.control_socket`).
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("lb.sock")
    }

    /// The backends' servers (e.g. to read how much each one served).
    pub fn servers(&self) -> &[Servers] {
        &self.servers
    }

    /// Packets the router has forwarded so far: (IPv4, IPv6). Only IPIP
    /// traffic goes through the router, so l2dsr traffic leaves these alone.
    pub fn router_forwarded(&self) -> Result<(u64, u64)> {
        in_netns(&self.router.ns, || {
            // /proc/net is the thread group leader's view; this thread's
            // namespace is under /proc/thread-self.
            let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp")?;
            let mut ip = snmp.lines().filter(|l| l.starts_with("Ip: "));
            let (names, values) = (ip.next().context("no Ip: header")?, ip.next().context("no Ip: values")?);
            let v4 = names
                .split_whitespace()
                .zip(values.split_whitespace())
                .find(|(n, _)| *n == "ForwDatagrams")
                .context("no Ip ForwDatagrams")?
                .1
                .parse()?;
            let snmp6 = std::fs::read_to_string("/proc/thread-self/net/snmp6")?;
            let v6 = snmp6
                .lines()
                .find_map(|l| l.strip_prefix("Ip6OutForwDatagrams"))
                .context("no Ip6OutForwDatagrams")?
                .trim()
                .parse()?;
            Ok((v4, v6))
        })
    }

    /// Interface statistics of every host and the XDP counters of the lb
    /// side (for failure reports).
    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        for h in self.hosts() {
            let out = ip_in(&h.ns, &["-s", "link", "show", "dev", &h.ifname]).unwrap_or_else(|e| format!("{e:#}"));
            let _ = writeln!(s, "--- {} ({}) ---\n{}", h.name, h.ns, out.trim_end());
        }
        let out =
            ip_in(&self.switch_ns, &["-s", "link", "show", "dev", &self.lb.port]).unwrap_or_else(|e| format!("{e:#}"));
        let _ = writeln!(s, "--- switch port {} ---\n{}", self.lb.port, out.trim_end());
        // ethtool is optional here (the harness itself does not need it).
        if run("ethtool", &["--version"]).is_ok() {
            let mut ifaces =
                vec![(self.lb.ns.clone(), self.lb.ifname.clone()), (self.switch_ns.clone(), self.lb.port.clone())];
            ifaces.extend(self.backends.iter().map(|b| (b.ns.clone(), b.ifname.clone())));
            for (ns, ifname) in ifaces {
                if let Ok(out) = netns::exec_in(&ns, "ethtool", &["-S", &ifname]) {
                    let xdp: Vec<&str> = out.lines().filter(|l| l.contains("xdp")).collect();
                    let _ = writeln!(s, "--- ethtool -S {ifname} in {ns} (xdp) ---\n{}", xdp.join("\n"));
                }
            }
        }
        match self.router_forwarded() {
            Ok((v4, v6)) => {
                let _ = writeln!(s, "--- router forwarded: {v4} IPv4, {v6} IPv6 packets ---");
            }
            Err(e) => {
                let _ = writeln!(s, "--- router counters: {e:#} ---");
            }
        }
        s
    }
}

fn v6(last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last)
}
