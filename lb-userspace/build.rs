//! Points the crate at the eBPF objects built by `cargo xtask build-ebpf`
//! (nightly + bpf-linker); the objects are embedded in the `lb` binary.

use std::{env, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=LB_EBPF_DIR");
    let dir = env::var_os("LB_EBPF_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap())
            .join("../target/ebpf/bpfel-unknown-none/release")
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
