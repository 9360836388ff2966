//! `GET /` on the metrics listener: one self-contained HTML page (inline CSS
//! and JavaScript, no external assets) that polls `/v1/status` every second
//! and draws every VIP and backend with live rates, new-flow shares and hot
//! spots, the reasons a VIP's choices are this instance's own, what changed
//! each weight, the probe pace and the agent check's word, and the BGP
//! state (announced, drained, a failing update) when the agent has `[bgp]`.
//! The page computes rates itself from successive samples, using the
//! agent's `sampled_unix_ms`, so the agent keeps no history for it.

use super::http::Response;

/// The page, embedded in the binary.
pub static PAGE: &str = include_str!("statuspage.html");

pub fn page() -> Response {
    Response::text(200, "text/html; charset=utf-8", PAGE.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_self_contained() {
        assert!(PAGE.starts_with("<!doctype html>"));
        assert!(PAGE.contains("/v1/status"));
        // Nothing fetched from elsewhere: no external scripts, styles, fonts or images.
        for needle in ["http://", "https://", "src=", "<link", "@import", "url("] {
            assert!(!PAGE.contains(needle), "the page refers to something outside it: {needle}");
        }
        let r = page();
        assert_eq!((r.status, r.content_type), (200, "text/html; charset=utf-8"));
    }
}
