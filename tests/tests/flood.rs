//! A SYN flood from random sources at the generator's full rate while a
//! long TCP upload and keep-alive request loops run through the same VIP:
//! the flood guard (`global.new_flow_limit`) keeps the flood's new flows out
//! of the connection table, the upload arrives intact and every established
//! connection keeps its backend. Needs root.
//!
//! The flood comes from the live-frames generator (`lb_tests::livegen`, the
//! one `lb-bench` uses): BPF_PROG_TEST_RUN in live-frames mode runs a
//! program that writes a 64-byte SYN from a random 198.19.x.y:port into each
//! frame and returns XDP_TX as if the frame had arrived on `s-lb` (the
//! switch's port towards the lb), so it leaves `s-lb` into `lb0` and
//! `lb_balancer` processes it like any frame from the switch: parse, VIP,
//! ring, flood guard, IP-in-IP, XDP_TX back to `s-lb`.
//!
//! Where the flood ends: the generator, lb, the bridge, the router and the
//! backends all share the machine's cores, and the Linux bridge and router
//! cost far more per frame than lb. By default an XDP program on `s-lb`
//! drops the flood's encapsulated frames (inner source 198.19.0.0/16) as
//! they come back from lb and passes everything else (the upload, the
//! requests) to the bridge, so the flood measures lb, not the kernel's
//! forwarding. `LB_FLOOD_THROUGH_BRIDGE=1` sends the flood on through the
//! bridge and the router to the backends instead (a far lower rate on a
//! 2-core VM; the README has both figures).
//!
//! Bounded: [`TARGET_FRAMES`] frames processed by lb, [`FLOOD_CAP`] at most.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lb_tests::livegen;
use lb_tests::netns::{in_netns, is_root};
use lb_tests::packet::mac;
use lb_tests::topology::{Forwarding, Topology, TopologyOptions, VIP_V4, VipSpec};
use lb_tests::traffic::{KeepAliveLoad, open_keepalive};
use lb_tests::upload::{Sinks, Upload, UploadPlan};

/// Keep-alive connections that must survive.
const CONNECTIONS: usize = 10;
/// New-flow budget per CPU and second: far below the flood's rate.
const LIMIT: u32 = 2_000;
/// Flood frames `lb_balancer` must process (each counts one `conntrack_miss`).
const TARGET_FRAMES: u64 = 3_000_000;
/// The rate issue #5 asks for (printed against what was reached).
const TARGET_MPPS: f64 = 1.0;
/// Hard bound on the flood.
const FLOOD_CAP: Duration = Duration::from_secs(60);
/// Frames per BPF_PROG_TEST_RUN call, and per live-frames batch.
const CHUNK: u32 = 1 << 18;
const BATCH: u32 = 64;
/// Distinct (source address, source port) pairs the flood draws from.
const FLOWS: u32 = 1 << 24;
const FLOOD_SPORT: u16 = 1024;
/// The upload: its own VIP port (sinks on the backends), at least
/// [`UPLOAD_MIN`] bytes and on until the flood is over, paced.
const UPLOAD_PORT: u16 = 9000;
const UPLOAD_MIN: u64 = 8 << 20;
const UPLOAD_RATE: u64 = 8 << 20;

fn counters(topo: &Topology) -> serde_json::Value {
    let stats = topo.lb_cli(&["stats", "--json"]).expect("lb stats");
    let json: serde_json::Value = serde_json::from_str(&stats).expect("stats JSON");
    json.get("counters").cloned().unwrap_or_else(|| panic!("no counters in {stats}"))
}

fn counter(c: &serde_json::Value, name: &str) -> u64 {
    c.get(name).and_then(|v| v.as_u64()).unwrap_or_else(|| panic!("no counter {name} in {c}"))
}

/// Offers `frames` (rounded up to whole chunks; fewer if `deadline` passes)
/// from the generator `prog` into `ifname` of namespace `ns`; returns
/// (frames offered, time spent).
fn offer(
    ns: &str,
    ifname: &str,
    prog: &Arc<std::os::fd::OwnedFd>,
    frame: [u8; 64],
    frames: u64,
    deadline: Instant,
) -> (u64, Duration) {
    let (ifname, prog) = (ifname.to_string(), prog.clone());
    in_netns(ns, move || {
        let cname = std::ffi::CString::new(ifname.as_str())?;
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        anyhow::ensure!(ifindex != 0, "no interface {ifname}");
        let started = Instant::now();
        let mut offered = 0u64;
        while offered < frames && Instant::now() < deadline {
            livegen::test_run_live(&prog, &frame, ifindex, CHUNK, BATCH)?;
            offered += u64::from(CHUNK);
        }
        Ok((offered, started.elapsed()))
    })
    .expect("live-frames generator")
}

/// XDP: drops IPv4-in-IPv4 whose inner source is 198.19.0.0/16 (the
/// flood, as lb forwards it), passes everything else.
fn flood_sink() -> Vec<u64> {
    use lb_tests::netns::insn;
    vec![
        insn(0x61, 2, 1, 0, 0),      // r2 = data
        insn(0x61, 3, 1, 4, 0),      // r3 = data_end
        insn(0xbf, 4, 2, 0, 0),      // r4 = r2
        insn(0x07, 4, 0, 0, 48),     // r4 += 48
        insn(0x2d, 4, 3, 8, 0),      // if r4 > r3 goto pass
        insn(0x69, 5, 2, 12, 0),     // r5 = ethertype (as loaded)
        insn(0x55, 5, 0, 6, 0x0008), // if r5 != 0x0800 goto pass
        insn(0x71, 5, 2, 23, 0),     // r5 = IP protocol
        insn(0x55, 5, 0, 4, 4),      // if r5 != IPIP goto pass
        insn(0x69, 5, 2, 46, 0),     // r5 = inner source, first two bytes
        insn(0x55, 5, 0, 2, 0x13c6), // if r5 != 198.19 goto pass
        insn(0xb7, 0, 0, 0, 1),      // XDP_DROP
        insn(0x95, 0, 0, 0, 0),
        insn(0xb7, 0, 0, 0, 2), // pass: XDP_PASS
        insn(0x95, 0, 0, 0, 0),
    ]
}

#[test]
fn a_live_upload_survives_a_syn_flood_from_the_live_frames_generator() {
    if !is_root() {
        eprintln!("skipped: the end-to-end tests need root");
        return;
    }
    let mut topo = Topology::new(TopologyOptions::default()).expect("topology");
    let vips = [
        VipSpec::tcp(VIP_V4, 80, Forwarding::Ipip).ring_size(251),
        VipSpec::tcp(VIP_V4, UPLOAD_PORT, Forwarding::Ipip).ring_size(251),
    ];
    let config = topo.write_config(&vips);
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[global]\n",
        &format!("[global]\nnew_flow_limit = {LIMIT}\n"),
        1,
    );
    std::fs::write(&config, text).unwrap();
    topo.start_lb(&config).expect("lb run");
    let through_bridge = std::env::var_os("LB_FLOOD_THROUGH_BRIDGE").is_some();
    if !through_bridge {
        topo.set_lb_port_program("flood_sink", &flood_sink()).expect("flood sink");
    }

    let upload_to = SocketAddr::new(VIP_V4.into(), UPLOAD_PORT);
    let sinks = Sinks::start(topo.backends(), &[upload_to]).expect("sinks");
    let client = topo.client().clone();
    let conns = open_keepalive(&client.ns, vips[0].target(), CONNECTIONS, Duration::from_secs(3)).expect("connections");
    let first: Vec<String> = conns.iter().map(|(_, b)| b.clone()).collect();
    let load = KeepAliveLoad::start(
        conns.into_iter().map(|(c, _)| c).collect(),
        Duration::from_millis(20),
        Duration::from_secs(120),
    )
    .expect("load");
    let flood_over = Arc::new(AtomicBool::new(false));
    let plan = UploadPlan {
        min_bytes: UPLOAD_MIN,
        until: Some(flood_over.clone()),
        rate: Some(UPLOAD_RATE),
        timeout: Duration::from_secs(150),
    };
    let upload = Upload::start(&client.ns, upload_to, plan).expect("upload");
    std::thread::sleep(Duration::from_millis(500));

    // SYN to the VIP from 198.19.x.y, addressed to the lb's MAC.
    let frame = livegen::tcp_template(VIP_V4, mac(&topo.lb().mac), mac(&client.mac), FLOOD_SPORT, true);
    let generator = Arc::new(
        livegen::load_xdp("flood_gen", &livegen::generator(&frame, FLOWS, FLOOD_SPORT)).expect("load the generator"),
    );
    let before = counters(&topo);
    let (answered_before, uploaded_before) = (load.answered(), upload.progress());
    let started = Instant::now();
    let (mut offered, mut gen_time, mut processed) = (0u64, Duration::ZERO, 0u64);
    while processed < TARGET_FRAMES && started.elapsed() < FLOOD_CAP {
        let want = TARGET_FRAMES - processed;
        let (o, t) = offer(topo.switch_ns(), &topo.lb().port, &generator, frame, want, started + FLOOD_CAP);
        (offered, gen_time) = (offered + o, gen_time + t);
        processed = counter(&counters(&topo), "conntrack_miss") - counter(&before, "conntrack_miss");
    }
    let (answered_during, uploaded_during) = (load.answered() - answered_before, upload.progress() - uploaded_before);
    std::thread::sleep(Duration::from_millis(500));
    flood_over.store(true, Ordering::Relaxed);
    let uploaded = upload.wait();
    let failed = load.failed();
    let results = load.stop();
    let after = counters(&topo);
    let delta = |name: &str| counter(&after, name) - counter(&before, name);
    let guarded = delta("conntrack_guarded");
    let forwarded = delta("tx_ipip");

    let uploaded = uploaded.unwrap_or_else(|e| panic!("upload: {e:#}\n{}", topo.logs()));
    assert!(uploaded.intact(), "the upload arrived damaged: {uploaded:?}");
    assert!(uploaded.sent >= UPLOAD_MIN, "{uploaded:?}");
    assert_eq!(failed, 0, "connections failed during the flood: {results:?}\n{}", topo.logs());
    for (i, r) in results.iter().enumerate() {
        assert!(r.error.is_none(), "connection {i}: {:?}", r.error);
        assert!(r.backends.iter().all(|b| *b == first[i]), "connection {i} moved: {:?} (was {})", r.backends, first[i]);
    }
    assert!(answered_during > 0, "no request was answered during the flood");
    assert!(
        processed >= TARGET_FRAMES,
        "lb_balancer processed {processed} of {offered} flood frames within {FLOOD_CAP:?} (target {TARGET_FRAMES})"
    );
    assert!(forwarded >= processed, "lb forwarded {forwarded} packets of {processed} flood frames: {after}");
    assert!(
        guarded * 10 >= processed * 9,
        "the guard kept only {guarded} of {processed} new flows out of the table: {after}"
    );
    sinks.stop().expect("sinks");
    let mpps = processed as f64 / gen_time.as_secs_f64() / 1e6;
    println!(
        "flood: {processed} SYNs processed by lb_balancer ({offered} offered) in {:.2} s of generator time: {mpps:.2} Mpps \
         ({} the {TARGET_MPPS} Mpps target; flood output {}); all forwarded, {guarded} not recorded in the \
         connection table (conntrack_guarded), {} recorded",
        gen_time.as_secs_f64(),
        if mpps >= TARGET_MPPS { "meets" } else { "BELOW" },
        if through_bridge { "through the bridge and router" } else { "dropped at the switch port" },
        processed - guarded,
    );
    println!(
        "during the flood: upload {} bytes ({} in total, intact, backend {}), {CONNECTIONS} keep-alive connections \
         answered {answered_during} requests; 0 failed or moved",
        uploaded_during, uploaded.sent, uploaded.backend
    );
}
