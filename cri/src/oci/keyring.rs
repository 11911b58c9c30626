//! The container's own session keyring (runc's default, off with
//! --no-new-keyring), so it cannot read or use the keys of the runtime's session.

use std::ffi::CString;

use super::error::{OciError, Result};

const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;

/// Joins a new session keyring named after the container. Kernels or sandboxes
/// without keyring support are tolerated (logged at debug level).
pub fn join_session_keyring(name: &str) -> Result<()> {
    let name = CString::new(name)
        .map_err(|_| OciError::Init(format!("keyring name {name:?} has a NUL byte")))?;
    // SAFETY: keyctl reads the NUL-terminated name we pass.
    let rc = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    if rc >= 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENOSYS | libc::EACCES | libc::EPERM | libc::EDQUOT) => {
            tracing::debug!("no session keyring for the container: {err}");
            Ok(())
        }
        _ => Err(OciError::Init(format!("joining a session keyring: {err}"))),
    }
}
