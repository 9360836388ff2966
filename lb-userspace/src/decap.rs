//! Attaching the small programs of `lb-decap`: the backend-side decapsulator
//! and the reference pass/drop programs.

use aya::{
    Ebpf,
    programs::{ProgramError, Xdp},
};
use lb_common::consts::progs;

use crate::config::XdpModeSetting;

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program { name: String, source: ProgramError },
}

/// Loads `program` (one of `lb_decap`, `lb_pass`, `lb_drop`) and attaches it
/// to `iface`. The attachment lives as long as the returned object.
pub fn attach(program: &str, iface: &str, mode: XdpModeSetting) -> Result<Ebpf, AttachError> {
    let mut ebpf = Ebpf::load(crate::objects::DECAP)?;
    let err = |source| AttachError::Program { name: program.to_string(), source };
    let prog: &mut Xdp =
        ebpf.program_mut(program).ok_or_else(|| err(ProgramError::NotLoaded))?.try_into().map_err(err)?;
    prog.load().map_err(err)?;
    prog.attach(iface, mode.into()).map_err(err)?;
    Ok(ebpf)
}

/// Attaches the decapsulator to a backend's interface.
pub fn attach_decap(iface: &str, mode: XdpModeSetting) -> Result<Ebpf, AttachError> {
    attach(progs::DECAP, iface, mode)
}
