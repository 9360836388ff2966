//! The capture switch (`CAPTURE_CONFIG`) and the program's capture
//! bookkeeping (`CAPTURE_STATE`); the records themselves are read from the
//! pinned `CAPTURE` ring buffer by `lb capture`.

use std::{net::IpAddr, path::PathBuf};

use aya::maps::Array;
use lb_common::{
    VipKey,
    capture::{CaptureConfig, CaptureState},
    consts::maps,
};

use super::{Dataplane, DataplaneError, Result, map_err};

impl Dataplane {
    /// The VIP's slot (the index its records and counters carry).
    pub fn vip_slot(&self, vip: &VipKey) -> Option<u32> {
        self.applied.vips.get(vip).filter(|v| v.meta.ring_size != 0).map(|v| v.meta.slot)
    }

    /// The id of a VIP's backend in the data path (absent while in maintenance).
    pub fn backend_id(&self, vip: &VipKey, address: IpAddr) -> Option<u32> {
        self.applied.backends.iter().find(|((v, a, _), _)| v == vip && *a == address).map(|(_, id)| *id)
    }

    /// Every backend id in the data path with its VIP and address.
    pub fn backend_ids(&self) -> Vec<(u32, VipKey, IpAddr)> {
        let mut ids: Vec<_> = self.applied.backends.iter().map(|((v, a, _), id)| (*id, *v, *a)).collect();
        ids.sort();
        ids
    }

    /// The pinned ring buffer the records go to (`None` for a data path that
    /// is not pinned, as in fixtures).
    pub fn capture_ring_path(&self) -> Option<PathBuf> {
        self.pins.as_ref().map(|p| p.dir.join(maps::CAPTURE))
    }

    /// The capture switch and the program's bookkeeping.
    pub fn capture_state(&self) -> Result<(CaptureConfig, CaptureState)> {
        let config = self.array_ro::<CaptureConfig>(maps::CAPTURE_CONFIG)?;
        let state = self.array_ro::<CaptureState>(maps::CAPTURE_STATE)?;
        Ok((
            config.get(&0, 0).map_err(map_err(maps::CAPTURE_CONFIG))?,
            state.get(&0, 0).map_err(map_err(maps::CAPTURE_STATE))?,
        ))
    }

    /// Starts a capture: the bookkeeping is reset first, so the bounds count
    /// from zero when the program sees the new switch.
    pub fn capture_start(&mut self, config: CaptureConfig) -> Result<()> {
        self.capture_array::<CaptureState>(maps::CAPTURE_STATE)?
            .set(0, CaptureState::default(), 0)
            .map_err(map_err(maps::CAPTURE_STATE))?;
        self.capture_array::<CaptureConfig>(maps::CAPTURE_CONFIG)?
            .set(0, config, 0)
            .map_err(map_err(maps::CAPTURE_CONFIG))
    }

    /// Turns capture off; returns the bookkeeping of the capture that ran.
    pub fn capture_stop(&mut self) -> Result<CaptureState> {
        self.capture_array::<CaptureConfig>(maps::CAPTURE_CONFIG)?
            .set(0, CaptureConfig::default(), 0)
            .map_err(map_err(maps::CAPTURE_CONFIG))?;
        Ok(self.capture_state()?.1)
    }

    fn capture_array<V: aya::Pod>(&mut self, name: &'static str) -> Result<Array<&mut aya::maps::MapData, V>> {
        let map = self.ebpf.map_mut(name).ok_or(DataplaneError::MissingMap(name))?;
        Array::try_from(map).map_err(map_err(name))
    }
}
