//! The hot-spot families: each backend's load against its weighted share,
//! its flag, the correction's weight percentage and its adjustments.

use super::{Labels, Status, backend_labels, family, flag, per_backend};

pub(super) fn render(out: &mut String, s: &Status) {
    family(
        out,
        "lb_backend_hot_spot",
        "gauge",
        "1 while the backend takes more than [hot_spot] factor times its weighted share.",
        per_backend(s, |b| b.hot_spot.as_ref().map(|h| flag(h.hot))),
    );
    let ratios = s.vips.iter().flat_map(|v| {
        v.backends.iter().flat_map(move |b| {
            let r = b.hot_spot.as_ref().map(|h| h.ratios).unwrap_or_default();
            [("flows", r.flows), ("packets", r.packets)].into_iter().filter_map(move |(measure, value)| {
                let mut labels: Labels = backend_labels(v, b);
                labels.push(("measure", measure.to_string()));
                Some((labels, value?))
            })
        })
    });
    family(
        out,
        "lb_backend_load_ratio",
        "gauge",
        "The backend's share of the VIP's new flows or packets over the last window, over its weighted share.",
        ratios,
    );
    family(
        out,
        "lb_backend_hot_spot_weight_pct",
        "gauge",
        "Percentage of its weight the hot-spot correction leaves the backend (100: none).",
        per_backend(s, |b| b.hot_spot.as_ref().map(|h| h.weight_pct as f64)),
    );
    family(
        out,
        "lb_backend_hot_spot_adjustments_total",
        "counter",
        "Weight changes the hot-spot correction made to the backend.",
        per_backend(s, |b| b.hot_spot.as_ref().map(|h| h.adjustments as f64)),
    );
    family(
        out,
        "lb_hot_spot_adjustments_total",
        "counter",
        "Weight changes the hot-spot correction made.",
        [(vec![], s.hot_spot.adjustments_total as f64)],
    );
}
