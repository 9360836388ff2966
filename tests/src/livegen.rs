//! Raw bpf(2) pieces that need no compiled object: loading a hand-written
//! XDP program, and BPF_PROG_TEST_RUN in live-frames mode (the generator).
//! The reference programs (MAC-swap XDP_TX, XDP_DROP sink) and the frame
//! generator are written here as eBPF instructions. Shared by `lb-bench`
//! (veth throughput) and the flood test (tests/tests/flood.rs).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Result, anyhow};

use crate::netns::insn;
use crate::packet::Packet;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
/// BPF_F_TEST_XDP_LIVE_FRAMES.
const F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

pub const XDP_DROP: i32 = 1;
pub const XDP_PASS: i32 = 2;
pub const XDP_TX: i32 = 3;

fn attr_bytes(attr: &mut [u64; 16]) -> &mut [u8; 128] {
    // SAFETY: a [u64; 16] is 128 bytes, suitably aligned for u8.
    unsafe { &mut *(attr.as_mut_ptr() as *mut [u8; 128]) }
}

fn sys_bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> std::io::Result<i64> {
    // SAFETY: attr is a zero-initialised 128-byte bpf_attr for `cmd`.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr() as *mut libc::c_void, 128u32) };
    if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(rc) }
}

/// Loads `insns` as an XDP program (not attached) and returns its fd.
pub fn load_xdp(name: &str, insns: &[u64]) -> Result<OwnedFd> {
    let license = CString::new("GPL").unwrap();
    let mut log = vec![0u8; 65536];
    let name = &name.as_bytes()[..name.len().min(15)];
    let mut attr = [0u64; 16];
    {
        let b = attr_bytes(&mut attr);
        b[0..4].copy_from_slice(&BPF_PROG_TYPE_XDP.to_ne_bytes());
        b[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
        b[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
        b[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
        b[24..28].copy_from_slice(&1u32.to_ne_bytes());
        b[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
        b[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
        b[48..48 + name.len()].copy_from_slice(name);
        b[68..72].copy_from_slice(&BPF_XDP.to_ne_bytes());
    }
    let fd = sys_bpf(BPF_PROG_LOAD, &mut attr).map_err(|e| {
        let end = log.iter().position(|&c| c == 0).unwrap_or(log.len());
        anyhow!(
            "BPF_PROG_LOAD ({}): {e}; verifier: {}",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(&log[..end])
        )
    })?;
    // SAFETY: BPF_PROG_LOAD returned a new fd that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES: runs `prog` on
/// `repeat` frames initialised from `frame`, as if received on interface
/// `ifindex` (of the calling thread's namespace), and carries out each
/// verdict (XDP_TX leaves by that interface). Returns the kernel's
/// duration per frame in ns.
pub fn test_run_live(prog: &OwnedFd, frame: &[u8], ifindex: u32, repeat: u32, batch: u32) -> std::io::Result<u32> {
    // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex }
    let ctx: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
    let mut attr = [0u64; 16];
    {
        let b = attr_bytes(&mut attr);
        b[0..4].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
        b[8..12].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        b[16..24].copy_from_slice(&(frame.as_ptr() as u64).to_ne_bytes());
        b[32..36].copy_from_slice(&repeat.to_ne_bytes());
        b[40..44].copy_from_slice(&(std::mem::size_of_val(&ctx) as u32).to_ne_bytes());
        b[48..56].copy_from_slice(&(ctx.as_ptr() as u64).to_ne_bytes());
        b[64..68].copy_from_slice(&F_TEST_XDP_LIVE_FRAMES.to_ne_bytes());
        b[72..76].copy_from_slice(&batch.to_ne_bytes());
    }
    sys_bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    let b = attr_bytes(&mut attr);
    Ok(u32::from_ne_bytes(b[36..40].try_into().unwrap()))
}

/// `return verdict`.
pub fn constant(verdict: i32) -> Vec<u64> {
    vec![insn(0xb7, 0, 0, 0, verdict), insn(0x95, 0, 0, 0, 0)]
}

/// The trivial forwarding reference: swaps the Ethernet addresses and
/// returns XDP_TX (frames shorter than 14 bytes are passed).
pub fn macswap() -> Vec<u64> {
    vec![
        insn(0x61, 2, 1, 0, 0),  // r2 = ctx->data
        insn(0x61, 3, 1, 4, 0),  // r3 = ctx->data_end
        insn(0xbf, 4, 2, 0, 0),  // r4 = r2
        insn(0x07, 4, 0, 0, 14), // r4 += 14
        insn(0x2d, 4, 3, 10, 0), // if r4 > r3 goto pass
        insn(0x61, 4, 2, 0, 0),  // r4 = *(u32 *)(r2 + 0)   dst[0..4]
        insn(0x69, 5, 2, 4, 0),  // r5 = *(u16 *)(r2 + 4)   dst[4..6]
        insn(0x61, 6, 2, 6, 0),  // r6 = *(u32 *)(r2 + 6)   src[0..4]
        insn(0x69, 7, 2, 10, 0), // r7 = *(u16 *)(r2 + 10)  src[4..6]
        insn(0x63, 2, 6, 0, 0),  // *(u32 *)(r2 + 0) = r6
        insn(0x6b, 2, 7, 4, 0),  // *(u16 *)(r2 + 4) = r7
        insn(0x63, 2, 4, 6, 0),  // *(u32 *)(r2 + 6) = r4
        insn(0x6b, 2, 5, 10, 0), // *(u16 *)(r2 + 10) = r5
        insn(0xb7, 0, 0, 0, XDP_TX),
        insn(0x95, 0, 0, 0, 0),
        insn(0xb7, 0, 0, 0, XDP_PASS), // pass:
        insn(0x95, 0, 0, 0, 0),
    ]
}

/// Length of the generator's frames.
pub const GEN_FRAME_LEN: usize = 64;

/// A generator template: a 64-byte TCP ACK (or SYN) from
/// 198.19.0.0:`sport` to `dst`:80 with IP id 0xffff (low 16 bits of the
/// source and the id as [`generator`] needs them).
pub fn tcp_template(
    dst: std::net::Ipv4Addr,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    sport: u16,
    syn: bool,
) -> [u8; GEN_FRAME_LEN] {
    let p = Packet::new()
        .macs(dst_mac, src_mac)
        .ipv4(std::net::Ipv4Addr::new(198, 19, 0, 0), dst)
        .ip_id(0xffff)
        .tcp(sport, 80);
    let f = if syn { p.syn() } else { p.ack() }.pad_to(GEN_FRAME_LEN).build();
    f[..GEN_FRAME_LEN].try_into().expect("64-byte frame")
}
/// Offsets in an untagged IPv4 TCP/UDP frame.
const IP_ID_OFF: i16 = 14 + 4;
const SRC_LO16_OFF: i16 = 14 + 12 + 2;
const SPORT_OFF: i16 = 14 + 20;

/// The live-frames generator: rewrites the whole 64-byte frame from
/// `template` (live frames recycle their pages, and the program under test
/// may have changed them), then, for `flows` > 1, picks flow
/// `r = prandom % flows` and writes it as the low 16 bits of the source
/// address and source port `base_sport + r / 65536`. The IPv4 identification
/// is set to `0xffff - low16` so the header checksum of the template stays
/// valid (the template must carry low16 = 0 and id = 0xffff); the L4
/// checksum is left as is (nothing on the path checks it). Returns XDP_TX,
/// which in live mode sends the frame out of the ingress interface.
pub fn generator(template: &[u8; GEN_FRAME_LEN], flows: u32, base_sport: u16) -> Vec<u64> {
    let mut p = vec![
        insn(0x61, 2, 1, 0, 0),                    // r2 = ctx->data
        insn(0x61, 3, 1, 4, 0),                    // r3 = ctx->data_end
        insn(0xbf, 4, 2, 0, 0),                    // r4 = r2
        insn(0x07, 4, 0, 0, GEN_FRAME_LEN as i32), // r4 += 64
        0,                                         // if r4 > r3 goto drop (patched)
    ];
    let jump = p.len() - 1;
    for (i, w) in template.chunks(4).enumerate() {
        let imm = i32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        p.push(insn(0x62, 2, 0, (i * 4) as i16, imm)); // *(u32 *)(r2 + 4i) = imm
    }
    if flows > 1 {
        p.extend([
            insn(0xbf, 6, 2, 0, 0),                     // r6 = r2
            insn(0x85, 0, 0, 0, 7),                     // r0 = bpf_get_prandom_u32()
            insn(0x97, 0, 0, 0, flows as i32),          // r0 %= flows
            insn(0xbf, 1, 0, 0, 0),                     // r1 = r0
            insn(0x57, 1, 0, 0, 0xffff),                // r1 &= 0xffff
            insn(0xb7, 2, 0, 0, 0xffff),                // r2 = 0xffff
            insn(0x1f, 2, 1, 0, 0),                     // r2 -= r1
            insn(0xdc, 1, 0, 0, 16),                    // r1 = htobe16(r1)
            insn(0xdc, 2, 0, 0, 16),                    // r2 = htobe16(r2)
            insn(0x6b, 6, 1, SRC_LO16_OFF, 0),          // src address low 16 bits = r1
            insn(0x6b, 6, 2, IP_ID_OFF, 0),             // ip id = r2
            insn(0x77, 0, 0, 0, 16),                    // r0 >>= 16
            insn(0x07, 0, 0, 0, i32::from(base_sport)), // r0 += base_sport
            insn(0xdc, 0, 0, 0, 16),                    // r0 = htobe16(r0)
            insn(0x6b, 6, 0, SPORT_OFF, 0),             // sport = r0
        ]);
    }
    p.extend([insn(0xb7, 0, 0, 0, XDP_TX), insn(0x95, 0, 0, 0, 0)]);
    let drop = p.len();
    p.extend([insn(0xb7, 0, 0, 0, XDP_DROP), insn(0x95, 0, 0, 0, 0)]);
    p[jump] = insn(0x2d, 4, 3, (drop - jump - 1) as i16, 0);
    p
}
