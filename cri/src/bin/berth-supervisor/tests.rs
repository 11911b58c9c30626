//! Unit tests of berth-supervisor's modules, built with the standard library
//! and the test harness (the binary itself has neither). The poll loop and the
//! runtime helper are exercised end to end by the CRI tests (tests/tests/cri_*).
// Parts of the modules only the binary reaches.
#![allow(dead_code)]

extern crate alloc;

mod frame {
    include!("../../supervisor/frame.rs");
}
#[path = "json.rs"]
mod json;
mod names {
    include!("../../supervisor/names.rs");
}
#[path = "log.rs"]
mod log;
#[path = "stdio.rs"]
mod stdio;
#[path = "sys.rs"]
mod sys;
#[path = "wire.rs"]
mod wire;

pub fn report(message: &str) {
    eprintln!("{message}");
}
