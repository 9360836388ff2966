//! Points the crate at the eBPF objects built by `cargo xtask build-ebpf`
//! (nightly + bpf-linker); the objects are embedded in the `lb` binary.

use std::{env, path::PathBuf};

fn main() {
    println!("cargo:rustc-env=LB_GIT_COMMIT={}", git_commit());
    println!("cargo:rerun-if-env-changed=LB_EBPF_DIR");
    let dir = env::var_os("LB_EBPF_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("../target/ebpf/bpfel-unknown-none/release")
    });
    for (object, var) in [("lb-balancer", "LB_BALANCER_OBJ"), ("lb-decap", "LB_DECAP_OBJ")] {
        let path = dir.join(object);
        if !path.is_file() {
            panic!(
                "\n\nlb's eBPF object {} is missing.\nBuild it first with `cargo xtask build-ebpf` \
                 (or use `cargo xtask build` / `cargo xtask test`, which do it for you),\n\
                 or point LB_EBPF_DIR at a directory that holds lb-balancer and lb-decap.\n",
                path.display()
            );
        }
        println!("cargo:rerun-if-changed={}", path.display());
        println!("cargo:rustc-env={var}={}", path.canonicalize().unwrap().display());
    }
}

/// The commit `lb --version` names: `$LB_GIT_COMMIT` (for builds outside a
/// checkout), else `git rev-parse`, else "unknown". Reruns when HEAD moves.
fn git_commit() -> String {
    println!("cargo:rerun-if-env-changed=LB_GIT_COMMIT");
    if let Ok(c) = env::var("LB_GIT_COMMIT") {
        return c;
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env::var("CARGO_MANIFEST_DIR").unwrap())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]).map(PathBuf::from) {
        let head = dir.join("HEAD");
        let reference =
            std::fs::read_to_string(&head).ok().and_then(|h| h.strip_prefix("ref: ").map(|r| dir.join(r.trim())));
        for path in [Some(head), reference, Some(dir.join("packed-refs"))].into_iter().flatten() {
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
}
