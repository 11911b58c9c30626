//! The per-pod supervisor: a small single-threaded process (the
//! `berth-supervisor` binary, no async runtime) that is the parent (child subreaper) of the
//! pod's container processes. It creates and starts them through the OCI
//! runtime library, each operation in the short-lived `berth-supervisor-op`
//! helper ([`op`], [`helper`]) so that the resident supervisor stays small, holds
//! their stdio (pipes, or a pty master for tty containers), copies their output into CRI log files and to attached
//! clients, reaps them and writes each exit status to disk before reporting
//! it. The daemon
//! talks to it over `<dir>/supervisor.sock` with [`protocol`] messages, so
//! containers, logs and exit codes outlive a restart of the daemon.

pub mod client;
mod helper;
pub mod op;
pub mod protocol;
mod server;
pub(crate) mod stdio;

pub use server::main;

/// The socket in a supervisor's directory.
pub const SOCKET: &str = "supervisor.sock";
