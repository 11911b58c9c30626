//! Interface stand-in for the seccomp compiler until branch `cgroups` is merged:
//! the contract's signatures; compile() refuses every profile.

use oci_spec::runtime::LinuxSeccomp;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("linux.seccomp: not supported by this build")]
    Unsupported,
}

#[derive(Debug)]
pub struct CompiledFilter {}

pub fn compile(_spec: &LinuxSeccomp) -> Result<CompiledFilter, SeccompError> {
    Err(SeccompError::Unsupported)
}

impl CompiledFilter {
    pub fn install(&self) -> Result<(), nix::errno::Errno> {
        Err(nix::errno::Errno::ENOSYS)
    }
}

pub fn runtime_default_profile() -> LinuxSeccomp {
    LinuxSeccomp::default()
}
