//! The clock of `ConnEntry::seen`: the kernel's jiffies, which the program
//! reads with one inlined load (see `lb_common::SEEN_JIFFY_SHIFT`).
//! Userspace reads jiffies by running `lb_clock` (BPF_PROG_TEST_RUN), and
//! learns HZ once per process from two readings at least 200 ms apart next
//! to CLOCK_MONOTONIC_COARSE: the first when the data path is loaded, the
//! second when HZ is first needed (the agent's first recount, a second
//! later by default), so nobody waits for it.

use std::{sync::OnceLock, time::Duration};

use aya::programs::{TestRun, TestRunOptions, Xdp};
use lb_common::{
    ClockSample,
    consts::{maps, progs},
};

use super::{Dataplane, DataplaneError, Result, map_err};

/// The kernel's HZ (a build-time constant of the kernel: learned once).
static HZ: OnceLock<u32> = OnceLock::new();

/// How long the calibration watches both clocks: a tick of error on either
/// (at most 10 ms) stays under 5% of it, and HZ values differ by more.
const CALIBRATION: Duration = Duration::from_millis(200);

/// The HZ values kernels are built with; a measured rate within 10% of one
/// is taken as that one.
const KNOWN_HZ: [u32; 4] = [100, 250, 300, 1000];

/// HZ from jiffies and nanoseconds elapsed between two readings.
pub fn hz_from(jiffies: u64, ns: u64) -> u32 {
    let rate = jiffies as f64 * 1e9 / ns.max(1) as f64;
    KNOWN_HZ.into_iter().find(|&hz| (rate - hz as f64).abs() <= hz as f64 * 0.1).unwrap_or(rate.round().max(1.0) as u32)
}

impl Dataplane {
    /// The kernel's jiffies and CLOCK_MONOTONIC_COARSE, read together.
    pub fn clock_sample(&self) -> Result<ClockSample> {
        let prog: &Xdp =
            self.ebpf.program(progs::CLOCK).and_then(|p| p.try_into().ok()).expect("loaded in load_programs");
        // An XDP test run needs a frame; an Ethernet header's worth of zeros.
        let frame = [0u8; 64];
        prog.test_run(TestRunOptions { data_in: Some(&frame), ..Default::default() })
            .map_err(|source| DataplaneError::Program { name: progs::CLOCK, source })?;
        self.array_ro::<ClockSample>(maps::CLOCK)?.get(&0, 0).map_err(map_err(maps::CLOCK))
    }

    /// Takes the first reading of the HZ calibration (a data path that
    /// cannot read its clock finds out at `hz`).
    pub(super) fn with_clock_origin(mut self) -> Dataplane {
        self.clock_origin = self.clock_sample().ok();
        self
    }

    /// The kernel's HZ; the first call in a process sleeps for what is left
    /// of 200 ms since the data path was loaded, if anything.
    pub fn hz(&self) -> Result<u32> {
        if let Some(hz) = HZ.get() {
            return Ok(*hz);
        }
        let first = match self.clock_origin {
            Some(origin) => origin,
            None => self.clock_sample()?,
        };
        let mut second = self.clock_sample()?;
        let watched = Duration::from_nanos(second.coarse_ns.saturating_sub(first.coarse_ns));
        if watched < CALIBRATION {
            std::thread::sleep(CALIBRATION - watched);
            second = self.clock_sample()?;
        }
        let hz = hz_from(second.jiffies - first.jiffies, second.coarse_ns - first.coarse_ns);
        tracing::debug!(hz, "kernel HZ calibrated");
        Ok(*HZ.get_or_init(|| hz))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hz_snaps_to_the_known_values() {
        // 200 ms at HZ=250 is 50 jiffies; a tick of error either way.
        assert_eq!(hz_from(50, 200_000_000), 250);
        assert_eq!(hz_from(49, 204_000_000), 250);
        assert_eq!(hz_from(60, 200_000_000), 300);
        assert_eq!(hz_from(20, 196_000_000), 100);
        assert_eq!(hz_from(201, 200_000_000), 1000);
        assert_eq!(hz_from(128, 1_000_000_000), 128, "an unusual HZ is taken as measured");
    }
}
