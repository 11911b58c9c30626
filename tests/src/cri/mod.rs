//! CRI endpoint fixtures: a CRI runtime (Debian's containerd 1.6 with runc, or
//! berth-cri) started on temp dirs inside a test-made network namespace and
//! private mount namespace, images in a local registry, and a connected client.
//!
//! `BERTH_TEST_CRI=containerd|berth` (default `berth`) picks the endpoint, so
//! the same suite checks upstream behaviour and ours. Entry point: [`run`].

mod berth;
mod config;
mod containerd;
mod daemon;
mod endpoint;
mod env;
pub mod events;
mod images;
mod network;
mod procs;
pub mod spdy;
pub mod tls;
pub mod websocket;

pub use config::{container_config, pod_config};
pub use daemon::{Daemon, DaemonLayout};
pub use endpoint::{BINARY_VAR, EndpointKind, berth_cri_binary, require_berth_cri};
pub use env::{CriEnv, enter_test_netns, run, run_with_flags};
pub use images::TestImages;
pub use network::{CNI_BIN_DIR_VAR, write_cni};
pub use procs::{mount_ns_processes, pss_kib, rss_kib};
