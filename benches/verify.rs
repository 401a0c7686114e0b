//! Verification cost per scheme at 1 KiB and 1 MiB bodies, next to a raw HMAC-SHA256 over the
//! same bytes (the `hmac` + `sha2` crates, key schedule included), so throughput can be read
//! as MB/s and as a ratio to raw.
//!
//! Every case is signed with `Verifier::sign` (Discord with a test Ed25519 key) and checked to
//! verify before it is measured. Short measurement windows keep the whole run to about two
//! minutes on two cores: `cargo bench --bench verify`.

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ed25519_dalek::{Signer, SigningKey};
use hmac::{Hmac, Mac};
use hookgate::secret::Secret;
use hookgate::verify::{Request, Verifier, VerifySpec};
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

const NOW: u64 = 1_700_000_000;
const KEY: &[u8] = b"bench-secret-0123456789abcdef";

struct Case {
    name: &'static str,
    verifier: Verifier,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Case {
    fn request(&self) -> Request<'_> {
        Request {
            method: "POST",
            path_and_query: &self.path,
            headers: &self.headers,
            body: &self.body,
        }
    }
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

/// A JSON body of exactly `size` bytes (Linear needs its webhookTimestamp in it).
fn json_body(size: usize) -> Vec<u8> {
    let head = format!("{{\"webhookTimestamp\":{},\"data\":\"", NOW * 1000);
    let fill = size.saturating_sub(head.len() + 2);
    let mut body = head.into_bytes();
    body.extend(std::iter::repeat_n(b'a', fill));
    body.extend(b"\"}");
    body
}

fn compile(spec_toml: &str) -> Verifier {
    let spec: VerifySpec = toml::from_str(spec_toml).expect("bench spec");
    let whsec = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([9u8; 32])
    );
    Verifier::compile(&spec, &|r| {
        Ok(Secret::new(match r {
            "${WH}" => whsec.clone().into_bytes(),
            "${K}" => KEY.to_vec(),
            _ => b"other-secret".to_vec(),
        }))
    })
    .unwrap_or_else(|p| panic!("{spec_toml}: {p:?}"))
}

fn case(
    name: &'static str,
    spec_toml: &str,
    path: &str,
    body: Vec<u8>,
    extra: &[(&str, &str)],
) -> Case {
    let verifier = compile(spec_toml);
    let mut c = Case {
        name,
        verifier,
        path: path.to_string(),
        headers: HeaderMap::new(),
        body,
    };
    for (n, v) in extra {
        c.headers.insert(
            HeaderName::from_bytes(n.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    let signed = c.verifier.sign(&c.request(), now()).unwrap_or_default();
    for (n, v) in signed {
        c.headers.insert(
            HeaderName::from_bytes(n.as_bytes()).expect("name"),
            HeaderValue::from_str(&v).expect("value"),
        );
    }
    c
}

fn cases(size: usize) -> Vec<Case> {
    let body = json_body(size);
    let json_hash = hex::encode(Sha256::digest(&body));
    let mut all = vec![
        case("github", "scheme = \"github\"\nsecrets = [\"${K}\"]", "/h", body.clone(), &[]),
        case("gitlab-token", "scheme = \"gitlab\"\nsecrets = [\"${K}\"]", "/h", body.clone(), &[]),
        case("stripe", "scheme = \"stripe\"\nsecrets = [\"${K}\"]", "/h", body.clone(), &[]),
        case("slack", "scheme = \"slack\"\nsecrets = [\"${K}\"]", "/h", body.clone(), &[]),
        case("shopify", "scheme = \"shopify\"\nsecrets = [\"${K}\"]", "/h", body.clone(), &[]),
        case("standard-webhooks", "scheme = \"standard-webhooks\"\nsecrets = [\"${WH}\"]", "/h", body.clone(), &[]),
        case(
            "twilio-json",
            "scheme = \"twilio\"\npublic_url = \"https://hooks.example.com\"\nsecrets = [\"${K}\"]",
            &format!("/h?bodySHA256={json_hash}"),
            body.clone(),
            &[("content-type", "application/json")],
        ),
        case("zoom", "scheme = \"zoom\"\nsecrets = [\"${K}\"]", "/h", body.clone(), &[]),
        case("twitch", "scheme = \"twitch\"\nsecrets = [\"${K}\"]", "/h", body.clone(), &[]),
        case("hubspot", "scheme = \"hubspot\"\npublic_url = \"https://hooks.example.com\"\nsecrets = [\"${K}\"]", "/h", body.clone(), &[]),
        case("square", "scheme = \"square\"\npublic_url = \"https://hooks.example.com\"\nsecrets = [\"${K}\"]", "/h", body.clone(), &[]),
        case("paddle", "scheme = \"paddle\"\nsecrets = [\"${K}\"]", "/h", body.clone(), &[]),
        case("linear", "scheme = \"linear\"\nsecrets = [\"${K}\"]", "/h", body.clone(), &[]),
        case("token-bearer", "scheme = \"token\"\nbearer = true\nsecrets = [\"${K}\"]", "/h", body.clone(), &[]),
        case("hmac-sha1", "scheme = \"hmac\"\nalgorithm = \"sha1\"\nheader = \"X-Sig\"\nsecrets = [\"${K}\"]", "/h", body.clone(), &[]),
        case("hmac-sha512", "scheme = \"hmac\"\nalgorithm = \"sha512\"\nheader = \"X-Sig\"\nsecrets = [\"${K}\"]", "/h", body.clone(), &[]),
        case(
            "stripe-rotated-2nd",
            "scheme = \"stripe\"\nsecrets = [\"${OTHER}\", \"${K}\"]",
            "/h",
            body.clone(),
            &[],
        ),
    ];
    // Rotation: the delivery is signed with the second configured secret, so the first
    // MAC is computed and rejected before the second matches.
    let signer = compile("scheme = \"stripe\"\nsecrets = [\"${K}\"]");
    if let Some(rotated) = all.iter_mut().find(|c| c.name == "stripe-rotated-2nd") {
        let signed = signer.sign(&rotated.request(), now()).expect("sign");
        rotated.headers.insert(
            HeaderName::from_static("stripe-signature"),
            HeaderValue::from_str(&signed[0].1).expect("value"),
        );
    }
    // Discord: the gateway cannot sign, so sign with a test key.
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let spec = format!(
        "scheme = \"discord\"\npublic_key = \"{}\"",
        hex::encode(key.verifying_key().as_bytes())
    );
    let mut message = NOW.to_string().into_bytes();
    message.extend_from_slice(&body);
    let mut discord = case("discord", &spec, "/h", body.clone(), &[]);
    discord.headers.insert(
        HeaderName::from_static("x-signature-ed25519"),
        HeaderValue::from_str(&hex::encode(key.sign(&message).to_bytes())).expect("value"),
    );
    discord.headers.insert(
        HeaderName::from_static("x-signature-timestamp"),
        HeaderValue::from_str(&NOW.to_string()).expect("value"),
    );
    all.push(discord);
    all.extend(asymmetric_cases(&body));
    if size <= 4096 {
        let form = b"CallSid=CA1234567890ABCDE&Digits=1234&From=%2B14158675309&To=%2B18005551212&Caller=%2B14158675309&Body=".to_vec();
        let mut form_body = form;
        form_body.resize(size, b'x');
        all.push(case(
            "twilio-form",
            "scheme = \"twilio\"\npublic_url = \"https://hooks.example.com\"\nsecrets = [\"${K}\"]",
            "/h?a=1",
            form_body,
            &[("content-type", "application/x-www-form-urlencoded")],
        ));
    }
    for c in &all {
        if let Err(e) = c.verifier.verify(&c.request(), now()) {
            panic!("bench case {} does not verify: {e}", c.name);
        }
    }
    all
}

/// `ecdsa` (SendGrid), `jwt` HS256 (Netlify) and ES256 (Plaid), and `mailgun` (signature in
/// the body). Public-key cases are signed here with a test P-256 key.
fn asymmetric_cases(body: &[u8]) -> Vec<Case> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::EncodePublicKey as _;
    let key = p256::ecdsa::SigningKey::from_bytes(&[5u8; 32].into()).expect("scalar");
    let spki = STANDARD.encode(
        key.verifying_key()
            .to_public_key_der()
            .expect("spki")
            .as_bytes(),
    );
    let mut message = NOW.to_string().into_bytes();
    message.extend_from_slice(body);
    let sig: p256::ecdsa::Signature = key.sign(&message);
    let sendgrid = case(
        "ecdsa-sendgrid",
        &format!("scheme = \"ecdsa\"\nheader = \"X-Sig\"\ntimestamp_header = \"X-Ts\"\npublic_key = \"{spki}\""),
        "/h",
        body.to_vec(),
        &[("x-sig", &STANDARD.encode(sig.to_der().as_bytes())), ("x-ts", &NOW.to_string())],
    );
    let netlify = case(
        "jwt-hs256-netlify",
        "scheme = \"jwt\"\nalgorithm = \"HS256\"\nheader = \"X-Webhook-Signature\"\nissuer = \"netlify\"\nbody_sha256_claim = \"sha256\"\nsecrets = [\"${K}\"]",
        "/h",
        body.to_vec(),
        &[],
    );
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256"}"#),
        URL_SAFE_NO_PAD.encode(format!(
            r#"{{"iat":{NOW},"request_body_sha256":"{}"}}"#,
            hex::encode(Sha256::digest(body))
        ))
    );
    let jws: p256::ecdsa::Signature = key.sign(input.as_bytes());
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(jws.to_bytes()));
    let plaid = case(
        "jwt-es256-plaid",
        &format!("scheme = \"jwt\"\nalgorithm = \"ES256\"\nheader = \"Plaid-Verification\"\nbody_sha256_claim = \"request_body_sha256\"\npublic_key = \"{spki}\""),
        "/h",
        body.to_vec(),
        &[("plaid-verification", &token)],
    );
    let mut mailgun = case(
        "mailgun",
        "scheme = \"mailgun\"\nsecrets = [\"${K}\"]",
        "/h",
        Vec::new(),
        &[],
    );
    let json: serde_json::Value =
        serde_json::json!({"event-data": {"data": String::from_utf8_lossy(body)}});
    let (signed, content_type) = mailgun
        .verifier
        .sign_body(json.to_string().as_bytes(), now())
        .expect("mailgun signs in the body")
        .expect("sign");
    mailgun.body = signed;
    mailgun.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    vec![sendgrid, netlify, plaid, mailgun]
}

fn bench(c: &mut Criterion) {
    for (label, size) in [("1KiB", 1024usize), ("1MiB", 1 << 20)] {
        let mut group = c.benchmark_group(format!("verify/{label}"));
        group.throughput(Throughput::Bytes(size as u64));
        let body = json_body(size);
        group.bench_function(BenchmarkId::from_parameter("raw-hmac-sha256"), |b| {
            b.iter(|| {
                let mut mac = Hmac::<Sha256>::new_from_slice(KEY).expect("any key length");
                mac.update(black_box(&body));
                black_box(mac.finalize().into_bytes())
            })
        });
        for case in cases(size) {
            group.bench_function(BenchmarkId::from_parameter(case.name), |b| {
                b.iter(|| {
                    let request = case.request();
                    black_box(case.verifier.verify(black_box(&request), now()).is_ok())
                })
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10)
        .without_plots();
    targets = bench
}
criterion_main!(benches);
