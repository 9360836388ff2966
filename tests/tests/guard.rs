//! The flood guard (BPF_PROG_TEST_RUN): past `global.new_flow_limit` new
//! flows in a second on a CPU, new flows still go to their ring entry but are
//! not recorded, so a flood cannot evict established flows from the
//! connection table. Needs root.

use std::net::{IpAddr, Ipv4Addr};

use lb::config::Config;
use lb::dataplane::Dataplane;
use lb_common::{FlowKey, net::IPPROTO_TCP, stats};
use lb_tests::netns::is_root;
use lb_tests::packet::Packet;
use lb_tests::xdp::test_run;

const XDP_TX: u32 = 3;
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
const LIMIT: u32 = 5;

fn config(limit: u32) -> Config {
    Config::from_toml_str(&format!(
        "[global]\nnexthop_mac = \"02:00:00:00:00:fe\"\ntunnel_source_v4 = \"198.18.0.2\"\nnew_flow_limit = {limit}\n\
         [[vip]]\naddress = \"{VIP}\"\nport = 80\nprotocol = \"tcp\"\nring_size = 251\n\
         [[vip.backend]]\naddress = \"198.18.0.11\"\n[[vip.backend]]\naddress = \"198.18.0.12\"\n"
    ))
    .unwrap()
}

fn client(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + i)
}

fn syn(dp: &Dataplane, i: u32) -> u32 {
    let frame = Packet::new().ipv4(client(i), VIP).tcp(40_000, 80).syn().build();
    test_run(dp.balancer(), &frame).0
}

fn recorded(dp: &Dataplane, i: u32) -> bool {
    let flow = FlowKey::new(IpAddr::V4(client(i)), 40_000, IpAddr::V4(VIP), 80, IPPROTO_TCP);
    dp.conntrack_backend(&flow).unwrap().is_some()
}

#[test]
fn a_flood_of_new_flows_is_forwarded_but_not_recorded() {
    if !is_root() {
        eprintln!("skipped: needs root for BPF");
        return;
    }
    let mut dp = Dataplane::load().unwrap();
    dp.apply(&config(LIMIT)).unwrap();
    let guarded_before = dp.stats().unwrap()[stats::CONNTRACK_GUARDED as usize].packets;
    // Test runs of one process land on the CPU it runs on; pin to one so
    // every SYN draws from the same per-CPU budget.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    let flood = 40;
    let verdicts: Vec<u32> = (0..flood).map(|i| syn(&dp, i)).collect();
    assert!(verdicts.iter().all(|v| *v == XDP_TX), "every new flow is still forwarded: {verdicts:?}");
    let kept = (0..flood).filter(|i| recorded(&dp, *i)).count() as u32;
    let guarded = dp.stats().unwrap()[stats::CONNTRACK_GUARDED as usize].packets - guarded_before;
    // All 40 within a second (a test run takes microseconds); a window may
    // turn over once in the middle at worst.
    assert!((LIMIT..=2 * LIMIT).contains(&kept), "{kept} of {flood} recorded, limit {LIMIT} per second");
    assert_eq!(kept as u64 + guarded, flood as u64, "each new flow is either recorded or counted as guarded");

    // Without a limit every new flow is recorded.
    dp.apply(&config(0)).unwrap();
    for i in 100..110 {
        assert_eq!(syn(&dp, i), XDP_TX);
        assert!(recorded(&dp, i), "flow {i} not recorded without a limit");
    }
    println!("{flood} SYNs at a limit of {LIMIT}/s: {kept} recorded, {guarded} forwarded by ring only");
}

#[test]
fn frames_addressed_to_another_host_are_never_forwarded() {
    if !is_root() {
        eprintln!("skipped: needs root for BPF");
        return;
    }
    let mut dp = Dataplane::load().unwrap();
    let mut cfg = config(0);
    cfg.global.interface_mac = Some(lb::config::Mac(lb_tests::packet::DEFAULT_DST_MAC));
    dp.apply(&cfg).unwrap();
    let run = |frame: &[u8]| test_run(dp.balancer(), frame).0;
    let ours = Packet::new().ipv4(client(1), VIP).tcp(40_000, 80).syn().build();
    assert_eq!(run(&ours), XDP_TX);
    let before = dp.stats().unwrap()[stats::PASS_OTHER_HOST as usize].packets;
    let mut flooded = Packet::new().ipv4(client(1), VIP).tcp(40_000, 80).syn();
    flooded.dst_mac = [0x02, 0, 0, 0, 0x77, 0x01];
    assert_eq!(run(&flooded.build()), 2, "a frame for another MAC is passed to the kernel");
    assert_eq!(dp.stats().unwrap()[stats::PASS_OTHER_HOST as usize].packets, before + 1);
}
