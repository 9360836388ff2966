//! `report.svg`: the results as horizontal bar charts, hand-written SVG
//! without external assets. Unmeasured values are drawn as "null (reason)".

use std::fmt::Write as _;

use super::peers::{self, TARGET_SHARE};
use super::report::Report;
use super::{control, prog, veth};

const W: f64 = 1000.0;
const LABEL_W: f64 = 200.0;
const BAR_W: f64 = 480.0;
const ROW_H: f64 = 20.0;

const LB: &str = "#2b6cb0";
const PEER: &str = "#a0aec0";
const REF: &str = "#718096";
const TARGET: &str = "#c53030";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

struct Bar {
    label: String,
    value: Option<f64>,
    color: &'static str,
    text: String,
}

struct Marker {
    value: f64,
    label: String,
}

struct Chart {
    title: String,
    note: String,
    bars: Vec<Bar>,
    markers: Vec<Marker>,
}

impl Chart {
    fn height(&self) -> f64 {
        50.0 + self.bars.len() as f64 * ROW_H + 30.0
    }

    fn render(&self, out: &mut String, y0: f64) {
        let _ = writeln!(out, r#"<text x="20" y="{:.0}" class="h">{}</text>"#, y0 + 18.0, esc(&self.title));
        let _ = writeln!(out, r#"<text x="20" y="{:.0}" class="n">{}</text>"#, y0 + 34.0, esc(&self.note));
        let top = y0 + 44.0;
        let max = self
            .bars
            .iter()
            .filter_map(|b| b.value)
            .chain(self.markers.iter().map(|m| m.value))
            .fold(0.0f64, f64::max)
            .max(1e-9)
            * 1.05;
        let x = |v: f64| LABEL_W + (v.max(0.0) / max) * BAR_W;
        for (i, b) in self.bars.iter().enumerate() {
            let y = top + i as f64 * ROW_H;
            let _ = writeln!(
                out,
                r#"<text x="{:.0}" y="{:.0}" class="l" text-anchor="end">{}</text>"#,
                LABEL_W - 8.0,
                y + 14.0,
                esc(&b.label)
            );
            match b.value {
                Some(v) => {
                    let _ = writeln!(
                        out,
                        r#"<rect x="{LABEL_W:.0}" y="{:.1}" width="{:.1}" height="{:.0}" fill="{}"/>"#,
                        y + 3.0,
                        (x(v) - LABEL_W).max(1.0),
                        ROW_H - 6.0,
                        b.color
                    );
                    let _ = writeln!(
                        out,
                        r#"<text x="{:.1}" y="{:.0}" class="v">{}</text>"#,
                        x(v) + 5.0,
                        y + 14.0,
                        esc(&b.text)
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        r#"<text x="{:.0}" y="{:.0}" class="v">{}</text>"#,
                        LABEL_W + 5.0,
                        y + 14.0,
                        esc(&b.text)
                    );
                }
            }
        }
        let bottom = top + self.bars.len() as f64 * ROW_H;
        for (i, m) in self.markers.iter().enumerate() {
            let mx = x(m.value);
            let _ = writeln!(
                out,
                r#"<line x1="{mx:.1}" y1="{:.0}" x2="{mx:.1}" y2="{:.0}" stroke="{TARGET}" stroke-dasharray="4 3"/>"#,
                top, bottom
            );
            let _ = writeln!(
                out,
                r#"<text x="{mx:.1}" y="{:.0}" class="m" text-anchor="middle">{}</text>"#,
                bottom + 12.0 + (i % 2) as f64 * 11.0,
                esc(&m.label)
            );
        }
    }
}

fn val(r: &Report, key: &str) -> Option<f64> {
    r.get(key)
}

fn text(r: &Report, key: &str, unit: &str, d: usize) -> String {
    match r.get(key) {
        Some(v) => match (r.get(&format!("{key}.min")), r.get(&format!("{key}.max"))) {
            (Some(lo), Some(hi)) => format!("{v:.d$} {unit} [{lo:.d$}..{hi:.d$}]"),
            _ => format!("{v:.d$} {unit}"),
        },
        None => format!("null ({})", r.reason(key).unwrap_or("not measured")),
    }
}

/// The whole picture.
pub fn render(r: &Report, title: &str) -> String {
    let mut charts = Vec::new();

    // 1. Per packet: lb (net of floor) next to Katran, with the targets.
    let mut bars = Vec::new();
    for c in prog::CASES.iter().skip(1) {
        let case = c.key;
        let key = format!("prog_ns.{case}");
        let ratio = r.get(&format!("katran_ratio.{case}")).map(|x| format!(", {x:.2}x Katran")).unwrap_or_default();
        bars.push(Bar {
            label: format!("lb {case}"),
            value: val(r, &key),
            color: LB,
            text: format!("{}{ratio}", text(r, &key, "ns", 1)),
        });
        if let Some(k) = c.katran().filter(|_| c.is_peer_case()) {
            bars.push(Bar {
                label: format!("Katran {case}"),
                value: Some(k),
                color: PEER,
                text: format!("{k:.0} ns (target <= {:.0})", k * TARGET_SHARE),
            });
        }
    }
    charts.push(Chart {
        title: "1. Cost per packet, ns net of the XDP_DROP floor (lower is better)".into(),
        note: format!(
            "BPF_PROG_TEST_RUN, fresh frame per run, 100 backends per VIP; floor (lb_drop) = {}; Katran: field notes",
            text(r, "prog_ns.floor", "ns", 1)
        ),
        bars,
        markers: vec![],
    });

    // 2. Throughput against the ceiling.
    let mut bars = Vec::new();
    for (case, what) in veth::CASES {
        if case == "ipip_flows_1000" {
            continue;
        }
        let key = format!("veth_mpps.{case}");
        let color = if case == "drop" || case == "macswap_tx" { REF } else { LB };
        let ratio =
            r.get(&format!("veth_ratio.{case}_vs_macswap_tx")).map(|x| format!(", {x:.2}x XDP_TX")).unwrap_or_default();
        let _ = what;
        let label = match case {
            "drop" => "lb_drop (ceiling)",
            "macswap_tx" => "MAC swap + XDP_TX",
            "ipip" => "lb ipip, 1000 flows",
            "l2dsr" => "lb l2dsr, 1000 flows",
            "ipip_flows_1" => "lb ipip, 1 flow",
            "ipip_flows_1000000" => "lb ipip, 1M flows",
            other => other,
        };
        bars.push(Bar {
            label: label.to_string(),
            value: val(r, &key),
            color,
            text: format!("{}{ratio}", text(r, &key, "Mpps", 2)),
        });
    }
    let mut markers = Vec::new();
    if let Some(c) = r.get("veth_mpps.drop") {
        markers.push(Marker { value: c, label: "ceiling (XDP_DROP)".into() });
    }
    if let Some(m) = r.get("veth_mpps.macswap_tx") {
        markers.push(Marker { value: 0.9 * m, label: "target 0.9x XDP_TX".into() });
    }
    charts.push(Chart {
        title: "2. Throughput on veth, Mpps of 64-byte frames, one core (higher is better)".into(),
        note: "live-frames generator (BPF_PROG_TEST_RUN + XDP_LIVE_FRAMES) -> program under test -> XDP_DROP sink"
            .into(),
        bars,
        markers,
    });

    // 3. Control plane.
    let mut bars = Vec::new();
    for n in control::MAGLEV_NS {
        let key = format!("maglev_build_ms.n{n}");
        bars.push(Bar {
            label: format!("Maglev build N={n}"),
            value: val(r, &key),
            color: LB,
            text: text(r, &key, "ms", 3),
        });
    }
    bars.push(Bar {
        label: "Maglev paper (NSDI 2016)".into(),
        value: Some(peers::MAGLEV_PAPER_BUILD_MS),
        color: PEER,
        text: format!("{} ms", peers::MAGLEV_PAPER_BUILD_MS),
    });
    bars.push(Bar {
        label: "table swap (apply)".into(),
        value: val(r, "table_swap_ms"),
        color: LB,
        text: text(r, "table_swap_ms", "ms", 3),
    });
    charts.push(Chart {
        title: "3a. Control plane: Maglev tables of 65537 entries (lower is better)".into(),
        note: "target: build < 1 ms for N=1000".into(),
        bars,
        markers: vec![Marker { value: 1.0, label: "1 ms".into() }],
    });
    charts.push(Chart {
        title: "3b. Failover: fall-th failed probe -> table without the backend live".into(),
        note: format!(
            "lb run in a veth topology, http check every {} ms, fall {}; target < 50 ms",
            control::HC_INTERVAL_MS,
            control::HC_FALL
        ),
        bars: vec![Bar {
            label: "failover".into(),
            value: val(r, "failover_ms"),
            color: LB,
            text: text(r, "failover_ms", "ms", 2),
        }],
        markers: vec![Marker { value: 50.0, label: "target 50 ms".into() }],
    });

    // 4. HAProxy, as ratios: the raw rates differ by orders of magnitude
    // (per-core packets against end-to-end connections) and would not share
    // one axis.
    let bars = [
        ("new conn/s, end to end", "lb_vs_haproxy.conn_per_s"),
        ("new conn/s, one CPU for all", "onecpu.lb_vs_haproxy.conn_per_s"),
        ("new conn/s per balancer core", "lb_vs_haproxy.conn_per_s_per_core"),
        ("packets/s per core", "lb_vs_haproxy.pps_per_core"),
    ]
    .into_iter()
    .map(|(label, key)| Bar { label: label.into(), value: val(r, key), color: LB, text: text(r, key, "x", 2) })
    .collect();
    let rate = |k: &str| r.get(k).map_or("null".to_string(), |x| format!("{x:.0}"));
    let note = format!(
        "lb / HAProxy; targets 3x new conn/s, 10x packets/s; end to end, the client and backends are the \
         limit (lb {} vs HAProxy {} conn/s)",
        rate("lb.conn_per_s"),
        rate("haproxy.conn_per_s")
    );
    charts.push(Chart {
        title: "4. lb vs HAProxy on the same topology, ratios (higher is better)".into(),
        note,
        bars,
        markers: vec![Marker { value: 3.0, label: "3x".into() }, Marker { value: 10.0, label: "10x".into() }],
    });

    let height: f64 = 60.0 + charts.iter().map(|c| c.height() + 10.0).sum::<f64>();
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W:.0}" height="{height:.0}" viewBox="0 0 {W:.0} {height:.0}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        out,
        "<style>.t{{font-size:18px;font-weight:bold}}.h{{font-size:14px;font-weight:bold}}.n{{font-size:11px;fill:#4a5568}}\
         .l{{font-size:12px}}.v{{font-size:11px}}.m{{font-size:10px;fill:{TARGET}}}</style>"
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(out, r#"<text x="20" y="28" class="t">{}</text>"#, esc(title));
    let mut y = 50.0;
    for c in &charts {
        c.render(&mut out, y);
        y += c.height() + 10.0;
    }
    out.push_str("</svg>\n");
    out
}
