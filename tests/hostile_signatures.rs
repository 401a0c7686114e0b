//! Attacks on the new signature schemes and setup handshakes, end to end through the real
//! binary, each one a hole found by a hostile pass and closed: what the sender got, and that
//! the app (the recording upstream) received nothing it should not have.
//!
//! - Mailgun: the same signed token spelled with a JSON or form escape verified (the HMAC
//!   covers the decoded token) but was a new delivery id, so a captured delivery could be
//!   replayed past `dedupe = { key = "signed" }`, with any `event-data`.
//! - X CRC: the answer to `GET ?crc_token=T` is HMAC-SHA256(first secret, T), so anyone can
//!   have the gateway sign a chosen text: a delivery whose body is that text (on X's own
//!   scheme), or whose whole signed message is (Stripe's `{t}.{body}`, a JWS signing input).
//!
//! Requests are signed here with plain `hmac` calls, not by hookgate.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

const MAILGUN_KEY: &str = "key-mailgun-hostile-0123";

#[test]
fn mailgun_token_written_with_escapes_cannot_replay_past_dedupe() {
    let app = Upstream::start("app");
    let gateway = Setup::new()
        .upstream(&app)
        .route(
            "mailgun",
            "/hooks/mailgun",
            "app",
            &format!(
                "verify = {{ provider = \"mailgun\", secrets = [\"literal:{MAILGUN_KEY}\"] }}\ndedupe = {{ key = \"signed\" }}"
            ),
        )
        .start();
    let ts = now().to_string();
    let token = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5";
    let signature = hex::encode(hmac_sha256(
        MAILGUN_KEY.as_bytes(),
        format!("{ts}{token}").as_bytes(),
    ));
    let json = [("Content-Type", "application/json")];
    let body = |token_as_written: &str, event: &str| {
        format!(
            r#"{{"signature":{{"timestamp":"{ts}","token":"{token_as_written}","signature":"{signature}"}},"event-data":{{"event":"{event}"}}}}"#
        )
        .into_bytes()
    };
    let original = body(token, "delivered");
    post(gateway.proxy, "/hooks/mailgun", &json, &original).expect_status(200);
    let replay = post(gateway.proxy, "/hooks/mailgun", &json, &original);
    assert_eq!(replay.expect_status(200).json()["status"], "duplicate");
    assert_eq!(app.count(), 1);

    // The replay with one character of the token as a JSON escape, and the event changed
    // (Mailgun does not sign event-data). Guards `let Text(Cow::Borrowed(token)) = token
    // else` in src/verify/mailgun.rs: without it this is forwarded as a new delivery.
    let escaped = body(&format!("\\u0061{}", &token[1..]), "failed");
    let answer = post(gateway.proxy, "/hooks/mailgun", &json, &escaped);
    assert_eq!(
        answer.status,
        401,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.json()["error"], "signature_invalid");
    assert_eq!(answer.json()["route"], "mailgun");

    // The legacy form body, replayed with the token's first character percent-encoded.
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let form_token = "f".repeat(50);
    let form_signature = hex::encode(hmac_sha256(
        MAILGUN_KEY.as_bytes(),
        format!("{ts}{form_token}").as_bytes(),
    ));
    let form_body = |token_as_written: &str| {
        format!(
            "timestamp={ts}&token={token_as_written}&signature={form_signature}&event=delivered"
        )
    };
    post(
        gateway.proxy,
        "/hooks/mailgun",
        &form,
        form_body(&form_token).as_bytes(),
    )
    .expect_status(200);
    let answer = post(
        gateway.proxy,
        "/hooks/mailgun",
        &form,
        form_body(&format!("%66{}", &form_token[1..])).as_bytes(),
    );
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json()["error"], "signature_invalid");

    let received = app.received();
    assert_eq!(received.len(), 2, "a replay was forwarded");
    assert_eq!(received[0].body, original);
    assert_eq!(received[1].body, form_body(&form_token).into_bytes());
}
