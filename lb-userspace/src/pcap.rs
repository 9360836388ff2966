//! Classic libpcap files (not pcapng): the format every version of tcpdump,
//! Wireshark and tshark reads. Microsecond timestamps, Ethernet link type.

use std::{
    io::{self, Write},
    time::Duration,
};

/// "Magic" of a microsecond-resolution file, written in native byte order.
pub const MAGIC_USEC: u32 = 0xa1b2_c3d4;
/// LINKTYPE_ETHERNET: frames start with the Ethernet header.
pub const LINKTYPE_ETHERNET: u32 = 1;

pub struct PcapWriter<W: Write> {
    out: W,
    snaplen: u32,
    frames: u64,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header.
    pub fn new(mut out: W, snaplen: u32) -> io::Result<Self> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&MAGIC_USEC.to_ne_bytes());
        h.extend_from_slice(&2u16.to_ne_bytes()); // version 2.4
        h.extend_from_slice(&4u16.to_ne_bytes());
        h.extend_from_slice(&0i32.to_ne_bytes()); // time zone: UTC
        h.extend_from_slice(&0u32.to_ne_bytes()); // timestamp accuracy
        h.extend_from_slice(&snaplen.to_ne_bytes());
        h.extend_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { out, snaplen, frames: 0 })
    }

    /// One frame: `data` is its first bytes (cut to the snap length), `orig_len`
    /// its whole length, `ts` the time since the Unix epoch.
    pub fn frame(&mut self, ts: Duration, orig_len: u32, data: &[u8]) -> io::Result<()> {
        let data = &data[..data.len().min(self.snaplen as usize)];
        let mut h = Vec::with_capacity(16 + data.len());
        h.extend_from_slice(&(ts.as_secs() as u32).to_ne_bytes());
        h.extend_from_slice(&ts.subsec_micros().to_ne_bytes());
        h.extend_from_slice(&(data.len() as u32).to_ne_bytes());
        h.extend_from_slice(&orig_len.max(data.len() as u32).to_ne_bytes());
        h.extend_from_slice(data);
        self.out.write_all(&h)?;
        self.frames += 1;
        Ok(())
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn header_and_frames() {
        let mut w = PcapWriter::new(Vec::new(), 8).unwrap();
        w.frame(Duration::new(1_700_000_000, 123_456_789), 60, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).unwrap();
        w.frame(Duration::new(1_700_000_001, 0), 0, &[0xaa; 3]).unwrap();
        assert_eq!(w.frames(), 2);
        let b = w.out;
        assert_eq!(u32_at(&b, 0), 0xa1b2_c3d4);
        assert_eq!(&b[4..8], &[2, 0, 4, 0][..]); // 2.4, little-endian here
        assert_eq!((u32_at(&b, 16), u32_at(&b, 20)), (8, 1));
        // First record: cut to the snap length, original length kept.
        assert_eq!((u32_at(&b, 24), u32_at(&b, 28)), (1_700_000_000, 123_456));
        assert_eq!((u32_at(&b, 32), u32_at(&b, 36)), (8, 60));
        assert_eq!(&b[40..48], &[1, 2, 3, 4, 5, 6, 7, 8][..]);
        // Second: an original length below the captured one is raised to it.
        assert_eq!((u32_at(&b, 56), u32_at(&b, 60)), (3, 3));
        assert_eq!(b.len(), 24 + 16 + 8 + 16 + 3);
    }
}
