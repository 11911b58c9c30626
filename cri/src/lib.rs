//! berth-cri CRI daemon, berth-runtime OCI runtime CLI and the runtime library.

pub mod oci;
