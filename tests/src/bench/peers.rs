//! Peer figures the targets are relative to (../shared/FIELD-NOTES.md):
//! Katran's own program measured on this kind of machine with a fresh frame
//! per run, ns per packet net of the XDP_DROP floor.

/// (case, Katran ns net of the floor, what Katran's figure is).
pub const KATRAN_NS: [(&str, f64, &str); 6] = [
    ("tcp_syn", 252.0, "TCP SYN with the connection-table insert"),
    ("tcp_syn_flood", 117.0, "TCP SYN without the table insert (its flood guard skips it at high rates)"),
    ("tcp_ack", 102.0, "TCP ACK hitting its connection table"),
    ("udp", 132.0, "UDP"),
    ("tcp6_syn", 127.0, "IPv6 TCP SYN (without table insert: its flood guard skips it)"),
    ("nonvip", 50.0, "non-VIP packet passed"),
];

/// The target: at most this share of Katran's figure.
pub const TARGET_SHARE: f64 = 0.7;

/// Katran's figure for a case, if there is one.
pub fn katran(case: &str) -> Option<f64> {
    KATRAN_NS.iter().find(|(c, ..)| *c == case).map(|(_, ns, _)| *ns)
}

/// Maglev paper (NSDI 2016): table of 65537 entries built in 1.8 ms.
pub const MAGLEV_PAPER_BUILD_MS: f64 = 1.8;
