//! End-to-end tests: a real topology of network namespaces (see
//! `lb_tests::topology`), `lb run` attached in native XDP mode to the lb's
//! veth, `lb decap` on the backends, and real TCP/UDP traffic from the
//! client namespace.
//!
//! Needs root (skipped otherwise) and the `lb` binary (`$LB_BIN`, default
//! `target/debug/lb`). The tests of this file run one at a time.
//!
//! Each test asserts that every connection succeeded, that every connection
//! stayed on one backend, and that each of the 3 backends got between 15%
//! and 55% of the 100 connections.

use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use lb_tests::netns::is_root;
use lb_tests::topology::{Forwarding, Proto, Topology, TopologyOptions, VIP_V4, VIP_V6, VipSpec};
use lb_tests::traffic::{Summary, TcpLoad, UdpLoad, tcp_client, udp_client};

/// Connections (TCP) or sockets (UDP) per test.
const CONNECTIONS: usize = 100;
/// Requests per TCP connection / datagrams per UDP socket.
const REQUESTS: usize = 3;
/// A small prime ring keeps table generation fast in debug builds.
const RING: u32 = 251;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    // A failed test poisons the mutex; the next one may still run.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn run_case(name: &str, vip: VipSpec) {
    if !is_root() {
        eprintln!("{name}: skipped: the end-to-end tests need root");
        return;
    }
    let _serial = serial();
    let t0 = Instant::now();
    let mut topo = Topology::new(TopologyOptions::default()).unwrap_or_else(|e| panic!("{name}: topology: {e:#}"));
    let config = topo.write_config(std::slice::from_ref(&vip));
    let t_topo = t0.elapsed();
    if let Err(e) = topo.start_lb(&config) {
        panic!("{name}: starting lb: {e:#}\nconfig {}:\n{}", config.display(), topo.render_config(&[vip]));
    }
    let t_lb = t0.elapsed();
    let client = topo.client().ns.clone();
    let fwd_before = topo.router_forwarded().expect("router counters");
    let results = match vip.protocol {
        Proto::Tcp => {
            let mut load = TcpLoad::new(vip.target(), CONNECTIONS);
            load.requests = REQUESTS;
            tcp_client(&client, &load)
        }
        Proto::Udp => {
            let mut load = UdpLoad::new(vip.target(), CONNECTIONS);
            load.datagrams = REQUESTS;
            udp_client(&client, &load)
        }
    }
    .unwrap_or_else(|e| panic!("{name}: client: {e:#}"));
    let t_traffic = t0.elapsed();
    let summary = Summary::new(&results, &topo.backend_names());
    println!("{name}: {} {} via {}:\n{summary}", vip.protocol.as_str(), vip.target(), vip.forwarding.as_str());
    // The path must match the forwarding mode: IPIP goes lb -> router ->
    // backend (the router forwards at least one packet per answer), l2dsr
    // goes lb -> backend and the router forwards nothing.
    let fwd_after = topo.router_forwarded().expect("router counters");
    let forwarded = if vip.address.is_ipv4() { fwd_after.0 - fwd_before.0 } else { fwd_after.1 - fwd_before.1 };
    println!("{name}: the router forwarded {forwarded} packets");
    let path = match vip.forwarding {
        Forwarding::Ipip if forwarded < summary.answers as u64 => {
            Err(anyhow::anyhow!("ipip: the router forwarded only {forwarded} packets for {} answers", summary.answers))
        }
        Forwarding::L2dsr if forwarded != 0 => {
            Err(anyhow::anyhow!("l2dsr: the router forwarded {forwarded} packets (expected none)"))
        }
        _ => Ok(()),
    };
    if let Err(e) = summary.check(0.15, 0.55).and(path).and_then(|()| topo.check_children()) {
        panic!("{name}: {e:#}\n{}\n{}", topo.logs(), topo.diagnostics());
    }
    if let Err(e) = topo.stop_lb() {
        panic!("{name}: {e:#}");
    }
    drop(topo);
    println!(
        "{name}: topology {:.2?}, lb ready {:.2?}, traffic {:.2?}, total with teardown {:.2?}",
        t_topo,
        t_lb - t_topo,
        t_traffic - t_lb,
        t0.elapsed()
    );
}

#[test]
fn tcp_ipv4_ipip() {
    run_case("tcp_ipv4_ipip", VipSpec::tcp(VIP_V4, 80, Forwarding::Ipip).ring_size(RING));
}

#[test]
fn tcp_ipv4_l2dsr() {
    run_case("tcp_ipv4_l2dsr", VipSpec::tcp(VIP_V4, 80, Forwarding::L2dsr).ring_size(RING));
}

#[test]
fn tcp_ipv6_ipip() {
    run_case("tcp_ipv6_ipip", VipSpec::tcp(VIP_V6, 80, Forwarding::Ipip).ring_size(RING));
}

#[test]
fn tcp_ipv6_l2dsr() {
    run_case("tcp_ipv6_l2dsr", VipSpec::tcp(VIP_V6, 80, Forwarding::L2dsr).ring_size(RING));
}

#[test]
fn udp_ipv4_ipip() {
    run_case("udp_ipv4_ipip", VipSpec::udp(VIP_V4, 5353, Forwarding::Ipip).ring_size(RING));
}
