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
