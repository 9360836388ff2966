//! bird.conf files of the ECMP topology: the router (one eBGP session per
//! lb instance, paths merged into one multipath kernel route) and each lb
//! instance (the agent's include file exported to the router). Short timers
//! and BFD make a dead instance's route go within a second. The sessions
//! and the channel follow the VIP's address family: IPv4 sessions carry
//! `lb_vips4`, IPv6 sessions `lb_vips6` (as in examples/bird-lb.conf).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// AS of the router.
pub const ROUTER_AS: u32 = 65000;
/// AS shared by every lb instance: equal AS paths make the routes mergeable.
pub const LB_AS: u32 = 65001;

/// BGP timers shared by both ends: hold 3 s (BIRD's minimum); before that,
/// BFD declares a silent neighbour dead after `multiplier` x 100 ms.
const TIMERS: &str = "  hold time 3; keepalive time 1;\n  connect retry time 1; connect delay time 1; error wait time 1, 2;\n  bfd on;\n";

fn bfd(iface: &str, multiplier: u32) -> String {
    format!(
        "protocol bfd {{\n  interface \"{iface}\" {{ min rx interval 100 ms; min tx interval 100 ms; multiplier {multiplier}; }};\n}}\n"
    )
}

const LOG: &str = "log stderr { info, remote, warning, error, auth, fatal, bug };\n";

/// BIRD's channel and the host route length of `addr`'s family.
fn family(addr: IpAddr) -> (&'static str, u8) {
    if addr.is_ipv6() { ("ipv6", 128) } else { ("ipv4", 32) }
}

/// The router (`id`, sessions from `local`): accepts host routes of the VIP
/// prefix from every instance and installs them as one multipath route
/// (`merge paths`).
pub fn router(
    id: Ipv4Addr,
    local: IpAddr,
    iface: &str,
    bfd_multiplier: u32,
    vip_prefix: &str,
    instances: &[(String, IpAddr)],
) -> String {
    let (channel, len) = family(local);
    let mut s = format!("router id {id};\n{LOG}protocol device {{ scan time 10; }}\n");
    let _ = writeln!(s, "protocol kernel {{\n  {channel} {{ import none; export all; }};\n  merge paths on;\n}}");
    s.push_str(&bfd(iface, bfd_multiplier));
    let _ = write!(
        s,
        "template bgp lb_instance {{\n  local {local} as {ROUTER_AS};\n{TIMERS}  {channel} {{ import where net ~ [ {vip_prefix}{{{len},{len}}} ]; export none; }};\n}}\n"
    );
    for (name, addr) in instances {
        let _ = writeln!(s, "protocol bgp {name} from lb_instance {{ neighbor {addr} as {LB_AS}; }}");
    }
    s
}

/// An lb instance (`id`, its session from `local` to `router`): the agent's
/// include file (a wildcard, so BIRD starts before the agent wrote it)
/// exported to the router with itself as next hop.
pub fn instance(
    id: Ipv4Addr,
    local: IpAddr,
    iface: &str,
    bfd_multiplier: u32,
    router: IpAddr,
    include: &Path,
) -> String {
    let (channel, len) = family(local);
    let proto = if len == 128 { "lb_vips6" } else { "lb_vips4" };
    let mut s = format!("router id {id};\n{LOG}protocol device {{ scan time 10; }}\n");
    let pattern = include.display().to_string().replace(".conf", "*.conf");
    let _ = writeln!(s, "include \"{pattern}\";");
    s.push_str(&bfd(iface, bfd_multiplier));
    let _ = write!(
        s,
        "protocol bgp uplink {{\n  local {local} as {LB_AS};\n  neighbor {router} as {ROUTER_AS};\n{TIMERS}  {channel} {{ import none; export where proto = \"{proto}\"; next hop self; }};\n}}\n"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_and_channels_follow_the_vip_family() {
        let id = Ipv4Addr::new(198, 18, 0, 254);
        let peers = [("lb1".to_string(), "2001:db8::2".parse().unwrap())];
        let r = router(id, "2001:db8::fe".parse().unwrap(), "eth0", 10, "2001:db8:100::/64", &peers);
        assert!(r.starts_with("router id 198.18.0.254;"), "{r}");
        assert!(r.contains("  ipv6 { import none; export all; };\n  merge paths on;"), "{r}");
        assert!(r.contains("local 2001:db8::fe as 65000;"), "{r}");
        assert!(r.contains("ipv6 { import where net ~ [ 2001:db8:100::/64{128,128} ]; export none; };"), "{r}");
        assert!(r.contains("protocol bgp lb1 from lb_instance { neighbor 2001:db8::2 as 65001; }"), "{r}");
        assert!(r.contains("multiplier 10;") && !r.contains("ipv4"), "{r}");

        let lb = instance(
            Ipv4Addr::new(198, 18, 0, 2),
            "2001:db8::2".parse().unwrap(),
            "lb0",
            10,
            "2001:db8::fe".parse().unwrap(),
            Path::new("/t/lb1-vips.conf"),
        );
        assert!(lb.contains("include \"/t/lb1-vips*.conf\";"), "{lb}");
        assert!(lb.contains("local 2001:db8::2 as 65001;\n  neighbor 2001:db8::fe as 65000;"), "{lb}");
        assert!(lb.contains("ipv6 { import none; export where proto = \"lb_vips6\"; next hop self; };"), "{lb}");

        let v4 = instance(id, id.into(), "lb0", 3, Ipv4Addr::new(198, 18, 0, 1).into(), Path::new("/t/x.conf"));
        assert!(v4.contains("ipv4 { import none; export where proto = \"lb_vips4\"; next hop self; };"), "{v4}");
        assert!(v4.contains("multiplier 3;") && !v4.contains("ipv6"), "{v4}");
    }
}
