//! The connection table of lb's own (`lb_common::conn`), through the real
//! program (BPF_PROG_TEST_RUN): which way of a full set a new flow takes,
//! one slot per flow however often it is re-recorded, the agent's reading
//! of the table (the same hash as the program's), and the table's key kept
//! with its pins. Flows that share a set are found with the userspace copy
//! of the program's hash. Needs root.

use std::net::Ipv4Addr;

use lb::config::Config;
use lb::dataplane::Dataplane;
use lb_common::{FlowKey, conn::set_index, net::TCP_FLAG_ACK, net::TCP_FLAG_FIN, stats};
use lb_tests::netns::is_root;
use lb_tests::packet::Packet;
use lb_tests::pins::PinDir;
use lb_tests::xdp::test_run;

const XDP_TX: u32 = 3;
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// The smallest table: 256 sets of four.
const CAPACITY: u32 = 1024;

fn config(backends: &[&str]) -> Config {
    let mut s = "[global]\nnexthop_mac = \"02:00:00:00:00:fe\"\ntunnel_source_v4 = \"198.18.0.2\"\n\
                 [[vip]]\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\nring_size = 251\n"
        .to_string();
    for b in backends {
        s += &format!("[[vip.backend]]\naddress = \"{b}\"\n");
    }
    Config::from_toml_str(&s).unwrap()
}

fn flow(sport: u16) -> Packet {
    Packet::new().ipv4(CLIENT, VIP).tcp(sport, 80)
}

/// Sends a frame; returns the verdict and how much `reason` went up.
fn send(dp: &Dataplane, pkt: Packet, reason: u32) -> (u32, u64) {
    let count = |dp: &Dataplane| dp.stats().unwrap()[reason as usize].packets;
    let before = count(dp);
    let (verdict, _) = test_run(dp.balancer(), &pkt.build());
    (verdict, count(dp) - before)
}

/// The first `n` client ports from 1000 whose flows share the set of port 1000's.
fn sharing_a_set(dp: &Dataplane, n: usize) -> Vec<u16> {
    let table = dp.conn_table().unwrap();
    let set = |p: u16| set_index(&flow(p).flow_key(), &table.key());
    (1000..u16::MAX).filter(|p| set(*p) == set(1000)).take(n).collect()
}

fn recorded(dp: &Dataplane, sport: u16) -> bool {
    dp.conntrack_entry(&flow(sport).flow_key()).unwrap().is_some()
}

/// Slots that hold this flow.
fn slots_of(dp: &Dataplane, key: &FlowKey) -> usize {
    let mut n = 0;
    dp.conn_table().unwrap().for_each(|k, _| n += (k == key) as usize);
    n
}

/// Waits until the program's clock for `seen` (units of 32 jiffies) has
/// moved on: at most 32 jiffies, 320 ms at HZ=100.
fn next_seen_unit() {
    std::thread::sleep(std::time::Duration::from_millis(350));
}

fn loaded() -> Option<Dataplane> {
    if !is_root() {
        eprintln!("skipped: needs root for BPF");
        return None;
    }
    let mut dp = Dataplane::load_sized(CAPACITY).unwrap();
    dp.apply(&config(&["198.18.1.1", "198.18.1.2", "198.18.1.3"])).unwrap();
    assert_eq!(dp.conn_table().unwrap().sets(), CAPACITY / 4);
    Some(dp)
}

#[test]
fn a_full_set_takes_a_new_flow_in_place_of_a_closed_one_then_of_the_one_idle_longest() {
    let Some(dp) = loaded() else { return };
    let ports = sharing_a_set(&dp, 6);
    let (a, b, c, d, e, f) = (ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]);
    // Four flows fill the set.
    for p in [a, b, c, d] {
        assert_eq!(send(&dp, flow(p).syn(), stats::CONNTRACK_EVICTED), (XDP_TX, 0));
        assert!(recorded(&dp, p), "port {p} recorded in a set with room");
    }
    // B closes (FIN); E takes B's way, evicting no open flow.
    assert_eq!(send(&dp, flow(b).flags(TCP_FLAG_FIN | TCP_FLAG_ACK), stats::CONNTRACK_HIT), (XDP_TX, 1));
    assert_eq!(send(&dp, flow(e).syn(), stats::CONNTRACK_EVICTED), (XDP_TX, 0));
    assert!(recorded(&dp, e) && !recorded(&dp, b), "E replaced the closed flow");
    assert!([a, c, d].iter().all(|p| recorded(&dp, *p)), "the open flows stayed");
    // Later, every flow but A sends a packet: A is now the one idle longest,
    // and F takes its way, counted as an eviction.
    next_seen_unit();
    for p in [c, d, e] {
        assert_eq!(send(&dp, flow(p).ack(), stats::CONNTRACK_HIT), (XDP_TX, 1));
    }
    assert_eq!(send(&dp, flow(f).syn(), stats::CONNTRACK_EVICTED), (XDP_TX, 1));
    assert!(recorded(&dp, f) && !recorded(&dp, a), "F replaced the idlest flow");
    assert!([c, d, e].iter().all(|p| recorded(&dp, *p)), "the recently seen flows stayed");
    // A's next packet is re-picked from the ring (same backend: the ring
    // did not change) and evicts the idlest again, never a second slot.
    assert_eq!(send(&dp, flow(a).ack(), stats::CONNTRACK_MISS), (XDP_TX, 1));
    assert!(recorded(&dp, a));
    assert_eq!(ports.iter().filter(|p| recorded(&dp, **p)).count(), 4, "a set holds four flows");
}

#[test]
fn a_flow_keeps_one_slot_however_often_it_is_recorded_again() {
    let Some(mut dp) = loaded() else { return };
    let key = flow(2000).flow_key();
    assert_eq!(send(&dp, flow(2000).syn(), stats::CONNTRACK_MISS), (XDP_TX, 1));
    let first = dp.conntrack_backend(&key).unwrap().expect("recorded");
    // Closed, then opened again by a new SYN: the same slot.
    send(&dp, flow(2000).flags(TCP_FLAG_FIN | TCP_FLAG_ACK), stats::CONNTRACK_HIT);
    send(&dp, flow(2000).syn(), stats::CONNTRACK_MISS);
    assert_eq!(slots_of(&dp, &key), 1);
    // Its backend removed: the next packet is re-picked and re-recorded in
    // place of the stale entry.
    let others: Vec<String> = ["198.18.1.1", "198.18.1.2", "198.18.1.3"]
        .iter()
        .filter(|b| **b != first.to_string())
        .map(|b| b.to_string())
        .collect();
    dp.apply(&config(&others.iter().map(String::as_str).collect::<Vec<_>>())).unwrap();
    assert_eq!(send(&dp, flow(2000).ack(), stats::CONNTRACK_REPICK), (XDP_TX, 1));
    let now = dp.conntrack_backend(&key).unwrap().expect("re-recorded");
    assert_ne!(now, first);
    assert_eq!(slots_of(&dp, &key), 1);
    // The walk sees what lookups see.
    let mut walked = 0;
    dp.conn_table().unwrap().for_each(|k, e| {
        walked += 1;
        assert_eq!(dp.conntrack_entry(k).unwrap(), Some(*e));
    });
    assert_eq!(walked, 1);
}

#[test]
fn each_new_table_gets_its_own_key_and_a_pinned_table_keeps_it() {
    let Some(dir) = PinDir::new("conn-key") else { return };
    let key = |dp: &Dataplane| dp.conn_table().unwrap().key();
    let (one, two) = (Dataplane::load_sized(CAPACITY).unwrap(), Dataplane::load_sized(CAPACITY).unwrap());
    assert_ne!(key(&one), key(&two), "two tables, one key");
    assert_eq!((key(&one).sets(), key(&two).sets()), (CAPACITY / 4, CAPACITY / 4));
    drop((one, two));

    let (mut dp, _) = Dataplane::open_pinned(dir.path(), "lbkey0", Some(CAPACITY)).unwrap();
    dp.apply(&config(&["198.18.1.1", "198.18.1.2"])).unwrap();
    let first_key = key(&dp);
    assert_eq!(send(&dp, flow(3000).syn(), stats::CONNTRACK_MISS), (XDP_TX, 1));
    let backend = dp.conntrack_backend(&flow(3000).flow_key()).unwrap();
    drop(dp);
    let (dp, _) = Dataplane::open_pinned(dir.path(), "lbkey0", Some(CAPACITY)).unwrap();
    assert_eq!(key(&dp), first_key, "the pinned table's key");
    assert_eq!(dp.conntrack_backend(&flow(3000).flow_key()).unwrap(), backend, "the flow is found again");
    dp.detach_and_unpin().unwrap();
}

/// A SYN whose ring entry now names another backend while its flow's
/// entry is open: the entry is rewritten in place (one slot, the new
/// backend), and the active counts move from the old backend to the new.
#[test]
fn a_syn_that_picks_another_backend_rewrites_its_open_entry_in_place() {
    let Some(mut dp) = loaded() else { return };
    let active = |dp: &Dataplane| -> Vec<(std::net::IpAddr, u64)> {
        dp.backend_counters().unwrap().into_iter().map(|(_, a, t)| (a, t.active)).collect()
    };
    // A flow whose ring entry changes when a fourth backend comes.
    let mut grown = Dataplane::load_sized(CAPACITY).unwrap();
    grown.apply(&config(&["198.18.1.1", "198.18.1.2", "198.18.1.3", "198.18.1.4"])).unwrap();
    let sport = (4000..5000u16)
        .find(|p| {
            grown.predict_backend(&flow(*p).flow_key()).unwrap() != dp.predict_backend(&flow(*p).flow_key()).unwrap()
        })
        .expect("a flow that the fourth backend moves");
    drop(grown);
    let key = flow(sport).flow_key();
    assert_eq!(send(&dp, flow(sport).syn(), stats::CONNTRACK_MISS), (XDP_TX, 1));
    let old = dp.conntrack_backend(&key).unwrap().expect("recorded");
    dp.apply(&config(&["198.18.1.1", "198.18.1.2", "198.18.1.3", "198.18.1.4"])).unwrap();
    let before = active(&dp);
    assert_eq!(send(&dp, flow(sport).syn(), stats::CONNTRACK_MISS), (XDP_TX, 1));
    let new = dp.conntrack_backend(&key).unwrap().expect("still recorded");
    assert_ne!(new, old, "the SYN followed the new ring");
    assert_eq!(slots_of(&dp, &key), 1);
    let after = active(&dp);
    let of = |v: &[(std::net::IpAddr, u64)], a| v.iter().find(|(x, _)| *x == a).map(|(_, n)| *n).unwrap();
    assert_eq!(
        (of(&after, old), of(&after, new)),
        (of(&before, old) - 1, of(&before, new) + 1),
        "{before:?} -> {after:?}"
    );
    // Its ACK follows the entry.
    assert_eq!(send(&dp, flow(sport).ack(), stats::CONNTRACK_HIT), (XDP_TX, 1));
    assert_eq!(dp.conntrack_backend(&key).unwrap(), Some(new));
}

/// The table and its key are pinned together: an agent refuses a pin
/// directory that holds one without the other (a new key would strand the
/// table's entries), and `lb detach` (no size asked) still removes them.
#[test]
fn a_table_pinned_without_its_key_is_refused_and_can_be_detached() {
    let Some(dir) = PinDir::new("conn-pair") else { return };
    drop(Dataplane::open_pinned(dir.path(), "lbpair0", Some(CAPACITY)).unwrap());
    let pins = lb::dataplane::pin_dir(dir.path(), "lbpair0");
    std::fs::remove_file(pins.join(lb_common::consts::maps::CONNTRACK_KEY)).unwrap();
    let e = Dataplane::open_pinned(dir.path(), "lbpair0", Some(CAPACITY)).err().expect("refused").to_string();
    assert!(e.contains("CONNTRACK_KEY is missing") && e.contains("lb detach --iface lbpair0"), "{e}");
    let (dp, _) = Dataplane::open_pinned(dir.path(), "lbpair0", None).unwrap();
    dp.detach_and_unpin().unwrap();
    assert!(!pins.exists(), "pins left behind");
}

/// Two CPUs record IPv6 flows into a small table (a new flow evicts
/// another at nearly every SYN) while a third thread walks it: every entry
/// the walk reads must belong to its key. An IPv6 entry carries its flow's
/// label (the flow hash's low 20 bits), which userspace can compute from
/// the key, so a key read with another flow's entry would show.
#[test]
fn entries_read_while_two_cpus_write_the_table_are_never_torn() {
    let Some(mut dp) = loaded() else { return };
    let v6 = "[global]\nnexthop_mac = \"02:00:00:00:00:fe\"\ntunnel_source_v6 = \"2001:db8::2\"\n\
              [[vip]]\naddress = \"2001:db8::100\"\nport = 80\nprotocol = \"tcp\"\nring_size = 251\n\
              [[vip.backend]]\naddress = \"2001:db8:1::1\"\n[[vip.backend]]\naddress = \"2001:db8:1::2\"\n";
    dp.apply(&Config::from_toml_str(v6).unwrap()).unwrap();
    let syn = |client: u16, sport: u16| {
        let src = std::net::Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, client, 1);
        Packet::new().ipv6(src, "2001:db8::100".parse().unwrap()).tcp(sport, 80).syn().build()
    };
    const SYNS: u16 = 20_000;
    let writing = std::sync::atomic::AtomicUsize::new(2);
    let (mut walks, mut read, mut torn) = (0u64, 0u64, 0u64);
    std::thread::scope(|s| {
        for client in 0..2u16 {
            let (dp, writing) = (&dp, &writing);
            s.spawn(move || {
                for sport in 0..SYNS {
                    assert_eq!(test_run(dp.balancer(), &syn(client, sport)).0, XDP_TX);
                }
                writing.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        let table = dp.conn_table().unwrap();
        // Bounded by the writers' SYN count, and by walks in case they stall.
        while writing.load(std::sync::atomic::Ordering::SeqCst) > 0 && walks < 100_000 {
            table.for_each(|k, e| {
                read += 1;
                let label = lb_common::hash::flow_hash(k) & lb_common::FLOW_LABEL_MASK;
                torn += (e.flags >> lb_common::CONN_LABEL_SHIFT != label) as u64;
            });
            walks += 1;
        }
    });
    println!("{walks} walks read {read} entries while 2 x {SYNS} SYNs were recorded; {torn} torn");
    assert!(walks > 1 && read > 0, "the walk never overlapped the writers");
    assert_eq!(torn, 0, "entries read with another flow's key");
    let evicted = dp.stats().unwrap()[stats::CONNTRACK_EVICTED as usize].packets;
    assert!(evicted > SYNS as u64, "a full table evicts: {evicted}");
}

#[test]
fn a_table_size_that_is_not_a_power_of_two_is_refused_before_loading() {
    for bad in [100_000, 512, 1 << 25] {
        let e = Dataplane::load_sized(bad).err().expect("refused").to_string();
        assert!(e.contains(&format!("{bad} entries")) && e.contains("power of two"), "{e}");
    }
}
