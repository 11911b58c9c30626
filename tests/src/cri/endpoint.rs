//! Which CRI endpoint the suite drives, chosen by `BERTH_TEST_CRI`.

use std::path::PathBuf;

/// The variable that selects the endpoint: `containerd` or `berth` (default).
pub const ENDPOINT_VAR: &str = "BERTH_TEST_CRI";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointKind {
    /// Debian's containerd 1.6 with runc: the upstream reference.
    Containerd,
    /// The workspace's berth-cri.
    Berth,
}

impl EndpointKind {
    /// The endpoint named by `BERTH_TEST_CRI`; an unknown value is an error, not
    /// a silent default, so CI cannot run the wrong suite unnoticed.
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self::selection()?.0)
    }

    /// The endpoint and whether it was named explicitly (not the default).
    pub fn selection() -> anyhow::Result<(Self, bool)> {
        match std::env::var(ENDPOINT_VAR).as_deref() {
            Err(_) | Ok("") => Ok((EndpointKind::Berth, false)),
            Ok("berth") => Ok((EndpointKind::Berth, true)),
            Ok("containerd") => Ok((EndpointKind::Containerd, true)),
            Ok(other) => anyhow::bail!("{ENDPOINT_VAR}={other:?}: expected containerd or berth"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EndpointKind::Containerd => "containerd",
            EndpointKind::Berth => "berth",
        }
    }
}

/// The variable naming another berth-cri binary (e.g. a release build for
/// benchmarks); its siblings (berth-supervisor, berth-runtime, berth-pause)
/// come from the same directory.
pub const BINARY_VAR: &str = "BERTH_TEST_CRI_BINARY";

/// `BERTH_TEST_CRI_BINARY`, else `target/debug/berth-cri` (built by
/// `cargo build -p berth-cri --bins`).
pub fn berth_cri_binary() -> PathBuf {
    match std::env::var_os(BINARY_VAR) {
        Some(path) => PathBuf::from(path),
        None => crate::bins::workspace_binary("berth-cri"),
    }
}

/// Fails when the berth-cri binary is absent. The fixture calls it when
/// `BERTH_TEST_CRI=berth` is set explicitly (what CI sets once the daemon
/// exists): then a missing binary fails the test instead of skipping it. With
/// the variable unset, a missing binary makes [`crate::cri::run`] skip with
/// this reason on stderr.
pub fn require_berth_cri() -> anyhow::Result<PathBuf> {
    let binary = berth_cri_binary();
    anyhow::ensure!(
        binary.is_file(),
        "{} is missing: build it with `cargo build -p berth-cri --bins`, or run the suite \
         against the reference with {ENDPOINT_VAR}=containerd",
        binary.display()
    );
    Ok(binary)
}
