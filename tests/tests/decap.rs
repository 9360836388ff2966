//! BPF_PROG_TEST_RUN fixtures of `lb_decap`, the backend-side program that
//! strips lb's IPv4-in-IPv4 / IPv6-in-IPv6 header, and of the reference
//! programs `lb_pass` / `lb_drop` of the same object.
//!
//! Tunnel frames are made with the reference encapsulation of
//! `lb_tests::packet` (what lb_balancer outputs), so these are also the round
//! trip: client frame -> lb's encapsulation -> lb_decap -> the client's IP
//! packet back. Needs root.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::{
    Ebpf,
    maps::PerCpuArray,
    programs::{TestRun, TestRunOptions, Xdp},
};
use lb_common::{
    Counters,
    consts::{maps, progs},
    net::{IPPROTO_IPIP, IPPROTO_IPV6},
    stats::decap,
};
use lb_tests::packet::{
    self, Ipv6Ext, Mac, Packet, hex_diff, ipip_decap, ipip_encap_v4, ipip_encap_v6, mac, truncated,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const NEXTHOP: &str = "02:00:00:00:00:fe";
const TUN_SRC_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const TUN_SRC_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const BACKEND_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
const BACKEND_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The decap object with one program loaded.
struct Loaded {
    ebpf: Ebpf,
    name: &'static str,
}

impl Loaded {
    fn new(test: &str, name: &'static str) -> Option<Loaded> {
        if !is_root() {
            eprintln!("SKIP {test}: BPF_PROG_TEST_RUN of XDP programs needs root");
            return None;
        }
        let mut ebpf = Ebpf::load(lb::objects::DECAP).expect("loading the decap object");
        let prog: &mut Xdp = ebpf.program_mut(name).expect("program in the object").try_into().expect("an XDP program");
        prog.load().expect("verifier");
        Some(Loaded { ebpf, name })
    }

    fn prog(&self) -> &Xdp {
        self.ebpf.program(self.name).unwrap().try_into().unwrap()
    }

    fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        let input = frame.to_vec();
        let mut out = vec![0u8; frame.len() + 256];
        let r = self
            .prog()
            .test_run(TestRunOptions { data_in: Some(&input), data_out: Some(&mut out), ..Default::default() })
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    /// `DECAP_STATS` packet counts, summed over CPUs.
    fn counts(&self) -> Vec<u64> {
        let map = self.ebpf.map(maps::DECAP_STATS).expect("DECAP_STATS");
        let array = PerCpuArray::<_, Counters>::try_from(map).expect("per-CPU array");
        (0..decap::COUNT).map(|i| array.get(&i, 0).unwrap().iter().map(|c| c.packets).sum()).collect()
    }
}

struct Case {
    description: String,
    input: Vec<u8>,
    verdict: u32,
    output: Vec<u8>,
    /// `lb_common::stats::decap` index that must go up by exactly one.
    counter: u32,
}

fn nexthop() -> Mac {
    mac(NEXTHOP)
}

fn encap4(pkt: &Packet) -> Vec<u8> {
    ipip_encap_v4(&pkt.build(), pkt.l2_len(), nexthop(), TUN_SRC_V4, BACKEND_V4)
}

fn encap6(pkt: &Packet) -> Vec<u8> {
    ipip_encap_v6(&pkt.build(), pkt.l2_len(), nexthop(), TUN_SRC_V6, BACKEND_V6)
}

/// A tunnel frame and what decap must make of it: the tunnel frame's
/// Ethernet header and tags, then the client's IP packet (and any trailing
/// bytes) exactly as the client sent it.
fn tunnel_case(description: &str, pkt: Packet, v6: bool) -> Case {
    let original = pkt.build();
    let l2 = pkt.l2_len();
    let input = if v6 { encap6(&pkt) } else { encap4(&pkt) };
    let mut output = input[..l2].to_vec();
    output.extend_from_slice(&original[l2..]);
    // Same thing by the reference decapsulation.
    assert_eq!(output, ipip_decap(&input, l2));
    Case {
        description: description.into(),
        input,
        verdict: XDP_PASS,
        output,
        counter: if v6 { decap::IP6IP6 } else { decap::IPIP },
    }
}

fn untouched(description: &str, input: Vec<u8>, verdict: u32, counter: u32) -> Case {
    Case { description: description.into(), output: input.clone(), input, verdict, counter }
}

fn cases() -> Vec<Case> {
    let c4 = || Packet::new().ipv4(CLIENT4, VIP4);
    let c6 = || Packet::new().ipv6(CLIENT6, VIP6);
    let mut v = vec![
        tunnel_case("IPv4-in-IPv4 of a TCP SYN", c4().df().tcp(40000, 80).syn(), false),
        tunnel_case(
            "IPv4-in-IPv4 of a TCP segment with data and TOS",
            c4().tos(0xb8).tcp(40001, 80).ack().payload(b"GET / HTTP/1.0\r\n\r\n"),
            false,
        ),
        tunnel_case("IPv4-in-IPv4 of UDP in 802.1Q", c4().dot1q(100).udp(5353, 53).payload(b"query"), false),
        tunnel_case(
            "IPv4-in-IPv4 in 802.1ad + 802.1Q with Ethernet padding",
            c4().dot1ad(1).dot1q(2).tcp(40002, 80).syn().pad_to(64),
            false,
        ),
        tunnel_case("IPv6-in-IPv6 of a TCP SYN", c6().tcp(40000, 80).syn(), true),
        tunnel_case(
            "IPv6-in-IPv6 of UDP with traffic class",
            c6().traffic_class(0x28).udp(5353, 53).payload(b"query"),
            true,
        ),
        tunnel_case(
            "IPv6-in-IPv6 in 802.1ad with trailing padding",
            c6().dot1ad(7).tcp(40003, 80).ack().pad_to(100),
            true,
        ),
    ];
    v.push(untouched("plain IPv4 TCP (not a tunnel)", c4().tcp(1, 80).syn().build(), XDP_PASS, decap::PASS));
    v.push(untouched("plain IPv6 UDP (not a tunnel)", c6().udp(1, 53).build(), XDP_PASS, decap::PASS));
    v.push(untouched(
        "plain IPv4 UDP in 802.1Q (not a tunnel)",
        c4().dot1q(5).udp(1, 53).build(),
        XDP_PASS,
        decap::PASS,
    ));
    v.push(untouched(
        "IPv4 ICMP to the backend (not a tunnel)",
        Packet::new().ipv4(CLIENT4, BACKEND_V4).icmp_echo(1, 1).build(),
        XDP_PASS,
        decap::PASS,
    ));
    v.push(untouched(
        "IPv6 with a fragment header (not a tunnel)",
        c6().ext(Ipv6Ext::Fragment { offset: 0, more: true, id: 1 }).udp(1, 53).build(),
        XDP_PASS,
        decap::PASS,
    ));
    v.push(untouched(
        "ARP (not IP)",
        Packet::new()
            .macs([0xff; 6], packet::DEFAULT_SRC_MAC)
            .arp_request(packet::DEFAULT_SRC_MAC, CLIENT4, BACKEND_V4)
            .pad_to(60)
            .build(),
        XDP_PASS,
        decap::PASS,
    ));
    // Truncated tunnel packets: the outer header says IP-in-IP, the inner
    // header is cut short.
    let t4 = encap4(&c4().tcp(40010, 80).syn());
    v.push(untouched(
        "IPv4-in-IPv4 cut inside the inner IPv4 header (10 of 20 bytes)",
        truncated(&t4, 14 + 20 + 10),
        XDP_DROP,
        decap::DROP_MALFORMED,
    ));
    v.push(untouched(
        "IPv4-in-IPv4 with no inner header at all",
        truncated(&t4, 14 + 20),
        XDP_DROP,
        decap::DROP_MALFORMED,
    ));
    let t4v = encap4(&c4().dot1q(9).udp(1, 53));
    v.push(untouched(
        "IPv4-in-IPv4 in 802.1Q cut inside the inner header (19 of 20 bytes)",
        truncated(&t4v, 18 + 20 + 19),
        XDP_DROP,
        decap::DROP_MALFORMED,
    ));
    let t6 = encap6(&c6().tcp(40011, 80).syn());
    v.push(untouched(
        "IPv6-in-IPv6 cut inside the inner IPv6 header (20 of 40 bytes)",
        truncated(&t6, 14 + 40 + 20),
        XDP_DROP,
        decap::DROP_MALFORMED,
    ));
    v.push(untouched(
        "IPv6-in-IPv6 cut inside the inner IPv6 header (39 of 40 bytes)",
        truncated(&t6, 14 + 40 + 39),
        XDP_DROP,
        decap::DROP_MALFORMED,
    ));
    // Cut after the inner IP header: the outer (and inner) length fields say
    // more than the frame holds.
    v.push(untouched(
        "IPv4-in-IPv4 cut inside the inner TCP header (outer length beyond the frame)",
        truncated(&t4, 14 + 20 + 20 + 10),
        XDP_DROP,
        decap::DROP_MALFORMED,
    ));
    v.push(untouched(
        "IPv6-in-IPv6 cut inside the inner TCP header (outer length beyond the frame)",
        truncated(&t6, 14 + 40 + 40 + 10),
        XDP_DROP,
        decap::DROP_MALFORMED,
    ));
    v
}

#[test]
fn decap_fixture_table() {
    let Some(lb) = Loaded::new("decap_fixture_table", progs::DECAP) else { return };
    let cases = cases();
    let mut failures = Vec::new();
    for case in &cases {
        let before = lb.counts();
        let (verdict, output) = lb.run(&case.input);
        let after = lb.counts();
        let mut problems = Vec::new();
        if verdict != case.verdict {
            problems.push(format!("verdict {verdict}, expected {}", case.verdict));
        }
        if output != case.output {
            problems.push(format!("output differs:\n{}", hex_diff(&case.output, &output)));
        }
        let moved: Vec<u64> = before.iter().zip(&after).map(|(b, a)| a - b).collect();
        if moved[case.counter as usize] != 1 || moved.iter().sum::<u64>() != 1 {
            problems.push(format!(
                "DECAP_STATS moved {:?} ({:?}), expected {} +1",
                moved,
                decap::LABELS,
                decap::LABELS[case.counter as usize]
            ));
        }
        if problems.is_empty() {
            println!("ok   {}", case.description);
        } else {
            let dump: String = packet::hex_dump(&case.input).lines().map(|l| format!("    {l}\n")).collect();
            println!(
                "FAIL: {}\n  input ({} bytes):\n{dump}  {}",
                case.description,
                case.input.len(),
                problems.join("\n  ")
            );
            failures.push(case.description.clone());
        }
    }
    println!("{} cases, {} failed", cases.len(), failures.len());
    assert!(
        failures.is_empty(),
        "{} of {} decap cases failed:\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );
}

#[test]
fn round_trip_gives_the_original_ip_packet_back() {
    let Some(lb) = Loaded::new("round_trip_gives_the_original_ip_packet_back", progs::DECAP) else { return };
    let originals = [
        Packet::new().ipv4(CLIENT4, VIP4).df().tcp(50000, 80).syn(),
        Packet::new().ipv4(CLIENT4, VIP4).tos(0x2e).udp(50001, 53).payload(&[0xa5; 300]),
        Packet::new().dot1q(11).ipv4(CLIENT4, VIP4).tcp(50002, 443).ack().payload(b"x").pad_to(60),
        Packet::new().dot1ad(1).dot1q(2).ipv6(CLIENT6, VIP6).flow_label(0xfffff).tcp(50003, 80).syn(),
        Packet::new().ipv6(CLIENT6, VIP6).udp(50004, 53).payload(&[0x5a; 1000]),
    ];
    for pkt in &originals {
        let frame = pkt.build();
        let l2 = pkt.l2_len();
        let is_v6 = frame[l2] >> 4 == 6;
        let tunnel = if is_v6 { encap6(pkt) } else { encap4(pkt) };
        assert_eq!(tunnel[l2 + if is_v6 { 6 } else { 9 }], if is_v6 { IPPROTO_IPV6 } else { IPPROTO_IPIP });
        let (verdict, out) = lb.run(&tunnel);
        assert_eq!(verdict, XDP_PASS);
        assert_eq!(out.len(), frame.len(), "decapsulated length");
        assert_eq!(out[l2..], frame[l2..], "IP packet after the round trip:\n{}", hex_diff(&frame[l2..], &out[l2..]));
        assert_eq!(out[..l2], tunnel[..l2], "link-layer header of the tunnel frame kept");
        assert_eq!(packet::inner_ethertype(&out), packet::inner_ethertype(&frame));
        assert!(packet::l4_csum_ok(&out, l2), "inner checksum still valid");
    }
}

#[test]
fn reference_programs_pass_and_drop() {
    let frame = Packet::new().ipv4(CLIENT4, VIP4).tcp(1, 80).syn().build();
    let Some(pass) = Loaded::new("reference_programs_pass_and_drop", progs::PASS) else { return };
    assert_eq!(pass.run(&frame), (XDP_PASS, frame.clone()));
    let Some(drop) = Loaded::new("reference_programs_pass_and_drop", progs::DROP) else { return };
    assert_eq!(drop.run(&frame).0, XDP_DROP);
}
