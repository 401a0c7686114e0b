//! The generic `hmac` scheme, for providers without a preset: `algorithm` (`sha1`, `sha256`,
//! `sha512`), `header`, `encoding` (`hex`, `base64`), `prefix`, optional `separator` for a
//! list of signatures in one header, and a `signed` template with `{body}` (exactly once),
//! `{timestamp}` (needs `timestamp_header`, `timestamp_format`, `tolerance`, default 5m both
//! ways), `{id}` (needs `id_header`), `{method}` and `{url}` (needs `public_url`).
//!
//! `{url}` is `public_url` (scheme, host, port if any, path prefix, as configured) followed by
//! the request target exactly as the sender sent it: percent-escapes, `+`, parameter order,
//! repeats and an empty `?` are signed as they arrived, never decoded or normalised (see
//! `url.rs`). A sender that signs a normalised URL does not verify.
//!
//! Examples: Bitbucket/Jira `X-Hub-Signature: sha256=<hex>`; Intercom sha1; Typeform base64
//! with `sha256=`; PagerDuty `v1=<hex>` comma list; Sentry; Vercel sha1; Zendesk
//! `{timestamp}{body}` with RFC 3339 timestamps (all in `conf/examples/`).

use std::borrow::Cow;
use std::time::Duration;

use super::clock::TimestampFormat;
use super::compile::Cx;
use super::engine::{keys, Carrier, HmacScheme, Part, Template};
use super::mac::Algorithm;
use super::url::SignedUrl;
use super::wire::Encoding;

pub(super) fn compile(cx: &mut Cx) -> Option<HmacScheme> {
    cx.allow_only(&[
        "algorithm",
        "header",
        "encoding",
        "prefix",
        "separator",
        "signed",
        "timestamp_header",
        "timestamp_format",
        "id_header",
        "tolerance",
        "public_url",
    ]);
    let spec = cx.spec;
    let algorithm = match spec.algorithm.as_deref() {
        None => Some(Algorithm::Sha256),
        Some(name) => Algorithm::from_name(name).or_else(|| {
            cx.problem(
                "algorithm",
                format!("{name:?} is not supported; use \"sha1\", \"sha256\" or \"sha512\""),
            );
            None
        }),
    };
    let encoding = match spec.encoding.as_deref() {
        None => Some(Encoding::Hex),
        Some(name) => Encoding::from_name(name).or_else(|| {
            cx.problem(
                "encoding",
                format!("{name:?} is not supported; use \"hex\" or \"base64\""),
            );
            None
        }),
    };
    let header = match spec.header.as_deref() {
        Some(h) => cx.header_name("header", h),
        None => {
            cx.problem(
                "header",
                "set header to the header carrying the signature, e.g. header = \"X-Signature\"",
            );
            None
        }
    };
    let separator = match spec.separator.as_deref() {
        None => Some(None),
        Some(s) => {
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Some(Some(c)),
                _ => {
                    cx.problem(
                        "separator",
                        format!("{s:?} must be exactly one character, e.g. \",\" or \" \""),
                    );
                    None
                }
            }
        }
    };
    let template = match Template::parse(spec.signed.as_deref().unwrap_or("{body}")) {
        Ok(t) if t.count(&Part::Body) == 1 => Some(t),
        Ok(_) => {
            cx.problem(
                "signed",
                "must contain {body} exactly once, or the body would not be authenticated",
            );
            None
        }
        Err(e) => {
            cx.problem("signed", e);
            None
        }
    };
    let uses = |part: &Part| template.as_ref().is_some_and(|t| t.count(part) > 0);
    let (uses_ts, uses_id, uses_url) = (uses(&Part::Timestamp), uses(&Part::Id), uses(&Part::Url));

    let timestamp_header = match (spec.timestamp_header.as_deref(), uses_ts) {
        (Some(h), true) => cx.header_name("timestamp_header", h),
        (Some(_), false) => {
            cx.problem("timestamp_header", "is set but `signed` has no {timestamp}: an unsigned timestamp proves nothing; add {timestamp} to signed or remove it");
            None
        }
        (None, true) => {
            cx.problem(
                "timestamp_header",
                "`signed` uses {timestamp}; set timestamp_header to the header carrying it",
            );
            None
        }
        (None, false) => None,
    };
    let timestamp_format = match spec.timestamp_format.as_deref() {
        None => TimestampFormat::UnixSeconds,
        Some(name) => TimestampFormat::from_name(name).unwrap_or_else(|| {
            cx.problem(
                "timestamp_format",
                format!("{name:?} is not supported; use \"unix\", \"unix_ms\" or \"rfc3339\""),
            );
            TimestampFormat::UnixSeconds
        }),
    };
    if !uses_ts {
        for (key, set) in [
            ("tolerance", spec.tolerance.is_some()),
            ("timestamp_format", spec.timestamp_format.is_some()),
        ] {
            if set {
                cx.problem(
                    key,
                    "applies only with a signed {timestamp} (signed + timestamp_header); remove it",
                );
            }
        }
    }
    let tolerance = uses_ts.then(|| cx.tolerance(Duration::from_secs(300)));
    let id_header = match (spec.id_header.as_deref(), uses_id) {
        (Some(h), true) => cx.header_name("id_header", h),
        (Some(_), false) => {
            cx.problem(
                "id_header",
                "is set but `signed` has no {id}; add {id} to signed or remove it",
            );
            None
        }
        (None, true) => {
            cx.problem(
                "id_header",
                "`signed` uses {id}; set id_header to the header carrying it",
            );
            None
        }
        (None, false) => None,
    };
    let public_url = match (spec.public_url.is_some(), uses_url) {
        (_, true) => cx.public_url(),
        (true, false) => {
            cx.problem(
                "public_url",
                "is set but `signed` has no {url}; add {url} to signed or remove it",
            );
            None
        }
        (false, false) => None,
    };
    let secrets = cx.secrets("the signing secret the provider shows for this webhook");

    let algorithm = algorithm?;
    Some(HmacScheme {
        algorithm,
        keys: keys(algorithm, &secrets),
        encoding: encoding?,
        carrier: Carrier::Header {
            names: vec![header?],
            prefix: Cow::Owned(spec.prefix.clone().unwrap_or_default()),
            separator: separator?,
        },
        timestamp_header: if uses_ts {
            Some(timestamp_header?)
        } else {
            None
        },
        timestamp_format: uses_ts.then_some(timestamp_format),
        id_header: if uses_id { Some(id_header?) } else { None },
        template: template?,
        public_url: if uses_url {
            Some(SignedUrl::as_sent(public_url?))
        } else {
            None
        },
        tolerance,
        after_mac: None,
        fallback: None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;

    #[test]
    fn suites() {
        let cases: &[(&str, &str, Option<u64>)] = &[
            ("header = \"X-Signature\"", "x-signature", None),
            ("algorithm = \"sha1\"\nheader = \"X-Hub-Signature\"\nprefix = \"sha1=\"", "x-hub-signature", None),
            ("algorithm = \"sha512\"\nencoding = \"base64\"\nheader = \"Sig\"\nprefix = \"sha512=\"", "sig", None),
            ("header = \"X-PagerDuty-Signature\"\nprefix = \"v1=\"\nseparator = \",\"", "x-pagerduty-signature", None),
            (
                "header = \"X-Sig\"\nsigned = \"{id}.{timestamp}.{method} {url}\\n{body}\"\ntimestamp_header = \"X-Ts\"\nid_header = \"X-Id\"\npublic_url = \"https://h.example\"",
                "x-sig",
                Some(300),
            ),
            (
                "header = \"X-Zendesk-Webhook-Signature\"\nencoding = \"base64\"\nsigned = \"{timestamp}{body}\"\ntimestamp_header = \"X-Zendesk-Webhook-Signature-Timestamp\"\ntimestamp_format = \"rfc3339\"\ntolerance = \"1h\"",
                "x-zendesk-webhook-signature",
                Some(3600),
            ),
            (
                "header = \"X-Sig\"\nsigned = \"{timestamp}.{body}\"\ntimestamp_header = \"X-Ts\"\ntimestamp_format = \"unix_ms\"",
                "x-sig",
                Some(300),
            ),
        ];
        for (extra, header, tolerance) in cases {
            Suite {
                spec_toml: &format!("scheme = \"hmac\"\n{extra}"),
                whsec: false,
                msg: Msg::post("/g?x=1", b"{\"event_type\":\"user_signup\"}"),
                signature_header: header,
                tolerance: *tolerance,
            }
            .run();
        }
    }

    #[test]
    fn design_doc_example() {
        let v = compile(
            "scheme = \"hmac\"\nalgorithm = \"sha256\"\nheader = \"X-Signature\"\nencoding = \"hex\"\nprefix = \"sha256=\"\nsecrets = [\"${A}\"]",
        );
        let base = Msg::post("/webhook-endpoint", b"{}");
        let signed = v.sign(&base.request(), at(NOW)).unwrap();
        assert!(signed[0].1.starts_with("sha256=") && signed[0].1.len() == 71);
        let list = base
            .clone()
            .header("X-Signature", &format!("{}, sha256=00", signed[0].1));
        assert_eq!(
            reason(list.verify(&v, NOW)),
            "malformed",
            "no separator configured"
        );
    }

    #[test]
    fn compile_errors_are_all_reported() {
        let p = problems(
            "scheme = \"hmac\"\nalgorithm = \"md5\"\nencoding = \"base32\"\nsigned = \"{timestamp}\"\nid_header = \"X-Id\"\ntolerance = \"5m\"\nsecrets = [\"${A}\", \"${NOPE}\"]\nseparator = \",,\"",
        );
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "algorithm",
            "encoding",
            "header",
            "separator",
            "signed",
            "id_header",
            "secrets[1]",
        ] {
            assert!(keys.contains(&key), "{key} not in {p:#?}");
        }
        assert_problem("scheme = \"hmac\"\nheader = \"X\"\nsigned = \"{timestamp}{body}\"\nsecrets = [\"${A}\"]", "timestamp_header", "set timestamp_header");
        assert_problem(
            "scheme = \"hmac\"\nheader = \"X\"\ntimestamp_header = \"T\"\nsecrets = [\"${A}\"]",
            "timestamp_header",
            "unsigned timestamp",
        );
        assert_problem(
            "scheme = \"hmac\"\nheader = \"X\"\ntolerance = \"1m\"\nsecrets = [\"${A}\"]",
            "tolerance",
            "applies only",
        );
        assert_problem(
            "scheme = \"hmac\"\nheader = \"X\"\nsigned = \"{body}{body}\"\nsecrets = [\"${A}\"]",
            "signed",
            "exactly once",
        );
        assert_problem(
            "scheme = \"hmac\"\nheader = \"X\"\nsigned = \"{url}{body}\"\nsecrets = [\"${A}\"]",
            "public_url",
            "set public_url",
        );
        assert_problem(
            "scheme = \"hmac\"\nheader = \"X\"\npublic_url = \"https://a.b\"\nsecrets = [\"${A}\"]",
            "public_url",
            "no {url}",
        );
        assert_problem(
            "scheme = \"hmac\"\nheader = \"X\"\nsecrets = [\"${A}\"]\nbearer = true",
            "bearer",
            "does not use it",
        );
    }
}
