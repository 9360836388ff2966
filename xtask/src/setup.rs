//! `cargo xtask setup`: makes sure everything the build and the tests need is
//! present. Idempotent, and cheap when nothing is missing (a handful of local
//! probes, no network).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use crate::cmd::Cmd;
use crate::util::{cargo_home_bin, is_root, step, warn, which};

/// The rustup toolchain that builds the eBPF crate (never pinned to a date).
pub const NIGHTLY: &str = "nightly";

/// The bpf-linker release to install.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// Where bpffs must be mounted (pinned maps live there).
pub const BPF_FS: &str = "/sys/fs/bpf";

/// A Debian package the tests need, and a command that proves it is present.
pub struct DebPackage {
    pub name: &'static str,
    pub command: &'static str,
}

/// Debian packages the tests use. Add new ones here.
pub const DEBIAN_PACKAGES: &[DebPackage] = &[
    DebPackage { name: "iproute2", command: "ip" },
    DebPackage { name: "ethtool", command: "ethtool" },
    // BIRD 2 for the ECMP tests (tests/tests/ecmp.rs); its systemd service
    // does not matter: the tests run `bird -f` in their own namespaces.
    DebPackage { name: "bird2", command: "bird" },
];

/// What the nightly toolchain looks like.
pub struct Nightly {
    /// `rustc +nightly --print sysroot`
    pub sysroot: PathBuf,
    /// `release:` of `rustc +nightly -vV`, e.g. `1.97.0-nightly`
    pub release: String,
    /// `LLVM version:` of `rustc +nightly -vV`, e.g. `22.1.4`
    pub llvm_version: String,
    /// Its major, e.g. 22
    pub llvm_major: u32,
}

/// The result of a successful setup.
pub struct Setup {
    /// The bpf-linker binary that passed the checks.
    pub bpf_linker: PathBuf,
}

/// Runs every setup step in order.
pub fn setup() -> Result<Setup> {
    ensure_nightly()?;
    ensure_rust_src()?;
    let nightly = nightly_info()?;
    let bpf_linker = ensure_bpf_linker(&nightly)?;
    ensure_debian_packages()?;
    ensure_bpffs()?;
    Ok(Setup { bpf_linker })
}

// ---------------------------------------------------------------- toolchain

fn is_plain_nightly(name: &str) -> bool {
    // `nightly` or `nightly-<host triple>`, but not a dated `nightly-2026-05-01-...`.
    name == NIGHTLY || name.strip_prefix("nightly-").is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
}

fn ensure_nightly() -> Result<()> {
    let list = Cmd::new("rustup")
        .args(["toolchain", "list"])
        .read()
        .context("could not list rustup toolchains; is rustup installed (https://rustup.rs)?")?;
    let found = list.lines().filter_map(|l| l.split_whitespace().next()).find(|name| is_plain_nightly(name));
    match found {
        Some(name) => {
            step(format!("nightly toolchain: ok ({name})"));
            Ok(())
        }
        None => bail!(
            "the `nightly` rustup toolchain is missing (the eBPF crate needs it); \
             install it by hand with:\n    rustup toolchain install nightly\n\
             (toolchains present:\n{})",
            list.trim_end()
        ),
    }
}

fn ensure_rust_src() -> Result<()> {
    let installed = Cmd::new("rustup")
        .args(["component", "list", "--toolchain", NIGHTLY, "--installed"])
        .read()
        .context("could not list the nightly toolchain's components")?;
    if installed.lines().any(|l| l.split_whitespace().next() == Some("rust-src")) {
        step("rust-src for nightly: ok");
        return Ok(());
    }
    step("rust-src for nightly: missing, installing it (needed by -Z build-std=core)");
    Cmd::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]).run().context(
        "installing rust-src failed; install it by hand with:\n    \
             rustup component add rust-src --toolchain nightly",
    )?;
    Ok(())
}

/// Queries the nightly rustc for its version, LLVM version and sysroot.
pub fn nightly_info() -> Result<Nightly> {
    let vv = nightly_rustc()
        .arg("-vV")
        .read()
        .context("`rustup run nightly rustc -vV` failed; is the nightly toolchain complete?")?;
    let field = |key: &str| {
        vv.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| anyhow!("no `{key}` line in `rustc +nightly -vV`:\n{vv}"))
    };
    let release = field("release:")?;
    let llvm_version = field("LLVM version:")?;
    let llvm_major = llvm_version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("cannot parse the LLVM major from `{llvm_version}`"))?;
    let sysroot = nightly_rustc()
        .args(["--print", "sysroot"])
        .read()
        .context("`rustup run nightly rustc --print sysroot` failed")?;
    Ok(Nightly { sysroot: PathBuf::from(sysroot.trim()), release, llvm_version, llvm_major })
}

fn nightly_rustc() -> Cmd {
    let mut cmd = Cmd::new("rustup");
    cmd.args(["run", NIGHTLY, "rustc"]);
    for var in ["RUSTC", "RUSTUP_TOOLCHAIN", "RUSTUP_TOOLCHAIN_SOURCE"] {
        cmd.env_remove(var);
    }
    cmd
}

// ---------------------------------------------------------------- bpf-linker

fn ensure_bpf_linker(nightly: &Nightly) -> Result<PathBuf> {
    // The one on PATH first, then the one `cargo install` manages (it may be
    // shadowed on PATH; build-ebpf then puts its directory first).
    let mut candidates: Vec<PathBuf> = which("bpf-linker").into_iter().collect();
    if let Some(p) = cargo_home_bin().map(|d| d.join("bpf-linker"))
        && p.is_file()
        && !candidates.contains(&p)
    {
        candidates.push(p);
    }
    let mut reasons = Vec::new();
    for path in &candidates {
        match check_bpf_linker(path, nightly) {
            Ok(()) => {
                step(format!(
                    "bpf-linker {BPF_LINKER_VERSION}: ok ({}, uses nightly's libLLVM {})",
                    path.display(),
                    nightly.llvm_version
                ));
                return Ok(path.clone());
            }
            Err(e) => reasons.push(format!("{e:#}")),
        }
    }
    let reason = if reasons.is_empty() { "bpf-linker is not installed".to_owned() } else { reasons.join("; ") };
    step(format!("bpf-linker {BPF_LINKER_VERSION}: needs (re)building: {reason}"));
    step(format!(
        "building bpf-linker {BPF_LINKER_VERSION} against the libLLVM {} of nightly {} \
         (takes about a minute)",
        nightly.llvm_version, nightly.release
    ));
    let manual = manual_bpf_linker_help(nightly);
    install_bpf_linker(nightly).with_context(|| format!("building bpf-linker failed; {manual}"))?;

    let installed = cargo_home_bin()
        .map(|d| d.join("bpf-linker"))
        .context("cannot find CARGO_HOME (neither CARGO_HOME nor HOME is set)")?;
    check_bpf_linker(&installed, nightly)
        .with_context(|| format!("bpf-linker was built but {} still fails the check; {manual}", installed.display()))?;
    if which("bpf-linker").as_deref() != Some(installed.as_path()) {
        warn(format!(
            "{} is not the first bpf-linker on PATH; xtask puts its directory first \
             for its own builds, but add it to PATH for other uses",
            installed.display()
        ));
    }
    step(format!("bpf-linker {BPF_LINKER_VERSION}: installed at {}", installed.display()));
    Ok(installed)
}

/// `bpf-linker --version` must report the wanted version, and `ldd` must
/// resolve every library, libLLVM from `<nightly sysroot>/lib`.
fn check_bpf_linker(path: &Path, nightly: &Nightly) -> Result<()> {
    let version = Cmd::new(path)
        .arg("--version")
        .read()
        .with_context(|| format!("`{} --version` does not work", path.display()))?;
    let version = version.trim();
    if version.split_whitespace().nth(1) != Some(BPF_LINKER_VERSION) {
        bail!("`{} --version` says `{version}`, want {BPF_LINKER_VERSION}", path.display());
    }

    let ldd =
        Cmd::new("ldd").arg(path).read().with_context(|| format!("cannot list the libraries of {}", path.display()))?;
    let llvm = libllvm_from_ldd(&ldd).with_context(|| format!("`ldd {}`", path.display()))?;
    let lib_dir = nightly.sysroot.join("lib");
    let lib_dir = fs::canonicalize(&lib_dir).unwrap_or(lib_dir);
    let resolved = fs::canonicalize(&llvm).unwrap_or_else(|_| llvm.clone());
    if !resolved.starts_with(&lib_dir) {
        bail!(
            "{} uses {}, not the libLLVM of the nightly toolchain in {}",
            path.display(),
            llvm.display(),
            lib_dir.display()
        );
    }
    Ok(())
}

/// From `ldd` output: the path libLLVM resolves to; an error when some
/// library is not found or no libLLVM is linked.
fn libllvm_from_ldd(ldd: &str) -> Result<PathBuf> {
    let missing: Vec<&str> = ldd.lines().map(str::trim).filter(|l| l.contains("not found")).collect();
    if !missing.is_empty() {
        bail!("cannot resolve: {}", missing.join(", "));
    }
    ldd.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("libLLVM"))
        .find_map(|l| l.split_once("=>"))
        .map(|(_, rest)| PathBuf::from(rest.split(" (").next().unwrap_or("").trim()))
        .context("no shared libLLVM linked")
}

/// The real libLLVM shared object of the toolchain, e.g.
/// `<sysroot>/lib/libLLVM.so.22.1-rust-1.97.0-nightly`.
fn find_libllvm(nightly: &Nightly) -> Result<PathBuf> {
    let lib_dir = nightly.sysroot.join("lib");
    let mut names: Vec<String> = fs::read_dir(&lib_dir)
        .with_context(|| format!("cannot list {}", lib_dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("libLLVM") && n.contains(".so"))
        .collect();
    // Prefer the versioned `libLLVM.so.<ver>` (the DT_SONAME) over `libLLVM-<ver>.so`.
    names.sort_by_key(|n| (!n.starts_with("libLLVM.so."), n.clone()));
    let name = names
        .into_iter()
        .next()
        .with_context(|| format!("no libLLVM*.so* in {}; the nightly toolchain should ship one", lib_dir.display()))?;
    Ok(lib_dir.join(name))
}

fn install_bpf_linker(nightly: &Nightly) -> Result<()> {
    let libllvm = find_libllvm(nightly)?;
    let tmp = std::env::temp_dir().join(format!("xtask-bpf-linker-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let result = (|| {
        let link = tmp.join("libLLVM.so");
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("cannot symlink {} -> {}", link.display(), libllvm.display()))?;
        match cargo_install(nightly, &tmp, true) {
            Ok(()) => Ok(()),
            Err(e) => {
                warn(format!("`cargo install --locked` failed ({e:#}); retrying without --locked"));
                cargo_install(nightly, &tmp, false)
            }
        }
    })();
    let _ = fs::remove_dir_all(&tmp);
    result
}

fn cargo_install(nightly: &Nightly, link_dir: &Path, locked: bool) -> Result<()> {
    let mut cmd = Cmd::new("cargo");
    cmd.args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}")]);
    if locked {
        cmd.arg("--locked");
    }
    cmd.args(["--force", "--no-default-features", "--features"])
        .arg(format!("llvm-{}", nightly.llvm_major))
        .env("LLVM_PREFIX", &nightly.sysroot)
        .env("RUSTFLAGS", format!("-L native={}", link_dir.display()))
        // Our RUSTFLAGS must be the only flags; the rest comes from the outer cargo.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("CARGO")
        // Outside the workspace, so its .cargo/config.toml plays no part.
        .current_dir(link_dir);
    cmd.run()
}

fn manual_bpf_linker_help(nightly: &Nightly) -> String {
    let libllvm = find_libllvm(nightly)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| format!("{}/lib/libLLVM.so.<version>", nightly.sysroot.display()));
    format!(
        "to build it by hand (bpf-linker must use the nightly's own libLLVM):\n    \
         d=$(mktemp -d) && ln -s {libllvm} \"$d/libLLVM.so\"\n    \
         LLVM_PREFIX={sysroot} RUSTFLAGS=\"-L native=$d\" cargo install bpf-linker@{BPF_LINKER_VERSION} \
         --locked --force --no-default-features --features llvm-{major}",
        sysroot = nightly.sysroot.display(),
        major = nightly.llvm_major,
    )
}

// ---------------------------------------------------------------- packages

fn deb_installed(pkg: &DebPackage) -> bool {
    if which(pkg.command).is_some()
        || ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].iter().any(|d| Path::new(d).join(pkg.command).is_file())
    {
        return true;
    }
    Cmd::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg.name])
        .read()
        .is_ok_and(|s| s.trim() == "install ok installed")
}

fn ensure_debian_packages() -> Result<()> {
    let all: Vec<&str> = DEBIAN_PACKAGES.iter().map(|p| p.name).collect();
    let missing: Vec<&str> = DEBIAN_PACKAGES.iter().filter(|p| !deb_installed(p)).map(|p| p.name).collect();
    if missing.is_empty() {
        step(format!("Debian packages ({}): ok", all.join(", ")));
        return Ok(());
    }
    let by_hand = format!("apt-get update && apt-get install -y --no-install-recommends {}", missing.join(" "));
    if !is_root() {
        warn(format!(
            "Debian packages missing: {} (the tests need them); not root, so not \
             installing them. By hand: sudo sh -c '{by_hand}'",
            missing.join(", ")
        ));
        return Ok(());
    }
    if which("apt-get").is_none() {
        bail!(
            "packages missing: {} and there is no apt-get here; install the \
             equivalent packages with your distribution's package manager",
            missing.join(", ")
        );
    }
    step(format!("Debian packages missing: {}; installing them", missing.join(", ")));
    let fix = || format!("installing Debian packages failed; by hand: {by_hand}");
    Cmd::new("apt-get").args(["update", "-q"]).env("DEBIAN_FRONTEND", "noninteractive").run().with_context(fix)?;
    Cmd::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()
        .with_context(fix)?;
    let still: Vec<&str> = DEBIAN_PACKAGES.iter().filter(|p| !deb_installed(p)).map(|p| p.name).collect();
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(", "));
    }
    step(format!("Debian packages ({}): installed", all.join(", ")));
    Ok(())
}

// ---------------------------------------------------------------- bpffs

fn bpffs_mounted() -> bool {
    fs::read_to_string("/proc/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype) = (f.next(), f.next(), f.next());
            dir == Some(BPF_FS) && fstype == Some("bpf")
        })
    })
}

fn ensure_bpffs() -> Result<()> {
    if bpffs_mounted() {
        step(format!("bpffs at {BPF_FS}: mounted"));
        return Ok(());
    }
    if !is_root() {
        warn(format!(
            "bpffs is not mounted at {BPF_FS} and we are not root; the tests need it: \
             sudo mount -t bpf bpf {BPF_FS}"
        ));
        return Ok(());
    }
    step(format!("bpffs at {BPF_FS}: not mounted, mounting it"));
    let fix = || format!("mounting bpffs failed; by hand: mount -t bpf bpf {BPF_FS}");
    if !Path::new(BPF_FS).is_dir() {
        fs::create_dir_all(BPF_FS).with_context(fix)?;
    }
    Cmd::new("mount").args(["-t", "bpf", "bpf", BPF_FS]).run().with_context(fix)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nightly_names() {
        assert!(is_plain_nightly("nightly"));
        assert!(is_plain_nightly("nightly-x86_64-unknown-linux-gnu"));
        assert!(!is_plain_nightly("nightly-2026-05-01-x86_64-unknown-linux-gnu"));
        assert!(!is_plain_nightly("stable-x86_64-unknown-linux-gnu"));
    }

    #[test]
    fn ldd_output() {
        let ok = "\tlinux-vdso.so.1 (0x00007f7fc187b000)\n\
            \tlibLLVM.so.22.1-rust-1.97.0-nightly => /root/.rustup/toolchains/nightly-x86_64-unknown-linux-gnu/lib/libLLVM.so.22.1-rust-1.97.0-nightly (0x00007f7fb6e00000)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f7fb6c1e000)\n";
        assert_eq!(
            libllvm_from_ldd(ok).unwrap(),
            PathBuf::from(
                "/root/.rustup/toolchains/nightly-x86_64-unknown-linux-gnu/lib/libLLVM.so.22.1-rust-1.97.0-nightly"
            )
        );
        let missing = "\tlibLLVM.so.21.1-rust-1.95.0-nightly => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n";
        assert!(libllvm_from_ldd(missing).is_err());
        let static_llvm = "\tlibc.so.6 => /lib/libc.so.6 (0x1)\n";
        assert!(libllvm_from_ldd(static_llvm).is_err());
    }
}
