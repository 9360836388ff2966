use std::{collections::HashMap, sync::mpsc, thread};

use lb::{
    agent::{
        agent_check::AgentStatus,
        api::{self, Control},
        health::{Health, Pace, ProbeStatus},
        owner::{ApiError, BackendStatus, Change, Status, Transition, VipStatus},
        state::Placement,
    },
    config::{AllDown, CheckKind, Forwarding},
};
use tokio_util::sync::CancellationToken;

use super::*;
use clap::Parser;

use crate::cli::{Cli, Command};

fn status() -> Status {
    let backend = |address: &str, state, health, placement, probe: Option<&str>| BackendStatus {
        address: address.parse().unwrap(),
        weight: 2,
        effective_weight: if placement == Placement::InTable { 2 } else { 0 },
        factors: Default::default(),
        state,
        health,
        placement,
        packets: 10,
        bytes: 3 << 20,
        new_flows: 1,
        active_connections: 2,
        probe: probe.map(|r| ProbeStatus {
            health,
            consecutive_ok: 0,
            consecutive_failed: 0,
            checks: 1,
            failures: 0,
            transitions: 0,
            last_result: r.into(),
            last_change_unix_ms: 0,
            pace: if health == Health::Down { Pace::Downinter } else { Pace::Interval },
            interval_ms: 2000,
            recent: Default::default(),
        }),
        agent: None,
        hot_spot: None,
    };
    Status {
        interface: "eth0".into(),
        config_file: "/etc/lb.toml".into(),
        layout_version: 1,
        uptime_s: 3725,
        vips: vec![VipStatus {
            vip: "198.18.100.1:80/tcp".into(),
            forwarding: Forwarding::Ipip,
            algorithm: Default::default(),
            ring_size: 65537,
            health_check: Some(CheckKind::Http),
            all_down: AllDown::FailOpen,
            failing_open: false,
            fingerprint: "0011223344556677".into(),
            announced: false,
            per_instance: Vec::new(),
            packets: 1234,
            bytes: 5000,
            backends: vec![
                backend("198.18.0.11", AdminState::Up, Health::Up, Placement::InTable, Some("http status 200")),
                backend("198.18.0.12", AdminState::Drain, Health::Down, Placement::Draining, Some("connect: refused")),
            ],
        }],
        counters: HashMap::from([
            ("drop_no_backend".into(), 4),
            ("drop_fragment".into(), 0),
            ("tx_ipip".into(), 1234),
            ("pass_non_ip".into(), 9),
        ]),
        transitions: (0..7)
            .map(|i| Transition {
                at_unix_ms: 1_000_000 + i * 1000,
                vip: "198.18.100.1:80/tcp".into(),
                backend: "198.18.0.12".parse().unwrap(),
                health: Health::Down,
                reason: format!("check {i} failed"),
                table_live_after_us: Some(1300),
            })
            .collect(),
        table_rebuilds: 3,
        last_rebuild_ms: 12.34,
        bgp: None,
        hot_spot: Default::default(),
        active_recount: lb::agent::owner::ActiveRecount {
            recounts: 2,
            entries: 1234,
            capacity: 1 << 20,
            ..Default::default()
        },
    }
}

fn view() -> StatusView {
    StatusView::deserialize(serde_json::to_value(status()).unwrap()).unwrap()
}

#[test]
fn human_status_shows_the_agent_check() {
    let mut s = status();
    s.vips[0].backends[0].agent =
        Some(AgentStatus { last_effect: Some("weight 50% drain".into()), ..Default::default() });
    s.vips[0].backends[1].agent =
        Some(AgentStatus { last_error: Some("connect: refused".into()), ..Default::default() });
    let text = status_text(&StatusView::deserialize(serde_json::to_value(s).unwrap()).unwrap(), 1_000_000);
    assert!(text.contains("  http status 200; agent: weight 50% drain\n"), "{text}");
    assert!(text.contains("; agent: connect: refused\n"), "{text}");
}

#[test]
fn status_says_when_new_flows_take_open_flows_entries() {
    let mut s = view();
    s.counters.insert("conntrack_evicted".into(), 56);
    let text = status_text(&s, 1_000_000);
    assert!(
        text.contains(
            "connection table: 1234 of 1048576 entries; 56 entries of flows not closed taken by new flows (see \
             global.conntrack_capacity)\n"
        ),
        "{text}"
    );
}

#[test]
fn human_status() {
    let text = status_text(&view(), 1_000_000 + 6000 + 75_000);
    println!("{text}");
    assert!(text.starts_with(
        "lb on eth0 (/etc/lb.toml), up 1h2m, 3 table rebuilds (last 12.3 ms)\nconnection table: 1234 of 1048576 entries\n"
    ));
    assert!(
        text.contains(
            "\n198.18.100.1:80/tcp  ipip  ring 65537  fingerprint 0011223344556677  1234 packets  check http\n"
        )
    );
    assert!(text.contains("  BACKEND      STATE  HEALTH  PLACEMENT  WEIGHT  ACTIVE  PACKETS  BYTES    LAST PROBE\n"));
    assert!(text.contains(
        "  198.18.0.12  drain  down    draining   2/0     2       10       3.0 MiB  connect: refused (downinter 2000 ms)\n"
    ));
    assert!(text.contains("  http status 200\n"), "the plain interval is not shown");
    assert!(text.contains("drops:\n  drop_no_backend  4\n") && !text.contains("drop_fragment"));
    // The last five transitions, oldest first.
    assert!(
        !text.contains("check 1 failed")
            && text.contains("  1m15s ago  198.18.100.1:80/tcp  198.18.0.12  down  check 6 failed\n")
    );
    assert_eq!(text.matches(" ago ").count(), 5);
    // A per-instance algorithm is named, with the reason, under the VIP's line.
    let mut s = status();
    s.vips[0].algorithm = lb::config::Algorithm::RoundRobin;
    s.vips[0].per_instance = vec!["round-robin: new flows are placed from this instance's own state".into()];
    let text = status_text(&StatusView::deserialize(serde_json::to_value(s).unwrap()).unwrap(), 0);
    assert!(
        text.contains(
            "packets  check http  round-robin\n  per instance: round-robin: new flows are placed from this instance's own state\n"
        ),
        "{text}"
    );
}

#[test]
fn lists_and_stats() {
    let v = view();
    assert_eq!(
        vip_list(&v),
        "VIP                  FORWARDING  RING   CHECK  IN TABLE  PACKETS  BYTES    NOTE\n\
         198.18.100.1:80/tcp  ipip        65537  http   1/2       1234     4.9 KiB\n"
    );
    let text = stats_text(&v);
    let order: Vec<_> = text.lines().take(5).map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(order, ["COUNTER", "pass_non_ip", "drop_fragment", "drop_no_backend", "tx_ipip"]);
    assert!(text.contains("\n  198.18.0.11        10       3145728\n"), "{text}");
    let j = stats_json(&v);
    assert_eq!(j["vips"][0]["backends"][1]["address"], "198.18.0.12");
    assert_eq!(j["counters"]["tx_ipip"], 1234);
}

#[test]
fn vip_add_body() {
    let cli = Cli::try_parse_from([
        "lb",
        "vip",
        "add",
        "[2001:db8::1]:443/udp",
        "--forwarding",
        "l2dsr",
        "--backend",
        "2001:db8::11,mac=02:00:00:00:00:01",
        "--health",
        "tcp",
        "--rise",
        "4",
    ])
    .unwrap();
    let Command::Vip { command: VipCommand::Add(args) } = cli.command else { panic!("parsed as something else") };
    let body = vip_spec(args);
    assert_eq!(
        body,
        json!({
            "address": "2001:db8::1", "port": 443, "protocol": "udp", "forwarding": "l2dsr",
            "backend": [{"address": "2001:db8::11", "weight": null, "mac": "02:00:00:00:00:01", "state": null}],
            "health_check": {"kind": "tcp", "rise": 4},
        })
    );
    // What the agent parses it with.
    serde_json::from_value::<lb::config::VipSpec>(body).unwrap();
    // The algorithm and its acknowledgement.
    let cli = Cli::try_parse_from([
        "lb",
        "vip",
        "add",
        "198.18.100.7:80/tcp",
        "--algorithm",
        "least-connections",
        "--per-instance",
    ])
    .unwrap();
    let Command::Vip { command: VipCommand::Add(args) } = cli.command else { panic!("parsed as something else") };
    let body = vip_spec(args);
    assert_eq!((&body["algorithm"], &body["per_instance"]), (&json!("least-connections"), &json!(true)));
    let spec = serde_json::from_value::<lb::config::VipSpec>(body).unwrap();
    assert_eq!(spec.algorithm, Some(lb::config::Algorithm::LeastConnections));
    assert!(Cli::try_parse_from(["lb", "vip", "add", "198.18.100.7:80/tcp", "--algorithm", "random"]).is_err());
}

#[test]
fn helpers() {
    assert_eq!((duration(59), duration(61), duration(3 * 86400 + 7200)), ("59s".into(), "1m1s".into(), "3d2h".into()));
    assert_eq!((bytes(1023), bytes(1536), bytes(5 << 30)), ("1023 B".into(), "1.5 KiB".into(), "5.0 GiB".into()));
}

#[derive(Clone)]
struct Fake;

impl Control for Fake {
    async fn status(&self) -> Result<Status, ApiError> {
        Ok(status())
    }
    async fn metrics(&self) -> Result<String, ApiError> {
        Ok(String::new())
    }
    async fn reload(&self) -> Result<String, ApiError> {
        Err(ApiError::new(500, "the data path refused the change: EPERM"))
    }
    async fn change(&self, change: Change) -> Result<String, ApiError> {
        match change {
            Change::AddBackend(..) => {
                Err(ApiError::new(400, "backend 198.18.0.13.mac: required: the VIP uses l2dsr forwarding"))
            }
            _ => Ok("ok".into()),
        }
    }
}

#[test]
fn against_an_agent() {
    let socket = std::env::temp_dir().join(format!("lb-client-test-{}.sock", std::process::id()));
    let (cancel, ready) = (CancellationToken::new(), mpsc::channel());
    let server = {
        let (socket, cancel) = (socket.clone(), cancel.clone());
        thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let serve = api::serve_with(&socket, Fake, cancel);
                tokio::pin!(serve);
                tokio::select! {
                    r = &mut serve => return r,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => ready.0.send(()).unwrap(),
                }
                serve.await
            })
        })
    };
    ready.1.recv().unwrap();
    let client = Client::new(socket.clone());
    let (_, v) = client.status().unwrap();
    assert_eq!(v.vips[0].backends[1].placement, "draining");
    client
        .backend(BackendCommand::Drain {
            vip: "198.18.100.1:80/tcp".parse().unwrap(),
            address: "198.18.0.11".parse().unwrap(),
        })
        .unwrap();

    let e = client.backend(BackendCommand::Add {
        vip: "198.18.100.1:80/tcp".parse().unwrap(),
        address: "198.18.0.13".parse().unwrap(),
        weight: None,
        mac: None,
    });
    let e = e.unwrap_err();
    assert_eq!(
        (e.exit_code(), e.to_string()),
        (64, "backend 198.18.0.13.mac: required: the VIP uses l2dsr forwarding".into())
    );
    let e = client.reload().unwrap_err();
    assert_eq!(e.exit_code(), 1);
    let e = client.backend(BackendCommand::List { vip: "198.18.100.9:80/tcp".parse().unwrap() }).unwrap_err();
    assert_eq!((e.exit_code(), e.to_string()), (64, "no VIP 198.18.100.9:80/tcp".into()));

    cancel.cancel();
    server.join().unwrap().unwrap();
    let e = client.reload().unwrap_err();
    assert_eq!(e.exit_code(), 69);
    assert_eq!(
        e.to_string(),
        format!(
            "cannot reach the lb agent at {} (No such file or directory). Is `lb run` running? Use --socket to point elsewhere.",
            socket.display()
        )
    );
}

#[test]
fn human_status_hot_spot() {
    use lb::agent::hotspot::{Adjustment, BackendHotSpot, Ratios};
    let mut s = status();
    s.vips[0].backends[0].hot_spot = Some(BackendHotSpot {
        hot: true,
        ratios: Ratios { flows: Some(1.1), packets: Some(2.345) },
        weight_pct: 56,
        ceiling_pct: 100,
        adjustments: 2,
    });
    s.vips[0].backends[1].hot_spot = Some(BackendHotSpot { weight_pct: 100, ..Default::default() });
    s.hot_spot.correct = true;
    s.hot_spot.adjustments_total = 2;
    s.hot_spot.adjustments = vec![Adjustment {
        at_unix_ms: 1_000_000,
        vip: "198.18.100.1:80/tcp".into(),
        backend: "198.18.0.11".parse().unwrap(),
        old_pct: 75,
        new_pct: 56,
        ratio: Some(2.2),
        reason: "hot".into(),
    }];
    let text = status_text(&StatusView::deserialize(serde_json::to_value(s).unwrap()).unwrap(), 1_000_000 + 12_000);
    println!("{text}");
    assert!(text.contains(
        "  HOT SPOT: 198.18.0.11 takes 1.10x of its weighted share of new flows, 2.35x of packets; hot-spot \
         correction keeps 56% of 198.18.0.11's weight (this instance only)\n"
    ));
    assert!(!text.contains("HOT SPOT: 198.18.0.12"));
    assert!(text.contains(
        "hot-spot correction (on): 2 weight changes, latest:\n  12s ago  198.18.100.1:80/tcp  198.18.0.11  75% -> 56%  at 2.20x  (hot)\n"
    ));
}
