//! Names that do not collide between tests running in parallel processes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Returns `<prefix>-<pid>-<counter>-<time>`: unique across the test processes
/// nextest runs at once and across calls within one process. Short enough for
/// interface names is not a goal; container ids, netns and cgroup names are.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_differ_between_calls() {
        assert_ne!(unique_name("x"), unique_name("x"));
        assert!(unique_name("berth-test").starts_with("berth-test-"));
    }
}
