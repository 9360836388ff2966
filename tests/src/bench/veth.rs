//! Part 2: throughput on veth, one core, 64-byte frames.
//!
//! ```text
//!   gen namespace                        target namespace
//!   g-drop  <--veth-->  t-drop   lb_drop (the ceiling)
//!   g-swap  <--veth-->  t-swap   MAC-swap + XDP_TX (the forwarding limit)
//!   g-lb    <--veth-->  t-lb     lb_balancer (ipip and l2dsr VIPs, 100 backends each)
//! ```
//!
//! The generator is BPF_PROG_TEST_RUN in live-frames mode with
//! `ingress_ifindex` = a g-* veth: a hand-written program rewrites each
//! frame from a template (a TCP ACK to a VIP; 1, 1000 or 1,000,000 flows
//! drawn at random) and returns XDP_TX, which sends it through the veth to
//! the program under test. Frames that program sends back (XDP_TX) arrive on
//! the g-* veth, where an XDP_DROP sink counts them (`ethtool -S`
//! rx_queue_0_xdp_drops). The generator, the program under test and the
//! sink all run in softirq context on the generator's CPU: one core.
//! Delivered rate = frames counted at the sink (t-drop itself for the
//! ceiling) / wall time of the generator loop.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aya::programs::{Xdp, XdpMode};
use lb::config::XdpModeSetting;
use lb::dataplane::Dataplane;
use lb_tests::netns::{self, Netns, XdpLink, attach_xdp_insns};

use super::config::{NEXTHOP_MAC, V4, V4_DSR, mac_bytes};
use super::raw::{self, GEN_FRAME_LEN};
use super::report::{Report, Stat, Table};
use super::{Budget, aborted, prog, sys};

/// Base source port of generated flows.
const BASE_SPORT: u16 = 20_000;
/// Frames per BPF_PROG_TEST_RUN call.
const CHUNK: u32 = 1 << 18;
/// Live-frames batch size (frames per NAPI-like batch).
const BATCH: u32 = 64;
/// Default flow count of the four base cases.
const BASE_FLOWS: u32 = 1000;

/// (key, program under test, what)
pub const CASES: [(&str, &str); 7] = [
    ("drop", "lb_drop on the receiving veth: the ceiling"),
    ("macswap_tx", "MAC swap + XDP_TX: the forwarding limit"),
    ("ipip", "lb, IPIP VIP, 1000 flows"),
    ("l2dsr", "lb, L2 DSR VIP, 1000 flows"),
    ("ipip_flows_1", "lb, IPIP, 1 flow"),
    ("ipip_flows_1000", "lb, IPIP, 1000 flows (same setup as ipip)"),
    ("ipip_flows_1000000", "lb, IPIP, 1,000,000 flows (table pressure)"),
];

/// The generator's template: a 64-byte TCP ACK to `dst`:80.
fn template(dst: std::net::Ipv4Addr, dst_mac: [u8; 6], src_mac: [u8; 6]) -> [u8; GEN_FRAME_LEN] {
    raw::tcp_template(dst, dst_mac, src_mac, BASE_SPORT, false)
}

struct Pair {
    gen_if: &'static str,
    tgt_if: &'static str,
}

const DROP: Pair = Pair { gen_if: "g-drop", tgt_if: "t-drop" };
const SWAP: Pair = Pair { gen_if: "g-swap", tgt_if: "t-swap" };
const LB: Pair = Pair { gen_if: "g-lb", tgt_if: "t-lb" };

struct Setup {
    gen_ns: Netns,
    tgt_ns: Netns,
    /// Sinks, MAC swap: detached on drop.
    links: Vec<XdpLink>,
    /// lb_drop, attached through aya: detached on drop.
    drop_obj: Option<aya::Ebpf>,
}

impl Setup {
    fn new() -> Result<Setup> {
        netns::sweep_stale_namespaces();
        let base = format!("lbt{}x{}", std::process::id(), 800);
        let gen_ns = Netns::create(&format!("{base}-gen"))?;
        let tgt_ns = Netns::create(&format!("{base}-tgt"))?;
        let mut s = Setup { gen_ns, tgt_ns, links: Vec::new(), drop_obj: None };
        let macs = [
            (&DROP, "02:00:00:00:ee:03", "02:00:00:00:ee:04"),
            (&SWAP, "02:00:00:00:ee:05", "02:00:00:00:ee:06"),
            (&LB, NEXTHOP_MAC, "02:00:00:00:ee:02"),
        ];
        let (g, t) = (s.gen_ns.name().to_string(), s.tgt_ns.name().to_string());
        for (p, gmac, tmac) in macs {
            netns::ip_in(
                &g,
                &[
                    "link", "add", p.gen_if, "address", gmac, "type", "veth", "peer", "name", p.tgt_if, "address",
                    tmac, "netns", &t,
                ],
            )?;
            netns::ip_in(&g, &["link", "set", p.gen_if, "up"])?;
            netns::ip_in(&t, &["link", "set", p.tgt_if, "up"])?;
            // The sink: counts what comes back, and gives the generator's
            // veth the XDP receive queue live frames need.
            s.links.push(attach_xdp_insns(&g, p.gen_if, "bench_sink", &raw::constant(raw::XDP_DROP))?);
        }
        s.links.push(attach_xdp_insns(&t, SWAP.tgt_if, "bench_macswap", &raw::macswap())?);
        let mut drop_obj = prog::load_drop()?;
        sys::scoped_in_netns(&t, None, || {
            let p: &mut Xdp = drop_obj.program_mut("lb_drop").context("lb_drop")?.try_into()?;
            p.attach(DROP.tgt_if, XdpMode::Driver).context("attaching lb_drop")?;
            Ok(())
        })?;
        s.drop_obj = Some(drop_obj);
        Ok(s)
    }
}

/// One measurement: runs `gen` for `secs` into `pair`, returns (delivered
/// Mpps, offered Mpps, counters of the far side).
fn run_one(
    setup: &Setup,
    generator: &OwnedFd,
    frame: &[u8; GEN_FRAME_LEN],
    pair: &Pair,
    delivered_at_target: bool,
    secs: f64,
) -> Result<(f64, f64)> {
    let (g, t) = (setup.gen_ns.name(), setup.tgt_ns.name());
    let (sink_ns, sink_if) = if delivered_at_target { (t, pair.tgt_if) } else { (g, pair.gen_if) };
    let key = "rx_queue_0_xdp_drops";
    let count = |s: &BTreeMap<String, u64>| s.get(key).copied().with_context(|| format!("no {key} on {sink_if}"));
    let before = count(&sys::ethtool_stats(sink_ns, sink_if)?)?;
    let ifindex = sys::scoped_in_netns(g, None, || sys::ifindex(pair.gen_if))?;
    let cpu = sys::bench_cpu();
    let (sent, elapsed) = sys::scoped_in_netns(g, Some(cpu), || {
        let t0 = Instant::now();
        let mut sent = 0u64;
        while t0.elapsed().as_secs_f64() < secs {
            aborted()?;
            raw::test_run_live(generator, frame, ifindex, CHUNK, BATCH).context("BPF_PROG_TEST_RUN (live frames)")?;
            sent += u64::from(CHUNK);
        }
        Ok((sent, t0.elapsed()))
    })?;
    std::thread::sleep(Duration::from_millis(20));
    let after = count(&sys::ethtool_stats(sink_ns, sink_if)?)?;
    let delivered = after.saturating_sub(before);
    let s = elapsed.as_secs_f64();
    Ok((delivered as f64 / s / 1e6, sent as f64 / s / 1e6))
}

/// Measures every case in `budget.rounds` rounds; ratios per round.
pub fn run(dp: &mut Dataplane, budget: &Budget, report: &mut Report) -> Result<()> {
    if !sys::have("ethtool") {
        bail!("ethtool is not installed (the bench reads the veths' XDP counters with `ethtool -S`)");
    }
    let setup = Setup::new()?;
    let t = setup.tgt_ns.name().to_string();
    sys::scoped_in_netns(&t, None, || Ok(dp.attach(LB.tgt_if, XdpModeSetting::Native)?))
        .context("attaching lb_balancer")?;

    let gen_mac = mac_bytes(NEXTHOP_MAC);
    let ipip_frame = template(V4, mac_bytes("02:00:00:00:ee:02"), gen_mac);
    let dsr_frame = template(V4_DSR, mac_bytes("02:00:00:00:ee:02"), gen_mac);
    let load =
        |name: &str, f: &[u8; GEN_FRAME_LEN], flows: u32| raw::load_xdp(name, &raw::generator(f, flows, BASE_SPORT));
    let gen_ipip = load("bench_gen", &ipip_frame, BASE_FLOWS)?;
    let gen_dsr = load("bench_gen", &dsr_frame, BASE_FLOWS)?;
    let gen_one = load("bench_gen", &ipip_frame, 1)?;
    let gen_million = load("bench_gen", &ipip_frame, 1_000_000)?;

    let stats_before = dp.stats().ok();
    let mut mpps: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut offered: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    // Prime the connection table for the 1000-flow cases.
    run_one(&setup, &gen_ipip, &ipip_frame, &LB, false, 0.2)?;
    run_one(&setup, &gen_dsr, &dsr_frame, &LB, false, 0.2)?;
    for _ in 0..budget.rounds {
        for (case, _) in CASES {
            if case == "ipip_flows_1000" {
                continue; // the same measurement as "ipip", copied below
            }
            aborted()?;
            let (generator, frame, pair, at_target) = match case {
                "drop" => (&gen_ipip, &ipip_frame, &DROP, true),
                "macswap_tx" => (&gen_ipip, &ipip_frame, &SWAP, false),
                "ipip" | "ipip_flows_1000" => (&gen_ipip, &ipip_frame, &LB, false),
                "l2dsr" => (&gen_dsr, &dsr_frame, &LB, false),
                "ipip_flows_1" => (&gen_one, &ipip_frame, &LB, false),
                "ipip_flows_1000000" => (&gen_million, &ipip_frame, &LB, false),
                _ => unreachable!(),
            };
            let (d, o) = run_one(&setup, generator, frame, pair, at_target, budget.veth_secs)?;
            mpps.entry(case).or_default().push(d);
            offered.entry(case).or_default().push(o);
        }
    }
    let same = mpps["ipip"].clone();
    mpps.insert("ipip_flows_1000", same);
    let same = offered["ipip"].clone();
    offered.insert("ipip_flows_1000", same);
    for (case, _) in CASES {
        report.stat(&format!("veth_mpps.{case}"), Stat::of(&mpps[case]).unwrap());
        report.number(&format!("veth_mpps_offered.{case}"), Stat::of(&offered[case]).unwrap().median);
    }
    let ratio = |num: &str, den: &str| -> Vec<f64> { mpps[num].iter().zip(&mpps[den]).map(|(a, b)| a / b).collect() };
    for case in ["macswap_tx", "ipip", "l2dsr", "ipip_flows_1", "ipip_flows_1000000"] {
        report.stat(&format!("veth_ratio.{case}_vs_drop"), Stat::of(&ratio(case, "drop")).unwrap());
    }
    for case in ["ipip", "l2dsr", "ipip_flows_1", "ipip_flows_1000000"] {
        let s = Stat::of(&ratio(case, "macswap_tx")).unwrap();
        report.stat(&format!("veth_ratio.{case}_vs_macswap_tx"), s);
    }
    report.set(
        "veth_ratio.ipip_vs_macswap_tx.within_target",
        serde_json::json!(report.get("veth_ratio.ipip_vs_macswap_tx").is_some_and(|r| r >= 0.9)),
    );
    report.set(
        "veth_ratio.l2dsr_vs_macswap_tx.within_target",
        serde_json::json!(report.get("veth_ratio.l2dsr_vs_macswap_tx").is_some_and(|r| r >= 0.9)),
    );
    if let (Some(b), Ok(a)) = (stats_before, dp.stats()) {
        use lb_common::stats;
        let d = |i: u32| (a[i as usize].packets - b[i as usize].packets) as f64;
        // New flows the product's flood guard (global.new_flow_limit,
        // default 250000/s per CPU) forwarded without recording them.
        report.number("veth.conntrack_guarded", d(stats::CONNTRACK_GUARDED));
        report.number("veth.conntrack_misses", d(stats::CONNTRACK_MISS));
    }
    report.number("veth_mpps.frame_bytes", GEN_FRAME_LEN as f64);
    report.number("veth_mpps.seconds_per_run", budget.veth_secs);
    report.number("veth_mpps.cpu", sys::bench_cpu() as f64);
    if let Ok(s) = sys::ethtool_stats(&t, LB.tgt_if) {
        report.number("veth.lb_xdp_tx_errors", s.get("rx_queue_0_xdp_tx_errors").copied().unwrap_or(0) as f64);
    }
    drop(setup);
    Ok(())
}

pub fn table(r: &Report) -> Table {
    let mut t = Table::new(
        "2. Throughput on veth (64-byte frames, live-frames generator, one core; Mpps delivered)",
        &["case", "Mpps median [min .. max]", "/ drop ceiling", "/ MAC-swap XDP_TX", "what"],
    );
    for (case, what) in CASES {
        let vs = |den: &str| {
            if case == den || (case == "drop") || (den == "macswap_tx" && case == "macswap_tx") {
                "-".to_string()
            } else if case == "ipip_flows_1000" {
                r.show(&format!("veth_ratio.ipip_vs_{den}"), 2)
            } else {
                r.show(&format!("veth_ratio.{case}_vs_{den}"), 2)
            }
        };
        t.row(vec![case.into(), r.show(&format!("veth_mpps.{case}"), 2), vs("drop"), vs("macswap_tx"), what.into()]);
    }
    t
}

pub const KEYS: [&str; 7] = [
    "veth_mpps.drop",
    "veth_mpps.macswap_tx",
    "veth_mpps.ipip",
    "veth_mpps.l2dsr",
    "veth_mpps.ipip_flows_1",
    "veth_mpps.ipip_flows_1000",
    "veth_mpps.ipip_flows_1000000",
];
