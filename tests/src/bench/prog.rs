//! Part 1: cost per packet of `lb_balancer` through BPF_PROG_TEST_RUN, with
//! 100 backends behind every VIP, net of the XDP_DROP program `lb_drop`
//! measured the same way in the same round.
//!
//! Two methods, both giving the program a fresh, unmodified frame:
//! - harness (the headline, `prog_ns.*`): one BPF_PROG_TEST_RUN with
//!   repeat = N on a hand-written harness ([`super::harness`]) that restores
//!   the frame and tail-calls the program; the same harness tail-calling
//!   lb_drop is subtracted. Caches stay as warm as the case allows, as when
//!   packets arrive back to back; this is how the field notes' floor
//!   (about 21 ns) and so Katran's figures were measured.
//! - single runs (`prog_ns_single.*`): one BPF_PROG_TEST_RUN with
//!   repeat = 1 per packet (the kernel copies the frame in each time); the
//!   median of many, minus lb_drop's median. A syscall between packets
//!   leaves colder caches and the clock reads in every figure; this clock
//!   ticks in ~10 ns steps.
//!
//! Per round and case: median over blocks (harness) or runs (single) minus
//! the floor's; over rounds: median, min, max.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result, bail};
use aya::Ebpf;
use aya::programs::{TestRun, TestRunOptions, Xdp};
use lb::config::Config;
use lb::dataplane::Dataplane;
use lb_common::stats;
use lb_tests::packet::Packet;

use super::config::{NOT_VIP, V4, V4_DSR, V6};
use super::harness::{Flows, Harness, Target};
use super::peers::{self, TARGET_SHARE};
use super::report::{Report, Stat, Table, median_u32};
use super::{Budget, aborted, sys};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

/// Established flows of the `*_1024flows` cases.
const POOL: u32 = 1024;

/// How a case varies its flow from packet to packet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pattern {
    /// The same frame (an established flow, or no flow state at all).
    Same,
    /// A new flow for every packet.
    New,
    /// One of `POOL` established flows (random in the harness, in turn in
    /// single runs).
    Pool,
}

/// A case: key, description, expected verdict, packet kind, pattern,
/// whether the flood guard refuses new flows, and Katran's figure it is
/// compared with (a key of [`peers::KATRAN_NS`]).
pub struct Case {
    pub key: &'static str,
    pub what: &'static str,
    verdict: u32,
    kind: Kind,
    pattern: Pattern,
    flood: bool,
    peer: Option<&'static str>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Syn4,
    Ack4,
    Udp4,
    Syn6,
    Ack6,
    Dsr4,
    NotVip,
}

impl Kind {
    /// Bytes the program prepends (the harness moves the head back).
    fn grow(self) -> i32 {
        match self {
            Kind::Syn4 | Kind::Ack4 | Kind::Udp4 => 20,
            Kind::Syn6 | Kind::Ack6 => 40,
            Kind::Dsr4 | Kind::NotVip => 0,
        }
    }

    /// Source port of the pool and single-flow frames of this kind.
    fn sport(self) -> u16 {
        match self {
            Kind::Ack4 | Kind::Syn4 => 3000,
            Kind::Udp4 => 3001,
            Kind::Dsr4 => 3002,
            Kind::Syn6 | Kind::NotVip => 3003,
            Kind::Ack6 => 3004,
        }
    }
}

const fn case(key: &'static str, what: &'static str, verdict: u32, kind: Kind, pattern: Pattern) -> Case {
    Case { key, what, verdict, kind, pattern, flood: false, peer: None }
}

impl Case {
    /// Compared with Katran's figure `peer`.
    const fn vs(self, peer: &'static str) -> Case {
        Case { peer: Some(peer), ..self }
    }

    /// Run with the flood guard refusing every new flow (`new_flow_limit`
    /// 1 per second), as under a SYN flood: no table lookup, no insert.
    const fn flooded(self) -> Case {
        Case { flood: true, ..self }
    }

    /// Katran's figure this case is compared with.
    pub fn katran(&self) -> Option<f64> {
        self.peer.and_then(peers::katran)
    }

    /// Whether this case is the one Katran's figure is named after (where
    /// the picture draws Katran's bar).
    pub fn is_peer_case(&self) -> bool {
        self.peer == Some(self.key)
    }
}

/// Every case, in report order (the floor first).
pub const CASES: [Case; 18] = [
    case("floor", "lb_drop (XDP_DROP), the floor (raw ns)", XDP_DROP, Kind::Ack4, Pattern::Same),
    case("tcp_syn", "TCP SYN of a new flow: ring pick + table insert, IPIP", XDP_TX, Kind::Syn4, Pattern::New)
        .vs("tcp_syn"),
    case(
        "tcp_syn_same_flow",
        "the same TCP SYN again (as Katran's fixture): found open, kept",
        XDP_TX,
        Kind::Syn4,
        Pattern::Same,
    )
    .vs("tcp_syn"),
    case(
        "tcp_syn_flood",
        "TCP SYN flood, new flows: the guard refuses the insert, no lookup",
        XDP_TX,
        Kind::Syn4,
        Pattern::New,
    )
    .flooded()
    .vs("tcp_syn_flood"),
    case(
        "tcp_syn_flood_same_flow",
        "the same TCP SYN under the flood guard (as Katran's fixture): no lookup, no insert",
        XDP_TX,
        Kind::Syn4,
        Pattern::Same,
    )
    .flooded()
    .vs("tcp_syn_flood"),
    case("tcp_ack", "TCP ACK of an established flow (table hit), IPIP", XDP_TX, Kind::Ack4, Pattern::Same)
        .vs("tcp_ack"),
    case("tcp_ack_1024flows", "TCP ACK, random one of 1024 established flows", XDP_TX, Kind::Ack4, Pattern::Pool),
    case("udp", "UDP of an established flow (table hit), IPIP", XDP_TX, Kind::Udp4, Pattern::Same).vs("udp"),
    case("udp_1024flows", "UDP, random one of 1024 established flows", XDP_TX, Kind::Udp4, Pattern::Pool),
    case("udp_new", "UDP, first packet of a flow (miss + insert)", XDP_TX, Kind::Udp4, Pattern::New),
    case("tcp6_syn", "IPv6 TCP SYN of a new flow (insert), IP6IP6", XDP_TX, Kind::Syn6, Pattern::New).vs("tcp6_syn"),
    case("tcp6_syn_same_flow", "the same IPv6 TCP SYN again: found open, kept", XDP_TX, Kind::Syn6, Pattern::Same)
        .vs("tcp6_syn"),
    case("tcp6_syn_flood", "IPv6 TCP SYN flood, new flows: no lookup, no insert", XDP_TX, Kind::Syn6, Pattern::New)
        .flooded()
        .vs("tcp6_syn"),
    case(
        "tcp6_syn_flood_same_flow",
        "the same IPv6 TCP SYN under the flood guard (like for like with Katran's figure)",
        XDP_TX,
        Kind::Syn6,
        Pattern::Same,
    )
    .flooded()
    .vs("tcp6_syn"),
    case("tcp6_ack", "IPv6 TCP ACK of an established flow (table hit), IP6IP6", XDP_TX, Kind::Ack6, Pattern::Same),
    case("l2dsr_ack", "TCP ACK of an established flow, L2 DSR", XDP_TX, Kind::Dsr4, Pattern::Same),
    case("l2dsr_ack_1024flows", "TCP ACK, L2 DSR, random one of 1024 flows", XDP_TX, Kind::Dsr4, Pattern::Pool),
    case("nonvip", "TCP to a non-VIP address, passed", XDP_PASS, Kind::NotVip, Pattern::Same).vs("nonvip"),
];

/// Keys this part reports (nulled with the reason when it fails).
pub const KEYS: [&str; 18] = [
    "prog_ns.floor",
    "prog_ns.tcp_syn",
    "prog_ns.tcp_syn_same_flow",
    "prog_ns.tcp_syn_flood",
    "prog_ns.tcp_syn_flood_same_flow",
    "prog_ns.tcp_ack",
    "prog_ns.tcp_ack_1024flows",
    "prog_ns.udp",
    "prog_ns.udp_1024flows",
    "prog_ns.udp_new",
    "prog_ns.tcp6_syn",
    "prog_ns.tcp6_syn_same_flow",
    "prog_ns.tcp6_syn_flood",
    "prog_ns.tcp6_syn_flood_same_flow",
    "prog_ns.tcp6_ack",
    "prog_ns.l2dsr_ack",
    "prog_ns.l2dsr_ack_1024flows",
    "prog_ns.nonvip",
];

const SRC4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 0);
const SRC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0);

/// A frame of `kind` from `SRC4 + lo` (or `SRC6 + lo`) and `sport`, with
/// IP id `0xffff - lo` (what the harness writes), padded to 4 bytes.
fn frame(kind: Kind, lo: u32, sport: u16) -> Vec<u8> {
    let src4 = Ipv4Addr::from(u32::from(SRC4) + lo);
    let id = 0xffff - (lo & 0xffff) as u16;
    let p = match kind {
        Kind::Syn4 => Packet::new().ipv4(src4, V4).ip_id(id).tcp(sport, 80).syn(),
        Kind::Ack4 => Packet::new().ipv4(src4, V4).ip_id(id).tcp(sport, 80).ack(),
        Kind::Dsr4 => Packet::new().ipv4(src4, V4_DSR).ip_id(id).tcp(sport, 80).ack(),
        Kind::NotVip => Packet::new().ipv4(src4, NOT_VIP).ip_id(id).tcp(sport, 80).ack(),
        Kind::Udp4 => Packet::new().ipv4(src4, V4).ip_id(id).udp(sport, 53).payload(b"ping"),
        Kind::Syn6 | Kind::Ack6 => {
            let src6 = Ipv6Addr::from(u128::from(SRC6) + u128::from(lo));
            let p = Packet::new().ipv6(src6, V6).tcp(sport, 80);
            if kind == Kind::Syn6 { p.syn() } else { p.ack() }
        }
    };
    let len = p.build().len();
    p.pad_to(len.div_ceil(4) * 4).build()
}

/// The frame that establishes the flow of `f` (a SYN for TCP; UDP as is).
fn opener(kind: Kind, lo: u32) -> Vec<u8> {
    match kind {
        Kind::Ack4 => frame(Kind::Syn4, lo, kind.sport()),
        Kind::Ack6 => frame(Kind::Syn6, lo, kind.sport()),
        Kind::Dsr4 => {
            let src4 = Ipv4Addr::from(u32::from(SRC4) + lo);
            Packet::new().ipv4(src4, V4_DSR).tcp(kind.sport(), 80).syn().build()
        }
        _ => frame(kind, lo, kind.sport()),
    }
}

fn run_once(prog: &Xdp, frame: &[u8]) -> Result<(u32, u32)> {
    let r =
        prog.test_run(TestRunOptions { data_in: Some(frame), ..Default::default() }).context("BPF_PROG_TEST_RUN")?;
    Ok((r.return_value, r.duration.as_nanos().min(u128::from(u32::MAX)) as u32))
}

/// The lb_drop reference program, loaded from lb's decap object.
pub fn load_drop() -> Result<Ebpf> {
    let mut ebpf = Ebpf::load(lb::objects::DECAP).context("loading lb's decap object")?;
    let p: &mut Xdp = ebpf.program_mut("lb_drop").context("no lb_drop in the decap object")?.try_into()?;
    p.load().context("loading lb_drop")?;
    Ok(ebpf)
}

pub fn drop_prog(ebpf: &Ebpf) -> &Xdp {
    ebpf.program("lb_drop").and_then(|p| p.try_into().ok()).expect("loaded by load_drop")
}

/// The benchmark's configuration, and the same with the flood guard
/// refusing new flows (the `flood` cases), applied in turn.
struct Guard {
    open: Config,
    flooded: Config,
}

impl Guard {
    fn new() -> Result<Guard> {
        let open = super::config::config(0)?;
        let mut flooded = open.clone();
        // One new flow per CPU and second: in a block of thousands of
        // packets, at most one is recorded.
        flooded.global.new_flow_limit = 1;
        Ok(Guard { open, flooded })
    }

    /// Applies the configuration `case` runs with, if `flooded` (what `dp`
    /// holds now) is not it already.
    fn set(&self, dp: &mut Dataplane, case: &Case, flooded: &mut bool) -> Result<()> {
        if case.flood != *flooded {
            dp.apply(if case.flood { &self.flooded } else { &self.open })?;
            *flooded = case.flood;
        }
        Ok(())
    }
}

/// Measures every case; `dp` must hold [`super::config::config`] (and holds
/// it again afterwards).
pub fn run(dp: &mut Dataplane, budget: &Budget, report: &mut Report) -> Result<()> {
    let cpu = sys::bench_cpu();
    // Pinned: the kernel runs the program on the calling CPU, and the
    // flood guard's budget and the counters are per CPU.
    std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            sys::pin_to_cpu(cpu)?;
            let drop_obj = load_drop()?;
            let drop = drop_prog(&drop_obj);
            let guard = Guard::new()?;
            let before = dp.stats().ok();
            establish(dp.balancer())?;
            let t = std::time::Instant::now();
            // The headline figures: a round takes about two seconds, so
            // three times the rounds of the other parts steady the medians
            // on a noisy machine.
            let harness = Budget { rounds: budget.rounds * HARNESS_ROUND_FACTOR, ..budget.clone() };
            measure_harness(dp, &guard, drop, &harness, report)?;
            let t_harness = t.elapsed().as_secs_f64();
            let t = std::time::Instant::now();
            measure_single(dp, &guard, drop, budget, report)?;
            report.number("prog_ns.seconds_harness", t_harness);
            report.number("prog_ns.seconds_single", t.elapsed().as_secs_f64());
            if let (Some(b), Ok(a)) = (before, dp.stats()) {
                let d = |i: u32| (a[i as usize].packets - b[i as usize].packets) as f64;
                report.number("prog_ns.conntrack_insert_failed", d(stats::CONNTRACK_FULL));
                report.number("prog_ns.conntrack_hits", d(stats::CONNTRACK_HIT));
                report.number("prog_ns.conntrack_misses", d(stats::CONNTRACK_MISS));
                // Inserts the flood guard skipped: those of the `flood` cases
                // only (the other new-flow figures include the insert).
                report.number("prog_ns.conntrack_guarded", d(stats::CONNTRACK_GUARDED));
            }
            Ok(())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })?;
    report.number("prog_ns.cpu", cpu as f64);
    report.number("prog_ns.backends_per_vip", super::config::BACKENDS as f64);
    Ok(())
}

/// Establishes the single flows and the pools of the cases.
fn establish(lb: &Xdp) -> Result<()> {
    for c in CASES.iter().filter(|c| c.kind != Kind::NotVip) {
        match c.pattern {
            Pattern::Same if c.key != "floor" => {
                run_once(lb, &opener(c.kind, 0))?;
            }
            Pattern::Pool => {
                for lo in 0..POOL {
                    run_once(lb, &opener(c.kind, lo))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// `--compare`: the harness figures of several builds of the balancer
/// (each a [`Dataplane`] holding [`super::config::config`]), one round of
/// each in turn so every round compares them under the same machine load.
/// Writes `compare.<name>.<case>` and returns the table.
pub fn compare_builds(builds: &mut [(String, Dataplane)], budget: &Budget, report: &mut Report) -> Result<Table> {
    let cpu = sys::bench_cpu();
    let one = Budget { rounds: 1, ..budget.clone() };
    let mut net: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); CASES.len()]; builds.len()];
    std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            sys::pin_to_cpu(cpu)?;
            let drop_obj = load_drop()?;
            let drop = drop_prog(&drop_obj);
            let guard = Guard::new()?;
            for (_, dp) in builds.iter() {
                establish(dp.balancer())?;
            }
            for _ in 0..budget.rounds {
                for (bi, (_, dp)) in builds.iter_mut().enumerate() {
                    let mut r = Report::default();
                    measure_harness(dp, &guard, drop, &one, &mut r)?;
                    for (ci, c) in CASES.iter().enumerate() {
                        net[bi][ci].extend(r.get(&format!("prog_ns.{}", c.key)));
                    }
                }
            }
            Ok(())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })?;
    let mut header = vec!["case"];
    header.extend(builds.iter().map(|(n, _)| n.as_str()));
    let mut t = Table::new("builds compared: harness ns net of the floor, median [min .. max] over rounds", &header);
    for (ci, c) in CASES.iter().enumerate() {
        let mut row = vec![c.key.to_string()];
        for (bi, (name, _)) in builds.iter().enumerate() {
            let key = format!("compare.{name}.{}", c.key);
            if let Some(s) = Stat::of(&net[bi][ci]) {
                report.stat(&key, s);
            }
            row.push(report.show(&key, 1));
        }
        t.row(row);
    }
    Ok(t)
}

fn harness_flows(c: &Case) -> Flows {
    match (c.pattern, c.kind) {
        (Pattern::Same, _) => Flows::Fixed,
        (Pattern::New, Kind::Syn6) => Flows::NewV6,
        (Pattern::New, _) => Flows::NewV4,
        (Pattern::Pool, _) => Flows::PoolV4(POOL),
    }
}

/// Katran's figure, ratio and target of a case, into the report.
fn compare(report: &mut Report, prefix: &str, case: &Case, net: &[f64]) {
    let Some(k) = case.katran() else { return };
    let key = case.key;
    let ratios: Vec<f64> = net.iter().map(|n| n / k).collect();
    let s = Stat::of(&ratios).unwrap();
    report.stat(&format!("{prefix}.{key}"), s);
    if prefix == "katran_ratio" {
        report.number(&format!("prog_ns.{key}.target"), (k * TARGET_SHARE).round());
        report.set(&format!("prog_ns.{key}.within_target"), serde_json::json!(s.median <= TARGET_SHARE));
    }
}

/// BPF_PROG_TEST_RUN calls per case and round in the harness method. Each
/// call with repeat > 1 swaps the kernel's XDP dispatcher twice (about
/// 17 ms here), so there are few, long calls.
const HARNESS_BLOCKS: usize = 3;

/// Rounds of the harness method per round of the budget (see `run`).
const HARNESS_ROUND_FACTOR: usize = 3;

fn measure_harness(dp: &mut Dataplane, guard: &Guard, drop: &Xdp, budget: &Budget, report: &mut Report) -> Result<()> {
    let runs = budget.prog_runs.max(10);
    let blocks = HARNESS_BLOCKS;
    let repeat = runs.div_ceil(blocks) as u32;
    let (to_lb, to_drop) = (Target::new(dp.balancer().fd()?)?, Target::new(drop.fd()?)?);
    let mut harnesses = Vec::new();
    for c in CASES.iter().skip(1) {
        // Templates: source low 16 bits 0 and IP id 0xffff (see Flows).
        let f = frame(c.kind, 0, c.kind.sport());
        let on_lb = Harness::new(&f, c.kind.grow(), harness_flows(c), &to_lb).with_context(|| c.key)?;
        let on_drop = Harness::new(&f, c.kind.grow(), harness_flows(c), &to_drop).with_context(|| c.key)?;
        harnesses.push((c, on_lb, on_drop));
    }
    let floor_frame = frame(Kind::Ack4, 0, 1);
    let mut net: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    let (mut floor, mut hfloor) = (Vec::new(), Vec::new());
    for _ in 0..budget.rounds {
        aborted()?;
        // lb_drop never changes its frame: plain repeat is the floor.
        let mut f = Vec::new();
        for _ in 0..blocks {
            let r = drop.test_run(TestRunOptions { data_in: Some(&floor_frame), repeat, ..Default::default() })?;
            f.push(r.duration.as_nanos() as f64);
        }
        floor.push(Stat::of(&f).unwrap().median);
        let mut flooded = false;
        for (i, (c, h_lb, h_drop)) in harnesses.iter().enumerate() {
            guard.set(dp, c, &mut flooded)?;
            let (mut on_lb, mut on_drop) = (Vec::new(), Vec::new());
            for _ in 0..blocks {
                let (v, ns) = h_lb.run(repeat)?;
                if v != c.verdict {
                    bail!("{}: verdict {v}, expected {} (harness)", c.key, c.verdict);
                }
                on_lb.push(ns);
                let (v, ns) = h_drop.run(repeat)?;
                if v != XDP_DROP {
                    bail!("{}: floor verdict {v} (harness)", c.key);
                }
                on_drop.push(ns);
            }
            let d = Stat::of(&on_drop).unwrap().median;
            net[i + 1].push(Stat::of(&on_lb).unwrap().median - d);
            if c.key == "tcp_ack" {
                hfloor.push(d);
            }
        }
        guard.set(dp, &CASES[0], &mut flooded)?;
    }
    report.stat("prog_ns.floor", Stat::of(&floor).unwrap());
    report.stat("prog_ns.harness_floor", Stat::of(&hfloor).unwrap());
    report.number("prog_ns.packets_per_case_per_round", f64::from(repeat) * blocks as f64);
    report.number("prog_ns.rounds", budget.rounds as f64);
    for (ci, c) in CASES.iter().enumerate().skip(1) {
        report.stat(&format!("prog_ns.{}", c.key), Stat::of(&net[ci]).unwrap());
        compare(report, "katran_ratio", c, &net[ci]);
    }
    Ok(())
}

fn measure_single(dp: &mut Dataplane, guard: &Guard, drop: &Xdp, budget: &Budget, report: &mut Report) -> Result<()> {
    // A quarter of the harness's packets: medians of thousands are stable,
    // and new flows must not fill the connection table.
    let runs = (budget.prog_runs / 4).max(10);
    let blocks = 10usize.min(runs);
    let per_block = runs.div_ceil(blocks);
    let n = per_block * blocks;
    // New flows: source low 16 bits from 1024 on (the pools use 0..1024),
    // then the next source port.
    let mut next_new = 0u32;
    let mut per_round: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    for _ in 0..budget.rounds {
        aborted()?;
        // Frames, built before the timed loop.
        let frames: Vec<Vec<Vec<u8>>> = CASES
            .iter()
            .map(|c| match c.pattern {
                Pattern::Same => vec![frame(c.kind, 0, c.kind.sport())],
                Pattern::Pool => (0..POOL).map(|lo| frame(c.kind, lo, c.kind.sport())).collect(),
                Pattern::New => (0..n)
                    .map(|_| {
                        next_new += 1;
                        frame(c.kind, 1024 + next_new % 64_512, 1024 + (next_new / 64_512) as u16)
                    })
                    .collect(),
            })
            .collect();
        let mut samples: Vec<Vec<u32>> = vec![Vec::with_capacity(n); CASES.len()];
        let mut flooded = false;
        for b in 0..blocks {
            for (ci, c) in CASES.iter().enumerate() {
                guard.set(dp, c, &mut flooded)?;
                let prog = if ci == 0 { drop } else { dp.balancer() };
                for i in 0..per_block {
                    let k = b * per_block + i;
                    let f = &frames[ci][k % frames[ci].len()];
                    let (verdict, ns) = run_once(prog, f)?;
                    if verdict != c.verdict {
                        bail!("{}: verdict {verdict}, expected {}", c.key, c.verdict);
                    }
                    samples[ci].push(ns);
                }
            }
        }
        guard.set(dp, &CASES[0], &mut flooded)?;
        for (ci, s) in samples.iter_mut().enumerate() {
            per_round[ci].push(median_u32(s));
        }
    }
    let floor = per_round[0].clone();
    report.stat("prog_ns_single.floor", Stat::of(&floor).context("no floor samples")?);
    report.number("prog_ns_single.packets_per_case_per_round", n as f64);
    for (ci, c) in CASES.iter().enumerate().skip(1) {
        let net: Vec<f64> = per_round[ci].iter().zip(&floor).map(|(x, f)| x - f).collect();
        report.stat(&format!("prog_ns_single.{}", c.key), Stat::of(&net).unwrap());
        compare(report, "katran_ratio_single", c, &net);
    }
    Ok(())
}

/// The per-packet table.
pub fn table(r: &Report) -> Table {
    let mut t = Table::new(
        "1. Cost per packet: BPF_PROG_TEST_RUN, fresh frame each packet, 100 backends per VIP, ns net of the lb_drop floor",
        &["case", "harness ns [min .. max]", "Katran", "lb / Katran", "target", "single runs ns", "what"],
    );
    for c in &CASES {
        let key = format!("prog_ns.{}", c.key);
        let single = r.show(&format!("prog_ns_single.{}", c.key), 0);
        if c.key == "floor" {
            t.row(vec!["floor".into(), r.show(&key, 1), "~21".into(), "".into(), "".into(), single, c.what.into()]);
            t.row(vec![
                "harness floor".into(),
                r.show("prog_ns.harness_floor", 1),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
                "harness + tail call + lb_drop (raw), subtracted per case".into(),
            ]);
            continue;
        }
        let (k, ratio, target) = match c.katran() {
            Some(k) => (
                format!("{k:.0}"),
                r.show(&format!("katran_ratio.{}", c.key), 2),
                format!("<= {:.0}", k * TARGET_SHARE),
            ),
            _ => ("-".into(), "-".into(), "-".into()),
        };
        t.row(vec![c.key.into(), r.show(&key, 1), k, ratio, target, single, c.what.into()]);
    }
    t
}
