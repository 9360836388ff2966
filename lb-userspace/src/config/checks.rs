//! The health-related keys beyond the basic check: HAProxy's `fastinter`
//! and `downinter`, `slowstart`, and the agent check.

use serde::Deserialize;

use super::{ConfigError, HealthCheck, invalid};

/// Accepted range of every check interval, in milliseconds.
pub const INTERVAL_RANGE_MS: std::ops::RangeInclusive<u64> = 10..=3_600_000;
/// Longest `slowstart_ms`: one hour.
pub const MAX_SLOWSTART_MS: u64 = 3_600_000;
/// Longest `agent_check.send` string, in bytes.
pub const MAX_AGENT_SEND: usize = 512;

/// `[vip.agent_check]`: a backend reports its own weight and state over
/// a line of text, as HAProxy's agent-check (see README, "Agent check").
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentCheck {
    /// Port of the agent on each backend's own address.
    pub port: u16,
    #[serde(default = "default_agent_interval")]
    pub interval_ms: u64,
    /// For the whole exchange: connect, send, and the reply line.
    #[serde(default = "default_agent_timeout")]
    pub timeout_ms: u64,
    /// Sent once connected, before the reply is read (HAProxy's `agent-send`).
    pub send: Option<String>,
}

fn default_agent_interval() -> u64 {
    2000
}
fn default_agent_timeout() -> u64 {
    1000
}

fn check_interval(key: String, ms: u64) -> Result<(), ConfigError> {
    if !INTERVAL_RANGE_MS.contains(&ms) {
        let (lo, hi) = (INTERVAL_RANGE_MS.start(), INTERVAL_RANGE_MS.end());
        return Err(invalid(key, format!("{ms} must be from {lo} to {hi}")));
    }
    Ok(())
}

/// `interval_ms`, `timeout_ms` and the optional `fastinter_ms` and
/// `downinter_ms` of a health check.
pub(super) fn check_intervals(key: &str, hc: &HealthCheck) -> Result<(), ConfigError> {
    check_interval(format!("{key}.interval_ms"), hc.interval_ms)?;
    for (name, ms) in [("fastinter_ms", hc.fastinter_ms), ("downinter_ms", hc.downinter_ms)] {
        if let Some(ms) = ms {
            check_interval(format!("{key}.{name}"), ms)?;
        }
    }
    check_timeout(key, hc.timeout_ms, hc.interval_ms)
}

fn check_timeout(key: &str, timeout_ms: u64, interval_ms: u64) -> Result<(), ConfigError> {
    if timeout_ms == 0 || timeout_ms > interval_ms {
        return Err(invalid(
            format!("{key}.timeout_ms"),
            format!("{timeout_ms} must be from 1 to interval_ms ({interval_ms})"),
        ));
    }
    Ok(())
}

pub(super) fn check_slowstart(key: &str, ms: u64) -> Result<(), ConfigError> {
    if ms > MAX_SLOWSTART_MS {
        return Err(invalid(format!("{key}.slowstart_ms"), format!("{ms} must be from 0 (off) to {MAX_SLOWSTART_MS}")));
    }
    Ok(())
}

pub(super) fn check_agent(key: &str, a: &AgentCheck) -> Result<(), ConfigError> {
    if a.port == 0 {
        return Err(invalid(format!("{key}.port"), "must be 1-65535"));
    }
    check_interval(format!("{key}.interval_ms"), a.interval_ms)?;
    check_timeout(key, a.timeout_ms, a.interval_ms)?;
    if let Some(send) = &a.send
        && (send.is_empty() || send.len() > MAX_AGENT_SEND)
    {
        return Err(invalid(format!("{key}.send"), format!("must be 1 to {MAX_AGENT_SEND} bytes, not {}", send.len())));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
