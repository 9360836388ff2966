//! Indices of the global per-CPU `STATS` array: every verdict the program
//! takes is counted under exactly one reason (plus the conntrack counters).

macro_rules! stats {
    ($($(#[$doc:meta])* $name:ident = $idx:expr, $label:literal;)*) => {
        $($(#[$doc])* pub const $name: u32 = $idx;)*
        /// Number of entries in `STATS`.
        pub const COUNT: u32 = [$($idx),*].len() as u32;
        /// Metric label of each index, in index order.
        pub const LABELS: [&str; COUNT as usize] = [$($label),*];
    };
}

stats! {
    /// Not IPv4/IPv6 (ARP, LLDP, ...): passed to the kernel.
    PASS_NON_IP = 0, "pass_non_ip";
    /// IP traffic not addressed to a VIP (address, port, protocol): passed.
    PASS_NOT_VIP = 1, "pass_not_vip";
    /// More VLAN tags than `MAX_VLAN_TAGS`: passed untouched.
    PASS_VLAN_DEPTH = 2, "pass_vlan_depth";
    /// Truncated or invalid IP/TCP/UDP header (length, version, IHL): dropped.
    DROP_MALFORMED = 3, "drop_malformed";
    /// IPv4 or IPv6 fragment addressed to a VIP address: dropped (ports unknown).
    DROP_FRAGMENT = 4, "drop_fragment";
    /// IPv4 header with options addressed to a VIP address: dropped.
    DROP_IP_OPTIONS = 5, "drop_ip_options";
    /// IPv6 extension header (other than a fragment) to a VIP address: dropped.
    DROP_IPV6_EXT = 6, "drop_ipv6_ext";
    /// The VIP has no backend in its ring: dropped.
    DROP_NO_BACKEND = 7, "drop_no_backend";
    /// bpf_xdp_adjust_head failed (no headroom): dropped.
    DROP_ENCAP = 8, "drop_encap";
    /// The connection-table insert failed (another CPU was writing the
    /// flow's set, or the table has no key yet); the packet is still
    /// forwarded.
    CONNTRACK_FULL = 9, "conntrack_insert_failed";
    /// Established flow found in the connection table.
    CONNTRACK_HIT = 10, "conntrack_hit";
    /// Flow not in the table (or a SYN): backend picked from the ring.
    CONNTRACK_MISS = 11, "conntrack_miss";
    /// Table entry pointed to a removed backend: re-picked from the ring.
    CONNTRACK_REPICK = 12, "conntrack_repick";
    /// Forwarded with IP-in-IP encapsulation.
    TX_IPIP = 13, "tx_ipip";
    /// Forwarded by L2 direct server return.
    TX_L2DSR = 14, "tx_l2dsr";
    /// The ring pointed to a backend slot that is empty or of the wrong family.
    DROP_BAD_BACKEND = 15, "drop_bad_backend";
    /// Encapsulated, the packet would exceed the path MTU: answered with
    /// ICMP fragmentation-needed / ICMPv6 packet-too-big.
    TX_ICMP_TOO_BIG = 16, "tx_icmp_too_big";
    /// Too big to encapsulate and not answerable (IPv4 without DF, or
    /// `too_big = "drop"`): dropped.
    DROP_TOO_BIG = 17, "drop_too_big";
    /// ICMP / ICMPv6 echo request to a VIP address: answered by lb.
    TX_ICMP_ECHO_REPLY = 18, "tx_icmp_echo_reply";
    /// An ICMP error about a VIP flow, sent on to the flow's backend (also
    /// counted under the forwarding reason).
    ICMP_ERROR_FORWARDED = 19, "icmp_error_forwarded";
    /// New flow forwarded by its ring entry but not recorded: this CPU's
    /// new-flow budget (`GlobalConfig::new_flow_limit`) for the second is
    /// spent, so a flood cannot evict established flows from the table.
    CONNTRACK_GUARDED = 20, "conntrack_guarded";
    /// A VIP packet in a frame addressed to another host's MAC: passed (the
    /// kernel drops it), never forwarded twice.
    PASS_OTHER_HOST = 21, "pass_other_host";
    /// A new flow's entry replaced that of a flow not closed by FIN or RST
    /// (UDP flows never are), the one idle longest in its set. Many of them
    /// while the table holds live flows: the table is too small (an evicted
    /// flow's next packet is re-picked from the ring).
    CONNTRACK_EVICTED = 22, "conntrack_evicted";
}

/// Indices of the decapsulation program's `DECAP_STATS` array.
pub mod decap {
    /// IPv4-in-IPv4 packets decapsulated.
    pub const IPIP: u32 = 0;
    /// IPv6-in-IPv6 packets decapsulated.
    pub const IP6IP6: u32 = 1;
    /// Anything else: passed untouched.
    pub const PASS: u32 = 2;
    /// Truncated tunnel packets: dropped.
    pub const DROP_MALFORMED: u32 = 3;
    pub const COUNT: u32 = 4;
    pub const LABELS: [&str; COUNT as usize] = ["ipip", "ip6ip6", "pass", "drop_malformed"];
}
