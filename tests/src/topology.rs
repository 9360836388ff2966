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

use std::ffi::CString;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::netns::{
    self, ChildGuard, Netns, XdpLink, attach_xdp_pass, disable_tx_csum, in_netns, ip_in, run, sweep_stale_namespaces,
    sysctls,
};
use crate::traffic::Servers;

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

/// `$LB_BIN`; else `lb` next to the running executable (the test binary
/// lives in `target/<profile>/deps`, the demo in `target/<profile>`), so a
/// release test run uses the release `lb`; else
/// `<workspace>/target/debug/lb`.
pub fn default_lb_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LB_BIN") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(mut dir) = exe.parent().map(Path::to_path_buf)
    {
        if dir.file_name().is_some_and(|n| n == "deps") {
            dir.pop();
        }
        let cand = dir.join("lb");
        if cand.is_file() {
            return cand;
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("debug").join("lb")
}

/// Warns (once per process) when the lb binary is older than one of the
/// files it was built from (as listed in cargo's dep-info `lb.d` next to
/// it): `cargo test -p lb-tests` does not rebuild the `lb` binary, so a
/// stale one would be tested.
pub(crate) fn warn_if_stale(lb_bin: &Path) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(bin_time) = std::fs::metadata(lb_bin).and_then(|m| m.modified()) else {
            return;
        };
        let Ok(dep_info) = std::fs::read_to_string(lb_bin.with_extension("d")) else {
            return;
        };
        let Some((_, deps)) = dep_info.lines().next().and_then(|l| l.split_once(": ")) else {
            return;
        };
        // Paths are separated by spaces; a space inside a path is "\ ".
        let deps = deps.replace("\\ ", "\u{0}");
        for dep in deps.split_whitespace().map(|d| d.replace('\u{0}', " ")) {
            if let Ok(t) = std::fs::metadata(&dep).and_then(|m| m.modified())
                && t > bin_time
            {
                eprintln!(
                    "lb-tests: warning: {} is older than {dep}; rebuild it (`cargo build -p lb-userspace`)",
                    lb_bin.display()
                );
                return;
            }
        }
    });
}

/// Mounts a private bpffs instance at `path` (created if needed). `lb run`
/// pins its maps and link under `global.pin_path`; `ip netns exec` mounts a
/// fresh sysfs on /sys, which hides the host's /sys/fs/bpf, and a shared
/// pin path would make topologies collide. A bpffs in the topology's own
/// directory is visible inside `ip netns exec` and private to the topology.
pub(crate) fn mount_bpffs(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("create {}", path.display()))?;
    let target = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: valid C strings; a plain bpffs mount without data.
    let rc = unsafe { libc::mount(c"bpf".as_ptr(), target.as_ptr(), c"bpf".as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        bail!("mount -t bpf bpf {}: {}", path.display(), std::io::Error::last_os_error());
    }
    Ok(())
}

/// Unmounts the topology directory's bpffs (if mounted) and removes the
/// directory. Leaves the directory alone if the unmount fails, so that
/// nothing is ever deleted through a mount.
pub(crate) fn remove_topology_dir(dir: &Path) {
    let bpffs = dir.join("bpffs");
    if bpffs.exists() {
        let Ok(target) = CString::new(bpffs.as_os_str().as_bytes()) else {
            return;
        };
        // SAFETY: a valid C string.
        if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
            let e = std::io::Error::last_os_error();
            // EINVAL: not a mount point (never mounted, or already gone).
            if e.raw_os_error() != Some(libc::EINVAL) {
                eprintln!("lb-tests: cleanup: umount {}: {e}", bpffs.display());
                return;
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Only unmounts the directory's bpffs (for `LB_TESTS_KEEP_DIR`).
fn remove_topology_dir_bpffs_only(dir: &Path) -> std::io::Result<()> {
    let target = CString::new(dir.join("bpffs").as_os_str().as_bytes())?;
    // SAFETY: a valid C string.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Removes `<tmp>/lbt<PID>x<N>` directories of harness processes that no
/// longer run (killed before they could clean up).
pub(crate) fn sweep_stale_dirs() {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("lbt") else {
            continue;
        };
        let Some((pid, n)) = rest.split_once('x') else {
            continue;
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if digits(pid) && digits(n) && !Path::new("/proc").join(pid).exists() {
            remove_topology_dir(&e.path());
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

/// Transport protocol of a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// How the lb forwards a VIP's packets to backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    Ipip,
    L2dsr,
}

impl Forwarding {
    pub fn as_str(self) -> &'static str {
        match self {
            Forwarding::Ipip => "ipip",
            Forwarding::L2dsr => "l2dsr",
        }
    }
}

/// One VIP of a generated config.
#[derive(Debug, Clone)]
pub struct VipSpec {
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Proto,
    pub forwarding: Forwarding,
    /// Maglev ring size (prime); `None`: the product's default.
    pub ring_size: Option<u32>,
    /// Indices (0-based) of the backends to use; `None`: all.
    pub backends: Option<Vec<usize>>,
    /// Weight per backend used (same order as `backends`); `None`: omitted.
    pub weights: Option<Vec<u32>>,
    /// The VIP's `health_check` as a TOML inline table, e.g.
    /// `{ kind = "tcp", port = 8080 }`; `None`: no health check.
    pub health_check: Option<String>,
    /// More `key = value` lines of the VIP's table, written as given
    /// (e.g. `slowstart_ms = 2000`).
    pub extra: Vec<String>,
    /// The VIP's `algorithm`; `None`: omitted (maglev).
    pub algorithm: Option<String>,
}

impl VipSpec {
    pub fn new(address: IpAddr, port: u16, protocol: Proto, forwarding: Forwarding) -> VipSpec {
        VipSpec {
            address,
            port,
            protocol,
            forwarding,
            ring_size: None,
            backends: None,
            weights: None,
            health_check: None,
            extra: Vec::new(),
            algorithm: None,
        }
    }
    pub fn tcp(address: impl Into<IpAddr>, port: u16, forwarding: Forwarding) -> VipSpec {
        VipSpec::new(address.into(), port, Proto::Tcp, forwarding)
    }
    pub fn udp(address: impl Into<IpAddr>, port: u16, forwarding: Forwarding) -> VipSpec {
        VipSpec::new(address.into(), port, Proto::Udp, forwarding)
    }
    pub fn ring_size(mut self, m: u32) -> VipSpec {
        self.ring_size = Some(m);
        self
    }
    /// Uses only these backends (0-based indices into the topology's).
    pub fn backends(mut self, indices: &[usize]) -> VipSpec {
        self.backends = Some(indices.to_vec());
        self
    }
    /// Sets the weights of the backends used, in order.
    pub fn weights(mut self, weights: &[u32]) -> VipSpec {
        self.weights = Some(weights.to_vec());
        self
    }
    /// Sets the `algorithm` (with `per_instance = true` for the per-instance ones).
    pub fn algorithm(mut self, name: &str) -> VipSpec {
        self.algorithm = Some(name.to_string());
        self
    }
    /// Sets the `health_check` inline table (see [`VipSpec::health_check`]).
    pub fn health_check(mut self, table: &str) -> VipSpec {
        self.health_check = Some(table.to_string());
        self
    }
    /// Adds a `key = value` line to the VIP's table (see [`VipSpec::extra`]).
    pub fn key(mut self, line: &str) -> VipSpec {
        self.extra.push(line.to_string());
        self
    }
    /// The VIP as the CLI and the API name it: `198.18.100.1:80/tcp`,
    /// `[2001:db8:100::1]:80/tcp`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.target(), self.protocol.as_str())
    }
    /// The VIP as a socket address.
    pub fn target(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
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
    /// Builds the topology: namespaces, bridge, veths, addresses, routes,
    /// sysctls, the XDP_PASS program on the lb's switch port, `lb decap` on
    /// the backends and the backends' servers. Needs root.
    pub fn new(opts: TopologyOptions) -> Result<Topology> {
        if !netns::is_root() {
            bail!("the network topology needs root");
        }
        if !(1..=9).contains(&opts.backends) {
            bail!("backends must be 1..=9, got {}", opts.backends);
        }
        for v in &opts.vips_v4 {
            if v.octets()[..3] != [198, 18, 100] {
                bail!("IPv4 VIP {v} is not in {VIP_NET_V4}");
            }
        }
        for v in &opts.vips_v6 {
            if v.segments()[..4] != [0x2001, 0xdb8, 0x100, 0] {
                bail!("IPv6 VIP {v} is not in {VIP_NET_V6}");
            }
        }
        let lb_bin = opts.lb_bin.clone().unwrap_or_else(default_lb_bin);
        if opts.start_decap && !lb_bin.is_file() {
            bail!(
                "lb binary not found at {} (build it with `cargo build -p lb-userspace`, or set LB_BIN / --lb-bin)",
                lb_bin.display()
            );
        }
        if opts.start_decap {
            warn_if_stale(&lb_bin);
        }
        sweep_stale_namespaces();
        sweep_stale_dirs();

        let n = TOPOLOGIES.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("lbt{}x{}-", std::process::id(), n);
        let dir = std::env::temp_dir().join(prefix.trim_end_matches('-'));
        remove_topology_dir(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;

        let host = |name: &str, ifname: &str, port: &str, id: u8, v4: Ipv4Addr, v6: Ipv6Addr| Host {
            name: name.to_string(),
            ns: format!("{prefix}{name}"),
            ifname: ifname.to_string(),
            mac: mac(id, 1),
            port: port.to_string(),
            port_mac: mac(id, 2),
            v4,
            v6,
        };
        let client = host("client", "eth0", "s-client", 0x01, Ipv4Addr::new(198, 18, 0, 1), v6(0x1));
        let lb = host("lb", LB_IFACE, "s-lb", 0x02, Ipv4Addr::new(198, 18, 0, 2), v6(0x2));
        let router = host("router", "eth0", "s-router", 0x03, Ipv4Addr::new(198, 18, 0, 254), v6(0xfe));
        let backends = (1..=opts.backends as u8)
            .map(|i| {
                host(
                    &format!("backend{i}"),
                    "eth0",
                    &format!("s-be{i}"),
                    0x10 + i,
                    Ipv4Addr::new(198, 18, 0, 10 + i),
                    // 2001:db8::1N, written like the IPv4 address.
                    v6(0x10 + u16::from(i)),
                )
            })
            .collect();
        let mut topo = Topology {
            switch_ns: format!("{prefix}switch"),
            prefix,
            dir,
            opts,
            lb_bin,
            client,
            lb,
            router,
            backends,
            servers: Vec::new(),
            lb_proc: None,
            decaps: Vec::new(),
            xdp_links: Vec::new(),
            namespaces: Vec::new(),
            configs: 0,
            pins_left: false,
        };
        // On error, `topo` is dropped here and removes what was made so far.
        topo.build()?;
        Ok(topo)
    }

    fn hosts(&self) -> Vec<Host> {
        let mut v = vec![self.client.clone(), self.lb.clone(), self.router.clone()];
        v.extend(self.backends.iter().cloned());
        v
    }

    fn build(&mut self) -> Result<()> {
        let started = Instant::now();
        mount_bpffs(&self.pin_path())?;
        let sw = self.switch_ns.clone();
        // Namespaces first, so that every interface is created with the
        // namespace's defaults (no DAD; no IPv6 at all on the switch).
        self.namespaces.push(Netns::create(&sw)?);
        sysctls(&sw, &[("net.ipv6.conf.all.disable_ipv6", "1"), ("net.ipv6.conf.default.disable_ipv6", "1")])?;
        for h in self.hosts() {
            self.namespaces.push(Netns::create(&h.ns)?);
            sysctls(
                &h.ns,
                &[
                    ("net.ipv6.conf.all.accept_dad", "0"),
                    ("net.ipv6.conf.default.accept_dad", "0"),
                    ("net.ipv6.conf.all.accept_ra", "0"),
                    ("net.ipv6.conf.default.accept_ra", "0"),
                    ("net.ipv4.conf.all.rp_filter", "0"),
                    ("net.ipv4.conf.default.rp_filter", "0"),
                ],
            )?;
        }
        ip_in(&sw, &["link", "add", "br0", "type", "bridge", "stp_state", "0", "mcast_snooping", "0"])?;
        ip_in(&sw, &["link", "set", "br0", "up"])?;

        for h in self.hosts() {
            self.connect(&h)?;
        }

        // client
        let c = self.client.clone();
        ip_in(&c.ns, &["link", "set", &c.ifname, "mtu", &self.opts.client_mtu.to_string()])?;
        ip_in(&c.ns, &["route", "add", VIP_NET_V4, "via", &self.lb.v4.to_string()])?;
        ip_in(&c.ns, &["-6", "route", "add", VIP_NET_V6, "via", &self.lb.v6.to_string()])?;
        disable_tx_csum(&c.ns, &c.ifname).context("turning tx checksum offload off on the client")?;

        // lb: its switch port receives the XDP_TX frames of lb0.
        let lb = self.lb.clone();
        self.xdp_links.push(attach_xdp_pass(&sw, &lb.port).context("XDP_PASS on the lb's switch port")?);

        // router
        let r = self.router.clone();
        sysctls(
            &r.ns,
            &[
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv6.conf.all.forwarding", "1"),
                ("net.ipv4.conf.all.send_redirects", "0"),
                ("net.ipv4.conf.default.send_redirects", "0"),
                (&format!("net/ipv4/conf/{}/send_redirects", r.ifname), "0"),
            ],
        )?;

        // backends
        for b in self.backends.clone() {
            for v in &self.opts.vips_v4 {
                ip_in(&b.ns, &["addr", "add", &format!("{v}/32"), "dev", "lo"])?;
            }
            for v in &self.opts.vips_v6 {
                ip_in(&b.ns, &["addr", "add", &format!("{v}/128"), "dev", "lo", "nodad"])?;
            }
            let ifc = |k: &str| format!("net/ipv4/conf/{}/{k}", b.ifname);
            sysctls(
                &b.ns,
                &[
                    ("net.ipv4.conf.all.arp_ignore", "1"),
                    ("net.ipv4.conf.all.arp_announce", "2"),
                    (&ifc("arp_ignore"), "1"),
                    (&ifc("arp_announce"), "2"),
                    (&ifc("rp_filter"), "0"),
                    ("net.ipv4.conf.lo.rp_filter", "0"),
                ],
            )?;
        }
        if self.opts.start_decap {
            for b in self.backends.clone() {
                let log = self.dir.join(format!("decap-{}.log", b.name));
                let child = ChildGuard::spawn_in(
                    &b.ns,
                    &format!("lb decap ({})", b.name),
                    &self.lb_bin,
                    &["decap", "--iface", &b.ifname, "--xdp-mode", &self.opts.xdp_mode],
                    &log,
                )?;
                self.decaps.push(child);
            }
            for d in &mut self.decaps {
                d.wait_for_line("ready", READY_TIMEOUT)?;
            }
        }
        if self.opts.servers {
            for b in self.backends.clone() {
                let mut tcp = Vec::new();
                let mut udp = Vec::new();
                let vips: Vec<IpAddr> = self
                    .opts
                    .vips_v4
                    .iter()
                    .map(|v| IpAddr::V4(*v))
                    .chain(self.opts.vips_v6.iter().map(|v| IpAddr::V6(*v)))
                    .collect();
                for v in &vips {
                    tcp.extend(self.opts.tcp_ports.iter().map(|p| SocketAddr::new(*v, *p)));
                    udp.extend(self.opts.udp_ports.iter().map(|p| SocketAddr::new(*v, *p)));
                }
                self.servers.push(Servers::start(&b.ns, &b.name, &tcp, &udp)?);
            }
        }
        if std::env::var_os("LB_TESTS_VERBOSE").is_some() {
            eprintln!("lb-tests: topology {} built in {:?}", self.prefix, started.elapsed());
        }
        Ok(())
    }

    /// Connects host `h` to the bridge with a veth pair, sets MACs and
    /// addresses, brings both ends up, and pins the host's MAC to its port.
    fn connect(&mut self, h: &Host) -> Result<()> {
        let sw = &self.switch_ns;
        ip_in(
            sw,
            &[
                "link",
                "add",
                &h.port,
                "address",
                &h.port_mac,
                "type",
                "veth",
                "peer",
                "name",
                &h.ifname,
                "address",
                &h.mac,
                "netns",
                &h.ns,
            ],
        )?;
        ip_in(sw, &["link", "set", &h.port, "master", "br0"])?;
        ip_in(sw, &["link", "set", &h.port, "up"])?;
        // The lb may send frames with another host's source MAC (l2dsr
        // rewrites only the destination), so the bridge must not learn:
        // every host's MAC is pinned to its port instead.
        run("bridge", &["-n", sw, "link", "set", "dev", &h.port, "learning", "off"])?;
        run("bridge", &["-n", sw, "fdb", "add", &h.mac, "dev", &h.port, "master", "static"])?;
        ip_in(&h.ns, &["addr", "add", &format!("{}/24", h.v4), "dev", &h.ifname])?;
        ip_in(&h.ns, &["addr", "add", &format!("{}/64", h.v6), "dev", &h.ifname, "nodad"])?;
        ip_in(&h.ns, &["link", "set", &h.ifname, "up"])?;
        Ok(())
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

    /// Runs `lb --socket <control socket> ARGS...` in the lb namespace
    /// (`lb status`, `lb stats`, `lb backend ...`) and returns its stdout.
    pub fn lb_cli(&self, args: &[&str]) -> Result<String> {
        let sock = self.control_socket();
        let mut full = vec!["--socket", sock.to_str().context("socket path is not UTF-8")?];
        full.extend_from_slice(args);
        let bin = self.lb_bin.to_str().context("lb path is not UTF-8")?;
        netns::exec_in(&self.lb.ns, bin, &full)
    }

    /// The backends' servers (e.g. to read how much each one served).
    pub fn servers(&self) -> &[Servers] {
        &self.servers
    }

    /// Renders an `lb run` config for `vips` (lb interface, router MAC as
    /// next hop, lb addresses as tunnel sources, backends' addresses and
    /// MACs) and writes it into the topology's directory.
    pub fn write_config(&self, vips: &[VipSpec]) -> PathBuf {
        let text = self.render_config(vips);
        // Named by a hash of the text: distinct configs get distinct files.
        let hash = text.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
        let path = self.dir.join(format!("lb-{hash:016x}.toml"));
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Replaces the XDP_PASS program on the lb's switch port (where lb0's
    /// XDP_TX frames arrive) with `insns`, which must pass what the test
    /// needs to reach the bridge.
    pub fn set_lb_port_program(&mut self, name: &str, insns: &[u64]) -> Result<()> {
        let port = self.lb.port.clone();
        self.xdp_links.retain(|l| l.ifname != port);
        self.xdp_links.push(netns::attach_xdp_insns(&self.switch_ns, &port, name, insns)?);
        Ok(())
    }

    /// The TOML text [`Topology::write_config`] writes.
    pub fn render_config(&self, vips: &[VipSpec]) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# generated by lb-tests for topology {}", self.prefix);
        let _ = writeln!(s, "[global]");
        let _ = writeln!(s, "interface = \"{}\"", self.lb.ifname);
        let _ = writeln!(s, "xdp_mode = \"{}\"", self.opts.xdp_mode);
        let _ = writeln!(s, "forwarding = \"ipip\"");
        let _ = writeln!(s, "nexthop_mac = \"{}\"", self.router.mac);
        let _ = writeln!(s, "tunnel_source_v4 = \"{}\"", self.lb.v4);
        let _ = writeln!(s, "tunnel_source_v6 = \"{}\"", self.lb.v6);
        // Per topology: a private bpffs and control socket (see mount_bpffs).
        let _ = writeln!(s, "pin_path = \"{}\"", self.pin_path().display());
        let _ = writeln!(s, "control_socket = \"{}\"", self.control_socket().display());
        for v in vips {
            let _ = writeln!(s);
            let _ = writeln!(s, "[[vip]]");
            let _ = writeln!(s, "address = \"{}\"", v.address);
            let _ = writeln!(s, "port = {}", v.port);
            let _ = writeln!(s, "protocol = \"{}\"", v.protocol.as_str());
            let _ = writeln!(s, "forwarding = \"{}\"", v.forwarding.as_str());
            if let Some(m) = v.ring_size {
                let _ = writeln!(s, "ring_size = {m}");
            }
            if let Some(hc) = &v.health_check {
                let _ = writeln!(s, "health_check = {hc}");
            }
            for line in &v.extra {
                let _ = writeln!(s, "{line}");
            }
            if let Some(a) = &v.algorithm {
                let _ = writeln!(s, "algorithm = \"{a}\"");
                if a == "round-robin" || a == "least-connections" {
                    let _ = writeln!(s, "per_instance = true");
                }
            }
            let idx: Vec<usize> = v.backends.clone().unwrap_or_else(|| (0..self.backends.len()).collect());
            for (k, i) in idx.iter().enumerate() {
                let b = &self.backends[*i];
                let addr = match v.address {
                    IpAddr::V4(_) => b.v4.to_string(),
                    IpAddr::V6(_) => b.v6.to_string(),
                };
                let _ = writeln!(s);
                let _ = writeln!(s, "  [[vip.backend]]");
                let _ = writeln!(s, "  address = \"{addr}\"");
                if let Some(w) = v.weights.as_ref().and_then(|w| w.get(k)) {
                    let _ = writeln!(s, "  weight = {w}");
                }
                let _ = writeln!(s, "  mac = \"{}\"", b.mac);
            }
        }
        s
    }

    /// Starts `lb run --config CONFIG` in the lb namespace and waits until
    /// it prints `ready`. A running lb is stopped first.
    pub fn start_lb(&mut self, config: &Path) -> Result<()> {
        self.spawn_lb(config, true)
    }

    /// Like [`Topology::start_lb`], but without `--detach-on-exit`: when this
    /// agent stops (or is killed, see [`Topology::kill_lb`]) forwarding goes
    /// on from the pinned maps and link, and the next `lb run` adopts them.
    /// The topology runs `lb detach` on drop if the pins may still be there;
    /// [`Topology::detach_lb`] does it earlier.
    pub fn start_lb_keeping_pins(&mut self, config: &Path) -> Result<()> {
        self.pins_left = true;
        self.spawn_lb(config, false)
    }

    fn spawn_lb(&mut self, config: &Path, detach_on_exit: bool) -> Result<()> {
        if !self.lb_bin.is_file() {
            bail!(
                "lb binary not found at {} (build it with `cargo build -p lb-userspace`, or set LB_BIN / --lb-bin)",
                self.lb_bin.display()
            );
        }
        self.stop_lb()?;
        warn_if_stale(&self.lb_bin);
        self.configs += 1;
        let log = self.dir.join(format!("lb-run-{}.log", self.configs));
        let config = config.to_str().context("config path is not UTF-8")?;
        let mut args = vec!["run", "--config", config];
        if detach_on_exit {
            args.push("--detach-on-exit");
        }
        let mut child = ChildGuard::spawn_in(&self.lb.ns, "lb run", &self.lb_bin, &args, &log)?;
        child.wait_for_line("ready", READY_TIMEOUT)?;
        self.lb_proc = Some(child);
        Ok(())
    }

    /// Stops a running `lb run` (SIGTERM) and checks that it exited 0.
    pub fn stop_lb(&mut self) -> Result<()> {
        let Some(mut child) = self.lb_proc.take() else {
            return Ok(());
        };
        match child.stop(Duration::from_secs(5)) {
            Some(s) if s.success() => Ok(()),
            Some(s) => bail!("lb run exited with {s} on SIGTERM\n--- stderr ---\n{}", child.log_text()),
            None => bail!("lb run: exit status unknown\n--- stderr ---\n{}", child.log_text()),
        }
    }

    /// SIGKILLs the running `lb run`, as a crash would end it: nothing is
    /// detached or unpinned. Returns its exit status (killed by signal 9).
    pub fn kill_lb(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.lb_proc.take().context("no lb run to kill")?;
        self.pins_left = true;
        child.kill().context("lb run: exit status unknown after SIGKILL")
    }

    /// Runs `lb detach --iface lb0 --pin-path PIN_PATH` in the lb namespace
    /// (for an agent that stopped without `--detach-on-exit`), and returns
    /// its stdout. No agent may be running.
    pub fn detach_lb(&mut self) -> Result<String> {
        if self.lb_proc.is_some() {
            bail!("lb run is still running; stop it first");
        }
        let pin = self.pin_path();
        let pin = pin.to_str().context("pin path is not UTF-8")?.to_string();
        let bin = self.lb_bin.to_str().context("lb path is not UTF-8")?.to_string();
        let out = netns::exec_in(&self.lb.ns, &bin, &["detach", "--iface", &self.lb.ifname, "--pin-path", &pin])?;
        self.pins_left = false;
        Ok(out)
    }

    /// Pid of the running `lb run`.
    pub fn lb_pid(&self) -> Option<u32> {
        self.lb_proc.as_ref().and_then(ChildGuard::pid)
    }

    /// The stderr log of the running `lb run` (empty when none runs).
    pub fn lb_log(&self) -> String {
        self.lb_proc.as_ref().map(ChildGuard::log_text).unwrap_or_default()
    }

    /// Like [`Topology::lb_cli`], but returns the exit code, stdout and
    /// stderr whatever the outcome (for refused requests).
    pub fn lb_cli_status(&self, args: &[&str]) -> Result<netns::CmdOutput> {
        let sock = self.control_socket();
        let mut full = vec!["--socket", sock.to_str().context("socket path is not UTF-8")?];
        full.extend_from_slice(args);
        let bin = self.lb_bin.to_str().context("lb path is not UTF-8")?;
        netns::exec_in_status(&self.lb.ns, bin, &full)
    }

    /// Fails if `lb run` or an `lb decap` has exited.
    pub fn check_children(&mut self) -> Result<()> {
        let mut dead = Vec::new();
        for c in self.lb_proc.iter_mut().chain(self.decaps.iter_mut()) {
            if let Some(status) = c.try_status() {
                dead.push(format!("{} exited ({status})\n--- stderr ---\n{}", c.name, c.log_text()));
            }
        }
        if dead.is_empty() { Ok(()) } else { bail!("{}", dead.join("\n")) }
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

    /// The stderr logs of `lb run` and of every `lb decap`.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for c in self.lb_proc.iter().chain(self.decaps.iter()) {
            let _ = writeln!(s, "--- {} stderr ---\n{}", c.name, c.log_text().trim_end());
        }
        s
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

impl Drop for Topology {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if panicking {
            eprintln!("lb-tests: topology {} torn down while panicking; logs:\n{}", self.prefix, self.logs());
        }
        for s in &mut self.servers {
            s.stop();
        }
        self.servers.clear();
        if let Some(mut c) = self.lb_proc.take() {
            c.stop(Duration::from_secs(2));
        }
        if self.pins_left
            && let Err(e) = self.detach_lb()
        {
            // Deleting the namespace and the bpffs below frees them anyway.
            eprintln!("lb-tests: cleanup: {e:#}");
        }
        for c in &mut self.decaps {
            c.stop(Duration::from_secs(2));
        }
        self.decaps.clear();
        self.xdp_links.clear();
        // Deleting a namespace deletes its end of every veth, and so both.
        while let Some(mut ns) = self.namespaces.pop() {
            if let Err(e) = ns.delete() {
                eprintln!("lb-tests: cleanup: {e:#}");
            }
        }
        if std::env::var_os("LB_TESTS_KEEP_DIR").is_some() {
            let _ = remove_topology_dir_bpffs_only(&self.dir);
            eprintln!("lb-tests: kept {}", self.dir.display());
        } else {
            remove_topology_dir(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::{Summary, TcpLoad, UdpLoad, tcp_client, udp_client};

    fn no_lb() -> TopologyOptions {
        TopologyOptions { start_decap: false, ..Default::default() }
    }

    #[test]
    fn config_renders() {
        // Rendering needs no namespaces: build the struct by hand.
        let h = |name: &str, id: u8, last: u8, last6: u16| Host {
            name: name.into(),
            ns: format!("x-{name}"),
            ifname: "eth0".into(),
            mac: mac(id, 1),
            port: format!("s-{name}"),
            port_mac: mac(id, 2),
            v4: Ipv4Addr::new(198, 18, 0, last),
            v6: v6(last6),
        };
        let topo = std::mem::ManuallyDrop::new(Topology {
            prefix: "x-".into(),
            dir: std::env::temp_dir(),
            opts: TopologyOptions::default(),
            lb_bin: PathBuf::new(),
            switch_ns: "x-switch".into(),
            client: h("client", 1, 1, 0x1),
            lb: Host { ifname: LB_IFACE.into(), ..h("lb", 2, 2, 0x2) },
            router: h("router", 3, 254, 0xfe),
            backends: vec![h("backend1", 0x11, 11, 0x11), h("backend2", 0x12, 12, 0x12)],
            servers: vec![],
            lb_proc: None,
            decaps: vec![],
            xdp_links: vec![],
            namespaces: vec![],
            configs: 0,
            pins_left: false,
        });
        let text = topo.render_config(&[
            VipSpec::tcp(VIP_V4, 80, Forwarding::Ipip).ring_size(251),
            VipSpec::tcp(VIP_V6, 80, Forwarding::L2dsr),
        ]);
        assert!(text.contains("interface = \"lb0\""), "{text}");
        assert!(text.contains("nexthop_mac = \"02:00:00:00:03:01\""), "{text}");
        assert!(text.contains("tunnel_source_v4 = \"198.18.0.2\""), "{text}");
        assert!(text.contains("tunnel_source_v6 = \"2001:db8::2\""), "{text}");
        assert!(text.contains("address = \"2001:db8:100::1\""), "{text}");
        assert!(text.contains("address = \"2001:db8::12\""), "{text}");
        assert!(text.contains("ring_size = 251"), "{text}");
        assert_eq!(text.matches("[[vip.backend]]").count(), 4, "{text}");
        assert!(text.contains("mac = \"02:00:00:00:12:01\""), "{text}");
    }

    /// Builds the topology without lb and checks the plumbing with real
    /// traffic: client -> backend directly (VIP route pointed at a backend),
    /// and client -> router -> backend (the path IPIP packets take), over
    /// IPv4 and IPv6; then checks that drop leaves nothing behind.
    #[test]
    fn topology_plumbing_without_lb() {
        if !netns::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let topo = Topology::new(no_lb()).unwrap();
        let prefix = topo.prefix().to_string();
        let dir = topo.dir().to_path_buf();
        let c = topo.client().clone();
        let r = topo.router().clone();
        let names = topo.backend_names();
        let sw = topo.switch_ns().to_string();
        let xdp = ip_in(&sw, &["link", "show", "dev", &topo.lb().port]).unwrap();
        assert!(xdp.contains("xdp"), "no XDP program on the lb's switch port: {xdp}");

        // Direct to backend1.
        ip_in(&c.ns, &["route", "replace", VIP_NET_V4, "via", "198.18.0.11"]).unwrap();
        ip_in(&c.ns, &["-6", "route", "replace", VIP_NET_V6, "via", "2001:db8::11"]).unwrap();
        for target in [SocketAddr::new(VIP_V4.into(), 80), SocketAddr::new(VIP_V6.into(), 80)] {
            let rs = tcp_client(&c.ns, &TcpLoad::new(target, 10)).unwrap();
            let s = Summary::new(&rs, &names);
            assert_eq!(s.failures, 0, "{target}: {s}");
            assert_eq!(s.per_backend["backend1"], 10, "{target}: {s}");
        }
        let rs = udp_client(&c.ns, &UdpLoad::new(SocketAddr::new(VIP_V4.into(), 5353), 5)).unwrap();
        let s = Summary::new(&rs, &names);
        assert_eq!((s.failures, s.per_backend["backend1"]), (0, 5), "{s}");

        // Through the router to backend2 (same segment: in and out of eth0).
        ip_in(&c.ns, &["route", "replace", VIP_NET_V4, "via", &r.v4.to_string()]).unwrap();
        ip_in(&c.ns, &["-6", "route", "replace", VIP_NET_V6, "via", &r.v6.to_string()]).unwrap();
        ip_in(&r.ns, &["route", "add", VIP_NET_V4, "via", "198.18.0.12"]).unwrap();
        ip_in(&r.ns, &["-6", "route", "add", VIP_NET_V6, "via", "2001:db8::12"]).unwrap();
        for target in [SocketAddr::new(VIP_V4.into(), 80), SocketAddr::new(VIP_V6.into(), 80)] {
            let rs = tcp_client(&c.ns, &TcpLoad::new(target, 10)).unwrap();
            let s = Summary::new(&rs, &names);
            assert_eq!(s.failures, 0, "{target}: {s}");
            assert_eq!(s.per_backend["backend2"], 10, "{target}: {s}");
        }
        drop(topo);
        let left: Vec<String> = netns::list_netns().unwrap().into_iter().filter(|n| n.starts_with(&prefix)).collect();
        assert!(left.is_empty(), "namespaces left behind: {left:?}");
        assert!(!dir.exists(), "{} left behind", dir.display());
    }

    /// Checks the XDP_TX path of the topology without the product: a
    /// hand-written XDP program on lb0 rewrites the destination MAC to
    /// backend1's and returns XDP_TX (a minimal l2dsr). This needs the
    /// XDP_PASS program on the lb's switch port and tx checksum offload off
    /// on the client.
    #[test]
    fn xdp_tx_path_without_lb() {
        if !netns::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let mut topo = Topology::new(no_lb()).unwrap();
        let c = topo.client().clone();
        let lb = topo.lb().clone();
        let b1 = topo.backends()[0].clone();
        // The program sends every frame to backend1, ARP and ND included,
        // so the client gets the lb's MAC statically.
        ip_in(
            &c.ns,
            &["neigh", "replace", &lb.v4.to_string(), "lladdr", &lb.mac, "dev", &c.ifname, "nud", "permanent"],
        )
        .unwrap();
        ip_in(
            &c.ns,
            &["-6", "neigh", "replace", &lb.v6.to_string(), "lladdr", &lb.mac, "dev", &c.ifname, "nud", "permanent"],
        )
        .unwrap();
        let m: Vec<u8> = b1.mac.split(':').map(|x| u8::from_str_radix(x, 16).unwrap()).collect();
        let insns = [
            netns::insn(0x61, 2, 1, 0, 0),                                            // r2 = ctx->data
            netns::insn(0x61, 3, 1, 4, 0),                                            // r3 = ctx->data_end
            netns::insn(0xbf, 4, 2, 0, 0),                                            // r4 = r2
            netns::insn(0x07, 4, 0, 0, 6),                                            // r4 += 6
            netns::insn(0x2d, 4, 3, 4, 0),                                            // if r4 > r3 goto pass
            netns::insn(0x62, 2, 0, 0, i32::from_le_bytes([m[0], m[1], m[2], m[3]])), // dst[0..4]
            netns::insn(0x6a, 2, 0, 4, i32::from(u16::from_le_bytes([m[4], m[5]]))),  // dst[4..6]
            netns::insn(0xb7, 0, 0, 0, 3),                                            // r0 = XDP_TX
            netns::insn(0x95, 0, 0, 0, 0),                                            // exit
            netns::insn(0xb7, 0, 0, 0, 2),                                            // pass: r0 = XDP_PASS
            netns::insn(0x95, 0, 0, 0, 0),                                            // exit
        ];
        topo.xdp_links.push(netns::attach_xdp_insns(&lb.ns, &lb.ifname, "t_l2fwd", &insns).unwrap());
        let names = topo.backend_names();
        for target in [SocketAddr::new(VIP_V4.into(), 80), SocketAddr::new(VIP_V6.into(), 80)] {
            let rs = tcp_client(&c.ns, &TcpLoad::new(target, 20)).unwrap();
            let s = Summary::new(&rs, &names);
            assert_eq!(s.failures, 0, "{target}: {s}\n{}", topo.diagnostics());
            assert_eq!(s.per_backend["backend1"], 20, "{target}: {s}");
        }
        let rs = udp_client(&c.ns, &UdpLoad::new(SocketAddr::new(VIP_V6.into(), 5353), 5)).unwrap();
        let s = Summary::new(&rs, &names);
        assert_eq!((s.failures, s.per_backend["backend1"]), (0, 5), "{s}");

        // Without the XDP_PASS program on the switch port, XDP_TX frames
        // are dropped: the traffic above really took the XDP path.
        topo.xdp_links.remove(0);
        let mut load = TcpLoad::new(SocketAddr::new(VIP_V4.into(), 80), 2);
        load.op_timeout = Duration::from_millis(500);
        let s = Summary::new(&tcp_client(&c.ns, &load).unwrap(), &names);
        assert_eq!(s.failures, 2, "{s}");
    }
}
