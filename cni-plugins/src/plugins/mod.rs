//! The plugins, one module each; the binaries in `src/bin` only call `skel::run_main`.

pub mod bridge;
pub mod host_local;
pub mod loopback;
pub mod portmap;
