//! The BPF_PROG_TEST_RUN harness of the per-packet bench: a hand-written XDP
//! program that gives the program under test a fresh, unmodified frame on
//! every iteration of one BPF_PROG_TEST_RUN with repeat = N, then tail-calls
//! it (FIELD-NOTES: repeat > 1 otherwise reuses one buffer that the
//! encapsulation rewrites).
//!
//! Each iteration: if the previous one grew the frame (encapsulation, by
//! `grow` bytes), move the head back with bpf_xdp_adjust_head (+grow; else
//! +0, so every iteration makes the same call); rewrite every byte of the
//! frame from the template; optionally draw a flow (a new random one, or
//! one of a pool); tail-call slot 0 of a PROG_ARRAY. The same harness
//! tail-calling `lb_drop` is the floor, measured alternately in the same
//! round: the difference is the program's own cost.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Result, bail};

use lb_tests::netns::insn;

/// How the harness varies the flow on each iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flows {
    /// The template as is.
    Fixed,
    /// IPv4: a random source address low half and source port (a new flow
    /// almost surely: 2^31 tuples). The template must have source low 16
    /// bits 0 and IP id 0xffff: the id is set to 0xffff - low16, so the
    /// header checksum stays valid.
    NewV4,
    /// IPv6: random low 32 bits of the source address.
    NewV6,
    /// IPv4: source low 16 bits = random % n (the pool the caller set up).
    PoolV4(u32),
}

const IP4_ID: i16 = 14 + 4;
const IP4_SRC_LO16: i16 = 14 + 12 + 2;
const IP6_SRC_LO32: i16 = 14 + 8 + 12;
const L4_SPORT_V4: i16 = 14 + 20;

fn map_create_prog_array() -> Result<OwnedFd> {
    let mut attr = [0u64; 16];
    // SAFETY: 128 bytes, the first fields of bpf_attr for BPF_MAP_CREATE.
    let b: &mut [u8; 128] = unsafe { &mut *(attr.as_mut_ptr() as *mut [u8; 128]) };
    b[0..4].copy_from_slice(&3u32.to_ne_bytes()); // BPF_MAP_TYPE_PROG_ARRAY
    b[4..8].copy_from_slice(&4u32.to_ne_bytes());
    b[8..12].copy_from_slice(&4u32.to_ne_bytes());
    b[12..16].copy_from_slice(&1u32.to_ne_bytes());
    // SAFETY: a valid bpf_attr of 128 bytes.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 0 as libc::c_long, attr.as_mut_ptr(), 128u32) };
    if fd < 0 {
        bail!("BPF_MAP_CREATE (prog array): {}", std::io::Error::last_os_error());
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Puts `prog` into slot 0 of the prog array.
fn set_target(map: &OwnedFd, prog: impl AsFd) -> Result<()> {
    let key = 0u32;
    let value = prog.as_fd().as_raw_fd() as u32;
    let mut attr = [0u64; 16];
    attr[0] = map.as_raw_fd() as u64;
    attr[1] = &key as *const u32 as u64;
    attr[2] = &value as *const u32 as u64;
    // SAFETY: BPF_MAP_UPDATE_ELEM attr; key and value outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, 2 as libc::c_long, attr.as_mut_ptr(), 128u32) };
    if rc < 0 {
        bail!("BPF_MAP_UPDATE_ELEM (prog array): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// A prog array whose slot 0 holds the program under test. Set once:
/// updating it later re-patches the JIT's direct tail-call jumps, which
/// takes the kernel a long while (it waits for RCU).
pub struct Target {
    map: OwnedFd,
}

impl Target {
    pub fn new(prog: impl AsFd) -> Result<Target> {
        let map = map_create_prog_array()?;
        set_target(&map, prog)?;
        Ok(Target { map })
    }
}

/// A loaded harness for one template, flow pattern and target.
pub struct Harness {
    pub prog: OwnedFd,
    pub frame: Vec<u8>,
}

impl Harness {
    /// `frame` length must be a multiple of 4; `grow` is how many bytes the
    /// program under test prepends (20 IPIP, 40 IP6IP6, 0 otherwise).
    pub fn new(frame: &[u8], grow: i32, flows: Flows, target: &Target) -> Result<Harness> {
        if !frame.len().is_multiple_of(4) || frame.len() > 256 {
            bail!("harness frames must be a multiple of 4 bytes, at most 256");
        }
        let map = &target.map;
        let len = frame.len() as i32;
        let mut p = vec![
            insn(0xbf, 6, 1, 0, 0),       // r6 = ctx
            insn(0x61, 2, 6, 0, 0),       // r2 = ctx->data
            insn(0x61, 3, 6, 4, 0),       // r3 = ctx->data_end
            insn(0xbf, 4, 2, 0, 0),       // r4 = r2
            insn(0x07, 4, 0, 0, len + 1), // r4 += len + 1
            insn(0xb7, 7, 0, 0, 0),       // r7 = 0
            insn(0x2d, 4, 3, 1, 0),       // if r4 > r3 (frame not grown) skip
            insn(0xb7, 7, 0, 0, grow),    // r7 = grow
            insn(0xbf, 1, 6, 0, 0),       // r1 = ctx
            insn(0xbf, 2, 7, 0, 0),       // r2 = r7
            insn(0x85, 0, 0, 0, 44),      // bpf_xdp_adjust_head(ctx, r7)
            insn(0x61, 2, 6, 0, 0),       // r2 = ctx->data
            insn(0x61, 3, 6, 4, 0),       // r3 = ctx->data_end
            insn(0xbf, 4, 2, 0, 0),       // r4 = r2
            insn(0x07, 4, 0, 0, len),     // r4 += len
            0,                            // if r4 > r3 goto abort (patched)
        ];
        let check = p.len() - 1;
        for (i, w) in frame.chunks(4).enumerate() {
            p.push(insn(0x62, 2, 0, (i * 4) as i16, i32::from_le_bytes([w[0], w[1], w[2], w[3]])));
        }
        if flows != Flows::Fixed {
            p.push(insn(0xbf, 8, 2, 0, 0)); // r8 = data
            p.push(insn(0x85, 0, 0, 0, 7)); // r0 = bpf_get_prandom_u32()
        }
        let lo16_and_id = |p: &mut Vec<u64>| {
            p.extend([
                insn(0xbf, 1, 0, 0, 0),      // r1 = r0
                insn(0x57, 1, 0, 0, 0xffff), // r1 &= 0xffff
                insn(0xb7, 2, 0, 0, 0xffff), // r2 = 0xffff
                insn(0x1f, 2, 1, 0, 0),      // r2 -= r1
                insn(0xdc, 1, 0, 0, 16),     // be16
                insn(0xdc, 2, 0, 0, 16),     // be16
                insn(0x6b, 8, 1, IP4_SRC_LO16, 0),
                insn(0x6b, 8, 2, IP4_ID, 0),
            ]);
        };
        match flows {
            Flows::Fixed => {}
            Flows::NewV4 => {
                lo16_and_id(&mut p);
                p.extend([
                    insn(0x77, 0, 0, 0, 16),    // r0 >>= 16
                    insn(0x47, 0, 0, 0, 0x400), // r0 |= 0x400 (no port below 1024)
                    insn(0xdc, 0, 0, 0, 16),    // be16
                    insn(0x6b, 8, 0, L4_SPORT_V4, 0),
                ]);
            }
            Flows::NewV6 => p.push(insn(0x63, 8, 0, IP6_SRC_LO32, 0)), // src low 32 bits = r0
            Flows::PoolV4(n) => {
                p.push(insn(0x97, 0, 0, 0, n as i32)); // r0 %= n
                lo16_and_id(&mut p);
            }
        }
        // bpf_tail_call(ctx, map, 0); falls through only if it fails.
        p.push(insn(0xbf, 1, 6, 0, 0));
        p.push(insn(0x18, 2, 1, 0, map.as_raw_fd())); // r2 = map (BPF_PSEUDO_MAP_FD)
        p.push(0);
        p.push(insn(0xb7, 3, 0, 0, 0));
        p.push(insn(0x85, 0, 0, 0, 12));
        let abort = p.len();
        p.push(insn(0xb7, 0, 0, 0, 0)); // XDP_ABORTED
        p.push(insn(0x95, 0, 0, 0, 0));
        p[check] = insn(0x2d, 4, 3, (abort - check - 1) as i16, 0);
        let prog = super::raw::load_xdp("bench_harness", &p)?;
        Ok(Harness { prog, frame: frame.to_vec() })
    }

    /// One BPF_PROG_TEST_RUN of `repeat` iterations: (last verdict, mean ns
    /// per iteration as the kernel measured it).
    pub fn run(&self, repeat: u32) -> Result<(u32, f64)> {
        let mut attr = [0u64; 16];
        {
            // SAFETY: 128 bytes of bpf_attr for BPF_PROG_TEST_RUN.
            let b: &mut [u8; 128] = unsafe { &mut *(attr.as_mut_ptr() as *mut [u8; 128]) };
            b[0..4].copy_from_slice(&(self.prog.as_raw_fd() as u32).to_ne_bytes());
            b[8..12].copy_from_slice(&(self.frame.len() as u32).to_ne_bytes());
            b[16..24].copy_from_slice(&(self.frame.as_ptr() as u64).to_ne_bytes());
            b[32..36].copy_from_slice(&repeat.to_ne_bytes());
        }
        // SAFETY: a valid bpf_attr; frame outlives the call.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, 10 as libc::c_long, attr.as_mut_ptr(), 128u32) };
        if rc < 0 {
            bail!("BPF_PROG_TEST_RUN (harness): {}", std::io::Error::last_os_error());
        }
        // SAFETY: as above.
        let b: &[u8; 128] = unsafe { &*(attr.as_ptr() as *const [u8; 128]) };
        let retval = u32::from_ne_bytes(b[4..8].try_into().unwrap());
        let duration = u32::from_ne_bytes(b[36..40].try_into().unwrap());
        Ok((retval, f64::from(duration)))
    }
}
