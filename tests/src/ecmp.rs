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
//! The client reaches the VIP only through the router. Each instance
//! encapsulates toward the backends with the router as next hop; backends
//! (`lb decap`, VIP on lo) answer the client directly through the router.
//! Everything is removed on drop, also while a test panics.

pub mod birdconf;
pub mod flows;

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::netns::{
    self, ChildGuard, CmdOutput, Netns, XdpLink, abort_requested, attach_xdp_pass, disable_tx_csum, ip_in, run,
    sweep_stale_namespaces, sysctls,
};
use crate::topology::{
    CLIENT_MTU, LB_IFACE, READY_TIMEOUT, VIP_NET_V4, VIP_V4, default_lb_bin, mount_bpffs, remove_topology_dir,
    sweep_stale_dirs, warn_if_stale,
};
use crate::traffic::Servers;

pub const ROUTER_LB_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
pub const ROUTER_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 254);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
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
    pub lb_bin: Option<PathBuf>,
}

impl Default for EcmpOptions {
    fn default() -> Self {
        EcmpOptions { instances: 3, backends: 3, ring_size: 251, withdraw_grace_ms: 300, lb_bin: None }
    }
}

/// One lb host: `lb run` and BIRD in its namespace.
pub struct Instance {
    pub name: String,
    pub ns: String,
    pub v4: Ipv4Addr,
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
        for ns in &all {
            self.namespaces.push(Netns::create(ns)?);
            sysctls(
                ns,
                &[
                    ("net.ipv6.conf.all.disable_ipv6", "1"),
                    ("net.ipv6.conf.default.disable_ipv6", "1"),
                    ("net.ipv4.conf.all.rp_filter", "0"),
                    ("net.ipv4.conf.default.rp_filter", "0"),
                ],
            )?;
        }
        ip_in(&sw, &["link", "add", "br0", "type", "bridge", "stp_state", "0", "mcast_snooping", "0"])?;
        ip_in(&sw, &["link", "set", "br0", "up"])?;

        // Client <-> router: a point-to-point veth.
        ip_in(&router, &["link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", &client])?;
        ip_in(&router, &["addr", "add", &format!("{ROUTER_CLIENT_SIDE}/24"), "dev", "eth1"])?;
        ip_in(&router, &["link", "set", "eth1", "up"])?;
        ip_in(&client, &["addr", "add", &format!("{CLIENT}/24"), "dev", "eth0"])?;
        ip_in(&client, &["link", "set", "eth0", "mtu", &CLIENT_MTU.to_string(), "up"])?;
        ip_in(&client, &["route", "add", VIP_NET_V4, "via", &ROUTER_CLIENT_SIDE.to_string()])?;
        disable_tx_csum(&client, "eth0").context("tx checksum offload off on the client")?;

        // Router, instances and backends on the bridge.
        let router_mac = self.router_mac.clone();
        self.attach(&router, "eth0", "s-router", &router_mac, ROUTER_LB_SIDE)?;
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
        for (k, inst) in self.instances.iter().enumerate() {
            let (ns, port, v4) = (inst.ns.clone(), inst.port.clone(), inst.v4);
            self.attach(&ns, LB_IFACE, &port, &mac(0x02 + k as u8), v4)?;
            // The bridge side receives lb0's XDP_TX frames.
            self.xdp_links.push(attach_xdp_pass(&sw, &port).with_context(|| format!("XDP_PASS on {port}"))?);
        }
        for (k, b) in self.backends.iter().enumerate() {
            let (ns, v4) = (b.ns.clone(), b.v4);
            self.attach(&ns, "eth0", &format!("s-be{}", k + 1), &mac(0x11 + k as u8), v4)?;
            ip_in(&ns, &["addr", "add", &format!("{VIP_V4}/32"), "dev", "lo"])?;
            ip_in(&ns, &["route", "add", "default", "via", &ROUTER_LB_SIDE.to_string()])?;
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
            let servers = Servers::start(&b.ns, &b.name, &[SocketAddr::new(VIP_V4.into(), VIP_PORT)], &[])?;
            self.servers.push(servers);
        }

        let peers: Vec<(String, Ipv4Addr)> = self.instances.iter().map(|i| (i.name.clone(), i.v4)).collect();
        let conf = birdconf::router(ROUTER_LB_SIDE, "eth0", VIP_NET_V4, &peers);
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
    /// the bridge) with `addr`/24.
    fn attach(&self, ns: &str, ifname: &str, port: &str, mac: &str, addr: Ipv4Addr) -> Result<()> {
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
        ip_in(ns, &["addr", "add", &format!("{addr}/24"), "dev", ifname])?;
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

    pub fn bird_socket(&self, name: &str) -> PathBuf {
        self.dir.join(format!("bird-{name}.ctl"))
    }

    /// The agent's include file of instance `k`.
    pub fn include_file(&self, k: usize) -> PathBuf {
        self.dir.join(format!("{}-vips.conf", self.instances[k].name))
    }

    pub fn control_socket(&self, k: usize) -> PathBuf {
        self.dir.join(format!("{}.sock", self.instances[k].name))
    }

    /// The `lb run` configuration of instance `k`: identical VIP tables on
    /// every instance, host-specific `[global]` and `[bgp]`.
    pub fn lb_config(&self, k: usize) -> String {
        let inst = &self.instances[k];
        let mut s = String::new();
        let _ = writeln!(s, "[global]\ninterface = \"{LB_IFACE}\"\nforwarding = \"ipip\"");
        let _ = writeln!(s, "nexthop_mac = \"{}\"\ntunnel_source_v4 = \"{}\"", self.router_mac, inst.v4);
        let _ = writeln!(s, "pin_path = \"{}\"", self.dir.join("bpffs").join(&inst.name).display());
        let _ = writeln!(s, "control_socket = \"{}\"", self.control_socket(k).display());
        let _ = writeln!(s, "\n[bgp]\nbird_socket = \"{}\"", self.bird_socket(&inst.name).display());
        let _ = writeln!(s, "config_file = \"{}\"", self.include_file(k).display());
        let _ = writeln!(s, "withdraw_grace_ms = {}", self.opts.withdraw_grace_ms);
        let _ = writeln!(s, "\n[[vip]]\naddress = \"{VIP_V4}\"\nport = {VIP_PORT}\nprotocol = \"tcp\"");
        let _ = writeln!(s, "ring_size = {}", self.opts.ring_size);
        let all: Vec<usize> = (0..self.backends.len()).collect();
        for i in inst.backends.as_ref().unwrap_or(&all) {
            let _ = writeln!(s, "  [[vip.backend]]\n  address = \"{}\"", self.backends[*i].v4);
        }
        s
    }

    /// Starts BIRD (unless running) and `lb run` on instance `k`.
    pub fn start_instance(&mut self, k: usize) -> Result<()> {
        let name = self.instances[k].name.clone();
        let ns = self.instances[k].ns.clone();
        if self.instances[k].bird.is_none() {
            let conf = birdconf::instance(self.instances[k].v4, LB_IFACE, ROUTER_LB_SIDE, &self.include_file(k));
            self.instances[k].bird = Some(self.start_bird(&ns, &name, &conf)?);
        }
        let config = self.dir.join(format!("{name}.toml"));
        std::fs::write(&config, self.lb_config(k)).with_context(|| format!("write {}", config.display()))?;
        self.instances[k].runs += 1;
        let log = self.dir.join(format!("lb-{name}-{}.log", self.instances[k].runs));
        let args = ["run", "--config", path_str(&config)?, "--detach-on-exit"];
        let mut child = ChildGuard::spawn_in(&ns, &format!("lb run ({name})"), &self.lb_bin, &args, &log)?;
        child.wait_for_line("ready", READY_TIMEOUT)?;
        self.instances[k].lb = Some(child);
        Ok(())
    }

    /// Gives instance `k` another backend set (indices) and reloads it: its
    /// table then differs from the others' (a file not rolled out everywhere).
    pub fn reload_with_backends(&mut self, k: usize, backends: &[usize]) -> Result<()> {
        self.instances[k].backends = Some(backends.to_vec());
        let config = self.dir.join(format!("{}.toml", self.instances[k].name));
        std::fs::write(&config, self.lb_config(k)).with_context(|| format!("write {}", config.display()))?;
        self.lb_cli(k, &["reload"]).map(|_| ())
    }

    /// SIGTERM to `lb run` of instance `k` (it withdraws, waits the grace,
    /// detaches); returns its exit status.
    pub fn stop_lb(&mut self, k: usize, grace: Duration) -> Result<std::process::ExitStatus> {
        let mut child = self.instances[k].lb.take().context("no lb run")?;
        child.stop(grace).context("lb run: exit status unknown")
    }

    /// A host dying: `lb run` SIGKILLed, its program detached (as the
    /// host's reboot would), BIRD SIGKILLed.
    pub fn kill_host(&mut self, k: usize) -> Result<()> {
        let inst = &mut self.instances[k];
        inst.lb.take().context("no lb run")?.kill();
        let pins = self.dir.join("bpffs").join(&inst.name);
        let args = ["detach", "--iface", LB_IFACE, "--pin-path", path_str(&pins)?];
        netns::exec_in(&inst.ns, path_str(&self.lb_bin)?, &args)?;
        inst.bird.take().context("no BIRD")?.kill();
        Ok(())
    }

    /// `lb --socket S ARGS...` on instance `k`, whatever its exit code.
    pub fn lb_cli_status(&self, k: usize, args: &[&str]) -> Result<CmdOutput> {
        let sock = self.control_socket(k);
        let mut full = vec!["--socket", path_str(&sock)?];
        full.extend_from_slice(args);
        netns::exec_in_status(&self.instances[k].ns, path_str(&self.lb_bin)?, &full)
    }

    /// `lb ARGS...` on instance `k`, which must succeed; its stdout.
    pub fn lb_cli(&self, k: usize, args: &[&str]) -> Result<String> {
        let out = self.lb_cli_status(k, args)?;
        if !out.success() {
            bail!("lb {} on {}: {out}", args.join(" "), self.instances[k].name);
        }
        Ok(out.stdout)
    }

    pub fn status(&self, k: usize) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.lb_cli(k, &["status", "--json"])?)?)
    }

    /// `birdc -s SOCKET ARGS...` of `router` or an instance.
    pub fn birdc(&self, name: &str, args: &[&str]) -> Result<String> {
        self.birdc_at(&self.bird_socket(name), args)
    }

    fn birdc_at(&self, socket: &Path, args: &[&str]) -> Result<String> {
        let mut full = vec!["-s", path_str(socket)?];
        full.extend_from_slice(args);
        run(path_str(&self.birdc)?, &full)
    }

    /// The router's kernel route to the VIP: its next hops (instance addresses).
    pub fn nexthops(&self) -> Result<Vec<Ipv4Addr>> {
        let out = ip_in(&self.router_ns, &["route", "show", &format!("{VIP_V4}/32")])?;
        let words: Vec<&str> = out.split_whitespace().collect();
        let mut hops: Vec<Ipv4Addr> =
            words.windows(2).filter(|w| w[0] == "via").filter_map(|w| w[1].parse().ok()).collect();
        hops.sort();
        Ok(hops)
    }

    /// The router's route (for messages).
    pub fn route_text(&self) -> String {
        ip_in(&self.router_ns, &["route", "show", &format!("{VIP_V4}/32")]).unwrap_or_else(|e| format!("{e:#}"))
    }

    /// Polls the route every 5 ms until `done(next hops)`; returns when.
    pub fn wait_route(&self, timeout: Duration, done: impl Fn(&[Ipv4Addr]) -> bool) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.nexthops()?) {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline || abort_requested() {
                bail!("the router's route did not change as expected within {timeout:?}: {}", self.route_text());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn wait_nexthops(&self, count: usize, timeout: Duration) -> Result<Instant> {
        self.wait_route(timeout, |h| h.len() == count)
            .with_context(|| format!("waiting for {count} next hops\n{}", self.logs()))
    }

    /// The instance the router sends a client flow to (its FIB, with the
    /// same L4 hash the forwarding path uses).
    pub fn path_of(&self, sport: u16) -> Result<String> {
        let (vip, client, sport) = (VIP_V4.to_string(), CLIENT.to_string(), sport.to_string());
        let args =
            ["route", "get", &vip, "from", &client, "iif", "eth1", "ipproto", "tcp", "sport", &sport, "dport", "80"];
        let out = ip_in(&self.router_ns, &args)?;
        let words: Vec<&str> = out.split_whitespace().collect();
        let via: Ipv4Addr = words
            .windows(2)
            .find(|w| w[0] == "via")
            .and_then(|w| w[1].parse().ok())
            .with_context(|| format!("no next hop in {out:?}"))?;
        let inst = self.instances.iter().find(|i| i.v4 == via).with_context(|| format!("{via} is no instance"))?;
        Ok(inst.name.clone())
    }

    /// Cuts (or restores) instance `k`'s link to the router: its bridge port
    /// goes down, as a dead host or a pulled cable looks to the router.
    pub fn set_link(&self, k: usize, up: bool) -> Result<()> {
        ip_in(&self.switch_ns, &["link", "set", &self.instances[k].port, if up { "up" } else { "down" }]).map(|_| ())
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
