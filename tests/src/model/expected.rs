//! What the model predicts for a frame: the XDP verdicts and their names, the known deviations, `Expected`.

use std::net::IpAddr;

use lb_common::{FlowKey, VipKey, stats};

/// XDP verdicts (enum xdp_action).
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

pub fn verdict_name(v: u32) -> &'static str {
    match v {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "unknown",
    }
}

pub fn stat_name(i: u32) -> &'static str {
    stats::LABELS.get(i as usize).copied().unwrap_or("?")
}

/// A known way in which the program departed from the spec the model follows
/// (both found by the differential fuzzer and fixed; kept so that a
/// regression is named as such).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Deviation {
    /// ICMP/ICMPv6 headers (and the header quoted in an error) are read up to
    /// the end of the frame instead of the end of the IP packet (its total /
    /// payload length): bytes of the Ethernet padding or trailer are taken as
    /// part of the message. TCP/UDP headers are bounded by the IP length.
    IcmpBeyondIpLength,
    /// The IPv6 header quoted in an ICMPv6 error is used whatever its version
    /// nibble; the IPv4 side requires a quoted 0x45.
    Icmpv6QuotedVersion,
}

impl Deviation {
    pub fn describe(self) -> &'static str {
        match self {
            Deviation::IcmpBeyondIpLength => {
                "ICMP/ICMPv6 parsing reads past the IP packet's length into the Ethernet padding/trailer \
                 (lb-ebpf/src/icmp.rs parse_v4/parse_v6 bound their loads by the frame, not by the IP \
                 total/payload length as parse_l4 does for TCP/UDP); fix: give them the end of the IP \
                 packet (l2 + ip_len) and treat a message or quote that does not fit before it as not lb's"
            }
            Deviation::Icmpv6QuotedVersion => {
                "an ICMPv6 error quoting a header whose version is not 6 is taken as being about a VIP flow \
                 (lb-ebpf/src/icmp.rs parse_v6 checks only the quoted next header; parse_v4 requires 0x45); \
                 fix: also require inner.vtc_flow[0] >> 4 == 6"
            }
        }
    }
}

/// What the model expects the program to do with one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub verdict: u32,
    /// The one `stats` reason the packet is counted under (bytes: frame length).
    pub reason: u32,
    /// The frame as the program leaves it (the input itself on PASS/DROP).
    pub output: Vec<u8>,
    /// The README rule that decided, for messages.
    pub rule: &'static str,
    /// The VIP whose `VIP_STATS` count the packet (a VIP (address, port,
    /// protocol) was matched, by the packet's flow or an ICMP error's).
    pub vip: Option<VipKey>,
    /// `CONNTRACK_HIT`, `CONNTRACK_MISS` or `CONNTRACK_REPICK` when a backend
    /// was looked for.
    pub conntrack: Option<u32>,
    /// The backend the packet goes to (XDP_TX through a backend).
    pub backend: Option<IpAddr>,
    /// The backend the ring gave a client's flow; its `BACKEND_FLOWS` goes up
    /// and the flow is recorded with it (also when then answered too-big).
    pub new_flow: Option<IpAddr>,
    /// The flow the connection table must map to `new_flow` afterwards.
    pub record: Option<FlowKey>,
    /// The flow of an ICMP error about a VIP flow: it must not be recorded.
    pub icmp_error_flow: Option<FlowKey>,
    /// `ICMP_ERROR_FORWARDED` goes up too.
    pub icmp_error_forwarded: bool,
    /// What the program does instead, where a known deviation applies.
    pub product: Option<(Deviation, Box<Expected>)>,
}

impl Expected {
    pub(super) fn untouched(verdict: u32, reason: u32, frame: &[u8], rule: &'static str) -> Expected {
        Expected {
            verdict,
            reason,
            output: frame.to_vec(),
            rule,
            vip: None,
            conntrack: None,
            backend: None,
            new_flow: None,
            record: None,
            icmp_error_flow: None,
            icmp_error_forwarded: false,
            product: None,
        }
    }

    pub(super) fn sent(reason: u32, output: Vec<u8>, rule: &'static str) -> Expected {
        Expected { output, ..Expected::untouched(XDP_TX, reason, &[], rule) }
    }

    /// Every `STATS` index that goes up by one packet, with its byte count
    /// (the reason counts the frame's bytes, the extra counters none).
    pub fn stats(&self, frame_len: u64) -> Vec<(u32, u64)> {
        let mut v = vec![(self.reason, frame_len)];
        if let Some(c) = self.conntrack {
            v.push((c, 0));
        }
        if self.icmp_error_forwarded {
            v.push((stats::ICMP_ERROR_FORWARDED, 0));
        }
        v
    }

    pub fn summary(&self) -> String {
        let mut s = format!("{} {} ({})", verdict_name(self.verdict), stat_name(self.reason), self.rule);
        if let Some(b) = self.backend {
            s.push_str(&format!(" -> backend {b}"));
        }
        if let Some(c) = self.conntrack {
            s.push_str(&format!(", {}", stat_name(c)));
        }
        s
    }
}
