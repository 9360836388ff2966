//! Differential fuzzing of `lb_balancer` against the reference model
//! (`lb_tests::model`) through BPF_PROG_TEST_RUN: generated frames (valid
//! packets of every kind, the same truncated at every length, random bytes,
//! mutated packets, odd header lengths, VLAN stacks of 0-5 tags, IPv6
//! extension headers, ICMP errors quoting VIP flows, echo requests, packets
//! around the MTU) go through the real program one at a time, each run with
//! a fresh copy of its frame, and the verdict and output bytes must equal
//! the model's; the `STATS` counters are compared per batch (packets and
//! bytes of every reason), the per-VIP and per-backend counters per window,
//! and the connection table after every packet that must (or must not)
//! record a flow. Frames addressed to another MAC than the interface's
//! exercise `pass_other_host`. The configuration changes twice on the way (backends
//! removed, added, drained; the MTU lowered to 1280; `too_big = "drop"`;
//! VIPs removed and added), so the connection table holds entries that
//! disagree with the rings and entries whose backend is gone.
//!
//! Knobs (environment):
//! - `LB_FUZZ_CASES=N`: frames to run (default [`DEFAULT_CASES`], 8-10 s on
//!   the 2-core VM: ~45-55k frames/s end to end); `LB_FUZZ_CASES=5000000` is
//!   the long run (~95 s).
//! - `LB_FUZZ_SEED=S` (decimal or 0x-hex): the seed; default from the clock.
//!   The seed and `N` are printed: together they reproduce a run exactly.
//! - `LB_FUZZ_BATCH=N`: frames per `STATS` comparison (default 256); 1 ties
//!   a counter mismatch to its frame.
//! - `LB_FUZZ_SHOW=N`: mismatches printed in full (default 8).
//!
//! Frames the program reads differently from the spec in a known way (see
//! `lb_tests::model::Deviation`) are counted apart and fail the test at the
//! end with a `PRODUCT BUG` message and one example, after every other check.
//!
//! Also here, without root: every seed-corpus file of the cargo-fuzz
//! targets (`tests/fuzz-corpus/<target>/`) through the same target bodies
//! (`fuzz/src/lib.rs`), so CI covers the corpus without cargo-fuzz.

use std::path::PathBuf;
use std::time::Instant;

use lb::config::Config;
use lb::dataplane::Dataplane;
use lb_common::stats;
use lb_tests::model::{Model, stat_name};
use lb_tests::netns::is_root;

#[path = "model_fuzz/compare.rs"]
mod compare;
#[path = "model_fuzz/counters.rs"]
mod counters;
#[path = "model_fuzz/generate.rs"]
mod generate;
#[path = "model_fuzz/mangle.rs"]
mod mangle;
#[path = "model_fuzz/phases.rs"]
mod phases;
#[path = "model_fuzz/protocols.rs"]
mod protocols;
#[path = "model_fuzz/report.rs"]
mod report;
use compare::Fuzz;
use generate::Gen;
use phases::{PHASES, config};
use report::print_summary;

#[path = "../../fuzz/src/lib.rs"]
mod host_parsers;

/// Frames of the default slice (`cargo xtask test`).
const DEFAULT_CASES: u64 = 400_000;
const DEFAULT_BATCH: u64 = 256;
/// Batches between two comparisons of the per-VIP and per-backend counters.
const WINDOW_BATCHES: u64 = 32;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim().replace('_', "");
    let parsed = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={v}: {e}")))
}

/// Verdict reasons a run of the default size must reach (the generators'
/// coverage); the others (`drop_encap`, `drop_bad_backend`, insert
/// failures, the flood guard) cannot happen with this configuration.
const MUST_SEE: [u32; 18] = [
    stats::PASS_NON_IP,
    stats::PASS_OTHER_HOST,
    stats::PASS_NOT_VIP,
    stats::PASS_VLAN_DEPTH,
    stats::DROP_MALFORMED,
    stats::DROP_FRAGMENT,
    stats::DROP_IP_OPTIONS,
    stats::DROP_IPV6_EXT,
    stats::DROP_NO_BACKEND,
    stats::CONNTRACK_HIT,
    stats::CONNTRACK_MISS,
    stats::CONNTRACK_REPICK,
    stats::TX_IPIP,
    stats::TX_L2DSR,
    stats::TX_ICMP_TOO_BIG,
    stats::DROP_TOO_BIG,
    stats::TX_ICMP_ECHO_REPLY,
    stats::ICMP_ERROR_FORWARDED,
];

#[test]
fn the_kernel_matches_the_model() {
    if !is_root() {
        eprintln!("SKIP the_kernel_matches_the_model: BPF_PROG_TEST_RUN of XDP programs needs root");
        return;
    }
    let cases = env_u64("LB_FUZZ_CASES").unwrap_or(DEFAULT_CASES);
    let seed = env_u64("LB_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    let batch = env_u64("LB_FUZZ_BATCH").unwrap_or(DEFAULT_BATCH).max(1);
    let show = env_u64("LB_FUZZ_SHOW").unwrap_or(8) as usize;
    println!(
        "model_fuzz: seed {seed:#x}, {cases} frames, STATS compared every {batch} frames\n\
         model_fuzz: reproduce with LB_FUZZ_SEED={seed:#x} LB_FUZZ_CASES={cases} \
         cargo test -p lb-tests --test model_fuzz -- --nocapture"
    );

    let mut dp = Dataplane::load().expect("loading the balancer");
    let mut frames = Gen::new(seed);
    let mut out = Vec::with_capacity(4096);
    let started = Instant::now();
    let mut f = Fuzz::new(&dp, show, batch);
    let mut summary = Vec::new();
    for (p, (name, start, rows, mtu, too_big)) in PHASES.iter().enumerate() {
        let end = PHASES.get(p + 1).map_or(cases, |next| (cases as f64 * next.1) as u64);
        let first = (cases as f64 * start) as u64;
        let cfg = config(rows, *mtu, too_big);
        dp.apply(&cfg).expect("applying the configuration");
        let model = Model::new(&cfg);
        // Counters are compared within a phase (backends come and go between).
        f.rebase(&dp);
        for i in first..end {
            let (kind, frame) = frames.next();
            f.case(&dp, i, name, &model, kind, &frame, &mut out);
            if (i - first + 1).is_multiple_of(batch) {
                f.end_batch(&dp);
                if (i - first + 1).is_multiple_of(batch * WINDOW_BATCHES) {
                    f.end_window(&dp);
                }
            }
        }
        f.end_batch(&dp);
        f.end_window(&dp);
        summary.push(format!("phase {name} (mtu {mtu}, too_big {too_big}): frames {first}..{end}"));
    }
    let elapsed = started.elapsed();
    print_summary(&f, cases, elapsed, &summary);

    assert_eq!(f.aborted, 0, "XDP_ABORTED returned {} times (seed {seed:#x})", f.aborted);
    assert!(
        f.mismatch_count == 0,
        "{} frames where the kernel and the model disagree (seed {seed:#x}, {cases} frames); the first:\n{}",
        f.mismatch_count,
        f.mismatches.join("\n")
    );
    assert!(
        f.counter_mismatches.is_empty(),
        "{} counter mismatches (seed {seed:#x}; LB_FUZZ_BATCH=1 ties one to its frame); the first:\n{}",
        f.counter_mismatches.len(),
        f.counter_mismatches.iter().take(show).cloned().collect::<Vec<_>>().join("\n")
    );
    if cases >= 50_000 {
        let missing: Vec<&str> = MUST_SEE
            .iter()
            .filter(|r| f.by_reason.get(r).or(f.extra.get(r)).copied().unwrap_or(0) == 0)
            .map(|r| stat_name(*r))
            .collect();
        assert!(missing.is_empty(), "the generators never reached: {missing:?} (seed {seed:#x})");
    }
    // Known product bugs: the model states the spec; these fail until the
    // program is fixed, each with one example.
    let bugs: Vec<String> = f
        .known
        .iter()
        .map(|(d, (n, example))| format!("PRODUCT BUG ({n} frames): {}\n  example {example}", d.describe()))
        .collect();
    assert!(bugs.is_empty(), "{}", bugs.join("\n"));
}

// ---------------------------------------------------------------------------
// The seed corpus of the cargo-fuzz targets

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz-corpus")
}

#[test]
fn the_seed_corpus_goes_through_the_host_parsers() {
    let (mut total, mut failures) = (0, Vec::new());
    for (name, target) in host_parsers::TARGETS {
        let dir = corpus_dir().join(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no seed corpus for {name} in {}", dir.display());
        for file in &files {
            let data = std::fs::read(file).unwrap();
            if let Err(panic) = std::panic::catch_unwind(|| target(&data)) {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{name} {}: {message}", file.display()));
            }
        }
        total += files.len();
    }
    println!("seed corpus: {total} files through {} targets", host_parsers::TARGETS.len());
    assert!(failures.is_empty(), "seed-corpus inputs that make a target fail:\n{}", failures.join("\n"));
}

#[test]
fn the_seed_corpus_has_valid_configurations() {
    // The corpus must reach past the parsers into validation: some files
    // are accepted, some rejected with a message naming the key.
    let dir = corpus_dir().join("config_toml");
    let (mut ok, mut rejected) = (0, 0);
    for file in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap_or_default();
        match Config::from_toml_str(&text) {
            Ok(_) => ok += 1,
            Err(_) => rejected += 1,
        }
    }
    assert!(ok >= 3 && rejected >= 3, "config corpus: {ok} accepted, {rejected} rejected");
}
