//! berth-supervisor: the per-pod supervisor that berth-cri starts (see
//! `berth_cri::supervisor`). A binary of its own, single-threaded and without
//! the daemon's async runtime, gRPC or registry code, so that the process each
//! pod keeps resident maps only what supervising needs.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(berth_cri::supervisor::main(&args));
}
