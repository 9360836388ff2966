//! How often a probe runs: HAProxy's `inter`, `fastinter` and `downinter`.
//! A backend that is settled (up with no failure, or down with no success)
//! is probed at its settled pace; one that is changing state is probed at
//! `fastinter`, so a failing backend leaves the table after `fall` quick
//! probes instead of `fall` full intervals.

use std::{collections::VecDeque, time::Duration};

use super::{Health, Hysteresis};

/// Which interval the next probe waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pace {
    /// Up, and the last probe succeeded: `interval_ms`.
    Interval,
    /// Up with a run of failures (going down) or down with a run of
    /// successes (coming up): `fastinter_ms`.
    Fastinter,
    /// Down, and the last probe failed: `downinter_ms`.
    Downinter,
}

/// The three intervals of a check; the optional ones default to `interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intervals {
    pub interval: Duration,
    pub fastinter: Duration,
    pub downinter: Duration,
}

impl Intervals {
    pub fn new(interval_ms: u64, fastinter_ms: Option<u64>, downinter_ms: Option<u64>) -> Self {
        let ms = Duration::from_millis;
        Intervals {
            interval: ms(interval_ms),
            fastinter: ms(fastinter_ms.unwrap_or(interval_ms)),
            downinter: ms(downinter_ms.unwrap_or(interval_ms)),
        }
    }

    pub fn of(&self, pace: Pace) -> Duration {
        match pace {
            Pace::Interval => self.interval,
            Pace::Fastinter => self.fastinter,
            Pace::Downinter => self.downinter,
        }
    }
}

/// The pace that follows the probes counted so far.
pub fn pace(counts: &Hysteresis) -> Pace {
    match counts.health {
        Health::Up if counts.failed == 0 => Pace::Interval,
        Health::Down if counts.ok == 0 => Pace::Downinter,
        _ => Pace::Fastinter,
    }
}

/// Probes remembered in status, newest last.
pub const RECENT_PROBES: usize = 16;

/// One probe as status shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ProbeRecord {
    /// When the probe completed.
    pub at_unix_ms: u64,
    pub ok: bool,
    /// Health after counting it.
    pub health: Health,
    /// The wait before the next probe it chose.
    pub next: Pace,
    pub next_ms: u64,
}

/// Appends `record`, dropping the oldest beyond [`RECENT_PROBES`].
pub fn remember(recent: &mut VecDeque<ProbeRecord>, record: ProbeRecord) {
    if recent.len() == RECENT_PROBES {
        recent.pop_front();
    }
    recent.push_back(record);
}
