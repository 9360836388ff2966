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
