//! Slow start, as HAProxy's `slowstart`: a backend that enters a VIP's
//! table (recovered, back from drain or maintenance, or newly added) gets
//! its weight ramped from about 0 to full over `slowstart_ms`, so it is not
//! flooded with new flows the moment it is back.
//!
//! The weight is at least 1 from the start and rounded up (as HAProxy).
//! Every weight change rebuilds the VIP's Maglev table, so the ramp moves
//! in [`MAX_STEPS`] steps at most, each at least [`MIN_STEP`] long; the owner
//! applies each step as a normal update (only changed ring chunks are
//! written). Backends in the table when the agent starts are not ramped,
//! nor is the first backend of a VIP that had none in its table (it takes
//! every new flow at any weight). The ramp runs on this instance's clock:
//! while it lasts, instances behind the same ECMP route may disagree (see
//! `per_instance` in status).

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use super::{health::Target, state::WeightFactors};
use crate::config::Config;

/// Most steps of a ramp.
pub const MAX_STEPS: u32 = 10;
/// Shortest step: a shorter slow start takes fewer steps.
pub const MIN_STEP: Duration = Duration::from_millis(100);

/// Steps a ramp of `length` takes.
pub fn steps(length: Duration) -> u32 {
    let n = length.as_millis() / MIN_STEP.as_millis();
    n.clamp(1, u128::from(MAX_STEPS)) as u32
}

/// Step `k` of a ramp of `length` starts at `k * step_length(length)`.
pub fn step_length(length: Duration) -> Duration {
    length / steps(length)
}

/// The weight percentage `elapsed` into a ramp of `length`: 1 in the
/// first step, then `100 * k / steps` rounded up; `None` once it is over.
pub fn pct_at(elapsed: Duration, length: Duration) -> Option<u32> {
    let n = steps(length);
    let k = elapsed.as_nanos() / step_length(length).as_nanos().max(1);
    if k >= u128::from(n) {
        return None;
    }
    Some(((100 * k as u32).div_ceil(n)).max(1))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ramp {
    started: Instant,
    length: Duration,
}

impl Ramp {
    /// When the next step is due.
    fn next_step(&self, now: Instant) -> Instant {
        let step = step_length(self.length);
        let k = now.saturating_duration_since(self.started).as_nanos() / step.as_nanos().max(1);
        self.started + step * (k as u32 + 1)
    }
}

/// The ramps in progress, and what was in the tables when last looked at.
#[derive(Clone, Debug, Default)]
pub struct SlowStart {
    /// Backends taking new flows at the last [`SlowStart::observe`]; `None`
    /// before the first (the agent's start, which ramps nothing).
    in_table: Option<HashSet<Target>>,
    ramps: HashMap<Target, Ramp>,
}

impl SlowStart {
    /// Starts a ramp for every backend of a slow-start VIP that takes new
    /// flows now (`in_table`) and did not before, unless its VIP had none
    /// before; ends the ramps of backends that left the table.
    pub fn observe(&mut self, config: &Config, in_table: HashSet<Target>, now: Instant) {
        if let Some(before) = &self.in_table {
            for t in in_table.difference(before) {
                let Some(vip) = config.vips.iter().find(|v| v.key() == t.vip) else { continue };
                if vip.slowstart_ms > 0 && before.iter().any(|b| b.vip == t.vip) {
                    self.ramps.insert(*t, Ramp { started: now, length: Duration::from_millis(vip.slowstart_ms) });
                }
            }
        }
        // A ramp ends with its backend leaving the table or its VIP's slow start turned off.
        let off = |t: &Target| config.vips.iter().find(|v| v.key() == t.vip).is_none_or(|v| v.slowstart_ms == 0);
        self.ramps.retain(|t, _| in_table.contains(t) && !off(t));
        self.in_table = Some(in_table);
    }

    /// Writes every target's `slowstart_pct` for `now` (100 when not
    /// ramping) and drops the ramps that are over.
    pub fn apply(&mut self, factors: &mut HashMap<Target, WeightFactors>, now: Instant) {
        let mut pct: HashMap<Target, u32> = HashMap::new();
        self.ramps.retain(|t, r| match pct_at(now.saturating_duration_since(r.started), r.length) {
            Some(p) => pct.insert(*t, p).is_none(),
            None => false,
        });
        for (t, f) in factors.iter_mut() {
            f.slowstart_pct = pct.get(t).copied().unwrap_or(100);
        }
        for (t, p) in pct {
            factors.entry(t).or_default().slowstart_pct = p;
        }
    }

    /// When the earliest ramp takes its next step (`None`: no ramp).
    pub fn next_step(&self, now: Instant) -> Option<Instant> {
        self.ramps.values().map(|r| r.next_step(now)).min()
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for (the
/// owner's timer arm, armed only while a ramp runs).
pub async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
