//! The per-pod supervisor, seen from the daemon. The supervisor itself is the
//! `berth-supervisor` binary (src/bin/berth-supervisor): a small single-threaded
//! process without the standard library that is the parent (child subreaper) of
//! the pod's container processes. It creates and starts them through the OCI
//! runtime library, each operation in the short-lived `berth-supervisor-op`
//! helper ([`op`]) so that the resident supervisor stays small, holds their stdio
//! (pipes, or a pty master for tty containers), copies their output into CRI log
//! files and to attached clients, reaps them and writes each exit status to disk
//! before reporting it. The daemon talks to it over `<dir>/supervisor.sock` with
//! [`protocol`] messages, so containers, logs and exit codes outlive a restart of
//! the daemon.

pub mod client;
pub mod op;
pub mod protocol;

/// What the daemon and the supervisor binaries agree on.
pub mod names {
    include!("names.rs");
}
pub use names::SOCKET;
