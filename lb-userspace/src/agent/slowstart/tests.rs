use std::net::IpAddr;

use super::*;

/// The state tests' VIP (three backends), with slow start instead of a check.
fn config(slowstart_ms: u64) -> Config {
    let text = crate::agent::state::tests::CFG
        .replace("health_check = { kind = \"tcp\" }", &format!("slowstart_ms = {slowstart_ms}"));
    Config::from_toml_str(&text).unwrap()
}

const MS: fn(u64) -> Duration = Duration::from_millis;

fn target(cfg: &Config, b: &str) -> Target {
    Target { vip: cfg.vips[0].key(), backend: b.parse::<IpAddr>().unwrap() }
}

#[test]
fn ramp_steps_from_at_least_one_percent_to_full() {
    let length = MS(1000);
    assert_eq!((steps(length), step_length(length)), (10, MS(100)));
    let seen: Vec<_> = (0..11).map(|k| pct_at(MS(100 * k), length)).collect();
    let mut want: Vec<_> = (0..10).map(|k| Some(if k == 0 { 1 } else { 10 * k })).collect();
    want.push(None);
    assert_eq!(seen, want);
    // Within a step the percentage holds.
    assert_eq!(pct_at(MS(199), length), Some(10));
}

#[test]
fn short_ramps_take_fewer_steps_of_at_least_the_minimum() {
    assert_eq!((steps(MS(300)), step_length(MS(300))), (3, MS(100)));
    assert_eq!([0, 100, 200, 300].map(|t| pct_at(MS(t), MS(300))), [Some(1), Some(34), Some(67), None]);
    assert_eq!(steps(MS(50)), 1, "shorter than a step: one step at the minimum weight");
    assert_eq!([0, 49, 50].map(|t| pct_at(MS(t), MS(50))), [Some(1), Some(1), None]);
    assert_eq!((steps(MS(60_000)), step_length(MS(60_000))), (MAX_STEPS, MS(6_000)));
}

#[test]
fn nothing_ramps_at_start_then_a_returning_backend_does() {
    let cfg = config(1000);
    let (b1, b2) = (target(&cfg, "198.18.0.11"), target(&cfg, "198.18.0.12"));
    let t0 = Instant::now();
    let mut s = SlowStart::default();
    let mut factors = HashMap::new();
    s.observe(&cfg, HashSet::from([b1, b2]), t0);
    s.apply(&mut factors, t0);
    assert!(factors.values().all(WeightFactors::is_neutral), "{factors:?}");
    assert_eq!(s.next_step(t0), None, "no ramp: the timer is not armed");

    // b2 leaves the table and comes back.
    s.observe(&cfg, HashSet::from([b1]), t0 + MS(10));
    s.observe(&cfg, HashSet::from([b1, b2]), t0 + MS(20));
    let mut seen = Vec::new();
    let mut now = t0 + MS(20);
    loop {
        s.apply(&mut factors, now);
        seen.push(factors[&b2].slowstart_pct);
        let Some(next) = s.next_step(now) else { break };
        assert!(next > now && next - now <= MS(100), "next step {:?} after now", next - now);
        now = next;
        assert!(seen.len() <= 11, "the ramp does not end: {seen:?}");
    }
    assert_eq!(seen, vec![1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    assert_eq!(factors[&b2].slowstart_pct, 100);
    assert_eq!(factors.get(&b1).map_or(100, |f| f.slowstart_pct), 100);
    assert_eq!(s.next_step(now), None);
}

#[test]
fn a_ramp_ends_when_its_backend_leaves_or_slow_start_is_off() {
    let cfg = config(1000);
    let (b1, b2) = (target(&cfg, "198.18.0.11"), target(&cfg, "198.18.0.12"));
    let t0 = Instant::now();
    let mut s = SlowStart::default();
    let mut factors = HashMap::new();
    s.observe(&cfg, HashSet::from([b1]), t0);
    s.observe(&cfg, HashSet::from([b1, b2]), t0);
    s.apply(&mut factors, t0 + MS(250));
    assert_eq!(factors[&b2].slowstart_pct, 20);
    s.observe(&cfg, HashSet::from([b1]), t0 + MS(300));
    s.apply(&mut factors, t0 + MS(300));
    assert_eq!(factors[&b2].slowstart_pct, 100, "left the table: no ramp");

    s.observe(&cfg, HashSet::from([b1, b2]), t0 + MS(400));
    let off = config(0);
    s.observe(&off, HashSet::from([b1, b2]), t0 + MS(450));
    s.apply(&mut factors, t0 + MS(450));
    assert_eq!(factors[&b2].slowstart_pct, 100);
    assert_eq!(s.next_step(t0 + MS(450)), None);
    // And with slow start off, nothing ramps.
    s.observe(&off, HashSet::from([b1]), t0 + MS(500));
    s.observe(&off, HashSet::from([b1, b2]), t0 + MS(600));
    assert_eq!(s.next_step(t0 + MS(600)), None);
}

#[test]
fn the_first_backend_of_an_empty_vip_is_not_ramped() {
    let cfg = config(1000);
    let (b1, b2) = (target(&cfg, "198.18.0.11"), target(&cfg, "198.18.0.12"));
    let t0 = Instant::now();
    let mut s = SlowStart::default();
    s.observe(&cfg, HashSet::new(), t0);
    s.observe(&cfg, HashSet::from([b1]), t0);
    assert_eq!(s.next_step(t0), None, "b1 takes every flow at any weight");
    s.observe(&cfg, HashSet::from([b1, b2]), t0);
    assert!(s.next_step(t0).is_some(), "b2 joins a VIP that has b1: ramped");
}
