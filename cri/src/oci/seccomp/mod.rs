//! Seccomp filters: OCI `linux.seccomp` validated and compiled to a BPF program in the
//! parent (libseccomp does the compiling), installed in the child with one syscall.

mod compile;
mod enosys;
mod error;
mod install;
mod notify;
mod profile;

pub use compile::{CompiledFilter, compile};
pub use error::SeccompError;
pub use notify::send_listener_fd;
pub use profile::{DEFAULT_CAPABILITIES, runtime_default_profile, runtime_default_profile_for};
