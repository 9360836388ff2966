//! Building the topology: the checks on the options, namespaces, the
//! bridge and one veth pair per host, addresses, routes, sysctls, and what
//! runs on the backends (`lb decap`, the servers).

use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::{
    Host, LB_IFACE, READY_TIMEOUT, TOPOLOGIES, Topology, TopologyOptions, VIP_NET_V4, VIP_NET_V6, default_lb_bin, mac,
    remove_topology_dir, sweep_stale_dirs, v6, warn_if_stale,
};
use crate::netns::{
    self, ChildGuard, Netns, attach_xdp_pass, disable_tx_csum, ip_in, run, sweep_stale_namespaces, sysctls,
};
use crate::traffic::Servers;

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
    /// Replaces the XDP_PASS program on the lb's switch port (where lb0's
    /// XDP_TX frames arrive) with `insns`, which must pass what the test
    /// needs to reach the bridge.
    pub fn set_lb_port_program(&mut self, name: &str, insns: &[u64]) -> Result<()> {
        let port = self.lb.port.clone();
        self.xdp_links.retain(|l| l.ifname != port);
        self.xdp_links.push(netns::attach_xdp_insns(&self.switch_ns, &port, name, insns)?);
        Ok(())
    }
}
