//! End-to-end tests, shared fixtures and benchmarks.
//!
//! The library holds what every integration test needs: test images built from
//! Debian's busybox-static ([`image`]), OCI bundles ([`bundle`]), a driver for a
//! runc-compatible runtime CLI ([`runtime`]), and guards that undo what a test
//! made even when it fails ([`tempdir`], [`netns`], [`child`]). Servers that
//! tests talk to: a real image registry ([`registry`]) and a Kubernetes API
//! server fixture ([`apiserver`]). CRI endpoints (berth-cri or containerd) for
//! the CRI validation suite live in [`cri`].

pub mod apiserver;
pub mod bins;
pub mod bundle;
pub mod cgroup;
pub mod child;
pub mod console;
pub mod cri;
pub mod image;
pub mod mountns;
pub mod netns;
pub mod registry;
pub mod runtime;
pub mod tempdir;
pub mod unique;
pub mod wait;

pub use unique::unique_name;
pub use wait::wait_for;
