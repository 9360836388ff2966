//! The bodies of lb's cargo-fuzz targets: the host-side parsers that take
//! untrusted or operator-written input. Each function takes arbitrary bytes,
//! must never panic, and checks invariants of what it accepts.
//!
//! Shared with the test suite: `tests/tests/model_fuzz.rs` includes this
//! file (`#[path]`) and runs every seed-corpus file under
//! `tests/fuzz-corpus/<target>/` through [`TARGETS`], so CI covers the
//! corpus without cargo-fuzz or nightly.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use lb::agent::api::{BackendAdd, BackendRef, BackendState, VipRef};
use lb::agent::trace::TraceRequest;
use lb::config::{BackendSpec, Config, Forwarding, MAX_WEIGHT, MTU_RANGE, Mac, NextHop, VipId, VipSpec, is_prime};
use lb::maglev::{self, Candidate};
use lb_common::{MAX_BACKENDS, MAX_RING_SIZE, MAX_VIPS};

/// Every target: (name, function). The names are the cargo-fuzz targets'
/// and the seed-corpus directories'.
/// A target's body.
pub type Target = fn(&[u8]);

pub const TARGETS: [(&str, Target); 5] = [
    ("config_toml", config_toml),
    ("api_json", api_json),
    ("http_request", http_request),
    ("names", names),
    ("maglev", maglev),
];

/// What a validated configuration guarantees, whatever the input was.
pub fn check_config(cfg: &Config) {
    assert!(cfg.vips.len() <= MAX_VIPS as usize, "more than MAX_VIPS VIPs accepted");
    assert!(cfg.backend_entries() <= MAX_BACKENDS as usize, "more than MAX_BACKENDS backends accepted");
    if let Some(mtu) = cfg.global.mtu {
        assert!(MTU_RANGE.contains(&mtu), "mtu {mtu} accepted");
    }
    let mut keys = HashSet::new();
    for v in &cfg.vips {
        assert!(keys.insert(v.key()), "{v} accepted twice");
        assert_ne!(v.port, 0, "port 0 accepted");
        assert!(!v.address.is_unspecified() && !v.address.is_multicast(), "VIP address {} accepted", v.address);
        assert!(
            (2..=MAX_RING_SIZE).contains(&v.ring_size) && is_prime(v.ring_size),
            "ring_size {} accepted",
            v.ring_size
        );
        assert!(v.backends.len() <= v.ring_size as usize, "more backends than ring entries accepted");
        if v.forwarding == Forwarding::Ipip {
            assert!(cfg.global.nexthop_mac.is_some(), "ipip VIP without nexthop_mac accepted");
            match v.address {
                IpAddr::V4(_) => assert!(cfg.global.tunnel_source_v4.is_some(), "ipip v4 VIP without tunnel source"),
                IpAddr::V6(_) => assert!(cfg.global.tunnel_source_v6.is_some(), "ipip v6 VIP without tunnel source"),
            }
        }
        let mut addrs = HashSet::new();
        for b in &v.backends {
            assert!(addrs.insert(b.address), "backend {} listed twice in {v}", b.address);
            assert_eq!(b.address.is_ipv4(), v.address.is_ipv4(), "backend {} of another family in {v}", b.address);
            assert!(b.weight <= MAX_WEIGHT, "weight {} accepted", b.weight);
            assert!(
                !b.address.is_unspecified() && !b.address.is_multicast() && !b.address.is_loopback(),
                "backend address {} accepted",
                b.address
            );
            if v.forwarding == Forwarding::L2dsr {
                assert!(b.mac.is_some(), "l2dsr backend without a MAC accepted");
            }
        }
    }
}

/// A configuration file.
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(cfg) = Config::from_toml_str(text) {
        check_config(&cfg);
    }
}

/// The running configuration API changes are validated against.
const BASE: &str = r#"
[global]
nexthop_mac = "02:00:00:00:00:fe"
tunnel_source_v4 = "198.18.0.2"
tunnel_source_v6 = "2001:db8::2"
[[vip]]
address = "198.18.100.1"
port = 80
protocol = "tcp"
ring_size = 251
  [[vip.backend]]
  address = "198.18.0.11"
[[vip]]
address = "2001:db8:100::2"
port = 443
protocol = "tcp"
forwarding = "l2dsr"
ring_size = 251
  [[vip.backend]]
  address = "2001:db8::31"
  mac = "02:00:00:00:02:31"
"#;

fn base() -> Config {
    Config::from_toml_str(BASE).expect("the fuzz harness's base configuration")
}

/// A new backend for `vip`, as the agent's `AddBackend` validates it.
fn add_backend(cfg: &Config, vip: &VipId, spec: BackendSpec) {
    let Some(forwarding) = cfg.vip(vip).map(|v| v.forwarding) else { return };
    let Ok(backend) = spec.validate("backend", vip.address, forwarding) else { return };
    if let Ok(next) = cfg.with_backends(vip, |list| {
        list.push(backend);
        Ok(())
    }) {
        check_config(&next);
    }
}

/// An API request body: the first byte picks the body type (`'0'`..`'6'`,
/// other bytes modulo 7): 0 `VipSpec` (`/v1/vips/add`), 1 `BackendSpec`,
/// 2 `VipRef` (`/v1/vips/del`), 3 `BackendAdd` (`/v1/backends/add`),
/// 4 `BackendRef` (`/v1/backends/del`), 5 `BackendState`
/// (`/v1/backends/state`), 6 `TraceRequest` (`/v1/trace`). The rest is the
/// JSON body, parsed as the agent does, then validated against a running
/// configuration as the agent's owner does.
pub fn api_json(data: &[u8]) {
    let Some((&route, body)) = data.split_first() else { return };
    let route = if (b'0'..=b'6').contains(&route) { route - b'0' } else { route % 7 };
    json_body(route, body);
}

fn json_body(route: u8, body: &[u8]) {
    let cfg = base();
    match route {
        0 => {
            if let Ok(spec) = serde_json::from_slice::<VipSpec>(body)
                && let Ok(next) = cfg.with_vip(spec)
            {
                check_config(&next);
            }
        }
        1 => {
            if let Ok(spec) = serde_json::from_slice::<BackendSpec>(body) {
                for v in &cfg.vips {
                    add_backend(&cfg, &v.id(), spec.clone());
                }
            }
        }
        2 => {
            if let Ok(r) = serde_json::from_slice::<VipRef>(body) {
                assert_eq!(r.vip.to_string().parse::<VipId>(), Ok(r.vip));
            }
        }
        3 => {
            if let Ok(r) = serde_json::from_slice::<BackendAdd>(body) {
                add_backend(&cfg, &r.vip, r.backend);
            }
        }
        4 => {
            let _ = serde_json::from_slice::<BackendRef>(body);
        }
        5 => {
            let _ = serde_json::from_slice::<BackendState>(body);
        }
        _ => {
            let _ = serde_json::from_slice::<TraceRequest>(body);
        }
    }
}

/// Drives a future that never waits (reading from a byte slice).
fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// A request on the control socket: HTTP framing, then the JSON body of
/// the route it names.
pub fn http_request(data: &[u8]) {
    let mut reader = data;
    let Ok(req) = ready(lb::agent::http::read_request(&mut reader)) else { return };
    assert!(req.path.starts_with('/'), "request path {:?} accepted", req.path);
    assert!(req.body.len() <= lb::agent::http::MAX_BODY, "body of {} bytes accepted", req.body.len());
    let route = match req.path.as_str() {
        "/v1/vips/add" => 0,
        "/v1/vips/del" => 2,
        "/v1/backends/add" => 3,
        "/v1/backends/del" => 4,
        "/v1/backends/state" => 5,
        "/v1/trace" => 6,
        _ => return,
    };
    json_body(route, &req.body);
}

/// The names the CLI and API take: VIPs, MACs, next hops. Whatever parses
/// prints back to something that parses to the same value.
pub fn names(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(id) = VipId::from_str(s) {
        assert_eq!(id.to_string().parse::<VipId>(), Ok(id), "VipId {s:?} does not round-trip");
    }
    if let Ok(mac) = Mac::from_str(s) {
        assert_eq!(mac.to_string().parse::<Mac>(), Ok(mac), "Mac {s:?} does not round-trip");
        assert!(
            s.len() == 17 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'),
            "PRODUCT BUG: Mac::from_str accepted {s:?}, which is not six pairs of hex digits \
             (u8::from_str_radix takes a leading '+')"
        );
    }
    if let Ok(NextHop::Mac(mac)) = NextHop::from_str(s) {
        assert_eq!(Mac::from_str(s), Ok(mac));
    }
}

/// Primes a fuzz input picks ring sizes from (the default and largest last).
const PRIMES: [u32; 12] = [2, 3, 5, 7, 13, 31, 251, 257, 1009, 1021, 4093, 65537];

/// The smallest prime >= n (n <= 65537).
fn prime_at_least(n: u32) -> u32 {
    (n.max(2)..).find(|&p| is_prime(p)).unwrap()
}

/// Maglev with arbitrary (address, weight) sets and prime sizes: every
/// entry is filled when any weight is positive, only by candidates of
/// positive weight, and the table depends on the set, not the order.
pub fn maglev(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let size = match data[0] {
        0..=127 => PRIMES[data[1] as usize % PRIMES.len()],
        _ => prime_at_least((u16::from_le_bytes([data[1], data[0] & 0x7f]) as u32) % (MAX_RING_SIZE - 1)),
    };
    // Candidates of 6 bytes: flags (bit 0: IPv6), 3 address bytes, 2 weight bytes.
    let mut candidates = Vec::new();
    for c in data[2..].chunks_exact(6).take(300) {
        let address = if c[0] & 1 == 0 {
            IpAddr::V4(Ipv4Addr::new(198, c[1], c[2], c[3]))
        } else {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, c[1] as u16, c[2] as u16, c[3] as u16))
        };
        let weight = match c[0] >> 6 {
            0 => u16::from_le_bytes([c[4], c[5]]) as u32 % (MAX_WEIGHT + 1),
            1 => 0,
            2 => u32::from(c[4] % 4),
            _ => u32::from_le_bytes([c[4], c[5], c[0], c[1]]),
        };
        candidates.push(Candidate { address, weight });
    }
    let table = maglev::build(&candidates, size);
    assert_eq!(table.len(), size as usize, "table size");
    let any_weight = candidates.iter().any(|c| c.weight > 0);
    for (entry, slot) in table.iter().enumerate() {
        match slot {
            None => assert!(!any_weight, "entry {entry} of {size} left empty with a positive weight"),
            Some(i) => assert!(candidates[*i as usize].weight > 0, "entry {entry} given to a candidate of weight 0"),
        }
    }
    // One entry list per address, whatever the order (duplicates removed:
    // the configuration refuses them).
    let mut seen = HashSet::new();
    let unique: Vec<Candidate> = candidates.iter().filter(|c| seen.insert(c.address)).copied().collect();
    if unique.len() == candidates.len() {
        let mut reversed = unique.clone();
        reversed.reverse();
        let by_addr = |cands: &[Candidate], t: &[Option<u16>]| -> Vec<Option<IpAddr>> {
            t.iter().map(|e| e.map(|i| cands[i as usize].address)).collect()
        };
        assert!(
            by_addr(&unique, &table) == by_addr(&reversed, &maglev::build(&reversed, size)),
            "the table depends on the order of the candidates"
        );
    }
}
