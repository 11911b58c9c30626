//! Links berth-supervisor, the process every pod keeps resident, as a static,
//! position-dependent executable with its own entry point.
//!
//! - Own entry point (`-nostartfiles`): it has no C runtime start-up; its
//!   `_start` is in src/bin/berth-supervisor/start.rs.
//! - Position-dependent: as a PIE, the dynamic loader would relocate the binary
//!   at each start and dirty every page of its relocated read-only data.
//! - Static: in a release build it calls no C function at all; where the
//!   standard library is linked (the dev profile, see the binary's main.rs) the
//!   C library comes in statically, so no loader runs before `_start`.
//!
//! Cargo has no per-binary `-C target-feature=+crt-static`, and the standard
//! library asks the linker for `-Bdynamic -lgcc_s -lc ...` whatever the link
//! arguments say. So this binary gets a library directory, searched first,
//! whose `lib<name>.so` files are linker scripts naming the static archives
//! (the way glibc's own libc.so is a script). Without the static archives
//! (libc6-dev) the supervisor is linked dynamically.

use std::path::{Path, PathBuf};

const SUPERVISOR: &str = "berth-supervisor";
const SUPERVISOR_OP: &str = "berth-supervisor-op";

/// The libraries linked into every binary of the package, and the archives
/// standing in for them.
const STATIC_STAND_INS: &[(&str, &[&str])] = &[
    ("c", &["libc.a", "libgcc.a", "libgcc_eh.a"]),
    ("gcc_s", &["libgcc_eh.a", "libgcc.a"]),
    ("m", &["libm.a"]),
    ("pthread", &["libpthread.a"]),
    ("dl", &["libdl.a"]),
    ("rt", &["librt.a"]),
    ("util", &["libutil.a"]),
    // Asked for by libseccomp-sys for the whole package; unused by this binary.
    ("seccomp", &["libseccomp.a"]),
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-link-arg-bin={SUPERVISOR}=-no-pie");
    println!("cargo::rustc-link-arg-bin={SUPERVISOR}=-nostartfiles");
    // Run once per create and start: no relocation of the binary at each start.
    println!("cargo::rustc-link-arg-bin={SUPERVISOR_OP}=-no-pie");
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if !linux_gnu {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    match write_stand_ins(&out.join("static-libs")) {
        Some(dir) => {
            println!("cargo::rustc-link-arg-bin={SUPERVISOR}=-static");
            // Last, after the standard library's -Bdynamic: the linker makes a
            // static executable only if it ends the command line in -Bstatic.
            println!("cargo::rustc-link-arg-bin={SUPERVISOR}=-Wl,-Bstatic");
            println!("cargo::rustc-link-arg-bin={SUPERVISOR}=-L{}", dir.display());
        }
        None => println!(
            "cargo::warning={SUPERVISOR} is linked dynamically: static C library archives not found"
        ),
    }
}

/// Writes the linker scripts; None when an archive is missing.
fn write_stand_ins(dir: &Path) -> Option<PathBuf> {
    std::fs::create_dir_all(dir).ok()?;
    for (name, archives) in STATIC_STAND_INS {
        let paths = archives
            .iter()
            .map(|archive| archive_path(archive))
            .collect::<Option<Vec<_>>>()?;
        let script = format!("GROUP ( {} )\n", paths.join(" "));
        std::fs::write(dir.join(format!("lib{name}.so")), script).ok()?;
    }
    Some(dir.to_path_buf())
}

/// Where the C compiler finds `archive`.
fn archive_path(archive: &str) -> Option<String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let output = std::process::Command::new(cc)
        .arg(format!("-print-file-name={archive}"))
        .output()
        .ok()?;
    let path = String::from_utf8(output.stdout).ok()?.trim().to_string();
    // An archive it does not know comes back as the bare name.
    Path::new(&path).is_absolute().then_some(path)
}
