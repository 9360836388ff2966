//! ICMP through `lb_balancer` (BPF_PROG_TEST_RUN): echo requests to a VIP
//! are answered; errors about a VIP flow go to that flow's backend; a packet
//! that encapsulation would push over the MTU is answered with
//! fragmentation-needed / packet-too-big carrying the right MTU. Expected
//! frames are built independently here, byte by byte. Needs root.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard, OnceLock};

use aya::programs::{TestRun, TestRunOptions};
use lb::config::Config;
use lb::dataplane::Dataplane;
use lb_common::net::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP};
use lb_common::{FlowKey, stats};
use lb_tests::netns::is_root;
use lb_tests::packet::{
    DEFAULT_DST_MAC, DEFAULT_SRC_MAC, Mac, Packet, hex_diff, internet_checksum, ipip_encap_v4, mac,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const MTU: u16 = 1500;
const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
const ROUTER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe);
const TUN4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const TUN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const NEXTHOP: &str = "02:00:00:00:00:fe";

fn config(too_big: &str) -> Config {
    Config::from_toml_str(&format!(
        r#"
[global]
nexthop_mac = "{NEXTHOP}"
tunnel_source_v4 = "{TUN4}"
tunnel_source_v6 = "{TUN6}"
mtu = {MTU}
too_big = "{too_big}"
[[vip]]
address = "{VIP4}"
port = 80
protocol = "tcp"
ring_size = 251
  [[vip.backend]]
  address = "198.18.0.11"
  [[vip.backend]]
  address = "198.18.0.12"
  [[vip.backend]]
  address = "198.18.0.13"
[[vip]]
address = "{VIP6}"
port = 80
protocol = "tcp"
ring_size = 251
  [[vip.backend]]
  address = "2001:db8::11"
  [[vip.backend]]
  address = "2001:db8::12"
"#
    ))
    .unwrap()
}

fn dataplane() -> Option<MutexGuard<'static, Dataplane>> {
    if !is_root() {
        eprintln!("skipped: needs root for BPF");
        return None;
    }
    static DP: OnceLock<Mutex<Dataplane>> = OnceLock::new();
    let dp = DP.get_or_init(|| Mutex::new(Dataplane::load().unwrap()));
    let mut guard = dp.lock().unwrap_or_else(|e| e.into_inner());
    guard.apply(&config("icmp")).unwrap();
    Some(guard)
}

/// Runs one frame; returns the verdict, the output and the counter deltas.
fn run(dp: &Dataplane, frame: &[u8]) -> (u32, Vec<u8>, Vec<u64>) {
    let before = dp.stats().unwrap();
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..Default::default() };
    let result = dp.balancer().test_run(opts).unwrap();
    out.truncate(result.data_size_out as usize);
    let after = dp.stats().unwrap();
    let deltas = before.iter().zip(&after).map(|(b, a)| a.packets - b.packets).collect();
    (result.return_value, out, deltas)
}

fn check(what: &str, got: (u32, Vec<u8>, Vec<u64>), verdict: u32, output: &[u8], counters: &[u32]) {
    let (v, out, deltas) = got;
    assert_eq!(v, verdict, "{what}: verdict");
    assert!(out == output, "{what}: output differs\n{}", hex_diff(output, &out));
    for &c in counters {
        assert_eq!(deltas[c as usize], 1, "{what}: counter {} did not go up by one", stats::LABELS[c as usize]);
    }
}

fn eth(dst: Mac, src: Mac, ethertype: u16) -> Vec<u8> {
    let mut v = dst.to_vec();
    v.extend_from_slice(&src);
    v.extend_from_slice(&ethertype.to_be_bytes());
    v
}

#[test]
fn echo_requests_to_a_vip_are_answered() {
    let Some(dp) = dataplane() else { return };
    let request = Packet::new().ipv4(CLIENT4, VIP4).icmp_echo(7, 1).payload(b"ping").build();
    let mut reply = Packet::new().ipv4(VIP4, CLIENT4).icmp(0, 0, &[0, 7, 0, 1]).payload(b"ping");
    (reply.dst_mac, reply.src_mac) = (DEFAULT_SRC_MAC, DEFAULT_DST_MAC);
    check("v4 echo", run(&dp, &request), XDP_TX, &reply.build(), &[stats::TX_ICMP_ECHO_REPLY]);

    let request = Packet::new().ipv6(CLIENT6, VIP6).icmp_echo(9, 2).payload(b"ping6").build();
    let mut reply = Packet::new().ipv6(VIP6, CLIENT6).icmp(129, 0, &[0, 9, 0, 2]).payload(b"ping6");
    (reply.dst_mac, reply.src_mac) = (DEFAULT_SRC_MAC, DEFAULT_DST_MAC);
    check("v6 echo", run(&dp, &request), XDP_TX, &reply.build(), &[stats::TX_ICMP_ECHO_REPLY]);

    let other = Packet::new().ipv4(CLIENT4, Ipv4Addr::new(198, 18, 200, 1)).icmp_echo(7, 1).build();
    check("echo to another address", run(&dp, &other), XDP_PASS, &other, &[stats::PASS_NOT_VIP]);
}

/// An echo request to a VIP in a frame for another host's MAC (a switch
/// flooding, a promiscuous NIC) is passed, like a flow's packet: only the
/// host it was sent to answers.
#[test]
fn echo_requests_for_another_mac_are_passed() {
    let Some(mut dp) = dataplane() else { return };
    let mut cfg = config("icmp");
    cfg.global.interface_mac = Some(lb::config::Mac(DEFAULT_DST_MAC));
    dp.apply(&cfg).unwrap();
    let ours = Packet::new().ipv4(CLIENT4, VIP4).icmp_echo(7, 1).payload(b"ping").build();
    let (verdict, _, deltas) = run(&dp, &ours);
    assert_eq!((verdict, deltas[stats::TX_ICMP_ECHO_REPLY as usize]), (XDP_TX, 1), "echo to our MAC");
    for (what, mut p) in [
        ("v4", Packet::new().ipv4(CLIENT4, VIP4).icmp_echo(7, 1).payload(b"ping")),
        ("v6", Packet::new().ipv6(CLIENT6, VIP6).icmp_echo(9, 2).payload(b"ping6")),
    ] {
        p.dst_mac = [0x02, 0, 0, 0, 0x77, 0x01];
        let frame = p.build();
        check(&format!("{what} echo for another MAC"), run(&dp, &frame), XDP_PASS, &frame, &[stats::PASS_OTHER_HOST]);
    }
}

/// What a router sends back toward the VIP about a packet the VIP's backend
/// sent to the client: the quoted packet is VIP:80 -> client:cport.
fn error_about_v4(kind: u8, code: u8, cport: u16) -> Vec<u8> {
    let quoted = Packet::new().ipv4(VIP4, CLIENT4).df().tcp(80, cport).ack().payload(&[0; 40]).build_l3();
    let mut rest = vec![0, 0, 0x05, 0xc8]; // next-hop MTU 1480 for frag-needed
    rest.extend_from_slice(&quoted[..28]);
    Packet::new().ipv4(ROUTER4, VIP4).icmp(kind, code, &rest).build()
}

#[test]
fn icmp_errors_about_a_vip_flow_go_to_its_backend() {
    let Some(dp) = dataplane() else { return };
    let nexthop = mac(NEXTHOP);
    for (i, (kind, code)) in [(3u8, 4u8), (3, 1), (11, 0)].into_iter().enumerate() {
        let cport = 40_000 + i as u16;
        let flow = FlowKey::new(CLIENT4.into(), cport, VIP4.into(), 80, IPPROTO_TCP);
        let Some(IpAddr::V4(backend)) = dp.predict_backend(&flow).unwrap() else { panic!("no backend") };
        let frame = error_about_v4(kind, code, cport);
        let expected = ipip_encap_v4(&frame, 14, nexthop, TUN4, backend);
        let what = format!("ICMP {kind}/{code} about {CLIENT4}:{cport}");
        check(&what, run(&dp, &frame), XDP_TX, &expected, &[stats::TX_IPIP, stats::ICMP_ERROR_FORWARDED]);
        assert_eq!(dp.conntrack_backend(&flow).unwrap(), None, "{what}: an ICMP error must not create a flow");
    }

    // An established flow's error follows the connection table.
    let cport = 41_000;
    let flow = FlowKey::new(CLIENT4.into(), cport, VIP4.into(), 80, IPPROTO_TCP);
    let syn = Packet::new().ipv4(CLIENT4, VIP4).tcp(cport, 80).syn().build();
    assert_eq!(run(&dp, &syn).0, XDP_TX);
    let Some(IpAddr::V4(backend)) = dp.conntrack_backend(&flow).unwrap() else { panic!("SYN made no entry") };
    let frame = error_about_v4(3, 4, cport);
    let expected = ipip_encap_v4(&frame, 14, nexthop, TUN4, backend);
    check("error about an established flow", run(&dp, &frame), XDP_TX, &expected, &[stats::CONNTRACK_HIT]);

    // ICMPv6 packet-too-big about a v6 VIP flow.
    let quoted = Packet::new().ipv6(VIP6, CLIENT6).tcp(80, 42_000).ack().payload(&[0; 40]).build_l3();
    let mut rest = 1280u32.to_be_bytes().to_vec();
    rest.extend_from_slice(&quoted[..48]);
    let frame = Packet::new().ipv6(ROUTER6, VIP6).icmp(2, 0, &rest).build();
    let flow = FlowKey::new(CLIENT6.into(), 42_000, VIP6.into(), 80, IPPROTO_TCP);
    let Some(IpAddr::V6(backend)) = dp.predict_backend(&flow).unwrap() else { panic!("no v6 backend") };
    // The flow label is the hash of the flow the error is about.
    let label = lb_common::hash::flow_hash(&flow) & 0xf_ffff;
    let mut expected = eth(nexthop, frame[0..6].try_into().unwrap(), 0x86dd);
    expected.extend_from_slice(&((6u32 << 28) | label).to_be_bytes());
    expected.extend_from_slice(&((frame.len() - 14) as u16).to_be_bytes());
    expected.extend_from_slice(&[41, 64]);
    expected.extend_from_slice(&TUN6.octets());
    expected.extend_from_slice(&backend.octets());
    expected.extend_from_slice(&frame[14..]);
    check("ICMPv6 packet-too-big", run(&dp, &frame), XDP_TX, &expected, &[stats::ICMP_ERROR_FORWARDED]);

    // About a flow that is not a VIP's: not ours.
    let quoted = Packet::new().ipv4(Ipv4Addr::new(198, 18, 200, 1), CLIENT4).tcp(80, 1234).build_l3();
    let mut rest = vec![0, 0, 0x05, 0xc8];
    rest.extend_from_slice(&quoted[..28]);
    let frame = Packet::new().ipv4(ROUTER4, VIP4).icmp(3, 4, &rest).build();
    check("error about another flow", run(&dp, &frame), XDP_PASS, &frame, &[stats::PASS_NOT_VIP]);
}

/// lb's fragmentation-needed answer to `frame` (IPv4 at offset `l2`).
fn frag_needed(frame: &[u8], l2: usize, mtu: u16) -> Vec<u8> {
    let ip = &frame[l2..];
    let (src, dst) = (&ip[12..16], &ip[16..20]);
    let mut out = frame[6..12].to_vec();
    out.extend_from_slice(&frame[0..6]);
    out.extend_from_slice(&frame[12..l2]);
    let mut hdr = vec![0x45, 0, 0, 56, 0, 0, 0, 0, 64, IPPROTO_ICMP, 0, 0];
    hdr.extend_from_slice(dst);
    hdr.extend_from_slice(src);
    let c = internet_checksum(&hdr, 0).to_be_bytes();
    hdr[10..12].copy_from_slice(&c);
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(&ip[..28]);
    let c = internet_checksum(&icmp, 0).to_be_bytes();
    icmp[2..4].copy_from_slice(&c);
    out.extend(hdr);
    out.extend(icmp);
    out
}

/// lb's packet-too-big answer to `frame` (IPv6 at offset 14).
fn packet_too_big(frame: &[u8], mtu: u32) -> Vec<u8> {
    let ip = &frame[14..];
    let (src, dst) = (&ip[8..24], &ip[24..40]);
    let mut out = eth(frame[6..12].try_into().unwrap(), frame[0..6].try_into().unwrap(), 0x86dd);
    out.extend_from_slice(&[0x60, 0, 0, 0, 0, 56, IPPROTO_ICMPV6, 64]);
    out.extend_from_slice(dst);
    out.extend_from_slice(src);
    let mut icmp = vec![2, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(&ip[..48]);
    let mut pseudo = dst.to_vec();
    pseudo.extend_from_slice(src);
    pseudo.extend_from_slice(&[0, 0, 0, 56, 0, 0, 0, IPPROTO_ICMPV6]);
    pseudo.extend_from_slice(&icmp);
    let c = internet_checksum(&pseudo, 0).to_be_bytes();
    icmp[2..4].copy_from_slice(&c);
    out.extend(icmp);
    out
}

#[test]
fn too_big_to_encapsulate_is_answered_with_the_path_mtu() {
    let Some(mut dp) = dataplane() else { return };
    let nexthop = mac(NEXTHOP);
    // 1480 bytes of IPv4 fit 1500 once encapsulated; 1481 do not.
    let fits = Packet::new().ipv4(CLIENT4, VIP4).df().tcp(40_100, 80).syn().payload(&[7; 1440]).build();
    let flow = FlowKey::new(CLIENT4.into(), 40_100, VIP4.into(), 80, IPPROTO_TCP);
    let Some(IpAddr::V4(backend)) = dp.predict_backend(&flow).unwrap() else { panic!() };
    check("1480 bytes", run(&dp, &fits), XDP_TX, &ipip_encap_v4(&fits, 14, nexthop, TUN4, backend), &[stats::TX_IPIP]);

    let big = Packet::new().ipv4(CLIENT4, VIP4).df().tcp(40_101, 80).ack().payload(&[7; 1441]).build();
    check("1481 bytes, DF", run(&dp, &big), XDP_TX, &frag_needed(&big, 14, MTU - 20), &[stats::TX_ICMP_TOO_BIG]);

    let tagged = Packet::new().vlan(0x8100, 42).ipv4(CLIENT4, VIP4).df().tcp(40_102, 80).ack().payload(&[7; 1460]);
    let tagged = tagged.build();
    check("with a VLAN tag", run(&dp, &tagged), XDP_TX, &frag_needed(&tagged, 18, MTU - 20), &[stats::TX_ICMP_TOO_BIG]);

    let no_df = Packet::new().ipv4(CLIENT4, VIP4).tcp(40_103, 80).ack().payload(&[7; 1460]).build();
    check("too big without DF", run(&dp, &no_df), XDP_DROP, &no_df, &[stats::DROP_TOO_BIG]);

    let big6 = Packet::new().ipv6(CLIENT6, VIP6).tcp(40_104, 80).ack().payload(&[7; 1440]).build();
    check("IPv6 1500 bytes", run(&dp, &big6), XDP_TX, &packet_too_big(&big6, 1460), &[stats::TX_ICMP_TOO_BIG]);

    dp.apply(&config("drop")).unwrap();
    check("too_big = drop", run(&dp, &big), XDP_DROP, &big, &[stats::DROP_TOO_BIG]);
    dp.apply(&config("icmp")).unwrap();
}
