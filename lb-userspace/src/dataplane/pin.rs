//! Pinning, so forwarding outlives the agent: maps and the XDP link live
//! under `<pin_path>/v<LAYOUT_VERSION>/<interface>/` in bpffs. A starting
//! agent adopts what it finds there after checking that every map has the
//! layout it expects, and swaps its own program into the pinned link in one
//! step (bpf_link_update), so packets never meet a detached interface.

use std::{
    collections::HashMap,
    mem::size_of,
    path::{Path, PathBuf},
};

use aya::{
    EbpfLoader,
    maps::MapInfo,
    programs::{
        Xdp,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use lb_common::{
    BACKEND_F_PRESENT, Backend, CONN_WAYS, CONNTRACK_CAPACITY, ConnSet, ConnTableKey, Counters, GlobalConfig,
    LAYOUT_VERSION, MAX_BACKENDS, MAX_VIPS, RING_LANES, RING_MAP_ENTRIES, RingChunk, VIP_TABLE_BUCKETS, VipAddrKey,
    VipBucket, VipKey, VipMeta,
    capture::{CAPTURE_RING_BYTES, CaptureConfig, CaptureState},
    consts::{maps, progs},
    ring_chunk_index, stats,
    types::words_addr,
};

use super::{Applied, AppliedVip, Dataplane, DataplaneError, Result, map_err, program};
use crate::config::{Mac, XdpModeSetting};

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "{path} holds lb state of layout {found}, this lb knows layout v{LAYOUT_VERSION}: \
         stop that instance with the lb that made it (`lb run --detach-on-exit`), or remove the directory"
    )]
    OtherLayout { path: String, found: String },
    #[error("pinned map {path} does not have the layout this lb expects ({detail}); refusing to adopt it")]
    Mismatch { path: String, detail: String },
    #[error(
        "the pinned connection table {path} has {found} entries and global.conntrack_capacity asks for {wanted}: \
         a table cannot be resized while it forwards; set conntrack_capacity = {found}, or run `lb detach --iface` \
         for the interface first (established flows then lose their entries)"
    )]
    Capacity { path: String, found: u32, wanted: u32 },
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: String, source: std::io::Error },
    #[error("pinned link {path}: {detail}")]
    Link { path: String, detail: String },
    #[error("{path} is not on a bpffs mount: mount one with `mount -t bpf bpf /sys/fs/bpf`, or set global.pin_path")]
    NotBpffs { path: String },
}

/// The pinned objects of one interface.
pub(crate) struct Pins {
    pub(super) dir: PathBuf,
}

impl Pins {
    fn link(&self) -> PathBuf {
        self.dir.join("link")
    }
}

/// Every map the balancer pins: (name, key size, value size, max entries).
const PINNED_MAPS: [(&str, usize, usize, u32); 18] = [
    (maps::VIPS, size_of::<VipKey>(), size_of::<VipMeta>(), MAX_VIPS),
    (maps::VIP_ADDRS, size_of::<VipAddrKey>(), size_of::<u32>(), MAX_VIPS),
    (maps::VIP_TABLE, 4, size_of::<VipBucket>(), VIP_TABLE_BUCKETS),
    (maps::BACKENDS, 4, size_of::<Backend>(), MAX_BACKENDS),
    (maps::RINGS, 4, size_of::<RingChunk>(), RING_MAP_ENTRIES),
    // Its entries are sets of CONN_WAYS flows; its size is checked by its own rule.
    (maps::CONNTRACK, 4, size_of::<ConnSet>(), CONNTRACK_CAPACITY / CONN_WAYS as u32),
    (maps::CONNTRACK_KEY, 4, size_of::<ConnTableKey>(), 1),
    (maps::CONFIG, 4, size_of::<GlobalConfig>(), 1),
    (maps::STATS, 4, size_of::<Counters>(), stats::COUNT),
    (maps::VIP_STATS, 4, size_of::<Counters>(), MAX_VIPS),
    (maps::BACKEND_STATS, 4, size_of::<Counters>(), MAX_BACKENDS),
    (maps::BACKEND_FLOWS, 4, size_of::<u64>(), MAX_BACKENDS),
    (maps::FLOW_GUARD, 4, size_of::<lb_common::FlowGuard>(), 1),
    (maps::RR_NEXT, 4, size_of::<u32>(), MAX_VIPS),
    (maps::BACKEND_ACTIVE, 4, size_of::<u64>(), MAX_BACKENDS),
    // Pinned so `lb capture` reads the records itself; a ring buffer has no
    // key or value, its size is its max entries.
    (maps::CAPTURE, 0, 0, CAPTURE_RING_BYTES),
    (maps::CAPTURE_CONFIG, 4, size_of::<CaptureConfig>(), 1),
    (maps::CAPTURE_STATE, 4, size_of::<CaptureState>(), 1),
];

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DataplaneError {
    let path = path.display().to_string();
    move |source| PinError::Io { what, path, source }.into()
}

/// The directory of an interface's pins for this layout.
pub fn pin_dir(base: &Path, iface: &str) -> PathBuf {
    base.join(format!("v{LAYOUT_VERSION}")).join(iface)
}

impl Dataplane {
    /// Loads the balancer with its maps pinned under `base`, adopting maps
    /// (and, at `attach_pinned`, the link) that a previous agent left.
    /// `conntrack_capacity`: the connection table's entries when it is
    /// created, and what a pinned one must have (None: whatever it has).
    /// Returns whether there was state to adopt.
    pub fn open_pinned(base: &Path, iface: &str, conntrack_capacity: Option<u32>) -> Result<(Dataplane, bool)> {
        require_bpffs(base)?;
        refuse_other_layouts(base, iface)?;
        let dir = pin_dir(base, iface);
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        let mut capacity = conntrack_capacity.unwrap_or(CONNTRACK_CAPACITY);
        // The table and its key go together: a new key over an adopted
        // table would strand every entry. Only `lb detach` (no capacity
        // asked) opens such a pair, to remove it.
        let (table_pin, key_pin) = (dir.join(maps::CONNTRACK), dir.join(maps::CONNTRACK_KEY));
        if conntrack_capacity.is_some() && table_pin.exists() != key_pin.exists() {
            let (there, missing) = if table_pin.exists() { (&table_pin, &key_pin) } else { (&key_pin, &table_pin) };
            return Err(PinError::Mismatch {
                path: there.display().to_string(),
                detail: format!(
                    "{} is missing: the connection table and its key are pinned together; \
                     run `lb detach --iface {iface}` first",
                    missing.display()
                ),
            }
            .into());
        }
        for (name, key, value, max) in PINNED_MAPS {
            let path = dir.join(name);
            if !path.exists() {
                continue;
            }
            let info = MapInfo::from_pin(&path).map_err(map_err(name))?;
            let found = (info.key_size() as usize, info.value_size() as usize, info.max_entries());
            if name == maps::CONNTRACK && (found.0, found.1) == (key, value) {
                let found = found.2.saturating_mul(CONN_WAYS as u32);
                match conntrack_capacity {
                    Some(wanted) if wanted != found => {
                        return Err(PinError::Capacity { path: path.display().to_string(), found, wanted }.into());
                    }
                    _ => capacity = found,
                }
                continue;
            }
            if found != (key, value, max) {
                return Err(PinError::Mismatch {
                    path: path.display().to_string(),
                    detail: format!("key/value/entries {found:?}, expected {:?}", (key, value, max)),
                }
                .into());
            }
        }
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(maps::CONNTRACK, capacity / CONN_WAYS as u32);
        let paths: Vec<(&str, PathBuf)> = PINNED_MAPS.iter().map(|m| (m.0, dir.join(m.0))).collect();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let pins = Pins { dir };
        let adopted = pins.link().exists();
        let mut dp = Dataplane::from_loaded(loader.load(crate::objects::BALANCER)?, Some(pins))?;
        if adopted {
            dp.applied = dp.read_applied()?;
        }
        Ok((dp, adopted))
    }

    /// Attaches through the pinned link: replaces the program in a link a
    /// previous agent left, or creates and pins a new one.
    pub fn attach_pinned(&mut self, iface: &str, mode: XdpModeSetting) -> Result<()> {
        let link_path = self.pins.as_ref().expect("opened with open_pinned").link();
        let link_err = |detail: String| PinError::Link { path: link_path.display().to_string(), detail };
        let prog: &mut Xdp = program(&mut self.ebpf, progs::BALANCER)?;
        let prog_err = |source| DataplaneError::Program { name: progs::BALANCER, source };
        if link_path.exists() {
            let pinned = PinnedLink::from_pin(&link_path).map_err(|e| link_err(e.to_string()))?;
            let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| link_err(e.to_string()))?;
            prog.attach_to_link(link).map_err(prog_err)?;
        } else {
            let id = prog.attach(iface, mode.into()).map_err(prog_err)?;
            let link = prog.take_link(id).map_err(prog_err)?;
            let fd = FdLink::try_from(link).map_err(|e| link_err(format!("not a bpf_link: {e}")))?;
            fd.pin(&link_path).map_err(|e| link_err(e.to_string()))?;
        }
        Ok(())
    }

    /// Detaches the program and removes every pin (`lb run --detach-on-exit`).
    pub fn detach_and_unpin(self) -> Result<()> {
        let Some(pins) = &self.pins else { return Ok(()) };
        let link_path = pins.link();
        if link_path.exists() {
            let pinned = PinnedLink::from_pin(&link_path)
                .map_err(|e| PinError::Link { path: link_path.display().to_string(), detail: e.to_string() })?;
            pinned.unpin().map_err(io("unpinning", &link_path))?;
        }
        for (name, ..) in PINNED_MAPS {
            let path = pins.dir.join(name);
            if path.exists() {
                std::fs::remove_file(&path).map_err(io("unpinning", &path))?;
            }
        }
        std::fs::remove_dir(&pins.dir).map_err(io("removing", &pins.dir))?;
        // The version directory too, once no interface uses it.
        if let Some(version_dir) = pins.dir.parent() {
            let _ = std::fs::remove_dir(version_dir);
        }
        Ok(())
    }

    /// Rebuilds the agent's view of what the maps hold from the maps, so the
    /// next `apply` writes only differences and keeps every backend id and
    /// epoch that connection entries refer to.
    fn read_applied(&self) -> Result<Applied> {
        let mut applied = Applied::default();
        let config = self.array_ro::<GlobalConfig>(maps::CONFIG)?.get(&0, 0).map_err(map_err(maps::CONFIG))?;
        applied.config = Some(config);
        let vips = self.hash_map_ro::<VipKey, VipMeta>(maps::VIPS)?;
        let mut by_slot = HashMap::new();
        let rings = self.array_ro::<RingChunk>(maps::RINGS)?;
        for entry in vips.iter() {
            let (key, meta) = entry.map_err(map_err(maps::VIPS))?;
            let mut ring = Vec::with_capacity(meta.ring_size as usize);
            for start in (0..meta.ring_size).step_by(RING_LANES as usize) {
                let chunk =
                    rings.get(&ring_chunk_index(meta.slot, meta.ring_gen, start), 0).map_err(map_err(maps::RINGS))?;
                let n = (meta.ring_size - start).min(RING_LANES) as usize;
                ring.extend_from_slice(&chunk.lanes[..n]);
            }
            let mut state = AppliedVip { meta, rings: [Vec::new(), Vec::new()], source: Vec::new() };
            state.rings[meta.ring_gen as usize & 1] = ring;
            by_slot.insert(meta.slot, key);
            applied.vips.insert(key, state);
        }
        let backends = self.array_ro::<Backend>(maps::BACKENDS)?;
        for id in 0..MAX_BACKENDS {
            let b = backends.get(&id, 0).map_err(map_err(maps::BACKENDS))?;
            if b.epoch != 0 {
                applied.epochs.insert(id, b.epoch);
            }
            if b.state & BACKEND_F_PRESENT == 0 {
                continue;
            }
            let Some(vip) = by_slot.get(&b.vip_slot) else { continue };
            let mac = (b.mac != [0; 6]).then_some(Mac(b.mac));
            applied.entries.insert(id, b);
            applied.backends.insert((*vip, words_addr(b.addr, b.family), mac), id);
        }
        applied.buckets = self.read_buckets()?;
        Ok(applied)
    }
}

/// Pins outside bpffs would fail late and obscurely (and `ip netns exec`
/// hides the host's bpffs behind a fresh /sys): say so up front.
fn require_bpffs(base: &Path) -> Result<()> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let existing = base.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    let c_path = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).unwrap_or_default();
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a zeroed statfs to fill.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut st) };
    if rc != 0 || st.f_type as i64 != BPF_FS_MAGIC {
        return Err(PinError::NotBpffs { path: existing.display().to_string() }.into());
    }
    Ok(())
}

/// Refuses to start next to pinned state of another layout version for the
/// same interface: two programs must never share one interface's maps.
fn refuse_other_layouts(base: &Path, iface: &str) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(base) else { return Ok(()) };
    let ours = format!("v{LAYOUT_VERSION}");
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != ours && entry.path().join(iface).exists() {
            return Err(
                PinError::OtherLayout { path: entry.path().join(iface).display().to_string(), found: name }.into()
            );
        }
    }
    Ok(())
}
