//! The `bgp` line of `lb status`.

use serde::Deserialize;

#[derive(Deserialize)]
pub struct BgpView {
    bird_socket: String,
    drained: bool,
    stopping: bool,
    ready: Vec<String>,
    announced: Vec<String>,
    pending: bool,
    last_update: Option<UpdateView>,
}

#[derive(Deserialize)]
struct UpdateView {
    at_unix_ms: u64,
    ok: bool,
    message: String,
}

fn list(v: &[String]) -> String {
    if v.is_empty() { "nothing".into() } else { v.join(", ") }
}

/// One line, two when an update fails.
pub fn text(b: &BgpView, now_ms: u64) -> String {
    let state = match (b.stopping, b.drained) {
        (true, _) => "STOPPING, withdrawn; ",
        (false, true) => "DRAINED (lb undrain-node announces again); ",
        _ => "",
    };
    let mut out = format!("bgp: {state}announcing {} through BIRD at {}", list(&b.announced), b.bird_socket);
    let missing: Vec<String> = b.ready.iter().filter(|a| !b.announced.contains(a)).cloned().collect();
    if !missing.is_empty() && !b.drained && !b.stopping {
        out.push_str(&format!("; ready but not announced: {}", list(&missing)));
    }
    out.push('\n');
    if let Some(u) = &b.last_update {
        let ago = now_ms.saturating_sub(u.at_unix_ms) / 1000;
        if !u.ok || b.pending {
            out.push_str(&format!("  last update FAILED {ago}s ago (retrying): {}\n", u.message));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let view = |drained, pending, ok| BgpView {
            bird_socket: "/run/bird/bird.ctl".into(),
            drained,
            stopping: false,
            ready: vec!["198.18.100.1".into(), "198.18.100.2".into()],
            announced: if drained { vec![] } else { vec!["198.18.100.1".into()] },
            pending,
            last_update: Some(UpdateView { at_unix_ms: 1_000, ok, message: "BIRD refused".into() }),
        };
        assert_eq!(
            text(&view(false, false, true), 4_000),
            "bgp: announcing 198.18.100.1 through BIRD at /run/bird/bird.ctl; ready but not announced: 198.18.100.2\n"
        );
        let drained = text(&view(true, true, false), 4_000);
        assert!(drained.starts_with("bgp: DRAINED (lb undrain-node announces again); announcing nothing"), "{drained}");
        assert!(drained.ends_with("  last update FAILED 3s ago (retrying): BIRD refused\n"), "{drained}");
    }
}
