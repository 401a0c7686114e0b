//! URL-signing schemes end to end, through the real gateway: deliveries whose request target
//! carries a query string with percent-escapes, signed by an independent implementation of
//! each provider's documented rule (plain `hmac`/`sha1`/`sha2` calls), are forwarded with the
//! target and the body byte for byte; forged ones are refused and nothing reaches the
//! upstream.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::*;
use hmac::{Hmac, Mac};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// Non-default port and a path prefix a load balancer strips: both are signed.
const PUBLIC_URL: &str = "https://hooks.example.com:8443/edge";
const SECRET: &str = "url-signed-secret-0123456789";
const WRONG: &str = "not-the-secret-9876543210";
/// The HubSpot example of the issue: `%40`, `%3A`, `%2F` in the query, plus escapes HubSpot
/// does not decode (`%20`, `+`) and a repeated parameter.
const QUERY: &str =
    "?email=jane%40example.com&next=https%3A%2F%2Fapp.example.com%2Fdone&q=a+b%20c&tag=2&tag=1";
const JSON: &[u8] =
    b"[{\"eventId\":1,\"subscriptionType\":\"contact.creation\",\"note\":\"caf\xc3\xa9\"}]";
const FORM: &[u8] =
    b"CallSid=CA123&From=%2B14158675309&Body=caf%C3%A9+%26+more&Digits=5678&Digits=1234";

fn hmac_sha256(key: &str, message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn hmac_sha1(key: &str, message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// HubSpot's "Validate the v3 request signature": decode the twelve listed escapes in the
/// URI (written here as a replace table, the way HubSpot's page lists them).
fn hubspot_uri(uri: &str) -> String {
    let table = [
        ("%3A", ":"),
        ("%2F", "/"),
        ("%3F", "?"),
        ("%40", "@"),
        ("%21", "!"),
        ("%24", "$"),
        ("%27", "'"),
        ("%28", "("),
        ("%29", ")"),
        ("%2A", "*"),
        ("%2C", ","),
        ("%3B", ";"),
    ];
    table.iter().fold(uri.to_string(), |uri, (escape, char)| {
        uri.replace(escape, char)
    })
}

/// HubSpot v3 headers for a POST of `body` to `uri` (the full URL HubSpot called).
fn hubspot(secret: &str, uri: &str, body: &[u8]) -> Vec<(String, String)> {
    let ms = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis())
    .to_string();
    let mut message = format!("POST{}", hubspot_uri(uri)).into_bytes();
    message.extend_from_slice(body);
    message.extend_from_slice(ms.as_bytes());
    vec![
        ("Content-Type".into(), "application/json".into()),
        ("X-HubSpot-Request-Timestamp".into(), ms),
        (
            "X-HubSpot-Signature-v3".into(),
            B64.encode(hmac_sha256(secret, &message)),
        ),
    ]
}

/// Twilio: the URL as requested, then the decoded form parameters sorted by name and value,
/// `name + value` each. The parameters of [`FORM`], decoded and sorted by hand.
fn twilio(secret: &str, url: &str) -> Vec<(String, String)> {
    let signed = format!("{url}Bodycafé & moreCallSidCA123Digits1234Digits5678From+14158675309");
    vec![
        (
            "Content-Type".into(),
            "application/x-www-form-urlencoded".into(),
        ),
        (
            "X-Twilio-Signature".into(),
            B64.encode(hmac_sha1(secret, signed.as_bytes())),
        ),
    ]
}

/// Square: HMAC-SHA256 of the notification URL followed by the body.
fn square(secret: &str, url: &str, body: &[u8]) -> Vec<(String, String)> {
    let mut message = url.as_bytes().to_vec();
    message.extend_from_slice(body);
    vec![
        ("Content-Type".into(), "application/json".into()),
        (
            "x-square-hmacsha256-signature".into(),
            B64.encode(hmac_sha256(secret, &message)),
        ),
    ]
}

fn config(upstream: &Upstream) -> String {
    let mut text = format!("[upstreams.app]\ntargets = [\"{}\"]\n", upstream.addr);
    for scheme in ["hubspot", "twilio", "square"] {
        text.push_str(&format!(
            "\n[[routes]]\nname = \"{scheme}\"\npath = \"/hooks/{scheme}/*\"\nupstream = \"app\"\n\
             verify = {{ scheme = \"{scheme}\", secrets = [\"literal:{SECRET}\"], public_url = \"{PUBLIC_URL}\" }}\n"
        ));
    }
    text
}

fn send(gateway: &Gateway, target: &str, headers: &[(String, String)], body: &[u8]) -> Response {
    let borrowed: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    post(gateway.proxy, target, &borrowed, body)
}

/// Sends a delivery that must be forwarded, and checks what the upstream got.
fn forwarded(
    gateway: &Gateway,
    upstream: &Upstream,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) {
    let before = upstream.count();
    let answered = send(gateway, target, headers, body);
    assert_eq!(
        answered.status,
        200,
        "{target}: {}",
        String::from_utf8_lossy(&answered.body)
    );
    assert_eq!(upstream.count(), before + 1);
    let received = upstream.received().pop().unwrap();
    assert_eq!(received.target, target, "target forwarded as sent");
    assert!(received.body == body, "{target}: body not byte-identical");
}

/// Sends a delivery that must be refused with `status` and `error`; nothing reaches the
/// upstream.
fn refused(
    gateway: &Gateway,
    upstream: &Upstream,
    what: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
    (status, error): (u16, &str),
) -> serde_json::Value {
    let before = upstream.count();
    let answered = send(gateway, target, headers, body);
    assert_eq!(
        answered.status,
        status,
        "{what}: {}",
        String::from_utf8_lossy(&answered.body)
    );
    let json = answered.json();
    assert_eq!(json["error"], error, "{what}");
    assert!(
        !String::from_utf8_lossy(&answered.body).contains(SECRET),
        "{what}: secret in the answer"
    );
    assert_eq!(
        upstream.count(),
        before,
        "{what}: a refused delivery reached the upstream"
    );
    json
}

#[test]
fn escaped_queries_verify_and_are_forwarded_byte_exact() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream));

    // Guards `SignedUrl::hubspot_v3(public_url?)` in src/verify/hubspot.rs: with the URI
    // signed as sent (the old behaviour) this delivery is refused 401.
    let target = format!("/hooks/hubspot/contacts{QUERY}");
    let headers = hubspot(SECRET, &format!("{PUBLIC_URL}{target}"), JSON);
    forwarded(&gateway, &upstream, &target, &headers, JSON);

    // Guards `mac.update(request.path_and_query.as_bytes())` in twilio.rs `compute`: signing
    // the path without its query (or a decoded one) refuses this delivery.
    let target = format!("/hooks/twilio/voice{QUERY}");
    let headers = twilio(SECRET, &format!("{PUBLIC_URL}{target}"));
    forwarded(&gateway, &upstream, &target, &headers, FORM);

    // Guards `SignedUrl::as_sent(public_url?)` in square.rs: HubSpot's decoding (or any
    // other normalisation) of the notification URL refuses this delivery.
    let target = format!("/hooks/square/payments{QUERY}");
    let headers = square(SECRET, &format!("{PUBLIC_URL}{target}"), JSON);
    forwarded(&gateway, &upstream, &target, &headers, JSON);

    gateway.assert_metric("hookgate_signature_failures_total", &[], 0.0);
}

#[test]
fn forged_and_ambiguous_deliveries_are_refused() {
    let upstream = Upstream::start("app");
    let gateway = Gateway::start(&config(&upstream));
    let target = format!("/hooks/hubspot/contacts{QUERY}");
    let url = format!("{PUBLIC_URL}{target}");

    // Forged: the wrong secret, or a genuine signature moved to another query.
    refused(
        &gateway,
        &upstream,
        "hubspot wrong secret",
        &target,
        &hubspot(WRONG, &url, JSON),
        JSON,
        (401, "signature_invalid"),
    );
    let other = target.replace("jane%40", "john%40");
    refused(
        &gateway,
        &upstream,
        "hubspot other query",
        &other,
        &hubspot(SECRET, &url, JSON),
        JSON,
        (401, "signature_invalid"),
    );
    // Signed over the URI without HubSpot's decoding: not what HubSpot sends.
    let mut undecoded = hubspot(SECRET, &url, JSON);
    let ms = undecoded[1].1.clone();
    let mut message = format!("POST{url}").into_bytes();
    message.extend_from_slice(JSON);
    message.extend_from_slice(ms.as_bytes());
    undecoded[2].1 = B64.encode(hmac_sha256(SECRET, &message));
    refused(
        &gateway,
        &upstream,
        "hubspot undecoded",
        &target,
        &undecoded,
        JSON,
        (401, "signature_invalid"),
    );

    // A genuine signature for /contacts/a/b respelled /contacts/a%2Fb: the
    // gateway's one reading of the path (src/target.rs) refuses an encoded '/'
    // before any route is chosen, whoever signed it.
    let genuine = format!("{PUBLIC_URL}/hooks/hubspot/contacts/a/b?x=1");
    let respelled = "/hooks/hubspot/contacts/a%2Fb?x=1";
    let json = refused(
        &gateway,
        &upstream,
        "hubspot %2F in path",
        respelled,
        &hubspot(SECRET, &genuine, JSON),
        JSON,
        (400, "bad_request"),
    );
    assert!(
        json["reason"].as_str().is_some_and(|r| r.contains("%2F")),
        "{json}"
    );

    // Guards `refuse_ambiguous` in src/verify/url.rs: a genuine signature for
    // ?x=a;b respelled ?x=a%3Bb is a 400 with the reason, never forwarded
    // (without the refusal it verifies and reaches the upstream).
    let genuine = format!("{PUBLIC_URL}/hooks/hubspot/contacts?x=a;b");
    let respelled = "/hooks/hubspot/contacts?x=a%3Bb";
    let json = refused(
        &gateway,
        &upstream,
        "hubspot %3B in query",
        respelled,
        &hubspot(SECRET, &genuine, JSON),
        JSON,
        (400, "bad_request"),
    );
    assert_eq!(json["route"], "hubspot");
    assert!(
        json["reason"].as_str().is_some_and(|r| r.contains("%3B")),
        "{json}"
    );
    gateway.assert_metric(
        "hookgate_signature_failures_total",
        &[("route", "hubspot"), ("reason", "ambiguous")],
        1.0,
    );

    // Twilio and Square: a signature for the decoded URL is not one for the URL requested.
    let target = format!("/hooks/twilio/voice{QUERY}");
    let decoded_url = hubspot_uri(&format!("{PUBLIC_URL}{target}"));
    refused(
        &gateway,
        &upstream,
        "twilio decoded url",
        &target,
        &twilio(SECRET, &decoded_url),
        FORM,
        (401, "signature_invalid"),
    );
    let target = format!("/hooks/square/payments{QUERY}");
    let decoded_url = hubspot_uri(&format!("{PUBLIC_URL}{target}"));
    refused(
        &gateway,
        &upstream,
        "square decoded url",
        &target,
        &square(SECRET, &decoded_url, JSON),
        JSON,
        (401, "signature_invalid"),
    );
    // Square does not toggle ports: the URL without the port is another URL.
    let portless = format!("https://hooks.example.com/edge{target}");
    refused(
        &gateway,
        &upstream,
        "square without port",
        &target,
        &square(SECRET, &portless, JSON),
        JSON,
        (401, "signature_invalid"),
    );

    assert_eq!(upstream.count(), 0);
    // A refusal is followed by a healthy gateway.
    let target = format!("/hooks/square/payments{QUERY}");
    let headers = square(SECRET, &format!("{PUBLIC_URL}{target}"), JSON);
    forwarded(&gateway, &upstream, &target, &headers, JSON);
}
