//! Seeing inside a running agent: `lb trace`, the status page in a real
//! browser (headless Chromium), `lb top`, `lb capture` read by tcpdump, the
//! systemd notification, and the packaging (version, completions, man
//! pages, unit file).
//!
//! The tests that need the data path share one topology (built by the
//! first, torn down when the test binary exits) and run one at a time. Its
//! agent announces through a BIRD that is not there (a socket path in the
//! test's directory where nothing listens): the BGP state every view shows
//! is a pending update that keeps failing, with nothing announced. They
//! need root (skipped otherwise) and the `lb` binary (`$LB_BIN`); Chromium
//! and tcpdump are installed with apt-get when missing, and the parts that
//! need them are skipped with a message if that fails. The screenshot and
//! the pcap files are left under target/observe/.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lb_common::{FlowKey, hash::flow_hash, net::IPPROTO_UDP};
use lb_tests::topology::VIP_V4;
use lb_tests::traffic::open_keepalive;
use serde_json::Value;

#[path = "observe/browser.rs"]
mod browser;
#[path = "observe/capture.rs"]
mod capture;
#[path = "observe/flows.rs"]
mod flows;
#[path = "observe/page.rs"]
mod page;
#[path = "observe/world.rs"]
mod world;
use browser::{chromium, ensure_tool, row_attr, target_dir};
use capture::capture;
use flows::{Background, udp_flow, udp_from};
use page::{check_bgp_panel_against_the_api, check_page_against_the_api, factor_text};
use world::{World, backend, vip, world};

const RING: u32 = 251;
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// The text after `->` on the line that starts with `prefix`.
fn arrow_target(out: &str, prefix: &str) -> String {
    let line = out.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no `{prefix}` line in:\n{out}"));
    line.rsplit("-> ").next().unwrap().trim().to_string()
}

#[test]
fn trace_says_where_flows_go_and_why() {
    let Some(guard) = world("trace") else { return };
    let w = guard.as_ref().unwrap();
    let client = w.topo.client().ns.clone();

    // An established TCP connection: the trace names the backend that answers it.
    let (conn, name) = open_keepalive(&client, w.tcp.target(), 1, Duration::from_secs(3)).unwrap().pop().unwrap();
    let local = conn.local_addr().unwrap();
    let answered = w.address_of(&name, false);
    let out = w.cli_ok(&["trace", &local.to_string(), &w.tcp.target().to_string()]);
    assert_eq!(arrow_target(&out, "established: connection-table entry"), answered.to_string(), "{out}");
    let json: Value = serde_json::from_str(&w.cli_ok(&["trace", &local.to_string(), &w.tcp.id(), "--json"])).unwrap();
    assert_eq!(
        (json["backend"].as_str(), json["by"].as_str()),
        (Some(&*answered.to_string()), Some("connection-table"))
    );
    drop(conn);

    // A new UDP tuple: the ring's prediction, which the userspace hash
    // reproduces, is where the first datagram goes; then it is established.
    let port = 41_000 + (std::process::id() % 1000) as u16;
    let src = format!("{CLIENT}:{port}");
    let out = w.cli_ok(&["trace", &src, &w.udp.target().to_string(), "udp"]);
    let predicted = arrow_target(&out, "new flow: hash");
    let flow = FlowKey::new(CLIENT.into(), port, VIP_V4.into(), 5353, IPPROTO_UDP);
    let entry = flow_hash(&flow) % RING;
    assert!(out.contains(&format!("ring entry {entry} of {RING}")), "{out}");
    let name = udp_from(&client, port, w.udp.target()).unwrap();
    assert_eq!(w.address_of(&name, false).to_string(), predicted, "{out}");
    let out = w.cli_ok(&["trace", &src, &format!("{}/udp", w.udp.target())]);
    assert_eq!(arrow_target(&out, "established"), predicted, "{out}");

    // IPv6 syntax, a missing source port, a destination that is no VIP.
    let out = w.cli_ok(&["trace", "[2001:db8::1]:40001", &w.v6.target().to_string()]);
    let b6: IpAddr = arrow_target(&out, "new flow").parse().unwrap();
    assert!(w.topo.backends().iter().any(|b| IpAddr::from(b.v6) == b6), "{out}");
    let out = w.cli_ok(&["trace", "198.18.0.1", &w.tcp.target().to_string()]);
    assert!(out.contains("no source port given") && out.contains("new flow"), "{out}");
    // backend3 is down: the ring never names it.
    assert_ne!(arrow_target(&out, "new flow"), "198.18.0.13", "{out}");
    let out = w.cli_ok(&["trace", "198.18.0.1:1", "198.18.100.1:81"]);
    assert!(out.contains("is not a VIP"), "{out}");
    let bad = w.cli(&["trace", "nope", "198.18.100.1:80"]);
    assert_eq!(bad.code, Some(64), "{bad}");

    // Several instances (here the same one twice) agree.
    let list = w.topo.dir().join("instances");
    let sock = w.topo.control_socket();
    std::fs::write(&list, format!("# two views of one agent\n{}\n{}\n", sock.display(), sock.display())).unwrap();
    let out = w.cli_ok(&["trace", &src, &w.udp.id(), "--instances", list.to_str().unwrap()]);
    assert!(out.contains("the 2 instances that answered agree: -> ") && out.contains(&predicted), "{out}");
    std::fs::write(&list, format!("{}\n/nonexistent/lb.sock\n", sock.display())).unwrap();
    let out = w.cli(&["trace", &src, &w.udp.id(), "--instances", list.to_str().unwrap()]);
    assert_eq!(out.code, Some(69), "{out}");
    assert!(out.stdout.contains("no answer"), "{out}");
}

#[test]
fn top_once_shows_every_vip_and_backend() {
    let Some(guard) = world("top") else { return };
    let w = guard.as_ref().unwrap();
    let t0 = Instant::now();
    let out = w.cli_ok(&["top", "--once", "--interval", "0.3"]);
    println!("lb top --once ({:.1?}):\n{out}", t0.elapsed());
    let status = w.status().unwrap();
    for v in status["vips"].as_array().unwrap() {
        assert!(out.contains(v["vip"].as_str().unwrap()), "{v}\n{out}");
        assert!(out.contains(v["fingerprint"].as_str().unwrap()), "{out}");
        for b in v["backends"].as_array().unwrap() {
            assert!(out.contains(b["address"].as_str().unwrap()), "{b}\n{out}");
        }
    }
    assert!(!out.contains('\x1b'), "no escape sequences into a pipe:\n{out}");
    // No BIRD: a pending update naming the socket, nothing announced.
    let bgp = &status["bgp"];
    let socket = bgp["bird_socket"].as_str().unwrap();
    let line = out.lines().find(|l| l.starts_with("bgp: ")).unwrap_or_else(|| panic!("no bgp line in\n{out}"));
    let want = format!(
        "bgp: PENDING announcing 0 of {} ready through BIRD at {socket}, ",
        bgp["ready"].as_array().unwrap().len()
    );
    assert!(line.starts_with(&want), "{line}\nwant {want}");
    assert!(line.contains("; last update failed ") && line.contains(&format!("control socket {socket}: ")), "{line}");
    for v in status["vips"].as_array().unwrap() {
        let id = v["vip"].as_str().unwrap();
        assert_eq!(v["announced"], false, "{v}");
        let head = out.lines().find(|l| l.starts_with(id)).unwrap();
        assert!(head.ends_with("  NOT ANNOUNCED"), "{head}");
    }
    // backend3 failed its checks: its row says down, and so do the transitions.
    let row = out.lines().find(|l| l.trim_start().starts_with("198.18.0.13") && l.contains("1/0")).unwrap();
    assert!(row.contains("down"), "{row}");
    assert!(out.contains("198.18.0.13 down"), "{out}");
    // It is probed at the `downinter` pace; the IPv6 VIP's agent checks find no agent.
    assert!(row.contains("(downinter 400 ms)"), "{row}");
    for b in vip(&status, &w.v6.id())["backends"].as_array().unwrap() {
        let addr = b["address"].as_str().unwrap();
        let line = out.lines().find(|l| l.trim_start().starts_with(&format!("{addr} "))).unwrap();
        assert!(line.contains("  agent: connect: "), "{line}");
    }
    // A weight that a factor changed is marked, and why is said under the table.
    for v in status["vips"].as_array().unwrap() {
        // The VIP's part of the frame: from its heading to the blank line.
        let id = v["vip"].as_str().unwrap();
        let out = out.split("\n\n").find(|p| p.starts_with(id)).unwrap_or_else(|| panic!("no {id} in\n{out}"));
        for b in v["backends"].as_array().unwrap() {
            let (addr, w) = (b["address"].as_str().unwrap(), format!("{}/{}", b["weight"], b["effective_weight"]));
            let marked = out.contains(&format!("* {addr}: "));
            assert_eq!(marked, !factor_text(&b["factors"]).is_empty(), "{addr}: {}\n{out}", b["factors"]);
            assert!(out.contains(&format!("{w}{}", if marked { "*" } else { "" })), "{addr}: {w}\n{out}");
        }
    }
}

#[test]
fn agent_tells_systemd_it_is_ready() {
    let Some(guard) = world("notify") else { return };
    let w = guard.as_ref().unwrap();
    let mut messages = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match w.notify.recv(&mut buf) {
            Ok(n) => messages.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    // The decapsulators (same binary) announce themselves too.
    assert!(
        messages.iter().any(|m| m.starts_with("READY=1\nSTATUS=attached to lb0")),
        "no READY=1 from lb run: {messages:?}"
    );
}
#[test]
fn status_page_in_chromium_matches_the_api() {
    let Some(guard) = world("status page") else { return };
    let w = guard.as_ref().unwrap();
    if !ensure_tool("chromium", "chromium") {
        eprintln!("status page: skipped: chromium is not installed and apt-get could not install it");
        return;
    }
    let ns = w.topo.lb().ns.clone();
    let profile = w.topo.dir().join("chromium");
    let traffic = Background::start(w);
    std::thread::sleep(Duration::from_millis(1500));
    // The hot-spot controller lowers backend1's weight in the UDP VIP: a
    // factor that is not neutral, and a per-instance reason.
    let deadline = Instant::now() + Duration::from_secs(30);
    while backend(&w.status().unwrap(), &w.udp.id(), "198.18.0.11")["factors"]["hotspot_pct"] == 100 {
        assert!(Instant::now() < deadline, "no hot-spot correction: {:#}\n{}", w.status().unwrap(), w.topo.lb_log());
        std::thread::sleep(Duration::from_millis(100));
    }

    let before = w.status().unwrap();
    let (dom, took) = chromium(&ns, &profile, &["--virtual-time-budget=6000", "--dump-dom"]);
    let after = w.status().unwrap();
    let shot = target_dir().join("status.png");
    let _ = std::fs::remove_file(&shot);
    let shot_arg = format!("--screenshot={}", shot.display());
    let (_, shot_took) = chromium(
        &ns,
        &profile,
        &["--virtual-time-budget=6000", "--window-size=1400,1000", "--hide-scrollbars", &shot_arg],
    );
    traffic.stop();
    println!("status page: DOM dump in {took:.1?}, screenshot in {shot_took:.1?}: {}", shot.display());
    std::fs::write(target_dir().join("status.html"), &dom).unwrap();

    let updates: u32 = dom.split("data-updates=\"").nth(1).and_then(|s| s.split('"').next()).unwrap().parse().unwrap();
    assert!(updates >= 3, "the page polled {updates} times");
    let mut moving = 0;
    for v in before["vips"].as_array().unwrap() {
        let id = v["vip"].as_str().unwrap();
        let fp = v["fingerprint"].as_str().unwrap();
        assert!(dom.contains(&format!("data-vip=\"{id}\">{fp}</code>")), "fingerprint {fp} of {id} not shown");
        for b in v["backends"].as_array().unwrap() {
            let addr = b["address"].as_str().unwrap();
            let shown: u64 = row_attr(&dom, id, addr, "data-packets")
                .unwrap_or_else(|| panic!("no row for {addr} of {id}"))
                .parse()
                .unwrap();
            let (lo, hi) = (b["packets"].as_u64().unwrap(), backend(&after, id, addr)["packets"].as_u64().unwrap());
            assert!((lo..=hi).contains(&shown), "{id} {addr}: page shows {shown} packets, the API {lo}..{hi}");
            let health = row_attr(&dom, id, addr, "data-health").unwrap();
            assert_eq!(health, backend(&after, id, addr)["health"].as_str().unwrap());
            if row_attr(&dom, id, addr, "data-pps").is_some_and(|p| p.parse::<f64>().is_ok_and(|p| p > 0.0)) {
                moving += 1;
            }
        }
    }
    assert!(moving >= 2, "live packet rates: only {moving} backends moving");
    let hot = |a: &str| row_attr(&dom, &w.udp.id(), a, "data-hot").unwrap();
    assert_eq!((hot("198.18.0.11").as_str(), hot("198.18.0.12").as_str()), ("1", "0"), "the hot spot");
    assert!(dom.contains("drop_") || dom.contains("no drops"));
    check_page_against_the_api(&dom, &before, &after);
    check_bgp_panel_against_the_api(&dom, &before, &after);
    assert!(shot.metadata().is_ok_and(|m| m.len() > 10_000), "no screenshot at {}", shot.display());
}
#[test]
fn capture_writes_what_xdp_sends_to_a_pcap() {
    let Some(guard) = world("capture") else { return };
    let w = guard.as_ref().unwrap();
    let client = w.topo.client().ns.clone();
    let target = w.udp.target();
    const N: usize = 25;
    let port = 42_000 + (std::process::id() % 1000) as u16;

    // Every frame of a known flow, as sent: IP-in-IP to the backend that answered.
    let mut answered = Vec::new();
    let (frames, log, file) = capture(w, "capture", &["--vip", &w.udp.id()], || {
        answered = udp_flow(&client, port, target, N).unwrap();
    });
    println!("lb capture: {}", log.trim());
    assert_eq!(frames.len(), N, "{log}");
    assert!(log.contains(&format!("{N} frames written")) && log.contains("tx_ipip"), "{log}");
    let backend = w.address_of(&answered[0], false);
    let IpAddr::V4(b4) = backend else { unreachable!() };
    for f in &frames {
        assert_eq!(&f[12..14], &[0x08, 0x00], "IPv4 frame");
        assert_eq!(f[14 + 9], 4, "IP-in-IP");
        assert_eq!(&f[14 + 16..14 + 20], &b4.octets(), "outer destination: the backend");
        assert_eq!(f[34 + 9], 17, "inner UDP");
        assert_eq!(&f[34 + 16..34 + 20], &VIP_V4.octets(), "inner destination: the VIP");
    }
    if ensure_tool("tcpdump", "tcpdump") {
        let out = Command::new("tcpdump").args(["-n", "-r"]).arg(&file).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "tcpdump: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(text.lines().count(), N, "{text}");
        // (tcpdump decodes port 5353 as mDNS.)
        let want = format!("198.18.0.2 > {backend}: IP {CLIENT}.{port} > {VIP_V4}.5353: ");
        assert!(text.lines().all(|l| l.contains(&want)), "expected `{want}` on every line:\n{text}");
    } else {
        eprintln!("capture: tcpdump unavailable; the pcap was checked by hand only");
    }

    // Filtered by another backend: nothing; sampled: some; bounded by --count.
    let other = w.topo.backends().iter().map(|b| IpAddr::from(b.v4)).find(|b| *b != backend).unwrap().to_string();
    let (frames, log, _) = capture(w, "capture-other", &["--vip", &w.udp.id(), "--backend", &other], || {
        udp_flow(&client, port, target, 10).unwrap();
    });
    assert_eq!(frames.len(), 0, "{log}");
    let (frames, log, _) = capture(w, "capture-sampled", &["--vip", &w.udp.id(), "--sample", "4"], || {
        udp_flow(&client, port, target, 80).unwrap();
    });
    assert!((1..60).contains(&frames.len()), "1 in 4 of 80 frames: {} ({log})", frames.len());
    let (frames, log, _) = capture(w, "capture-count", &["--vip", &w.udp.id(), "--count", "5"], || {
        udp_flow(&client, port, target, 20).unwrap();
    });
    assert_eq!(frames.len(), 5, "{log}");
    let refused = w.cli(&["capture", "--vip", "198.18.100.1:81/tcp", "-w", "/dev/null"]);
    assert_eq!(refused.code, Some(64), "{refused}");
    assert!(w.cli_ok(&["capture", "--stop"]).contains("no capture was running"));
    let seen: BTreeSet<&str> = answered.iter().map(String::as_str).collect();
    assert_eq!(seen.len(), 1, "one flow, one backend: {seen:?}");
}

/// Packaging: no agent needed.
#[test]
fn version_completions_man_pages_and_unit() {
    let lb = lb_tests::topology::default_lb_bin();
    if !lb.is_file() {
        eprintln!("packaging: skipped: no lb binary at {}", lb.display());
        return;
    }
    let run = |args: &[&str]| {
        let out = Command::new(&lb).args(args).output().unwrap();
        assert!(out.status.success(), "lb {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let version = run(&["--version"]);
    assert!(version.starts_with(&format!("lb {} (git ", env!("CARGO_PKG_VERSION"))), "{version}");
    assert!(version.contains(&format!("program layout v{}", lb_common::LAYOUT_VERSION)), "{version}");
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completions", shell]);
        assert!(script.contains("trace") && script.contains("capture") && script.len() > 1000, "{shell}");
    }
    let dir = std::env::temp_dir().join(format!("lb-man-{}", std::process::id()));
    run(&["man", "--dir", dir.to_str().unwrap()]);
    for page in ["lb.1", "lb-run.1", "lb-trace.1", "lb-top.1", "lb-capture.1", "lb-vip-add.1"] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page} is not a man page");
    }
    std::fs::remove_dir_all(&dir).unwrap();

    let unit = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/lb.service")).unwrap();
    let value = |key: &str| {
        unit.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap_or_else(|| panic!("no {key}= in the unit"))
    };
    let caps = |key: &str| value(key).split_whitespace().collect::<BTreeSet<_>>();
    let want: BTreeSet<_> = ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON", "CAP_SYS_ADMIN"].into();
    assert_eq!(caps("CapabilityBoundingSet"), want);
    assert_eq!(caps("AmbientCapabilities"), want);
    assert_eq!((value("Type"), value("Restart")), ("notify", "on-failure"));
    assert!(value("ExecStart").contains("lb run --config"));
    assert!(!unit.lines().any(|l| l.starts_with("ExecStop")), "stopping must leave forwarding running");
}
