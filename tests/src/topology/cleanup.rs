//! Teardown: what dropping a [`Topology`] removes, in order, and the
//! topology directories (with their bpffs) of this and of dead harness
//! processes.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use super::Topology;

/// Unmounts the topology directory's bpffs (if mounted) and removes the
/// directory. Leaves the directory alone if the unmount fails, so that
/// nothing is ever deleted through a mount.
pub(crate) fn remove_topology_dir(dir: &Path) {
    let bpffs = dir.join("bpffs");
    if bpffs.exists() {
        let Ok(target) = CString::new(bpffs.as_os_str().as_bytes()) else {
            return;
        };
        // SAFETY: a valid C string.
        if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
            let e = std::io::Error::last_os_error();
            // EINVAL: not a mount point (never mounted, or already gone).
            if e.raw_os_error() != Some(libc::EINVAL) {
                eprintln!("lb-tests: cleanup: umount {}: {e}", bpffs.display());
                return;
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Only unmounts the directory's bpffs (for `LB_TESTS_KEEP_DIR`).
fn remove_topology_dir_bpffs_only(dir: &Path) -> std::io::Result<()> {
    let target = CString::new(dir.join("bpffs").as_os_str().as_bytes())?;
    // SAFETY: a valid C string.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Removes `<tmp>/lbt<PID>x<N>` directories of harness processes that no
/// longer run (killed before they could clean up).
pub(crate) fn sweep_stale_dirs() {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("lbt") else {
            continue;
        };
        let Some((pid, n)) = rest.split_once('x') else {
            continue;
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if digits(pid) && digits(n) && !Path::new("/proc").join(pid).exists() {
            remove_topology_dir(&e.path());
        }
    }
}
impl Drop for Topology {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if panicking {
            eprintln!("lb-tests: topology {} torn down while panicking; logs:\n{}", self.prefix, self.logs());
        }
        for s in &mut self.servers {
            s.stop();
        }
        self.servers.clear();
        if let Some(mut c) = self.lb_proc.take() {
            c.stop(Duration::from_secs(2));
        }
        if self.pins_left
            && let Err(e) = self.detach_lb()
        {
            // Deleting the namespace and the bpffs below frees them anyway.
            eprintln!("lb-tests: cleanup: {e:#}");
        }
        for c in &mut self.decaps {
            c.stop(Duration::from_secs(2));
        }
        self.decaps.clear();
        self.xdp_links.clear();
        // Deleting a namespace deletes its end of every veth, and so both.
        while let Some(mut ns) = self.namespaces.pop() {
            if let Err(e) = ns.delete() {
                eprintln!("lb-tests: cleanup: {e:#}");
            }
        }
        if std::env::var_os("LB_TESTS_KEEP_DIR").is_some() {
            let _ = remove_topology_dir_bpffs_only(&self.dir);
            eprintln!("lb-tests: kept {}", self.dir.display());
        } else {
            remove_topology_dir(&self.dir);
        }
    }
}
