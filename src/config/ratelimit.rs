//! The `rate_limit` table of a route: its file layer ([`RateLimitSpec`]) and its
//! validation into a [`RateLimit`] (`crate::ratelimit`, which owns the limiter and the
//! meaning of every key; see its module doc for the configuration).

use std::num::NonZeroU32;
use std::time::Duration;

use http::HeaderName;
use serde::Deserialize;

use super::Problem;
use crate::ratelimit::{LimitBy, Rate, RateLimit, DEFAULT_MAX_KEYS, MAX_REFILL};
use crate::units::parse_duration;

/// The `rate_limit` table of a route, as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// `"100/s"`, `"6000/min"`, `"10/h"`, `"10/30s"`.
    pub rate: String,
    /// Requests allowed at once; defaults to the rate's count.
    #[serde(default)]
    pub burst: Option<u32>,
    /// `"route"` (default), `"ip"` or `"header:<Name>"`.
    #[serde(default)]
    pub per: Option<String>,
    /// Cap on per-key buckets; default [`DEFAULT_MAX_KEYS`].
    #[serde(default)]
    pub max_keys: Option<usize>,
}

/// Parses `"<count>/<unit>"` or `"<count>/<duration>"`.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let usage = "use a count per unit such as \"100/s\", \"6000/min\", \"10/h\" or \"10/30s\"";
    let Some((count, unit)) = text.split_once('/') else {
        return Err(format!("invalid rate {text:?}; {usage}"));
    };
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| format!("invalid count in rate {text:?}; {usage}"))?;
    let Some(count) = NonZeroU32::new(count) else {
        return Err(format!(
            "rate {text:?} allows nothing; the count must be at least 1 (remove rate_limit \
             to disable limiting)"
        ));
    };
    let unit = unit.trim();
    let period = match unit.to_ascii_lowercase().as_str() {
        "s" | "sec" | "secs" | "second" | "seconds" => Duration::from_secs(1),
        "m" | "min" | "mins" | "minute" | "minutes" => Duration::from_secs(60),
        "h" | "hr" | "hrs" | "hour" | "hours" => Duration::from_secs(3600),
        "d" | "day" | "days" => Duration::from_secs(86_400),
        _ if unit.starts_with(|c: char| c.is_ascii_digit()) => parse_duration(unit)?,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in rate {text:?}; use s, min, h or d, or a duration \
                 such as \"30s\""
            ))
        }
    };
    if period.is_zero() {
        return Err(format!("rate {text:?} has a zero period; {usage}"));
    }
    Ok(Rate { count, period })
}

impl RateLimitSpec {
    /// Validates the table. Problem keys: `"rate"`, `"burst"`, `"per"`, `"max_keys"`; the
    /// loader prefixes `"routes[N].rate_limit"`. Every problem is reported.
    pub fn compile(&self) -> Result<RateLimit, Vec<Problem>> {
        let mut problems = Vec::new();
        let rate = parse_rate(&self.rate)
            .map_err(|m| problems.push(Problem::new("rate", m)))
            .ok();
        if let Some(rate) = rate {
            if rate.interval().is_zero() {
                problems.push(Problem::new(
                    "rate",
                    format!("rate {:?} is too high (over one per nanosecond)", self.rate),
                ));
            }
        }
        let burst = match self.burst {
            None => rate.map(|r| r.count),
            Some(b) => {
                let burst = NonZeroU32::new(b);
                if burst.is_none() {
                    problems.push(Problem::new(
                        "burst",
                        "burst must be at least 1 (it is how many requests may arrive at once); \
                         omit it to allow one period's worth",
                    ));
                }
                burst
            }
        };
        if let (Some(rate), Some(burst)) = (rate, burst) {
            let refill = rate.interval().as_nanos() * u128::from(burst.get());
            if refill > MAX_REFILL.as_nanos() {
                problems.push(Problem::new(
                    "burst",
                    format!(
                        "burst {burst} at rate {:?} takes over a year to refill; lower the burst",
                        self.rate
                    ),
                ));
            }
        }
        let by = parse_per(self.per.as_deref())
            .map_err(|m| problems.push(Problem::new("per", m)))
            .ok();
        let max_keys = match (self.max_keys, &by) {
            (None, _) => DEFAULT_MAX_KEYS,
            (Some(0), _) => {
                problems.push(Problem::new(
                    "max_keys",
                    "max_keys must be at least 1; omit it for the default of 100000",
                ));
                0
            }
            (Some(_), Some(LimitBy::Route)) => {
                problems.push(Problem::new(
                    "max_keys",
                    "max_keys applies only to per = \"ip\" or per = \"header:<Name>\"; remove it",
                ));
                0
            }
            (Some(n), _) => n,
        };
        match (rate, burst, by) {
            (Some(rate), Some(burst), Some(by)) if problems.is_empty() => Ok(RateLimit {
                rate,
                burst,
                by,
                max_keys,
            }),
            _ => Err(problems),
        }
    }
}

fn parse_per(per: Option<&str>) -> Result<LimitBy, String> {
    let Some(per) = per.map(str::trim) else {
        return Ok(LimitBy::Route);
    };
    if per == "route" {
        return Ok(LimitBy::Route);
    }
    if per == "ip" {
        return Ok(LimitBy::Ip);
    }
    if let Some(name) = per.strip_prefix("header:") {
        let name = name.trim();
        return HeaderName::from_bytes(name.as_bytes())
            .map(LimitBy::Header)
            .map_err(|_| {
                format!(
                    "invalid header name {name:?} in per = {per:?}; write e.g. \
                 \"header:X-Shop-Domain\""
                )
            });
    }
    Err(format!(
        "unknown per = {per:?}; use \"route\", \"ip\" or \"header:<Name>\" (e.g. \
         \"header:X-Shop-Domain\")"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(rate: &str, burst: Option<u32>, per: Option<&str>) -> RateLimitSpec {
        RateLimitSpec {
            rate: rate.to_string(),
            burst,
            per: per.map(str::to_string),
            max_keys: None,
        }
    }

    #[test]
    fn rates_parse() {
        let s = Duration::from_secs;
        let table: [(&str, Option<(u32, Duration)>); 18] = [
            ("100/s", Some((100, s(1)))),
            ("6000/min", Some((6000, s(60)))),
            ("10/h", Some((10, s(3600)))),
            ("5/m", Some((5, s(60)))),
            ("1/d", Some((1, s(86_400)))),
            (" 3 / second ", Some((3, s(1)))),
            ("7/Minutes", Some((7, s(60)))),
            ("10/30s", Some((10, s(30)))),
            ("1/1h30m", Some((1, s(5400)))),
            ("0/s", None),
            ("-1/s", None),
            ("100", None),
            ("100/fortnight", None),
            ("/s", None),
            ("x/s", None),
            ("100/0s", None),
            ("4294967296/s", None),
            ("", None),
        ];
        for (text, expected) in table {
            let got = parse_rate(text).ok().map(|r| (r.count.get(), r.period));
            assert_eq!(got, expected, "{text:?}");
        }
        assert_eq!(
            parse_rate("6000/min").unwrap().interval(),
            Duration::from_millis(10)
        );
        assert!(parse_rate("0/s").unwrap_err().contains("at least 1"));
        assert!(parse_rate("1/fortnight")
            .unwrap_err()
            .contains("unknown unit"));
    }

    #[test]
    fn spec_problems_are_all_reported() {
        let bad = RateLimitSpec {
            rate: "0/s".into(),
            burst: Some(0),
            per: Some("cookie".into()),
            max_keys: Some(0),
        };
        let keys: Vec<String> = bad
            .compile()
            .unwrap_err()
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(keys, vec!["rate", "burst", "per", "max_keys"]);

        let table: [(RateLimitSpec, &str); 6] = [
            (spec("1/lightyear", None, None), "rate"),
            (spec("100/s", None, Some("header:")), "per"),
            (spec("100/s", None, Some("header:bad header")), "per"),
            (spec("100/s", None, Some("IP")), "per"),
            (spec("1/h", Some(u32::MAX), None), "burst"),
            (
                RateLimitSpec {
                    max_keys: Some(10),
                    ..spec("1/s", None, Some("route"))
                },
                "max_keys",
            ),
        ];
        for (s, key) in table {
            let problems = s.compile().unwrap_err();
            assert_eq!(problems.len(), 1, "{s:?}: {problems:?}");
            assert_eq!(problems[0].key, key, "{s:?}");
        }
        let p = spec("100/s", None, Some("header:")).compile().unwrap_err();
        assert!(p[0].message.contains("X-Shop-Domain"), "{}", p[0].message);
    }

    #[test]
    fn spec_compiles_with_defaults() {
        let c = spec("100/s", None, None).compile().unwrap();
        assert_eq!(c.burst.get(), 100);
        assert_eq!(c.by, LimitBy::Route);
        assert_eq!(c.max_keys, DEFAULT_MAX_KEYS);
        let c = spec("6000/min", Some(20), Some("header:X-Shop-Domain"))
            .compile()
            .unwrap();
        assert_eq!(
            c.by,
            LimitBy::Header(HeaderName::from_static("x-shop-domain"))
        );
        assert_eq!(c.by.to_string(), "header:x-shop-domain");
        assert_eq!(c.quota().burst_size().get(), 20);
        assert_eq!(c.quota().replenish_interval(), Duration::from_millis(10));
    }

    #[test]
    fn spec_serde_shape() {
        #[derive(Deserialize)]
        struct Route {
            rate_limit: RateLimitSpec,
        }
        let r: Route = toml::from_str(
            "rate_limit = { rate = \"100/s\", burst = 200, per = \"ip\", max_keys = 5000 }",
        )
        .unwrap();
        assert_eq!(r.rate_limit.burst, Some(200));
        assert_eq!(r.rate_limit.max_keys, Some(5000));
        let err = toml::from_str::<Route>("rate_limit = { rate = \"1/s\", brust = 2 }")
            .err()
            .unwrap();
        assert!(err.to_string().contains("brust"), "{err}");
        assert!(toml::from_str::<Route>("rate_limit = { rate = \"1/s\", burst = -1 }").is_err());
    }
}
