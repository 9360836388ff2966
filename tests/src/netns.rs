//! Low-level pieces of the veth/netns harness: network namespaces, running
//! commands inside them, running closures on threads that entered them,
//! child processes that are killed on drop, and a tiny raw-syscall XDP_PASS
//! attach (needed on the veth peer that receives XDP_TX frames).
//!
//! Everything here only ever touches namespaces the harness created itself.

use std::ffi::CString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// Set (e.g. from a SIGINT handler) to make the harness's long waits and
/// traffic loops give up early. Only async-signal-safe operations touch it.
pub static ABORT: AtomicBool = AtomicBool::new(false);

/// True once [`ABORT`] was set.
pub fn abort_requested() -> bool {
    ABORT.load(Ordering::SeqCst)
}

static ON_SIGNAL_INSTALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    ABORT.store(true, Ordering::SeqCst);
}

/// Installs SIGINT/SIGTERM handlers that only set [`ABORT`], so that the
/// caller can unwind and clean up (used by `lb-demo`).
pub fn install_abort_on_signals() -> Result<()> {
    if ON_SIGNAL_INSTALLED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let prev = unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
        if prev == libc::SIG_ERR {
            bail!("signal({sig}) failed: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// True when running as root (the network tests need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn render(program: &str, args: &[&str]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// Runs a command to completion; on failure the error names the command,
/// its exit status and its stderr. Returns stdout.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{}`", render(program, args)))?;
    if !out.status.success() {
        bail!("`{}` failed ({}): {}", render(program, args), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What a command that may fail printed, and how it exited.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}; stdout: {:?}; stderr: {:?}", self.code, self.stdout.trim_end(), self.stderr.trim_end())
    }
}

/// Runs a command to completion and returns its exit code and output,
/// whatever the code (for tests of exit codes and error messages). Fails
/// only when the command cannot be started.
pub fn run_status(program: &str, args: &[&str]) -> Result<CmdOutput> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{}`", render(program, args)))?;
    Ok(CmdOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// [`run_status`] of `PROGRAM ARGS...` inside namespace `ns`. `ip netns
/// exec` execs the program, so the exit code is the program's own.
pub fn exec_in_status(ns: &str, program: &str, args: &[&str]) -> Result<CmdOutput> {
    let mut full = vec!["netns", "exec", ns, program];
    full.extend_from_slice(args);
    run_status("ip", &full)
}

/// `ip ARGS...` in the current (host) namespace. Use only for `ip netns ...`
/// and for commands that name a namespace with `-n`.
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// `ip -n NS ARGS...`.
pub fn ip_in(ns: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["-n", ns];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Runs `PROGRAM ARGS...` inside namespace `ns` (`ip netns exec`).
pub fn exec_in(ns: &str, program: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["netns", "exec", ns, program];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Names of all namespaces known to `ip netns`.
pub fn list_netns() -> Result<Vec<String>> {
    let out = ip(&["netns", "list"])?;
    Ok(out.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect())
}

/// Path of a named namespace's handle.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/var/run/netns").join(name)
}

/// A network namespace created with `ip netns add`, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    deleted: bool,
}

impl Netns {
    /// Creates the namespace and brings its `lo` up.
    pub fn create(name: &str) -> Result<Netns> {
        ip(&["netns", "add", name])?;
        let ns = Netns { name: name.to_string(), deleted: false };
        ip_in(name, &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Deletes the namespace now (the veths in it go with it).
    pub fn delete(&mut self) -> Result<()> {
        if self.deleted {
            return Ok(());
        }
        self.deleted = true;
        delete_netns(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = self.delete() {
            eprintln!("lb-tests: cleanup: {e:#}");
        }
    }
}

/// `ip netns del NAME`, tolerating a namespace that is already gone.
pub fn delete_netns(name: &str) -> Result<()> {
    if !netns_path(name).exists() {
        return Ok(());
    }
    ip(&["netns", "del", name]).map(|_| ())
}

/// Deletes namespaces named `lbt<PID>x<N>-...` whose PID no longer runs:
/// leftovers of a harness process that was killed before it could clean up.
pub fn sweep_stale_namespaces() {
    let Ok(names) = list_netns() else { return };
    for name in names {
        let Some(rest) = name.strip_prefix("lbt") else {
            continue;
        };
        let Some((pid, rest)) = rest.split_once('x') else {
            continue;
        };
        let Some((counter, _)) = rest.split_once('-') else {
            continue;
        };
        if pid.is_empty()
            || !pid.bytes().all(|b| b.is_ascii_digit())
            || counter.is_empty()
            || !counter.bytes().all(|b| b.is_ascii_digit())
        {
            continue;
        }
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        if let Err(e) = delete_netns(&name) {
            eprintln!("lb-tests: cannot delete stale namespace {name}: {e:#}");
        }
    }
}

/// Moves the calling thread into namespace `ns`. Only for threads that the
/// harness spawned for that purpose.
fn enter_netns(ns: &str) -> Result<()> {
    let path = netns_path(ns);
    let f = File::open(&path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: f is an open namespace fd; CLONE_NEWNET only affects this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!("setns({}) failed: {}", path.display(), std::io::Error::last_os_error());
    }
    Ok(())
}

/// Spawns a thread that enters namespace `ns` and then runs `f`.
pub fn spawn_in_netns<T, F>(ns: &str, thread_name: &str, f: F) -> Result<JoinHandle<Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let ns = ns.to_string();
    thread::Builder::new()
        .name(thread_name.chars().take(15).collect())
        .spawn(move || {
            enter_netns(&ns)?;
            f()
        })
        .context("spawn thread")
}

/// Runs `f` on a fresh thread that entered namespace `ns`, and waits for it.
/// Sockets created inside stay in that namespace and may be used from any
/// thread afterwards.
pub fn in_netns<T, F>(ns: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let handle = spawn_in_netns(ns, "in-netns", f)?;
    match handle.join() {
        Ok(r) => r.with_context(|| format!("in namespace {ns}")),
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Writes `/proc/sys/...` values inside namespace `ns`; keys use dots or
/// slashes (`net.ipv4.ip_forward`, `net/ipv4/conf/eth0/rp_filter`).
pub fn sysctls(ns: &str, settings: &[(&str, &str)]) -> Result<()> {
    let settings: Vec<(String, String)> = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    in_netns(ns, move || {
        for (k, v) in &settings {
            // Interface names may contain dots; only keys given with dots
            // are converted.
            let rel = if k.contains('/') { k.clone() } else { k.replace('.', "/") };
            let path = Path::new("/proc/sys").join(rel);
            std::fs::write(&path, v).with_context(|| format!("sysctl {k}={v}"))?;
        }
        Ok(())
    })
}

/// Turns transmit checksum offload off on `ifname` in namespace `ns` (what
/// `ethtool -K IF tx off` does; done with the ethtool ioctl, so the ethtool
/// binary is not needed). XDP forwarding a frame loses CHECKSUM_PARTIAL.
pub fn disable_tx_csum(ns: &str, ifname: &str) -> Result<()> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GTXCSUM: u32 = 0x16;
    const ETHTOOL_STXCSUM: u32 = 0x17;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [libc::c_char; libc::IFNAMSIZ],
        data: *mut libc::c_void,
        _pad: [u8; 16],
    }
    let ifname = ifname.to_string();
    in_netns(ns, move || {
        if ifname.len() >= libc::IFNAMSIZ {
            bail!("interface name too long: {ifname}");
        }
        // SAFETY: plain socket creation.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by socket() and is owned here.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let ioctl = |cmd: u32, data: u32| -> Result<u32> {
            let mut val = EthtoolValue { cmd, data };
            let mut req = IfReq {
                name: [0; libc::IFNAMSIZ],
                data: &mut val as *mut EthtoolValue as *mut libc::c_void,
                _pad: [0; 16],
            };
            for (d, s) in req.name.iter_mut().zip(ifname.bytes()) {
                *d = s as libc::c_char;
            }
            // SAFETY: req and val outlive the call; SIOCETHTOOL reads/writes val.
            let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
            if rc != 0 {
                bail!("ethtool ioctl {cmd:#x} on {ifname}: {}", std::io::Error::last_os_error());
            }
            Ok(val.data)
        };
        ioctl(ETHTOOL_STXCSUM, 0)?;
        if ioctl(ETHTOOL_GTXCSUM, 0)? != 0 {
            bail!("tx checksum offload is still on for {ifname}");
        }
        Ok(())
    })
}

/// An XDP program attached through a BPF link; detached when dropped (or
/// when its interface disappears with its namespace).
#[derive(Debug)]
pub struct XdpLink {
    _prog: OwnedFd,
    _link: OwnedFd,
    pub ns: String,
    pub ifname: String,
}

fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> std::io::Result<OwnedFd> {
    // SAFETY: attr is a zero-initialised, 128-byte bpf_attr for `cmd`.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr() as *mut libc::c_void, std::mem::size_of_val(attr) as u32)
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: BPF_PROG_LOAD and BPF_LINK_CREATE return a new fd.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as i32) })
}

/// Attaches a two-instruction XDP program returning XDP_PASS to `ifname`
/// in namespace `ns`, in native (driver) mode. A veth whose peer sends
/// XDP_TX frames needs an XDP program on the receiving side, or the frames
/// are dropped. The program is loaded with raw bpf(2) calls so that this
/// does not depend on any compiled eBPF object.
pub fn attach_xdp_pass(ns: &str, ifname: &str) -> Result<XdpLink> {
    // r0 = XDP_PASS (2); exit
    let insns = [insn(0xb7, 0, 0, 0, 2), insn(0x95, 0, 0, 0, 0)];
    attach_xdp_insns(ns, ifname, "lb_pass", &insns)
}

/// Encodes one eBPF instruction (opcode, dst reg, src reg, offset, imm).
pub fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    let o = off.to_le_bytes();
    let i = imm.to_le_bytes();
    u64::from_le_bytes([code, (src << 4) | (dst & 0xf), o[0], o[1], i[0], i[1], i[2], i[3]])
}

/// Loads `insns` as an XDP program named `name` (at most 15 bytes) with
/// raw bpf(2) calls and attaches it to `ifname` in namespace `ns` in native
/// mode through a BPF link.
pub fn attach_xdp_insns(ns: &str, ifname: &str, name: &str, insns: &[u64]) -> Result<XdpLink> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    const BPF_XDP: u32 = 37;
    const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
    let insns = insns.to_vec();
    let name = name.as_bytes()[..name.len().min(15)].to_vec();
    let ifname_owned = ifname.to_string();
    let (prog, link) = in_netns(ns, move || {
        let license = CString::new("GPL").unwrap();
        let mut log = vec![0u8; 4096];
        let mut attr = [0u64; 16];
        {
            // SAFETY: viewing the u64 array as bytes to fill bpf_attr fields.
            let b: &mut [u8; 128] = unsafe { &mut *(attr.as_mut_ptr() as *mut [u8; 128]) };
            b[0..4].copy_from_slice(&BPF_PROG_TYPE_XDP.to_ne_bytes());
            b[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
            b[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
            b[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
            b[24..28].copy_from_slice(&1u32.to_ne_bytes()); // log_level
            b[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
            b[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
            b[48..48 + name.len()].copy_from_slice(&name);
            b[68..72].copy_from_slice(&BPF_XDP.to_ne_bytes()); // expected_attach_type
        }
        let prog = bpf(BPF_PROG_LOAD, &mut attr).map_err(|e| {
            let end = log.iter().position(|&c| c == 0).unwrap_or(log.len());
            anyhow!("BPF_PROG_LOAD (XDP): {e}; verifier: {}", String::from_utf8_lossy(&log[..end]))
        })?;
        let cname = CString::new(ifname_owned.clone())?;
        // SAFETY: cname is a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {ifname_owned}");
        }
        let mut attr = [0u64; 16];
        {
            // SAFETY: as above.
            let b: &mut [u8; 128] = unsafe { &mut *(attr.as_mut_ptr() as *mut [u8; 128]) };
            b[0..4].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
            b[4..8].copy_from_slice(&ifindex.to_ne_bytes());
            b[8..12].copy_from_slice(&BPF_XDP.to_ne_bytes());
            b[12..16].copy_from_slice(&XDP_FLAGS_DRV_MODE.to_ne_bytes());
        }
        let link = bpf(BPF_LINK_CREATE, &mut attr)
            .with_context(|| format!("BPF_LINK_CREATE (XDP native) on {ifname_owned}"))?;
        Ok((prog, link))
    })?;
    Ok(XdpLink { _prog: prog, _link: link, ns: ns.to_string(), ifname: ifname.to_string() })
}

/// A child process (typically `ip netns exec NS lb ...`) that is sent
/// SIGTERM on drop, then SIGKILL if it has not exited after ~2 s.
pub struct ChildGuard {
    pub name: String,
    child: Option<Child>,
    pub log: Option<PathBuf>,
    lines: Option<mpsc::Receiver<String>>,
    drain: Option<JoinHandle<()>>,
}

static SPAWNED: AtomicUsize = AtomicUsize::new(0);

impl ChildGuard {
    /// Spawns `program args...` inside namespace `ns` with stdout piped and
    /// stderr appended to `log`. The child gets its own process group (so a
    /// terminal's Ctrl-C reaches only the harness, which tears down in
    /// order) and SIGTERM if the spawning thread dies.
    pub fn spawn_in(ns: &str, name: &str, program: &Path, args: &[&str], log: &Path) -> Result<ChildGuard> {
        let stderr = File::create(log).with_context(|| format!("create {}", log.display()))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program).args(args);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr);
        cmd.env("RUST_BACKTRACE", "1");
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawn `ip netns exec {ns} {} {}`", program.display(), args.join(" ")))?;
        SPAWNED.fetch_add(1, Ordering::Relaxed);
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        let tname = format!("out-{name}");
        let drain = thread::Builder::new()
            .name(tname.chars().take(15).collect())
            .spawn(move || {
                let mut r = BufReader::new(stdout);
                let mut line = String::new();
                loop {
                    line.clear();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let _ = tx.send(line.trim_end().to_string());
                        }
                    }
                }
            })
            .context("spawn drain thread")?;
        Ok(ChildGuard {
            name: name.to_string(),
            child: Some(child),
            log: Some(log.to_path_buf()),
            lines: Some(rx),
            drain: Some(drain),
        })
    }

    /// Pid of the child (the program itself: `ip netns exec` execs it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits until the child prints a stdout line starting with `prefix`.
    /// Fails if it exits first, on timeout, or when [`ABORT`] is set; the
    /// error includes the child's stderr log.
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let rx = self.lines.as_ref().ok_or_else(|| anyhow!("{}: no stdout", self.name))?;
        let mut seen = Vec::new();
        loop {
            if abort_requested() {
                bail!("{}: interrupted while waiting for `{prefix}`", self.name);
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "{}: no `{prefix}` line within {:?}; stdout so far: {:?}\n--- stderr ---\n{}",
                    self.name,
                    timeout,
                    seen,
                    self.log_text()
                );
            }
            match rx.recv_timeout((deadline - now).min(Duration::from_millis(100))) {
                Ok(line) => {
                    if line.starts_with(prefix) {
                        return Ok(line);
                    }
                    seen.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the child exited (or closed stdout).
                    thread::sleep(Duration::from_millis(50));
                    let status = self.try_status();
                    bail!(
                        "{} exited before printing `{prefix}` ({}); stdout: {:?}\n--- stderr ---\n{}",
                        self.name,
                        status.unwrap_or_else(|| "still running, stdout closed".into()),
                        seen,
                        self.log_text()
                    );
                }
            }
        }
    }

    /// Lines printed on stdout since the last call (non-blocking).
    pub fn take_lines(&mut self) -> Vec<String> {
        self.lines.as_ref().map(|rx| rx.try_iter().collect()).unwrap_or_default()
    }

    /// `Some(description)` once the child has exited.
    pub fn try_status(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(s)) => Some(s.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("wait failed: {e}")),
        }
    }

    /// The child's stderr log so far.
    pub fn log_text(&self) -> String {
        let Some(log) = &self.log else {
            return String::new();
        };
        let mut s = String::new();
        match File::open(log) {
            Ok(mut f) => {
                let _ = f.read_to_string(&mut s);
            }
            Err(e) => s = format!("(cannot read {}: {e})", log.display()),
        }
        s
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let pid = child.id() as libc::pid_t;
        if let Ok(Some(status)) = child.try_wait() {
            self.join_drain();
            return Some(status);
        }
        // SAFETY: pid is our own, not yet reaped child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    eprintln!("lb-tests: {} did not exit on SIGTERM; killing it", self.name);
                    let _ = child.kill();
                    break child.wait().ok();
                }
                Err(_) => break None,
            }
        };
        self.join_drain();
        status
    }

    /// SIGKILL (no chance to clean up: what a crash looks like), then reaps
    /// the child. Returns its exit status (killed by signal 9).
    pub fn kill(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            self.join_drain();
            return Some(status);
        }
        let _ = child.kill();
        let status = child.wait().ok();
        self.join_drain();
        status
    }

    fn join_drain(&mut self) {
        if let Some(h) = self.drain.take() {
            let _ = h.join();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_lifecycle() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let name = format!("lbt{}x9000-unit", std::process::id());
        {
            let ns = Netns::create(&name).unwrap();
            assert!(list_netns().unwrap().contains(&name));
            // /proc/net is /proc/self/net, the thread group leader's view:
            // a setns'd thread must read /proc/thread-self/net.
            let out = in_netns(ns.name(), || Ok(std::fs::read_to_string("/proc/thread-self/net/dev")?)).unwrap();
            let ifaces: Vec<&str> = out.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
            assert_eq!(ifaces, vec!["lo"]);
            let err = exec_in(ns.name(), "false", &[]).unwrap_err().to_string();
            assert!(err.contains("false"), "{err}");
        }
        assert!(!list_netns().unwrap().contains(&name));
    }
}
