//! A SYN flood from random sources while long-lived TCP connections run:
//! the flood guard (`global.new_flow_limit`) keeps the flood's new flows
//! out of the connection table, and every established connection keeps its
//! backend and keeps answering. The flood is sent from the client namespace
//! through an AF_PACKET socket (bounded in count and time). Needs root.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use lb_tests::netns::{in_netns, is_root};
use lb_tests::packet::{Packet, mac};
use lb_tests::topology::{Forwarding, Topology, TopologyOptions, VIP_V4, VipSpec};
use lb_tests::traffic::{KeepAliveLoad, open_keepalive};

/// Connections that must survive.
const CONNECTIONS: usize = 20;
/// New-flow budget per CPU and second: far below the flood's rate.
const LIMIT: u32 = 2_000;
/// Flood bounds.
const FLOOD_FRAMES: u32 = 400_000;
const FLOOD_TIME: Duration = Duration::from_secs(3);

/// Sends SYNs from 198.19.x.y:port to the VIP out of `ifname`, addressed
/// to `dst_mac`; returns how many were sent.
fn flood(ns: &str, ifname: &str, src_mac: [u8; 6], dst_mac: [u8; 6]) -> anyhow::Result<u32> {
    let ifname = ifname.to_string();
    in_netns(ns, move || {
        // SAFETY: a raw packet socket, owned by OwnedFd.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        anyhow::ensure!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let cname = std::ffi::CString::new(ifname.as_str())?;
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        anyhow::ensure!(ifindex != 0, "no interface {ifname}");
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&dst_mac);
        let deadline = Instant::now() + FLOOD_TIME;
        let mut sent = 0;
        while sent < FLOOD_FRAMES && Instant::now() < deadline {
            let src = std::net::Ipv4Addr::from(0xc613_0000 | (sent & 0xffff));
            let mut p = Packet::new().ipv4(src, VIP_V4).tcp(10_000 + (sent >> 16) as u16, 80).syn();
            (p.src_mac, p.dst_mac) = (src_mac, dst_mac);
            let frame = p.build();
            // SAFETY: a valid buffer and address for the socket.
            let rc = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                // A full transmit queue: let it drain.
                anyhow::ensure!(e.raw_os_error() == Some(libc::ENOBUFS), "sendto: {e}");
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            sent += 1;
        }
        Ok(sent)
    })
}

#[test]
fn established_connections_survive_a_syn_flood() {
    if !is_root() {
        eprintln!("skipped: the end-to-end tests need root");
        return;
    }
    let mut topo = Topology::new(TopologyOptions::default()).expect("topology");
    let vip = VipSpec::tcp(VIP_V4, 80, Forwarding::Ipip).ring_size(251);
    let config = topo.write_config(std::slice::from_ref(&vip));
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[global]\n",
        &format!("[global]\nnew_flow_limit = {LIMIT}\n"),
        1,
    );
    std::fs::write(&config, text).unwrap();
    topo.start_lb(&config).expect("lb run");

    let client = topo.client().clone();
    let lb_mac = mac(&topo.lb().mac);
    let conns = open_keepalive(&client.ns, vip.target(), CONNECTIONS, Duration::from_secs(3)).expect("connections");
    let first: Vec<String> = conns.iter().map(|(_, b)| b.clone()).collect();
    let load = KeepAliveLoad::start(
        conns.into_iter().map(|(c, _)| c).collect(),
        Duration::from_millis(20),
        Duration::from_secs(20),
    )
    .expect("load");
    std::thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    let sent = flood(&client.ns, &client.ifname, mac(&client.mac), lb_mac).expect("flood");
    let flood_secs = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let answered = load.answered();
    let failed = load.failed();
    let results = load.stop();

    let stats = topo.lb_cli(&["stats", "--json"]).expect("lb stats");
    let json: serde_json::Value = serde_json::from_str(&stats).expect("stats JSON");
    let counter = |name: &str| json.pointer(&format!("/counters/{name}")).and_then(|v| v.as_u64()).unwrap_or_default();
    let guarded = counter("conntrack_guarded");

    assert_eq!(failed, 0, "connections failed during the flood: {results:?}\n{}", topo.logs());
    for (i, r) in results.iter().enumerate() {
        assert!(r.error.is_none(), "connection {i}: {:?}", r.error);
        assert!(r.backends.iter().all(|b| *b == first[i]), "connection {i} moved: {:?} (was {})", r.backends, first[i]);
    }
    assert!(sent > 10 * LIMIT, "the flood was too small to test the guard: {sent} frames");
    assert!(guarded > 0, "the guard never engaged: {stats}");
    println!(
        "{sent} SYNs in {flood_secs:.1} s ({:.0}/s) from random sources: {guarded} new flows not recorded, \
         {CONNECTIONS} connections answered {answered} requests, 0 failed or moved",
        sent as f64 / flood_secs
    );
}
