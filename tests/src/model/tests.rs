//! Tests of the model without the kernel: the echo reply's checksums and decisions of the README's table.

use std::net::{IpAddr, Ipv4Addr};

use lb::config::Config;
use lb::dataplane::Trace;
use lb_common::FlowKey;
use lb_common::net::IPPROTO_ICMP;
use lb_common::stats;

use super::{Deviation, LiveMaps, Model, XDP_DROP, XDP_PASS, XDP_TX, echo_reply};
use crate::packet::{Packet, internet_checksum};

/// Live maps of a test: one VIP with a fixed ring backend, no table entries.
struct Fixed(Option<IpAddr>);

impl LiveMaps for Fixed {
    fn trace(&self, flow: &FlowKey) -> Option<Trace> {
        let vip: IpAddr = "198.18.100.1".parse().unwrap();
        (flow.dst == lb_common::types::addr_words(vip) && flow.dport == 80u16.to_be()).then_some(Trace {
            algorithm: Default::default(),
            vip_slot: 0,
            ring_size: 7,
            ring_generation: 0,
            hash: 0,
            entry: 0,
            ring_backend: self.0,
            conntrack_backend: None,
            conntrack_stale: false,
            conntrack_open: false,
        })
    }
}

fn model() -> Model {
    let cfg = Config::from_toml_str(
        r#"
[global]
nexthop_mac = "02:00:00:00:00:fe"
tunnel_source_v4 = "198.18.0.2"
tunnel_source_v6 = "2001:db8::2"
mtu = 1500
[[vip]]
address = "198.18.100.1"
port = 80
protocol = "tcp"
ring_size = 7
  [[vip.backend]]
  address = "198.18.0.11"
"#,
    )
    .unwrap();
    Model::new(&cfg)
}

#[test]
fn rfc1624_update_equals_a_full_recomputation() {
    let req = Packet::new().ipv4("198.18.1.1".parse().unwrap(), "198.18.100.1".parse().unwrap()).icmp_echo(7, 1);
    let frame = req.payload(b"abc").build();
    let out = echo_reply(&frame, 14);
    assert_eq!(internet_checksum(&out[34..], 0), 0, "ICMP checksum of the reply");
    assert_eq!(internet_checksum(&out[14..34], 0), 0, "IPv4 header checksum of the reply");
}

#[test]
fn decisions_follow_the_readme_table() {
    let m = model();
    let live = Fixed(Some("198.18.0.11".parse().unwrap()));
    let c: Ipv4Addr = "198.18.1.1".parse().unwrap();
    let vip: Ipv4Addr = "198.18.100.1".parse().unwrap();
    let syn = Packet::new().ipv4(c, vip).df().tcp(1000, 80).syn().build();
    let e = m.predict(&syn, &live);
    assert_eq!((e.verdict, e.reason, e.conntrack), (XDP_TX, stats::TX_IPIP, Some(stats::CONNTRACK_MISS)));
    assert!(e.record.is_some());
    let frag = Packet::new().ipv4(c, vip).mf().tcp(1000, 80).build();
    assert_eq!(m.predict(&frag, &live).reason, stats::DROP_FRAGMENT);
    let big = Packet::new().ipv4(c, vip).df().tcp(1000, 80).ack().payload(&[0; 1441]).build();
    assert_eq!(m.predict(&big, &live).reason, stats::TX_ICMP_TOO_BIG);
    let e = m.predict(&big, &Fixed(None));
    assert_eq!((e.verdict, e.reason), (XDP_DROP, stats::DROP_NO_BACKEND));
    let three = Packet::new().dot1q(1).dot1q(2).dot1q(3).ipv4(c, vip).tcp(1, 80).build();
    assert_eq!(m.predict(&three, &live).reason, stats::PASS_VLAN_DEPTH);
    // An echo request whose ICMP header is only in the Ethernet trailer.
    let mut short = Packet::new().ipv4(c, vip).l4_raw(IPPROTO_ICMP, &[]).build();
    short.extend_from_slice(&[8, 0, 0xf7, 0xff, 0, 0, 0, 0]);
    let e = m.predict(&short, &live);
    assert_eq!(e.reason, stats::PASS_NOT_VIP);
    let (dev, product) = e.product.expect("a known deviation");
    assert_eq!((dev, product.reason), (Deviation::IcmpBeyondIpLength, stats::TX_ICMP_ECHO_REPLY));
}

#[test]
fn vip_packets_for_another_mac_are_passed() {
    let mut m = model();
    m.own_mac = Some(crate::packet::DEFAULT_DST_MAC);
    let live = Fixed(Some("198.18.0.11".parse().unwrap()));
    let (c, vip): (Ipv4Addr, Ipv4Addr) = ("198.18.1.1".parse().unwrap(), "198.18.100.1".parse().unwrap());
    let ours = Packet::new().ipv4(c, vip).tcp(1000, 80).syn();
    assert_eq!(m.predict(&ours.build(), &live).reason, stats::TX_IPIP);
    let other = ours.macs([2, 0, 0, 0, 0, 0x99], crate::packet::DEFAULT_SRC_MAC).build();
    let e = m.predict(&other, &live);
    assert_eq!((e.verdict, e.reason, e.vip), (XDP_PASS, stats::PASS_OTHER_HOST, None));
}
