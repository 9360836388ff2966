//! The balancer program's own pieces: its maps, counters, connection table
//! and backend selection.

pub mod active;
pub mod atomic;
pub mod capture;
pub mod clock;
pub mod conntrack;
pub mod counters;
pub mod maps;
pub mod select;
pub mod vips;
