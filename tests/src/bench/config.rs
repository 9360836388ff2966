//! The lb configuration the in-process benchmarks load: every VIP with 100
//! backends behind it and a full Maglev ring (65537 entries).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::Result;
use lb::config::Config;

/// Backends behind each VIP.
pub const BACKENDS: usize = 100;

/// IPv4 VIP: tcp/80 and udp/53, ipip.
pub const V4: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
/// IPv4 VIP in l2dsr mode: tcp/80.
pub const V4_DSR: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 2);
/// The VIP whose table the control-plane bench keeps swapping: tcp/80.
pub const V4_SWAP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 9);
/// IPv6 VIP: tcp/80, ipip.
pub const V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
/// An address that carries no VIP.
pub const NOT_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 1);

/// MAC of the generator's veth towards the balancer; the balancer's next
/// hop, so encapsulated frames come back to it (where a sink drops them).
pub const NEXTHOP_MAC: &str = "02:00:00:00:ee:01";

fn v4_backend(net: u8, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, net, 1 + i as u8)
}

/// The address of backend `i` of the swapped VIP in configuration `step`:
/// step 0 is backends 1..=100; step s replaces backend `(s - 1) % 100`
/// by a fresh address, so every step changes exactly one backend.
pub fn swap_backends(step: usize) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = (0..BACKENDS).map(|i| v4_backend(4, i)).collect();
    for s in 1..=step {
        let fresh = 200 + s as u32; // 198.18.5.x, 198.18.6.x, ...
        v[(s - 1) % BACKENDS] = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 5, 0)) + fresh);
    }
    v
}

/// The whole configuration, with the swapped VIP at `swap_step`.
pub fn config(swap_step: usize) -> Result<Config> {
    let mut s = format!(
        "[global]\nforwarding = \"ipip\"\nnexthop_mac = \"{NEXTHOP_MAC}\"\n\
         tunnel_source_v4 = \"198.18.0.2\"\ntunnel_source_v6 = \"2001:db8::2\"\n"
    );
    let mut vip = |addr: String, port: u16, proto: &str, extra: &str, backends: Vec<String>| {
        let _ = writeln!(s, "\n[[vip]]\naddress = \"{addr}\"\nport = {port}\nprotocol = \"{proto}\"\n{extra}");
        for b in backends {
            let _ = writeln!(s, "[[vip.backend]]\n{b}");
        }
    };
    let plain = |net: u8| (0..BACKENDS).map(|i| format!("address = \"{}\"", v4_backend(net, i))).collect::<Vec<_>>();
    vip(V4.to_string(), 80, "tcp", "", plain(1));
    vip(V4.to_string(), 53, "udp", "", plain(2));
    vip(
        V6.to_string(),
        80,
        "tcp",
        "",
        (0..BACKENDS).map(|i| format!("address = \"2001:db8:1::{:x}\"", i + 1)).collect(),
    );
    vip(
        V4_DSR.to_string(),
        80,
        "tcp",
        "forwarding = \"l2dsr\"",
        (0..BACKENDS)
            .map(|i| format!("address = \"{}\"\nmac = \"02:00:00:03:00:{:02x}\"", v4_backend(3, i), i + 1))
            .collect(),
    );
    vip(
        V4_SWAP.to_string(),
        80,
        "tcp",
        "",
        swap_backends(swap_step).iter().map(|a| format!("address = \"{a}\"")).collect(),
    );
    Ok(Config::from_toml_str(&s)?)
}

/// A MAC written `02:00:...` as bytes.
pub fn mac_bytes(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(s.split(':')) {
        *b = u8::from_str_radix(p, 16).unwrap_or(0);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_parse_and_swap_changes_one_backend() {
        let c0 = config(0).unwrap();
        assert_eq!(c0.vips.len(), 5);
        assert!(c0.vips.iter().all(|v| v.backends.len() == BACKENDS && v.ring_size == 65537));
        for step in 1..250 {
            let (a, b) = (swap_backends(step - 1), swap_backends(step));
            assert_eq!(a.iter().zip(&b).filter(|(x, y)| x != y).count(), 1, "step {step}");
            let mut d = b.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), BACKENDS);
        }
    }
}
