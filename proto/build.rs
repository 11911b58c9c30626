//! Generates the CRI v1 messages and tonic services from `api.proto`.
//!
//! The proto is parsed by protox (pure Rust), so building needs neither
//! protoc nor network access.

use std::error::Error;

const PROTO: &str = "api.proto";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["."])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Registry secrets: src/redact.rs writes a Debug that hides them.
        .skip_debug([".runtime.v1.AuthConfig"])
        .compile_fds(descriptors)?;
    Ok(())
}
