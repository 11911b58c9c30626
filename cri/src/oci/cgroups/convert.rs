//! v1 → v2 value conversions, the same numbers runc and crun write so that a spec
//! written with v1 units behaves alike on both versions.

/// cpu.shares [2, 262144] → cpu.weight [1, 10000] on a log-quadratic curve that maps
/// the defaults onto each other (1024 → 100) and keeps the ends (2 → 1, 262144 → 10000).
/// 0 stays 0 (unset).
pub fn shares_to_weight(shares: u64) -> u64 {
    match shares {
        0 => 0,
        1..=2 => 1,
        262_144.. => 10_000,
        _ => {
            let l = (shares as f64).log2();
            let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
            10f64.powf(exponent).ceil() as u64
        }
    }
}

/// blkio.weight [10, 1000] → io.weight [1, 10000]; 0 stays 0 (unset).
pub fn blkio_weight_to_io_weight(weight: u64) -> u64 {
    if weight == 0 {
        return 0;
    }
    1 + (weight.saturating_sub(10)) * 9999 / 990
}

/// The OCI `swap` (memory+swap total, v1 style) → v2 `memory.swap.max` (swap alone).
/// `None` = leave the file alone; `Some(-1)` = "max". Errors are reasons for the
/// `linux.resources.memory.swap` field.
pub fn memory_swap_to_v2(swap: i64, limit: i64) -> Result<Option<i64>, String> {
    // Unlimited memory with swap unset means unlimited swap too (as on v1).
    if limit == -1 && swap == 0 {
        return Ok(Some(-1));
    }
    match swap {
        0 => Ok(None),
        -1 => Ok(Some(-1)),
        _ if limit <= 0 => Err("a swap limit needs a memory limit".into()),
        _ if swap < limit => Err(format!(
            "memory+swap limit {swap} is below the memory limit {limit}"
        )),
        _ => Ok(Some(swap - limit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_map_onto_weights() {
        assert_eq!(shares_to_weight(0), 0);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 100);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1_000_000), 10_000);
        // Monotonic in between.
        assert!(shares_to_weight(512) < shares_to_weight(1024));
        assert!(shares_to_weight(2048) > 100);
        assert_eq!(shares_to_weight(102), 17);
        assert_eq!(shares_to_weight(512), 59);
    }

    #[test]
    fn blkio_weights_map_onto_io_weights() {
        assert_eq!(blkio_weight_to_io_weight(0), 0);
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
    }

    #[test]
    fn swap_is_the_part_above_the_memory_limit() {
        assert_eq!(memory_swap_to_v2(300, 100), Ok(Some(200)));
        assert_eq!(memory_swap_to_v2(100, 100), Ok(Some(0)));
        assert_eq!(memory_swap_to_v2(0, 100), Ok(None));
        assert_eq!(memory_swap_to_v2(-1, 100), Ok(Some(-1)));
        assert_eq!(memory_swap_to_v2(0, -1), Ok(Some(-1)));
        assert!(memory_swap_to_v2(50, 100).is_err());
        assert!(memory_swap_to_v2(50, 0).is_err());
    }
}
