//! Types, constants and pure logic shared by the XDP program (`lb-ebpf`) and
//! its userspace (`lb-userspace`, tests). Everything that crosses a BPF map is
//! `#[repr(C)]` with explicit padding and a size assert, so both sides agree
//! byte for byte.
#![no_std]

pub mod capture;
pub mod conn;
pub mod consts;
pub mod hash;
pub mod net;
pub mod stats;
pub mod types;

pub use conn::{ConnSet, ConnSlot, ConnTableKey};
pub use consts::*;
pub use types::*;
