//! berth-supervisor: the per-pod supervisor that berth-cri starts (see
//! `berth_cri::supervisor`). It is the parent (child subreaper) of the pod's
//! container processes: it creates and starts them through the
//! `berth-supervisor-op` helper, holds their stdio, copies their output into CRI
//! log files and to attached clients, reaps them and writes each exit status to
//! disk before reporting it.
//!
//! Every pod keeps one resident, so it is built to map as little as possible: no
//! standard library and no C library (with them, a supervisor mapped more than a
//! megabyte: static glibc alone is about 900 KB, and the kernel maps a binary's
//! file pages in large folios around each fault). It starts at its own `_start`,
//! makes system calls directly and brings its own allocator.
//!
//! Stable Rust refuses a `no_std` executable built with `panic = "unwind"` (it has
//! no unwinding personality), which is the dev profile's; there the standard
//! library is linked for that alone, and nothing else of it is used (its C
//! library is never initialised, so a panic in a dev build ends in a crash
//! rather than a message).
#![cfg_attr(panic = "abort", no_std)]
#![no_main]

extern crate alloc;

// Also holds the daemon's half (encoding resizes).
#[allow(dead_code)]
mod frame {
    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;
    include!("../../supervisor/frame.rs");
}
mod heap;
mod names {
    include!("../../supervisor/names.rs");
}
mod helper;
mod json;
mod log;
mod server;
mod start;
mod stdio;
mod sys;
mod wire;

#[global_allocator]
static HEAP: heap::Heap = heap::Heap::new();

/// Writes one line to stderr (the daemon points it at `supervisor.log`).
pub fn report(message: &str) {
    let mut line = alloc::vec::Vec::with_capacity(message.len() + 1);
    line.extend_from_slice(message.as_bytes());
    line.push(b'\n');
    let _ = sys::write_all(2, &line);
}
