//! Provider presets (`verify = { provider = "..." }`) against `tests/fixtures/providers.json`,
//! one delivery per provider signed by `tests/fixtures/provider_vectors.py` from that provider's
//! documentation (sharing no code and no table with hookgate).
//!
//! - every row of the table has exactly one vector and every vector names a row;
//! - every vector verifies through the real `hookgate::verify` API with only `provider`, the
//!   secret (and `public_url` / `public_key` where the scheme needs one) configured, and the
//!   same delivery with one body byte changed is refused;
//! - `hookgate sign` works for every row with a shared secret (sign, then verify);
//! - `hookgate providers` lists exactly the table;
//! - config errors: an unknown provider names close names; a key the row's scheme does not use
//!   is "not used by this scheme"; a `scheme` contradicting the provider is refused;
//! - end to end through the real binary: routes written as `provider = ...` forward the vectors
//!   byte for byte and answer 401 to a wrong signature, the upstream receiving nothing.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use hookgate::config::Config;
use hookgate::secret::Secret;
use hookgate::verify::{providers, Request, Verifier, VerifySpec};
use http::{HeaderMap, HeaderName, HeaderValue};

#[derive(serde::Deserialize)]
struct VectorFile {
    count: usize,
    vectors: Vec<Vector>,
}

#[derive(serde::Deserialize)]
struct Vector {
    provider: String,
    docs: String,
    secret: Option<String>,
    public_url: Option<String>,
    public_key: Option<String>,
    method: String,
    target: String,
    headers: BTreeMap<String, String>,
    body: String,
    now: u64,
}

fn load() -> Vec<Vector> {
    let file: VectorFile = serde_json::from_str(include_str!("fixtures/providers.json"))
        .expect("providers.json parses");
    assert_eq!(file.count, file.vectors.len());
    file.vectors
}

/// The route's `verify` table as a user writes it: the provider plus what only they know.
fn spec(v: &Vector) -> VerifySpec {
    VerifySpec {
        provider: Some(v.provider.clone()),
        secrets: v.secret.iter().map(|_| "${SECRET}".to_string()).collect(),
        public_url: v.public_url.clone(),
        public_key: v.public_key.as_ref().map(|_| "${PUBLIC_KEY}".to_string()),
        ..VerifySpec::default()
    }
}

fn compile(v: &Vector) -> Verifier {
    Verifier::compile(&spec(v), &|reference| match reference {
        "${SECRET}" => Ok(Secret::new(v.secret.clone().expect("secret"))),
        "${PUBLIC_KEY}" => Ok(Secret::new(v.public_key.clone().expect("public key"))),
        other => Err(format!("unexpected reference {other}")),
    })
    .unwrap_or_else(|p| panic!("{}: did not compile: {p:?}", v.provider))
}

fn headers(v: &Vector) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in &v.headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    map
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn every_row_has_one_vector_and_every_vector_a_row() {
    let vectors = load();
    let from_vectors: Vec<&str> = vectors.iter().map(|v| v.provider.as_str()).collect();
    let from_table: Vec<&str> = providers::all().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(from_vectors, from_table, "vectors and table rows differ");
    for v in &vectors {
        let row = providers::find(&v.provider).unwrap();
        assert_eq!(
            v.docs, row.docs,
            "{}: the vector and the row must follow the same page",
            v.provider
        );
    }
    assert!(vectors.len() >= 50, "lost vectors: {}", vectors.len());
}

#[test]
fn every_vector_verifies_and_a_changed_body_does_not() {
    for v in load() {
        let verifier = compile(&v);
        assert_eq!(verifier.provider(), Some(v.provider.as_str()));
        let map = headers(&v);
        let request = Request {
            method: &v.method,
            path_and_query: &v.target,
            headers: &map,
            body: v.body.as_bytes(),
        };
        let verified = verifier
            .verify(&request, at(v.now))
            .unwrap_or_else(|e| panic!("{}: refused: {e}", v.provider));
        assert_eq!(verified.body(), v.body.as_bytes());

        // Token schemes do not cover the body; every other row must.
        if verifier.scheme() == "token" || verifier.scheme() == "gitlab" {
            continue;
        }
        let mut changed = v.body.clone().into_bytes();
        if verifier.scheme() == "mailgun" {
            // Mailgun signs timestamp + token (carried in the body), not the event: change the
            // token's first character.
            let key = v
                .body
                .find("\"token\"")
                .expect("mailgun vector has a token")
                + 7;
            let value = key + v.body[key..].find('"').expect("token value") + 1;
            changed[value] ^= 0x01;
        } else {
            let last = changed.len() - 1;
            changed[last] ^= 0x01;
        }
        let request = Request {
            body: &changed,
            ..request
        };
        let refused = verifier.verify(&request, at(v.now));
        assert!(
            matches!(&refused, Err(e) if e.reason() == "mismatch"),
            "{}: changed body gave {refused:?}",
            v.provider
        );
    }
}

#[test]
fn sign_works_for_every_shared_secret_row() {
    let now = SystemTime::now();
    for v in load() {
        let row = providers::find(&v.provider).unwrap();
        let verifier = compile(&v);
        let body = br#"{"type":"hookgate.test","webhookTimestamp":TS}"#;
        // Linear keeps its timestamp in the body.
        let ms = now
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis()
            .to_string();
        let body = String::from_utf8_lossy(body).replace("TS", &ms);
        let mut map = HeaderMap::new();
        map.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // Mailgun carries its signature in the body: sign_body rewrites it.
        let mut body = body;
        if let Some(signed_body) = verifier.sign_body(body.as_bytes(), now) {
            let (signed_body, content_type) =
                signed_body.unwrap_or_else(|e| panic!("{}: sign_body failed: {e}", v.provider));
            body = String::from_utf8(signed_body).unwrap();
            map.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(content_type),
            );
        }
        let target = if v.provider == "twilio" {
            // Twilio signs JSON bodies through ?bodySHA256= (see verify/twilio.rs).
            use sha2::Digest;
            format!(
                "/hooks/twilio?bodySHA256={}",
                hex::encode(sha2::Sha256::digest(body.as_bytes()))
            )
        } else {
            v.target.clone()
        };
        let request = Request {
            method: "POST",
            path_and_query: &target,
            headers: &map,
            body: body.as_bytes(),
        };
        let signed = verifier.sign(&request, now);
        if !row.shared_secret() {
            assert!(
                signed.is_err(),
                "{}: cannot sign without a private key",
                v.provider
            );
            continue;
        }
        let signed = signed.unwrap_or_else(|e| panic!("{}: sign failed: {e}", v.provider));
        for (name, value) in signed {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(&value).unwrap(),
            );
        }
        let request = Request {
            method: "POST",
            path_and_query: &target,
            headers: &map,
            body: body.as_bytes(),
        };
        verifier
            .verify(&request, now)
            .unwrap_or_else(|e| panic!("{}: own signature refused: {e}", v.provider));
    }
}

#[test]
fn providers_command_lists_the_table() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(args)
            .output()
            .expect("run hookgate providers");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run(&["providers"]);
    let listed: Vec<(String, String)> = text
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let mut words = l.split_whitespace();
            (
                words.next().unwrap().to_string(),
                words.next().unwrap().to_string(),
            )
        })
        .collect();
    let table: Vec<(String, String)> = providers::all()
        .iter()
        .map(|p| (p.name.clone(), p.scheme().to_string()))
        .collect();
    assert_eq!(listed, table);
    for p in providers::all() {
        assert!(text.contains(&p.docs), "{}: docs link missing", p.name);
    }
    let markdown = run(&["providers", "--markdown"]);
    for p in providers::all() {
        assert!(
            markdown.contains(&format!("| `{}` |", p.name)),
            "{} missing from the markdown table",
            p.name
        );
    }
    // The README's table is this output, unchanged (regenerate it with
    // `hookgate providers --markdown` between the markers).
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = "<!-- providers:start -->\n";
    let table = readme
        .split_once(start)
        .and_then(|(_, rest)| rest.split_once("<!-- providers:end -->"))
        .map(|(table, _)| table)
        .expect("README has the providers markers");
    assert_eq!(table, markdown, "README provider table is stale");
}

fn config_errors(verify: &str) -> String {
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n[upstreams.app]\ntargets = [\"127.0.0.1:9\"]\n[[routes]]\nname = \"shop\"\npath = \"/shop\"\nupstream = \"app\"\nverify = {verify}\n"
    );
    match Config::from_toml(&text, Path::new("t.toml")) {
        Ok(_) => panic!("{verify} was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn provider_config_errors_name_route_and_key() {
    let e = config_errors("{ provider = \"shopfiy\", secrets = [\"literal:x\"] }");
    assert!(e.contains("verify.provider"), "{e}");
    assert!(e.contains("shop"), "{e}");
    assert!(e.contains("unknown provider \"shopfiy\""), "{e}");
    assert!(e.contains("did you mean shopify"), "{e}");

    let e =
        config_errors("{ provider = \"shopify\", tolerance = \"5m\", secrets = [\"literal:x\"] }");
    assert!(e.contains("verify.tolerance"), "{e}");
    assert!(e.contains("no signed timestamp"), "{e}");

    let e = config_errors("{ provider = \"bitbucket\", bearer = true, secrets = [\"literal:x\"] }");
    assert!(e.contains("verify.bearer"), "{e}");
    assert!(e.contains("does not use it"), "{e}");

    let e =
        config_errors("{ provider = \"shopify\", scheme = \"github\", secrets = [\"literal:x\"] }");
    assert!(e.contains("verify.scheme"), "{e}");
    assert!(e.contains("uses scheme \"shopify\""), "{e}");

    let e = config_errors("{ secrets = [\"literal:x\"] }");
    assert!(e.contains("set scheme"), "{e}");
}

#[test]
fn overrides_win_over_the_row() {
    // Bitbucket's row says X-Hub-Signature; a route may move it.
    let spec = VerifySpec {
        provider: Some("bitbucket".into()),
        header: Some("X-Other-Signature".into()),
        secrets: vec!["${S}".into()],
        ..VerifySpec::default()
    };
    let verifier = Verifier::compile(&spec, &|_| Ok(Secret::new("s".to_string()))).unwrap();
    let body = b"{}";
    let mut map = HeaderMap::new();
    map.insert(
        "x-other-signature",
        HeaderValue::from_str(&github_signature("s", body)).unwrap(),
    );
    let request = Request {
        method: "POST",
        path_and_query: "/b",
        headers: &map,
        body,
    };
    assert!(verifier.verify(&request, SystemTime::now()).is_ok());
}

/// Vectors without a timestamp stay valid at any `now`, so they can go through the real
/// gateway as they are.
const E2E: &[&str] = &["github", "woocommerce", "trello", "coinify", "intercom"];

#[test]
fn provider_routes_end_to_end() {
    let vectors = load();
    let app = Upstream::start("app");
    let mut config = upstream_sections(&[&app]);
    for v in vectors
        .iter()
        .filter(|v| E2E.contains(&v.provider.as_str()))
    {
        let public_url = v
            .public_url
            .as_ref()
            .map_or(String::new(), |u| format!(", public_url = \"{u}\""));
        config.push_str(&format!(
            "[[routes]]\nname = \"{name}\"\npath = \"{path}\"\nupstream = \"app\"\nverify = {{ provider = \"{name}\", secrets = [\"literal:{secret}\"]{public_url} }}\n",
            name = v.provider,
            path = v.target,
            secret = v.secret.as_deref().unwrap().replace('\\', "\\\\").replace('"', "\\\""),
        ));
    }
    let gateway = Gateway::start(&config);
    let check = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["check", "-c", gateway.config_path.to_str().unwrap()])
        .output()
        .unwrap();
    let check = String::from_utf8_lossy(&check.stdout);
    // `check` shows the provider and where its event type and delivery id are.
    assert!(
        check.contains("provider woocommerce: event header:X-WC-Webhook-Topic, id header:X-WC-Webhook-Delivery-ID"),
        "{check}"
    );

    let mut tested = 0;
    for v in vectors
        .iter()
        .filter(|v| E2E.contains(&v.provider.as_str()))
    {
        let headers: Vec<(&str, &str)> = v
            .headers
            .iter()
            .map(|(n, h)| (n.as_str(), h.as_str()))
            .collect();
        app.clear();
        let answer = post(gateway.proxy, &v.target, &headers, v.body.as_bytes());
        // Guards `providers::overlay` taking every key the route leaves unset from the row
        // (`encoding: encoding.or_else(|| row.encoding.clone())`): with that line reduced to the
        // route's own `encoding`, WooCommerce's base64 signature is read as hex and this is a 401.
        assert_eq!(
            answer.status,
            200,
            "{}: {answer:?}\n{}",
            v.provider,
            gateway.log()
        );
        let received = app.received();
        assert_eq!(received.len(), 1, "{}", v.provider);
        assert_eq!(received[0].body, v.body.as_bytes(), "{}: body", v.provider);
        assert_eq!(received[0].target, v.target, "{}: target", v.provider);
        for (name, value) in &v.headers {
            assert_eq!(
                received[0].header(name),
                Some(value.as_str()),
                "{}: {name}",
                v.provider
            );
        }

        // The same signature over a changed body: 401, nothing forwarded.
        app.clear();
        let mut forged = v.body.clone().into_bytes();
        forged.extend_from_slice(b" ");
        let answer = post(gateway.proxy, &v.target, &headers, &forged);
        assert_eq!(answer.status, 401, "{}: {answer:?}", v.provider);
        assert_eq!(
            answer.json()["error"],
            "signature_invalid",
            "{}",
            v.provider
        );
        assert_eq!(answer.json()["route"], v.provider.as_str());
        assert_eq!(app.count(), 0, "{}: forwarded a forgery", v.provider);
        tested += 1;
    }
    assert_eq!(tested, E2E.len());

    // `hookgate sign` for a provider route: the row's scheme signs, and the event goes in the
    // row's event header (X-WC-Webhook-Topic), not a scheme-wide guess. Guards `event_header`
    // in sign.rs taking `provider_row().event_header()`: without it, `--event` on an `hmac`
    // route is refused ("carries the event type in the body").
    let url = format!("http://{}/hooks/woocommerce", gateway.proxy);
    let out = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args([
            "sign",
            "-c",
            gateway.config_path.to_str().unwrap(),
            "--route",
            "woocommerce",
            "--event",
            "order.created",
            "--url",
            &url,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    let signed: Vec<(String, String)> = printed
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(": ").expect("header line");
            (n.to_string(), v.to_string())
        })
        .collect();
    assert!(
        signed
            .iter()
            .any(|(n, v)| n == "X-WC-Webhook-Topic" && v == "order.created"),
        "{printed}"
    );
    let headers: Vec<(&str, &str)> = signed
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    app.clear();
    let answer = post(
        gateway.proxy,
        "/hooks/woocommerce",
        &headers,
        hookgate::sign::SAMPLE_BODY.as_bytes(),
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        app.received()[0].body,
        hookgate::sign::SAMPLE_BODY.as_bytes()
    );
}

/// A provider route takes its event source for `[[routes.events]]` and, with
/// `dedupe = { key = "provider" }`, its delivery id from the row. Guards
/// `provider_event` and the `key = "provider"` arm in `config::compile_route`.
#[test]
fn a_provider_route_routes_by_the_rows_event_and_dedupes_by_its_delivery_id() {
    let ci = Upstream::start("ci");
    let other = Upstream::start("other");
    let gateway = Setup::new()
        .upstream(&ci)
        .upstream(&other)
        .route(
            "gh",
            "/gh",
            "other",
            "verify = { provider = \"github\", secrets = [\"literal:s\"] }\n\
             dedupe = { key = \"provider\" }\n\
             [[routes.events]]\nmatch = \"push\"\nupstream = \"ci\"\n",
        )
        .start();
    let body = b"{\"ref\":\"main\"}";
    let signature = github_signature("s", body);
    let send = |event: &str, id: &str| {
        post(
            gateway.proxy,
            "/gh",
            &[
                ("X-Hub-Signature-256", &signature),
                ("X-GitHub-Event", event),
                ("X-GitHub-Delivery", id),
            ],
            body,
        )
    };
    assert_eq!(send("push", "d-1").status, 200);
    assert_eq!(send("issues", "d-2").status, 200);
    assert_eq!(ci.count(), 1, "push went to the rule's upstream");
    assert_eq!(other.count(), 1, "issues went to the route's upstream");
    let again = send("push", "d-1");
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["status"], "duplicate");
    assert_eq!(ci.count(), 1);
}

#[test]
fn dedupe_key_provider_needs_a_row_with_a_readable_id() {
    let text = |verify: &str| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n[upstreams.app]\ntargets = [\"127.0.0.1:9\"]\n[[routes]]\nname = \"r\"\npath = \"/r\"\nupstream = \"app\"\n{verify}dedupe = {{ key = \"provider\" }}\n"
        )
    };
    let error = |verify: &str| match Config::from_toml(&text(verify), Path::new("t.toml")) {
        Ok(_) => panic!("{verify} was accepted"),
        Err(e) => e.to_string(),
    };
    // Acuity's row has a note, not an id.
    let e = error("verify = { provider = \"acuity\", secrets = [\"literal:x\"] }\n");
    assert!(e.contains("routes[0].dedupe.key"), "{e}");
    assert!(e.contains("names no delivery id"), "{e}");
    let e = error("");
    assert!(e.contains("needs verify = { provider"), "{e}");
}
