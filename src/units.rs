//! Parsing of the unit-carrying values used in the config: durations (`"5s"`,
//! `"5m"`, `"24h"`, `"250ms"`) and sizes (`"1MiB"`, `"512KiB"`, `"100"`).
//!
//! Owns only string → value conversion; which keys use them is `config`'s business.

use std::time::Duration;

/// Parses a duration such as `"250ms"`, `"5s"`, `"5m"`, `"1h30m"` or `"24h"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("invalid duration {text:?} ({e}); use a number with a unit such as \"500ms\", \"5s\", \"5m\" or \"24h\"")
    })
}

/// [`parse_duration`] of a value that must be more than 0 and at most `max`
/// (a bound that keeps deadlines and the leases sent to Redis representable).
/// Errors name the value and the bound, e.g. `"30d" is more than the most
/// allowed, 24h`.
pub fn parse_duration_within(text: &str, max: Duration) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("must be more than 0".to_string()),
        d if d > max => Err(format!(
            "{text:?} is more than the most allowed, {}",
            humantime::format_duration(max)
        )),
        d => Ok(d),
    }
}

/// Parses a size such as `"1MiB"`, `"512KiB"`, `"10MB"` or a plain byte count `"4096"`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let invalid = || {
        format!("invalid size {text:?}; use a number with a unit such as \"64KiB\", \"1MiB\" or \"10MB\"")
    };
    let number: u64 = digits.parse().map_err(|_| invalid())?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => return Err(invalid()),
    };
    number.checked_mul(multiplier).ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("five seconds").is_err());
    }

    #[test]
    fn sizes() {
        let table = [
            ("0", Some(0)),
            ("4096", Some(4096)),
            ("64KiB", Some(65_536)),
            ("1MiB", Some(1_048_576)),
            ("10MB", Some(10_000_000)),
            ("2 GiB", Some(2 << 30)),
            ("1.5MiB", None),
            ("MiB", None),
            ("1XB", None),
            ("99999999999999999999GiB", None),
        ];
        for (text, expected) in table {
            assert_eq!(parse_size(text).ok(), expected, "{text}");
        }
    }
}
