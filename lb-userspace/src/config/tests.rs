use super::*;
use lb_common::{DEFAULT_RING_SIZE, LC_MAX_CANDIDATES};

pub(super) const GOOD: &str = r#"
[global]
interface = "eth0"
nexthop_mac = "02:00:00:00:00:fe"
tunnel_source_v4 = "198.18.0.2"

[[vip]]
address = "198.18.100.1"
port = 80
protocol = "tcp"

  [[vip.backend]]
  address = "198.18.0.11"
  weight = 2

  [[vip.backend]]
  address = "198.18.0.12"

[[vip]]
address = "2001:db8:100::1"
port = 443
protocol = "tcp"
forwarding = "l2dsr"
ring_size = 251

  [[vip.backend]]
  address = "2001:db8::11"
  mac = "02:00:00:00:11:01"
"#;

/// The least `[global]` a valid file needs: tests of one table append theirs.
pub(super) const MINIMAL_GLOBAL: &str =
    "[global]\nnexthop_mac = \"02:00:00:00:00:fe\"\ntunnel_source_v4 = \"198.18.0.2\"\n";

/// The key a validation error names (or the whole message of another error).
pub(super) fn key_of(e: ConfigError) -> String {
    match e {
        ConfigError::Invalid { key, .. } => key,
        other => other.to_string(),
    }
}

pub(super) fn err(text: &str) -> String {
    Config::from_toml_str(text).unwrap_err().to_string()
}

#[test]
fn parses_a_good_file() {
    let c = Config::from_toml_str(GOOD).unwrap();
    assert_eq!(c.vips.len(), 2);
    assert_eq!(c.vips[0].ring_size, DEFAULT_RING_SIZE);
    assert_eq!(c.vips[0].forwarding, Forwarding::Ipip);
    assert_eq!(c.vips[0].backends[0].weight, 2);
    assert_eq!(c.vips[0].backends[1].weight, 1);
    assert_eq!(c.vips[1].forwarding, Forwarding::L2dsr);
    assert_eq!(c.vips[1].backends[0].mac, Some(Mac([2, 0, 0, 0, 0x11, 1])));
    assert_eq!(c.global.xdp_mode, XdpModeSetting::Native);
}

#[test]
fn unknown_keys_are_errors() {
    let e = err(&GOOD.replace("weight = 2", "wieght = 2"));
    assert!(e.contains("wieght"), "{e}");
}

#[test]
fn ipip_needs_nexthop_and_tunnel_source() {
    let e = err(&GOOD.replace("nexthop_mac = \"02:00:00:00:00:fe\"\n", ""));
    assert!(e.starts_with("global.nexthop_mac: required"), "{e}");
    let e = err(&GOOD.replace("tunnel_source_v4 = \"198.18.0.2\"\n", ""));
    assert!(e.starts_with("global.tunnel_source_v4: required"), "{e}");
}

#[test]
fn l2dsr_needs_backend_macs() {
    let e = err(&GOOD.replace("  mac = \"02:00:00:00:11:01\"\n", ""));
    assert_eq!(e, "vip[1].backend[0].mac: required: the VIP uses l2dsr forwarding");
}

#[test]
fn bad_values_name_their_key() {
    assert!(err(&GOOD.replace("ring_size = 251", "ring_size = 250")).starts_with("vip[1].ring_size:"));
    assert!(err(&GOOD.replace("ring_size = 251", "ring_size = 65539")).starts_with("vip[1].ring_size:"));
    assert!(err(&GOOD.replace("port = 443", "port = 0")).starts_with("vip[1].port:"));
    assert!(
        err(&GOOD.replace("address = \"2001:db8::11\"", "address = \"198.18.0.13\""))
            .starts_with("vip[1].backend[0].address:")
    );
    assert!(err(&GOOD.replace("address = \"198.18.0.12\"", "address = \"198.18.0.11\"")).contains("listed twice"));
    assert!(err(&GOOD.replace("weight = 2", "weight = 10001")).starts_with("vip[0].backend[0].weight:"));
    assert!(err(&GOOD.replace("02:00:00:00:00:fe", "02:00:00:00:fe")).starts_with("global.nexthop_mac:"));
    assert!(err(&GOOD.replace("protocol = \"tcp\"", "protocol = \"sctp\"")).contains("sctp"));
}

#[test]
fn duplicate_vips_are_rejected() {
    let dup = format!("{GOOD}\n[[vip]]\naddress = \"198.18.100.1\"\nport = 80\nprotocol = \"tcp\"\n");
    let e = err(&dup);
    assert_eq!(e, "vip[2]: 198.18.100.1:80/tcp is configured twice");
}

#[test]
fn primes() {
    assert!(is_prime(65537) && is_prime(251) && is_prime(2));
    assert!(!is_prime(65535) && !is_prime(1) && !is_prime(0));
}

#[test]
fn the_shipped_example_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/lb.toml");
    let c = Config::load(std::path::Path::new(path)).unwrap();
    assert_eq!(c.vips.len(), 3);
}

#[test]
fn nexthop_auto_is_accepted() {
    let c = Config::from_toml_str(&GOOD.replace("\"02:00:00:00:00:fe\"", "\"auto\"")).unwrap();
    assert_eq!(c.global.nexthop_mac, Some(NextHop::Auto));
    let e = err(&GOOD.replace("\"02:00:00:00:00:fe\"", "\"automatic\""));
    assert!(e.starts_with("global.nexthop_mac:") && e.contains("\"auto\""), "{e}");
}

#[test]
fn mtu_and_too_big() {
    let c = Config::from_toml_str(&GOOD.replace("[global]\n", "[global]\nmtu = 9000\ntoo_big = \"drop\"\n")).unwrap();
    assert_eq!((c.global.mtu, c.global.too_big), (Some(9000), TooBig::Drop));
    let c = Config::from_toml_str(GOOD).unwrap();
    assert_eq!((c.global.mtu, c.global.too_big), (None, TooBig::Icmp));
    assert!(err(&GOOD.replace("[global]\n", "[global]\nmtu = 1000\n")).starts_with("global.mtu:"));
    assert!(err(&GOOD.replace("[global]\n", "[global]\ntoo_big = \"fragment\"\n")).contains("fragment"));
}

#[test]
fn macs_are_six_pairs_of_hex_digits() {
    assert_eq!("02:00:00:00:00:0a".parse::<Mac>(), Ok(Mac([2, 0, 0, 0, 0, 10])));
    for bad in ["+2:+0:00:00:00:01", "02:00:00:00:00", "02:00:00:00:00:001", "0g:00:00:00:00:01", ""] {
        assert!(bad.parse::<Mac>().is_err(), "{bad:?} accepted");
    }
}

#[test]
fn full_tables_are_refused_before_anything_is_applied() {
    // 512 VIPs: the 513th through the API is refused with the limit named.
    let mut text = String::from("[global]\nforwarding = \"l2dsr\"\n");
    for i in 0..MAX_VIPS {
        text.push_str(&format!(
            "[[vip]]\naddress = \"198.18.{}.{}\"\nport = 80\nprotocol = \"udp\"\n",
            100 + i / 250,
            i % 250 + 1
        ));
    }
    let full = Config::from_toml_str(&text).unwrap();
    let spec: VipSpec = toml::from_str("address = \"198.19.0.1\"\nport = 80\nprotocol = \"udp\"").unwrap();
    let e = full.with_vip(spec).unwrap_err().to_string();
    assert_eq!(e, format!("vip: {} VIPs configured, at most {MAX_VIPS}", MAX_VIPS + 1));

    // 4096 backend entries: one more is refused.
    let mut text = String::from("[global]\nforwarding = \"l2dsr\"\n");
    for v in 0..2 {
        text.push_str(&format!("[[vip]]\naddress = \"198.18.100.{}\"\nport = 80\nprotocol = \"tcp\"\n", v + 1));
        for b in 0..MAX_BACKENDS / 2 {
            text.push_str(&format!(
                "[[vip.backend]]\naddress = \"198.18.{}.{}\"\nmac = \"02:00:00:00:00:01\"\n",
                b / 250,
                b % 250 + 1
            ));
        }
    }
    let full = Config::from_toml_str(&text).unwrap();
    let id: VipId = "198.18.100.1:80/tcp".parse().unwrap();
    let extra = BackendSpec {
        address: "198.19.0.1".parse().unwrap(),
        weight: None,
        mac: Some("02:00:00:00:00:02".into()),
        state: None,
    };
    let backend = extra.validate("backend", id.address, Forwarding::L2dsr).unwrap();
    let e = full
        .with_backends(&id, |list| {
            list.push(backend);
            Ok(())
        })
        .unwrap_err()
        .to_string();
    assert_eq!(e, format!("vip.backend: {} backends over all VIPs, at most {MAX_BACKENDS}", MAX_BACKENDS + 1));
}

#[test]
fn algorithm_defaults_to_maglev_and_parses() {
    let c = Config::from_toml_str(GOOD).unwrap();
    assert_eq!((c.vips[0].algorithm, c.vips[0].per_instance), (Algorithm::Maglev, false));
    let c = Config::from_toml_str(&GOOD.replace("port = 80\n", "port = 80\nalgorithm = \"source-hash\"\n")).unwrap();
    assert_eq!(c.vips[0].algorithm, Algorithm::SourceHash);
    assert_eq!(c.vips[0].algorithm.to_string(), "source-hash");
    assert_eq!("source-hash".parse::<Algorithm>(), Ok(Algorithm::SourceHash));
    assert!("random".parse::<Algorithm>().unwrap_err().contains("not an algorithm"));
    let e = err(&GOOD.replace("port = 80\n", "port = 80\nalgorithm = \"random\"\n"));
    assert!(e.contains("random") && e.contains("source-hash"), "{e}");
    for a in [Algorithm::Maglev, Algorithm::SourceHash, Algorithm::RoundRobin, Algorithm::LeastConnections] {
        assert_eq!(Algorithm::from_code(a.code()), a);
    }
}

#[test]
fn per_instance_algorithms_need_an_acknowledgement_with_bgp() {
    let rr = GOOD.replace("port = 80\n", "port = 80\nalgorithm = \"round-robin\"\n");
    // Without [bgp]: accepted, with a warning naming the VIP.
    let c = Config::from_toml_str(&rr).unwrap();
    assert_eq!(c.vips[0].algorithm, Algorithm::RoundRobin);
    assert!(c.vips[0].algorithm.per_instance() && !Algorithm::SourceHash.per_instance());
    let w = c.per_instance_warnings();
    assert_eq!(w.len(), 1);
    assert!(w[0].starts_with("198.18.100.1:80/tcp uses round-robin") && w[0].contains("per_instance = true"));
    // With [bgp]: refused until acknowledged.
    let e = err(&format!("{rr}\n[bgp]\n"));
    assert!(e.starts_with("vip[0].per_instance: 198.18.100.1:80/tcp uses round-robin"), "{e}");
    assert!(e.contains("ECMP") && e.contains("per_instance = true"), "{e}");
    let acked = rr.replace("algorithm = \"round-robin\"\n", "algorithm = \"round-robin\"\nper_instance = true\n");
    let c = Config::from_toml_str(&format!("{acked}\n[bgp]\n")).unwrap();
    assert!(c.vips[0].per_instance && c.per_instance_warnings().is_empty());
    // The same rule for a VIP added through the API.
    let with_bgp = Config::from_toml_str(&format!("{GOOD}\n[bgp]\n")).unwrap();
    let spec: VipSpec =
        toml::from_str("address = \"198.19.0.1\"\nport = 80\nprotocol = \"tcp\"\nalgorithm = \"round-robin\"").unwrap();
    let e = with_bgp.with_vip(spec).unwrap_err().to_string();
    assert!(e.starts_with("vip[2].per_instance:"), "{e}");
}

#[test]
fn least_connections_is_bounded_and_counting_keys_have_defaults() {
    let lc = GOOD.replace("port = 80\n", "port = 80\nalgorithm = \"least-connections\"\n");
    let c = Config::from_toml_str(&lc).unwrap();
    assert_eq!(c.vips[0].algorithm, Algorithm::LeastConnections);
    assert!(c.vips[0].algorithm.per_instance());
    let g = &c.global;
    assert_eq!((g.active_reconcile_ms, g.tcp_idle_timeout_s, g.udp_idle_timeout_s), (1000, 300, 30));
    let mut many = lc.clone();
    for i in 0..LC_MAX_CANDIDATES {
        many.push_str(&format!("  [[vip.backend]]\n  address = \"198.19.{}.{}\"\n", i / 250, i % 250 + 1));
    }
    // Appended to the last VIP (the IPv6 one): move them to a least-connections v4 VIP.
    let many = many.replace("[[vip]]\naddress = \"2001:db8:100::1\"", "[[vip]]\naddress = \"198.18.100.9\"");
    let many = many.replace("forwarding = \"l2dsr\"\nring_size = 251\n", "algorithm = \"least-connections\"\n");
    let many =
        many.replace("address = \"2001:db8::11\"\n  mac = \"02:00:00:00:11:01\"\n", "address = \"198.18.0.99\"\n");
    let e = err(&many);
    assert!(e.starts_with("vip[1].backend: 257 backends; a least-connections VIP may have at most 256"), "{e}");
    let keys = "[global]\nactive_reconcile_ms = 250\ntcp_idle_timeout_s = 600\nudp_idle_timeout_s = 5\n";
    let c = Config::from_toml_str(&GOOD.replace("[global]\n", keys)).unwrap();
    let g = &c.global;
    assert_eq!((g.active_reconcile_ms, g.tcp_idle_timeout_s, g.udp_idle_timeout_s), (250, 600, 5));
    for (bad, key) in [
        ("active_reconcile_ms = 10", "global.active_reconcile_ms"),
        ("tcp_idle_timeout_s = 0", "global.tcp_idle_timeout_s"),
        ("udp_idle_timeout_s = 86401", "global.udp_idle_timeout_s"),
    ] {
        let e = err(&GOOD.replace("[global]\n", &format!("[global]\n{bad}\n")));
        assert!(e.starts_with(key), "{bad}: {e}");
    }
}

#[test]
fn conntrack_capacity_has_a_default_a_range_and_is_a_power_of_two() {
    let c = Config::from_toml_str(GOOD).unwrap();
    assert_eq!(c.global.conntrack_capacity, lb_common::CONNTRACK_CAPACITY);
    let small = GOOD.replace("[global]\n", "[global]\nconntrack_capacity = 65536\n");
    assert_eq!(Config::from_toml_str(&small).unwrap().global.conntrack_capacity, 65536);
    for bad in ["conntrack_capacity = 1023", "conntrack_capacity = 16777217"] {
        let e = err(&GOOD.replace("[global]\n", &format!("[global]\n{bad}\n")));
        assert!(e.starts_with("global.conntrack_capacity: "), "{bad}: {e}");
        assert!(e.contains("must be from 1024 to 16777216"), "{e}");
    }
    let e = err(&GOOD.replace("[global]\n", "[global]\nconntrack_capacity = 100000\n"));
    assert!(e.contains("100000 must be a power of two, such as 65536 or 131072"), "{e}");
}
