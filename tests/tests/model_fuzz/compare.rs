//! One frame through the model and the kernel, and the comparisons of outputs, the table and the counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use lb::dataplane::Dataplane;
use lb_common::stats;
use lb_tests::model::{Deviation, Expected, Model, XDP_ABORTED, stat_name, verdict_name};
use lb_tests::packet::hex_diff;
use lb_tests::xdp::test_run_into;

use super::counters::{Snapshot, Sums, snapshot_stats, snapshot_window};
use super::generate::Kind;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(super) struct Fuzz {
    show: usize,
    pub(super) mismatches: Vec<String>,
    pub(super) mismatch_count: u64,
    pub(super) counter_mismatches: Vec<String>,
    pub(super) table_mismatches: u64,
    pub(super) aborted: u64,
    pub(super) known: BTreeMap<Deviation, (u64, String)>,
    pub(super) by_kind: BTreeMap<Kind, u64>,
    pub(super) by_reason: BTreeMap<u32, u64>,
    pub(super) by_rule: BTreeMap<&'static str, u64>,
    pub(super) extra: BTreeMap<u32, u64>,
    pub(super) test_run_time: Duration,
    // The current batch and window.
    batch_sums: Sums,
    batch_frames: Vec<(u64, Kind, u32)>,
    /// Inputs of the batch, kept when batches are tiny (LB_FUZZ_BATCH <= 4).
    batch_inputs: Option<Vec<String>>,
    batch_dirty: bool,
    window_sums: Sums,
    window_dirty: bool,
    base: Snapshot,
}

impl Fuzz {
    pub(super) fn new(dp: &Dataplane, show: usize, batch: u64) -> Self {
        let (vips, backends) = snapshot_window(dp);
        Fuzz {
            show,
            mismatches: Vec::new(),
            mismatch_count: 0,
            counter_mismatches: Vec::new(),
            table_mismatches: 0,
            aborted: 0,
            known: BTreeMap::new(),
            by_kind: BTreeMap::new(),
            by_reason: BTreeMap::new(),
            by_rule: BTreeMap::new(),
            extra: BTreeMap::new(),
            test_run_time: Duration::ZERO,
            batch_sums: Sums::default(),
            batch_frames: Vec::new(),
            batch_inputs: (batch <= 4).then(Vec::new),
            batch_dirty: false,
            window_sums: Sums::default(),
            window_dirty: false,
            base: Snapshot { stats: snapshot_stats(dp), vips, backends },
        }
    }

    /// New baselines (after a configuration change).
    pub(super) fn rebase(&mut self, dp: &Dataplane) {
        let (vips, backends) = snapshot_window(dp);
        self.base = Snapshot { stats: snapshot_stats(dp), vips, backends };
        self.batch_sums = Sums::default();
        self.window_sums = Sums::default();
        self.batch_frames.clear();
        self.batch_dirty = false;
        self.window_dirty = false;
    }

    fn mismatch(&mut self, text: String) {
        self.mismatch_count += 1;
        self.batch_dirty = true;
        self.window_dirty = true;
        if self.mismatches.len() < self.show {
            println!("MISMATCH {text}");
            self.mismatches.push(text);
        }
    }

    /// One frame: model, run, compare, then the connection table.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn case(
        &mut self,
        dp: &Dataplane,
        index: u64,
        phase: &str,
        model: &Model,
        kind: Kind,
        frame: &[u8],
        out: &mut Vec<u8>,
    ) {
        *self.by_kind.entry(kind).or_default() += 1;
        let expected = model.predict(frame, dp);
        // A known deviation that changes only the counter: this frame's
        // counters are read on their own to tell which reading the program took.
        let counter_only = expected
            .product
            .as_ref()
            .is_some_and(|(_, p)| p.verdict == expected.verdict && p.output == expected.output);
        if counter_only {
            self.end_batch(dp);
        }
        let t = Instant::now();
        let verdict = test_run_into(dp.balancer(), frame, out);
        self.test_run_time += t.elapsed();
        if verdict == XDP_ABORTED {
            self.aborted += 1;
        }
        let describe = |e: &Expected, out: &[u8]| {
            format!(
                "frame {index} ({kind:?}, phase {phase}), {} bytes:\n  input  {}\n  model  {}\n  kernel {}\n{}",
                frame.len(),
                hex(frame),
                e.summary(),
                verdict_name(verdict),
                hex_diff(&e.output, out)
            )
        };
        let matched = if verdict == expected.verdict && *out == expected.output {
            match &expected.product {
                Some((dev, product)) if counter_only => {
                    let now = snapshot_stats(dp);
                    let counted = |r: u32| now[r as usize].packets - self.base.stats[r as usize].packets;
                    if counted(expected.reason) == 0 && counted(product.reason) == 1 {
                        let example =
                            format!("{} (counted as {})", describe(&expected, out), stat_name(product.reason));
                        self.known.entry(*dev).or_insert_with(|| (0, example)).0 += 1;
                        product.as_ref()
                    } else {
                        &expected
                    }
                }
                _ => &expected,
            }
        } else if let Some((dev, product)) = &expected.product
            && verdict == product.verdict
            && *out == product.output
        {
            let entry = self.known.entry(*dev).or_insert_with(|| (0, describe(&expected, out)));
            entry.0 += 1;
            product.as_ref()
        } else {
            let text = describe(&expected, out);
            self.mismatch(text);
            return;
        };
        *self.by_reason.entry(matched.reason).or_default() += 1;
        *self.by_rule.entry(matched.rule).or_default() += 1;
        for (i, _) in matched.stats(0).into_iter().skip(1) {
            *self.extra.entry(i).or_default() += 1;
        }
        self.batch_sums.add(matched, frame.len() as u64);
        self.window_sums.add(matched, frame.len() as u64);
        self.batch_frames.push((index, kind, matched.reason));
        if let Some(inputs) = &mut self.batch_inputs {
            inputs.push(hex(frame));
        }
        self.check_table(dp, index, frame, matched);
        if counter_only {
            self.end_batch(dp);
        }
    }

    /// The connection table after the run: a flow taken from the ring is
    /// recorded with its backend; an ICMP error creates no entry.
    fn check_table(&mut self, dp: &Dataplane, index: u64, frame: &[u8], e: &Expected) {
        if let (Some(flow), Some(backend)) = (e.record, e.new_flow) {
            let got = dp.conntrack_backend(&flow).expect("reading CONNTRACK");
            if got != Some(backend) {
                self.table_mismatches += 1;
                let text = format!(
                    "frame {index}: flow {flow:?} should now be recorded with {backend}, the table has {got:?}\n  input {}",
                    hex(frame)
                );
                self.mismatch(text);
            }
        }
        if let Some(flow) = e.icmp_error_flow
            && e.conntrack == Some(stats::CONNTRACK_MISS)
        {
            let t = dp.trace(&flow).expect("trace").expect("a VIP flow");
            if t.conntrack_backend.is_some() || t.conntrack_stale {
                self.table_mismatches += 1;
                let text =
                    format!("frame {index}: an ICMP error created an entry for {flow:?}\n  input {}", hex(frame));
                self.mismatch(text);
            }
        }
    }

    /// Compares `STATS` with the batch's expected increments.
    pub(super) fn end_batch(&mut self, dp: &Dataplane) {
        let now = snapshot_stats(dp);
        if !self.batch_dirty {
            let mut diffs = Vec::new();
            for i in 0..stats::COUNT {
                let (p, b) = self.batch_sums.stats.get(&i).copied().unwrap_or_default();
                let got = (
                    now[i as usize].packets - self.base.stats[i as usize].packets,
                    now[i as usize].bytes - self.base.stats[i as usize].bytes,
                );
                if got != (p, b) {
                    diffs.push(format!(
                        "{}: expected +{p} packets/+{b} bytes, got +{}/+{}",
                        stat_name(i),
                        got.0,
                        got.1
                    ));
                }
            }
            if !diffs.is_empty() {
                let (first, last) = (self.batch_frames.first().map(|f| f.0), self.batch_frames.last().map(|f| f.0));
                let mut text = format!("STATS after frames {first:?}..={last:?}: {}", diffs.join("; "));
                if self.batch_frames.len() <= 4 {
                    let _ = write!(text, " (frames: {:?})", self.batch_frames);
                }
                if let Some(inputs) = &self.batch_inputs {
                    let _ = write!(text, "\n  input {}", inputs.join("\n  input "));
                }
                if self.counter_mismatches.len() < self.show {
                    println!("COUNTER MISMATCH {text}");
                }
                self.counter_mismatches.push(text);
            }
        }
        self.base.stats = now;
        self.batch_sums = Sums::default();
        self.batch_frames.clear();
        if let Some(inputs) = &mut self.batch_inputs {
            inputs.clear();
        }
        self.batch_dirty = false;
    }

    /// Compares the per-VIP and per-backend counters with the window's.
    pub(super) fn end_window(&mut self, dp: &Dataplane) {
        let (vips, backends) = snapshot_window(dp);
        if !self.window_dirty {
            let mut diffs = Vec::new();
            for (key, c) in &vips {
                let base = self.base.vips.get(key).copied().unwrap_or_default();
                let want = self.window_sums.vips.get(key).copied().unwrap_or_default();
                if (c.packets - base.packets, c.bytes - base.bytes) != want {
                    diffs.push(format!(
                        "VIP {key:?}: expected {want:?}, got +{}/+{}",
                        c.packets - base.packets,
                        c.bytes - base.bytes
                    ));
                }
            }
            for (key, c) in &backends {
                let base = self.base.backends.get(key).copied().unwrap_or_default();
                let want = self.window_sums.backends.get(key).copied().unwrap_or_default();
                let got = (c.0 - base.0, c.1 - base.1, c.2 - base.2);
                if got != want {
                    diffs.push(format!(
                        "backend {} of {:?}: expected (packets, bytes, new flows) {want:?}, got {got:?}",
                        key.1, key.0
                    ));
                }
            }
            for key in self.window_sums.vips.keys().filter(|k| !vips.contains_key(k)) {
                diffs.push(format!("VIP {key:?} counted by the model is not configured"));
            }
            if !diffs.is_empty() {
                let text = format!("per-VIP/backend counters: {}", diffs.join("; "));
                if self.counter_mismatches.len() < self.show {
                    println!("COUNTER MISMATCH {text}");
                }
                self.counter_mismatches.push(text);
            }
        }
        self.base.vips = vips;
        self.base.backends = backends;
        self.window_sums = Sums::default();
        self.window_dirty = false;
    }
}
