//! Part 3: control plane. Maglev table builds, swapping a new table into
//! the kernel, and failover (a backend's `fall`-th failed probe to the
//! table without it being live), end to end with the agent.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use lb::dataplane::Dataplane;
use lb::maglev::{self, Candidate};
use lb_common::{LAYOUT_VERSION, VipKey, VipMeta, net::IPPROTO_TCP};
use lb_tests::netns::in_netns;
use lb_tests::topology::{Forwarding, Topology, VIP_V4, VipSpec};

use super::report::{Report, Stat, Table};
use super::{Budget, aborted, config, peers};

/// Backend counts of the Maglev build benchmark.
pub const MAGLEV_NS: [usize; 4] = [10, 100, 1000, 4000];
const RING: u32 = 65537;

/// Maglev builds of M = 65537 for each backend count.
pub fn maglev_builds(budget: &Budget, report: &mut Report) -> Result<()> {
    for n in MAGLEV_NS {
        let cands: Vec<Candidate> = (0..n as u32)
            .map(|i| Candidate { address: IpAddr::V4(Ipv4Addr::from(0xc612_0000 + 0x100 + i)), weight: 1 })
            .collect();
        let mut ms = Vec::new();
        for _ in 0..budget.maglev_reps {
            aborted()?;
            let t = Instant::now();
            let table = maglev::build(&cands, RING);
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(&table);
        }
        let s = Stat::of(&ms).unwrap();
        report.stat(&format!("maglev_build_ms.n{n}"), s);
        if n == 1000 {
            let r: Vec<f64> = ms.iter().map(|m| m / peers::MAGLEV_PAPER_BUILD_MS).collect();
            report.stat("maglev_build_ms.n1000.paper_ratio", Stat::of(&r).unwrap());
        }
    }
    Ok(())
}

/// `Dataplane::apply` of a configuration in which one backend of the
/// swapped VIP (100 backends, 65537 entries) changed: Maglev build, the
/// changed 64-byte chunks written into the idle buffer, the generation flip.
/// `dp` holds `config(0)` on entry and `config(swap_reps)` on return.
pub fn table_swap(dp: &mut Dataplane, budget: &Budget, report: &mut Report) -> Result<()> {
    let mut ms = Vec::new();
    let mut chunks = Vec::new();
    let mut build_ms = Vec::new();
    for step in 1..=budget.swap_reps {
        aborted()?;
        let cfg = config::config(step)?;
        // The build alone, for the breakdown.
        let cands: Vec<Candidate> =
            config::swap_backends(step).into_iter().map(|a| Candidate { address: a.into(), weight: 1 }).collect();
        let t = Instant::now();
        std::hint::black_box(maglev::build(&cands, RING));
        build_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let rep = dp.apply(&cfg).context("Dataplane::apply")?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        if rep.rings_swapped != 1 {
            bail!("step {step}: expected one table swap, got {rep:?}");
        }
        chunks.push(rep.ring_chunks_written as f64);
    }
    report.stat("table_swap_ms", Stat::of(&ms).context("no swaps")?);
    report.stat("table_swap_chunks_written", Stat::of(&chunks).unwrap());
    report.stat("table_swap_build_ms", Stat::of(&build_ms).unwrap());
    Ok(())
}

/// A health endpoint that answers 200 or 503 and logs when it answered.
struct ProbeServer {
    failing: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// (when the answer was written, whether it was a failure)
    log: Arc<Mutex<Vec<(Instant, bool)>>>,
    handle: Option<JoinHandle<()>>,
}

impl ProbeServer {
    fn start(ns: &str, addr: SocketAddr) -> Result<ProbeServer> {
        let listener = in_netns(ns, move || TcpListener::bind(addr).with_context(|| format!("bind {addr}")))?;
        listener.set_nonblocking(true)?;
        let failing = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (f, s, l) = (failing.clone(), stop.clone(), log.clone());
        let handle = std::thread::Builder::new().name("bench-probe".into()).spawn(move || {
            let mut pfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            while !s.load(Ordering::SeqCst) {
                pfd.revents = 0;
                // SAFETY: one valid pollfd.
                if unsafe { libc::poll(&mut pfd, 1, 20) } <= 0 {
                    continue;
                }
                while let Ok((mut c, _)) = listener.accept() {
                    let _ = c.set_nonblocking(false);
                    let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                        match c.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let fail = f.load(Ordering::SeqCst);
                    let status = if fail { "503 Service Unavailable" } else { "200 OK" };
                    let resp = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    if c.write_all(resp.as_bytes()).is_ok() {
                        l.lock().unwrap().push((Instant::now(), fail));
                    }
                }
            }
        })?;
        Ok(ProbeServer { failing, stop, log, handle: Some(handle) })
    }
}

impl Drop for ProbeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Health check of the failover bench.
pub const HC_INTERVAL_MS: u64 = 50;
pub const HC_FALL: usize = 3;
const HC_RISE: usize = 2;
const HC_PORT: u16 = 8080;

fn read_gen(vips: &BpfHashMap<MapData, VipKey, VipMeta>, key: &VipKey) -> Result<u32> {
    Ok(vips.get(key, 0).context("reading the VIP's entry in the pinned VIPS map")?.ring_gen)
}

/// Waits until the live generation differs from `from`; returns when it was
/// seen (polled every 100 µs).
fn wait_flip(
    vips: &BpfHashMap<MapData, VipKey, VipMeta>,
    key: &VipKey,
    from: u32,
    timeout: Duration,
) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if read_gen(vips, key)? != from {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("the table did not change within {timeout:?}");
        }
        aborted()?;
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// Failover end to end: `lb run` in a veth topology with an HTTP health
/// check (interval 50 ms, fall 3, rise 2) on 3 backends; the bench's own
/// health endpoint on backend1 starts answering 503 and logs when it wrote
/// each answer; a thread polls the VIP's entry in the agent's pinned VIPS
/// map (every 100 µs) for the generation flip that makes the table without
/// backend1 live. failover = flip seen - `fall`-th 503 written. Then
/// backend1 recovers (rise) and the cycle repeats.
pub fn failover(lb_bin: &std::path::Path, budget: &Budget, report: &mut Report) -> Result<()> {
    let opts = super::topology_options(lb_bin, false);
    let mut topo = Topology::new(opts)?;
    let servers: Vec<ProbeServer> = topo
        .backends()
        .iter()
        .map(|b| ProbeServer::start(&b.ns, SocketAddr::new(b.v4.into(), HC_PORT)))
        .collect::<Result<_>>()?;
    let hc = format!(
        "{{ kind = \"http\", port = {HC_PORT}, path = \"/health\", interval_ms = {HC_INTERVAL_MS}, \
         timeout_ms = {}, rise = {HC_RISE}, fall = {HC_FALL} }}",
        HC_INTERVAL_MS - 10
    );
    let vip = VipSpec::tcp(VIP_V4, 80, Forwarding::Ipip).health_check(&hc);
    let cfg = topo.write_config(&[vip]);
    topo.start_lb(&cfg)?;
    let pin = topo.pin_path().join(format!("v{LAYOUT_VERSION}")).join(&topo.lb().ifname).join("VIPS");
    let map = Map::from_map_data(MapData::from_pin(&pin).with_context(|| format!("open {}", pin.display()))?)?;
    let vips: BpfHashMap<MapData, VipKey, VipMeta> = BpfHashMap::try_from(map)?;
    let key = VipKey::new(VIP_V4.into(), 80, IPPROTO_TCP);
    // Let every backend be probed healthy a few times.
    std::thread::sleep(Duration::from_millis(HC_INTERVAL_MS * 4));
    let victim = &servers[0];
    let timeout = Duration::from_millis(HC_INTERVAL_MS * 40 + 2000);
    let mut ms = Vec::new();
    let mut to_event = Vec::new();
    for cycle in 0..budget.failover_cycles {
        aborted()?;
        let gen0 = read_gen(&vips, &key)?;
        let switched = Instant::now();
        victim.failing.store(true, Ordering::SeqCst);
        let live = wait_flip(&vips, &key, gen0, timeout).with_context(|| format!("cycle {cycle}: backend down"))?;
        let fails: Vec<Instant> =
            victim.log.lock().unwrap().iter().filter(|(t, f)| *f && *t >= switched).map(|(t, _)| *t).collect();
        let Some(fall_th) = fails.get(HC_FALL - 1) else {
            bail!("cycle {cycle}: the table changed after only {} failed probes (fall = {HC_FALL})", fails.len());
        };
        if live < *fall_th {
            bail!("cycle {cycle}: the table changed before the {HC_FALL}th failed probe");
        }
        ms.push((live - *fall_th).as_secs_f64() * 1e3);
        to_event.push((live - switched).as_secs_f64() * 1e3);
        // Recover.
        let gen1 = read_gen(&vips, &key)?;
        victim.failing.store(false, Ordering::SeqCst);
        wait_flip(&vips, &key, gen1, timeout).with_context(|| format!("cycle {cycle}: backend back up"))?;
        std::thread::sleep(Duration::from_millis(HC_INTERVAL_MS * 2));
    }
    report.stat("failover_ms", Stat::of(&ms).context("no failover cycles")?);
    report.stat("failover_from_first_503_ms", Stat::of(&to_event).unwrap());
    report.number("failover_ms.interval_ms", HC_INTERVAL_MS as f64);
    report.number("failover_ms.fall", HC_FALL as f64);
    topo.check_children()?;
    drop(servers);
    Ok(())
}

pub fn table(r: &Report) -> Table {
    let mut t = Table::new("3. Control plane", &["what", "median [min .. max]", "target / reference"]);
    for n in MAGLEV_NS {
        let reference = if n == 1000 { "< 1 ms; Maglev paper 1.8 ms".to_string() } else { String::new() };
        t.row(vec![
            format!("Maglev build, M=65537, N={n} (ms)"),
            r.show(&format!("maglev_build_ms.n{n}"), 3),
            reference,
        ]);
    }
    t.row(vec!["  N=1000 build / paper's 1.8 ms".into(), r.show("maglev_build_ms.n1000.paper_ratio", 2), "".into()]);
    t.row(vec!["table swap: apply, 1 of 100 backends changed (ms)".into(), r.show("table_swap_ms", 3), "".into()]);
    t.row(vec!["  of which the Maglev build (ms)".into(), r.show("table_swap_build_ms", 3), "".into()]);
    t.row(vec!["  64-byte chunks written (of 2049)".into(), r.show("table_swap_chunks_written", 0), "".into()]);
    t.row(vec![
        format!("failover: fall-th ({HC_FALL}rd) failed probe -> table live (ms)"),
        r.show("failover_ms", 2),
        "< 50 ms".into(),
    ]);
    t.row(vec![
        "  first 503 -> table live (ms, includes fall x interval)".into(),
        r.show("failover_from_first_503_ms", 1),
        "".into(),
    ]);
    t
}
