//! Signature verification end to end, for every scheme, through the real gateway.
//!
//! Deliveries are signed here by an independent implementation written from the
//! providers' documentation (plain `hmac`/`sha2`/`sha1`/`ed25519-dalek` calls), not
//! by hookgate's own `sign`. For each scheme: a delivery signed with either of two
//! secrets (rotation) reaches the upstream byte-identical; a tampered body, a wrong
//! secret, a stale and a future timestamp, a missing and a malformed header each get
//! 401 with the right `error`, and the upstream receives nothing.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::*;
use ed25519_dalek::{Signer, SigningKey};
use hmac::{Hmac, Mac};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const PUBLIC_URL: &str = "https://hooks.example.com";
const OLD: &str = "old-secret-0123456789";
const NEW: &str = "new-secret-9876543210";
const WRONG: &str = "wrong-secret-5555555555";
/// Standard Webhooks keys: whsec_ + base64 of random bytes.
const SW_OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_NEW: &str = "whsec_dGhpcyBpcyBhIHRlc3Qga2V5IGZvciBob29rZ2F0ZQ==";
const SW_WRONG: &str = "whsec_d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXkh";

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).unwrap();
    parts.iter().for_each(|p| mac.update(p));
    mac.finalize().into_bytes().to_vec()
}

fn sw_key(secret: &str) -> Vec<u8> {
    B64.decode(secret.trim_start_matches("whsec_")).unwrap()
}

fn discord_key(secret: &str) -> SigningKey {
    let digest: [u8; 32] = hmac_sha256(b"discord-test-key", &[secret.as_bytes()])
        .try_into()
        .unwrap();
    SigningKey::from_bytes(&digest)
}

type Headers = Vec<(String, String)>;
/// Signs a delivery of `body` with `secret` at unix time `ts` for `path`.
type SignFn = fn(secret: &str, body: &[u8], ts: i64, path: &str) -> Headers;

/// A delivery the gateway must refuse: what it is, its headers and body, the expected `error`.
struct Refusal<'a> {
    what: &'a str,
    headers: Headers,
    body: Vec<u8>,
    error: &'a str,
}

/// How one scheme signs, independently of hookgate.
struct Scheme {
    route: &'static str,
    /// The `verify = { ... }` table (secrets filled in by the test).
    verify: String,
    /// Secrets as configured: [old, new], and one that is wrong.
    secrets: [&'static str; 3],
    /// The header whose absence is "missing" and whose garbling is "malformed".
    signature_header: &'static str,
    malformed: &'static str,
    timestamped: bool,
    /// Headers of a delivery of `body` signed with `secret` at unix time `ts`.
    sign: SignFn,
    /// The body to send (Linear carries its timestamp inside).
    body: fn(ts: i64) -> Vec<u8>,
}

fn json_body(_: i64) -> Vec<u8> {
    b"{\"id\":\"evt_1\",\"type\":\"payment_intent.succeeded\",\"data\":{\"amount\":4200,\"note\":\"caf\xc3\xa9 \\u00e9\"}}\n".to_vec()
}

fn hex_header(name: &str, value: String) -> Vec<(String, String)> {
    vec![(name.to_string(), value)]
}

fn schemes() -> Vec<Scheme> {
    let simple = |scheme: &str| format!("{{ scheme = \"{scheme}\", secrets = [SECRETS] }}");
    vec![
        Scheme {
            route: "github",
            verify: simple("github"),
            secrets: [OLD, NEW, WRONG],
            signature_header: "X-Hub-Signature-256",
            malformed: "sha256=not-hex",
            timestamped: false,
            sign: |s, body, _, _| hex_header("X-Hub-Signature-256", format!("sha256={}", hex::encode(hmac_sha256(s.as_bytes(), &[body])))),
            body: json_body,
        },
        Scheme {
            route: "gitlab",
            verify: simple("gitlab"),
            secrets: [OLD, NEW, WRONG],
            signature_header: "X-Gitlab-Token",
            malformed: "",
            timestamped: false,
            sign: |s, _, _, _| hex_header("X-Gitlab-Token", s.to_string()),
            body: json_body,
        },
        Scheme {
            route: "stripe",
            verify: simple("stripe"),
            secrets: ["whsec_old0123456789", "whsec_new9876543210", "whsec_wrong555555"],
            signature_header: "Stripe-Signature",
            malformed: "t=abc,v1=zz",
            timestamped: true,
            sign: |s, body, ts, _| {
                let mac = hmac_sha256(s.as_bytes(), &[ts.to_string().as_bytes(), b".", body]);
                hex_header("Stripe-Signature", format!("t={ts},v1={}", hex::encode(mac)))
            },
            body: json_body,
        },
        Scheme {
            route: "slack",
            verify: simple("slack"),
            secrets: [OLD, NEW, WRONG],
            signature_header: "X-Slack-Signature",
            malformed: "v1=abcdef",
            timestamped: true,
            sign: |s, body, ts, _| {
                let mac = hmac_sha256(s.as_bytes(), &[format!("v0:{ts}:").as_bytes(), body]);
                vec![
                    ("X-Slack-Request-Timestamp".into(), ts.to_string()),
                    ("X-Slack-Signature".into(), format!("v0={}", hex::encode(mac))),
                ]
            },
            body: |_| b"payload=%7B%22type%22%3A%22block_actions%22%7D".to_vec(),
        },
        Scheme {
            route: "shopify",
            verify: simple("shopify"),
            secrets: [OLD, NEW, WRONG],
            signature_header: "X-Shopify-Hmac-Sha256",
            malformed: "%%%not-base64%%%",
            timestamped: false,
            sign: |s, body, _, _| hex_header("X-Shopify-Hmac-Sha256", B64.encode(hmac_sha256(s.as_bytes(), &[body]))),
            body: json_body,
        },
        Scheme {
            route: "standard-webhooks",
            verify: simple("standard-webhooks"),
            secrets: [SW_OLD, SW_NEW, SW_WRONG],
            signature_header: "webhook-signature",
            malformed: "v1,%%%",
            timestamped: true,
            sign: |s, body, ts, _| {
                let id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";
                let mac = hmac_sha256(&sw_key(s), &[format!("{id}.{ts}.").as_bytes(), body]);
                vec![
                    ("webhook-id".into(), id.into()),
                    ("webhook-timestamp".into(), ts.to_string()),
                    ("webhook-signature".into(), format!("v1,{}", B64.encode(mac))),
                ]
            },
            body: json_body,
        },
        Scheme {
            route: "svix",
            verify: simple("svix"),
            secrets: [SW_OLD, SW_NEW, SW_WRONG],
            signature_header: "svix-signature",
            malformed: "v1,%%%",
            timestamped: true,
            sign: |s, body, ts, _| {
                let id = "msg_svix_1";
                let mac = hmac_sha256(&sw_key(s), &[format!("{id}.{ts}.").as_bytes(), body]);
                vec![
                    ("svix-id".into(), id.into()),
                    ("svix-timestamp".into(), ts.to_string()),
                    ("svix-signature".into(), format!("v1,{}", B64.encode(mac))),
                ]
            },
            body: json_body,
        },
        Scheme {
            route: "twilio",
            verify: format!("{{ scheme = \"twilio\", secrets = [SECRETS], public_url = \"{PUBLIC_URL}\" }}"),
            secrets: [OLD, NEW, WRONG],
            signature_header: "X-Twilio-Signature",
            malformed: "%%%",
            timestamped: false,
            sign: |s, _, _, path| {
                // Params decoded and sorted by name: Body, CallSid, From.
                let signed = format!("{PUBLIC_URL}{path}Bodyhello worldCallSidCA123From+15551234567");
                hex_header("X-Twilio-Signature", B64.encode(hmac_sha1(s.as_bytes(), &[signed.as_bytes()])))
            },
            body: |_| b"CallSid=CA123&From=%2B15551234567&Body=hello+world".to_vec(),
        },
        Scheme {
            route: "zoom",
            verify: simple("zoom"),
            secrets: [OLD, NEW, WRONG],
            signature_header: "x-zm-signature",
            malformed: "v0=xyz",
            timestamped: true,
            sign: |s, body, ts, _| {
                let mac = hmac_sha256(s.as_bytes(), &[format!("v0:{ts}:").as_bytes(), body]);
                vec![
                    ("x-zm-request-timestamp".into(), ts.to_string()),
                    ("x-zm-signature".into(), format!("v0={}", hex::encode(mac))),
                ]
            },
            body: json_body,
        },
        Scheme {
            route: "twitch",
            verify: simple("twitch"),
            secrets: [OLD, NEW, WRONG],
            signature_header: "Twitch-Eventsub-Message-Signature",
            malformed: "sha256=",
            timestamped: true,
            sign: |s, body, ts, _| {
                let id = "e76c6bd4-55c9-4987-8304-da1588d8988b";
                let at = UNIX_EPOCH + Duration::from_secs(ts as u64) + Duration::from_nanos(123_456_789);
                let stamp = humantime::format_rfc3339_nanos(at).to_string();
                let mac = hmac_sha256(s.as_bytes(), &[id.as_bytes(), stamp.as_bytes(), body]);
                vec![
                    ("Twitch-Eventsub-Message-Id".into(), id.into()),
                    ("Twitch-Eventsub-Message-Timestamp".into(), stamp),
                    ("Twitch-Eventsub-Message-Signature".into(), format!("sha256={}", hex::encode(mac))),
                ]
            },
            body: json_body,
        },
        Scheme {
            route: "discord",
            verify: "{ scheme = \"discord\", public_key = \"PUBLIC_KEY\" }".to_string(),
            secrets: ["discord-app", "discord-app", "impostor-app"],
            signature_header: "X-Signature-Ed25519",
            malformed: "abcd",
            timestamped: true,
            sign: |s, body, ts, _| {
                let mut message = ts.to_string().into_bytes();
                message.extend_from_slice(body);
                vec![
                    ("X-Signature-Timestamp".into(), ts.to_string()),
                    ("X-Signature-Ed25519".into(), hex::encode(discord_key(s).sign(&message).to_bytes())),
                ]
            },
            body: |_| b"{\"type\":1}".to_vec(),
        },
        Scheme {
            route: "hubspot",
            verify: format!("{{ scheme = \"hubspot\", secrets = [SECRETS], public_url = \"{PUBLIC_URL}\" }}"),
            secrets: [OLD, NEW, WRONG],
            signature_header: "X-HubSpot-Signature-v3",
            malformed: "%%%",
            timestamped: true,
            sign: |s, body, ts, path| {
                let ms = (ts * 1000 + 250).to_string();
                let mac = hmac_sha256(s.as_bytes(), &[b"POST", PUBLIC_URL.as_bytes(), path.as_bytes(), body, ms.as_bytes()]);
                vec![
                    ("X-HubSpot-Request-Timestamp".into(), ms),
                    ("X-HubSpot-Signature-v3".into(), B64.encode(mac)),
                ]
            },
            body: json_body,
        },
        Scheme {
            route: "square",
            verify: format!("{{ scheme = \"square\", secrets = [SECRETS], public_url = \"{PUBLIC_URL}\" }}"),
            secrets: [OLD, NEW, WRONG],
            signature_header: "x-square-hmacsha256-signature",
            malformed: "%%%",
            timestamped: false,
            sign: |s, body, _, path| {
                let url = format!("{PUBLIC_URL}{path}");
                hex_header("x-square-hmacsha256-signature", B64.encode(hmac_sha256(s.as_bytes(), &[url.as_bytes(), body])))
            },
            body: json_body,
        },
        Scheme {
            route: "paddle",
            verify: simple("paddle"),
            secrets: ["pdl_ntfset_old_0123", "pdl_ntfset_new_9876", "pdl_ntfset_wrong_55"],
            signature_header: "Paddle-Signature",
            malformed: "ts=1;h1",
            timestamped: true,
            sign: |s, body, ts, _| {
                let mac = hmac_sha256(s.as_bytes(), &[format!("{ts}:").as_bytes(), body]);
                hex_header("Paddle-Signature", format!("ts={ts};h1={}", hex::encode(mac)))
            },
            body: json_body,
        },
        Scheme {
            route: "linear",
            verify: simple("linear"),
            secrets: [OLD, NEW, WRONG],
            signature_header: "Linear-Signature",
            malformed: "zz",
            timestamped: true,
            sign: |s, body, _, _| hex_header("Linear-Signature", hex::encode(hmac_sha256(s.as_bytes(), &[body]))),
            body: |ts| format!("{{\"action\":\"create\",\"type\":\"Issue\",\"webhookTimestamp\":{}}}", ts * 1000 + 17).into_bytes(),
        },
        Scheme {
            route: "token",
            verify: "{ scheme = \"token\", header = \"X-Webhook-Token\", secrets = [SECRETS] }".to_string(),
            secrets: [OLD, NEW, WRONG],
            signature_header: "X-Webhook-Token",
            malformed: "",
            timestamped: false,
            sign: |s, _, _, _| hex_header("X-Webhook-Token", s.to_string()),
            body: json_body,
        },
        Scheme {
            route: "bearer",
            verify: "{ scheme = \"token\", bearer = true, secrets = [SECRETS] }".to_string(),
            secrets: [OLD, NEW, WRONG],
            signature_header: "Authorization",
            malformed: "Basic dXNlcjpwYXNz",
            timestamped: false,
            sign: |s, _, _, _| hex_header("Authorization", format!("Bearer {s}")),
            body: json_body,
        },
        Scheme {
            route: "hmac",
            verify: "{ scheme = \"hmac\", algorithm = \"sha256\", header = \"X-Signature\", encoding = \"hex\", prefix = \"sha256=\", signed = \"{timestamp}.{body}\", timestamp_header = \"X-Timestamp\", tolerance = \"2m\", secrets = [SECRETS] }".to_string(),
            secrets: [OLD, NEW, WRONG],
            signature_header: "X-Signature",
            malformed: "md5=abc",
            timestamped: true,
            sign: |s, body, ts, _| {
                let mac = hmac_sha256(s.as_bytes(), &[format!("{ts}.").as_bytes(), body]);
                vec![
                    ("X-Timestamp".into(), ts.to_string()),
                    ("X-Signature".into(), format!("sha256={}", hex::encode(mac))),
                ]
            },
            body: json_body,
        },
    ]
}

fn config(schemes: &[Scheme], upstream: &Upstream) -> String {
    let mut text = format!("[upstreams.app]\ntargets = [\"{}\"]\n", upstream.addr);
    for scheme in schemes {
        let secrets = format!(
            "\"literal:{}\", \"literal:{}\"",
            scheme.secrets[0], scheme.secrets[1]
        );
        let public_key = hex::encode(discord_key(scheme.secrets[0]).verifying_key().to_bytes());
        let verify = scheme
            .verify
            .replace("SECRETS", &secrets)
            .replace("PUBLIC_KEY", &public_key);
        text.push_str(&format!(
            "\n[[routes]]\nname = \"{0}\"\npath = \"/hooks/{0}\"\nupstream = \"app\"\nverify = {verify}\n",
            scheme.route
        ));
    }
    text
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn send(gateway: &Gateway, path: &str, headers: &[(String, String)], body: &[u8]) -> Response {
    let borrowed: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    post(gateway.proxy, path, &borrowed, body)
}

#[test]
fn every_scheme_forwards_valid_deliveries_and_refuses_the_rest() {
    // Guards `Verifier::verify` in `Gateway::handle` for every scheme, and the
    // signature-failure counter beside it: skipping verification forwards the forgeries.

    let upstream = Upstream::start("app");
    let schemes = schemes();
    let gateway = Gateway::start(&config(&schemes, &upstream));
    let mut expected_forwards = 0;
    for scheme in &schemes {
        let route = scheme.route;
        let path = format!("/hooks/{route}");
        let ts = now();
        let body = (scheme.body)(ts);
        let sign = |secret: &str, body: &[u8], ts: i64| (scheme.sign)(secret, body, ts, &path);

        // Valid, with the second (new) and the first (old) secret.
        for secret in [scheme.secrets[1], scheme.secrets[0]] {
            let answered = send(&gateway, &path, &sign(secret, &body, ts), &body);
            assert_eq!(
                answered.status,
                200,
                "{route}: valid delivery refused: {}",
                String::from_utf8_lossy(&answered.body)
            );
            expected_forwards += 1;
            let received = upstream.received();
            let last = received.last().unwrap();
            assert_eq!(last.target, path, "{route}");
            assert!(last.body == body, "{route}: body not byte-identical");
        }

        let mut refusals: Vec<Refusal> = Vec::new();
        let mut refuse = |what, headers, body, error| {
            refusals.push(Refusal {
                what,
                headers,
                body,
                error,
            })
        };
        let mut tampered = body.clone();
        let last = tampered.len() - 2;
        tampered[last] ^= 0x01;
        if !matches!(route, "gitlab" | "token" | "bearer") {
            refuse(
                "tampered body",
                sign(scheme.secrets[1], &body, ts),
                tampered,
                "signature_invalid",
            );
        }
        refuse(
            "wrong secret",
            sign(scheme.secrets[2], &body, ts),
            body.clone(),
            "signature_invalid",
        );
        if scheme.timestamped {
            for (what, shifted) in [
                ("stale timestamp", ts - 3600),
                ("future timestamp", ts + 3600),
            ] {
                let shifted_body = (scheme.body)(shifted);
                refuse(
                    what,
                    sign(scheme.secrets[1], &shifted_body, shifted),
                    shifted_body,
                    "timestamp_out_of_range",
                );
            }
        }
        let without: Vec<(String, String)> = sign(scheme.secrets[1], &body, ts)
            .into_iter()
            .filter(|(name, _)| !name.eq_ignore_ascii_case(scheme.signature_header))
            .collect();
        refuse("missing header", without, body.clone(), "signature_missing");
        let garbled: Vec<(String, String)> = sign(scheme.secrets[1], &body, ts)
            .into_iter()
            .map(|(name, value)| {
                if name.eq_ignore_ascii_case(scheme.signature_header) {
                    (name, scheme.malformed.to_string())
                } else {
                    (name, value)
                }
            })
            .collect();
        let malformed_code = if scheme.malformed.is_empty() {
            "signature_missing"
        } else {
            "signature_invalid"
        };
        refuse("malformed header", garbled, body.clone(), malformed_code);

        let before = upstream.count();
        for Refusal {
            what,
            headers,
            body: sent_body,
            error,
        } in &refusals
        {
            let answered = send(&gateway, &path, headers, sent_body);
            assert_eq!(
                answered.status,
                401,
                "{route}: {what}: {}",
                String::from_utf8_lossy(&answered.body)
            );
            let json = answered.json();
            assert_eq!(json["error"], *error, "{route}: {what}");
            assert_eq!(json["route"], route, "{route}: {what}");
            let text = String::from_utf8_lossy(&answered.body);
            for secret in scheme.secrets {
                assert!(!text.contains(secret), "{route}: secret in the answer");
            }
        }
        assert_eq!(
            upstream.count(),
            before,
            "{route}: a refused delivery reached the upstream"
        );
        gateway.assert_metric(
            "hookgate_signature_failures_total",
            &[("route", route)],
            refusals.len() as f64,
        );
    }
    assert_eq!(upstream.count(), expected_forwards);
    let failures = gateway.metric_required("hookgate_signature_failures_total", &[]);
    gateway.assert_outcome("signature_invalid", failures);
    let log = gateway.log();
    for scheme in &schemes {
        for secret in scheme.secrets {
            assert!(!log.contains(secret), "secret {secret} appears in the log");
        }
    }
}

#[test]
fn hookgate_sign_produces_deliveries_the_gateway_accepts() {
    // Guards `sign::sign` (sign.rs) signing with the same wire rules the
    // verifiers read: a header name or timestamp format drifting apart turns it red.

    let upstream = Upstream::start("app");
    let schemes: Vec<Scheme> = schemes()
        .into_iter()
        .filter(|s| s.route != "discord")
        .collect();
    let gateway = Gateway::start(&config(&schemes, &upstream));
    let sign = |route: &str, url: &str| {
        std::process::Command::new(BIN)
            .args([
                "sign",
                "-c",
                gateway.config_path.to_str().unwrap(),
                "--route",
                route,
                "--url",
                url,
            ])
            .output()
            .unwrap()
    };
    for scheme in &schemes {
        let route = scheme.route;
        let mut url = format!("http://{}/hooks/{route}", gateway.proxy);
        let body = hookgate::sign::SAMPLE_BODY.as_bytes();
        if route == "twilio" {
            // Twilio signs JSON bodies through a bodySHA256 query parameter; sign says so.
            let refused = sign(route, &url);
            assert_eq!(refused.status.code(), Some(64));
            assert!(String::from_utf8_lossy(&refused.stderr).contains("bodySHA256="));
            url.push_str(&format!(
                "?bodySHA256={}",
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body))
            ));
        }
        let output = sign(route, &url);
        assert!(
            output.status.success(),
            "{route}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert!(stdout.contains("curl -i -X POST"), "{stdout}");
        let headers: Vec<(String, String)> = stdout
            .lines()
            .skip_while(|line| line.starts_with('#'))
            .take_while(|line| !line.is_empty())
            .filter_map(|line| {
                line.split_once(": ")
                    .map(|(n, v)| (n.to_string(), v.to_string()))
            })
            .collect();
        let target = url
            .trim_start_matches(&format!("http://{}", gateway.proxy))
            .to_string();
        let answered = send(&gateway, &target, &headers, body);
        if route == "linear" {
            // Linear's freshness lives inside the signed body; the sample has none.
            assert_eq!(
                answered.status, 401,
                "linear sample without webhookTimestamp"
            );
        } else {
            assert_eq!(
                answered.status,
                200,
                "{route}: `hookgate sign` output refused: {}",
                String::from_utf8_lossy(&answered.body)
            );
            assert!(upstream.received().last().unwrap().body == body);
        }
    }
    // --event sets the provider's event header where the provider uses one.
    let with_event = std::process::Command::new(BIN)
        .args([
            "sign",
            "-c",
            gateway.config_path.to_str().unwrap(),
            "--route",
            "github",
            "--event",
            "pull_request",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&with_event.stdout).contains("X-GitHub-Event: pull_request"));
    let in_body = std::process::Command::new(BIN)
        .args([
            "sign",
            "-c",
            gateway.config_path.to_str().unwrap(),
            "--route",
            "stripe",
            "--event",
            "charge.succeeded",
        ])
        .output()
        .unwrap();
    assert_eq!(in_body.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&in_body.stderr).contains("carries the event type in the body"));

    let unknown = sign("no-such-route", "http://127.0.0.1:1/");
    assert_eq!(unknown.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no route named"));
}
