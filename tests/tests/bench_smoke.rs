//! The benchmark runs and writes its report: `lb-bench --only prog` with
//! very few packets, then every key issue 4 names is in report.json (a
//! number, or null with a reason) and report.svg is an SVG. Asserts nothing
//! about time. Needs root (BPF); skipped otherwise.

use std::process::Command;

use lb_tests::netns::is_root;

/// The flat keys other tools read (issue 4).
const KEYS: [&str; 17] = [
    "prog_ns.floor",
    "prog_ns.tcp_syn",
    "prog_ns.tcp_ack",
    "prog_ns.udp",
    "prog_ns.tcp6_syn",
    "prog_ns.nonvip",
    "veth_mpps.drop",
    "veth_mpps.macswap_tx",
    "veth_mpps.ipip",
    "veth_mpps.l2dsr",
    "maglev_build_ms.n1000",
    "table_swap_ms",
    "failover_ms",
    "haproxy.conn_per_s",
    "lb.conn_per_s",
    "haproxy.pps",
    "lb.pps",
];

#[test]
fn bench_runs_and_reports_every_key() {
    if !is_root() {
        eprintln!("skipped: needs root for BPF");
        return;
    }
    let out = std::env::temp_dir().join(format!("lb-bench-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(env!("CARGO_BIN_EXE_lb-bench"))
        .args(["--only", "prog", "--rounds", "1", "--prog-runs", "300", "--out"])
        .arg(&out)
        .output()
        .expect("run lb-bench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "lb-bench failed: {}\n{stdout}\n{stderr}", run.status);
    assert!(stdout.contains("Cost per packet"), "{stdout}");

    let text = std::fs::read_to_string(out.join("report.json")).expect("report.json");
    let report: serde_json::Value = serde_json::from_str(&text).expect("report.json is JSON");
    for key in KEYS {
        let v = report.get(key).unwrap_or_else(|| panic!("{key} missing from report.json:\n{text}"));
        if v.is_null() {
            let reason = report.get(format!("{key}.reason")).and_then(|r| r.as_str());
            assert!(reason.is_some_and(|r| !r.is_empty()), "{key} is null without a reason");
        } else {
            assert!(v.is_number(), "{key} = {v}");
        }
    }
    // The part that ran produced numbers.
    for key in
        ["prog_ns.floor", "prog_ns.tcp_syn", "prog_ns.tcp_ack", "prog_ns.udp", "prog_ns.tcp6_syn", "prog_ns.nonvip"]
    {
        assert!(report[key].is_number(), "{key} = {}", report[key]);
        assert!(report[format!("{key}.min")].is_number() && report[format!("{key}.max")].is_number(), "{key} min/max");
    }
    assert!(report["katran_ratio.tcp_ack"].is_number());
    // The flood cases ran with the guard refusing inserts, and are compared
    // with Katran's no-insert figures.
    for key in ["prog_ns.tcp_syn_flood_same_flow", "prog_ns.tcp6_syn_flood_same_flow"] {
        assert!(report[key].is_number(), "{key} = {}", report[key]);
    }
    assert!(report["katran_ratio.tcp6_syn_flood_same_flow"].is_number());
    let guarded = report["prog_ns.conntrack_guarded"].as_f64().unwrap_or(0.0);
    assert!(guarded > 0.0, "the flood cases never met the flood guard: {guarded}");
    let svg = std::fs::read_to_string(out.join("report.svg")).expect("report.svg");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "not an SVG");
    let _ = std::fs::remove_dir_all(&out);
}

/// `--compare`: lb's own object given again as a second build, and lb's
/// build with a smaller connection table (`--compare-capacity`), get the
/// same cases measured (every case a number for every build); a malformed
/// argument is refused naming it.
#[test]
fn compare_measures_every_build() {
    if !is_root() {
        eprintln!("skipped: needs root for BPF");
        return;
    }
    let out = std::env::temp_dir().join(format!("lb-bench-compare-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let obj = out.join("again.o");
    std::fs::write(&obj, lb::objects::BALANCER).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_lb-bench"))
        .args(["--rounds", "2", "--prog-runs", "300", "--out"])
        .arg(&out)
        .arg("--compare")
        .arg(format!("again={}", obj.display()))
        .args(["--compare-capacity", "65536"])
        .output()
        .expect("run lb-bench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "lb-bench failed: {}\n{stdout}\n{stderr}", run.status);
    assert!(stdout.contains("builds compared"), "{stdout}");
    let text = std::fs::read_to_string(out.join("report.json")).expect("report.json");
    let report: serde_json::Value = serde_json::from_str(&text).expect("report.json is JSON");
    for build in ["lb", "again", "ct65536"] {
        for case in ["floor", "tcp_syn", "tcp_ack", "udp", "tcp6_syn", "nonvip", "l2dsr_ack_1024flows"] {
            let key = format!("compare.{build}.{case}");
            assert!(report[&key].is_number(), "{key} = {}", report[&key]);
            assert_eq!(report[format!("{key}.runs")], 2, "{key}: one figure per round");
        }
    }

    let bad = Command::new(env!("CARGO_BIN_EXE_lb-bench")).args(["--compare", "no-equals-sign"]).output().unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("--compare") && err.contains("no-equals-sign"), "{err}");
    let bad = Command::new(env!("CARGO_BIN_EXE_lb-bench")).args(["--compare-capacity", "lots"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--compare-capacity: \"lots\""));
    let _ = std::fs::remove_dir_all(&out);
}
