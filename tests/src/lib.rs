//! Test support for lb: packet builders for the BPF_PROG_TEST_RUN fixtures,
//! and a veth/netns harness (namespaces, topology, traffic) shared by the
//! end-to-end tests and `lb-demo`.

pub mod ecmp;
pub mod livegen;
pub mod model;
pub mod netns;
pub mod packet;
pub mod pins;
pub mod poll;
pub mod rng;
pub mod topology;
pub mod traffic;
pub mod upload;
pub mod xdp;
