//! `VIP_TABLE` (BPF_PROG_TEST_RUN on the real program): VIPs whose
//! destinations hash to the same bucket are both found (through `VIPS`),
//! stay found as the other comes and goes, and a destination that only
//! shares a VIP's bucket is passed as no VIP's. Needs root.

use std::net::Ipv4Addr;

use lb::config::Config;
use lb::dataplane::Dataplane;
use lb_common::{VipKey, hash::vip_bucket, net::IPPROTO_TCP, stats};
use lb_tests::netns::is_root;
use lb_tests::packet::Packet;
use lb_tests::xdp::test_run;

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const FIRST: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);

fn bucket(addr: Ipv4Addr) -> u32 {
    let k = VipKey::new(addr.into(), 80, IPPROTO_TCP);
    vip_bucket(&k.addr, k.port, k.proto)
}

/// The next addresses after `FIRST` whose tcp/80 lands in `FIRST`'s bucket.
fn sharing_first(n: usize) -> Vec<Ipv4Addr> {
    (1..1 << 16).map(|i| Ipv4Addr::from(u32::from(FIRST) + i)).filter(|a| bucket(*a) == bucket(FIRST)).take(n).collect()
}

/// VIP i of `vips` has the single backend 198.18.1.(i + 1).
fn config(vips: &[Ipv4Addr]) -> Config {
    let mut s = "[global]\nnexthop_mac = \"02:00:00:00:00:fe\"\ntunnel_source_v4 = \"198.18.0.2\"\n".to_string();
    for (i, vip) in vips.iter().enumerate() {
        s += &format!(
            "[[vip]]\naddress = \"{vip}\"\nport = 80\nprotocol = \"tcp\"\nring_size = 251\n\
             [[vip.backend]]\naddress = \"198.18.1.{}\"\n",
            i + 1
        );
    }
    Config::from_toml_str(&s).unwrap()
}

/// Verdict of a SYN to `vip`:80 and, if encapsulated, the outer destination.
fn syn(dp: &Dataplane, vip: Ipv4Addr) -> (u32, Option<Ipv4Addr>) {
    let frame = Packet::new().ipv4(Ipv4Addr::new(198, 19, 0, 1), vip).tcp(40_000, 80).syn().build();
    let (verdict, out) = test_run(dp.balancer(), &frame);
    let outer = (verdict == XDP_TX).then(|| Ipv4Addr::new(out[30], out[31], out[32], out[33]));
    (verdict, outer)
}

#[test]
fn vips_sharing_a_bucket_are_each_found_as_the_other_comes_and_goes() {
    if !is_root() {
        eprintln!("skipped: needs root for BPF");
        return;
    }
    let others = sharing_first(2);
    let (second, stranger) = (others[0], others[1]);
    let mut dp = Dataplane::load().unwrap();
    let backend = |i: u8| Some(Ipv4Addr::new(198, 18, 1, i));

    dp.apply(&config(&[FIRST])).unwrap();
    assert_eq!(syn(&dp, FIRST), (XDP_TX, backend(1)), "alone in its bucket");
    let not_vip = dp.stats().unwrap()[stats::PASS_NOT_VIP as usize].packets;
    assert_eq!(syn(&dp, stranger).0, XDP_PASS, "same bucket, another destination: no VIP");
    assert_eq!(dp.stats().unwrap()[stats::PASS_NOT_VIP as usize].packets, not_vip + 1);

    dp.apply(&config(&[FIRST, second])).unwrap();
    assert_eq!(syn(&dp, FIRST), (XDP_TX, backend(1)), "shared bucket: found in VIPS");
    assert_eq!(syn(&dp, second), (XDP_TX, backend(2)));
    assert_eq!(syn(&dp, stranger).0, XDP_PASS, "shared bucket, no such VIP");

    // The first goes: the second has the bucket to itself.
    dp.apply(&config(&[second])).unwrap();
    assert_eq!(syn(&dp, second), (XDP_TX, backend(1)));
    assert_eq!(syn(&dp, FIRST).0, XDP_PASS, "a removed VIP is no VIP");

    // Replaced by another VIP of the same bucket in one apply.
    dp.apply(&config(&[FIRST])).unwrap();
    assert_eq!(syn(&dp, FIRST), (XDP_TX, backend(1)));
    assert_eq!(syn(&dp, second).0, XDP_PASS);
    dp.apply(&config(&[])).unwrap();
    assert_eq!(syn(&dp, FIRST).0, XDP_PASS);
    println!("{FIRST}, {second} and {stranger} share bucket {}", bucket(FIRST));
}
