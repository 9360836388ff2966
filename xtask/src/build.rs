//! Building: the eBPF objects with the nightly toolchain, the host crates with
//! the toolchain that runs xtask.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::cmd::Cmd;
use crate::setup::{NIGHTLY, Setup};
use crate::util::{host_target_dir, step, which};

/// The eBPF crate and its target.
pub const EBPF_PACKAGE: &str = "lb-ebpf";
pub const EBPF_TARGET: &str = "bpfel-unknown-none";
/// The binaries of lb-ebpf, i.e. the object files lb loads.
pub const EBPF_OBJECTS: &[&str] = &["lb-balancer", "lb-decap"];

/// Rustflags of the eBPF build, in CARGO_ENCODED_RUSTFLAGS form (0x1f between
/// arguments): full debuginfo and `--btf`, so the objects carry BTF.
const EBPF_ENCODED_RUSTFLAGS: &str = "-C\x1fdebuginfo=2\x1f-C\x1flink-arg=--btf";

/// Variables an outer `cargo run` (or a user) may set that would otherwise make
/// the nested nightly cargo use the wrong compiler, toolchain or flags.
const EBPF_ENV_REMOVE: &[&str] = &[
    "RUSTC",
    "RUSTDOC",
    "CARGO",
    "RUSTUP_TOOLCHAIN",
    "RUSTUP_TOOLCHAIN_SOURCE",
    "RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
];

/// `target/ebpf`, the eBPF build's own target directory (kept apart so host
/// and eBPF builds never invalidate each other).
pub fn ebpf_target_dir(root: &Path) -> PathBuf {
    root.join("target").join("ebpf")
}

/// The directory holding the built objects: `target/ebpf/bpfel-unknown-none/release`.
pub fn ebpf_out_dir(root: &Path) -> PathBuf {
    ebpf_target_dir(root).join(EBPF_TARGET).join("release")
}

/// Removes what the outer `cargo run` put into our environment for xtask
/// itself (package metadata), which means nothing to a nested cargo.
fn strip_cargo_run_env(cmd: &mut Cmd) {
    for (key, _) in env::vars_os() {
        let key_str = key.to_string_lossy();
        if key_str.starts_with("CARGO_PKG_")
            || matches!(
                key_str.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            )
        {
            cmd.env_remove(&key);
        }
    }
}

/// `cargo xtask build-ebpf`: builds lb-ebpf with nightly, returns the
/// directory holding the objects.
pub fn build_ebpf(root: &Path, setup: &Setup) -> Result<PathBuf> {
    step("building the eBPF objects (nightly, bpfel-unknown-none)");
    let mut cmd = Cmd::new("rustup");
    cmd.args(["run", NIGHTLY, "cargo", "build"])
        .args(["-p", EBPF_PACKAGE, "--release", "--target", EBPF_TARGET])
        .args(["-Z", "build-std=core", "--target-dir"])
        .arg(ebpf_target_dir(root))
        .current_dir(root)
        .env("CARGO_ENCODED_RUSTFLAGS", EBPF_ENCODED_RUSTFLAGS);
    for var in EBPF_ENV_REMOVE {
        cmd.env_remove(var);
    }
    strip_cargo_run_env(&mut cmd);
    // rustc finds the linker by name: make sure the bpf-linker that setup
    // checked is the one it runs (it may not be first on PATH).
    if which("bpf-linker").as_deref() != Some(setup.bpf_linker.as_path())
        && let Some(dir) = setup.bpf_linker.parent()
    {
        let path = env::var_os("PATH").unwrap_or_default();
        let mut dirs: Vec<PathBuf> = vec![dir.to_path_buf()];
        dirs.extend(env::split_paths(&path));
        let joined: OsString = env::join_paths(dirs).context("a directory in PATH contains a ':'")?;
        cmd.env("PATH", joined);
    }
    cmd.run().context("building the eBPF crate failed (see the compiler output above)")?;

    let out = ebpf_out_dir(root);
    for obj in EBPF_OBJECTS {
        let path = out.join(obj);
        if !path.is_file() {
            bail!(
                "the eBPF build succeeded but {} is missing; does lb-ebpf still define the bin `{obj}`?",
                path.display()
            );
        }
        step(format!("eBPF object: {}", path.display()));
    }
    Ok(out)
}

/// A host `cargo` invocation (same toolchain as the one running xtask), run
/// from the workspace root with the variables lb's build script and the tests
/// read: `LB_EBPF_DIR` (absolute dir of the eBPF objects) and `LB_BIN`
/// (absolute path of the `lb` binary of this profile).
pub fn host_cargo(root: &Path, subcommand: &str, release: bool) -> Cmd {
    let mut cmd = Cmd::new("cargo");
    cmd.arg(subcommand);
    if release {
        cmd.arg("--release");
    }
    cmd.current_dir(root).env("LB_EBPF_DIR", ebpf_out_dir(root)).env("LB_BIN", lb_bin(root, release));
    // Leave RUSTUP_TOOLCHAIN so the nested cargo uses the outer toolchain.
    cmd.env_remove("RUSTC").env_remove("RUSTDOC").env_remove("CARGO");
    strip_cargo_run_env(&mut cmd);
    cmd
}

/// `<target>/<debug|release>/<name>` of a host binary.
pub fn host_bin(root: &Path, release: bool, name: &str) -> PathBuf {
    host_target_dir(root).join(if release { "release" } else { "debug" }).join(name)
}

/// The `lb` binary of the given profile.
pub fn lb_bin(root: &Path, release: bool) -> PathBuf {
    host_bin(root, release, "lb")
}

/// `cargo xtask build`: eBPF objects, then `lb`, the tests' binaries and the demo.
pub fn build_all(root: &Path, setup: &Setup, release: bool) -> Result<()> {
    build_ebpf(root, setup)?;
    host_cargo(root, "build", release)
        .args(["-p", "lb-userspace", "-p", "lb-tests", "--bins"])
        .run()
        .context("building the host crates failed")?;
    step(format!("lb: {}", lb_bin(root, release).display()));
    Ok(())
}
