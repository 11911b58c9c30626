//! `usage_nano_cores`: CPU use over the time between two stats requests,
//! derived like containerd from the previous cumulative sample of the same
//! container or sandbox.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Nanoseconds since the epoch.
    at: i64,
    /// Cumulative CPU nanoseconds.
    usage: u64,
}

/// The last sample of every container and sandbox asked about.
#[derive(Debug, Default)]
pub struct CpuSampler {
    last: Mutex<HashMap<String, Sample>>,
}

impl CpuSampler {
    /// Cores used (in billionths) since the previous sample of `id`, 0 for
    /// the first one or when time did not advance; `(at, usage)` becomes
    /// the previous sample.
    pub fn nano_cores(&self, id: &str, at: i64, usage: u64) -> u64 {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let previous = last.insert(id.to_string(), Sample { at, usage });
        let Some(previous) = previous else {
            return 0;
        };
        let elapsed = at.saturating_sub(previous.at);
        if elapsed <= 0 {
            return 0;
        }
        let used = u128::from(usage.saturating_sub(previous.usage));
        u64::try_from(used * 1_000_000_000 / elapsed as u128).unwrap_or(u64::MAX)
    }

    /// Drops the samples of ids no longer present.
    pub fn retain(&self, live: &std::collections::HashSet<String>) {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| live.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sample_gives_zero_then_the_rate() {
        let sampler = CpuSampler::default();
        assert_eq!(sampler.nano_cores("c", 1_000_000_000, 5_000), 0);
        // Half a core over two seconds.
        assert_eq!(
            sampler.nano_cores("c", 3_000_000_000, 5_000 + 1_000_000_000),
            500_000_000
        );
    }

    #[test]
    fn no_elapsed_time_or_counter_reset_gives_zero() {
        let sampler = CpuSampler::default();
        sampler.nano_cores("c", 10, 100);
        assert_eq!(sampler.nano_cores("c", 10, 200), 0);
        assert_eq!(sampler.nano_cores("c", 20, 50), 0);
    }

    #[test]
    fn retain_forgets_removed_ids() {
        let sampler = CpuSampler::default();
        sampler.nano_cores("gone", 1, 1);
        sampler.nano_cores("kept", 1, 1);
        sampler.retain(&["kept".to_string()].into_iter().collect());
        assert_eq!(sampler.nano_cores("gone", 2, 1_000_000_001), 0);
        assert_eq!(sampler.nano_cores("kept", 2, 2), 1_000_000_000);
    }
}
