//! The connection table from userspace (`lb_common::conn`): its key,
//! written once by whoever creates the table, and a read-only mapping of
//! the table that the recount walks and `trace` looks flows up in. Slots
//! are read by the program's rule: sequence word, key and entry, sequence
//! word again, trusted only when both readings are the same even value.

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
    ptr::{addr_of, read_volatile},
    sync::{
        Arc,
        atomic::{Ordering, fence},
    },
};

use aya::maps::{Map, MapData};
use lb_common::{
    CONN_WAYS, ConnEntry, ConnSet, ConnSlot, ConnTableKey, FlowKey,
    conn::{same_flow, set_index},
    consts::maps,
};

use super::{Dataplane, DataplaneError, Result, array, map_err};

/// A read-only mapping of `CONNTRACK`, with the key its flows are placed by.
pub struct ConnTable {
    base: *const ConnSet,
    len: usize,
    key: ConnTableKey,
}

// SAFETY: a shared read-only mapping that lives as long as the value;
// every read of it goes through `read_slot`.
unsafe impl Send for ConnTable {}
unsafe impl Sync for ConnTable {}

/// Readings of a slot that a writer is changing before it is given up on
/// (a write takes a few stores: one retry is nearly always enough).
const READ_TRIES: usize = 64;

impl ConnTable {
    fn map(data: &MapData, sets: u32, key: ConnTableKey) -> io::Result<ConnTable> {
        let len = sets as usize * size_of::<ConnSet>();
        // SAFETY: maps a BPF array created with BPF_F_MMAPABLE, `len` bytes
        // (its size; the kernel rounds to pages), shared and read-only.
        let base = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, data.fd().as_fd().as_raw_fd(), 0)
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(ConnTable { base: base as *const ConnSet, len, key })
    }

    /// The key flows are placed by (`lb_common::conn::set_index`).
    pub fn key(&self) -> ConnTableKey {
        self.key
    }

    /// Sets in the table.
    pub fn sets(&self) -> u32 {
        (self.len / size_of::<ConnSet>()) as u32
    }

    fn slot(&self, set: u32, way: usize) -> *const ConnSlot {
        assert!(set < self.sets() && way < CONN_WAYS);
        // SAFETY: in bounds of the mapping (asserted).
        unsafe { addr_of!((*self.base.add(set as usize)).slots).cast::<ConnSlot>().add(way) }
    }

    /// The flow's entry, as the program would find it.
    pub fn get(&self, flow: &FlowKey) -> Option<ConnEntry> {
        let set = set_index(flow, &self.key);
        (0..CONN_WAYS).find_map(|w| read_slot(self.slot(set, w)).filter(|(k, _)| same_flow(k, flow)).map(|(_, e)| e))
    }

    /// Calls `f` with every entry, set by set. Entries written during the
    /// walk may be seen in their old or new state.
    pub fn for_each(&self, mut f: impl FnMut(&FlowKey, &ConnEntry)) {
        for set in 0..self.sets() {
            for w in 0..CONN_WAYS {
                if let Some((k, e)) = read_slot(self.slot(set, w)) {
                    f(&k, &e);
                }
            }
        }
    }
}

impl Drop for ConnTable {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

/// A consistent copy of a slot's key and entry; None when it is empty (or
/// a writer held it through every try).
fn read_slot(slot: *const ConnSlot) -> Option<(FlowKey, ConnEntry)> {
    for _ in 0..READ_TRIES {
        // SAFETY: `slot` points into the live mapping; volatile reads of
        // memory the kernel writes concurrently, validated by `seq`.
        let (seq, key, entry, again) = unsafe {
            let seq = read_volatile(addr_of!((*slot).seq));
            fence(Ordering::Acquire);
            let key = read_volatile(addr_of!((*slot).key));
            let entry = read_volatile(addr_of!((*slot).entry));
            fence(Ordering::Acquire);
            (seq, key, entry, read_volatile(addr_of!((*slot).seq)))
        };
        if seq & 1 == 0 && seq == again {
            return (key.family != 0).then_some((key, entry));
        }
        std::hint::spin_loop();
    }
    None
}

/// 48 random bytes for a table key.
fn random_bytes() -> io::Result<[u8; 48]> {
    let mut buf = [0u8; 48];
    // SAFETY: writes at most 48 bytes into `buf`.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
    if n != buf.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(buf)
}

impl Dataplane {
    /// Gives a table without a key (just created) a random one for its
    /// size; keeps the key of an adopted table, which must be for its size.
    pub(super) fn ensure_conntrack_key(&mut self) -> Result<()> {
        let sets = self.conntrack_sets()?;
        if !sets.is_power_of_two() {
            return Err(DataplaneError::Capacity(sets.saturating_mul(CONN_WAYS as u32)));
        }
        let mut keys = array::<ConnTableKey>(&mut self.ebpf, maps::CONNTRACK_KEY)?;
        let key = keys.get(&0, 0).map_err(map_err(maps::CONNTRACK_KEY))?;
        if key.is_well_formed() && key.sets() == sets {
            return Ok(());
        }
        if key != ConnTableKey::default() {
            return Err(DataplaneError::Pin(super::PinError::Mismatch {
                path: maps::CONNTRACK_KEY.into(),
                detail: format!("not the key of a table of {sets} sets: {key:?}"),
            }));
        }
        let random = random_bytes().map_err(|e| conntrack_error("getrandom", e))?;
        keys.set(0, ConnTableKey::new(random, sets), 0).map_err(map_err(maps::CONNTRACK_KEY))
    }

    /// The table, mapped on first use (`Arc`: a recount walks it on
    /// another thread).
    pub fn conn_table(&self) -> Result<Arc<ConnTable>> {
        if let Some(t) = self.conn_table.get() {
            return Ok(t.clone());
        }
        let sets = self.conntrack_sets()?;
        let key =
            self.array_ro::<ConnTableKey>(maps::CONNTRACK_KEY)?.get(&0, 0).map_err(map_err(maps::CONNTRACK_KEY))?;
        let table =
            Arc::new(ConnTable::map(self.conntrack_data()?, sets, key).map_err(|e| conntrack_error("mmap", e))?);
        Ok(self.conn_table.get_or_init(|| table).clone())
    }

    /// Entries the connection table was created with.
    pub fn conntrack_capacity(&self) -> Result<u32> {
        Ok(self.conntrack_sets()?.saturating_mul(CONN_WAYS as u32))
    }

    /// Sets the connection table was created with (its max entries).
    fn conntrack_sets(&self) -> Result<u32> {
        Ok(self.conntrack_data()?.info().map_err(map_err(maps::CONNTRACK))?.max_entries())
    }

    /// The flow's connection-table entry, if it has one.
    pub fn conntrack_entry(&self, flow: &FlowKey) -> Result<Option<ConnEntry>> {
        Ok(self.conn_table()?.get(flow))
    }

    fn conntrack_data(&self) -> Result<&MapData> {
        match self.ebpf.map(maps::CONNTRACK) {
            Some(Map::Array(data)) => Ok(data),
            _ => Err(DataplaneError::MissingMap(maps::CONNTRACK)),
        }
    }
}

fn conntrack_error(call: &'static str, io_error: io::Error) -> DataplaneError {
    map_err(maps::CONNTRACK)(aya::maps::MapError::SyscallError(aya::sys::SyscallError { call, io_error }))
}
