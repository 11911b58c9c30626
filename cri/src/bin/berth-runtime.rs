//! berth-runtime: runc-compatible OCI runtime command line.

fn main() {
    std::process::exit(berth_cri::runtime_cli::main());
}
