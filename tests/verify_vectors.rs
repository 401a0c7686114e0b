//! Published and derived signature vectors (`tests/fixtures/vectors.json`, a copy of
//! `shared/vectors/vectors.json`) run through the real `hookgate::verify` API with the clock
//! pinned to each vector's `now_for_check`.
//!
//! Every provider is mapped explicitly, either to a scheme configuration or to a skip with its
//! reason; an unmapped provider fails the test. Counts per canonical scheme are hard-coded, so
//! a silently skipped vector fails too. Providers that have no scheme of their own are run
//! through the scheme they are documented to use: Meta → `github`; Mux → `stripe` with
//! `header = "Mux-Signature"`; Clerk → `svix`; Bitbucket, Jira, Intercom, Typeform, PagerDuty,
//! Sentry, Vercel and Zendesk → the generic `hmac` with the settings in `conf/examples/`.
//!
//! Also here: `sign` reproduces the published headers of the deterministic schemes byte for
//! byte, and every file in `conf/examples/` compiles its `verify` tables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hookgate::secret::Secret;
use hookgate::verify::{Request, Verifier, VerifySpec};
use http::{HeaderMap, HeaderName, HeaderValue};

#[derive(serde::Deserialize)]
struct VectorFile {
    count: usize,
    vectors: Vec<Vector>,
}

#[derive(serde::Deserialize)]
struct Vector {
    provider: String,
    scheme: String,
    name: String,
    secret: Option<String>,
    public_key: Option<String>,
    headers: BTreeMap<String, String>,
    body: String,
    body_encoding: String,
    url: Option<String>,
    method: Option<String>,
    timestamp: serde_json::Value,
    now_for_check: Option<u64>,
    expected_valid: bool,
    negative_kind: Option<String>,
    expected_response: Option<serde_json::Value>,
}

/// Vectors where the gateway deliberately differs from the provider's SDK: (name, our
/// result, why).
const DEVIATIONS: &[(&str, bool, &str)] = &[(
    "stripe-future-timestamp-sdk-accepts",
    false,
    "the gateway rejects timestamps more than the tolerance in the future; Stripe's SDKs check only the past",
)];

/// Vectors run, per canonical scheme.
const EXPECTED_RUN: &[(&str, usize)] = &[
    ("discord", 5),
    ("github", 16), // github 12 + meta 4
    ("gitlab", 5),  // 3 secret-token + 2 signing-token
    ("hmac", 15), // bitbucket 2, jira 1, intercom 2, typeform 2, pagerduty 2, sentry 2, vercel 2, zendesk 2
    ("hubspot", 6),
    ("linear", 3),
    ("paddle", 6),
    ("shopify", 5),
    ("slack", 8),
    ("square", 5),
    ("standard-webhooks", 16), // 13 + svix 2 + clerk 1
    ("stripe", 11),            // stripe 9 + mux 2
    ("twilio", 9),
    ("twitch", 5),
    ("zoom", 6), // 5 signatures + the url_validation answer
];

/// Vectors skipped, per provider/scheme, with the reason.
const EXPECTED_SKIPPED: &[(&str, usize, &str)] = &[
    ("hubspot-v1", 2, "legacy v1: plain SHA-256 of secret+body (length-extendable, no timestamp); only v3 is accepted"),
    ("hubspot-v2", 3, "legacy v2: plain SHA-256 of secret+method+URI+body (length-extendable, no timestamp); only v3 is accepted"),
    ("mailgun", 2, "Mailgun signs timestamp+token inside the JSON body, not the body: there is nothing for a gateway to vouch for"),
    ("microsoft-graph", 2, "no signature: a clientState value inside each notification, an application-level check"),
    ("netlify", 3, "JWS (HS256) with a body-hash claim: not implemented yet"),
    ("sendgrid", 4, "ECDSA P-256 needs a p256 dependency outside the approved set: not implemented"),
];

enum Plan {
    Run(VerifySpec),
    ZoomUrlValidation(VerifySpec),
    Skip(&'static str),
}

fn spec(scheme: &str) -> VerifySpec {
    VerifySpec::new(scheme, &["${VECTOR_SECRET}"])
}

fn hmac(header: &str, algorithm: &str, encoding: &str, prefix: &str) -> VerifySpec {
    VerifySpec {
        header: Some(header.into()),
        algorithm: Some(algorithm.into()),
        encoding: Some(encoding.into()),
        prefix: Some(prefix.into()),
        ..spec("hmac")
    }
}

/// `https://host:port` and `/path?query` of a vector URL.
fn split_url(url: &str) -> (String, String) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => (
            url[..after_scheme + i].to_string(),
            url[after_scheme + i..].to_string(),
        ),
        None => (url.to_string(), "/".to_string()),
    }
}

fn with_public_url(v: &Vector, spec: VerifySpec) -> VerifySpec {
    let url = v.url.as_deref().expect("URL-bound vector has a url");
    VerifySpec {
        public_url: Some(split_url(url).0),
        ..spec
    }
}

fn plan(v: &Vector) -> Plan {
    let skip = |key: &str| {
        let (_, _, why) = EXPECTED_SKIPPED
            .iter()
            .find(|(k, _, _)| *k == key)
            .expect("skip reason listed");
        Plan::Skip(why)
    };
    Plan::Run(match (v.provider.as_str(), v.scheme.as_str()) {
        ("github", "github-hmac-sha1-legacy") => VerifySpec {
            sha1_fallback: Some(true),
            ..spec("github")
        },
        ("github", _) | ("meta", _) => spec("github"),
        ("gitlab", _) => spec("gitlab"),
        ("stripe", _) => spec("stripe"),
        ("mux", _) => VerifySpec {
            header: Some("Mux-Signature".into()),
            ..spec("stripe")
        },
        ("slack", _) => spec("slack"),
        ("shopify", _) => spec("shopify"),
        ("standard-webhooks", _) => spec("standard-webhooks"),
        ("svix", _) | ("clerk", _) => spec("svix"),
        ("twilio", _) => with_public_url(v, spec("twilio")),
        ("zoom", "zoom-url-validation") => return Plan::ZoomUrlValidation(spec("zoom")),
        ("zoom", _) => spec("zoom"),
        ("twitch", _) => spec("twitch"),
        ("discord", _) => VerifySpec {
            public_key: v.public_key.clone(),
            ..VerifySpec::new("discord", &[])
        },
        ("hubspot", "hubspot-v3") => with_public_url(v, spec("hubspot")),
        ("hubspot", other) => return skip(other),
        ("square", _) => with_public_url(v, spec("square")),
        ("paddle", _) => spec("paddle"),
        ("linear", _) => spec("linear"),
        ("bitbucket", _) | ("jira", _) => hmac("X-Hub-Signature", "sha256", "hex", "sha256="),
        ("intercom", _) => hmac("X-Hub-Signature", "sha1", "hex", "sha1="),
        ("typeform", _) => hmac("Typeform-Signature", "sha256", "base64", "sha256="),
        ("pagerduty", _) => VerifySpec {
            separator: Some(",".into()),
            ..hmac("X-PagerDuty-Signature", "sha256", "hex", "v1=")
        },
        ("sentry", _) => hmac("Sentry-Hook-Signature", "sha256", "hex", ""),
        ("vercel", _) => hmac("x-vercel-signature", "sha1", "hex", ""),
        ("zendesk", _) => VerifySpec {
            signed: Some("{timestamp}{body}".into()),
            timestamp_header: Some("X-Zendesk-Webhook-Signature-Timestamp".into()),
            timestamp_format: Some("rfc3339".into()),
            ..hmac("X-Zendesk-Webhook-Signature", "sha256", "base64", "")
        },
        (other @ ("mailgun" | "microsoft-graph" | "netlify" | "sendgrid"), _) => {
            return skip(other)
        }
        (provider, scheme) => panic!(
            "vector {} has unmapped provider {provider} / {scheme}: map it or list it as skipped",
            v.name
        ),
    })
}

fn compile(v: &Vector, spec: &VerifySpec) -> Verifier {
    let secret = v.secret.clone().unwrap_or_default();
    Verifier::compile(spec, &|reference| {
        assert_eq!(reference, "${VECTOR_SECRET}");
        Ok(Secret::new(secret.clone()))
    })
    .unwrap_or_else(|p| panic!("{}: spec did not compile: {p:?}", v.name))
}

/// Unix seconds of the vector's own timestamp, if it has one (HubSpot's are ms).
fn signed_at(v: &Vector) -> Option<u64> {
    match &v.timestamp {
        serde_json::Value::Number(n) => {
            n.as_u64()
                .map(|t| if v.provider == "hubspot" { t / 1000 } else { t })
        }
        serde_json::Value::String(s) => humantime::parse_rfc3339(s)
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs()),
        _ => None,
    }
}

/// `now_for_check`; vectors without one have no window to check (Zendesk documents none): use
/// the signed time, or any fixed time for schemes with no timestamp at all.
fn now_for(v: &Vector) -> SystemTime {
    let secs = v
        .now_for_check
        .or_else(|| signed_at(v))
        .unwrap_or(1_700_000_000);
    UNIX_EPOCH + Duration::from_secs(secs)
}

struct Owned {
    method: String,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Owned {
    fn of(v: &Vector) -> Owned {
        let mut headers = HeaderMap::new();
        for (name, value) in &v.headers {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("vector header name"),
                HeaderValue::from_str(value).expect("vector header value"),
            );
        }
        let body = match v.body_encoding.as_str() {
            "utf8" => v.body.clone().into_bytes(),
            "base64" => base64::engine::general_purpose::STANDARD
                .decode(&v.body)
                .expect("base64 body"),
            other => panic!("{}: unknown body_encoding {other}", v.name),
        };
        Owned {
            method: v.method.clone().unwrap_or_else(|| "POST".into()),
            path: v
                .url
                .as_deref()
                .map_or_else(|| "/webhook".into(), |u| split_url(u).1),
            headers,
            body,
        }
    }

    fn request(&self) -> Request<'_> {
        Request {
            method: &self.method,
            path_and_query: &self.path,
            headers: &self.headers,
            body: &self.body,
        }
    }
}

/// The failure class a negative vector's description implies.
fn expected_reason(kind: &str) -> &'static str {
    if kind.starts_with("missing header") {
        "missing"
    } else if kind.starts_with("malformed")
        || kind.starts_with("no v1")
        || kind == "wrong algorithm"
    {
        // (wrong algorithm: a SHA-256 hex digest is the wrong length for SHA-1)
        "malformed"
    } else if kind.starts_with("expired")
        || kind.starts_with("webhookTimestamp")
        || (kind.starts_with("timestamp") && (kind.contains(" old") || kind.contains("future")))
    {
        "expired"
    } else {
        "mismatch"
    }
}

fn load() -> VectorFile {
    let file: VectorFile =
        serde_json::from_str(include_str!("fixtures/vectors.json")).expect("vectors.json parses");
    assert_eq!(file.count, file.vectors.len());
    assert_eq!(file.vectors.len(), 137, "the fixture is the 137-vector set");
    file
}

#[test]
fn published_vectors() {
    let file = load();
    let mut ran: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut deviations_seen = Vec::new();
    for v in &file.vectors {
        let (verifier, valid, reason) = match plan(v) {
            Plan::Skip(why) => {
                let key = if v.provider == "hubspot" {
                    v.scheme.clone()
                } else {
                    v.provider.clone()
                };
                println!("skip {}: {why}", v.name);
                *skipped.entry(key).or_default() += 1;
                continue;
            }
            Plan::ZoomUrlValidation(spec) => {
                let verifier = compile(v, &spec);
                let expected = v.expected_response.as_ref().expect("expected_response");
                let plain = expected["plainToken"].as_str().expect("plainToken");
                let answer = verifier.zoom_url_validation(plain);
                let ok = answer.as_deref() == expected["encryptedToken"].as_str();
                (verifier, ok, if ok { "ok" } else { "wrong encryptedToken" })
            }
            Plan::Run(spec) => {
                let verifier = compile(v, &spec);
                let owned = Owned::of(v);
                let result = verifier.verify(&owned.request(), now_for(v));
                if let Ok(verified) = &result {
                    assert_eq!(verified.body(), &owned.body[..], "{}", v.name);
                }
                let reason = result.as_ref().map_or_else(|e| e.reason(), |_| "ok");
                (verifier, result.is_ok(), reason)
            }
        };
        *ran.entry(verifier.scheme()).or_default() += 1;
        let expected = match DEVIATIONS.iter().find(|(name, _, _)| *name == v.name) {
            Some((name, ours, _)) => {
                deviations_seen.push(*name);
                *ours
            }
            None => v.expected_valid,
        };
        if valid != expected {
            failures.push(format!(
                "{} ({}): expected valid={expected}, got {reason}",
                v.name,
                verifier.scheme()
            ));
        } else if let (false, Some(kind)) = (valid, &v.negative_kind) {
            if reason != expected_reason(kind) {
                failures.push(format!(
                    "{}: {kind:?} should be {}, got {reason}",
                    v.name,
                    expected_reason(kind)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "vector failures:\n{}",
        failures.join("\n")
    );
    assert_eq!(
        deviations_seen.len(),
        DEVIATIONS.len(),
        "every documented deviation has its vector"
    );

    let expected_run: BTreeMap<&str, usize> = EXPECTED_RUN.iter().copied().collect();
    assert_eq!(ran, expected_run, "vectors run per scheme");
    let expected_skipped: BTreeMap<String, usize> = EXPECTED_SKIPPED
        .iter()
        .map(|(k, n, _)| (k.to_string(), *n))
        .collect();
    assert_eq!(skipped, expected_skipped, "vectors skipped per provider");
    let total_run: usize = ran.values().sum();
    let total_skipped: usize = skipped.values().sum();
    assert_eq!(total_run + total_skipped, file.vectors.len());

    println!("ran {total_run} vectors:");
    for (scheme, n) in &ran {
        println!("  {scheme:<18} {n}");
    }
    println!("skipped {total_skipped}:");
    for (key, n, why) in EXPECTED_SKIPPED {
        println!("  {key:<16} {n}  {why}");
    }
    for (name, ours, why) in DEVIATIONS {
        println!("deviation: {name} -> valid={ours}: {why}");
    }
}

/// `sign` must produce the published headers where a scheme is deterministic (no random id,
/// and a timestamp format that round-trips).
#[test]
fn sign_reproduces_published_headers() {
    const REPRODUCED: &[&str] = &[
        "bitbucket-derived",
        "github-docs-example",
        "gitlab-token-equal",
        "hubspot-v3-python-test",
        "intercom-derived",
        "jira-admin-webhook-secret-derived",
        "linear-derived",
        "meta-whatsapp-escaped-unicode",
        "mux-derived",
        "octokit-literal-backslash-u",
        "octokit-mysecret-foo-bar",
        "octokit-unicode-escapes-uppercase",
        "paddle-derived",
        "sentry-derived",
        "shopify-derived",
        "slack-docs-example",
        "square-derived",
        "stripe-future-timestamp-sdk-accepts",
        "stripe-sdk-derived",
        "twilio-duplicate-param-names",
        "twilio-json-body-bodySHA256",
        "twilio-sdk-test-basic",
        "typeform-derived",
        "vercel-derived",
        "zendesk-derived",
        "zoom-derived",
    ];
    let file = load();
    let mut reproduced = Vec::new();
    for v in file.vectors.iter().filter(|v| v.expected_valid) {
        let Plan::Run(spec) = plan(v) else { continue };
        let verifier = compile(v, &spec);
        let owned = Owned::of(v);
        let at = UNIX_EPOCH + Duration::from_secs(signed_at(v).unwrap_or(1_700_000_000));
        let Ok(headers) = verifier.sign(&owned.request(), at) else {
            continue;
        };
        let all_equal = headers.iter().all(|(name, value)| {
            v.headers
                .iter()
                .any(|(n, val)| n.eq_ignore_ascii_case(name) && val == value)
        });
        if all_equal {
            reproduced.push(v.name.as_str());
        }
    }
    reproduced.sort();
    assert_eq!(reproduced, REPRODUCED);
}

/// This file's directory, whether it is compiled in place or from another crate by path.
fn tests_dir() -> PathBuf {
    let file = Path::new(file!());
    let here = if file.is_absolute() {
        file.to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(file)
    };
    here.parent().expect("tests dir").to_path_buf()
}

/// Every `conf/examples/*.toml` deserializes its routes' `verify` tables and compiles them
/// with placeholder secrets of the right shape.
#[test]
fn example_configs_compile() {
    let dir = tests_dir().join("../conf/examples");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        let doc: toml::Value =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for section in ["server", "upstreams"] {
            assert!(
                doc.get(section).is_some(),
                "{}: no [{section}]",
                path.display()
            );
        }
        let routes = doc["routes"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no [[routes]]", path.display()));
        assert!(!routes.is_empty());
        for route in routes {
            let verify = route
                .get("verify")
                .unwrap_or_else(|| panic!("{}: route without verify", path.display()));
            let spec: VerifySpec = verify
                .clone()
                .try_into()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for reference in &spec.secrets {
                assert!(
                    reference.starts_with("${") && reference.ends_with('}'),
                    "{}: secrets must be ${{ENV}} references, got {reference}",
                    path.display()
                );
            }
            let whsec = format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode([7u8; 32])
            );
            let result = Verifier::compile(&spec, &|reference| {
                Ok(Secret::new(if reference.contains("PUBLIC_KEY") {
                    "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a".to_string()
                } else if reference.contains("SIGNING")
                    || ["standard-webhooks", "svix"].contains(&spec.scheme.as_str())
                {
                    whsec.clone()
                } else {
                    "placeholder-secret".to_string()
                }))
            });
            if let Err(problems) = result {
                panic!("{}: {problems:?}", path.display());
            }
        }
        found.push(
            path.file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned(),
        );
    }
    found.sort();
    assert!(
        found.len() >= 16,
        "expected an example per scheme, found {found:?}"
    );
}
