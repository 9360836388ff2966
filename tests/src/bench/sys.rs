//! Small system helpers of the bench: CPU pinning, running a closure on a
//! (scoped) thread inside a namespace, interface counters.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{Context, Result, bail};

use lb_tests::netns;

/// Number of online CPUs.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The CPU the bench measures on: the last one (CPU 0 usually takes more
/// of the machine's housekeeping).
pub fn bench_cpu() -> usize {
    cpus().saturating_sub(1)
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 = the calling thread; set is a valid cpu_set_t.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        bail!("sched_setaffinity(cpu {cpu}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Moves the calling thread into namespace `ns` (only for threads the bench
/// spawned for that purpose).
pub fn enter_netns(ns: &str) -> Result<()> {
    let path = netns::netns_path(ns);
    let f = File::open(&path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: f is an open namespace fd; CLONE_NEWNET only affects this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns({}): {}", path.display(), std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a scoped thread that entered namespace `ns` (so `f` may
/// borrow from the caller), optionally pinned to `cpu`, and waits for it.
pub fn scoped_in_netns<T: Send>(ns: &str, cpu: Option<usize>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            enter_netns(ns)?;
            if let Some(c) = cpu {
                pin_to_cpu(c)?;
            }
            f()
        });
        match h.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}

/// Index of `ifname` in the calling thread's namespace.
pub fn ifindex(ifname: &str) -> Result<u32> {
    let c = std::ffi::CString::new(ifname)?;
    // SAFETY: a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("no interface {ifname}: {}", std::io::Error::last_os_error());
    }
    Ok(i)
}

/// `ethtool -S IF` in namespace `ns`, as name -> value.
pub fn ethtool_stats(ns: &str, ifname: &str) -> Result<BTreeMap<String, u64>> {
    let out = netns::exec_in(ns, "ethtool", &["-S", ifname])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(k, v)| Some((k.trim().to_string(), v.trim().parse().ok()?)))
        .collect())
}

/// Packet counters of an interface from `ip -s -j link`: (rx, tx) packets.
pub fn link_packets(ns: &str, ifname: &str) -> Result<(u64, u64)> {
    let out = netns::ip_in(ns, &["-s", "-j", "link", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -j link output")?;
    let s = &v[0]["stats64"];
    let get = |dir: &str| s[dir]["packets"].as_u64().with_context(|| format!("no stats64.{dir}.packets in {out}"));
    Ok((get("rx")?, get("tx")?))
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file())).unwrap_or(false)
        || Path::new("/usr/sbin").join(program).is_file()
}

/// CPU time (user + system) a process used so far, in seconds.
pub fn process_cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after ')'.
    let rest = stat.rsplit_once(')').context("malformed /proc/PID/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15.
    let ticks: u64 = f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / hz)
}

/// Kernel and CPU description for the report.
pub fn machine() -> (String, String) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_default();
    (kernel, cpu)
}
