//! Waiting on a condition with a deadline, the only way tests synchronise.

use std::time::{Duration, Instant};

/// Polls `condition` until it yields `Some`, failing after `timeout` with
/// `what` in the error. The short poll interval only bounds CPU use; the
/// condition itself is what the caller synchronises on.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut condition: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(1);
    loop {
        if let Some(value) = condition() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(interval);
        interval = (interval * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_the_condition_holds() {
        let mut calls = 0;
        let value = wait_for(Duration::from_secs(5), "third call", || {
            calls += 1;
            (calls == 3).then_some(calls)
        })
        .unwrap();
        assert_eq!(value, 3);
    }

    #[test]
    fn fails_naming_the_condition_after_the_deadline() {
        let err = wait_for(Duration::from_millis(20), "never", || None::<()>).unwrap_err();
        assert!(err.to_string().contains("never"), "{err}");
    }
}
