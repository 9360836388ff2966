//! lb's userspace: configuration, Maglev tables, and the owner of the data
//! path's maps. The `lb` binary (src/main.rs) is the CLI and agent on top.

pub mod agent;
pub mod config;
pub mod dataplane;
pub mod decap;
pub mod maglev;
pub mod neighbour;
pub mod objects;
pub mod swrr;

/// Wall-clock milliseconds since the epoch (0 before it), the time stamps of
/// status, transitions and events.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
