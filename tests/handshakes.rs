//! Setup handshakes answered by the gateway (`handshake` on a route), end to end through the
//! real binary: for each provider, the exact answer bytes the provider documents, that the
//! app (the recording upstream) received nothing, and the refusals: a badly signed signed
//! handshake is 401 and not answered, Meta's wrong verify token is 403, a value that is not
//! safe to echo is 400, Asana's second secret is 409; without `handshake` the handshake goes
//! to the app as before. Signatures are computed here with plain `hmac`/`ed25519-dalek`
//! calls from the providers' documentation, not by hookgate.

mod common;

use std::path::Path;
use std::time::SystemTime;

use base64::Engine as _;
use common::*;
use ed25519_dalek::{Signer, SigningKey};
use hookgate::config::Config;

const SLACK: &str = "slack-signing-secret-0123";
const ZOOM: &str = "zoom-secret-token-0123";
const TWITCH: &str = "twitch-eventsub-secret-0123";
const META_APP: &str = "meta-app-secret-0123";
/// X's CRC sample consumer secret and token (developer.x.com, securing webhooks).
const X_SECRET: &str = "z3ZX4v7mAAUGykl3EcmkqbartmuW8VFOOzCloLx9Q45P0hLrFu";
const X_TOKEN: &str = "9b4507b3-9040-4669-9ca3-6b94edb50553";
/// Asana's example handshake secret (developers.asana.com/reference/createwebhook).
const ASANA: &str = "b537207f20cbfa02357cf448134da559e8bd39d61597dcd5631b8012eae53e81";

/// Slack's (and Zoom's) `v0:{ts}:{body}` signature headers.
fn v0(secret: &str, body: &[u8], signature: &str, timestamp: &str) -> Vec<(String, String)> {
    let ts = now_secs().to_string();
    let mac = hmac_sha256(secret.as_bytes(), &[b"v0:", ts.as_bytes(), b":", body]);
    vec![
        (timestamp.to_string(), ts),
        (signature.to_string(), format!("v0={}", hex::encode(mac))),
    ]
}

fn send(gateway: &Gateway, path: &str, headers: &[(String, String)], body: &[u8]) -> Response {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    post(gateway.proxy, path, &headers, body)
}

/// Sends a delivery that must pass: 200, and the app receives exactly `body`
/// (once; the kit's upstream records it a moment before the answer is read).
fn forwarded_once(
    gateway: &Gateway,
    app: &Upstream,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) {
    send(gateway, path, headers, body).expect_status(200);
    assert!(wait_until(std::time::Duration::from_secs(5), || app
        .count()
        == 1));
    assert_eq!(app.received()[0].body, body);
}

/// A gateway with one route `name` at `/name`, with `extra` lines, and its app.
fn start(name: &str, extra: &str) -> (Gateway, Upstream) {
    let app = Upstream::start("app");
    let gateway = Setup::new()
        .upstream(&app)
        .route(name, &format!("/{name}"), "app", extra)
        .start();
    (gateway, app)
}

/// Asserts an answered handshake: status 200, `content_type`, exactly `body`, the safety
/// headers, counted once, and nothing forwarded to the app.
#[track_caller]
fn assert_answered(
    gateway: &Gateway,
    app: &Upstream,
    response: &Response,
    content_type: &str,
    body: &[u8],
    route: &str,
    provider: &str,
) {
    response.expect_status(200);
    assert_eq!(response.header("content-type"), Some(content_type));
    assert_eq!(
        response.body,
        body,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(app.count(), 0, "a handshake is never forwarded");
    gateway.assert_metric(
        "hookgate_handshakes_total",
        &[
            ("route", route),
            ("provider", provider),
            ("outcome", "answered"),
        ],
        1.0,
    );
    gateway.assert_requests(route, "handshake", 1.0);
}

#[test]
fn slack_url_verification_is_answered_once_verified() {
    let (gateway, app) = start(
        "slack",
        &format!("verify = {{ provider = \"slack\", secrets = [\"literal:{SLACK}\"] }}\nhandshake = true"),
    );
    // https://api.slack.com/events/url_verification: the doc's request and plaintext answer.
    let body = br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    // A badly signed one is refused by verification and not answered (guards the order in
    // `steps`: the signed handshake is looked for only after `verify_and_admit` verified).
    let forged = v0(
        "not-the-secret",
        body,
        "X-Slack-Signature",
        "X-Slack-Request-Timestamp",
    );
    let refused = send(&gateway, "/slack", &forged, body);
    refused.expect_status(401);
    assert_eq!(refused.json()["error"], "signature_invalid");
    // Guards `handshake::signed` in `verify_and_admit` (src/proxy/mod.rs): without it the
    // challenge is forwarded to the app and the app's answer relayed.
    let signed = v0(
        SLACK,
        body,
        "X-Slack-Signature",
        "X-Slack-Request-Timestamp",
    );
    let answered = send(&gateway, "/slack", &signed, body);
    assert_answered(
        &gateway,
        &app,
        &answered,
        "text/plain",
        b"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        "slack",
        "slack",
    );
    // An event is still forwarded, byte for byte.
    let event = br#"{"type":"event_callback","event":{"type":"app_mention"}}"#;
    let signed = v0(
        SLACK,
        event,
        "X-Slack-Signature",
        "X-Slack-Request-Timestamp",
    );
    forwarded_once(&gateway, &app, "/slack", &signed, event);
}

#[test]
fn without_handshake_the_challenge_goes_to_the_app() {
    let (gateway, app) = start(
        "slack",
        &format!("verify = {{ provider = \"slack\", secrets = [\"literal:{SLACK}\"] }}"),
    );
    let body = br#"{"token":"t","challenge":"abc","type":"url_verification"}"#;
    let signed = v0(
        SLACK,
        body,
        "X-Slack-Signature",
        "X-Slack-Request-Timestamp",
    );
    // Guards `Plan` being `None` without the key (src/config/handshake.rs `plan`).
    forwarded_once(&gateway, &app, "/slack", &signed, body);
    gateway.assert_no_series(
        "hookgate_handshakes_total",
        &[
            ("route", "slack"),
            ("provider", "slack"),
            ("outcome", "answered"),
        ],
    );
}

#[test]
fn zoom_url_validation_answers_the_hmac_of_the_plain_token() {
    let (gateway, app) = start(
        "zoom",
        &format!(
            "verify = {{ provider = \"zoom\", secrets = [\"literal:{ZOOM}\"] }}\nhandshake = true"
        ),
    );
    // https://developers.zoom.us/docs/api/webhooks/#validate-your-webhook-endpoint
    let body = br#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;
    let signed = v0(ZOOM, body, "x-zm-signature", "x-zm-request-timestamp");
    let encrypted = hex::encode(hmac_sha256(ZOOM.as_bytes(), &[b"qgg8vlvZRS6UYooatFL8Aw"]));
    let expected =
        format!("{{\"plainToken\":\"qgg8vlvZRS6UYooatFL8Aw\",\"encryptedToken\":\"{encrypted}\"}}");
    // Guards `Handshake::zoom` (src/handshake.rs): the HMAC of plainToken with the route's
    // first secret, hex, in the documented field order.
    let answered = send(&gateway, "/zoom", &signed, body);
    assert_answered(
        &gateway,
        &app,
        &answered,
        "application/json",
        expected.as_bytes(),
        "zoom",
        "zoom",
    );
}

#[test]
fn twitch_challenge_is_echoed_as_plain_text() {
    let (gateway, app) = start(
        "twitch",
        &format!("verify = {{ provider = \"twitch\", secrets = [\"literal:{TWITCH}\"] }}\nhandshake = true"),
    );
    // https://dev.twitch.tv/docs/eventsub/handling-webhook-events/#responding-to-a-challenge-request
    let body = br#"{"challenge":"pogchamp-kappa-360noscope-vohiyo","subscription":{"id":"f1c2a387-161a-49f9-a165-0f21d7a4e1c4","status":"webhook_callback_verification_pending","type":"channel.follow","version":"1","cost":1,"condition":{"broadcaster_user_id":"12826"},"transport":{"method":"webhook","callback":"https://example.com/webhooks/callback"},"created_at":"2019-11-16T10:11:12.634234626Z"}}"#;
    let id = "e76c6bd4-55c9-4987-8304-da1588d8988b";
    let stamp = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();
    let mac = hmac_sha256(TWITCH.as_bytes(), &[id.as_bytes(), stamp.as_bytes(), body]);
    let headers = vec![
        ("Twitch-Eventsub-Message-Id".to_string(), id.to_string()),
        ("Twitch-Eventsub-Message-Timestamp".to_string(), stamp),
        (
            "Twitch-Eventsub-Message-Signature".to_string(),
            format!("sha256={}", hex::encode(mac)),
        ),
        (
            "Twitch-Eventsub-Message-Type".to_string(),
            "webhook_callback_verification".to_string(),
        ),
    ];
    // Guards the `Kind::Twitch` arm of `Handshake::signed` (src/handshake.rs).
    let answered = send(&gateway, "/twitch", &headers, body);
    assert_answered(
        &gateway,
        &app,
        &answered,
        "text/plain",
        b"pogchamp-kappa-360noscope-vohiyo",
        "twitch",
        "twitch",
    );
}

#[test]
fn discord_ping_gets_pong_only_when_signed() {
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let public = hex::encode(key.verifying_key().to_bytes());
    let (gateway, app) = start(
        "discord",
        &format!(
            "verify = {{ provider = \"discord\", public_key = \"{public}\" }}\nhandshake = true"
        ),
    );
    // https://discord.com/developers/docs/interactions/overview#setting-up-an-endpoint-acknowledging-ping-requests
    let body = br#"{"id":"1","application_id":"2","type":1,"version":1}"#;
    let ts = now_secs().to_string();
    let sign = |key: &SigningKey| {
        let mut message = ts.clone().into_bytes();
        message.extend_from_slice(body);
        vec![
            ("X-Signature-Timestamp".to_string(), ts.clone()),
            (
                "X-Signature-Ed25519".to_string(),
                hex::encode(key.sign(&message).to_bytes()),
            ),
        ]
    };
    // Discord sends PINGs signed by others to check that endpoints refuse them.
    let impostor = SigningKey::from_bytes(&[9u8; 32]);
    send(&gateway, "/discord", &sign(&impostor), body).expect_status(401);
    // Guards the `Kind::Discord` arm of `Handshake::signed` (src/handshake.rs).
    let answered = send(&gateway, "/discord", &sign(&key), body);
    assert_answered(
        &gateway,
        &app,
        &answered,
        "application/json",
        br#"{"type":1}"#,
        "discord",
        "discord",
    );
}

#[test]
fn meta_verification_needs_the_verify_token() {
    let (gateway, app) = start(
        "meta",
        &format!(
            "methods = [\"POST\"]\nverify = {{ provider = \"meta\", secrets = [\"literal:{META_APP}\"] }}\nhandshake = {{ verify_token = \"literal:meatyhamhock\" }}"
        ),
    );
    // https://developers.facebook.com/docs/graph-api/webhooks/getting-started#verification-requests
    let wrong = get(
        gateway.proxy,
        "/meta?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=guessed",
    )
    .unwrap();
    // Guards the verify-token comparison in `Handshake::meta` (src/handshake.rs).
    wrong.expect_status(403);
    assert_eq!(wrong.json()["error"], "handshake_refused");
    assert!(!String::from_utf8_lossy(&wrong.body).contains("1158201444"));
    gateway.assert_metric(
        "hookgate_handshakes_total",
        &[
            ("route", "meta"),
            ("provider", "meta"),
            ("outcome", "refused"),
        ],
        1.0,
    );
    // Guards the GET exception in `route` (src/proxy/mod.rs): the route takes only POST.
    let answered = get(
        gateway.proxy,
        "/meta?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock",
    )
    .unwrap();
    assert_answered(
        &gateway,
        &app,
        &answered,
        "text/plain",
        b"1158201444",
        "meta",
        "meta",
    );
    // Any other GET on the POST-only route is still 405 (`handshake_only` in
    // `steps`), and its `Allow` names what the route takes.
    let other = get(gateway.proxy, "/meta?x=1").unwrap();
    other.expect_status(405);
    assert_eq!(other.header("allow"), Some("POST"));
    assert_eq!(other.json()["error"], "method_not_allowed");
    assert_eq!(app.count(), 0);
    // A signed delivery is forwarded as before.
    let body = br#"{"object":"page","entry":[]}"#;
    let signature = format!(
        "sha256={}",
        hex::encode(hmac_sha256(META_APP.as_bytes(), &[body]))
    );
    forwarded_once(
        &gateway,
        &app,
        "/meta",
        &[("X-Hub-Signature-256".to_string(), signature)],
        body,
    );
}

#[test]
fn dropbox_challenge_is_echoed_only_when_safe() {
    let (gateway, app) = start(
        "dropbox",
        "methods = [\"POST\"]\nverify = { provider = \"dropbox\", secrets = [\"literal:dropbox-app-secret\"] }\nhandshake = true",
    );
    // Guards `echoable` (src/handshake.rs): markup is never reflected.
    let hostile = get(
        gateway.proxy,
        "/dropbox?challenge=%3Cscript%3Ealert(1)%3C/script%3E",
    )
    .unwrap();
    hostile.expect_status(400);
    assert_eq!(hostile.header("content-type"), Some("application/json"));
    assert!(!String::from_utf8_lossy(&hostile.body).contains("script"));
    // https://www.dropbox.com/developers/reference/webhooks: echo, text/plain, nosniff.
    let answered = get(gateway.proxy, "/dropbox?challenge=abc123").unwrap();
    assert_answered(
        &gateway,
        &app,
        &answered,
        "text/plain",
        b"abc123",
        "dropbox",
        "dropbox",
    );
}

/// README: "A GET handshake reaches a route limited to other methods; any other
/// GET there is still 405, whose `Allow` names the route's methods." Guards the
/// `Allow` that `refuse` (src/proxy/mod.rs) takes from the route `route` let
/// through for its handshake: the old fixed `Allow: POST` turns it red.
#[test]
fn a_get_that_is_no_handshake_is_told_the_route_methods() {
    let (gateway, app) = start(
        "dropbox",
        "methods = [\"PUT\", \"POST\"]\nverify = { provider = \"dropbox\", secrets = [\"literal:dropbox-app-secret\"] }\nhandshake = true",
    );
    let other = get(gateway.proxy, "/dropbox?x=1").unwrap();
    other.expect_status(405);
    assert_eq!(other.header("allow"), Some("POST, PUT"));
    let json = other.json();
    assert_eq!(json["error"], "method_not_allowed");
    assert_eq!(json["route"], "dropbox");
    let answered = get(gateway.proxy, "/dropbox?challenge=abc123").unwrap();
    assert_answered(
        &gateway,
        &app,
        &answered,
        "text/plain",
        b"abc123",
        "dropbox",
        "dropbox",
    );
    assert_eq!(app.count(), 0);
}

#[test]
fn x_crc_answers_the_response_token() {
    let (gateway, app) = start(
        "x",
        &format!(
            "methods = [\"POST\"]\nverify = {{ scheme = \"hmac\", header = \"x-twitter-webhooks-signature\", encoding = \"base64\", prefix = \"sha256=\", secrets = [\"literal:{X_SECRET}\"] }}\nhandshake = \"x-crc\""
        ),
    );
    let token = base64::engine::general_purpose::STANDARD
        .encode(hmac_sha256(X_SECRET.as_bytes(), &[X_TOKEN.as_bytes()]));
    assert_eq!(token, "Cytd4Sq+NvEcV3MMrXxWJGJx5A+y/lXzzU2Maartkx8=");
    let expected = format!("{{\"response_token\":\"sha256={token}\"}}");
    // Guards `Handshake::x_crc` (src/handshake.rs).
    let answered = get(gateway.proxy, &format!("/x?crc_token={X_TOKEN}")).unwrap();
    assert_answered(
        &gateway,
        &app,
        &answered,
        "application/json",
        expected.as_bytes(),
        "x",
        "x-crc",
    );
}

#[test]
fn microsoft_graph_validation_token_is_echoed_decoded() {
    let (gateway, app) = start("graph", "handshake = \"microsoft-graph\"");
    // https://learn.microsoft.com/en-us/graph/change-notifications-delivery-webhooks#notificationurl-validation
    let target = "/graph?validationToken=Validation%3a+Testing+client+application+reachability+for+subscription+Request-Id%3a+3b3f9821-ce3f-4b5e-b6b4-9fa2e1f0c8e3";
    // Guards the `Kind::MicrosoftGraph` arm of `Handshake::unsigned` (src/handshake.rs).
    let answered = send(
        &gateway,
        target,
        &[("Content-Type".to_string(), "text/plain".to_string())],
        b"",
    );
    assert_answered(
        &gateway,
        &app,
        &answered,
        "text/plain",
        b"Validation: Testing client application reachability for subscription Request-Id: 3b3f9821-ce3f-4b5e-b6b4-9fa2e1f0c8e3",
        "graph",
        "microsoft-graph",
    );
    // A notification (no validationToken) goes to the app.
    send(&gateway, "/graph", &[], br#"{"value":[]}"#).expect_status(200);
    assert!(wait_until(std::time::Duration::from_secs(5), || app
        .count()
        == 1));
}

#[test]
fn asana_secret_is_kept_and_verifies_what_follows() {
    let (gateway, app) = start(
        "asana",
        "handshake = { kind = \"asana\", secret_file = \"asana.secret\" }",
    );
    let kept = gateway.dir.path().join("asana.secret");
    let body = br#"{"events":[{"action":"changed"}]}"#;
    let signature = hex::encode(hmac_sha256(ASANA.as_bytes(), &[body]));
    let delivery = [("X-Hook-Signature".to_string(), signature)];
    // Before the handshake nothing verifies (the route fails closed).
    send(&gateway, "/asana", &delivery, body).expect_status(401);
    // https://developers.asana.com/reference/createwebhook: 200 with X-Hook-Secret echoed.
    // Guards `AsanaSecret::offer` and the answer's header (src/handshake.rs).
    let answered = send(
        &gateway,
        "/asana",
        &[("X-Hook-Secret".to_string(), ASANA.to_string())],
        b"",
    );
    answered.expect_status(200);
    assert_eq!(answered.header("x-hook-secret"), Some(ASANA));
    assert!(answered.body.is_empty());
    assert_eq!(app.count(), 0);
    assert_eq!(
        std::fs::read_to_string(&kept).unwrap(),
        format!("{ASANA}\n")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // Another secret cannot replace it. Guards the held check in `AsanaSecret::offer`.
    let replaced = send(
        &gateway,
        "/asana",
        &[("X-Hook-Secret".to_string(), "f00d".repeat(16))],
        b"",
    );
    replaced.expect_status(409);
    assert_eq!(replaced.json()["error"], "handshake_secret_held");
    // Guards the handed-over verifier in `verify_and_admit` (src/proxy/mod.rs).
    forwarded_once(&gateway, &app, "/asana", &delivery, body);
    let forged = [("X-Hook-Signature".to_string(), "00".repeat(32))];
    send(&gateway, "/asana", &forged, body).expect_status(401);
    assert_eq!(app.count(), 1);
    assert!(!gateway.log().contains(ASANA), "the secret is never logged");
}

fn config_error(route: &str) -> String {
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n[upstreams.app]\ntargets = [\"127.0.0.1:9\"]\n[[routes]]\nname = \"r\"\npath = \"/r\"\nupstream = \"app\"\n{route}\n"
    );
    match Config::from_toml(&text, Path::new("t.toml")) {
        Ok(_) => panic!("{route} was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn handshake_on_a_route_without_one_is_refused_naming_line_and_key() {
    // Guards the "no setup handshake" refusal in `plan` (src/config/handshake.rs).
    let e = config_error(
        "verify = { provider = \"github\", secrets = [\"literal:x\"] }\nhandshake = true",
    );
    assert!(e.contains("t.toml:11"), "{e}");
    assert!(e.contains("routes[0].handshake"), "{e}");
    assert!(e.contains("no setup handshake"), "{e}");
    let e = config_error("handshake = \"slak\"");
    assert!(
        e.contains("routes[0].handshake") && e.contains("unknown handshake kind"),
        "{e}"
    );
    let e = config_error(
        "verify = { provider = \"meta\", secrets = [\"literal:x\"] }\nhandshake = true",
    );
    assert!(e.contains("verify_token"), "{e}");
    let e = config_error("handshake = \"slack\"");
    assert!(e.contains("signs its handshake"), "{e}");
    let e = config_error("verify = { scheme = \"hmac\", header = \"X-Hook-Signature\", secrets = [\"literal:x\"] }\nhandshake = \"asana\"");
    assert!(e.contains("routes[0].verify.secrets"), "{e}");
}

#[test]
fn check_shows_the_handshake_of_each_route() {
    // Guards the `handshake {}` field of `Config::describe` (src/config/mod.rs).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n[upstreams.app]\ntargets = [\"127.0.0.1:9\"]\n[[routes]]\nname = \"d\"\npath = \"/d\"\nupstream = \"app\"\nhandshake = \"dropbox\"\n[[routes]]\nname = \"g\"\npath = \"/g\"\nupstream = \"app\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["check", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("handshake dropbox"), "{text}");
    assert!(text.contains("handshake off"), "{text}");
}

#[test]
fn asana_secret_is_kept_in_the_store_with_storage() {
    let app = Upstream::start("app");
    let setup = |max_body: &str| {
        Setup::new()
            .upstream(&app)
            .table("[storage]\npath = \"data\"")
            .route(
                "asana",
                "/asana",
                "app",
                &format!("handshake = \"asana\"\nmax_body = \"{max_body}\""),
            )
    };
    let gateway = setup("1MiB").start();
    let offer = |secret: &str| {
        send(
            &gateway,
            "/asana",
            &[("X-Hook-Secret".to_string(), secret.to_string())],
            b"",
        )
    };
    offer(ASANA).expect_status(200);
    // Guards `with_handshake_secrets` (src/server.rs, src/proxy/mod.rs): with `[storage]` the
    // secret goes to the store, not to a file beside the config.
    assert!(!gateway.dir.path().join("asana.hook-secret").exists());
    // A reload builds a new keeper, which holds nothing until it reads the store.
    gateway.rewrite(&setup("2MiB").rest());
    let reloaded = gateway.post_reload();
    assert_eq!(
        reloaded.status,
        200,
        "{}",
        String::from_utf8_lossy(&reloaded.body)
    );
    offer(&"f00d".repeat(16)).expect_status(409);
    let body = br#"{"events":[]}"#;
    let signature = hex::encode(hmac_sha256(ASANA.as_bytes(), &[body]));
    forwarded_once(
        &gateway,
        &app,
        "/asana",
        &[("X-Hook-Signature".to_string(), signature)],
        body,
    );
}

#[test]
fn handshake_false_is_the_same_as_no_key() {
    let text = "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n[upstreams.app]\ntargets = [\"127.0.0.1:9\"]\n[[routes]]\nname = \"r\"\npath = \"/r\"\nupstream = \"app\"\nverify = { provider = \"slack\", secrets = [\"literal:x\"] }\nhandshake = false\n";
    // Guards the `On(false)` arm of `plan` (src/config/handshake.rs).
    let config = Config::from_toml(text, Path::new("t.toml")).expect("loads");
    assert!(config.routes[0].handshake.is_none());
    let on = Config::from_toml(&text.replace("false", "true"), Path::new("t.toml")).expect("loads");
    assert_eq!(
        on.routes[0].handshake.as_ref().map(|h| h.kind().as_str()),
        Some("slack")
    );
}

fn forget_handshake(gateway: &Gateway, route: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["forget-handshake", "--route", route, "-c"])
        .arg(&gateway.config_path)
        .output()
        .expect("run hookgate forget-handshake")
}

#[test]
fn a_forgotten_asana_secret_is_replaced_by_the_next_handshake() {
    let (gateway, app) = start("asana", "handshake = \"asana\"");
    let offer = |secret: &str| {
        send(
            &gateway,
            "/asana",
            &[("X-Hook-Secret".to_string(), secret.to_string())],
            b"",
        )
    };
    let second = "f00d".repeat(16);
    offer(ASANA).expect_status(200);
    offer(&second).expect_status(409);
    // Guards `forget` (src/handshake.rs) and the read-again in `AsanaSecret::offer`: the
    // running gateway takes a new secret once the operator removed the kept one.
    let out = forget_handshake(&gateway, "asana");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("removed"),
        "{out:?}"
    );
    assert!(!gateway.dir.path().join("asana.hook-secret").exists());
    offer(&second).expect_status(200);
    let body = br#"{"events":[]}"#;
    let signed = |secret: &str| {
        [(
            "X-Hook-Signature".to_string(),
            hex::encode(hmac_sha256(secret.as_bytes(), &[body])),
        )]
    };
    send(&gateway, "/asana", &signed(ASANA), body).expect_status(401);
    send(&gateway, "/asana", &signed(&second), body).expect_status(200);
    assert!(wait_until(std::time::Duration::from_secs(5), || app
        .count()
        == 1));
    // A route without an Asana handshake is named as such.
    let out = forget_handshake(&gateway, "nope");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no route named"),
        "{out:?}"
    );
}

/// README: "A GET handshake reaches a route limited to other methods", and a
/// 405's `Allow` treats the routes of one host and path as one target. With
/// two routes on one path, the GET handshake was answered only when the
/// handshake route came first in the file: `RouteTable::find` reports the
/// first route that refused the method, and `steps` only looks at that one
/// for a GET handshake, so a `PUT` route listed first made the Dropbox
/// challenge a 405. Guards the GET-handshake lookup over the whole group.
#[test]
fn a_get_handshake_is_answered_whatever_the_order_of_the_routes_on_its_path() {
    let app = Upstream::start("app");
    let gateway = Setup::new()
        .upstream(&app)
        .route("puts", "/dropbox", "app", "methods = [\"PUT\"]")
        .route(
            "dropbox",
            "/dropbox",
            "app",
            "methods = [\"POST\"]\nverify = { provider = \"dropbox\", secrets = [\"literal:dropbox-app-secret\"] }\nhandshake = true",
        )
        .start();
    let answered = get(gateway.proxy, "/dropbox?challenge=abc123").unwrap();
    assert_answered(
        &gateway,
        &app,
        &answered,
        "text/plain",
        b"abc123",
        "dropbox",
        "dropbox",
    );
    let other = get(gateway.proxy, "/dropbox?x=1").unwrap();
    other.expect_status(405);
    assert_eq!(other.header("allow"), Some("POST, PUT"));
    assert_eq!(app.count(), 0);
}

/// README: "any other GET there is still 405", and a 405 goes to a client that
/// one route of the host and path lets in. A GET to a path whose handshake
/// route denies the client, from a client another route there allows, was
/// handed to the handshake route and got its 403; it is no handshake for that
/// client and gets the 405 with `Allow`. A client no route allows still gets
/// 403 (`a_405_tells_its_methods_only_to_a_client_a_route_of_the_target_lets_in`).
#[test]
fn a_get_from_a_client_only_another_route_allows_is_405_not_the_handshake_routes_403() {
    let app = Upstream::start("app");
    let gateway = Setup::new()
        .upstream(&app)
        .route(
            "dropbox",
            "/dropbox",
            "app",
            "methods = [\"POST\"]\nallow = [\"10.0.0.0/8\"]\nverify = { provider = \"dropbox\", secrets = [\"literal:dropbox-app-secret\"] }\nhandshake = true",
        )
        .route("puts", "/dropbox", "app", "methods = [\"PUT\"]")
        .start();
    let answer = get(gateway.proxy, "/dropbox?challenge=abc123").unwrap();
    answer.expect_status(405);
    assert_eq!(answer.header("allow"), Some("POST, PUT"));
    assert_eq!(answer.json()["error"], "method_not_allowed");
    assert_eq!(app.count(), 0);
}
