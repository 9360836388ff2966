//! How `Dataplane::apply` writes the maps: only what changed, new tables into
//! the idle buffer, then one generation flip; and what a restarted agent
//! adopts from pinned maps. Needs root (BPF); skipped otherwise.

use std::net::{IpAddr, Ipv4Addr};

use lb::config::Config;
use lb::dataplane::{ApplyReport, Dataplane};
use lb_common::{FlowKey, RING_CHUNKS, net::IPPROTO_TCP};
use lb_tests::netns::is_root;
use lb_tests::pins::PinDir;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);

fn config(backends: &[u8], weight_of_first: u32) -> Config {
    let mut text = String::from(
        "[global]\nnexthop_mac = \"02:00:00:00:00:fe\"\ntunnel_source_v4 = \"198.18.0.2\"\n\
         [[vip]]\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\n",
    );
    for (i, b) in backends.iter().enumerate() {
        let weight = if i == 0 { weight_of_first } else { 1 };
        text.push_str(&format!("[[vip.backend]]\naddress = \"198.18.0.{b}\"\nweight = {weight}\n"));
    }
    Config::from_toml_str(&text).unwrap()
}

fn flow(i: u16) -> FlowKey {
    FlowKey::new(IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1)), 10_000 + i, IpAddr::V4(VIP), 80, IPPROTO_TCP)
}

fn generation(dp: &Dataplane) -> u32 {
    dp.trace(&flow(0)).unwrap().expect("a VIP").ring_generation
}

#[test]
fn apply_writes_only_what_changed_and_flips_generations() {
    if !is_root() {
        eprintln!("skipped: needs root for BPF");
        return;
    }
    let mut dp = Dataplane::load().unwrap();
    let ten: Vec<u8> = (11..21).collect();

    let first = dp.apply(&config(&ten, 1)).unwrap();
    assert_eq!(first.vips_added, 1);
    assert_eq!(first.backends_added, 10);
    assert_eq!(first.ring_chunks_written, RING_CHUNKS as usize, "a new VIP writes its whole table");
    assert_eq!(generation(&dp), 0);
    let before: Vec<_> = (0..200).map(|i| dp.predict_backend(&flow(i)).unwrap()).collect();

    // The same configuration again: not one write.
    assert_eq!(dp.apply(&config(&ten, 1)).unwrap(), ApplyReport::default());

    // One backend fewer: the table goes to the idle buffer, then goes live.
    let nine = &ten[..9];
    let second = dp.apply(&config(nine, 1)).unwrap();
    assert_eq!((second.rings_swapped, second.backends_removed), (1, 1));
    assert_eq!(generation(&dp), 1);
    let moved = (0..200).filter(|&i| dp.predict_backend(&flow(i)).unwrap() != before[i as usize]).count();
    let removed = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 20));
    let were_on_removed = before.iter().filter(|b| **b == Some(removed)).count();
    assert!(
        moved >= were_on_removed && moved < 2 * were_on_removed + 10,
        "moved {moved}, {were_on_removed} were on it"
    );

    // Back to the first set: buffer 0 still holds that table, so the flip
    // costs no table write at all.
    let third = dp.apply(&config(&ten, 1)).unwrap();
    assert_eq!(third.rings_swapped, 1);
    assert_eq!(third.ring_chunks_written, 0, "{third:?}");
    assert_eq!(generation(&dp), 0);
    let after: Vec<_> = (0..200).map(|i| dp.predict_backend(&flow(i)).unwrap()).collect();
    assert_eq!(after, before);

    // A weight change rewrites only the chunks whose entries moved.
    let fourth = dp.apply(&config(&ten, 2)).unwrap();
    assert_eq!(fourth.rings_swapped, 1);
    assert!(fourth.ring_chunks_written > 0 && fourth.ring_chunks_written <= RING_CHUNKS as usize);
    println!(
        "table writes: new VIP {} chunks, same config 0, back to a previous set {}, weight change {} of {}",
        first.ring_chunks_written, third.ring_chunks_written, fourth.ring_chunks_written, RING_CHUNKS
    );
}

#[test]
fn the_connection_table_has_the_configured_size_and_a_pinned_one_keeps_its_own() {
    let Some(dir) = PinDir::new("capacity") else { return };
    let (dp, adopted) = Dataplane::open_pinned(dir.path(), "lbcap0", Some(4096)).unwrap();
    assert!(!adopted);
    assert_eq!(dp.conntrack_capacity().unwrap(), 4096);
    drop(dp);
    // Pinned: another size is refused, naming the key and both sizes.
    let e = Dataplane::open_pinned(dir.path(), "lbcap0", Some(8192)).err().expect("a resize is refused").to_string();
    assert!(e.contains("global.conntrack_capacity") && e.contains("4096") && e.contains("8192"), "{e}");
    // The same size, or no wish (lb detach), opens the pinned table.
    for wish in [Some(4096), None] {
        let (dp, _) = Dataplane::open_pinned(dir.path(), "lbcap0", wish).unwrap();
        assert_eq!(dp.conntrack_capacity().unwrap(), 4096);
    }
    let (dp, _) = Dataplane::open_pinned(dir.path(), "lbcap0", None).unwrap();
    dp.detach_and_unpin().unwrap();
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "pins left behind");
}

/// The verifier walks every path of the balancer, and the connection
/// table's unrolled ways multiply them: 73,000 instructions processed with
/// the kernel's LRU map, 380,000 with four ways (288,000 once the way a
/// scan ends on is opaque to the verifier, `conntrack::Set::opaque`;
/// 190,000 without a dead branch after the insert's scan), and
/// eight ways went past the kernel's limit of 1,000,000. Half the limit
/// leaves room for the next change; this fails first when a change eats it.
#[test]
fn the_balancer_verifies_with_half_the_kernels_budget_to_spare() {
    if !is_root() {
        eprintln!("skipped: needs root for BPF");
        return;
    }
    let dp = Dataplane::load().unwrap();
    let info = dp.balancer().info().unwrap();
    let Some(processed) = info.verified_instruction_count() else {
        eprintln!("skipped: this kernel does not report verified instructions");
        return;
    };
    println!("lb_balancer: {processed} instructions processed by the verifier");
    assert!(processed < 500_000, "{processed} of the verifier's 1,000,000");
}
