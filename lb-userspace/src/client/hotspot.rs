//! The hot-spot lines of `lb status`: flagged backends under their VIP, the
//! latest weight changes of the correction at the end.

use std::fmt::Write;

use serde::Deserialize;

#[derive(Deserialize)]
pub struct BackendHotSpotView {
    hot: bool,
    ratios: RatiosView,
    weight_pct: u32,
}

#[derive(Deserialize)]
struct RatiosView {
    flows: Option<f64>,
    packets: Option<f64>,
}

#[derive(Deserialize)]
pub struct HotSpotView {
    correct: bool,
    adjustments_total: u64,
    adjustments: Vec<AdjustmentView>,
}

#[derive(Deserialize)]
struct AdjustmentView {
    at_unix_ms: u64,
    vip: String,
    backend: String,
    old_pct: u32,
    new_pct: u32,
    ratio: Option<f64>,
    reason: String,
}

/// Adjustments shown by `lb status`.
const ADJUSTMENTS_SHOWN: usize = 5;

fn ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}x"))
}

/// A line per hot or corrected backend of a VIP.
pub fn backend_lines(address: &str, h: &BackendHotSpotView) -> String {
    let mut out = String::new();
    if h.hot {
        let _ = write!(
            out,
            "  HOT SPOT: {address} takes {} of its weighted share of new flows, {} of packets",
            ratio(h.ratios.flows),
            ratio(h.ratios.packets)
        );
    }
    if h.weight_pct != 100 {
        out.push_str(if out.is_empty() { "  " } else { "; " });
        let _ = write!(out, "hot-spot correction keeps {}% of {address}'s weight (this instance only)", h.weight_pct);
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// The latest adjustments, with how long ago.
pub fn adjustments(h: &HotSpotView, now_ms: u64, ago: impl Fn(u64) -> String) -> String {
    if h.adjustments.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\nhot-spot correction ({}): {} weight changes, latest:\n",
        if h.correct { "on" } else { "off" },
        h.adjustments_total
    );
    let skip = h.adjustments.len().saturating_sub(ADJUSTMENTS_SHOWN);
    for a in &h.adjustments[skip..] {
        let _ = writeln!(
            out,
            "  {} ago  {}  {}  {}% -> {}%  at {}  ({})",
            ago(now_ms.saturating_sub(a.at_unix_ms) / 1000),
            a.vip,
            a.backend,
            a.old_pct,
            a.new_pct,
            ratio(a.ratio),
            a.reason
        );
    }
    out
}
