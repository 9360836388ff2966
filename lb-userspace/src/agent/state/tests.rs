use std::net::IpAddr;

use super::*;

pub(crate) const CFG: &str = r#"
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
    let f = |agent_pct, slowstart_pct, hotspot_pct| WeightFactors {
        agent_pct,
        slowstart_pct,
        hotspot_pct,
        ..Default::default()
    };
    assert_eq!(WeightFactors::default().apply(7), 7);
    assert_eq!(f(50, 100, 100).apply(10), 5);
    assert_eq!(f(50, 50, 100).apply(10), 3, "10 * 0.5 = 5, * 0.5 = 2.5, rounded up");
    assert_eq!(f(100, 1, 100).apply(10), 1, "a ramp that has barely begun still gets a flow");
    assert_eq!(f(100, 100, 0).apply(10), 0);
    assert_eq!(f(0, 100, 100).apply(10), 0, "an agent reporting 0% takes no new flows");
    assert_eq!(f(100, 100, 100).apply(0), 0);
    assert_eq!(f(200, 100, 100).apply(crate::config::MAX_WEIGHT), crate::config::MAX_WEIGHT);
}

// ---- The agent check's word over the operator's ----

fn agent(cfg: &Config, backend: &str, admin: AgentAdmin, down: bool, pct: u32) -> HashMap<Target, WeightFactors> {
    let f = WeightFactors { agent_pct: pct, agent_admin: admin, agent_down: down, ..Default::default() };
    HashMap::from([(Target { vip: cfg.vips[0].key(), backend: addr(backend) }, f)])
}

#[test]
fn the_stricter_admin_state_applies() {
    use AdminState::*;
    let all = [(Up, AgentAdmin::Ready, Up), (Up, AgentAdmin::Drain, Drain), (Up, AgentAdmin::Maint, Maint)];
    let operator_wins =
        [(Drain, AgentAdmin::Ready, Drain), (Maint, AgentAdmin::Ready, Maint), (Maint, AgentAdmin::Drain, Maint)];
    for (operator, agent, want) in all.into_iter().chain(operator_wins).chain([(Drain, AgentAdmin::Maint, Maint)]) {
        assert_eq!(admin_state(operator, agent), want, "operator {operator:?}, agent {agent:?}");
    }
}

#[test]
fn agent_drain_maint_down_and_weight_overlay_placement() {
    let cfg = Config::from_toml_str(CFG).unwrap();
    let no_health = HashMap::new();
    let b = "198.18.0.11";
    let eff = |f| weights(&effective(&cfg, &no_health, &f));
    // Weights 3 and 1 (the default): a factor scales the VIP's weights by 100
    // first, so that a percentage works for weight 1 too.
    let half = eff(agent(&cfg, b, AgentAdmin::Ready, false, 50));
    assert_eq!(half[0], (addr(b), 150), "3 * 100 * 50%");
    assert!(half[1..].iter().all(|&(_, w)| w == 100), "{half:?}");
    assert_eq!(eff(agent(&cfg, b, AgentAdmin::Drain, false, 50))[0], (addr(b), 0), "drained: kept, no new flows");
    assert!(!eff(agent(&cfg, b, AgentAdmin::Maint, false, 100)).iter().any(|(a, _)| *a == addr(b)), "maint: removed");
    assert!(!eff(agent(&cfg, b, AgentAdmin::Ready, true, 100)).iter().any(|(a, _)| *a == addr(b)), "down: removed");
    // An operator's maintenance stays whatever the agent says.
    let maint = Config::from_toml_str(&CFG.replace("weight = 3", "weight = 3\n  state = \"maint\"")).unwrap();
    let f = agent(&maint, b, AgentAdmin::Ready, false, 100);
    assert!(!weights(&effective(&maint, &no_health, &f)).iter().any(|(a, _)| *a == addr(b)));
    let taking = taking_new_flows(&cfg, &no_health, &agent(&cfg, b, AgentAdmin::Drain, false, 100));
    assert_eq!(taking.len(), 2, "a drained backend takes no new flows: {taking:?}");
}
