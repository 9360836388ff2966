use lb_common::hash::flow_hash;

use super::*;

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}
fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn ipv4_header_matches_the_rfc1071_example() {
    // The header of lb-common's RFC 1071 test: 4500 0073 0000 4000 4011
    // [b861] c0a8 0001 c0a8 00c7, a UDP packet of 0x73 bytes.
    let pkt = Packet::new()
        .ipv4(v4("192.168.0.1"), v4("192.168.0.199"))
        .ip_id(0)
        .df()
        .ttl(64)
        .udp(1, 2)
        .payload(&[0; 0x73 - 28])
        .build_l3();
    assert_eq!(pkt[..20], hex("4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7")[..]);
    assert!(ipv4_header_csum_ok(&pkt[..20]));
    // Second opinion: lb-common's word-wise checksum.
    let mut words = [0u16; 10];
    for (i, w) in words.iter_mut().enumerate() {
        *w = if i == 5 { 0 } else { u16::from_ne_bytes([pkt[2 * i], pkt[2 * i + 1]]) };
    }
    assert_eq!(lb_common::net::ipv4_header_csum(&words).to_ne_bytes(), [0xb8, 0x61]);
}

#[test]
fn udp_checksum_known_vector() {
    // Worked by hand: 10.0.0.1:1234 -> 10.0.0.2:80, payload "hi".
    // Pseudo: 0a00+0001+0a00+0002+0011+000a = 0x141e; UDP: 04d2+0050+000a+
    // 6869 = 0x6d95; total 0x81b3 -> checksum !0x81b3 = 0x7e4c.
    let f = Packet::new().ipv4(v4("10.0.0.1"), v4("10.0.0.2")).udp(1234, 80).payload(b"hi").build();
    assert_eq!(f[14 + 20..], hex("04d2 0050 000a 7e4c 6869")[..]);
    assert!(l4_csum_ok(&f, 14));
    let bad = Packet::new().ipv4(v4("10.0.0.1"), v4("10.0.0.2")).udp(1234, 80).payload(b"hi").corrupt_l4_csum().build();
    assert!(!l4_csum_ok(&bad, 14));
}

#[test]
fn tcp_checksum_known_vector() {
    // Worked by hand: 10.0.0.1:1234 -> 10.0.0.2:80 SYN, seq 1, ack 0,
    // doff 5, window 0x1000. Pseudo 0a00+0001+0a00+0002+0006+0014 = 0x141d.
    // Header: 04d2+0050+0000+0001+0000+0000+5002+1000+0000+0000 = 0x6525.
    // Sum 0x7942 -> checksum !0x7942 = 0x86bd.
    let f = Packet::new().ipv4(v4("10.0.0.1"), v4("10.0.0.2")).tcp(1234, 80).seq(1).syn().window(0x1000).build();
    assert_eq!(f[14 + 20..], hex("04d2 0050 0000 0001 0000 0000 5002 1000 86bd 0000")[..]);
    assert!(l4_csum_ok(&f, 14));
}

#[test]
fn tcp_over_ipv6_checksum_verifies() {
    let f = Packet::new().dot1q(5).ipv6(v6("2001:db8::1"), v6("2001:db8::2")).tcp(1, 2).payload(b"odd").build();
    assert!(l4_csum_ok(&f, 18));
    // The checksum bytes are the only ones a one's-complement sum over
    // pseudo-header + segment can zero: flipping one bit breaks it.
    let mut g = f.clone();
    *g.last_mut().unwrap() ^= 1;
    assert!(!l4_csum_ok(&g, 18));
    // UDP over IPv6 and ICMPv6 too.
    let u = Packet::new().ipv6(v6("2001:db8::1"), v6("2001:db8::2")).udp(5, 6).payload(b"x").build();
    assert!(l4_csum_ok(&u, 14));
    let i = Packet::new().ipv6(v6("2001:db8::1"), v6("2001:db8::2")).icmp_echo(1, 2).build();
    assert!(l4_csum_ok(&i, 14));
}

#[test]
fn icmpv6_echo_known_vector() {
    // Worked by hand: ::1 -> ::2 echo request id 0 seq 0, no data.
    // Pseudo: 0001 + 0002 + len 0008 + nh 003a = 0x0045; message 8000 -> 0x8045;
    // checksum !0x8045 = 0x7fba.
    let f = Packet::new().ipv6(v6("::1"), v6("::2")).icmp_echo(0, 0).build();
    assert_eq!(f[14 + 40..], hex("8000 7fba 0000 0000")[..]);
}

#[test]
fn vlan_stack_and_ethernet_layout() {
    let f = Packet::new()
        .macs(mac("02:00:00:00:00:aa"), mac("02:00:00:00:00:bb"))
        .dot1ad(100)
        .dot1q(200)
        .vlan_tci(ETH_P_8021Q, 0xe00a)
        .raw_l3(0x88cc, &[1, 2, 3])
        .build();
    assert_eq!(f, hex("0200000000aa 0200000000bb 88a8 0064 8100 00c8 8100 e00a 88cc 010203"));
    assert_eq!(l2_len(&f), 14 + 12);
    assert_eq!(inner_ethertype(&f), 0x88cc);
}

#[test]
fn ipv4_fields_fragments_and_options() {
    let f = Packet::new()
        .ipv4(v4("1.2.3.4"), v4("5.6.7.8"))
        .tos(0xb8)
        .ttl(7)
        .ip_id(0xbeef)
        .mf()
        .frag_offset(185)
        .ipv4_options(&[0x94, 0x04, 0, 0]) // router alert
        .l4_raw(IPPROTO_UDP, &[0; 8])
        .build();
    let ip = &f[14..];
    assert_eq!(ip[0], 0x46);
    assert_eq!(ip[1], 0xb8);
    assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 24 + 8);
    assert_eq!(u16::from_be_bytes([ip[4], ip[5]]), 0xbeef);
    assert_eq!(u16::from_be_bytes([ip[6], ip[7]]), IPV4_MF | 185);
    assert_eq!(ip[8], 7);
    assert_eq!(ip[9], IPPROTO_UDP);
    assert!(ipv4_header_csum_ok(&ip[..24]));
    let bad = Packet::new().ipv4(v4("1.2.3.4"), v4("5.6.7.8")).corrupt_ipv4_csum().udp(1, 2).build();
    assert!(!ipv4_header_csum_ok(&bad[14..34]));
    let odd =
        Packet::new().ipv4(v4("1.2.3.4"), v4("5.6.7.8")).ihl(4).ip_version(6).ipv4_total_len(19).udp(1, 2).build();
    assert_eq!(odd[14], 0x64);
    assert_eq!(odd[16..18], [0, 19]);
    assert!(ipv4_header_csum_ok(&odd[14..34]));
}

#[test]
fn ipv6_fields_and_extension_chain() {
    let f = Packet::new()
        .ipv6(v6("2001:db8::1"), v6("2001:db8::2"))
        .traffic_class(0xb8)
        .flow_label(0x12345)
        .hop_limit(9)
        .ext(Ipv6Ext::HopByHop(vec![5, 2, 0, 0])) // router alert
        .ext(Ipv6Ext::Routing { routing_type: 4, segments_left: 0, data: vec![] })
        .ext(Ipv6Ext::DestOpts(vec![]))
        .ext(Ipv6Ext::Fragment { offset: 0, more: true, id: 7 })
        .udp(1, 2)
        .build();
    let ip = &f[14..];
    assert_eq!(ip[0..4], [0x6b, 0x81, 0x23, 0x45]);
    assert_eq!(u16::from_be_bytes([ip[4], ip[5]]) as usize, 8 * 4 + 8);
    assert_eq!(ip[6], IPPROTO_HOPOPTS);
    assert_eq!(ip[7], 9);
    // hop-by-hop: next=routing, len 0, RA option, PadN(0)
    assert_eq!(ip[40..48], [IPPROTO_ROUTING, 0, 5, 2, 0, 0, 1, 0]);
    assert_eq!(ip[48..56], [IPPROTO_DSTOPTS, 0, 4, 0, 0, 0, 0, 0]);
    // dest options with no options: PadN of 4 bytes
    assert_eq!(ip[56..64], [IPPROTO_FRAGMENT, 0, 1, 4, 0, 0, 0, 0]);
    assert_eq!(ip[64..72], [IPPROTO_UDP, 0, 0, 1, 0, 0, 0, 7]);
    let view = IpView::parse(ip).unwrap();
    assert_eq!(view.proto, IPPROTO_UDP);
    assert_eq!(view.header_len, 72);
    assert_eq!(view.tos, 0xb8);
    assert!(l4_csum_ok(&f, 14));
}

#[test]
fn arp_request_layout() {
    let f = Packet::new()
        .macs([0xff; 6], mac("02:00:00:00:00:02"))
        .arp_request(mac("02:00:00:00:00:02"), v4("198.18.0.1"), v4("198.18.0.2"))
        .build();
    assert_eq!(
        f,
        hex("ffffffffffff 020000000002 0806 0001 0800 06 04 0001 020000000002 c6120001 000000000000 c6120002")
    );
}

#[test]
fn padding_and_length_surgery() {
    let p = Packet::new().ipv4(v4("1.1.1.1"), v4("2.2.2.2")).tcp(1, 2).syn().pad_to(60);
    let f = p.build();
    assert_eq!(f.len(), 60);
    assert_eq!(f[54..], [0; 6]);
    assert_eq!(IpView::parse(&f[14..]).unwrap().packet.len(), 40);
    let t = truncate_ip(&f, 14, 30);
    assert_eq!(t.len(), 44);
    assert_eq!(t[16..18], [0, 30]);
    assert!(ipv4_header_csum_ok(&t[14..34]));
    let mut g = f.clone();
    set_ipv4_total_len(&mut g, 14, 100);
    assert!(ipv4_header_csum_ok(&g[14..34]));
    assert!(IpView::parse(&g[14..]).is_none());
    let six = Packet::new().ipv6(v6("::1"), v6("::2")).udp(1, 2).build();
    let t6 = truncate_ip(&six, 14, 44);
    assert_eq!(t6.len(), 58);
    assert_eq!(t6[18..20], [0, 4]);
    assert_eq!(truncated(&six, 20).len(), 20);
}

#[test]
fn encap_v4_reference() {
    let p = Packet::new()
        .macs(mac("02:00:00:00:00:01"), mac("02:00:00:00:00:02"))
        .dot1q(7)
        .ipv4(v4("198.18.1.1"), v4("198.18.100.1"))
        .tos(0x2e)
        .df()
        .tcp(40000, 80)
        .syn()
        .pad_to(80);
    let f = p.build();
    let out = ipip_encap_v4(&f, 18, mac("02:00:00:00:00:fe"), v4("198.18.0.2"), v4("198.18.0.11"));
    assert_eq!(out.len(), f.len() + 20);
    assert_eq!(out[0..6], mac("02:00:00:00:00:fe"));
    assert_eq!(out[6..12], mac("02:00:00:00:00:01"));
    assert_eq!(out[12..18], [0x81, 0x00, 0x00, 0x07, 0x08, 0x00]);
    let o = &out[18..38];
    assert_eq!(o[0..2], [0x45, 0x2e]);
    assert_eq!(u16::from_be_bytes([o[2], o[3]]), 60);
    assert_eq!(o[4..10], [0, 0, 0x40, 0, 64, 4]);
    assert_eq!(o[12..20], [198, 18, 0, 2, 198, 18, 0, 11]);
    assert!(ipv4_header_csum_ok(o));
    assert_eq!(out[38..], f[18..]);
    // decap gives the inner packet and padding back
    let back = ipip_decap(&out, 18);
    assert_eq!(back[18..], f[18..]);
    assert_eq!(back[0..18], out[0..18]);
}

#[test]
fn encap_v6_reference() {
    let p = Packet::new()
        .dot1ad(1)
        .dot1q(2)
        .ipv6(v6("2001:db8:1::1"), v6("2001:db8:100::1"))
        .traffic_class(0xb9)
        .flow_label(0xabcde)
        .udp(5353, 53)
        .payload(b"abc");
    let f = p.build();
    let l2 = p.l2_len();
    let out = ipip_encap_v6(&f, l2, [9; 6], v6("2001:db8::2"), v6("2001:db8::11"));
    assert_eq!(out.len(), f.len() + 40);
    assert_eq!(out[12..l2], f[12..l2 - 2].iter().chain(&[0x86, 0xdd]).copied().collect::<Vec<_>>()[..]);
    let o = &out[l2..l2 + 40];
    let word = u32::from_be_bytes([o[0], o[1], o[2], o[3]]);
    assert_eq!(word >> 28, 6);
    assert_eq!((word >> 20) & 0xff, 0xb9);
    assert_eq!(word & 0xfffff, flow_hash(&p.flow_key()) & 0xfffff);
    assert_eq!(u16::from_be_bytes([o[4], o[5]]), 8 + 3 + 40);
    assert_eq!(o[6..8], [41, 64]);
    assert_eq!(out[l2 + 40..], f[l2..]);
    assert_eq!(parse_flow(&f), Some(p.flow_key()));
}

#[test]
fn l2dsr_reference() {
    let f = Packet::new().ipv4(v4("1.1.1.1"), v4("2.2.2.2")).udp(1, 2).build();
    let out = l2dsr(&f, mac("02:00:00:00:01:31"));
    assert_eq!(out[0..6], mac("02:00:00:00:01:31"));
    assert_eq!(out[6..12], f[0..6]);
    assert_eq!(out[12..], f[12..]);
}

#[test]
fn hex_diff_marks_differences() {
    let d = hex_diff(&[1, 2, 3], &[1, 9, 3, 4]);
    assert!(d.contains("first difference at offset 1"), "{d}");
    assert!(d.contains("| .*.*"), "{d}");
}
