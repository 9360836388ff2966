//! Active connections: the agent's recount of the connection table.
//!
//! The program keeps `BACKEND_ACTIVE` up to date on its own (+1 when a flow
//! is recorded, -1 on the client's first FIN or RST), but it never sees a
//! flow end silently: UDP, a TCP flow whose FIN it missed, an entry a new
//! flow evicted. So the agent periodically walks `CONNTRACK`, counts per backend
//! the entries that are current (backend id and epoch still valid), not
//! closed and seen within their protocol's idle timeout, and overwrites the
//! counters with that. Flows opened while the walk runs and counted by the
//! program before the overwrite are lost from the count until the next walk
//! (at most the new-flow rate times the walk time).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use lb_common::{
    CONN_F_CLOSED, ConnEntry, FlowKey, MAX_BACKENDS,
    consts::maps,
    net::IPPROTO_TCP,
    types::{seen_units, units_covering},
};

use super::{Dataplane, Result, array, conntrack::ConnTable, map_err};

/// Idle timeouts of the count, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdleTimeouts {
    pub tcp_s: u32,
    pub udp_s: u32,
}

/// What one recount found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActiveReport {
    /// Connection-table entries read.
    pub entries: u64,
    /// Of those, active flows (the sum of the new counters).
    pub active: u64,
    /// How long the walk and the writes took.
    pub took: Duration,
}

/// The idle timeouts in units of `ConnEntry::seen` (rounded up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdleUnits {
    pub tcp: u32,
    pub udp: u32,
}

impl IdleTimeouts {
    pub fn in_units(self, hz: u32) -> IdleUnits {
        IdleUnits { tcp: units_covering(self.tcp_s, hz), udp: units_covering(self.udp_s, hz) }
    }
}

/// Whether an entry counts as an active flow of a backend whose current
/// epoch is `epoch` (None: the id is not in use). `now` is in units of
/// `ConnEntry::seen`; an entry seen after `now` (during the walk) is recent.
pub fn counts(key: &FlowKey, entry: &ConnEntry, epoch: Option<u32>, now: u32, idle: IdleUnits) -> bool {
    let timeout = if key.proto == IPPROTO_TCP { idle.tcp } else { idle.udp };
    let age = now.wrapping_sub(entry.seen) as i32;
    epoch == Some(entry.epoch) && entry.flags & CONN_F_CLOSED == 0 && age <= timeout as i32
}

/// A recount prepared by the owner of the maps, to run on any thread: it
/// holds the mapped connection table and a snapshot of the backend epochs,
/// so the walk does not hold up the owner.
pub struct Recount {
    table: Arc<ConnTable>,
    /// Current epoch per backend id in use, indexed by id.
    epochs: Vec<Option<u32>>,
    idle: IdleUnits,
    /// The kernel's clock when the recount was prepared, in `seen` units.
    now: u32,
    started: Instant,
}

/// What a [`Recount`] found, for [`Dataplane::finish_recount`].
pub struct Counted {
    epochs: Vec<Option<u32>>,
    active: Vec<u64>,
    entries: u64,
    started: Instant,
}

impl Recount {
    /// Walks the whole table (the slow part: it reads every slot).
    pub fn run(self) -> Counted {
        let (epochs, idle, now) = (self.epochs, self.idle, self.now);
        let mut active = vec![0u64; epochs.len()];
        let mut entries = 0u64;
        self.table.for_each(|key, entry| {
            entries += 1;
            let id = entry.backend as usize;
            if id < epochs.len() && counts(key, entry, epochs[id], now, idle) {
                active[id] += 1;
            }
        });
        Counted { epochs, active, entries, started: self.started }
    }
}

impl Dataplane {
    /// Recounts active connections and overwrites `BACKEND_ACTIVE` of every
    /// backend in use, on this thread.
    pub fn reconcile_active(&mut self, idle: IdleTimeouts) -> Result<ActiveReport> {
        let counted = self.prepare_recount(idle)?.run();
        self.finish_recount(counted)
    }

    /// Snapshots what a recount needs (the first in a process also learns
    /// the kernel's HZ, see `clock`: it waits only if the data path was
    /// loaded less than 200 ms ago).
    pub fn prepare_recount(&self, idle: IdleTimeouts) -> Result<Recount> {
        let idle = idle.in_units(self.hz()?);
        let now = seen_units(self.clock_sample()?.jiffies);
        let started = Instant::now();
        // Indexed by backend id: the walk does no hashing per entry.
        let mut epochs: Vec<Option<u32>> = vec![None; MAX_BACKENDS as usize];
        for id in self.applied.backends.values() {
            epochs[*id as usize] = Some(self.applied.epochs.get(id).copied().unwrap_or(0));
        }
        let table = self.conn_table()?;
        Ok(Recount { table, epochs, idle, now, started })
    }

    /// Writes a recount's counts for the backends that are still the ones
    /// it counted (an id given to a new backend meanwhile keeps its count).
    pub fn finish_recount(&mut self, counted: Counted) -> Result<ActiveReport> {
        let current: Vec<(u32, u32)> =
            self.applied.backends.values().map(|id| (*id, self.applied.epochs.get(id).copied().unwrap_or(0))).collect();
        let mut counters = array::<u64>(&mut self.ebpf, maps::BACKEND_ACTIVE)?;
        let mut total = 0;
        for (id, epoch) in current {
            if counted.epochs[id as usize] == Some(epoch) {
                counters.set(id, counted.active[id as usize], 0).map_err(map_err(maps::BACKEND_ACTIVE))?;
                total += counted.active[id as usize];
            }
        }
        Ok(ActiveReport { entries: counted.entries, active: total, took: counted.started.elapsed() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_counts_as_active() {
        // At HZ=250 a unit is 32 jiffies (128 ms): 300 s is 2343.75 units,
        // rounded up to 2344; 30 s to 235.
        let idle = IdleTimeouts { tcp_s: 300, udp_s: 30 }.in_units(250);
        assert_eq!(idle, IdleUnits { tcp: 2344, udp: 235 });
        let tcp = FlowKey { proto: IPPROTO_TCP, ..FlowKey::default() };
        let udp = FlowKey { proto: lb_common::net::IPPROTO_UDP, ..FlowKey::default() };
        let e = ConnEntry { backend: 3, epoch: 7, flags: 0, seen: 1000 };
        assert!(counts(&tcp, &e, Some(7), 3344, idle));
        assert!(!counts(&tcp, &e, Some(7), 3345, idle), "idle past the TCP timeout");
        assert!(counts(&udp, &e, Some(7), 1235, idle) && !counts(&udp, &e, Some(7), 1236, idle));
        assert!(!counts(&tcp, &e, Some(8), 1000, idle), "the id has a new owner");
        assert!(!counts(&tcp, &e, None, 1000, idle), "the backend is gone");
        assert!(!counts(&tcp, &ConnEntry { flags: CONN_F_CLOSED, ..e }, Some(7), 1000, idle), "closed");
        // An IPv6 flow's label shares the word: it changes neither answer.
        let labelled = ConnEntry { flags: 0xf_ffff << lb_common::CONN_LABEL_SHIFT, ..e };
        assert!(counts(&tcp, &labelled, Some(7), 1000, idle), "open, with a label");
        let closed = ConnEntry { flags: labelled.flags | CONN_F_CLOSED, ..e };
        assert!(!counts(&tcp, &closed, Some(7), 1000, idle), "closed, with a label");
        assert!(counts(&tcp, &ConnEntry { seen: 1001, ..e }, Some(7), 1000, idle), "seen after the clock read");
    }

    #[test]
    fn seen_units_are_32_jiffies_and_wrap() {
        assert_eq!((seen_units(31), seen_units(32), seen_units(64)), (0, 1, 2));
        assert_eq!((units_covering(0, 1000), units_covering(1, 1000), units_covering(86_400, 100)), (0, 32, 270_000));
        // A clock that wrapped past u32 between the entry and now.
        let idle = IdleTimeouts { tcp_s: 300, udp_s: 30 }.in_units(1000);
        let tcp = FlowKey { proto: IPPROTO_TCP, ..FlowKey::default() };
        let e = ConnEntry { backend: 3, epoch: 7, flags: 0, seen: u32::MAX - 5 };
        assert!(counts(&tcp, &e, Some(7), 10, idle), "16 units old across the wrap");
    }
}
