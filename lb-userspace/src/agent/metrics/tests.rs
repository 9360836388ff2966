use std::collections::HashMap;

use super::*;
use crate::{
    agent::{health::ProbeStatus, owner::Transition, state::Placement},
    config::{AllDown, Forwarding},
};

fn status() -> Status {
    let backend = |address: &str, state, health, probe: Option<ProbeStatus>| BackendStatus {
        address: address.parse().unwrap(),
        weight: 2,
        effective_weight: if state == AdminState::Up { 2 } else { 0 },
        factors: Default::default(),
        state,
        health,
        placement: Placement::InTable,
        packets: 10,
        bytes: 1500,
        new_flows: 4,
        active_connections: 3,
        probe,
        agent: None,
        hot_spot: None,
    };
    let probe = ProbeStatus {
        health: Health::Down,
        consecutive_ok: 0,
        consecutive_failed: 3,
        checks: 42,
        failures: 7,
        transitions: 2,
        last_result: "connect: refused".into(),
        last_change_unix_ms: 0,
        pace: crate::agent::health::Pace::Downinter,
        interval_ms: 2000,
        recent: Default::default(),
    };
    Status {
        interface: "eth0".into(),
        config_file: "/etc/lb.toml".into(),
        layout_version: 1,
        uptime_s: 3600,
        vips: vec![
            VipStatus {
                vip: "198.18.100.1:80/tcp".into(),
                forwarding: Forwarding::Ipip,
                algorithm: Default::default(),
                ring_size: 65537,
                health_check: None,
                all_down: AllDown::FailOpen,
                failing_open: true,
                fingerprint: "00112233".into(),
                announced: false,
                per_instance: Vec::new(),
                packets: 1234,
                bytes: 99_999_999_999,
                backends: vec![
                    backend("198.18.0.11", AdminState::Up, Health::Down, Some(probe)),
                    backend("198.18.0.12", AdminState::Drain, Health::Up, None),
                ],
            },
            VipStatus {
                // Not a real VIP name: exercises label escaping.
                vip: "odd\"vip\\\n".into(),
                forwarding: Forwarding::L2dsr,
                algorithm: Default::default(),
                ring_size: 13,
                health_check: None,
                all_down: AllDown::Drop,
                failing_open: false,
                fingerprint: String::new(),
                announced: false,
                per_instance: Vec::new(),
                packets: 0,
                bytes: 0,
                backends: vec![backend("2001:db8::11", AdminState::Maint, Health::Up, None)],
            },
        ],
        counters: HashMap::from([
            ("tx_ipip".to_string(), 100),
            ("drop_no_backend".to_string(), 4),
            ("conntrack_hit".to_string(), 90),
            ("conntrack_insert_failed".to_string(), 1),
        ]),
        transitions: vec![Transition {
            at_unix_ms: 1,
            vip: "198.18.100.1:80/tcp".into(),
            backend: "198.18.0.11".parse().unwrap(),
            health: Health::Down,
            reason: "connect: refused".into(),
            table_live_after_us: Some(1300),
        }],
        table_rebuilds: 3,
        last_rebuild_ms: 12.5,
        bgp: None,
        hot_spot: Default::default(),
        active_recount: crate::agent::owner::ActiveRecount { capacity: 1 << 20, ..Default::default() },
    }
}

#[test]
fn exact_lines() {
    let text = render(&status(), 0.25);
    for line in [
        "# TYPE lb_vip_packets_total counter",
        r#"lb_vip_packets_total{vip="198.18.100.1:80/tcp"} 1234"#,
        r#"lb_vip_bytes_total{vip="198.18.100.1:80/tcp"} 99999999999"#,
        r#"lb_vip_failing_open{vip="198.18.100.1:80/tcp"} 1"#,
        r#"lb_vip_failing_open{vip="odd\"vip\\\n"} 0"#,
        r#"lb_backend_up{vip="198.18.100.1:80/tcp",backend="198.18.0.11"} 0"#,
        r#"lb_backend_up{vip="198.18.100.1:80/tcp",backend="198.18.0.12"} 1"#,
        r#"lb_backend_effective_weight{vip="198.18.100.1:80/tcp",backend="198.18.0.12"} 0"#,
        r#"lb_backend_admin_state{vip="198.18.100.1:80/tcp",backend="198.18.0.12",state="drain"} 1"#,
        r#"lb_backend_admin_state{vip="198.18.100.1:80/tcp",backend="198.18.0.12",state="up"} 0"#,
        r#"lb_backend_admin_state{vip="odd\"vip\\\n",backend="2001:db8::11",state="maint"} 1"#,
        r#"lb_backend_checks_total{vip="198.18.100.1:80/tcp",backend="198.18.0.11"} 42"#,
        r#"lb_backend_check_failures_total{vip="198.18.100.1:80/tcp",backend="198.18.0.11"} 7"#,
        r#"lb_backend_transitions_total{vip="198.18.100.1:80/tcp",backend="198.18.0.11"} 2"#,
        r#"lb_packets_total{reason="tx_ipip"} 100"#,
        r#"lb_packets_total{reason="drop_no_backend"} 4"#,
        r#"lb_conntrack_lookups_total{result="hit"} 90"#,
        r#"lb_conntrack_lookups_total{result="insert_failed"} 1"#,
        "lb_table_rebuilds_total 3",
        "lb_table_rebuild_seconds_total 0.25",
        "lb_last_table_rebuild_seconds 0.0125",
        "lb_uptime_seconds 3600",
        r#"lb_backend_active_connections{vip="198.18.100.1:80/tcp",backend="198.18.0.11"} 3"#,
        "lb_conntrack_entries 0",
        "lb_conntrack_capacity 1048576",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    // Probe metrics only for probed backends; conntrack_* only under its own name.
    assert_eq!(text.lines().filter(|l| l.starts_with("lb_backend_checks_total{")).count(), 1);
    assert!(!text.contains("reason=\"conntrack_"));
}

#[test]
fn check_pace_agent_and_slow_start() {
    let mut s = status();
    let b = &mut s.vips[0].backends[1];
    b.agent = Some(crate::agent::agent_check::AgentStatus { replies: 5, failures: 1, ..Default::default() });
    (b.factors.agent_pct, b.factors.slowstart_pct) = (50, 30);
    let text = render(&s, 0.25);
    for line in [
        r#"lb_backend_check_interval_seconds{vip="198.18.100.1:80/tcp",backend="198.18.0.11"} 2"#,
        r#"lb_backend_agent_weight_percent{vip="198.18.100.1:80/tcp",backend="198.18.0.12"} 50"#,
        r#"lb_backend_agent_replies_total{vip="198.18.100.1:80/tcp",backend="198.18.0.12"} 5"#,
        r#"lb_backend_agent_failures_total{vip="198.18.100.1:80/tcp",backend="198.18.0.12"} 1"#,
        r#"lb_backend_slowstart_percent{vip="198.18.100.1:80/tcp",backend="198.18.0.12"} 30"#,
        r#"lb_backend_slowstart_percent{vip="198.18.100.1:80/tcp",backend="198.18.0.11"} 100"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    // Agent metrics only for backends with an agent check.
    assert_eq!(text.lines().filter(|l| l.starts_with("lb_backend_agent_replies_total{")).count(), 1);
}

/// Label value per the format: escapes are \\, \" and \n only.
fn label_value(s: &str) -> Option<&str> {
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some(&s[i + 1..]),
            '\\' if !matches!(chars.next(), Some((_, '\\' | '"' | 'n'))) => return None,
            '\n' => return None,
            _ => {}
        }
    }
    None
}

fn is_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// One sample line: name, labels, value; None when not valid 0.0.4 syntax.
fn sample(line: &str) -> Option<&str> {
    let end = line.find(['{', ' '])?;
    let (name, mut rest) = line.split_at(end);
    if !is_name(name) {
        return None;
    }
    if let Some(labels) = rest.strip_prefix('{') {
        rest = labels;
        loop {
            let (label, after) = rest.split_once("=\"")?;
            if !is_name(label) {
                return None;
            }
            rest = label_value(after)?;
            match rest.as_bytes().first()? {
                b',' => rest = &rest[1..],
                b'}' => {
                    rest = &rest[1..];
                    break;
                }
                _ => return None,
            }
        }
    }
    let value = rest.strip_prefix(' ')?;
    (value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value)).then_some(name)
}

#[test]
fn every_line_is_valid_exposition() {
    let text = render(&status(), 1.5);
    assert!(text.ends_with('\n'));
    let mut typed = Vec::new();
    let mut current = "";
    for line in text.lines() {
        if let Some(help) = line.strip_prefix("# HELP ") {
            let name = help.split(' ').next().unwrap();
            assert!(is_name(name) && !typed.contains(&name), "{line}");
        } else if let Some(ty) = line.strip_prefix("# TYPE ") {
            let (name, kind) = ty.split_once(' ').unwrap();
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            assert!(!typed.contains(&name), "family {name} appears twice");
            typed.push(name);
            current = name;
        } else {
            let name = sample(line).unwrap_or_else(|| panic!("invalid sample line {line:?}"));
            assert_eq!(name, current, "samples of a family must follow its TYPE line");
            if name.ends_with("_total") {
                assert!(line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() >= 0.0);
            }
        }
    }
    assert!(sample(r#"x{a="b\q"} 1"#).is_none() && sample("x{a=\"b\"} one").is_none());
}

#[test]
fn empty_status() {
    let mut s = status();
    s.vips.clear();
    s.counters.clear();
    let text = render(&s, 0.0);
    assert!(text.contains("# TYPE lb_backend_up gauge\n# HELP"));
    assert!(text.contains("\nlb_table_rebuild_seconds_total 0\n"));
}

#[derive(Clone)]
struct Fake;

impl Control for Fake {
    async fn status(&self) -> Result<Status, crate::agent::owner::ApiError> {
        Ok(status())
    }
    async fn metrics(&self) -> Result<String, crate::agent::owner::ApiError> {
        Ok(render(&status(), 0.25))
    }
    async fn reload(&self) -> Result<String, crate::agent::owner::ApiError> {
        unreachable!("not served here")
    }
    async fn change(&self, _: crate::agent::owner::Change) -> Result<String, crate::agent::owner::ApiError> {
        unreachable!("not served here")
    }
}

#[tokio::test]
async fn serves_over_tcp() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let server = tokio::spawn(serve_listener(listener, Fake, cancel.clone()));
    let get = |method: &'static str, path: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (st, body) = http::send(&mut s, method, path, None, 1 << 20).await.unwrap();
        (st, String::from_utf8(body).unwrap())
    };
    let (st, text) = get("GET", "/metrics").await;
    assert_eq!(st, 200);
    assert!(text.contains("\nlb_uptime_seconds 3600\n"));
    let (st, json) = get("GET", "/v1/status").await;
    assert_eq!(st, 200);
    assert!(json.contains(r#""interface":"eth0""#));
    assert_eq!(get("POST", "/metrics").await.0, 405);
    assert_eq!(get("GET", "/nope").await.0, 404);
    let (st, page) = get("GET", "/").await;
    assert!(st == 200 && page.contains("/v1/status"), "the status page: {st}");
    cancel.cancel();
    server.await.unwrap();
}

#[test]
fn hot_spot_lines() {
    let mut s = status();
    s.vips[0].backends[0].hot_spot = Some(crate::agent::hotspot::BackendHotSpot {
        hot: true,
        ratios: crate::agent::hotspot::Ratios { flows: Some(1.5), packets: None },
        weight_pct: 75,
        ceiling_pct: 100,
        adjustments: 3,
    });
    s.hot_spot.adjustments_total = 4;
    let text = render(&s, 0.0);
    for line in [
        r#"lb_backend_hot_spot{vip="198.18.100.1:80/tcp",backend="198.18.0.11"} 1"#,
        r#"lb_backend_load_ratio{vip="198.18.100.1:80/tcp",backend="198.18.0.11",measure="flows"} 1.5"#,
        r#"lb_backend_hot_spot_weight_pct{vip="198.18.100.1:80/tcp",backend="198.18.0.11"} 75"#,
        r#"lb_backend_hot_spot_adjustments_total{vip="198.18.100.1:80/tcp",backend="198.18.0.11"} 3"#,
        "lb_hot_spot_adjustments_total 4",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    // Unmeasured backends and measures get no sample.
    assert_eq!(text.lines().filter(|l| l.starts_with("lb_backend_hot_spot{")).count(), 1);
    assert!(!text.contains("measure=\"packets\""));
}
