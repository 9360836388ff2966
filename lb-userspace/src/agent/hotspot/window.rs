//! The sliding window: cumulative counters sampled at each tick, and each
//! backend's share of the window's deltas against its weighted share.

use std::{collections::VecDeque, net::IpAddr, time::Duration};

/// Cumulative counters of one backend (as the data path's per-CPU sums).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub flows: u64,
    pub packets: u64,
}

/// One backend of a VIP at one tick.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendInput {
    pub address: IpAddr,
    /// The configured weight: the share is measured against it, so a
    /// corrected backend is judged against what it should get.
    pub weight: u32,
    /// The weight the live table gives it (0: out of the table).
    pub effective_weight: u32,
    pub counts: Counts,
}

/// A backend's load over the window against its weighted share (1.0: as
/// configured); `None` when the VIP had too little of that traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Ratios {
    pub flows: Option<f64>,
    pub packets: Option<f64>,
}

impl Ratios {
    /// The larger of the measured ratios.
    pub fn max(&self) -> Option<f64> {
        match (self.flows, self.packets) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The samples of one VIP since its table last changed, at most one window
/// old beyond the oldest needed.
#[derive(Debug, Default)]
pub struct Window {
    samples: VecDeque<(Duration, Vec<Counts>)>,
}

impl Window {
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// Adds the counters of `backends` (always in the same order: the caller
    /// clears the window when the backend set changes). A counter that went
    /// back (a backend slot reused) restarts the window: returns true then.
    pub fn push(&mut self, now: Duration, span: Duration, backends: &[BackendInput]) -> bool {
        let counts: Vec<Counts> = backends.iter().map(|b| b.counts).collect();
        let went_back = self.samples.back().is_some_and(|(_, last)| {
            last.len() != counts.len()
                || last.iter().zip(&counts).any(|(a, b)| b.flows < a.flows || b.packets < a.packets)
        });
        if went_back {
            self.samples.clear();
        }
        self.samples.push_back((now, counts));
        // Keep the newest sample at least `span` old: the window's start.
        while self.samples.len() > 1 && self.samples.get(1).is_some_and(|(t, _)| now.saturating_sub(*t) >= span) {
            self.samples.pop_front();
        }
        went_back
    }

    /// The deltas over a full window (`None` until the samples span it).
    fn deltas(&self, now: Duration, span: Duration) -> Option<Vec<Counts>> {
        let (start, first) = self.samples.front()?;
        let (_, last) = self.samples.back()?;
        if now.saturating_sub(*start) < span {
            return None;
        }
        Some(
            first
                .iter()
                .zip(last)
                .map(|(a, b)| Counts { flows: b.flows - a.flows, packets: b.packets - a.packets })
                .collect(),
        )
    }

    /// Each backend's ratios over the window, in `backends`' order; `None`
    /// until the window is full. Backends out of the table get no ratio and
    /// do not count in the shares.
    pub fn ratios(
        &self,
        now: Duration,
        span: Duration,
        backends: &[BackendInput],
        min_flows: u64,
        min_packets: u64,
    ) -> Option<Vec<Ratios>> {
        let deltas = self.deltas(now, span)?;
        let in_table = |i: &usize| backends[*i].effective_weight > 0;
        let idx: Vec<usize> = (0..backends.len()).filter(in_table).collect();
        let weights: u64 = idx.iter().map(|&i| backends[i].weight as u64).sum();
        let flows: u64 = idx.iter().map(|&i| deltas[i].flows).sum();
        let packets: u64 = idx.iter().map(|&i| deltas[i].packets).sum();
        let ratio = |part: u64, total: u64, min: u64, weight: u32| {
            (min > 0 && total >= min && weights > 0 && weight > 0)
                .then(|| (part as f64 / total as f64) / (weight as f64 / weights as f64))
        };
        Some(
            (0..backends.len())
                .map(|i| {
                    if !in_table(&i) {
                        return Ratios::default();
                    }
                    let w = backends[i].weight;
                    Ratios {
                        flows: ratio(deltas[i].flows, flows, min_flows, w),
                        packets: ratio(deltas[i].packets, packets, min_packets, w),
                    }
                })
                .collect(),
        )
    }
}
