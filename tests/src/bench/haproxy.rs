//! Part 4: lb against HAProxy (Debian's, TCP mode) on the same veth
//! topology (`lb_tests::topology`: client, balancer host, 3 backends on one
//! bridge), the same backends, the same client load and the same core
//! budget.
//!
//! - lb: `lb run` on lb0, VIP 198.18.100.1:80/tcp in l2dsr mode (so the
//!   topology's router, the IPIP next hop, is not on either path: both go
//!   client -> balancer host -> backend). Backends answer directly.
//! - HAProxy: `haproxy -db` in the balancer's namespace, `nbthread 1`, TCP
//!   mode, listening on 198.18.0.2:8080, round robin to the backends' own
//!   addresses. Answers go back through it.
//! - Backends: a small HTTP server of the bench (worker threads, blocking
//!   accept, pre-built answer) on both the VIP and the backend's own address.
//!
//! CPU placement (the same for both sides): every host's veth has threaded
//! NAPI, so a host's receive processing runs in its own kernel thread. The
//! balancer CPU (the last one) runs lb0's NAPI thread (lb's XDP program;
//! HAProxy's TCP receive path) and HAProxy's process; CPU 0 runs the client,
//! the backends and their NAPI threads. Both CPUs' busy time is read from
//! /proc/stat during the new-connections run, and the CPU time of the
//! balancer's threads (lb0's NAPI thread, ksoftirqd of the balancer CPU,
//! HAProxy): `*.cpu_us_per_conn` is the latter per connection, the
//! intrinsic cost. Everything measured runs at nice -20 so that other jobs
//! on the machine take little from it.
//!
//! Workloads, from the client namespace:
//! - new connections per second: one epoll thread, 64 connections in
//!   flight, each connect, one request with `Connection: close`, read the
//!   answer until the server closes ([`super::connload`]);
//! - latency: one client, one new connection per request, sequential;
//!   median and p99;
//! - packets per second: 8 keep-alive connections doing request/answer as
//!   fast as they can; packets the switch delivered to the balancer host
//!   (tx counter of its switch port) per second.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lb_tests::netns::{self, ChildGuard, in_netns, spawn_in_netns, sysctls};
use lb_tests::topology::{Forwarding, Topology, VIP_V4, VipSpec};

use super::httpsrv::BenchServer;
use super::report::{Report, Stat, Table, percentile_sorted};
use super::{Budget, aborted, connload, cpus, onecpu, sys};

const HAPROXY: &str = "/usr/sbin/haproxy";
const HAPROXY_PORT: u16 = 8080;
const KEEPALIVE_CONNS: usize = 8;
const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// Installs Debian's haproxy with apt-get when it is missing.
pub fn ensure_haproxy() -> Result<PathBuf> {
    if Path::new(HAPROXY).is_file() {
        return Ok(HAPROXY.into());
    }
    eprintln!("lb-bench: installing Debian's haproxy (apt-get install -y haproxy) ...");
    let install = || {
        std::process::Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "haproxy"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status()
    };
    let ok = install().map(|s| s.success()).unwrap_or(false);
    if !ok {
        let _ = std::process::Command::new("apt-get")
            .arg("update")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status();
        let ok = install().map(|s| s.success()).unwrap_or(false);
        if !ok || !Path::new(HAPROXY).is_file() {
            bail!("haproxy is not installed and `apt-get install haproxy` failed");
        }
    }
    Ok(HAPROXY.into())
}

/// Reads one answer (head + Content-Length body).
fn read_answer(s: &mut TcpStream, pending: &mut Vec<u8>) -> Result<()> {
    let mut buf = [0u8; 2048];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                bail!("answer: {}", head.lines().next().unwrap_or(""));
            }
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if pending.len() >= end + 4 + len {
                pending.drain(..end + 4 + len);
                return Ok(());
            }
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("connection closed before the answer");
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

/// One short request on a new connection; waits for the server's close.
fn one_request(target: SocketAddr) -> Result<()> {
    let mut s = TcpStream::connect_timeout(&target, OP_TIMEOUT)?;
    s.set_read_timeout(Some(OP_TIMEOUT))?;
    s.set_nodelay(true)?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut pending = Vec::new();
    read_answer(&mut s, &mut pending)?;
    // The server closes first: wait for it, so TIME_WAIT stays there.
    let mut b = [0u8; 64];
    let _ = s.read(&mut b);
    Ok(())
}

/// What one new-connections run measured.
pub(super) struct ConnRun {
    pub(super) per_s: f64,
    failed: u64,
    /// Busy CPU-seconds of the balancer's CPU and of the generator's.
    pub(super) bal: cpus::CpuTime,
    gen_busy: f64,
    /// CPU-seconds of the balancer's own threads (NAPI thread of its veth,
    /// ksoftirqd of its CPU, HAProxy's process).
    pub(super) procs: f64,
    pub(super) ok: u64,
    secs: f64,
}

/// New connections per second from the epoll generator ([`connload`]),
/// pinned to `place.load`; CPU use of both CPUs and of `procs` over the run.
fn conn_rate(client_ns: &str, target: SocketAddr, secs: f64, place: &Placement, procs: &[u32]) -> Result<ConnRun> {
    let SocketAddr::V4(t4) = target else { bail!("IPv4 target expected") };
    let proc_cpu = || -> Result<f64> { procs.iter().map(|&p| sys::process_cpu_seconds(p)).sum() };
    let (b0, g0, p0) = (cpus::cpu_time(place.bal)?, cpus::cpu_time(place.load)?, proc_cpu()?);
    let start = Instant::now();
    let (ok, failed) = sys::scoped_in_netns(client_ns, None, || {
        cpus::pin_self(place.load)?;
        connload::run(t4, secs, OP_TIMEOUT)
    })?;
    let el = start.elapsed().as_secs_f64();
    let (b1, g1, p1) = (cpus::cpu_time(place.bal)?, cpus::cpu_time(place.load)?, proc_cpu()?);
    Ok(ConnRun { per_s: ok as f64 / el, failed, bal: b1 - b0, gen_busy: (g1 - g0).busy, procs: p1 - p0, ok, secs: el })
}

/// Which CPU does what: `bal` runs the balancer (HAProxy's process, or the
/// NAPI thread of lb0 where lb's XDP program runs); `load` runs the client,
/// the backends and their NAPI threads.
struct Placement {
    bal: usize,
    load: usize,
}

/// Latency of `n` sequential short requests, each on a new connection (µs).
fn latency(client_ns: &str, target: SocketAddr, n: usize, cpu: usize) -> Result<Vec<f64>> {
    sys::scoped_in_netns(client_ns, None, move || {
        cpus::pin_self(cpu)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            one_request(target)?;
            v.push(t.elapsed().as_secs_f64() * 1e6);
        }
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        Ok(v)
    })
}

/// Keep-alive request/answer loops: (requests per second, failures).
fn keepalive_rate(client_ns: &str, target: SocketAddr, secs: f64, cpu: usize) -> Result<(f64, u64)> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let handles: Vec<_> = (0..KEEPALIVE_CONNS)
        .map(|i| {
            spawn_in_netns(client_ns, &format!("bench-ka{i}"), move || {
                cpus::pin_self(cpu)?;
                let (mut ok, mut failed) = (0u64, 0u64);
                let mut conn: Option<(TcpStream, Vec<u8>)> = None;
                while Instant::now() < deadline && !netns::abort_requested() {
                    if conn.is_none() {
                        match TcpStream::connect_timeout(&target, OP_TIMEOUT) {
                            Ok(s) => {
                                s.set_read_timeout(Some(OP_TIMEOUT))?;
                                s.set_nodelay(true)?;
                                conn = Some((s, Vec::new()));
                            }
                            Err(_) => {
                                failed += 1;
                                continue;
                            }
                        }
                    }
                    let (s, pending) = conn.as_mut().unwrap();
                    let r = s
                        .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
                        .map_err(anyhow::Error::from)
                        .and_then(|_| read_answer(s, pending));
                    match r {
                        Ok(()) => ok += 1,
                        Err(_) => {
                            failed += 1;
                            conn = None;
                        }
                    }
                }
                Ok((ok, failed))
            })
        })
        .collect::<Result<_>>()?;
    let (mut ok, mut failed) = (0, 0);
    for h in handles {
        let (o, f) = h.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??;
        ok += o;
        failed += f;
    }
    Ok((ok as f64 / start.elapsed().as_secs_f64(), failed))
}

/// Waits until `target` accepts connections from the client namespace.
fn wait_listening(client_ns: &str, target: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = in_netns(client_ns, move || Ok(one_request(target).is_ok()))?;
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{target} does not answer");
        }
        aborted()?;
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[derive(Default)]
struct Side {
    conn_per_s: Vec<f64>,
    conn_failed: u64,
    pps: Vec<f64>,
    req_per_s: Vec<f64>,
    lat_p50_us: Vec<f64>,
    lat_p99_us: Vec<f64>,
    cpu_cores: Vec<f64>,
    /// CPU time of the balancer's threads per connection (µs): lb0's NAPI
    /// thread(s), ksoftirqd of the balancer CPU, HAProxy's process.
    cpu_us_per_conn: Vec<f64>,
    /// Everything the balancer CPU did per connection (µs, /proc/stat;
    /// includes other jobs on the machine), and the softirq share of it.
    busy_us_per_conn: Vec<f64>,
    softirq_share: Vec<f64>,
    /// Busy fraction of each CPU during the new-connections run.
    bal_busy: Vec<f64>,
    gen_busy: Vec<f64>,
}

/// Runs the three workloads against `target`; `pid` (HAProxy) gets its CPU
/// use measured during the keep-alive run.
fn workloads(
    topo: &Topology,
    target: SocketAddr,
    pid: Option<u32>,
    place: &Placement,
    budget: &Budget,
    side: &mut Side,
) -> Result<()> {
    let client = topo.client().ns.clone();
    wait_listening(&client, target)?;
    // lb0's NAPI thread(s) run lb's XDP program, and HAProxy's receive path.
    let mut procs = cpus::threaded_napi_on(&topo.lb().ns, &topo.lb().ifname, place.bal)?;
    if let Some(p) = pid {
        cpus::pin_pid(p, place.bal)?;
        procs.push(p);
    }
    procs.push(cpus::ksoftirqd(place.bal)?);
    let c = conn_rate(&client, target, budget.load_secs, place, &procs)?;
    side.conn_per_s.push(c.per_s);
    side.conn_failed += c.failed;
    let per_conn = |s: f64| s * 1e6 / c.ok.max(1) as f64;
    side.cpu_us_per_conn.push(per_conn(c.procs));
    side.busy_us_per_conn.push(per_conn(c.bal.busy));
    side.softirq_share.push(c.bal.softirq / c.bal.busy.max(1e-9));
    side.bal_busy.push(c.bal.busy / c.secs);
    side.gen_busy.push(c.gen_busy / c.secs);
    aborted()?;
    let lat = latency(&client, target, budget.latency_requests, place.load)?;
    side.lat_p50_us.push(percentile_sorted(&lat, 50.0));
    side.lat_p99_us.push(percentile_sorted(&lat, 99.0));
    aborted()?;
    let (sw, port) = (topo.switch_ns().to_string(), topo.lb().port.clone());
    let before = sys::link_packets(&sw, &port)?.1;
    let cpu_before = pid.map(sys::process_cpu_seconds).transpose()?;
    let t = Instant::now();
    let (req, _failed) = keepalive_rate(&client, target, budget.load_secs, place.load)?;
    let el = t.elapsed().as_secs_f64();
    let after = sys::link_packets(&sw, &port)?.1;
    if let (Some(p), Some(b)) = (pid, cpu_before) {
        side.cpu_cores.push((sys::process_cpu_seconds(p)? - b) / el);
    }
    side.pps.push((after - before) as f64 / el);
    side.req_per_s.push(req);
    Ok(())
}

/// Runs `f` with HAProxy running in the balancer's namespace, pinned to
/// `cpu`; fails with HAProxy's alert when it exited.
fn with_haproxy<T>(
    topo: &Topology,
    haproxy: &Path,
    cfg: &Path,
    cpu: usize,
    f: impl FnOnce(Option<u32>) -> Result<T>,
) -> Result<T> {
    let log = topo.dir().join("haproxy.log");
    let (cpu, hp_s, cfg_s) = (cpu.to_string(), haproxy.to_str().context("path")?, cfg.to_str().context("path")?);
    let args = ["-c", &cpu, hp_s, "-f", cfg_s, "-db"];
    let mut child = ChildGuard::spawn_in(&topo.lb().ns, "haproxy", Path::new("taskset"), &args, &log)?;
    if let Some(p) = child.pid() {
        cpus::pin_pid(p, cpu.parse()?)?;
    }
    let r = f(child.pid());
    if let Some(status) = child.try_status() {
        let log = child.log_text();
        let alerts: Vec<&str> = log.lines().filter(|l| l.contains("ALERT")).collect();
        bail!("haproxy exited ({status}): {}", if alerts.is_empty() { log.trim() } else { alerts[0] });
    }
    child.stop(Duration::from_secs(2));
    r
}

pub fn run(lb_bin: &Path, budget: &Budget, report: &mut Report) -> Result<()> {
    let haproxy = ensure_haproxy()?;
    let version = netns::run(haproxy.to_str().unwrap(), &["-v"]).unwrap_or_default();
    report.set("haproxy.version", serde_json::json!(version.lines().next().unwrap_or("").trim()));
    if sys::cpus() < 2 {
        bail!("the HAProxy comparison needs 2 CPUs (one for the balancer, one for client and backends)");
    }
    let place = Placement { bal: sys::bench_cpu(), load: 0 };
    report.number("haproxy_bench.balancer_cpu", place.bal as f64);
    let opts = super::topology_options(lb_bin, true);
    let mut topo = Topology::new(opts)?;
    for ns in [topo.client().ns.clone(), topo.lb().ns.clone()] {
        sysctls(&ns, &[("net.ipv4.ip_local_port_range", "1024 65000"), ("net.ipv4.tcp_tw_reuse", "1")])?;
    }
    let mut servers = Vec::new();
    for b in topo.backends() {
        let addrs = [SocketAddr::new(VIP_V4.into(), 80), SocketAddr::new(b.v4.into(), 80)];
        servers.push(BenchServer::start(&b.ns, &b.name, &addrs, place.load)?);
    }
    let lb_cfg = topo.write_config(&[VipSpec::tcp(VIP_V4, 80, Forwarding::L2dsr)]);
    let mut hcfg = format!(
        "global\n  nbthread 1\n  maxconn 8000\n\ndefaults\n  mode tcp\n  timeout connect 2s\n  \
         timeout client 30s\n  timeout server 30s\n\nfrontend bench\n  bind {}:{HAPROXY_PORT}\n  \
         default_backend servers\n\nbackend servers\n  balance roundrobin\n",
        topo.lb().v4
    );
    for (i, b) in topo.backends().iter().enumerate() {
        hcfg.push_str(&format!("  server b{} {}:80\n", i + 1, b.v4));
    }
    let hpath = topo.dir().join("haproxy.cfg");
    std::fs::write(&hpath, hcfg)?;
    let lb_target = SocketAddr::new(IpAddr::V4(VIP_V4), 80);
    let hp_target = SocketAddr::new(IpAddr::V4(topo.lb().v4), HAPROXY_PORT);

    let direct_target = SocketAddr::new(IpAddr::V4(topo.backends()[0].v4), 80);
    let rounds = if budget.quick { 1 } else { 3 };
    let (mut lb, mut hp) = (Side::default(), Side::default());
    let mut one = onecpu::Figures::default();
    let one_cpu = Placement { bal: place.load, load: place.load };
    for _ in 0..rounds {
        aborted()?;
        // Split placement: balancer CPU vs client+backends CPU.
        for h in std::iter::once(topo.client()).chain(topo.backends()) {
            cpus::threaded_napi_on(&h.ns, &h.ifname, place.load)?;
        }
        topo.start_lb(&lb_cfg)?;
        workloads(&topo, lb_target, None, &place, budget, &mut lb)?;
        topo.stop_lb()?;
        with_haproxy(&topo, &haproxy, &hpath, place.bal, |pid| {
            workloads(&topo, hp_target, pid, &place, budget, &mut hp)
        })?;
        // One CPU for everything, against a direct client -> backend run.
        let client = topo.client().ns.clone();
        for h in std::iter::once(topo.client()).chain(topo.backends()).chain(std::iter::once(topo.lb())) {
            cpus::threaded_napi_off(&h.ns, &h.ifname)?;
        }
        let conn = |target, procs: &[u32]| conn_rate(&client, target, budget.load_secs, &one_cpu, procs);
        wait_listening(&client, direct_target)?;
        let direct = conn(direct_target, &[])?;
        topo.start_lb(&lb_cfg)?;
        wait_listening(&client, lb_target)?;
        let with_lb = conn(lb_target, &[])?;
        topo.stop_lb()?;
        let with_hp = with_haproxy(&topo, &haproxy, &hpath, one_cpu.bal, |pid| {
            wait_listening(&client, hp_target)?;
            conn(hp_target, &[pid.context("haproxy pid")?])
        })?;
        one.add(&direct, &with_lb, &with_hp);
    }
    drop(servers);
    one.report(report);

    let put = |report: &mut Report, who: &str, s: &Side| {
        report.stat(&format!("{who}.conn_per_s"), Stat::of(&s.conn_per_s).unwrap());
        report.stat(&format!("{who}.pps"), Stat::of(&s.pps).unwrap());
        report.stat(&format!("{who}.keepalive_req_per_s"), Stat::of(&s.req_per_s).unwrap());
        report.stat(&format!("{who}.latency_us.p50"), Stat::of(&s.lat_p50_us).unwrap());
        report.stat(&format!("{who}.latency_us.p99"), Stat::of(&s.lat_p99_us).unwrap());
        report.number(&format!("{who}.conn_failures"), s.conn_failed as f64);
        report.stat(&format!("{who}.split.threads_cpu_us_per_conn"), Stat::of(&s.cpu_us_per_conn).unwrap());
        report.stat(&format!("{who}.softirq_share"), Stat::of(&s.softirq_share).unwrap());
        report.stat(&format!("{who}.split.balancer_cpu_busy_us_per_conn"), Stat::of(&s.busy_us_per_conn).unwrap());
        report.stat(&format!("{who}.conn_run.balancer_cpu_busy"), Stat::of(&s.bal_busy).unwrap());
        report.stat(&format!("{who}.conn_run.generator_cpu_busy"), Stat::of(&s.gen_busy).unwrap());
    };
    put(report, "lb", &lb);
    put(report, "haproxy", &hp);
    if let Some(s) = Stat::of(&hp.cpu_cores) {
        report.stat("haproxy.cpu_cores_during_pps", s);
    }
    let ratio = |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x / y).collect() };
    report.stat("lb_vs_haproxy.conn_per_s", Stat::of(&ratio(&lb.conn_per_s, &hp.conn_per_s)).unwrap());
    report.stat(
        "lb_vs_haproxy.split.threads_cpu_per_conn",
        Stat::of(&ratio(&lb.cpu_us_per_conn, &hp.cpu_us_per_conn)).unwrap(),
    );
    report.stat("lb_vs_haproxy.pps", Stat::of(&ratio(&lb.pps, &hp.pps)).unwrap());
    report.stat("lb_vs_haproxy.keepalive_req_per_s", Stat::of(&ratio(&lb.req_per_s, &hp.req_per_s)).unwrap());
    report.stat("lb_vs_haproxy.latency_p50", Stat::of(&ratio(&lb.lat_p50_us, &hp.lat_p50_us)).unwrap());
    report.stat("lb_vs_haproxy.latency_p99", Stat::of(&ratio(&lb.lat_p99_us, &hp.lat_p99_us)).unwrap());
    report.set("lb.forwarding", serde_json::json!("l2dsr"));
    Ok(())
}

pub fn table(r: &Report) -> Table {
    let mut t = Table::new(
        "4. lb vs HAProxy (TCP mode, nbthread 1), same topology, backends, client load and CPU placement",
        &["metric", "lb", "HAProxy", "lb / HAProxy", "target"],
    );
    let rows = [
        ("new TCP connections/s", "conn_per_s", "conn_per_s", 0, ">= 3x"),
        ("packets/s at the balancer (keep-alive load)", "pps", "pps", 0, ">= 10x"),
        ("keep-alive requests/s", "keepalive_req_per_s", "keepalive_req_per_s", 0, ""),
        ("latency p50, new conn + request (us)", "latency_us.p50", "latency_p50", 0, ""),
        ("latency p99, new conn + request (us)", "latency_us.p99", "latency_p99", 0, ""),
        (
            "split: balancer threads' CPU per new conn (us)",
            "split.threads_cpu_us_per_conn",
            "split.threads_cpu_per_conn",
            1,
            "",
        ),
        (
            "split: balancer CPU busy per new conn (us, incl. other jobs)",
            "split.balancer_cpu_busy_us_per_conn",
            "",
            1,
            "",
        ),
        ("one CPU: balancer CPU per new conn over direct (us)", "cpu_us_per_conn", "cpu_per_conn", 1, ""),
        (
            "one CPU: new conn/s per balancer core (1e6 / that)",
            "conn_per_s_per_core",
            "conn_per_s_per_core",
            0,
            ">= 3x",
        ),
    ];
    t.row(vec![
        "HAProxy CPU during the keep-alive load (cores)".into(),
        "".into(),
        r.show("haproxy.cpu_cores_during_pps", 2),
        "".into(),
        "".into(),
    ]);
    for (what, key) in [
        ("split: balancer CPU busy, new-conn run", "balancer_cpu_busy"),
        ("split: client+backends CPU busy, new-conn run", "generator_cpu_busy"),
    ] {
        t.row(vec![
            what.into(),
            r.show(&format!("lb.conn_run.{key}"), 2),
            r.show(&format!("haproxy.conn_run.{key}"), 2),
            "".into(),
            "".into(),
        ]);
    }
    for (what, key, rkey, d, target) in rows {
        t.row(vec![
            what.into(),
            r.show(&format!("lb.{key}"), d),
            r.show(&format!("haproxy.{key}"), d),
            r.show(&format!("lb_vs_haproxy.{rkey}"), 2),
            target.into(),
        ]);
    }
    t.row(vec![
        "one CPU for all: new TCP connections/s (direct run: onecpu.direct.*)".into(),
        r.show("onecpu.lb.conn_per_s", 0),
        r.show("onecpu.haproxy.conn_per_s", 0),
        r.show("onecpu.lb_vs_haproxy.conn_per_s", 2),
        "".into(),
    ]);
    t.row(vec![
        "packets/s per core (derived: lb veth IPIP; HAProxy pps / its CPU)".into(),
        r.show("lb.pps_per_core", 0),
        r.show("haproxy.pps_per_core", 0),
        r.show("lb_vs_haproxy.pps_per_core", 1),
        ">= 10x".into(),
    ]);
    t
}

pub const KEYS: [&str; 11] = [
    "haproxy.conn_per_s",
    "lb.conn_per_s",
    "haproxy.pps",
    "lb.pps",
    "haproxy.latency_us.p50",
    "lb.latency_us.p50",
    "haproxy.latency_us.p99",
    "lb.latency_us.p99",
    "lb.cpu_us_per_conn",
    "haproxy.cpu_us_per_conn",
    "lb_vs_haproxy.cpu_per_conn",
];
