//! BPF_PROG_TEST_RUN fixtures of `lb_balancer`, in the style of Katran's
//! test fixtures: a table of cases, each an input frame built byte by byte,
//! the expected XDP verdict, the exact expected output frame, and the
//! `lb_common::stats` counter that must go up by exactly one.
//!
//! Also here: the "userspace predicts the kernel" test (random flows, the
//! kernel's backend choice == `Dataplane::predict_backend`), and the
//! connection-table test across configuration changes.
//!
//! Needs root (BPF). The dataplane allocates ~250 MB of maps, so it is loaded
//! once per test binary and shared under a lock; every test (re-)applies the
//! base configuration first.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::programs::{TestRun, TestRunOptions};
use lb::dataplane::Dataplane;
use lb_common::net::{IPPROTO_TCP, IPPROTO_UDP};
use lb_common::{FlowKey, stats};
use lb_tests::model::{XDP_DROP, XDP_PASS, XDP_TX, stat_name, verdict_name};
use lb_tests::packet::{Packet, hex_diff, ipip_encap, l2dsr, mac, truncated};
use lb_tests::rng::Rng;

#[path = "fixtures/cases.rs"]
mod cases;
#[path = "fixtures/check.rs"]
mod check;
#[path = "fixtures/config.rs"]
mod config;
#[path = "fixtures/conntrack.rs"]
mod conntrack;
#[path = "fixtures/harness.rs"]
mod harness;
#[path = "fixtures/table.rs"]
mod table;
use cases::build_cases;
use check::{check_case, forwarded_backend};
use config::{
    NEXTHOP_MAC, TUN_SRC_V4, TUN_SRC_V6, V4, V4_CT, V4_EMPTY, VipDef, backend_mac, base_vips, be_mac, config, ct_vips,
};
use conntrack::{conntrack_scenario, ct_flow, send};
use harness::{counts, dataplane, delta, run};
use table::p4;

#[test]
fn fixture_table() {
    let Some(dp) = dataplane("fixture_table") else { return };
    let cases = build_cases(&dp);
    assert!(cases.len() >= 35, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        match check_case(&dp, case) {
            None => {
                println!("ok   {} -> {} [{}]", case.description, verdict_name(case.verdict), stat_name(case.counter))
            }
            Some(report) => {
                println!("{report}");
                failures.push(case.description.clone());
            }
        }
    }
    println!("{} cases, {} passed, {} failed", cases.len(), cases.len() - failures.len(), failures.len());
    assert!(
        failures.is_empty(),
        "{} of {} fixture cases failed:\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );
}

#[test]
fn frames_shorter_than_ethernet_are_refused_by_the_kernel() {
    // BPF_PROG_TEST_RUN needs at least ETH_HLEN (14) bytes for XDP; shorter
    // frames never reach the program, so the table starts at 14.
    let Some(dp) = dataplane("frames_shorter_than_ethernet_are_refused_by_the_kernel") else { return };
    let frame = p4(V4).tcp(1, 80).syn().build();
    for len in [0usize, 1, 6, 12, 13] {
        let input = truncated(&frame, len);
        let mut out = vec![0u8; 256];
        let r = dp.balancer().test_run(TestRunOptions {
            data_in: Some(&input),
            data_out: Some(&mut out),
            ..Default::default()
        });
        assert!(r.is_err(), "a {len}-byte frame was accepted: {r:?}");
    }
    let r = run(dp.balancer(), &truncated(&frame, 14));
    assert_eq!(r.verdict, XDP_DROP, "14-byte IPv4-ethertype frame");
}

// ---------------------------------------------------------------------------
// The userspace copy of the flow hash predicts the kernel

#[test]
fn userspace_prediction_matches_the_kernel_for_random_flows() {
    let Some(dp) = dataplane("userspace_prediction_matches_the_kernel_for_random_flows") else { return };
    let vips = base_vips();
    // (address, port, proto, l2dsr) of the VIPs under test, with their backends.
    let targets: Vec<&VipDef> = vips.iter().filter(|v| !v.backends.is_empty() && v.addr != IpAddr::V4(V4_CT)).collect();
    assert!(targets.len() >= 5);
    let nexthop = mac(NEXTHOP_MAC);
    let mut rng = Rng(0x6c62_2d74_6573_7473);
    let mut seen: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
    let mut mismatches = Vec::new();
    const FLOWS: usize = 2000;
    for i in 0..FLOWS {
        let v = targets[rng.below(targets.len() as u64) as usize];
        let sport = 1024 + rng.below(64512) as u16;
        let mut pkt = Packet::new();
        match rng.below(4) {
            0 => pkt = pkt.dot1q(rng.below(4094) as u16 + 1),
            1 => pkt = pkt.dot1ad(10).dot1q(rng.below(4094) as u16 + 1),
            _ => {}
        }
        pkt = match v.addr {
            IpAddr::V4(a) => {
                let r = rng.next_u64();
                pkt.ipv4(Ipv4Addr::new(198, 19, (r >> 8) as u8, r as u8), a)
            }
            IpAddr::V6(a) => {
                let r = rng.next_u64();
                let src = Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    0xffff,
                    (r >> 48) as u16,
                    (r >> 32) as u16,
                    (r >> 16) as u16,
                    r as u16,
                    i as u16,
                );
                pkt.ipv6(src, a)
            }
        };
        pkt = if v.proto == IPPROTO_TCP {
            let p = pkt.tcp(sport, v.port);
            if rng.below(2) == 0 { p.syn() } else { p.ack() }
        } else {
            pkt.udp(sport, v.port).payload(&[i as u8; 5])
        };
        let flow: FlowKey = pkt.flow_key();
        let frame = pkt.build();
        let predicted = dp.predict_backend(&flow).expect("predict_backend").expect("VIP has backends");
        let r = run(dp.balancer(), &frame);
        let expected = if v.l2dsr {
            l2dsr(&frame, backend_mac(&vips, predicted))
        } else {
            ipip_encap(&frame, pkt.l2_len(), nexthop, TUN_SRC_V4, TUN_SRC_V6, predicted)
        };
        let kernel = forwarded_backend(&dp, &r.output);
        if r.verdict != XDP_TX || r.output != expected {
            mismatches.push(format!(
                "flow {i} to {}:{} proto {}: verdict {}, kernel chose {kernel:?}, userspace predicted {predicted}\n{}",
                v.addr,
                v.port,
                v.proto,
                verdict_name(r.verdict),
                hex_diff(&expected, &r.output)
            ));
        }
        if let Some(k) = kernel {
            seen.entry(format!("{}:{}/{}", v.addr, v.port, v.proto)).or_default().insert(k);
        }
    }
    for m in mismatches.iter().take(5) {
        println!("{m}");
    }
    assert!(mismatches.is_empty(), "{} of {FLOWS} flows: kernel choice != userspace prediction", mismatches.len());
    // Every backend of every VIP got some of the flows (the test exercised the rings).
    for v in &targets {
        let name = format!("{}:{}/{}", v.addr, v.port, v.proto);
        let got = seen.get(&name).cloned().unwrap_or_default();
        let want: BTreeSet<IpAddr> = v.backends.iter().map(|b| b.addr).collect();
        assert_eq!(got, want, "backends reached for {name}");
        println!("{name}: {} backends reached", got.len());
    }
}

// ---------------------------------------------------------------------------
// Connection table across configuration changes

#[test]
fn connection_table_keeps_flows_across_config_changes() {
    let Some(mut dp) = dataplane("connection_table_keeps_flows_across_config_changes") else { return };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| conntrack_scenario(&mut dp)));
    // Leave the shared dataplane as the other tests expect it.
    dp.apply(&config(&base_vips())).expect("re-applying the base configuration");
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// An established flow is forwarded from its connection entry without the
/// VIP lookup: its backend's entry must follow the VIP's mode, and a removed
/// VIP must take its flows with it.
#[test]
fn established_flows_follow_the_vip_mode_and_its_removal() {
    let Some(mut dp) = dataplane("established_flows_follow_the_vip_mode_and_its_removal") else { return };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Backends with MACs, so the same backends serve both modes.
        let backends = vec![be_mac("198.18.0.41", "02:00:00:00:04:41"), be_mac("198.18.0.42", "02:00:00:00:04:42")];
        let with_mode = |l2dsr: bool| {
            let mut vips = ct_vips(backends.clone());
            for v in vips.iter_mut().filter(|v| v.addr == IpAddr::V4(V4_CT)) {
                v.l2dsr = l2dsr;
            }
            vips
        };
        dp.apply(&config(&with_mode(false))).unwrap();
        let flow = ct_flow(31_000, IPPROTO_TCP);
        let syn = send(&dp, &flow.clone().syn());
        let backend = syn.backend.expect("SYN forwarded over IPIP");
        let ack = flow.clone().ack().build();
        assert_eq!(send(&dp, &flow.clone().ack()).backend, Some(backend), "ACK over IPIP");

        dp.apply(&config(&with_mode(true))).unwrap();
        let before = counts(&dp);
        let r = run(dp.balancer(), &ack);
        let after = counts(&dp);
        assert_eq!(r.verdict, XDP_TX);
        assert_eq!(delta(&before, &after, stats::CONNTRACK_HIT), 1, "still the table's flow");
        assert_eq!(delta(&before, &after, stats::TX_L2DSR), 1, "now in l2dsr mode");
        let mac_of = backends.iter().find(|b| b.addr == backend).and_then(|b| b.mac).expect("the backend's MAC");
        assert_eq!(r.output.len(), ack.len(), "not encapsulated");
        assert_eq!(r.output[0..6], mac_of, "to the backend's MAC");

        let without: Vec<VipDef> = base_vips().into_iter().filter(|v| v.addr != IpAddr::V4(V4_CT)).collect();
        dp.apply(&config(&without)).unwrap();
        let before = counts(&dp);
        let r = run(dp.balancer(), &ack);
        let after = counts(&dp);
        assert_eq!(r.verdict, XDP_PASS, "the VIP is gone");
        assert_eq!(delta(&before, &after, stats::PASS_NOT_VIP), 1);
        assert_eq!(delta(&before, &after, stats::CONNTRACK_HIT), 0);
    }));
    dp.apply(&config(&base_vips())).expect("re-applying the base configuration");
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

// ---------------------------------------------------------------------------
// Address-level drops follow the configuration

#[test]
fn address_level_drops_follow_vip_removal() {
    let Some(mut dp) = dataplane("address_level_drops_follow_vip_removal") else { return };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let frag = |dst: Ipv4Addr| p4(dst).mf().l4_raw(IPPROTO_UDP, &[0; 16]).build();
        let verdict_and_counter = |dp: &Dataplane, frame: &[u8]| {
            let before = counts(dp);
            let r = run(dp.balancer(), frame);
            let after = counts(dp);
            let moved: Vec<u32> = (0..stats::COUNT).filter(|&i| delta(&before, &after, i) != 0).collect();
            (r.verdict, moved)
        };
        assert_eq!(verdict_and_counter(&dp, &frag(V4_EMPTY)), (XDP_DROP, vec![stats::DROP_FRAGMENT]));
        // Remove the only VIP of 198.18.100.3 and tcp/80 of 198.18.100.1
        // (udp/53 stays on that address).
        let vips: Vec<VipDef> = base_vips()
            .into_iter()
            .filter(|v| v.addr != IpAddr::V4(V4_EMPTY) && !(v.addr == IpAddr::V4(V4) && v.proto == IPPROTO_TCP))
            .collect();
        dp.apply(&config(&vips)).unwrap();
        assert_eq!(
            verdict_and_counter(&dp, &frag(V4_EMPTY)),
            (XDP_PASS, vec![stats::PASS_NOT_VIP]),
            "fragment to an address that no longer carries a VIP"
        );
        assert_eq!(
            verdict_and_counter(&dp, &frag(V4)),
            (XDP_DROP, vec![stats::DROP_FRAGMENT]),
            "fragment to an address that still carries udp/53"
        );
        let syn = p4(V4).tcp(61000, 80).syn().build();
        assert_eq!(verdict_and_counter(&dp, &syn), (XDP_PASS, vec![stats::PASS_NOT_VIP]), "SYN to the removed tcp/80");
        // And back.
        dp.apply(&config(&base_vips())).unwrap();
        assert_eq!(verdict_and_counter(&dp, &frag(V4_EMPTY)), (XDP_DROP, vec![stats::DROP_FRAGMENT]));
        let (v, moved) = verdict_and_counter(&dp, &syn);
        assert_eq!((v, moved.contains(&stats::TX_IPIP)), (XDP_TX, true), "SYN to the re-added tcp/80");
    }));
    dp.apply(&config(&base_vips())).expect("re-applying the base configuration");
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
