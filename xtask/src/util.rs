//! Small helpers: paths of the workspace, root check, PATH lookup.

use std::env;
use std::path::{Path, PathBuf};

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().expect("xtask lives one level below the workspace root").to_path_buf()
}

/// The host target directory: `CARGO_TARGET_DIR` (relative to the workspace
/// root, where the child cargo runs) when set, else `<root>/target`.
pub fn host_target_dir(root: &Path) -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR").or_else(|| env::var_os("CARGO_BUILD_TARGET_DIR")) {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// Whether this process runs with effective uid 0 (read from /proc, so that
/// xtask needs no libc binding).
pub fn is_root() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

/// Finds an executable on PATH, like `command -v`.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false))
}

/// `$CARGO_HOME/bin`, where `cargo install` puts binaries.
pub fn cargo_home_bin() -> Option<PathBuf> {
    let home = env::var_os("CARGO_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    Some(home.join("bin"))
}

/// Prints a step message of `setup` and the build steps.
pub fn step(msg: impl std::fmt::Display) {
    eprintln!("[xtask] {msg}");
}

/// Prints a warning.
pub fn warn(msg: impl std::fmt::Display) {
    eprintln!("[xtask] warning: {msg}");
}
