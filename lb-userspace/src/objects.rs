//! The eBPF objects, embedded at build time (see build.rs).

/// `lb_balancer` and its maps.
pub static BALANCER: &[u8] = aya::include_bytes_aligned!(env!("LB_BALANCER_OBJ"));

/// `lb_decap` (for backends), `lb_pass` and `lb_drop` (reference programs).
pub static DECAP: &[u8] = aya::include_bytes_aligned!(env!("LB_DECAP_OBJ"));
