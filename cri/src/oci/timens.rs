//! The container's time namespace (linux.timeOffsets): its clock offsets can
//! only be written while no process lives in it, so it is not made by clone.
//! The init unshares it (which makes it the namespace of its children only),
//! writes /proc/self/timens_offsets, and enters it with its execve.

use std::collections::HashMap;

use nix::sched::{CloneFlags, unshare};
use oci_spec::runtime::LinuxTimeOffset;

use super::error::{Context, Result, invalid};

pub const CLONE_NEWTIME: CloneFlags = CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);

/// The clocks a time namespace can shift.
const CLOCKS: [&str; 2] = ["monotonic", "boottime"];

/// Checks linux.timeOffsets against the namespaces the container gets.
pub fn validate(
    offsets: &HashMap<String, LinuxTimeOffset>,
    creates_time_ns: bool,
    joins_time_ns: bool,
) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    if joins_time_ns {
        return Err(invalid(
            "linux.timeOffsets",
            "cannot set offsets of a time namespace that is joined (linux.namespaces path)",
        ));
    }
    if !creates_time_ns {
        return Err(invalid(
            "linux.timeOffsets",
            "offsets need a new time namespace in linux.namespaces",
        ));
    }
    for (clock, offset) in offsets {
        if !CLOCKS.contains(&clock.as_str()) {
            return Err(invalid(
                format!("linux.timeOffsets.{clock}"),
                "unknown clock (monotonic or boottime)",
            ));
        }
        if offset.nanosecs().unwrap_or(0) >= 1_000_000_000 {
            return Err(invalid(
                format!("linux.timeOffsets.{clock}.nanosecs"),
                "must be below 1000000000",
            ));
        }
    }
    Ok(())
}

/// The timens_offsets text: one "<clock> <secs> <nanosecs>" line per clock.
fn offsets_text(offsets: &HashMap<String, LinuxTimeOffset>) -> String {
    let mut clocks: Vec<_> = offsets.iter().collect();
    clocks.sort_by_key(|(clock, _)| clock.as_str());
    clocks
        .into_iter()
        .map(|(clock, offset)| {
            format!(
                "{clock} {} {}\n",
                offset.secs().unwrap_or(0),
                offset.nanosecs().unwrap_or(0)
            )
        })
        .collect()
}

/// Makes a new time namespace for our children and our next execve, with the
/// given offsets. `in_user_ns`: we are root of a new user namespace, where our
/// non-dumpable /proc/self belongs to the unmapped host root.
pub fn unshare_with_offsets(
    offsets: &HashMap<String, LinuxTimeOffset>,
    in_user_ns: bool,
) -> Result<()> {
    unshare(CLONE_NEWTIME).context(|| "unshare(CLONE_NEWTIME)".into())?;
    if offsets.is_empty() {
        return Ok(());
    }
    if in_user_ns {
        nix::sys::prctl::set_dumpable(true).context(|| "prctl(PR_SET_DUMPABLE)".into())?;
    }
    let written = std::fs::write("/proc/self/timens_offsets", offsets_text(offsets))
        .map_err(|e| invalid("linux.timeOffsets", format!("writing timens_offsets: {e}")));
    if in_user_ns {
        nix::sys::prctl::set_dumpable(false).context(|| "prctl(PR_SET_DUMPABLE)".into())?;
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(json: &str) -> HashMap<String, LinuxTimeOffset> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn offsets_become_one_line_per_clock() {
        let text = offsets_text(&offsets(
            r#"{"monotonic":{"secs":-5},"boottime":{"secs":86400,"nanosecs":7}}"#,
        ));
        assert_eq!(text, "boottime 86400 7\nmonotonic -5 0\n");
    }

    #[test]
    fn bad_offsets_name_the_field() {
        let unknown = validate(&offsets(r#"{"realtime":{"secs":1}}"#), true, false)
            .unwrap_err()
            .to_string();
        assert!(
            unknown.starts_with("linux.timeOffsets.realtime"),
            "{unknown}"
        );
        let nanos = validate(
            &offsets(r#"{"boottime":{"nanosecs":1000000000}}"#),
            true,
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(
            nanos.starts_with("linux.timeOffsets.boottime.nanosecs"),
            "{nanos}"
        );
        let no_ns = validate(&offsets(r#"{"boottime":{"secs":1}}"#), false, false)
            .unwrap_err()
            .to_string();
        assert!(no_ns.starts_with("linux.timeOffsets"), "{no_ns}");
        let joined = validate(&offsets(r#"{"boottime":{"secs":1}}"#), false, true);
        assert!(joined.is_err());
        validate(&offsets(r#"{"boottime":{"secs":1}}"#), true, false).unwrap();
    }
}
