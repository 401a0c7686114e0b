//! The asymmetric, token and in-body schemes end to end through the real binary: SendGrid's
//! ECDSA P-256 Event Webhook (`ecdsa`), Netlify's HS256 JWT with a body-hash claim (`jwt`) and
//! Mailgun's signature inside the body (`mailgun`), each as `provider = "..."` routes.
//!
//! Deliveries are signed here independently of hookgate's verifiers: ECDSA with `p256`'s
//! signing key, the JWS assembled by hand with `hmac`, Mailgun's HMAC by hand. For each: a
//! good delivery reaches the upstream byte for byte; a tampered one gets 401 with the fixed
//! JSON answer and the upstream receives nothing. Key files: relative to the config file, and
//! a rotated key file is read again on `POST /reload`.

mod common;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::*;
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use sha2::{Digest as _, Sha256};

const SG_SIG: &str = "X-Twilio-Email-Event-Webhook-Signature";
const SG_TS: &str = "X-Twilio-Email-Event-Webhook-Timestamp";

fn ec_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32].into()).unwrap()
}

/// SendGrid's headers for `body` at `ts`: base64 DER ECDSA over timestamp + body.
fn sendgrid_headers(key: &SigningKey, ts: u64, body: &[u8]) -> Vec<(String, String)> {
    let mut message = ts.to_string().into_bytes();
    message.extend_from_slice(body);
    let signature: Signature = key.sign(&message);
    vec![
        (
            SG_SIG.into(),
            STANDARD.encode(signature.to_der().as_bytes()),
        ),
        (SG_TS.into(), ts.to_string()),
        ("Content-Type".into(), "application/json".into()),
    ]
}

fn as_refs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

#[track_caller]
fn assert_refused(answer: &Response, route: &str, error: &str, app: &Upstream) {
    assert_eq!(
        answer.status,
        401,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.json()["error"], error);
    assert_eq!(answer.json()["route"], route);
    assert_eq!(app.count(), 0, "a refused delivery was forwarded");
}

#[test]
fn sendgrid_ecdsa_forwards_signed_bytes_and_refuses_tampering() {
    let key = ec_key(7);
    // SendGrid shows its key as base64 DER SubjectPublicKeyInfo: paste it as is.
    let public = STANDARD.encode(key.verifying_key().to_public_key_der().unwrap().as_bytes());
    let app = Upstream::start("app");
    let gateway = Setup::new()
        .upstream(&app)
        .route(
            "sendgrid",
            "/hooks/sendgrid",
            "app",
            &format!("verify = {{ provider = \"sendgrid\", public_key = \"{public}\" }}"),
        )
        .start();
    let body = br#"[{"email":"a@example.com","event":"delivered","sg_event_id":"e1"}]"#;
    let headers = sendgrid_headers(&key, now_secs(), body);
    let answer = post(gateway.proxy, "/hooks/sendgrid", &as_refs(&headers), body);
    assert_eq!(answer.status, 200, "{}", gateway.log());
    let received = app.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body, body);
    assert_eq!(received[0].header(SG_SIG), Some(headers[0].1.as_str()));

    // Guards `jsonwebtoken::crypto::verify(..)` in ecdsa.rs: with the match forced to true,
    // this tampered batch is forwarded.
    app.clear();
    let tampered = br#"[{"email":"a@example.com","event":"bounce","sg_event_id":"e1"}]"#;
    let answer = post(
        gateway.proxy,
        "/hooks/sendgrid",
        &as_refs(&headers),
        tampered,
    );
    assert_refused(&answer, "sendgrid", "signature_invalid", &app);

    let other_key = sendgrid_headers(&ec_key(8), now_secs(), body);
    let answer = post(gateway.proxy, "/hooks/sendgrid", &as_refs(&other_key), body);
    assert_refused(&answer, "sendgrid", "signature_invalid", &app);

    let stale = sendgrid_headers(&key, now_secs() - 3600, body);
    let answer = post(gateway.proxy, "/hooks/sendgrid", &as_refs(&stale), body);
    assert_refused(&answer, "sendgrid", "timestamp_out_of_range", &app);
    gateway.assert_requests("sendgrid", "signature_invalid", 3.0);
}

#[test]
fn key_files_are_relative_to_the_config_and_reread_on_reload() {
    let (old, new) = (ec_key(11), ec_key(12));
    let pem = |k: &SigningKey| k.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
    let app = Upstream::start("app");
    let route = |public_key: &str| {
        Setup::new().upstream(&app).route(
            "sendgrid",
            "/hooks/sendgrid",
            "app",
            &format!("verify = {{ provider = \"sendgrid\", public_key = \"{public_key}\" }}"),
        )
    };
    // The gateway's directory exists only once it runs: start with the key inline, then
    // move to a key file beside the config. Guards `reference.starts_with("file:")` in
    // `keys::text` (a `file:` key goes through the config's resolver, relative to the config
    // and recorded for reloads): without it the reference is read as key text and this
    // reload is refused.
    let gateway =
        route(&STANDARD.encode(old.verifying_key().to_public_key_der().unwrap().as_bytes()))
            .server("watch = false")
            .start();
    std::fs::create_dir_all(gateway.dir.path().join("keys")).unwrap();
    std::fs::write(gateway.dir.path().join("keys/sendgrid.pem"), pem(&old)).unwrap();
    gateway.rewrite(&route("file:keys/sendgrid.pem").rest());
    gateway.post_reload().expect_status(200);
    let body = br#"[{"event":"open"}]"#;
    let send = |key: &SigningKey| {
        let headers = sendgrid_headers(key, now_secs(), body);
        post(gateway.proxy, "/hooks/sendgrid", &as_refs(&headers), body).status
    };
    assert_eq!(send(&old), 200, "{}", gateway.log());
    assert_eq!(send(&new), 401);

    // SendGrid rotated its key: the same config text, a new file, read again on reload.
    std::fs::write(gateway.dir.path().join("keys/sendgrid.pem"), pem(&new)).unwrap();
    let reloaded = gateway.post_reload();
    reloaded.expect_status(200);
    assert_eq!(
        reloaded.json()["status"],
        "reloaded",
        "{:?}",
        reloaded.json()
    );
    assert_eq!(send(&new), 200, "{}", gateway.log());
    assert_eq!(send(&old), 401);

    // An unreadable key file is refused with the file and the key named; the old config stays.
    std::fs::remove_file(gateway.dir.path().join("keys/sendgrid.pem")).unwrap();
    let refused = gateway.post_reload();
    assert_eq!(refused.status, 422);
    let error = refused.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("verify.public_key") && error.contains("sendgrid.pem"),
        "{error}"
    );
    assert_eq!(send(&new), 200);
}

/// A compact JWS signed with HS256 over the given header and claims, assembled by hand.
fn hs256(secret: &str, header: &str, claims: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

#[test]
fn netlify_jwt_binds_the_body_and_pins_the_algorithm() {
    const SECRET: &str = "netlify-jws-secret-e2e";
    let app = Upstream::start("app");
    let gateway = Setup::new()
        .upstream(&app)
        .route(
            "netlify",
            "/hooks/netlify",
            "app",
            &format!("verify = {{ provider = \"netlify\", secrets = [\"literal:{SECRET}\"] }}"),
        )
        .start();
    let body = br#"{"id":"5ebc34bf","state":"ready","branch":"main"}"#;
    let claims = |body: &[u8]| {
        format!(
            r#"{{"iss":"netlify","sha256":"{}"}}"#,
            hex::encode(Sha256::digest(body))
        )
    };
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    let token = hs256(SECRET, header, &claims(body));
    let answer = post(
        gateway.proxy,
        "/hooks/netlify",
        &[("X-Webhook-Signature", &token)],
        body,
    );
    assert_eq!(answer.status, 200, "{}", gateway.log());
    let received = app.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body, body);
    assert_eq!(
        received[0].header("x-webhook-signature"),
        Some(token.as_str())
    );

    // A genuine token for another body. Guards the body-hash comparison in jwt.rs
    // (`actual.ct_eq(expected)`): without it this edited body is forwarded.
    app.clear();
    let edited = br#"{"id":"5ebc34bf","state":"error","branch":"main"}"#;
    let answer = post(
        gateway.proxy,
        "/hooks/netlify",
        &[("X-Webhook-Signature", &token)],
        edited,
    );
    assert_refused(&answer, "netlify", "signature_invalid", &app);

    // alg "none" with an empty signature, and a token under another secret.
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(claims(edited))
    );
    let wrong = hs256("another-secret", header, &claims(edited));
    for forged in [unsigned, wrong] {
        let answer = post(
            gateway.proxy,
            "/hooks/netlify",
            &[("X-Webhook-Signature", &forged)],
            edited,
        );
        assert_refused(&answer, "netlify", "signature_invalid", &app);
    }
    let answer = post(gateway.proxy, "/hooks/netlify", &[], body);
    assert_refused(&answer, "netlify", "signature_missing", &app);

    // `hookgate sign` makes an HS256 token over its sample body that the gateway accepts.
    let (headers, curl) = hookgate_sign(&gateway, "netlify");
    let sample = hookgate::sign::SAMPLE_BODY.as_bytes();
    let answer = post(gateway.proxy, "/hooks/netlify", &as_refs(&headers), sample);
    assert_eq!(answer.status, 200, "{curl}\n{}", gateway.log());
}

/// `hookgate sign --route ROUTE` against the gateway's config: (header lines, curl line).
fn hookgate_sign(gateway: &Gateway, route: &str) -> (Vec<(String, String)>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args([
            "sign",
            "-c",
            gateway.config_path.to_str().unwrap(),
            "--route",
            route,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let headers = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("curl "))
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let curl = text
        .lines()
        .find(|l| l.starts_with("curl "))
        .unwrap()
        .to_string();
    (headers, curl)
}

fn mailgun_body(key: &str, ts: u64, token: &str, event: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{ts}{token}").as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    format!(
        r#"{{"signature":{{"timestamp":"{ts}","token":"{token}","signature":"{signature}"}},"event-data":{{"event":"{event}"}}}}"#
    )
    .into_bytes()
}

#[test]
fn mailgun_signature_inside_the_body() {
    const KEY: &str = "key-mailgun-e2e-0123";
    let app = Upstream::start("app");
    let gateway = Setup::new()
        .upstream(&app)
        .route(
            "mailgun",
            "/hooks/mailgun",
            "app",
            &format!("verify = {{ provider = \"mailgun\", secrets = [\"literal:{KEY}\"] }}"),
        )
        .start();
    let json = [("Content-Type", "application/json")];
    let token = "4d8b2c0e9a7f6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b";
    let body = mailgun_body(KEY, now_secs(), token, "delivered");
    let answer = post(gateway.proxy, "/hooks/mailgun", &json, &body);
    assert_eq!(answer.status, 200, "{}", gateway.log());
    let received = app.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body, body);

    // Guards `sigs.matches(...)` in mailgun.rs: with the match forced to true, a body signed
    // under another key is forwarded.
    app.clear();
    let forged = mailgun_body("key-someone-else", now_secs(), token, "delivered");
    let answer = post(gateway.proxy, "/hooks/mailgun", &json, &forged);
    assert_refused(&answer, "mailgun", "signature_invalid", &app);

    // The signature block with the token changed, and a body with none at all.
    let swapped = String::from_utf8(body.clone())
        .unwrap()
        .replace(token, &token.replace('4', "5"));
    let answer = post(gateway.proxy, "/hooks/mailgun", &json, swapped.as_bytes());
    assert_refused(&answer, "mailgun", "signature_invalid", &app);
    let answer = post(
        gateway.proxy,
        "/hooks/mailgun",
        &json,
        br#"{"event-data":{"event":"delivered"}}"#,
    );
    assert_refused(&answer, "mailgun", "signature_missing", &app);
    let stale = mailgun_body(KEY, now_secs() - 3600, token, "delivered");
    let answer = post(gateway.proxy, "/hooks/mailgun", &json, &stale);
    assert_refused(&answer, "mailgun", "timestamp_out_of_range", &app);

    // `hookgate sign` puts the signature block into the body it prints (curl's inline data).
    // Guards the `verifier.sign_body(..)` branch in sign.rs: without it the sample is printed
    // unsigned.
    let (headers, curl) = hookgate_sign(&gateway, "mailgun");
    let signed = curl
        .split_once("--data-binary '")
        .and_then(|(_, rest)| rest.strip_suffix('\''))
        .expect("inline body");
    assert!(signed.contains("\"signature\":{"), "{curl}");
    let answer = post(
        gateway.proxy,
        "/hooks/mailgun",
        &as_refs(&headers),
        signed.as_bytes(),
    );
    assert_eq!(answer.status, 200, "{curl}\n{}", gateway.log());
    assert_eq!(app.received()[0].body, signed.as_bytes());
}
