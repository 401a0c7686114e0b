//! Compressed request bodies (`Content-Encoding`, src/encoding.rs) end to end through the
//! real binary: a route that reads the body decodes it under `max_decoded_body`, verifies
//! over the decoded or the received bytes as its provider signs, reads its event from the
//! decoded body, and forwards the received bytes and `Content-Encoding` unchanged. A route
//! that reads nothing of the body forwards coded bytes unread.
//!
//! Signatures here are computed with plain `hmac`/`sha2` (Stream's rule: hex HMAC-SHA256 of
//! the uncompressed JSON in `X-Signature`; GitHub's: of the bytes sent), bodies compressed
//! with `flate2` and `brotli`, independently of hookgate.

mod common;

use std::io::Write;

use common::*;
use flate2::write::{GzEncoder, ZlibEncoder};
use flate2::Compression;
use hmac::{Hmac, Mac};

const SECRET: &str = "stream-secret-0123456789";
const EVENT: &[u8] = br#"{"type":"message.new","message":{"id":"m-1","text":"hi"}}"#;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn br(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let params = brotli::enc::BrotliEncoderParams::default();
    brotli::BrotliCompress(&mut &data[..], &mut out, &params).unwrap();
    out
}

/// Stream's `X-Signature`: hex HMAC-SHA256 of `body` under the API secret.
fn stream_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// One gateway with a route of each kind:
/// - `stream`: provider `getstream` (signs the decoded body), event from the JSON body;
/// - `github`: signs the bytes as sent, event from the JSON body;
/// - `routed`: no signature, event from the JSON body routed to `billing`, a 1 MiB cap;
/// - `plain`: reads nothing of the body;
/// - `deduped`: its delivery id is in the JSON body.
fn gateway() -> (Gateway, Upstream, Upstream) {
    let app = Upstream::start("app");
    let billing = Upstream::start("billing");
    let gateway = Setup::new()
        .upstream(&app)
        .upstream(&billing)
        .route(
            "stream",
            "/stream",
            "app",
            &format!(
                "verify = {{ provider = \"getstream\", secrets = [\"literal:{SECRET}\"] }}\n\
                 event = {{ json = \"/type\" }}"
            ),
        )
        .route(
            "github",
            "/github",
            "app",
            &format!(
                "verify = {{ scheme = \"github\", secrets = [\"literal:{SECRET}\"] }}\n\
                 event = {{ json = \"/type\" }}"
            ),
        )
        .route(
            "routed",
            "/routed",
            "app",
            "max_decoded_body = \"1MiB\"\n\
             event = { json = \"/type\" }\n\
             [[routes.events]]\nmatch = \"invoice.*\"\nupstream = \"billing\"",
        )
        .route("plain", "/plain", "app", "")
        .route(
            "deduped",
            "/deduped",
            "app",
            "dedupe = { key = \"json:/message/id\" }",
        )
        .start();
    (gateway, app, billing)
}

#[test]
fn a_gzip_body_signed_before_compression_is_verified_decoded_and_forwarded_as_sent() {
    let (gateway, app, _billing) = gateway();
    let body = gzip(EVENT);
    let signature = stream_signature(EVENT);
    let headers = [
        ("Content-Type", "application/json"),
        ("Content-Encoding", "gzip"),
        ("X-Signature", signature.as_str()),
    ];
    // Guards `Verifier::verify_decoded`'s `if self.signs_decoded` (verifying the received
    // bytes instead answers 401 here).
    post(gateway.proxy, "/stream", &headers, &body).expect_status(200);
    let received = app.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body, body, "the gzip bytes, unchanged");
    assert_eq!(received[0].header("content-encoding"), Some("gzip"));
    assert_eq!(received[0].header("x-hookgate-event"), Some("message.new"));
    gateway.assert_metric(
        "hookgate_decoded_bodies_total",
        &[
            ("route", "stream"),
            ("coding", "gzip"),
            ("result", "decoded"),
        ],
        1.0,
    );

    // Signed over the compressed bytes instead: not what Stream signs.
    let wrong = stream_signature(&body);
    let answer = post(
        gateway.proxy,
        "/stream",
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
            ("X-Signature", wrong.as_str()),
        ],
        &body,
    );
    answer.expect_status(401);
    assert_eq!(answer.json()["error"], "signature_invalid");
    assert_eq!(app.count(), 1, "nothing more forwarded");
}

#[test]
fn a_gzip_body_signed_after_compression_is_verified_as_sent_and_its_event_read_decoded() {
    let (gateway, app, _billing) = gateway();
    let body = gzip(EVENT);
    let signature = github_signature(SECRET, &body);
    let headers = [
        ("Content-Type", "application/json"),
        ("Content-Encoding", "gzip"),
        ("X-Hub-Signature-256", signature.as_str()),
    ];
    // Guards `verify_decoded`'s `else { *request }`: verifying the decoded bytes on an
    // as-sent route answers 401 here.
    post(gateway.proxy, "/github", &headers, &body).expect_status(200);
    let received = app.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body, body);
    assert_eq!(received[0].header("content-encoding"), Some("gzip"));
    assert_eq!(received[0].header("x-hookgate-event"), Some("message.new"));

    // A signature of the decoded JSON does not cover what was sent.
    let decoded_signature = github_signature(SECRET, EVENT);
    post(
        gateway.proxy,
        "/github",
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
            ("X-Hub-Signature-256", decoded_signature.as_str()),
        ],
        &body,
    )
    .expect_status(401);
    assert_eq!(app.count(), 1);

    // A forged bomb is refused on its signature before any decoding: 401, not 413.
    // Guards the `self.verify(route, session, body, None, ctx)?` before `encoding::decode`
    // in `decode_body`.
    let bomb = gzip(&vec![0u8; 10 << 20]);
    let forged = github_signature("not-the-secret", &bomb);
    let answer = post(
        gateway.proxy,
        "/github",
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
            ("X-Hub-Signature-256", forged.as_str()),
        ],
        &bomb,
    );
    answer.expect_status(401);
    assert_eq!(answer.json()["error"], "signature_invalid");
    gateway.assert_metric(
        "hookgate_signature_failures_total",
        &[("route", "github"), ("reason", "mismatch")],
        2.0,
    );
    gateway.assert_no_series(
        "hookgate_decoded_bodies_total",
        &[("route", "github"), ("result", "too_large")],
    );
    assert_eq!(app.count(), 1);
}

#[test]
fn a_br_body_is_routed_by_a_field_inside_it() {
    let (gateway, app, billing) = gateway();
    let invoice = br(br#"{"type":"invoice.paid","amount":1200}"#);
    let headers = [
        ("Content-Type", "application/json"),
        ("Content-Encoding", "br"),
    ];
    // Guards `Verified { body: decoded, .. }` in `verify_decoded`: events read from the
    // received bytes find no JSON (400).
    post(gateway.proxy, "/routed", &headers, &invoice).expect_status(200);
    let received = billing.received();
    assert_eq!(received.len(), 1, "invoice.* goes to billing");
    assert_eq!(received[0].body, invoice);
    assert_eq!(received[0].header("content-encoding"), Some("br"));
    assert_eq!(received[0].header("x-hookgate-event"), Some("invoice.paid"));
    assert_eq!(app.count(), 0);

    // deflate (zlib) takes the same path; another event goes to the route's upstream.
    let other = zlib(br#"{"type":"customer.created"}"#);
    post(
        gateway.proxy,
        "/routed",
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "Deflate"),
        ],
        &other,
    )
    .expect_status(200);
    let received = app.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body, other);
    assert_eq!(received[0].header("content-encoding"), Some("Deflate"));
    assert_eq!(billing.count(), 1);
}

#[test]
fn a_compression_bomb_gets_413_and_nothing_is_forwarded() {
    let (gateway, app, billing) = gateway();
    let bomb = gzip(&vec![0u8; 10 << 20]);
    assert!(
        bomb.len() < 20 << 10,
        "10 MiB of zeros gzip to {} B",
        bomb.len()
    );
    // Guards `encoding::decode(.., route.settings.max_decoded_body)`: without the cap the
    // zeros decode whole and the event read answers 400, not 413.
    let answer = post(
        gateway.proxy,
        "/routed",
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        &bomb,
    );
    answer.expect_status(413);
    let json = answer.json();
    assert_eq!(json["error"], "body_too_large");
    assert_eq!(json["route"], "routed");
    assert_eq!(
        json["reason"],
        "the decoded body is over max_decoded_body (1048576 bytes)"
    );
    gateway.assert_metric(
        "hookgate_decoded_bodies_total",
        &[
            ("route", "routed"),
            ("coding", "gzip"),
            ("result", "too_large"),
        ],
        1.0,
    );
    gateway.assert_requests("routed", "body_too_large", 1.0);
    assert_eq!(app.count() + billing.count(), 0);
}

#[test]
fn corrupt_unknown_and_stacked_codings_are_refused_on_a_route_that_reads_the_body() {
    let (gateway, app, billing) = gateway();
    let json = [("Content-Type", "application/json")];
    let send = |coding: &str, body: &[u8]| {
        let mut headers = json.to_vec();
        headers.push(("Content-Encoding", coding));
        post(gateway.proxy, "/routed", &headers, body)
    };
    // Guards the `Corrupt => Reply::BAD_REQUEST` arm of `decode_body`.
    let mut cut = gzip(EVENT);
    cut.truncate(cut.len() - 4);
    let answer = send("gzip", &cut);
    answer.expect_status(400);
    assert_eq!(answer.json()["error"], "bad_request");
    assert_eq!(
        answer.json()["reason"],
        "the gzip body is corrupt: the stream ends before its end marker"
    );
    let answer = send("gzip", b"{\"type\":\"not gzip\"}");
    answer.expect_status(400);
    assert_eq!(
        answer.json()["reason"],
        "the gzip body is corrupt: invalid compressed data"
    );

    // Guards `_ => Reply::UNSUPPORTED_CONTENT_ENCODING`: an unknown or stacked coding is 415
    // with the codings that are accepted.
    for coding in ["zstd", "gzip, br"] {
        let answer = send(coding, &gzip(EVENT));
        answer.expect_status(415);
        assert_eq!(answer.json()["error"], "unsupported_content_encoding");
        assert_eq!(answer.header("accept-encoding"), Some("gzip, deflate, br"));
    }
    let answer = send("gzip,", &gzip(EVENT));
    answer.expect_status(400);
    assert_eq!(answer.json()["error"], "bad_request");
    gateway.assert_metric(
        "hookgate_decoded_bodies_total",
        &[
            ("route", "routed"),
            ("coding", "other"),
            ("result", "unsupported"),
        ],
        2.0,
    );
    assert_eq!(app.count() + billing.count(), 0);
}

#[test]
fn a_route_that_reads_nothing_forwards_coded_bytes_unread() {
    let (gateway, app, _billing) = gateway();
    // Not even valid gzip, and a coding hookgate does not know: the app decides.
    // Guards the early return of `decode_body` for routes that read no body.
    for (coding, body) in [("gzip", b"not gzip at all".to_vec()), ("zstd", gzip(EVENT))] {
        post(
            gateway.proxy,
            "/plain",
            &[
                ("Content-Type", "application/json"),
                ("Content-Encoding", coding),
            ],
            &body,
        )
        .expect_status(200);
        let received = app.received().pop().unwrap();
        assert_eq!(received.body, body);
        assert_eq!(received.header("content-encoding"), Some(coding));
    }
    gateway.assert_no_series("hookgate_decoded_bodies_total", &[("route", "plain")]);

    // A form is read for `_method` whatever the route: a compressed one is decoded first.
    // Guards `|| agreement::declares_form(head)` in `decode_body` (without it, 200).
    let form = gzip(b"a=1&_method=DELETE");
    let answer = post(
        gateway.proxy,
        "/plain",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Content-Encoding", "gzip"),
        ],
        &form,
    );
    answer.expect_status(400);
    assert_eq!(
        answer.json()["reason"],
        "a _method field (method override) is not accepted"
    );
    assert_eq!(app.count(), 2);
}

#[test]
fn a_delivery_id_is_read_from_the_decoded_body() {
    let (gateway, app, _billing) = gateway();
    let send = |coding: &str, body: &[u8]| {
        post(
            gateway.proxy,
            "/deduped",
            &[
                ("Content-Type", "application/json"),
                ("Content-Encoding", coding),
            ],
            body,
        )
    };
    // Guards `KeySource::Json(_)` in the proxy's `reads_body`: the id read from the gzip
    // bytes is not JSON (400).
    send("gzip", &gzip(EVENT)).expect_status(200);
    assert_eq!(app.count(), 1);
    // The same delivery, coded another way, has the same id.
    let answer = send("br", &br(EVENT));
    answer.expect_status(200);
    assert_eq!(answer.json()["status"], "duplicate");
    assert_eq!(app.count(), 1, "a duplicate is not forwarded");
}

/// A config with `[server]` lines `server` and one route with lines `route`.
fn config(server: &str, route: &str) -> Result<hookgate::config::Config, String> {
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n{server}\n\
         [upstreams.app]\ntargets = [\"127.0.0.1:9\"]\n\
         [[routes]]\nname = \"r\"\npath = \"/r\"\nupstream = \"app\"\n{route}\n"
    );
    hookgate::config::Config::from_toml(&text, std::path::Path::new("t.toml"))
        .map_err(|e| e.to_string())
}

#[test]
fn max_decoded_body_defaults_to_eight_times_max_body_and_can_be_set_per_server_and_route() {
    let cap = |server: &str, route: &str| config(server, route).unwrap().routes[0].max_decoded_body;
    assert_eq!(cap("", ""), 8 << 20, "8 x the default max_body (1MiB)");
    assert_eq!(cap("", "max_body = \"2MiB\""), 16 << 20);
    assert_eq!(
        cap("max_decoded_body = \"3MiB\"", "max_body = \"2MiB\""),
        3 << 20
    );
    assert_eq!(
        cap(
            "max_decoded_body = \"3MiB\"",
            "max_decoded_body = \"512KiB\""
        ),
        512 << 10
    );
    let error = config("", "max_decoded_body = \"lots\"").unwrap_err();
    assert!(error.contains("max_decoded_body"), "{error}");
}

#[test]
fn signed_body_is_as_sent_or_decoded_and_only_for_schemes_that_sign_a_body() {
    let verify = |keys: &str| {
        config(
            "",
            &format!("verify = {{ {keys}, secrets = [\"literal:{SECRET}\"] }}"),
        )
    };
    let signs_decoded = |keys: &str| verify(keys).unwrap().routes[0].verifier.signs_decoded();
    assert!(!signs_decoded("scheme = \"github\""));
    assert!(!signs_decoded(
        "scheme = \"github\", signed_body = \"as_sent\""
    ));
    assert!(signs_decoded(
        "scheme = \"github\", signed_body = \"decoded\""
    ));
    // Stream's row signs the decoded body; a route can say otherwise.
    assert!(signs_decoded("provider = \"getstream\""));
    assert!(!signs_decoded(
        "provider = \"getstream\", signed_body = \"as_sent\""
    ));
    let error = verify("scheme = \"github\", signed_body = \"gzip\"").unwrap_err();
    assert!(error.contains("verify.signed_body"), "{error}");
    let error =
        verify("scheme = \"token\", header = \"X-Token\", signed_body = \"decoded\"").unwrap_err();
    assert!(error.contains("signs no body"), "{error}");
}
