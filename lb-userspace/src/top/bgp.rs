//! The BGP line of `lb top`: what BIRD announces for this instance, and
//! why it announces nothing (drained, stopping, an update BIRD refused).

use serde::Deserialize;

use super::render::{Style, ago};

/// `bgp` in the status (absent: the agent has no `[bgp]` table).
#[derive(Clone, Debug, Deserialize)]
pub struct Bgp {
    pub bird_socket: String,
    pub drained: bool,
    pub stopping: bool,
    pub ready: Vec<String>,
    pub announced: Vec<String>,
    pub pending: bool,
    pub updates: u64,
    pub failures: u64,
    pub last_update: Option<Update>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Update {
    pub at_unix_ms: u64,
    pub ok: bool,
    pub message: String,
}

/// One line (no newline): the states first, since a drained node takes no
/// traffic whatever else the frame says.
pub fn line(b: &Bgp, now_ms: u64, style: Style) -> String {
    let mut states = Vec::new();
    if b.drained {
        states.push(style.bad("DRAINED"));
    }
    if b.stopping {
        states.push(style.bad("STOPPING"));
    }
    if b.pending {
        states.push(style.bad("PENDING"));
    }
    let states = if states.is_empty() { String::new() } else { format!("{} ", states.join(" ")) };
    let list = if b.announced.is_empty() { String::new() } else { format!(" ({})", b.announced.join(", ")) };
    let mut out = format!(
        "bgp: {states}announcing {} of {} ready{list} through BIRD at {}, {} updates, {} failures",
        b.announced.len(),
        b.ready.len(),
        b.bird_socket,
        b.updates,
        b.failures
    );
    if let Some(u) = b.last_update.as_ref().filter(|u| !u.ok || b.pending) {
        let failed =
            format!("last update failed {} ago (retrying): {}", ago(now_ms.saturating_sub(u.at_unix_ms)), u.message);
        out.push_str(&format!("; {}", style.bad(&failed)));
    }
    out
}

/// A VIP's marker, shown only when the agent announces through BIRD.
pub fn marker(announced: bool, style: Style) -> String {
    if announced { style.good("announced") } else { style.bad("NOT ANNOUNCED") }
}

#[cfg(test)]
mod tests {
    use super::super::{
        model::{History, Snapshot},
        render::{Style, render},
    };

    /// A status as the agent writes it, two VIPs on two addresses, with `bgp`
    /// as given (`null`: no `[bgp]` table).
    fn frame(bgp: serde_json::Value, announced: [bool; 2], style: Style) -> String {
        let vip = |id: &str, announced: bool| {
            serde_json::json!({ "vip": id, "forwarding": "ipip", "ring_size": 251, "health_check": null,
                "failing_open": false, "fingerprint": "ab", "announced": announced, "backends": [] })
        };
        let status = serde_json::json!({ "interface": "lb0", "uptime_s": 5, "counters": {},
            "vips": [vip("198.18.100.1:80/tcp", announced[0]), vip("198.18.100.2:80/tcp", announced[1])],
            "bgp": bgp });
        let s: Snapshot = serde_json::from_value(status).unwrap();
        let mut h = History::default();
        h.push(10_000, s);
        render(&h, style, 1.0)
    }

    fn bgp(drained: bool, pending: bool, announced: &[&str], last: serde_json::Value) -> serde_json::Value {
        serde_json::json!({ "bird_socket": "/tmp/t/bird.ctl", "config_file": "/tmp/t/vips.conf", "drained": drained,
            "stopping": false, "ready": ["198.18.100.1", "198.18.100.2"], "announced": announced, "pending": pending,
            "updates": 4, "failures": 2, "last_update": last })
    }

    fn line(f: &str) -> &str {
        f.lines().find(|l| l.starts_with("bgp: ")).unwrap_or_else(|| panic!("no bgp line in\n{f}"))
    }

    fn head<'a>(f: &'a str, vip: &str) -> &'a str {
        f.lines().find(|l| l.starts_with(vip)).unwrap_or_else(|| panic!("no {vip} in\n{f}"))
    }

    #[test]
    fn drained_and_announcing() {
        let ok = serde_json::json!({ "at_unix_ms": 7_000, "ok": true, "message": "Reconfigured", "took_ms": 1.5 });
        let f = frame(bgp(true, false, &[], ok.clone()), [false, false], Style(false));
        assert_eq!(
            line(&f),
            "bgp: DRAINED announcing 0 of 2 ready through BIRD at /tmp/t/bird.ctl, 4 updates, 2 failures"
        );
        assert!(head(&f, "198.18.100.1:80/tcp").ends_with("  NOT ANNOUNCED"), "{f}");
        // Announcing one of the two ready addresses: each VIP says which.
        let f = frame(bgp(false, false, &["198.18.100.1"], ok), [true, false], Style(false));
        assert_eq!(
            line(&f),
            "bgp: announcing 1 of 2 ready (198.18.100.1) through BIRD at /tmp/t/bird.ctl, 4 updates, 2 failures"
        );
        assert!(head(&f, "198.18.100.1:80/tcp").ends_with("  announced"), "{f}");
        assert!(head(&f, "198.18.100.2:80/tcp").ends_with("  NOT ANNOUNCED"), "{f}");
        assert!(!f.contains("failed") && !f.contains("PENDING"), "{f}");
    }

    #[test]
    fn pending_with_birds_message() {
        let failed = serde_json::json!({ "at_unix_ms": 7_000, "ok": false, "took_ms": 0.2,
            "message": "connecting to BIRD at /tmp/t/bird.ctl: No such file or directory" });
        let f = frame(bgp(false, true, &[], failed), [false, false], Style(false));
        assert_eq!(
            line(&f),
            "bgp: PENDING announcing 0 of 2 ready through BIRD at /tmp/t/bird.ctl, 4 updates, 2 failures; \
             last update failed 3s ago (retrying): connecting to BIRD at /tmp/t/bird.ctl: No such file or directory"
        );
        let coloured =
            line(&frame(bgp(true, true, &[], serde_json::Value::Null), [false, false], Style(true))).to_string();
        assert!(coloured.contains("\x1b[31;1mDRAINED\x1b[0m \x1b[31;1mPENDING\x1b[0m"), "{coloured}");
    }

    #[test]
    fn no_bgp_table_no_bgp_line() {
        let f = frame(serde_json::Value::Null, [false, false], Style(false));
        assert!(!f.contains("bgp") && !f.contains("ANNOUNCED") && !f.contains("announced"), "{f}");
        // Older agents write no `bgp` and no `announced` at all.
        let text = r#"{"interface":"lb0","uptime_s":5,"counters":{},"vips":[{"vip":"198.18.100.1:80/tcp",
            "forwarding":"ipip","ring_size":251,"health_check":null,"failing_open":false,"fingerprint":"ab",
            "backends":[]}]}"#;
        let s: Snapshot = serde_json::from_str(text).unwrap();
        assert!(s.bgp.is_none() && !s.vips[0].announced);
    }
}
