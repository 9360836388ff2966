//! CPU placement and accounting for the HAProxy comparison: threaded NAPI
//! on a host's veth pinned to one CPU (so that host's receive processing,
//! XDP included, runs there), pinning of other processes, and per-CPU busy
//! time from /proc/stat.

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail};
use lb_tests::netns;

/// Pids of the kernel's NAPI threads (`napi/IF-ID`).
fn napi_threads() -> BTreeSet<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return BTreeSet::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.starts_with("napi/")))
        .collect()
}

/// Turns GRO on (a veth gets a NAPI instance only with GRO or XDP) and
/// threaded NAPI on for `ifname` in `ns`, and pins its NAPI threads to
/// `cpu`. Toggles `threaded` off first so the threads are new and can be
/// told apart from other interfaces' (which may share the name in other
/// namespaces). Returns the threads' pids.
pub fn threaded_napi_on(ns: &str, ifname: &str, cpu: usize) -> Result<Vec<u32>> {
    netns::exec_in(ns, "ethtool", &["-K", ifname, "gro", "on"])?;
    let path = format!("/sys/class/net/{ifname}/threaded");
    netns::exec_in(ns, "sh", &["-c", &format!("echo 0 > {path}")])?;
    let before = napi_threads();
    netns::exec_in(ns, "sh", &["-c", &format!("echo 1 > {path}")])?;
    let new: Vec<u32> = napi_threads().difference(&before).copied().collect();
    if new.is_empty() {
        bail!("no NAPI thread appeared for {ifname} in {ns} after threaded=1");
    }
    for &pid in &new {
        pin_pid(pid, cpu)?;
    }
    Ok(new)
}

/// Nice value of everything the comparison measures: the machine may run
/// other jobs (builds), and CFS then gives them almost nothing while the
/// bench's threads want the CPU.
const NICE: i32 = -20;

/// Threaded NAPI off for `ifname` in `ns`: its receive processing runs
/// again in the softirq of the CPU that sent the frame.
pub fn threaded_napi_off(ns: &str, ifname: &str) -> Result<()> {
    netns::exec_in(ns, "sh", &["-c", &format!("echo 0 > /sys/class/net/{ifname}/threaded")])?;
    Ok(())
}

/// Pins every thread of process `pid` to `cpu` and gives it `NICE`.
pub fn pin_pid(pid: u32, cpu: usize) -> Result<()> {
    netns::run("taskset", &["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .with_context(|| format!("taskset pid {pid} to cpu {cpu}"))?;
    netns::run("renice", &["-n", &NICE.to_string(), "-p", &pid.to_string()])
        .with_context(|| format!("renice pid {pid}"))?;
    Ok(())
}

/// Pins the calling thread to `cpu` and gives it `NICE`.
pub fn pin_self(cpu: usize) -> Result<()> {
    super::sys::pin_to_cpu(cpu)?;
    // SAFETY: who = 0 is the calling thread on Linux.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) } != 0 {
        bail!("setpriority: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Pid of `ksoftirqd/CPU`, where softirq work goes when there is too much
/// of it to run at interrupt exit.
pub fn ksoftirqd(cpu: usize) -> Result<u32> {
    let want = format!("ksoftirqd/{cpu}");
    std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == want))
        .with_context(|| format!("no {want} thread"))
}

/// Busy and softirq time of one CPU so far, in seconds (from /proc/stat;
/// busy = user + nice + system + irq + softirq, steal and idle excluded).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTime {
    pub busy: f64,
    pub softirq: f64,
}

impl std::ops::Sub for CpuTime {
    type Output = CpuTime;
    fn sub(self, o: CpuTime) -> CpuTime {
        CpuTime { busy: self.busy - o.busy, softirq: self.softirq - o.softirq }
    }
}

pub fn cpu_time(cpu: usize) -> Result<CpuTime> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let tag = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(tag.as_str()))
        .with_context(|| format!("no {tag} in /proc/stat"))?;
    let f: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect();
    if f.len() < 7 {
        bail!("short {tag} line in /proc/stat: {line}");
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // user nice system idle iowait irq softirq
    let busy = f[0] + f[1] + f[2] + f[5] + f[6];
    Ok(CpuTime { busy: busy as f64 / hz, softirq: f[6] as f64 / hz })
}
