//! Reading `lb status --json`: the JSON accessors, the shape refusals must not change, transitions and probe states.

use super::env::{Env, FALL};

/// `lb status --json` and the API's answers, read with serde_json.
pub(super) type Json = serde_json::Value;

pub(super) trait JsonExt {
    fn parse(text: &str) -> Result<Json, String>;
    fn path(&self, keys: &[&str]) -> Option<&Json>;
    fn str_at(&self, key: &str) -> Option<&str>;
}

impl JsonExt for Json {
    fn parse(text: &str) -> Result<Json, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    fn path(&self, keys: &[&str]) -> Option<&Json> {
        keys.iter().try_fold(self, |j, k| j.get(k))
    }

    fn str_at(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Json::as_str)
    }
}

pub(super) fn u64_at(j: &Json, path: &[&str]) -> u64 {
    j.path(path).and_then(Json::as_f64).map(|f| f as u64).unwrap_or_else(|| panic!("no number at {path:?} in {j:?}"))
}

pub(super) fn str_of<'a>(j: &'a Json, path: &[&str]) -> &'a str {
    j.path(path).and_then(Json::as_str).unwrap_or_else(|| panic!("no string at {path:?} in {j:?}"))
}

/// What must not change when the agent refuses something: per VIP its
/// fingerprint, failing-open flag and every backend's address, weights,
/// state, health and placement (not counters or probe counts).
pub(super) fn shape(status: &Json) -> String {
    let mut out = String::new();
    for v in status.get("vips").and_then(Json::as_array).into_iter().flatten() {
        out.push_str(&format!(
            "{} fingerprint={} failing_open={:?} ring={:?}\n",
            v.str_at("vip").unwrap_or("?"),
            v.str_at("fingerprint").unwrap_or("?"),
            v.get("failing_open"),
            v.get("ring_size"),
        ));
        for b in v.get("backends").and_then(Json::as_array).into_iter().flatten() {
            out.push_str(&format!(
                "  {} weight={:?}/{:?} state={} health={} placement={}\n",
                b.str_at("address").unwrap_or("?"),
                b.get("weight"),
                b.get("effective_weight"),
                b.str_at("state").unwrap_or("?"),
                b.str_at("health").unwrap_or("?"),
                b.str_at("placement").unwrap_or("?"),
            ));
        }
    }
    out
}

/// The health of every transition of `backend` in the status, in order.
pub(super) fn transitions_of(status: &Json, backend: &str) -> Vec<String> {
    transitions_with_reasons(status, backend).into_iter().map(|(h, _)| h).collect()
}

/// (health, reason) of every transition of `backend` in the status.
pub(super) fn transitions_with_reasons(status: &Json, backend: &str) -> Vec<(String, String)> {
    status
        .get("transitions")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter(|t| t.str_at("backend") == Some(backend))
        .map(|t| (t.str_at("health").unwrap_or("?").to_string(), t.str_at("reason").unwrap_or("?").to_string()))
        .collect()
}

/// Health down and out of the table, seen by the agent.
pub(super) fn is_down_removed(b: &Json) -> bool {
    b.str_at("health") == Some("down") && b.str_at("placement") == Some("removed")
}

pub(super) fn is_up_in_table(b: &Json) -> bool {
    b.str_at("health") == Some("up") && b.str_at("placement") == Some("in-table")
}

/// The probe invariant of rise/fall: a probe that still says up has seen
/// fewer than `fall` failures in a row.
pub(super) fn check_probe_invariant(env: &Env, b: &Json) {
    if b.path(&["probe", "health"]).and_then(Json::as_str) == Some("up") {
        let failed = u64_at(b, &["probe", "consecutive_failed"]);
        if failed >= u64::from(FALL) {
            env.fail(format!("probe is up after {failed} consecutive failures (fall {FALL}): {b:?}"));
        }
    }
}
