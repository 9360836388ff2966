//! The status page's newer parts (per-instance warnings, weight factors,
//! probe pace, agent check, hot spots) checked against the API.

use serde_json::Value;

use super::{RING, backend, row_attr, vip};

/// What the page shows of a backend's weight factors (`data-factors`).
pub fn factor_text(f: &Value) -> String {
    let mut out = Vec::new();
    for (key, label) in [("slowstart_pct", "slow start"), ("agent_pct", "agent"), ("hotspot_pct", "hot spot")] {
        if f[key] != 100 {
            out.push(format!("{label} {}%", f[key]));
        }
    }
    if f["agent_admin"] != "ready" {
        out.push(format!("agent {}", f["agent_admin"].as_str().unwrap()));
    }
    if f["agent_down"] == true {
        out.push("agent down".into());
    }
    out.join(", ")
}

/// The page's per-instance warnings, weights and their factors, probe pace,
/// agent check, hot spots and hot-spot weight changes against the API
/// (`before` and `after` the page was loaded: what may move between them
/// must be within them, what did not move must be equal).
pub fn check_page_against_the_api(dom: &str, before: &Value, after: &Value) {
    let mut factors_shown = 0;
    for v in after["vips"].as_array().unwrap() {
        let id = v["vip"].as_str().unwrap();
        let reasons = v["per_instance"].as_array().unwrap();
        let warning = format!("class=\"per-instance\" data-vip=\"{id}\" data-reasons=\"");
        if reasons.is_empty() && vip(before, id)["per_instance"].as_array().unwrap().is_empty() {
            assert!(!dom.contains(&warning), "{id}: a per-instance warning with no reason");
        } else {
            let at = dom.find(&warning).unwrap_or_else(|| panic!("{id}: no per-instance warning for {reasons:?}"));
            let shown: usize = dom[at + warning.len()..].split('"').next().unwrap().parse().unwrap();
            assert_eq!(shown, reasons.len(), "{id}: reasons {reasons:?}");
            for r in reasons {
                assert!(
                    dom.contains(&format!("<li class=\"reason\">{}</li>", r.as_str().unwrap())),
                    "{id}: {r} not shown"
                );
            }
        }
        let algorithm = format!(
            "class=\"dim algorithm\">{}, {}, ring {RING}<",
            v["algorithm"].as_str().unwrap(),
            v["forwarding"].as_str().unwrap()
        );
        assert!(dom.contains(&algorithm), "{id}: no `{algorithm}`");
        for b in v["backends"].as_array().unwrap() {
            let addr = b["address"].as_str().unwrap();
            let b0 = backend(before, id, addr);
            let attr = |name: &str| row_attr(dom, id, addr, name).unwrap_or_else(|| panic!("{id} {addr}: no {name}"));
            let eff: u64 = attr("data-effective-weight").parse().unwrap();
            let (x, y) = (b0["effective_weight"].as_u64().unwrap(), b["effective_weight"].as_u64().unwrap());
            assert!((x.min(y)..=x.max(y)).contains(&eff), "{id} {addr}: effective weight {eff}, the API {x} and {y}");
            if b0["factors"] == b["factors"] {
                assert_eq!(attr("data-factors"), factor_text(&b["factors"]), "{id} {addr}");
                factors_shown += usize::from(!factor_text(&b["factors"]).is_empty());
            }
            if b0["probe"]["pace"] == b["probe"]["pace"] {
                assert_eq!(attr("data-pace"), b["probe"]["pace"].as_str().unwrap_or(""), "{id} {addr}");
            }
            if b["agent"].is_object() && b["agent"]["last_reply"].is_null() && b0["agent"]["last_error"].is_string() {
                assert_eq!(attr("data-agent"), "error", "{id} {addr}: {}", b["agent"]);
            }
            let spot = attr("data-hot-spot");
            let flags = [&b0["hot_spot"]["hot"], &b["hot_spot"]["hot"]].map(|h| if *h == true { "1" } else { "0" });
            assert!(flags.contains(&spot.as_str()), "{id} {addr}: hot spot {spot}, the API {flags:?}");
        }
    }
    assert!(factors_shown >= 1, "no backend showed a weight factor");
    // The corrected hot spot: its load ratio, and the weight change that the
    // controller made (the last of the VIP's, as the API has it).
    let udp = "198.18.100.1:5353/udp";
    let ratio: f64 = row_attr(dom, udp, "198.18.0.11", "data-ratio").unwrap().parse().unwrap();
    assert!(ratio > 1.0, "backend1's load ratio {ratio}");
    let hot = |s: &Value| backend(s, udp, "198.18.0.11")["hot_spot"]["hot"] == true;
    if hot(before) && hot(after) {
        assert!(dom.contains(">HOT SPOT "), "no HOT SPOT badge");
    }
    let last = after["hot_spot"]["adjustments"].as_array().unwrap().iter().rfind(|a| a["vip"] == udp).unwrap();
    let shown = format!(
        "class=\"adjustment\" data-backend=\"{}\" data-new-pct=\"{}\"",
        last["backend"].as_str().unwrap(),
        last["new_pct"]
    );
    assert!(dom.contains(&shown), "no `{shown}`");
    // backend3 fails its checks: probed at the `downinter` pace.
    assert!(dom.contains("downinter 400 ms"), "no probe pace shown");
    assert!(dom.contains("correction on (factor 1.5)"), "no hot-spot settings shown");
}

/// The value of `attr` in the tag that starts at `tag` in `dom`.
fn tag_attr(dom: &str, tag: &str, attr: &str) -> Option<String> {
    let start = dom.find(tag)?;
    let tag = &dom[start..start + dom[start..].find('>')?];
    let key = format!(" {attr}=\"");
    let at = tag.find(&key)? + key.len();
    Some(tag[at..at + tag[at..].find('"')?].to_string())
}

/// The BGP panel and the VIPs' markers against the API, with no BIRD at the
/// configured socket: a pending update that keeps failing with an error that
/// names the socket, nothing announced, every VIP marked not announced.
pub fn check_bgp_panel_against_the_api(dom: &str, before: &Value, after: &Value) {
    let (b0, b) = (&before["bgp"], &after["bgp"]);
    let socket = b["bird_socket"].as_str().unwrap();
    for s in [b0, b] {
        assert_eq!(
            (&s["pending"], &s["last_update"]["ok"], &s["drained"]),
            (&true.into(), &false.into(), &false.into())
        );
        assert!(s["announced"].as_array().unwrap().is_empty(), "{s}");
        assert!(s["last_update"]["message"].as_str().unwrap().contains(socket), "{s}");
    }
    let panel = "<section id=\"bgp\"";
    let open = &dom[dom.find(panel).expect("no BGP panel")..];
    assert!(!open[..open.find('>').unwrap()].contains("hidden"), "the BGP panel is hidden");
    let attr = |name: &str| tag_attr(dom, panel, name).unwrap_or_else(|| panic!("BGP panel: no {name}"));
    assert_eq!(
        ["data-pending", "data-failing", "data-drained", "data-stopping", "data-announced"].map(attr),
        ["1", "1", "0", "0", "0"]
    );
    let failures: u64 = attr("data-failures").parse().unwrap();
    let (lo, hi) = (b0["failures"].as_u64().unwrap(), b["failures"].as_u64().unwrap());
    assert!((lo.max(1)..=hi).contains(&failures), "the page shows {failures} failures, the API {lo}..{hi}");
    assert!(dom.contains(">PENDING</span>") && dom.contains("<b>BIRD UPDATE FAILING</b>"), "no pending warning");
    assert!(dom.contains(&format!("<code>{socket}</code>")), "BIRD's socket not shown");
    if b0["last_update"]["message"] == b["last_update"]["message"] {
        let message = b["last_update"]["message"].as_str().unwrap();
        let html = message.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        assert!(
            dom.contains(&format!("class=\"mono bgp-message\">{html}</span>")),
            "BIRD's message {message} not shown"
        );
    }
    assert!(dom.contains("<code class=\"bgp-announced\">nothing</code>"), "announced addresses");
    for v in after["vips"].as_array().unwrap() {
        let id = v["vip"].as_str().unwrap();
        assert_eq!(v["announced"], false, "{v}");
        let mark = format!("class=\"badge bgp-mark b-down\" data-vip=\"{id}\" data-announced=\"0\"");
        let at = dom.find(&mark).unwrap_or_else(|| panic!("{id}: no not-announced marker"));
        assert!(dom[at..].split('<').next().unwrap().ends_with(">not announced"), "{id}: marker text");
    }
}
