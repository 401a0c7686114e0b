//! Signed timestamps: strict parsing of the formats providers send, the `now ± tolerance`
//! window, and formatting `now` for signing.
//!
//! Owns only time arithmetic; which header carries the timestamp is the schemes' business.
//! Times are nanoseconds since the Unix epoch as `i128`, so no format can overflow.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{expired, VerifyError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TimestampFormat {
    /// Integer Unix seconds (`1700000000`): Stripe, Slack, Zoom, Standard Webhooks, Paddle.
    UnixSeconds,
    /// Integer Unix milliseconds: HubSpot, Linear.
    UnixMillis,
    /// RFC 3339 in UTC with any fraction (`2023-07-15T17:16:03.17106713Z`): Twitch, Zendesk.
    Rfc3339,
}

impl TimestampFormat {
    pub(super) fn from_name(name: &str) -> Option<Self> {
        match name {
            "unix" => Some(TimestampFormat::UnixSeconds),
            "unix_ms" => Some(TimestampFormat::UnixMillis),
            "rfc3339" => Some(TimestampFormat::Rfc3339),
            _ => None,
        }
    }

    pub(super) fn describe(self) -> &'static str {
        match self {
            TimestampFormat::UnixSeconds => "integer Unix seconds",
            TimestampFormat::UnixMillis => "integer Unix milliseconds",
            TimestampFormat::Rfc3339 => "an RFC 3339 UTC time",
        }
    }

    /// Nanoseconds since the epoch, or `None` unless `text` is exactly this format (digits
    /// only for the integer forms: no sign, no fraction, no spaces).
    pub(super) fn parse(self, text: &str) -> Option<i128> {
        match self {
            TimestampFormat::UnixSeconds => digits(text).map(|s| i128::from(s) * 1_000_000_000),
            TimestampFormat::UnixMillis => digits(text).map(|ms| i128::from(ms) * 1_000_000),
            TimestampFormat::Rfc3339 => humantime::parse_rfc3339(text).ok().map(nanos_since_epoch),
        }
    }

    /// `now` written the way the provider writes it.
    pub(super) fn format(self, now: SystemTime) -> String {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        match self {
            TimestampFormat::UnixSeconds => since.as_secs().to_string(),
            TimestampFormat::UnixMillis => since.as_millis().to_string(),
            TimestampFormat::Rfc3339 => humantime::format_rfc3339(now).to_string(),
        }
    }
}

/// 1–19 ASCII digits as a `u64`.
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

pub(super) fn nanos_since_epoch(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// Expired unless `timestamp` (ns since epoch) is within `tolerance` of `now`, either way.
/// The boundary itself passes (an age of exactly 300 s is within 300 s).
pub(super) fn check_window(
    timestamp: i128,
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let age = nanos_since_epoch(now) - timestamp;
    let limit = tolerance.as_nanos() as i128;
    if age > limit {
        Err(expired(format!(
            "timestamp {} in the past, tolerance {}",
            human(age),
            human(limit)
        )))
    } else if -age > limit {
        Err(expired(format!(
            "timestamp {} in the future, tolerance {}",
            human(-age),
            human(limit)
        )))
    } else {
        Ok(())
    }
}

/// `301s`, or `5.250s` when not whole seconds.
pub(super) fn human(nanos: i128) -> String {
    let secs = nanos / 1_000_000_000;
    let millis = (nanos % 1_000_000_000) / 1_000_000;
    if nanos % 1_000_000_000 == 0 {
        format!("{secs}s")
    } else {
        format!("{secs}.{millis:03}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn parse_table() {
        use TimestampFormat::*;
        let table: &[(TimestampFormat, &str, Option<i128>)] = &[
            (UnixSeconds, "1700000000", Some(1_700_000_000_000_000_000)),
            (UnixSeconds, "0", Some(0)),
            (UnixSeconds, "1614265330.9", None),
            (UnixSeconds, "+1614265330", None),
            (UnixSeconds, "-5", None),
            (UnixSeconds, " 1", None),
            (UnixSeconds, "", None),
            (UnixSeconds, "hello", None),
            (UnixSeconds, "99999999999999999999", None),
            (UnixMillis, "15000000", Some(15_000_000_000_000)),
            (
                Rfc3339,
                "2023-07-15T17:16:03.17106713Z",
                Some(1_689_441_363_171_067_130),
            ),
            (
                Rfc3339,
                "2024-01-01T00:00:00Z",
                Some(1_704_067_200_000_000_000),
            ),
            (Rfc3339, "2024-01-01T00:00:00+02:00", None),
            (Rfc3339, "2024-01-01", None),
            (Rfc3339, "1700000000", None),
        ];
        for &(format, text, expected) in table {
            assert_eq!(format.parse(text), expected, "{format:?} {text:?}");
        }
    }

    #[test]
    fn window_is_two_sided_and_inclusive() {
        let tol = Duration::from_secs(300);
        let ts = 1_000_000i128 * 1_000_000_000;
        assert!(check_window(ts, at(1_000_300), tol).is_ok());
        assert!(check_window(ts, at(999_700), tol).is_ok());
        let past = check_window(ts, at(1_000_301), tol).unwrap_err();
        assert_eq!(past.detail(), "timestamp 301s in the past, tolerance 300s");
        let future = check_window(ts, at(999_699), tol).unwrap_err();
        assert_eq!(
            future.detail(),
            "timestamp 301s in the future, tolerance 300s"
        );
        assert_eq!(future.error_code(), "timestamp_out_of_range");
        let ms = check_window(ts + 1_500_000_000, at(1_000_000), Duration::from_secs(1));
        assert_eq!(
            ms.unwrap_err().detail(),
            "timestamp 1.500s in the future, tolerance 1s"
        );
    }

    #[test]
    fn format_round_trips() {
        let now = UNIX_EPOCH + Duration::new(1_689_441_363, 171_067_130);
        for f in [
            TimestampFormat::UnixSeconds,
            TimestampFormat::UnixMillis,
            TimestampFormat::Rfc3339,
        ] {
            let text = f.format(now);
            let back = f.parse(&text).unwrap();
            assert!(
                (nanos_since_epoch(now) - back) < 1_000_000_000,
                "{f:?} {text}"
            );
        }
    }
}
