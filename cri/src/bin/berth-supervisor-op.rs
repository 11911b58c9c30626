//! berth-supervisor-op: performs one runtime operation (create, start, kill,
//! delete, OOM check) for a per-pod supervisor and exits (see
//! `berth_cri::supervisor::op`). It holds the runtime library so that the
//! resident supervisor does not.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(berth_cri::supervisor::op::main(&args));
}
