//! The topology's own tests: config rendering (no namespaces), and the
//! plumbing and XDP_TX path checked with real traffic without the product.

use std::net::SocketAddr;

use super::*;
use crate::traffic::{Summary, TcpLoad, UdpLoad, tcp_client, udp_client};

fn no_lb() -> TopologyOptions {
    TopologyOptions { start_decap: false, ..Default::default() }
}

#[test]
fn config_renders() {
    // Rendering needs no namespaces: build the struct by hand.
    let h = |name: &str, id: u8, last: u8, last6: u16| Host {
        name: name.into(),
        ns: format!("x-{name}"),
        ifname: "eth0".into(),
        mac: mac(id, 1),
        port: format!("s-{name}"),
        port_mac: mac(id, 2),
        v4: Ipv4Addr::new(198, 18, 0, last),
        v6: v6(last6),
    };
    let topo = std::mem::ManuallyDrop::new(Topology {
        prefix: "x-".into(),
        dir: std::env::temp_dir(),
        opts: TopologyOptions::default(),
        lb_bin: PathBuf::new(),
        switch_ns: "x-switch".into(),
        client: h("client", 1, 1, 0x1),
        lb: Host { ifname: LB_IFACE.into(), ..h("lb", 2, 2, 0x2) },
        router: h("router", 3, 254, 0xfe),
        backends: vec![h("backend1", 0x11, 11, 0x11), h("backend2", 0x12, 12, 0x12)],
        servers: vec![],
        lb_proc: None,
        decaps: vec![],
        xdp_links: vec![],
        namespaces: vec![],
        configs: 0,
        pins_left: false,
    });
    let text = topo.render_config(&[
        VipSpec::tcp(VIP_V4, 80, Forwarding::Ipip).ring_size(251),
        VipSpec::tcp(VIP_V6, 80, Forwarding::L2dsr),
    ]);
    assert!(text.contains("interface = \"lb0\""), "{text}");
    assert!(text.contains("nexthop_mac = \"02:00:00:00:03:01\""), "{text}");
    assert!(text.contains("tunnel_source_v4 = \"198.18.0.2\""), "{text}");
    assert!(text.contains("tunnel_source_v6 = \"2001:db8::2\""), "{text}");
    assert!(text.contains("address = \"2001:db8:100::1\""), "{text}");
    assert!(text.contains("address = \"2001:db8::12\""), "{text}");
    assert!(text.contains("ring_size = 251"), "{text}");
    assert_eq!(text.matches("[[vip.backend]]").count(), 4, "{text}");
    assert!(text.contains("mac = \"02:00:00:00:12:01\""), "{text}");
}

/// Builds the topology without lb and checks the plumbing with real
/// traffic: client -> backend directly (VIP route pointed at a backend),
/// and client -> router -> backend (the path IPIP packets take), over
/// IPv4 and IPv6; then checks that drop leaves nothing behind.
#[test]
fn topology_plumbing_without_lb() {
    if !netns::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let topo = Topology::new(no_lb()).unwrap();
    let prefix = topo.prefix().to_string();
    let dir = topo.dir().to_path_buf();
    let c = topo.client().clone();
    let r = topo.router().clone();
    let names = topo.backend_names();
    let sw = topo.switch_ns().to_string();
    let xdp = ip_in(&sw, &["link", "show", "dev", &topo.lb().port]).unwrap();
    assert!(xdp.contains("xdp"), "no XDP program on the lb's switch port: {xdp}");

    // Direct to backend1.
    ip_in(&c.ns, &["route", "replace", VIP_NET_V4, "via", "198.18.0.11"]).unwrap();
    ip_in(&c.ns, &["-6", "route", "replace", VIP_NET_V6, "via", "2001:db8::11"]).unwrap();
    for target in [SocketAddr::new(VIP_V4.into(), 80), SocketAddr::new(VIP_V6.into(), 80)] {
        let rs = tcp_client(&c.ns, &TcpLoad::new(target, 10)).unwrap();
        let s = Summary::new(&rs, &names);
        assert_eq!(s.failures, 0, "{target}: {s}");
        assert_eq!(s.per_backend["backend1"], 10, "{target}: {s}");
    }
    let rs = udp_client(&c.ns, &UdpLoad::new(SocketAddr::new(VIP_V4.into(), 5353), 5)).unwrap();
    let s = Summary::new(&rs, &names);
    assert_eq!((s.failures, s.per_backend["backend1"]), (0, 5), "{s}");

    // Through the router to backend2 (same segment: in and out of eth0).
    ip_in(&c.ns, &["route", "replace", VIP_NET_V4, "via", &r.v4.to_string()]).unwrap();
    ip_in(&c.ns, &["-6", "route", "replace", VIP_NET_V6, "via", &r.v6.to_string()]).unwrap();
    ip_in(&r.ns, &["route", "add", VIP_NET_V4, "via", "198.18.0.12"]).unwrap();
    ip_in(&r.ns, &["-6", "route", "add", VIP_NET_V6, "via", "2001:db8::12"]).unwrap();
    for target in [SocketAddr::new(VIP_V4.into(), 80), SocketAddr::new(VIP_V6.into(), 80)] {
        let rs = tcp_client(&c.ns, &TcpLoad::new(target, 10)).unwrap();
        let s = Summary::new(&rs, &names);
        assert_eq!(s.failures, 0, "{target}: {s}");
        assert_eq!(s.per_backend["backend2"], 10, "{target}: {s}");
    }
    drop(topo);
    let left: Vec<String> = netns::list_netns().unwrap().into_iter().filter(|n| n.starts_with(&prefix)).collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// Checks the XDP_TX path of the topology without the product: a
/// hand-written XDP program on lb0 rewrites the destination MAC to
/// backend1's and returns XDP_TX (a minimal l2dsr). This needs the
/// XDP_PASS program on the lb's switch port and tx checksum offload off
/// on the client.
#[test]
fn xdp_tx_path_without_lb() {
    if !netns::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut topo = Topology::new(no_lb()).unwrap();
    let c = topo.client().clone();
    let lb = topo.lb().clone();
    let b1 = topo.backends()[0].clone();
    // The program sends every frame to backend1, ARP and ND included,
    // so the client gets the lb's MAC statically.
    ip_in(&c.ns, &["neigh", "replace", &lb.v4.to_string(), "lladdr", &lb.mac, "dev", &c.ifname, "nud", "permanent"])
        .unwrap();
    ip_in(
        &c.ns,
        &["-6", "neigh", "replace", &lb.v6.to_string(), "lladdr", &lb.mac, "dev", &c.ifname, "nud", "permanent"],
    )
    .unwrap();
    let m: Vec<u8> = b1.mac.split(':').map(|x| u8::from_str_radix(x, 16).unwrap()).collect();
    let insns = [
        netns::insn(0x61, 2, 1, 0, 0),                                            // r2 = ctx->data
        netns::insn(0x61, 3, 1, 4, 0),                                            // r3 = ctx->data_end
        netns::insn(0xbf, 4, 2, 0, 0),                                            // r4 = r2
        netns::insn(0x07, 4, 0, 0, 6),                                            // r4 += 6
        netns::insn(0x2d, 4, 3, 4, 0),                                            // if r4 > r3 goto pass
        netns::insn(0x62, 2, 0, 0, i32::from_le_bytes([m[0], m[1], m[2], m[3]])), // dst[0..4]
        netns::insn(0x6a, 2, 0, 4, i32::from(u16::from_le_bytes([m[4], m[5]]))),  // dst[4..6]
        netns::insn(0xb7, 0, 0, 0, 3),                                            // r0 = XDP_TX
        netns::insn(0x95, 0, 0, 0, 0),                                            // exit
        netns::insn(0xb7, 0, 0, 0, 2),                                            // pass: r0 = XDP_PASS
        netns::insn(0x95, 0, 0, 0, 0),                                            // exit
    ];
    topo.xdp_links.push(netns::attach_xdp_insns(&lb.ns, &lb.ifname, "t_l2fwd", &insns).unwrap());
    let names = topo.backend_names();
    for target in [SocketAddr::new(VIP_V4.into(), 80), SocketAddr::new(VIP_V6.into(), 80)] {
        let rs = tcp_client(&c.ns, &TcpLoad::new(target, 20)).unwrap();
        let s = Summary::new(&rs, &names);
        assert_eq!(s.failures, 0, "{target}: {s}\n{}", topo.diagnostics());
        assert_eq!(s.per_backend["backend1"], 20, "{target}: {s}");
    }
    let rs = udp_client(&c.ns, &UdpLoad::new(SocketAddr::new(VIP_V6.into(), 5353), 5)).unwrap();
    let s = Summary::new(&rs, &names);
    assert_eq!((s.failures, s.per_backend["backend1"]), (0, 5), "{s}");

    // Without the XDP_PASS program on the switch port, XDP_TX frames
    // are dropped: the traffic above really took the XDP path.
    topo.xdp_links.remove(0);
    let mut load = TcpLoad::new(SocketAddr::new(VIP_V4.into(), 80), 2);
    load.op_timeout = Duration::from_millis(500);
    let s = Summary::new(&tcp_client(&c.ns, &load).unwrap(), &names);
    assert_eq!(s.failures, 2, "{s}");
}
