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

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::*;

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
    let ts = now_secs().to_string();
    let token = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5";
    let signature = hex::encode(hmac_sha256(
        MAILGUN_KEY.as_bytes(),
        &[ts.as_bytes(), token.as_bytes()],
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
        &[ts.as_bytes(), form_token.as_bytes()],
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

const X_SECRET: &str = "x-consumer-secret-hostile-0123";

#[test]
fn x_crc_answer_cannot_sign_a_delivery() {
    let app = Upstream::start("app");
    let gateway = Setup::new()
        .upstream(&app)
        .route(
            "x",
            "/hooks/x",
            "app",
            &format!(
                "verify = {{ scheme = \"hmac\", header = \"x-twitter-webhooks-signature\", encoding = \"base64\", prefix = \"sha256=\", secrets = [\"literal:{X_SECRET}\"] }}\nhandshake = \"x-crc\""
            ),
        )
        .start();
    // Anyone may ask for the CRC answer of a text of their choosing ...
    let asked = get(gateway.proxy, "/hooks/x?crc_token=action=delete").unwrap();
    assert_eq!(asked.status, 200);
    let signature = asked.json()["response_token"]
        .as_str()
        .expect("response_token")
        .to_string();
    assert_eq!(
        signature,
        format!(
            "sha256={}",
            STANDARD.encode(hmac_sha256(X_SECRET.as_bytes(), &[b"action=delete"]))
        )
    );
    // ... which is X's signature of a delivery with that body. Guards the `Kind::XCrc` arm
    // of `Handshake::signed` (src/handshake.rs): without it this forgery is forwarded.
    let forged = post(
        gateway.proxy,
        "/hooks/x",
        &[("x-twitter-webhooks-signature", signature.as_str())],
        b"action=delete",
    );
    assert_eq!(
        forged.status,
        400,
        "{}",
        String::from_utf8_lossy(&forged.body)
    );
    assert_eq!(forged.json()["error"], "bad_request");
    assert_eq!(forged.json()["route"], "x");
    assert_eq!(app.count(), 0, "a body the CRC answer signed was forwarded");

    // A real X delivery (JSON) still passes, byte for byte.
    let body = br#"{"for_user_id":"2244994945","tweet_create_events":[]}"#;
    let real = format!(
        "sha256={}",
        STANDARD.encode(hmac_sha256(X_SECRET.as_bytes(), &[body]))
    );
    post(
        gateway.proxy,
        "/hooks/x",
        &[
            ("x-twitter-webhooks-signature", real.as_str()),
            ("Content-Type", "application/json"),
        ],
        body,
    )
    .expect_status(200);
    let received = app.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body, body);
}

/// `hookgate check` on a one-route config: its exit status and what it printed.
fn check(route: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.toml");
    std::fs::write(
        &path,
        format!("[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n[upstreams.app]\ntargets = [\"127.0.0.1:9\"]\n[[routes]]\nname = \"x\"\npath = \"/x\"\nupstream = \"app\"\n{route}\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["check", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn x_crc_is_refused_on_routes_whose_signature_covers_more_than_the_body() {
    // On a Stripe route the CRC answer for "{t}.{body}" is Stripe's v1 (base64 instead of
    // hex): a forged delivery with a fresh timestamp and any body. On an HS256 JWT route the
    // answer for a JWS signing input is the token's signature. Guards the
    // `signs_the_body_alone` check in `plan` (src/config/handshake.rs).
    for verify in [
        "verify = { scheme = \"stripe\", secrets = [\"literal:whsec_x\"] }",
        "verify = { scheme = \"jwt\", algorithm = \"HS256\", header = \"X-Token\", secrets = [\"literal:x\"] }",
        "verify = { scheme = \"hmac\", header = \"X-Sig\", signed = \"{timestamp}.{body}\", timestamp_header = \"X-Ts\", secrets = [\"literal:x\"] }",
        "verify = { provider = \"github\", secrets = [\"literal:x\"] }",
    ] {
        let (ok, text) = check(&format!("{verify}\nhandshake = \"x-crc\""));
        assert!(!ok, "{verify} with x-crc was accepted:\n{text}");
        assert!(text.contains("routes[0].handshake"), "{text}");
        assert!(text.contains("X's own scheme"), "{text}");
    }
    let (ok, text) = check(
        "verify = { scheme = \"hmac\", header = \"x-twitter-webhooks-signature\", encoding = \"base64\", prefix = \"sha256=\", secrets = [\"literal:x\"] }\nhandshake = \"x-crc\"",
    );
    assert!(ok, "{text}");
}

/// `hookgate sign -c <the gateway's config> --route <route>`: success, stdout, stderr.
fn hookgate_sign(gateway: &Gateway, route: &str) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["sign", "-c", gateway.config_path.to_str().unwrap()])
        .args(["--route", route])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sign_on_an_asana_route_uses_the_handed_over_secret() {
    let app = Upstream::start("app");
    let gateway = Setup::new()
        .upstream(&app)
        .route("asana", "/hooks/asana", "app", "handshake = \"asana\"")
        .start();
    // Before the handshake there is no secret to sign with: say so rather than print a
    // signature under the route's random stand-in key.
    let (ok, _, stderr) = hookgate_sign(&gateway, "asana");
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("none is kept"), "{stderr}");

    let secret = "b537207f20cbfa02357cf448134da559e8bd39d61597dcd5631b8012eae53e81";
    let shake = post(
        gateway.proxy,
        "/hooks/asana",
        &[("X-Hook-Secret", secret)],
        b"",
    );
    assert_eq!(shake.status, 200);
    // Guards `asana_verifier` in src/sign.rs: signed with `route.verifier` (the stand-in),
    // the printed delivery is refused with 401.
    let (ok, stdout, stderr) = hookgate_sign(&gateway, "asana");
    assert!(ok, "{stderr}");
    let headers: Vec<(&str, &str)> = stdout
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("curl "))
        .filter_map(|l| l.split_once(": "))
        .collect();
    let expected = hex::encode(hmac_sha256(
        secret.as_bytes(),
        &[hookgate::sign::SAMPLE_BODY.as_bytes()],
    ));
    assert!(
        headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("x-hook-signature") && *v == expected),
        "{stdout}"
    );
    let answer = post(
        gateway.proxy,
        "/hooks/asana",
        &headers,
        hookgate::sign::SAMPLE_BODY.as_bytes(),
    );
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let received = app.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body, hookgate::sign::SAMPLE_BODY.as_bytes());
}

#[test]
fn meta_handshake_as_the_readme_writes_it_on_the_shipped_meta_route() {
    // conf/examples/meta.toml verifies Meta with `scheme = "github"` (no provider row); the
    // README's `handshake = { verify_token = … }` added to it must mean Meta's handshake.
    // Guards `None if table.verify_token.is_some() => Kind::Meta` in `plan`
    // (src/config/handshake.rs): without it this config is refused and the gateway does not
    // start.
    let app = Upstream::start("app");
    let gateway = Setup::new()
        .upstream(&app)
        .route(
            "meta",
            "/webhooks/meta",
            "app",
            "verify = { scheme = \"github\", secrets = [\"literal:meta-app-secret-0123\"] }\nhandshake = { verify_token = \"literal:meatyhamhock\" }",
        )
        .start();
    let answered = get(
        gateway.proxy,
        "/webhooks/meta?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock",
    )
    .unwrap();
    assert_eq!(answered.status, 200);
    assert_eq!(answered.body, b"1158201444");
    let wrong = get(
        gateway.proxy,
        "/webhooks/meta?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=guessed",
    )
    .unwrap();
    assert_eq!(wrong.status, 403);
    assert_eq!(wrong.json()["error"], "handshake_refused");
    assert_eq!(app.count(), 0, "a handshake was forwarded");
}
/// A 1024-bit RSA public key (SubjectPublicKeyInfo), made for this test (Python `cryptography`).
const RSA_1024_PEM: &str = "-----BEGIN PUBLIC KEY-----\nMIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDOj5PoVfA3/o8MyECirvofDUFI\nBkQIh6VK4Mg8Blj8gENgrbrzcsYQuJ67D/xR2xQMs4ZbutDpQjZuHgx//FQARsz8\nwR0eAyu8JKJjZxqc/k1SuNUfN2/RRMFWNWnZ8LQnDnZnAFOZM0dK9iMdlSs/hNuU\n2p7ZMdY1r4Y8QbqhDwIDAQAB\n-----END PUBLIC KEY-----";
/// The same key as bare base64 DER.
const RSA_1024_DER: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDOj5PoVfA3/o8MyECirvofDUFIBkQIh6VK4Mg8Blj8gENgrbrzcsYQuJ67D/xR2xQMs4ZbutDpQjZuHgx//FQARsz8wR0eAyu8JKJjZxqc/k1SuNUfN2/RRMFWNWnZ8LQnDnZnAFOZM0dK9iMdlSs/hNuU2p7ZMdY1r4Y8QbqhDwIDAQAB";
/// A 2048-bit RSA public key (PKCS#1), made for this test.
const RSA_2048_PKCS1: &str = "-----BEGIN RSA PUBLIC KEY-----\nMIIBCgKCAQEAnrippaN6GUepJNnA3QXpAo362f2dbcEwDqpu9QNzPaqAIw36qbCt\nhnczzb5/bJIlKBDRgeyYx/hfikUDsvzLDiNTpUA3DXYMr7L3ZRJXj3AI47l4MZAo\ngF8f8Jhjcd3FMIas1TUOAYHT5JJgs+wvqtCKveHhaWJreVjvZW/qAWUvPupMoUi6\nW7DTXUXb9dwXzbyOvF4uvdLpvTy5Jy/sXLMoHZ8AXTAe0Ax02Krk6cvkmjLPniO8\niMU6Vi4WlubCmRU8AGD2oj/nAjKnNnYx7v8EfrU1G4HYCT/mFQQbU2VmNXX4MMj2\nB+JT5hUGNKviXQxy/zmyXQ0T/stpPCbnDQIDAQAB\n-----END RSA PUBLIC KEY-----";

#[test]
fn rsa_keys_under_2048_bits_are_refused_in_every_form() {
    // The README says RSA keys under 2048 bits are refused; only JWKs were. Guards the
    // `at_least_2048` calls in `rs256_key` (src/verify/keys.rs): without them the PEM and
    // DER forms of the 1024-bit key load.
    let route = |key: &str| {
        format!("verify = {{ scheme = \"jwt\", algorithm = \"RS256\", header = \"X-Token\", public_key = '''{key}''' }}")
    };
    for key in [RSA_1024_PEM, RSA_1024_DER] {
        let (ok, text) = check(&route(key));
        assert!(!ok, "a 1024-bit key was accepted:\n{text}");
        assert!(text.contains("routes[0].verify.public_key"), "{text}");
        assert!(text.contains("1024-bit RSA key"), "{text}");
    }
    let (ok, text) = check(&route(RSA_2048_PKCS1));
    assert!(ok, "{text}");
}
