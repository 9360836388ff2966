//! `[vip.health_check]`: the basic check HAProxy defines, its defaults and
//! its validation (the keys beyond it are in `checks`).

use serde::Deserialize;

use super::{CheckKind, ConfigError, checks, invalid};

/// A VIP's health check, as HAProxy defines one.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// Port probed on each backend's own address (default: the VIP's port).
    pub port: Option<u16>,
    /// HTTP only: path requested (default "/").
    #[serde(default = "default_path")]
    pub path: String,
    /// HTTP only: status that counts as healthy (default 200).
    #[serde(default = "default_status")]
    pub expect_status: u16,
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Interval while a backend is changing state (up with failed probes,
    /// or down with good ones), as HAProxy's `fastinter` (default: interval).
    pub fastinter_ms: Option<u64>,
    /// Interval while a backend is down, as HAProxy's `downinter` (default: interval).
    pub downinter_ms: Option<u64>,
    /// Consecutive successes that bring a down backend back.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

fn default_path() -> String {
    "/".into()
}
fn default_status() -> u16 {
    200
}
fn default_interval() -> u64 {
    2000
}
fn default_timeout() -> u64 {
    1000
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}

pub(super) fn check_health(key: &str, hc: &HealthCheck) -> Result<(), ConfigError> {
    if hc.port == Some(0) {
        return Err(invalid(format!("{key}.port"), "must be 1-65535"));
    }
    checks::check_intervals(key, hc)?;
    for (name, v) in [("rise", hc.rise), ("fall", hc.fall)] {
        if !(1..=100).contains(&v) {
            return Err(invalid(format!("{key}.{name}"), format!("{v} must be from 1 to 100")));
        }
    }
    if hc.kind == CheckKind::Http && !hc.path.starts_with('/') {
        return Err(invalid(format!("{key}.path"), format!("{:?} must start with /", hc.path)));
    }
    if !(100..=599).contains(&hc.expect_status) {
        return Err(invalid(format!("{key}.expect_status"), format!("{} is not an HTTP status", hc.expect_status)));
    }
    Ok(())
}
