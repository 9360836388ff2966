//! Packet-level building blocks shared by lb's XDP programs: bounds-checked
//! access, header layouts, parsing and the encapsulation writers. The maps and
//! program entry points live in the binaries (`main.rs`, `bin/decap.rs`).
#![no_std]

pub mod bounds;
pub mod encap;
pub mod headers;
pub mod icmp;
pub mod parse;

/// Shared by both programs: the verifier rejects any path that could panic,
/// so nothing reaches this.
#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    unsafe { core::hint::unreachable_unchecked() }
}
