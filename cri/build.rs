//! Links berth-supervisor as a position-dependent executable. One supervisor
//! stays resident per pod; as a PIE, the dynamic loader would relocate the whole
//! binary at each start, reading ~370 KiB of relocations and dirtying every page
//! of its relocated read-only data (~290 KiB of private memory per process). A
//! fixed-address binary needs neither.

fn main() {
    println!("cargo::rustc-link-arg-bin=berth-supervisor=-no-pie");
}
