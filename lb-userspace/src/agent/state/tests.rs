use std::net::IpAddr;

use super::*;

const CFG: &str = r#"
[global]
nexthop_mac = "02:00:00:00:00:fe"
tunnel_source_v4 = "198.18.0.2"
[[vip]]
address = "198.18.100.1"
port = 80
protocol = "tcp"
health_check = { kind = "tcp" }
  [[vip.backend]]
  address = "198.18.0.11"
  weight = 3
  [[vip.backend]]
  address = "198.18.0.12"
  [[vip.backend]]
  address = "198.18.0.13"
"#;

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn down(cfg: &Config, backends: &[&str]) -> HashMap<Target, Health> {
    backends.iter().map(|b| (Target { vip: cfg.vips[0].key(), backend: addr(b) }, Health::Down)).collect()
}

fn weights(cfg: &Config) -> Vec<(IpAddr, u32)> {
    cfg.vips[0].backends.iter().map(|b| (b.address, b.weight)).collect()
}

#[test]
fn healthy_backends_keep_their_weights() {
    let cfg = Config::from_toml_str(CFG).unwrap();
    let eff = effective(&cfg, &HashMap::new(), &HashMap::new());
    assert_eq!(weights(&eff), vec![(addr("198.18.0.11"), 3), (addr("198.18.0.12"), 1), (addr("198.18.0.13"), 1)]);
}

#[test]
fn a_down_backend_is_removed_or_kept_as_configured() {
    let cfg = Config::from_toml_str(CFG).unwrap();
    let eff = effective(&cfg, &down(&cfg, &["198.18.0.12"]), &HashMap::new());
    assert_eq!(weights(&eff), vec![(addr("198.18.0.11"), 3), (addr("198.18.0.13"), 1)]);
    let keep = Config::from_toml_str(&CFG.replace("health_check", "on_down = \"keep\"\nhealth_check")).unwrap();
    let eff = effective(&keep, &down(&keep, &["198.18.0.12"]), &HashMap::new());
    assert_eq!(weights(&eff), vec![(addr("198.18.0.11"), 3), (addr("198.18.0.12"), 0), (addr("198.18.0.13"), 1)]);
}

#[test]
fn drain_and_maint() {
    let text = CFG
        .replace("weight = 3", "weight = 3\n  state = \"drain\"")
        .replace("address = \"198.18.0.13\"", "address = \"198.18.0.13\"\n  state = \"maint\"");
    let cfg = Config::from_toml_str(&text).unwrap();
    let eff = effective(&cfg, &HashMap::new(), &HashMap::new());
    assert_eq!(weights(&eff), vec![(addr("198.18.0.11"), 0), (addr("198.18.0.12"), 1)]);
}

#[test]
fn all_down_fails_open_or_drops() {
    let cfg = Config::from_toml_str(CFG).unwrap();
    let all = down(&cfg, &["198.18.0.11", "198.18.0.12", "198.18.0.13"]);
    assert_eq!(weights(&effective(&cfg, &all, &HashMap::new())), weights(&cfg));
    let drop = Config::from_toml_str(&CFG.replace("health_check", "all_down = \"drop\"\nhealth_check")).unwrap();
    assert!(effective(&drop, &all, &HashMap::new()).vips[0].backends.is_empty());
}

#[test]
fn unchecked_vips_ignore_health() {
    let cfg = Config::from_toml_str(&CFG.replace("health_check = { kind = \"tcp\" }\n", "")).unwrap();
    let eff = effective(&cfg, &down(&cfg, &["198.18.0.12"]), &HashMap::new());
    assert_eq!(weights(&eff), weights(&cfg));
}

#[test]
fn weight_factors_scale_round_up_and_keep_at_least_one() {
    let f = |agent_pct, slowstart_pct, hotspot_pct| WeightFactors { agent_pct, slowstart_pct, hotspot_pct };
    assert_eq!(WeightFactors::default().apply(7), 7);
    assert_eq!(f(50, 100, 100).apply(10), 5);
    assert_eq!(f(50, 50, 100).apply(10), 3, "10 * 0.5 = 5, * 0.5 = 2.5, rounded up");
    assert_eq!(f(100, 1, 100).apply(10), 1, "a ramp that has barely begun still gets a flow");
    assert_eq!(f(100, 100, 0).apply(10), 0);
    assert_eq!(f(0, 100, 100).apply(10), 0, "an agent reporting 0% takes no new flows");
    assert_eq!(f(100, 100, 100).apply(0), 0);
    assert_eq!(f(200, 100, 100).apply(crate::config::MAX_WEIGHT), crate::config::MAX_WEIGHT);
}
