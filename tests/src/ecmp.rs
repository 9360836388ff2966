//! Several lb instances behind a router that spreads flows over them with
//! ECMP, each instance announcing the VIP over BGP through its own BIRD.
//!
//! ```text
//!  client 198.18.1.1 ── eth1 router 198.18.1.254   (BIRD: one eBGP session per instance, BFD,
//!                            │ eth0 198.18.0.254    merged into one multipath route, L4 hashing)
//!                     ┌──────┴──── bridge (switch namespace) ─────────────┐
//!   lb1 198.18.0.2  lb2 .3  lb3 .4  (lb run + BIRD)      backend1 .11  backend2 .12 ...
//! ```
//!
//! With an IPv6 VIP (`EcmpOptions::vip`) the hosts also get IPv6 addresses
//! (client 2001:db8:1::1, router 2001:db8:1::fe and 2001:db8::fe, instances
//! 2001:db8::2.., backends 2001:db8::11..), the BGP sessions are IPv6 ones,
//! and the instances encapsulate IPv6 in IPv6; IPv4 stays for BIRD's router
//! ids. With an IPv4 VIP, IPv6 is off in every namespace.
//!
//! The client reaches the VIP only through the router. Each instance
//! encapsulates toward the backends with the router as next hop; backends
//! (`lb decap`, VIP on lo) answer the client directly through the router.
//! Everything is removed on drop, also while a test panics.

mod addrs;
pub mod birdconf;
pub mod flows;
mod instance;
mod route;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::netns::{
    self, ChildGuard, Netns, XdpLink, abort_requested, attach_xdp_pass, disable_tx_csum, ip_in, run,
    sweep_stale_namespaces, sysctls,
};
use crate::topology::{
    CLIENT_MTU, LB_IFACE, READY_TIMEOUT, VIP_NET_V4, VIP_NET_V6, VIP_V4, default_lb_bin, mount_bpffs,
    remove_topology_dir, sweep_stale_dirs, warn_if_stale,
};
use crate::traffic::Servers;

pub const ROUTER_LB_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
pub const ROUTER_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 254);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const ROUTER_LB_SIDE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe);
pub const ROUTER_CLIENT_SIDE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xfe);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
/// Port of the VIP (HTTP on every backend).
pub const VIP_PORT: u16 = 80;

#[derive(Debug, Clone)]
pub struct EcmpOptions {
    /// lb instances (2..=3).
    pub instances: usize,
    /// Backends (1..=9).
    pub backends: usize,
    /// Maglev ring size of the VIP (a prime).
    pub ring_size: u32,
    /// `bgp.withdraw_grace_ms` of every instance.
    pub withdraw_grace_ms: u64,
    /// BFD declares a silent neighbour dead after this many 100 ms
    /// intervals: 3 notices a cut link within 300 ms; more rides out
    /// longer stalls of a loaded machine (a stall longer than that takes
    /// every BGP session down at once).
    pub bfd_multiplier: u32,
    /// The VIP: [`VIP_V4`] or an IPv6 address in [`VIP_NET_V6`] (IPv6
    /// sessions, routes and tunnels, see the module docs).
    pub vip: IpAddr,
    pub lb_bin: Option<PathBuf>,
}

impl Default for EcmpOptions {
    fn default() -> Self {
        EcmpOptions {
            instances: 3,
            backends: 3,
            ring_size: 251,
            withdraw_grace_ms: 300,
            bfd_multiplier: 3,
            vip: VIP_V4.into(),
            lb_bin: None,
        }
    }
}

/// One lb host: `lb run` and BIRD in its namespace.
pub struct Instance {
    pub name: String,
    pub ns: String,
    pub v4: Ipv4Addr,
    /// Its IPv6 address (used with an IPv6 VIP only).
    pub v6: Ipv6Addr,
    /// Its port on the bridge (cut to simulate a failed host).
    pub port: String,
    bird: Option<ChildGuard>,
    lb: Option<ChildGuard>,
    runs: usize,
    /// Backends (indices) of its VIP when not all (see `reload_with_backends`).
    backends: Option<Vec<usize>>,
}

impl Instance {
    /// Pid of its running `lb run`.
    pub fn pid(&self) -> Option<u32> {
        self.lb.as_ref().and_then(ChildGuard::pid)
    }
}

pub struct Backend {
    pub name: String,
    pub ns: String,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

static BUILT: AtomicUsize = AtomicUsize::new(0);

pub struct Ecmp {
    prefix: String,
    dir: PathBuf,
    opts: EcmpOptions,
    lb_bin: PathBuf,
    bird: PathBuf,
    birdc: PathBuf,
    pub switch_ns: String,
    pub client_ns: String,
    pub router_ns: String,
    router_mac: String,
    pub instances: Vec<Instance>,
    pub backends: Vec<Backend>,
    router_bird: Option<ChildGuard>,
    // Teardown order (see Drop): servers, lb, BIRD, decaps, XDP links, namespaces.
    servers: Vec<Servers>,
    decaps: Vec<ChildGuard>,
    xdp_links: Vec<XdpLink>,
    namespaces: Vec<Netns>,
}

fn mac(host: u8) -> String {
    format!("02:00:00:01:{host:02x}:01")
}

/// 2001:db8::`last`, written like the IPv4 address (198.18.0.`last`).
fn lb_side_v6(last: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(last))
}

impl Ecmp {
    /// Builds the network, starts the backends, the router's BIRD and every
    /// instance (BIRD, then `lb run`), and waits until the router has a
    /// route to the VIP through every instance.
    pub fn new(opts: EcmpOptions) -> Result<Ecmp> {
        if !netns::is_root() {
            bail!("the ECMP topology needs root");
        }
        if !(2..=3).contains(&opts.instances) || !(1..=9).contains(&opts.backends) {
            bail!("instances must be 2..=3 and backends 1..=9");
        }
        let in_v6_net = |v: Ipv6Addr| v.segments()[..4] == [0x2001, 0xdb8, 0x100, 0];
        match opts.vip {
            IpAddr::V4(v) if v != VIP_V4 => bail!("the IPv4 VIP must be {VIP_V4} (the client routes {VIP_NET_V4})"),
            IpAddr::V6(v) if !in_v6_net(v) => bail!("IPv6 VIP {v} is not in {VIP_NET_V6}"),
            _ => {}
        }
        let lb_bin = opts.lb_bin.clone().unwrap_or_else(default_lb_bin);
        if !lb_bin.is_file() {
            bail!("lb binary not found at {} (cargo build -p lb-userspace, or set LB_BIN)", lb_bin.display());
        }
        warn_if_stale(&lb_bin);
        let (Some(bird), Some(birdc)) = (tool("bird"), tool("birdc")) else {
            bail!("bird or birdc not found: install Debian's bird2 (cargo xtask setup does)");
        };
        sweep_stale_namespaces();
        sweep_stale_dirs();
        // Counted from 500: `Topology` counts from 0 in the same process.
        let n = 500 + BUILT.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("lbt{}x{n}-", std::process::id());
        let dir = std::env::temp_dir().join(prefix.trim_end_matches('-'));
        remove_topology_dir(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let instances = (1..=opts.instances as u8)
            .map(|i| Instance {
                name: format!("lb{i}"),
                ns: format!("{prefix}lb{i}"),
                v4: Ipv4Addr::new(198, 18, 0, 1 + i),
                v6: lb_side_v6(1 + i),
                port: format!("s-lb{i}"),
                bird: None,
                lb: None,
                runs: 0,
                backends: None,
            })
            .collect();
        let backends = (1..=opts.backends as u8)
            .map(|i| Backend {
                name: format!("backend{i}"),
                ns: format!("{prefix}backend{i}"),
                v4: Ipv4Addr::new(198, 18, 0, 10 + i),
                v6: lb_side_v6(0x10 + i),
            })
            .collect();
        let mut e = Ecmp {
            switch_ns: format!("{prefix}switch"),
            client_ns: format!("{prefix}client"),
            router_ns: format!("{prefix}router"),
            prefix,
            dir,
            opts,
            lb_bin,
            bird,
            birdc,
            router_mac: mac(0xfe),
            instances,
            backends,
            router_bird: None,
            servers: Vec::new(),
            decaps: Vec::new(),
            xdp_links: Vec::new(),
            namespaces: Vec::new(),
        };
        // On error, `e` is dropped here and removes what was made so far.
        e.build()?;
        Ok(e)
    }

    fn build(&mut self) -> Result<()> {
        let started = Instant::now();
        mount_bpffs(&self.dir.join("bpffs"))?;
        let (sw, client, router) = (self.switch_ns.clone(), self.client_ns.clone(), self.router_ns.clone());
        let mut all = vec![sw.clone(), client.clone(), router.clone()];
        all.extend(self.instances.iter().map(|i| i.ns.clone()));
        all.extend(self.backends.iter().map(|b| b.ns.clone()));
        let v6 = self.is_v6();
        for ns in &all {
            self.namespaces.push(Netns::create(ns)?);
            let mut settings = vec![("net.ipv4.conf.all.rp_filter", "0"), ("net.ipv4.conf.default.rp_filter", "0")];
            // Set before any interface exists, so that every one inherits it.
            if v6 && *ns != sw {
                // No duplicate address detection (addresses usable at
                // once) and no router adverts (only our routes).
                settings.extend([
                    ("net.ipv6.conf.all.accept_dad", "0"),
                    ("net.ipv6.conf.default.accept_dad", "0"),
                    ("net.ipv6.conf.all.accept_ra", "0"),
                    ("net.ipv6.conf.default.accept_ra", "0"),
                ]);
            } else {
                settings.extend([("net.ipv6.conf.all.disable_ipv6", "1"), ("net.ipv6.conf.default.disable_ipv6", "1")]);
            }
            sysctls(ns, &settings)?;
        }
        ip_in(&sw, &["link", "add", "br0", "type", "bridge", "stp_state", "0", "mcast_snooping", "0"])?;
        ip_in(&sw, &["link", "set", "br0", "up"])?;

        // Client <-> router: a point-to-point veth.
        ip_in(&router, &["link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", &client])?;
        ip_in(&router, &["addr", "add", &format!("{ROUTER_CLIENT_SIDE}/24"), "dev", "eth1"])?;
        ip_in(&router, &["link", "set", "eth1", "up"])?;
        ip_in(&client, &["addr", "add", &format!("{CLIENT}/24"), "dev", "eth0"])?;
        if v6 {
            ip_in(&router, &["addr", "add", &format!("{ROUTER_CLIENT_SIDE_V6}/64"), "dev", "eth1", "nodad"])?;
            ip_in(&client, &["addr", "add", &format!("{CLIENT_V6}/64"), "dev", "eth0", "nodad"])?;
        }
        // Room for the 20 (IPv4) or 40 (IPv6) bytes of IP-in-IP.
        ip_in(&client, &["link", "set", "eth0", "mtu", &CLIENT_MTU.to_string(), "up"])?;
        ip_in(&client, &["route", "add", self.vip_net(), "via", &self.router_client_side().to_string()])?;
        disable_tx_csum(&client, "eth0").context("tx checksum offload off on the client")?;

        // Router, instances and backends on the bridge.
        let router_mac = self.router_mac.clone();
        self.attach(&router, "eth0", "s-router", &router_mac, ROUTER_LB_SIDE, ROUTER_LB_SIDE_V6)?;
        sysctls(
            &router,
            &[
                ("net.ipv4.ip_forward", "1"),
                // L4 hashing on the 5-tuple. Not policy 1 here: for packets
                // that crossed a veth from a local socket it reuses the
                // socket's hash, which TCP changes on a retransmission
                // timeout, and `ip route get` (Ecmp::path_of) could not
                // predict it. Policy 3 hashes the headers, as a router
                // does with packets from the wire under policy 1.
                ("net.ipv4.fib_multipath_hash_policy", "3"),
                // src, dst address, protocol, src, dst port
                ("net.ipv4.fib_multipath_hash_fields", "0x0037"),
                ("net.ipv4.conf.all.send_redirects", "0"),
                ("net.ipv4.conf.default.send_redirects", "0"),
                ("net/ipv4/conf/eth0/send_redirects", "0"),
            ],
        )?;
        if v6 {
            // The same hashing for IPv6 (the fields have the same bits;
            // the flow label, which TCP also changes, is left out).
            sysctls(
                &router,
                &[
                    ("net.ipv6.conf.all.forwarding", "1"),
                    ("net.ipv6.fib_multipath_hash_policy", "3"),
                    ("net.ipv6.fib_multipath_hash_fields", "0x0037"),
                ],
            )?;
        }
        for (k, inst) in self.instances.iter().enumerate() {
            let (ns, port) = (inst.ns.clone(), inst.port.clone());
            self.attach(&ns, LB_IFACE, &port, &mac(0x02 + k as u8), inst.v4, inst.v6)?;
            // The bridge side receives lb0's XDP_TX frames.
            self.xdp_links.push(attach_xdp_pass(&sw, &port).with_context(|| format!("XDP_PASS on {port}"))?);
        }
        for (k, b) in self.backends.iter().enumerate() {
            let ns = b.ns.clone();
            self.attach(&ns, "eth0", &format!("s-be{}", k + 1), &mac(0x11 + k as u8), b.v4, b.v6)?;
            ip_in(&ns, &["route", "add", "default", "via", &ROUTER_LB_SIDE.to_string()])?;
            if v6 {
                ip_in(&ns, &["addr", "add", &format!("{}/128", self.vip()), "dev", "lo", "nodad"])?;
                ip_in(&ns, &["-6", "route", "add", "default", "via", &ROUTER_LB_SIDE_V6.to_string()])?;
            } else {
                ip_in(&ns, &["addr", "add", &format!("{}/32", self.vip()), "dev", "lo"])?;
            }
            sysctls(
                &ns,
                &[
                    ("net.ipv4.conf.all.arp_ignore", "1"),
                    ("net.ipv4.conf.all.arp_announce", "2"),
                    ("net/ipv4/conf/eth0/arp_ignore", "1"),
                    ("net/ipv4/conf/eth0/arp_announce", "2"),
                ],
            )?;
            let log = self.dir.join(format!("decap-{}.log", b.name));
            let name = format!("lb decap ({})", b.name);
            let child = ChildGuard::spawn_in(&ns, &name, &self.lb_bin, &["decap", "--iface", "eth0"], &log)?;
            self.decaps.push(child);
        }
        for d in &mut self.decaps {
            d.wait_for_line("ready", READY_TIMEOUT)?;
        }
        for b in &self.backends {
            let servers = Servers::start(&b.ns, &b.name, &[SocketAddr::new(self.vip(), VIP_PORT)], &[])?;
            self.servers.push(servers);
        }

        let peers: Vec<(String, IpAddr)> =
            (0..self.instances.len()).map(|k| (self.instances[k].name.clone(), self.hop(k))).collect();
        let conf = birdconf::router(
            ROUTER_LB_SIDE,
            self.router_lb_side(),
            "eth0",
            self.opts.bfd_multiplier,
            self.vip_net(),
            &peers,
        );
        self.router_bird = Some(self.start_bird(&router, "router", &conf)?);
        for k in 0..self.instances.len() {
            self.start_instance(k)?;
        }
        self.wait_nexthops(self.instances.len(), Duration::from_secs(20))?;
        if std::env::var_os("LB_TESTS_VERBOSE").is_some() {
            eprintln!("lb-tests: ECMP topology {} built in {:?}", self.prefix, started.elapsed());
        }
        Ok(())
    }

    /// Connects `ns` to the bridge through a veth (`ifname` inside, `port` on
    /// the bridge) with `v4`/24 and, with an IPv6 VIP, `v6`/64.
    fn attach(&self, ns: &str, ifname: &str, port: &str, mac: &str, v4: Ipv4Addr, v6: Ipv6Addr) -> Result<()> {
        let sw = &self.switch_ns;
        ip_in(sw, &["link", "add", port, "type", "veth", "peer", "name", ifname, "address", mac, "netns", ns])?;
        ip_in(sw, &["link", "set", port, "master", "br0", "up"])?;
        // Every MAC pinned to its port, no learning, no flooding of unknown
        // unicast: a frame for a host whose port is down is dropped, as on a
        // switch whose port lost its link. Flooded, it would reach the other
        // instances' veths, which (unlike a NIC) do not filter by MAC, and
        // their XDP program would forward it.
        run("bridge", &["-n", sw, "link", "set", "dev", port, "learning", "off", "flood", "off"])?;
        run("bridge", &["-n", sw, "fdb", "add", mac, "dev", port, "master", "static"])?;
        ip_in(ns, &["addr", "add", &format!("{v4}/24"), "dev", ifname])?;
        if self.is_v6() {
            ip_in(ns, &["addr", "add", &format!("{v6}/64"), "dev", ifname, "nodad"])?;
        }
        ip_in(ns, &["link", "set", ifname, "up"])?;
        Ok(())
    }

    fn start_bird(&self, ns: &str, name: &str, conf: &str) -> Result<ChildGuard> {
        let conf_path = self.dir.join(format!("bird-{name}.conf"));
        std::fs::write(&conf_path, conf).with_context(|| format!("write {}", conf_path.display()))?;
        let socket = self.bird_socket(name);
        let _ = std::fs::remove_file(&socket);
        let pid = self.dir.join(format!("bird-{name}.pid"));
        let (c, s, p) = (path_str(&conf_path)?, path_str(&socket)?, path_str(&pid)?);
        let log = self.dir.join(format!("bird-{name}.log"));
        // -f: in the foreground, so ChildGuard owns (and kills) it.
        let child =
            ChildGuard::spawn_in(ns, &format!("bird ({name})"), &self.bird, &["-f", "-c", c, "-s", s, "-P", p], &log)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.birdc_at(&socket, &["show", "status"]).is_ok_and(|o| o.contains("Daemon is up")) {
                return Ok(child);
            }
            if Instant::now() > deadline || abort_requested() {
                bail!("BIRD ({name}) did not come up\n--- log ---\n{}", child.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        let children = self
            .router_bird
            .iter()
            .chain(self.instances.iter().flat_map(|i| i.bird.iter().chain(i.lb.iter())))
            .chain(self.decaps.iter());
        for c in children {
            let _ = writeln!(s, "--- {} stderr ---\n{}", c.name, c.log_text().trim_end());
        }
        s
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A program from `PATH` or the sbin directories (bird lives in /usr/sbin,
/// which a non-login `PATH` may lack).
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().with_context(|| format!("{} is not UTF-8", p.display()))
}

impl Drop for Ecmp {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("lb-tests: ECMP topology {} torn down while panicking; logs:\n{}", self.prefix, self.logs());
        }
        for s in &mut self.servers {
            s.stop();
        }
        // SIGTERM: each agent withdraws, waits its grace, detaches.
        for inst in &mut self.instances {
            if let Some(mut c) = inst.lb.take() {
                c.stop(Duration::from_secs(3));
            }
        }
        for inst in &mut self.instances {
            if let Some(mut c) = inst.bird.take() {
                c.stop(Duration::from_secs(2));
            }
        }
        if let Some(mut c) = self.router_bird.take() {
            c.stop(Duration::from_secs(2));
        }
        for c in &mut self.decaps {
            c.stop(Duration::from_secs(2));
        }
        self.xdp_links.clear();
        while let Some(mut ns) = self.namespaces.pop() {
            if let Err(e) = ns.delete() {
                eprintln!("lb-tests: cleanup: {e:#}");
            }
        }
        remove_topology_dir(&self.dir);
    }
}
