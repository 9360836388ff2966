//! One frame of `lb top`: plain text, with ANSI colours on a terminal.

use std::fmt::Write as _;

use super::{
    bgp,
    model::{History, Share, WINDOW, shares},
};

/// ANSI styling, off for pipes, `--once` into a file, and NO_COLOR.
#[derive(Clone, Copy)]
pub struct Style(pub bool);

impl Style {
    fn paint(self, code: &str, s: &str) -> String {
        if self.0 { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_string() }
    }
    fn bold(self, s: &str) -> String {
        self.paint("1", s)
    }
    fn dim(self, s: &str) -> String {
        self.paint("2", s)
    }
    pub fn good(self, s: &str) -> String {
        self.paint("32", s)
    }
    pub fn bad(self, s: &str) -> String {
        self.paint("31;1", s)
    }
    fn hot(self, s: &str) -> String {
        self.paint("30;43", s)
    }
}

fn si(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{:.1}G", x / 1e9),
        x if x >= 1e6 => format!("{:.1}M", x / 1e6),
        x if x >= 1e4 => format!("{:.1}k", x / 1e3),
        x if x >= 100.0 || x.fract() == 0.0 => format!("{x:.0}"),
        x => format!("{x:.1}"),
    }
}

pub fn ago(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, s / 60 % 60),
        s => format!("{}d{}h", s / 86400, s / 3600 % 24),
    }
}

const BAR: usize = 20;

/// `█████···|··········` with the weighted share marked.
fn bar(s: &Share) -> String {
    let fill = (s.share * BAR as f64).round() as usize;
    let mark = ((s.weighted * BAR as f64).round() as usize).min(BAR - 1);
    (0..BAR)
        .map(|i| {
            if i < fill {
                '█'
            } else if i == mark {
                '|'
            } else {
                '·'
            }
        })
        .collect()
}

/// Pads `cells` to `widths` (the widths of the plain text; colours pad after).
fn row(out: &mut String, cells: &[(String, String)], widths: &[usize]) {
    out.push_str("  ");
    for (i, (plain, shown)) in cells.iter().enumerate() {
        let pad = widths[i].saturating_sub(plain.chars().count());
        let _ = write!(out, "{shown}{}  ", " ".repeat(pad));
    }
    while out.ends_with(' ') {
        out.pop();
    }
    out.push('\n');
}

/// One frame.
pub fn render(h: &History, style: Style, interval: f64) -> String {
    let Some((now, s)) = h.samples.back() else { return "waiting for the first sample\n".into() };
    let rates = h.rates();
    let mut out = String::new();
    let clock = chrono_like(*now);
    let _ = writeln!(
        out,
        "{} on {}, up {}, refresh {interval}s, {clock}   {}",
        style.bold("lb top"),
        s.interface,
        ago(s.uptime_s * 1000),
        style.dim("q: quit")
    );
    let mut drops: Vec<_> = s.counters.iter().filter(|(k, n)| k.starts_with("drop_") && **n > 0).collect();
    drops.sort();
    if drops.is_empty() {
        out.push_str("drops: none\n");
    } else {
        let list: Vec<String> = drops
            .iter()
            .map(|(k, n)| {
                let r = h.counter_rate(k).map_or(String::new(), |r| format!(" ({}/s)", si(r)));
                style.bad(&format!("{k} {n}{r}"))
            })
            .collect();
        let _ = writeln!(out, "drops: {}", list.join(", "));
    }
    if let Some(b) = &s.bgp {
        let _ = writeln!(out, "{}", bgp::line(b, *now, style));
    }
    if s.vips.is_empty() {
        out.push_str("\nno VIPs\n");
    }
    for v in &s.vips {
        out.push('\n');
        let fp = if v.fingerprint.is_empty() { "-" } else { &v.fingerprint };
        let algorithm = v.algorithm.as_ref().map_or(String::new(), |a| format!("{a}  "));
        let mut head = format!(
            "{}  {algorithm}{}  ring {}  fingerprint {fp}  check {}",
            style.bold(&v.vip),
            v.forwarding,
            v.ring_size,
            v.health_check.as_deref().unwrap_or("none")
        );
        if v.failing_open {
            let _ = write!(head, "  {}", style.bad("FAILING OPEN"));
        }
        if s.bgp.is_some() {
            let _ = write!(head, "  {}", bgp::marker(v.announced, style));
        }
        let _ = writeln!(out, "{head}");
        for reason in &v.per_instance {
            let _ = writeln!(out, "  {} {reason}", style.bad("PER INSTANCE:"));
        }
        let (flows, in_window) = h.window_flows(v);
        let weights: Vec<u32> = v.backends.iter().map(|b| b.effective_weight).collect();
        let sh = shares(&flows, &weights, in_window);
        let total: u64 = flows.iter().sum();
        let (mut pps, mut nfs, mut known) = (0.0, 0.0, false);
        for b in &v.backends {
            if let Some((p, n)) = rates.get(&(v.vip.clone(), b.address.clone())) {
                (pps, nfs, known) = (pps + p, nfs + n, true);
            }
        }
        let rate = |x: f64| if known { format!("{}/s", si(x)) } else { "-".into() };
        let window = if in_window {
            format!("{total} new flows in the last {}s", WINDOW.as_secs())
        } else if total > 0 {
            format!("no new flows lately; shares since load ({total} flows)")
        } else {
            "no new flows yet".into()
        };
        let _ =
            writeln!(out, "  {} packets  {} new flows  {}", rate(pps), rate(nfs), style.dim(&format!("({window})")));
        if v.backends.is_empty() {
            out.push_str("  no backends\n");
            continue;
        }
        // Active connections: only from agents that count them.
        let active = v.backends.iter().any(|b| b.active_connections.is_some());
        let header: Vec<&str> = ["BACKEND", "STATE", "HEALTH", "WEIGHT", "ACTIVE", "PKT/S", "NEW/S", "PACKETS"]
            .into_iter()
            .filter(|h| active || *h != "ACTIVE")
            .chain(["NEW-FLOW SHARE", "LOAD", "LAST PROBE"])
            .collect();
        let mut rows: Vec<Vec<(String, String)>> = vec![header.iter().map(|h| (h.to_string(), style.dim(h))).collect()];
        let mut why = Vec::new();
        for (b, share) in v.backends.iter().zip(&sh) {
            let r = rates.get(&(v.vip.clone(), b.address.clone()));
            let health = if v.health_check.is_none() { "-".to_string() } else { b.health.clone() };
            let shown_health = match health.as_str() {
                "up" => style.good(&health),
                "down" => style.bad(&health),
                _ => health.clone(),
            };
            let state = match b.state.as_str() {
                "up" => style.good(&b.state),
                _ => style.bad(&b.state),
            };
            let share_text = format!(
                "{} {:>5.1}% (weight {:.0}%){}",
                bar(share),
                share.share * 100.0,
                share.weighted * 100.0,
                if share.hot { " HOT" } else { "" }
            );
            let shown_share = if share.hot { style.hot(&share_text) } else { share_text.clone() };
            let plain = |s: String| (s.clone(), s);
            // A marker on the effective weight when a factor changed it; the
            // factors are listed under the table.
            let factors = b.factors.as_ref().map_or(Vec::new(), |f| f.active());
            let marker = if factors.is_empty() { "" } else { "*" };
            if !factors.is_empty() {
                why.push(format!("* {}: {}", b.address, factors.join(", ")));
            }
            let spot = b.hot_spot.as_ref();
            let ratio = spot.and_then(|h| h.ratios.max()).map_or("-".into(), |r| format!("{r:.2}x"));
            let load = if spot.is_some_and(|h| h.hot) { format!("{ratio} HOT SPOT") } else { ratio };
            let shown_load = if spot.is_some_and(|h| h.hot) { style.hot(&load) } else { load.clone() };
            let mut cells = vec![
                plain(b.address.clone()),
                (b.state.clone(), state),
                (health, shown_health),
                plain(format!("{}/{}{marker}", b.weight, b.effective_weight)),
            ];
            if active {
                cells.push(plain(b.active_connections.map_or("-".into(), |n| si(n as f64))));
            }
            cells.extend([
                plain(r.map_or("-".into(), |r| si(r.0))),
                plain(r.map_or("-".into(), |r| si(r.1))),
                plain(b.packets.to_string()),
                (share_text, shown_share),
                (load, shown_load),
                plain(crate::probe_text::last_probe(b.probe.as_ref(), b.agent.as_ref())),
            ]);
            rows.push(cells);
        }
        let widths: Vec<usize> =
            (0..header.len()).map(|c| rows.iter().map(|r| r[c].0.chars().count()).max().unwrap_or(0)).collect();
        for r in &rows {
            row(&mut out, r, &widths);
        }
        for line in &why {
            let _ = writeln!(out, "  {}", style.dim(line));
        }
        let adjusted = s.hot_spot.adjustments.iter().filter(|a| a.vip == v.vip).rev().take(3);
        for a in adjusted {
            let ratio = a.ratio.map_or("-".into(), |r| format!("{r:.2}x"));
            let _ = writeln!(
                out,
                "  {} ago {} hot-spot weight {}% -> {}% (at {ratio}, this instance only)",
                ago(now.saturating_sub(a.at_unix_ms)),
                a.backend,
                a.old_pct,
                a.new_pct
            );
        }
        for t in s.transitions.iter().filter(|t| t.vip == v.vip).rev().take(3) {
            let health = if t.health == "up" { style.good(&t.health) } else { style.bad(&t.health) };
            let _ =
                writeln!(out, "  {} ago {} {health} ({})", ago(now.saturating_sub(t.at_unix_ms)), t.backend, t.reason);
        }
    }
    out
}

/// `HH:MM:SS` UTC of a unix time in ms (no time-zone database needed).
fn chrono_like(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02} UTC", s / 3600 % 24, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::super::model::{Snapshot, tests::snap};
    use super::*;

    #[test]
    fn frame_shows_everything() {
        let mut h = History::default();
        h.push(1_000, snap(&[0, 0, 0], &[0, 0, 0]));
        h.push(2_000, snap(&[30, 5, 5], &[900, 20, 40]));
        let f = render(&h, Style(false), 1.0);
        for want in [
            "198.18.100.1:80/tcp",
            "198.18.0.11",
            "198.18.0.12",
            "198.18.0.13",
            "00112233aabbccdd",
            "HOT",
            "drop_no_backend 4",
            "900",
        ] {
            assert!(f.contains(want), "{want} missing from\n{f}");
        }
        assert!(!f.contains('\x1b'), "no ANSI without a terminal:\n{f}");
        assert_eq!(f.matches("HOT").count(), 1, "{f}");
        assert!(render(&h, Style(true), 1.0).contains("\x1b[30;43m"));
    }

    #[test]
    fn bars() {
        let b = bar(&Share { share: 0.5, weighted: 0.75, hot: false });
        assert_eq!(b.chars().count(), BAR);
        assert_eq!(b.chars().filter(|c| *c == '█').count(), 10);
        assert_eq!(b.chars().position(|c| c == '|'), Some(15));
    }

    /// A status as the agent writes it, with every newer field.
    fn newer_snapshot() -> Snapshot {
        let mut s = snap(&[40, 5, 5], &[100, 20, 40]);
        let v = &mut s.vips[0];
        v.algorithm = Some("source-hash".into());
        v.per_instance = vec!["hot-spot correction of 198.18.0.11 (75% of its weight)".into()];
        let json = serde_json::json!({
            "factors": { "agent_pct": 50, "slowstart_pct": 100, "hotspot_pct": 75, "agent_admin": "ready", "agent_down": false },
            "agent": { "replies": 3, "failures": 0, "last_reply": "50%", "last_effect": "weight 50%", "last_error": null },
            "hot_spot": { "hot": true, "ratios": { "flows": 2.41, "packets": null }, "weight_pct": 75 },
            "probe": { "last_result": "connect: refused", "pace": "downinter", "interval_ms": 400 },
        });
        let b = &mut v.backends[0];
        b.effective_weight = 38;
        b.factors = serde_json::from_value(json["factors"].clone()).unwrap();
        b.agent = serde_json::from_value(json["agent"].clone()).unwrap();
        b.hot_spot = serde_json::from_value(json["hot_spot"].clone()).unwrap();
        b.probe = serde_json::from_value(json["probe"].clone()).unwrap();
        b.active_connections = Some(12);
        s.hot_spot = serde_json::from_value(serde_json::json!({ "adjustments": [
            { "at_unix_ms": 500, "vip": "198.18.100.1:80/tcp", "backend": "198.18.0.11", "old_pct": 100, "new_pct": 75,
              "ratio": 2.5, "reason": "hot" },
            { "at_unix_ms": 500, "vip": "198.18.100.2:80/tcp", "backend": "198.18.0.12", "old_pct": 100, "new_pct": 75,
              "ratio": 2.5, "reason": "another VIP's" },
        ]}))
        .unwrap();
        s
    }

    #[test]
    fn frame_shows_factors_hot_spots_and_checks() {
        let mut h = History::default();
        h.push(1_000, newer_snapshot());
        h.push(2_000, newer_snapshot());
        let f = render(&h, Style(false), 1.0);
        let row = |addr: &str| f.lines().find(|l| l.trim_start().starts_with(addr)).unwrap_or_else(|| panic!("{f}"));
        let b1 = row("198.18.0.11");
        for want in ["1/38*", "12", "2.41x HOT SPOT", "connect: refused (downinter 400 ms); agent: weight 50%"] {
            assert!(b1.contains(want), "{want} missing from {b1}");
        }
        // Neutral factors: no marker; not measured: no ratio; no count: `-`.
        assert!(row("198.18.0.12").contains(" 1/1 "), "{f}");
        // No health check, only the agent's word.
        let mut h = History::default();
        let mut s = newer_snapshot();
        s.vips[0].backends[0].probe = None;
        h.push(1_000, s);
        assert!(render(&h, Style(false), 1.0).contains("2.41x HOT SPOT  agent: weight 50%\n"));
        for want in [
            "198.18.100.1:80/tcp  source-hash  ipip",
            "PER INSTANCE: hot-spot correction of 198.18.0.11 (75% of its weight)",
            "ACTIVE",
            "LOAD",
            "* 198.18.0.11: agent 50%, hot spot 75%",
            "1s ago 198.18.0.11 hot-spot weight 100% -> 75% (at 2.50x, this instance only)",
        ] {
            assert!(f.contains(want), "{want} missing from\n{f}");
        }
        assert!(!f.contains("another VIP's") && !f.contains("198.18.100.2"), "{f}");
        assert_eq!(f.matches('*').count(), 2, "{f}");
        assert!(render(&h, Style(true), 1.0).contains("\x1b[30;43m2.41x HOT SPOT"));
    }

    #[test]
    fn older_agents_status_still_reads() {
        // No algorithm, factors, hot spots, pace or active connections.
        let text = r#"{"interface":"lb0","uptime_s":5,"counters":{},"vips":[{"vip":"198.18.100.1:80/tcp",
            "forwarding":"ipip","ring_size":251,"health_check":"tcp","failing_open":false,"fingerprint":"ab",
            "backends":[{"address":"198.18.0.11","weight":1,"effective_weight":1,"state":"up","health":"up",
            "packets":3,"probe":{"last_result":"ok"}}]}]}"#;
        let s: Snapshot = serde_json::from_str(text).unwrap();
        let mut h = History::default();
        h.push(1_000, s);
        let f = render(&h, Style(false), 1.0);
        assert!(!f.contains("ACTIVE") && !f.contains("PER INSTANCE") && !f.contains('*'), "{f}");
        assert!(f.contains("198.18.100.1:80/tcp  ipip  ring 251"), "{f}");
    }
}
