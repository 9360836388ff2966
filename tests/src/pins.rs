//! A bpffs directory of a test's own pins, removed when the test ends,
//! also when it fails.

use std::path::{Path, PathBuf};

pub struct PinDir(PathBuf);

impl PinDir {
    /// `/sys/fs/bpf/lb-test-<name>-<pid>`, or None (with a note on stderr)
    /// without root or bpffs.
    pub fn new(name: &str) -> Option<PinDir> {
        if !crate::netns::is_root() || !Path::new("/sys/fs/bpf").is_dir() {
            eprintln!("skipped: needs root and bpffs at /sys/fs/bpf");
            return None;
        }
        Some(PinDir(PathBuf::from(format!("/sys/fs/bpf/lb-test-{name}-{}", std::process::id()))))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
