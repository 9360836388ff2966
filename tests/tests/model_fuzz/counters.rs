//! Expected counter increments summed per batch or window, and the snapshots of the real counters.

use std::collections::HashMap;
use std::net::IpAddr;

use lb::dataplane::Dataplane;
use lb_common::{Counters, VipKey};
use lb_tests::model::Expected;

/// Expected counter increments, summed.
#[derive(Default)]
pub(super) struct Sums {
    pub(super) stats: HashMap<u32, (u64, u64)>,
    pub(super) vips: HashMap<VipKey, (u64, u64)>,
    /// (packets, bytes, new flows) per (VIP, backend).
    pub(super) backends: HashMap<(VipKey, IpAddr), (u64, u64, u64)>,
}

impl Sums {
    pub(super) fn add(&mut self, e: &Expected, len: u64) {
        for (i, bytes) in e.stats(len) {
            let s = self.stats.entry(i).or_default();
            s.0 += 1;
            s.1 += bytes;
        }
        if let Some(vip) = e.vip {
            let v = self.vips.entry(vip).or_default();
            v.0 += 1;
            v.1 += len;
            if let Some(b) = e.backend.filter(|_| e.verdict == lb_tests::model::XDP_TX) {
                let c = self.backends.entry((vip, b)).or_default();
                c.0 += 1;
                c.1 += len;
            }
            if let Some(b) = e.new_flow {
                self.backends.entry((vip, b)).or_default().2 += 1;
            }
        }
    }
}

pub(super) struct Snapshot {
    pub(super) stats: Vec<Counters>,
    pub(super) vips: HashMap<VipKey, Counters>,
    pub(super) backends: HashMap<(VipKey, IpAddr), (u64, u64, u64)>,
}

pub(super) fn snapshot_stats(dp: &Dataplane) -> Vec<Counters> {
    dp.stats().expect("reading STATS")
}

/// Per-VIP counters and (packets, bytes, new flows) per (VIP, backend).
pub(super) type Window = (HashMap<VipKey, Counters>, HashMap<(VipKey, IpAddr), (u64, u64, u64)>);

pub(super) fn snapshot_window(dp: &Dataplane) -> Window {
    let vips = dp.vip_counters().expect("reading VIP_STATS").into_iter().collect();
    let backends = dp
        .backend_counters()
        .expect("reading BACKEND_STATS")
        .into_iter()
        .map(|(v, a, t)| ((v, a), (t.packets, t.bytes, t.new_flows)))
        .collect();
    (vips, backends)
}
