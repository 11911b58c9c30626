//! Kubernetes resource quantities ("10M", "1Gi", "1.5e3") as whole numbers,
//! rounded up like `Quantity.Value()`. Hand-written: the few crates that
//! parse them pull in the whole Kubernetes API types.

/// Parses a quantity into its integer value (rounded up).
pub fn parse_quantity(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    if number.is_empty() || number.starts_with('-') {
        return Err(format!("{text:?} is not a non-negative quantity"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a quantity"))?;
    let multiplier = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..]
                .parse()
                .map_err(|_| format!("{text:?} has an invalid exponent"))?;
            10f64.powi(e)
        }
        _ => return Err(format!("{text:?} has an unknown suffix {suffix:?}")),
    };
    let total = (value * multiplier).ceil();
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(total as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_quantity;

    #[test]
    fn parses_suffixes() {
        assert_eq!(parse_quantity("10M").unwrap(), 10_000_000);
        assert_eq!(parse_quantity("1Gi").unwrap(), 1 << 30);
        assert_eq!(parse_quantity("1.5k").unwrap(), 1500);
        assert_eq!(parse_quantity("2e3").unwrap(), 2000);
        assert_eq!(parse_quantity("1500m").unwrap(), 2);
        assert!(parse_quantity("10X").is_err());
        assert!(parse_quantity("-1").is_err());
        assert!(parse_quantity("").is_err());
    }
}
