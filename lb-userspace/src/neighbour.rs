//! `nexthop_mac = "auto"`: the MAC of the interface's IPv4 default gateway,
//! from the kernel's routing and neighbour tables (of this network namespace).

use std::net::Ipv4Addr;

use crate::config::Mac;

#[derive(Debug, thiserror::Error)]
pub enum NeighbourError {
    #[error("reading the MTU or MAC of {iface}: {source}")]
    Interface { iface: String, source: std::io::Error },
    #[error("reading {path}: {source}")]
    Read { path: &'static str, source: std::io::Error },
    #[error("no IPv4 default route through {0}: set global.nexthop_mac explicitly")]
    NoGateway(String),
    #[error(
        "no complete neighbour entry for the gateway {gateway} on {iface} (try `ping -c1 {gateway}`), \
         or set global.nexthop_mac explicitly"
    )]
    Unresolved { gateway: Ipv4Addr, iface: String },
}

fn read(path: &'static str) -> Result<String, NeighbourError> {
    std::fs::read_to_string(path).map_err(|source| NeighbourError::Read { path, source })
}

/// The MAC of `iface`'s IPv4 default gateway.
pub fn gateway_mac(iface: &str) -> Result<Mac, NeighbourError> {
    let gateway =
        default_gateway(&read("/proc/net/route")?, iface).ok_or_else(|| NeighbourError::NoGateway(iface.into()))?;
    neighbour_mac(&read("/proc/net/arp")?, gateway, iface)
        .ok_or_else(|| NeighbourError::Unresolved { gateway, iface: iface.into() })
}

/// An interface ioctl (SIOCGIF*) in the caller's network namespace.
fn if_ioctl(iface: &str, request: libc::Ioctl) -> Result<libc::ifreq, NeighbourError> {
    let err = |source| NeighbourError::Interface { iface: iface.into(), source };
    if iface.len() >= libc::IFNAMSIZ {
        return Err(err(std::io::Error::from_raw_os_error(libc::EINVAL)));
    }
    // SAFETY: a datagram socket for the ioctl, closed by OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: a valid socket and a NUL-terminated name in a zeroed ifreq.
    let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&fd), request, &mut req) };
    if rc < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(req)
}

/// The MTU of `iface`.
pub fn interface_mtu(iface: &str) -> Result<u16, NeighbourError> {
    let req = if_ioctl(iface, libc::SIOCGIFMTU)?;
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(mtu.clamp(0, u16::MAX as i32) as u16)
}

/// The MAC address of `iface`.
pub fn interface_mac(iface: &str) -> Result<Mac, NeighbourError> {
    let req = if_ioctl(iface, libc::SIOCGIFHWADDR)?;
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    Ok(Mac(core::array::from_fn(|i| data[i] as u8)))
}

/// The gateway of the default route through `iface` in `/proc/net/route`
/// (addresses in hex, in the host's byte order).
fn default_gateway(routes: &str, iface: &str) -> Option<Ipv4Addr> {
    const RTF_GATEWAY: u32 = 0x2;
    routes.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let hex = |i: usize| f.get(i).and_then(|v| u32::from_str_radix(v, 16).ok());
        let is_default = f.first() == Some(&iface) && hex(1) == Some(0) && hex(7) == Some(0);
        (is_default && hex(3)? & RTF_GATEWAY != 0).then(|| Ipv4Addr::from(hex(2).unwrap_or(0).to_ne_bytes()))
    })
}

/// A complete entry for `ip` on `iface` in `/proc/net/arp`.
fn neighbour_mac(arp: &str, ip: Ipv4Addr, iface: &str) -> Option<Mac> {
    const ATF_COM: u32 = 0x2;
    arp.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let flags = u32::from_str_radix(f.get(2)?.trim_start_matches("0x"), 16).ok()?;
        let matches = f.first()?.parse::<Ipv4Addr>().ok()? == ip && f.get(5) == Some(&iface) && flags & ATF_COM != 0;
        if matches { f.get(3)?.parse().ok() } else { None }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth1\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t00000000\tFE0012C6\t0003\t0\t0\t0\t00000000\t0\t0\t0
";
    const ARP: &str = "IP address       HW type     Flags       HW address            Mask     Device
198.18.0.254     0x1         0x2         02:00:00:00:fe:01     *        eth0
198.18.0.253     0x1         0x0         00:00:00:00:00:00     *        eth0
";

    #[test]
    fn reads_the_loopback_mtu_and_mac() {
        assert!(interface_mtu("lo").unwrap() >= 1280);
        assert!(interface_mtu("no-such-if0").is_err());
        assert_eq!(interface_mac("lo").unwrap(), Mac([0; 6]));
    }

    #[test]
    fn finds_the_default_gateway_of_the_interface() {
        assert_eq!(default_gateway(ROUTES, "eth0"), Some(Ipv4Addr::new(198, 18, 0, 254)));
        assert_eq!(default_gateway(ROUTES, "eth1"), Some(Ipv4Addr::new(192, 168, 0, 1)));
        assert_eq!(default_gateway(ROUTES, "eth2"), None);
    }

    #[test]
    fn only_complete_neighbour_entries_count() {
        assert_eq!(neighbour_mac(ARP, Ipv4Addr::new(198, 18, 0, 254), "eth0"), Some(Mac([2, 0, 0, 0, 0xfe, 1])));
        assert_eq!(neighbour_mac(ARP, Ipv4Addr::new(198, 18, 0, 253), "eth0"), None);
        assert_eq!(neighbour_mac(ARP, Ipv4Addr::new(198, 18, 0, 254), "eth1"), None);
    }
}
