//! The optional `[hot_spot]` table: how the agent judges whether a backend
//! takes more than its weighted share, and whether it corrects it.
//!
//! Detection is on by default and only reports. The correction (`correct =
//! true`, off by default) lowers a hot backend's weight from this instance's
//! own counters: the instance's Maglev tables then differ from those of other
//! instances behind the same ECMP route, which no longer agree on every flow.

use serde::Deserialize;

use super::{ConfigError, invalid};

/// Default `factor`: twice the weighted share is a hot spot.
pub const DEFAULT_FACTOR: f64 = 2.0;
/// Default `restore_factor`: below 1.25x its share a corrected backend gets weight back.
pub const DEFAULT_RESTORE_FACTOR: f64 = 1.25;
/// Default `duration_ms`: how long a backend must stay above the factor.
pub const DEFAULT_DURATION_MS: u64 = 30_000;
/// Default `interval_ms`: counters are sampled every second.
pub const DEFAULT_INTERVAL_MS: u64 = 1_000;
/// Default `window_ms`: the shares are measured over the last 10 s of samples.
pub const DEFAULT_WINDOW_MS: u64 = 10_000;
/// Default `min_flows`: new flows a VIP must get in a window for the flow share to count.
pub const DEFAULT_MIN_FLOWS: u64 = 100;
/// Default `min_packets`: packets a VIP must get in a window for the packet share to count.
pub const DEFAULT_MIN_PACKETS: u64 = 1_000;
/// Default `step_pct`: each correction step keeps 75% of the weight it had.
pub const DEFAULT_STEP_PCT: u32 = 75;
/// Default `floor_pct`: a corrected backend keeps at least a quarter of its weight.
pub const DEFAULT_FLOOR_PCT: u32 = 25;
/// Default `cooldown_ms`: time after a weight change before the next one.
pub const DEFAULT_COOLDOWN_MS: u64 = 30_000;
/// Longest accepted duration, window and cool-down (one day).
pub const MAX_TIME_MS: u64 = 86_400_000;

#[derive(Clone, Debug, PartialEq)]
pub struct HotSpotConfig {
    /// Measure and report hot spots.
    pub detect: bool,
    /// A backend is hot above this many times its weighted share.
    pub factor: f64,
    pub duration_ms: u64,
    pub interval_ms: u64,
    pub window_ms: u64,
    pub min_flows: u64,
    pub min_packets: u64,
    /// Lower a hot backend's weight (per instance: see the module comment).
    pub correct: bool,
    /// A corrected backend is restored only below this many times its share.
    pub restore_factor: f64,
    pub step_pct: u32,
    pub floor_pct: u32,
    pub cooldown_ms: u64,
}

impl Default for HotSpotConfig {
    fn default() -> Self {
        HotSpotConfig {
            detect: true,
            factor: DEFAULT_FACTOR,
            duration_ms: DEFAULT_DURATION_MS,
            interval_ms: DEFAULT_INTERVAL_MS,
            window_ms: DEFAULT_WINDOW_MS,
            min_flows: DEFAULT_MIN_FLOWS,
            min_packets: DEFAULT_MIN_PACKETS,
            correct: false,
            restore_factor: DEFAULT_RESTORE_FACTOR,
            step_pct: DEFAULT_STEP_PCT,
            floor_pct: DEFAULT_FLOOR_PCT,
            cooldown_ms: DEFAULT_COOLDOWN_MS,
        }
    }
}

// The table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHotSpot {
    detect: Option<bool>,
    factor: Option<f64>,
    duration_ms: Option<u64>,
    interval_ms: Option<u64>,
    window_ms: Option<u64>,
    min_flows: Option<u64>,
    min_packets: Option<u64>,
    correct: Option<bool>,
    restore_factor: Option<f64>,
    step_pct: Option<u32>,
    floor_pct: Option<u32>,
    cooldown_ms: Option<u64>,
}

pub(super) fn validate(raw: Option<RawHotSpot>) -> Result<HotSpotConfig, ConfigError> {
    let d = HotSpotConfig::default();
    let Some(r) = raw else { return Ok(d) };
    let c = HotSpotConfig {
        detect: r.detect.unwrap_or(d.detect),
        factor: r.factor.unwrap_or(d.factor),
        duration_ms: r.duration_ms.unwrap_or(d.duration_ms),
        interval_ms: r.interval_ms.unwrap_or(d.interval_ms),
        window_ms: r.window_ms.unwrap_or(d.window_ms),
        min_flows: r.min_flows.unwrap_or(d.min_flows),
        min_packets: r.min_packets.unwrap_or(d.min_packets),
        correct: r.correct.unwrap_or(d.correct),
        restore_factor: r.restore_factor.unwrap_or(d.restore_factor),
        step_pct: r.step_pct.unwrap_or(d.step_pct),
        floor_pct: r.floor_pct.unwrap_or(d.floor_pct),
        cooldown_ms: r.cooldown_ms.unwrap_or(d.cooldown_ms),
    };
    if !(c.factor.is_finite() && c.factor > 1.0 && c.factor <= 100.0) {
        return Err(invalid("hot_spot.factor", format!("{} must be above 1 and at most 100", c.factor)));
    }
    // Restoring only well below the correction threshold is the hysteresis
    // that keeps the controller from oscillating around it.
    if !(c.restore_factor.is_finite() && c.restore_factor >= 1.0 && c.restore_factor < c.factor) {
        return Err(invalid(
            "hot_spot.restore_factor",
            format!("{} must be at least 1 and below factor ({})", c.restore_factor, c.factor),
        ));
    }
    if !(10..=60_000).contains(&c.interval_ms) {
        return Err(invalid("hot_spot.interval_ms", format!("{} must be from 10 to 60000", c.interval_ms)));
    }
    if c.window_ms < c.interval_ms || c.window_ms > MAX_TIME_MS {
        return Err(invalid(
            "hot_spot.window_ms",
            format!("{} must be from interval_ms ({}) to {MAX_TIME_MS}", c.window_ms, c.interval_ms),
        ));
    }
    if c.duration_ms > MAX_TIME_MS {
        return Err(invalid("hot_spot.duration_ms", format!("{} is above the maximum {MAX_TIME_MS}", c.duration_ms)));
    }
    // A change must be judged on a full window measured after it.
    if c.cooldown_ms < c.window_ms || c.cooldown_ms > MAX_TIME_MS {
        return Err(invalid(
            "hot_spot.cooldown_ms",
            format!("{} must be from window_ms ({}) to {MAX_TIME_MS}", c.cooldown_ms, c.window_ms),
        ));
    }
    if c.min_flows == 0 && c.min_packets == 0 {
        return Err(invalid("hot_spot.min_flows", "min_flows and min_packets cannot both be 0"));
    }
    if !(1..=99).contains(&c.floor_pct) {
        return Err(invalid("hot_spot.floor_pct", format!("{} must be from 1 to 99", c.floor_pct)));
    }
    if !(10..=95).contains(&c.step_pct) {
        return Err(invalid("hot_spot.step_pct", format!("{} must be from 10 to 95", c.step_pct)));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    use crate::config::tests::{MINIMAL_GLOBAL as BASE, key_of};

    fn parse(table: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(&format!("{BASE}[hot_spot]\n{table}"))
    }

    #[test]
    fn absent_means_detection_with_defaults_and_no_correction() {
        let h = Config::from_toml_str(BASE).unwrap().hot_spot;
        assert_eq!(h, super::HotSpotConfig::default());
        assert!(h.detect && !h.correct);
        assert_eq!((h.factor, h.duration_ms, h.floor_pct), (2.0, 30_000, 25));
        assert_eq!(parse("").unwrap().hot_spot, h);
    }

    #[test]
    fn every_key() {
        let h = parse(
            "detect = true\nfactor = 3.0\nduration_ms = 500\ninterval_ms = 100\nwindow_ms = 400\nmin_flows = 5\n\
             min_packets = 0\ncorrect = true\nrestore_factor = 1.5\nstep_pct = 50\nfloor_pct = 10\ncooldown_ms = 800\n",
        )
        .unwrap()
        .hot_spot;
        assert_eq!((h.factor, h.duration_ms, h.interval_ms, h.window_ms), (3.0, 500, 100, 400));
        assert_eq!((h.min_flows, h.min_packets, h.correct, h.restore_factor), (5, 0, true, 1.5));
        assert_eq!((h.step_pct, h.floor_pct, h.cooldown_ms), (50, 10, 800));
    }

    #[test]
    fn errors_name_the_key() {
        for (table, key) in [
            ("factor = 1.0", "hot_spot.factor"),
            ("factor = nan", "hot_spot.factor"),
            ("restore_factor = 2.0", "hot_spot.restore_factor"),
            ("restore_factor = 0.5", "hot_spot.restore_factor"),
            ("interval_ms = 5", "hot_spot.interval_ms"),
            ("window_ms = 500", "hot_spot.window_ms"),
            ("duration_ms = 86400001", "hot_spot.duration_ms"),
            ("cooldown_ms = 5000", "hot_spot.cooldown_ms"),
            ("min_flows = 0\nmin_packets = 0", "hot_spot.min_flows"),
            ("floor_pct = 0", "hot_spot.floor_pct"),
            ("floor_pct = 100", "hot_spot.floor_pct"),
            ("step_pct = 100", "hot_spot.step_pct"),
        ] {
            assert_eq!(key_of(parse(table).unwrap_err()), key, "{table}");
        }
        let unknown = parse("threshold = 2").unwrap_err().to_string();
        assert!(unknown.contains("threshold"), "{unknown}");
    }
}
