//! Path MTU discovery through the tunnel: the client keeps its 1500-byte
//! MTU, its full-size segments would not fit once encapsulated, lb answers
//! them with ICMP fragmentation-needed / packet-too-big, the client's kernel
//! lowers the path MTU, and a large upload through IP-in-IP completes.
//! Needs root (skipped otherwise) and the `lb` binary.

use std::net::SocketAddr;
use std::time::Duration;

use lb_tests::netns::is_root;
use lb_tests::topology::{Forwarding, Topology, TopologyOptions, VIP_V4, VIP_V6, VipSpec};
use lb_tests::upload::{Sinks, Upload, UploadPlan};

/// Port of the sink servers on the backends.
const PORT: u16 = 9000;
/// Bytes uploaded per connection: many full-size segments.
const UPLOAD: u64 = 2 << 20;

#[test]
fn large_uploads_through_ipip_complete_at_a_1500_byte_client_mtu() {
    if !is_root() {
        eprintln!("skipped: the end-to-end tests need root");
        return;
    }
    let opts = TopologyOptions { client_mtu: 1500, ..TopologyOptions::default() };
    let mut topo = Topology::new(opts).expect("topology");
    let vips = [
        VipSpec::tcp(VIP_V4, PORT, Forwarding::Ipip).ring_size(251),
        VipSpec::tcp(VIP_V6, PORT, Forwarding::Ipip).ring_size(251),
    ];
    let config = topo.write_config(&vips);
    topo.start_lb(&config).expect("lb run");
    let targets = [SocketAddr::new(VIP_V4.into(), PORT), SocketAddr::new(VIP_V6.into(), PORT)];
    let sinks = Sinks::start(topo.backends(), &targets).expect("sinks");
    let client = topo.client().ns.clone();
    for to in targets {
        let plan = UploadPlan { min_bytes: UPLOAD, until: None, rate: None, timeout: Duration::from_secs(60) };
        let got = Upload::start(&client, to, plan).and_then(Upload::wait);
        let got = got.unwrap_or_else(|e| panic!("upload to {to}: {e:#}\n{}", topo.logs()));
        assert!(got.intact() && got.sent == UPLOAD, "upload to {to}: {got:?}");
    }
    let stats = topo.lb_cli(&["stats", "--json"]).expect("lb stats");
    let json: serde_json::Value = serde_json::from_str(&stats).expect("stats JSON");
    let too_big = json.pointer("/counters/tx_icmp_too_big").and_then(|v| v.as_u64()).unwrap_or_default();
    assert!(too_big >= 2, "lb answered {too_big} too-big packets; expected at least one per family\n{stats}");
    println!("2 x {UPLOAD} bytes uploaded at client MTU 1500 through IP-in-IP; lb sent {too_big} too-big answers");
    sinks.stop().expect("sinks");
}
