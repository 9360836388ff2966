//! The end-of-run summary the fuzzer prints: speed, generators, reasons and rules reached, mismatches.

use std::time::Duration;

use lb_tests::model::stat_name;

use super::compare::Fuzz;

/// Prints what the run did; the test asserts on the same numbers afterwards.
pub(super) fn print_summary(f: &Fuzz, cases: u64, elapsed: Duration, summary: &[String]) {
    let per_sec = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);

    println!("model_fuzz: {}", summary.join(", "));
    println!(
        "model_fuzz: {cases} frames in {:.1} s: {:.0} frames/s end to end (model, map reads, counters); \
         BPF_PROG_TEST_RUN alone {:.0} runs/s ({:.2} us each)",
        elapsed.as_secs_f64(),
        per_sec(cases, elapsed),
        per_sec(cases, f.test_run_time),
        f.test_run_time.as_secs_f64() * 1e6 / cases.max(1) as f64
    );
    let kinds: Vec<String> = f.by_kind.iter().map(|(k, n)| format!("{k:?} {n}")).collect();
    println!("model_fuzz: frames by generator: {}", kinds.join(", "));
    let reasons: Vec<String> = f.by_reason.iter().map(|(r, n)| format!("{} {n}", stat_name(*r))).collect();
    println!("model_fuzz: verdict reasons: {}", reasons.join(", "));
    let extra: Vec<String> = f.extra.iter().map(|(r, n)| format!("{} {n}", stat_name(*r))).collect();
    println!("model_fuzz: also counted: {}", extra.join(", "));
    let rules: Vec<String> = f.by_rule.iter().map(|(r, n)| format!("{r}: {n}")).collect();
    println!("model_fuzz: README rules reached ({}):\n  {}", rules.len(), rules.join("\n  "));
    let known: u64 = f.known.values().map(|k| k.0).sum();
    println!(
        "model_fuzz: {} mismatches (verdict/output/table: {}, of which table {}), {} counter mismatches, \
         {} XDP_ABORTED, {known} frames hit a known product deviation",
        f.mismatch_count + f.counter_mismatches.len() as u64,
        f.mismatch_count,
        f.table_mismatches,
        f.counter_mismatches.len(),
        f.aborted
    );
}
