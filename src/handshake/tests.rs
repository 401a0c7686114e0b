//! The answers of every kind against the provider documentation's examples; expected MACs
//! were computed independently (Python's `hmac`).

use super::*;
use crate::verify::Request as VerifyRequest;

fn shake(kind: Kind) -> Handshake {
    Handshake::new(kind, kind.as_str(), None, None, None)
}

fn keyed(kind: Kind, key: &str) -> Handshake {
    Handshake::new(kind, kind.as_str(), Some(Secret::new(key)), None, None)
}

fn get(query: &str) -> (Method, String) {
    (Method::GET, query.to_string())
}

fn unsigned(
    h: &Handshake,
    method: Method,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Option<Result<Answer, Refused>> {
    h.unsigned(&Request {
        method: &method,
        query,
        headers,
        body: b"",
        secrets: None,
    })
}

fn text(body: &str) -> Answer {
    Answer {
        status: 200,
        content_type: Some("text/plain"),
        headers: Vec::new(),
        body: Bytes::from(body.to_string()),
    }
}

#[test]
fn kinds_have_one_name_each() {
    for kind in Kind::ALL {
        assert_eq!(Kind::parse(kind.as_str()), Some(kind));
    }
    assert_eq!(Kind::parse("twitter"), None);
    assert_eq!(Kind::of_scheme("slack"), Some(Kind::Slack));
    assert_eq!(Kind::of_scheme("github"), None);
}

#[test]
fn only_bounded_plain_values_are_echoed() {
    assert!(echoable(
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        false
    )
    .is_ok());
    assert!(echoable(&"a".repeat(MAX_ECHO), false).is_ok());
    for bad in [
        "",
        "<script>alert(1)</script>",
        "a\"b",
        "a&b",
        "a b",
        "a\nb",
        "é",
    ] {
        assert!(echoable(bad, false).is_err(), "{bad:?}");
    }
    assert!(echoable(&"a".repeat(MAX_ECHO + 1), false).is_err());
    assert!(echoable("Validation: Testing client", true).is_ok());
    assert!(echoable("<b> x", true).is_err());
}

#[test]
fn slack_url_verification_docs_example() {
    // https://api.slack.com/events/url_verification
    let body = br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let h = shake(Kind::Slack);
    assert_eq!(
        h.signed(&HeaderMap::new(), body),
        Some(Ok(text(
            "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
        )))
    );
    assert_eq!(
        h.signed(&HeaderMap::new(), br#"{"type":"event_callback"}"#),
        None
    );
    assert_eq!(h.signed(&HeaderMap::new(), b"token=x&command=%2Fdo"), None);
    assert!(matches!(
        h.signed(
            &HeaderMap::new(),
            br#"{"type":"url_verification","challenge":"<x>"}"#
        ),
        Some(Err(Refused::Malformed(_)))
    ));
}

#[test]
fn zoom_url_validation_docs_shape() {
    // https://developers.zoom.us/docs/api/webhooks/#validate-your-webhook-endpoint
    let body = br#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;
    let h = keyed(Kind::Zoom, "zoom-secret-token");
    let answer = h.signed(&HeaderMap::new(), body).unwrap().unwrap();
    assert_eq!(answer.content_type, Some("application/json"));
    assert_eq!(
        answer.body,
        Bytes::from_static(br#"{"plainToken":"qgg8vlvZRS6UYooatFL8Aw","encryptedToken":"d9e0d764a78494688ba3f2d5c0ed4ca311394b4834d959759213424d2df961e3"}"#)
    );
    assert_eq!(
        h.signed(&HeaderMap::new(), br#"{"event":"meeting.started"}"#),
        None
    );
}

#[test]
fn twitch_challenge_docs_example() {
    // https://dev.twitch.tv/docs/eventsub/handling-webhook-events/#responding-to-a-challenge-request
    let mut headers = HeaderMap::new();
    headers.insert(
        "twitch-eventsub-message-type",
        "webhook_callback_verification".parse().unwrap(),
    );
    let body = br#"{"challenge":"pogchamp-kappa-360noscope-vohiyo","subscription":{"id":"f1c2a387-161a-49f9-a165-0f21d7a4e1c4","status":"webhook_callback_verification_pending","type":"channel.follow","version":"1"}}"#;
    let h = shake(Kind::Twitch);
    assert_eq!(
        h.signed(&headers, body),
        Some(Ok(text("pogchamp-kappa-360noscope-vohiyo")))
    );
    headers.insert(
        "twitch-eventsub-message-type",
        "notification".parse().unwrap(),
    );
    assert_eq!(h.signed(&headers, body), None);
}

#[test]
fn discord_ping_gets_pong() {
    let h = shake(Kind::Discord);
    let answer = h
        .signed(&HeaderMap::new(), br#"{"id":"1","type":1,"version":1}"#)
        .unwrap()
        .unwrap();
    assert_eq!(answer.body, Bytes::from_static(br#"{"type":1}"#));
    assert_eq!(answer.content_type, Some("application/json"));
    assert_eq!(h.signed(&HeaderMap::new(), br#"{"type":2}"#), None);
}

#[test]
fn meta_verification_docs_example_and_refusals() {
    // https://developers.facebook.com/docs/graph-api/webhooks/getting-started#verification-requests
    let h = Handshake::new(
        Kind::Meta,
        "meta",
        None,
        Some(Secret::new("meatyhamhock")),
        None,
    );
    let none = HeaderMap::new();
    let (m, q) = get("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock");
    assert_eq!(
        unsigned(&h, m, Some(&q), &none),
        Some(Ok(text("1158201444")))
    );
    let (m, q) = get("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhockX");
    assert_eq!(
        unsigned(&h, m, Some(&q), &none),
        Some(Err(Refused::TokenMismatch))
    );
    let (m, q) =
        get("hub.mode=subscribe&hub.challenge=1&hub.challenge=2&hub.verify_token=meatyhamhock");
    assert!(matches!(
        unsigned(&h, m, Some(&q), &none),
        Some(Err(Refused::Malformed(_)))
    ));
    let (m, q) = get("hub.mode=subscribe&hub.challenge=%3Cscript%3E&hub.verify_token=meatyhamhock");
    assert!(matches!(
        unsigned(&h, m, Some(&q), &none),
        Some(Err(Refused::Malformed(_)))
    ));
    // Not a handshake: no hub.mode, or a POST (a delivery).
    assert_eq!(unsigned(&h, Method::GET, Some("x=1"), &none), None);
    assert_eq!(unsigned(&h, Method::GET, None, &none), None);
    let (_, q) = get("hub.mode=subscribe&hub.challenge=1&hub.verify_token=meatyhamhock");
    assert_eq!(unsigned(&h, Method::POST, Some(&q), &none), None);
}

#[test]
fn dropbox_challenge_echo() {
    // https://www.dropbox.com/developers/reference/webhooks
    let h = shake(Kind::Dropbox);
    assert_eq!(
        unsigned(&h, Method::GET, Some("challenge=abc123"), &HeaderMap::new()),
        Some(Ok(text("abc123")))
    );
}

#[test]
fn x_crc_docs_example() {
    // The consumer secret and token of X's CRC sample (developer.x.com, securing webhooks).
    let h = keyed(
        Kind::XCrc,
        "z3ZX4v7mAAUGykl3EcmkqbartmuW8VFOOzCloLx9Q45P0hLrFu",
    );
    let answer = unsigned(
        &h,
        Method::GET,
        Some("crc_token=9b4507b3-9040-4669-9ca3-6b94edb50553"),
        &HeaderMap::new(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        answer.body,
        Bytes::from_static(
            br#"{"response_token":"sha256=Cytd4Sq+NvEcV3MMrXxWJGJx5A+y/lXzzU2Maartkx8="}"#
        )
    );
    assert_eq!(answer.content_type, Some("application/json"));
}

#[test]
fn microsoft_graph_validation_token_is_decoded() {
    let h = shake(Kind::MicrosoftGraph);
    let q = "validationToken=Validation%3a+Testing+client+application+reachability+for+subscription+Request-Id%3a+3b3f9821-ce3f-4b5e-b6b4-9fa2e1f0c8e3";
    assert_eq!(
        unsigned(&h, Method::POST, Some(q), &HeaderMap::new()),
        Some(Ok(text("Validation: Testing client application reachability for subscription Request-Id: 3b3f9821-ce3f-4b5e-b6b4-9fa2e1f0c8e3")))
    );
    assert_eq!(unsigned(&h, Method::POST, None, &HeaderMap::new()), None);
}

fn asana_spec() -> VerifySpec {
    VerifySpec {
        scheme: "hmac".into(),
        header: Some("X-Hook-Signature".into()),
        secrets: vec![ASANA_SECRET_REFERENCE.into()],
        ..VerifySpec::default()
    }
}

#[test]
fn asana_secret_is_kept_once_and_verifies_what_follows() {
    // https://developers.asana.com/reference/createwebhook (the handshake's example secret)
    let secret = "b537207f20cbfa02357cf448134da559e8bd39d61597dcd5631b8012eae53e81";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("asana.hook-secret");
    let keeper = Arc::new(AsanaSecret::new("asana", &path, asana_spec()));
    assert!(keeper.verifier(None).is_none());
    let h = Handshake::new(Kind::Asana, "asana", None, None, Some(keeper.clone()));
    let mut headers = HeaderMap::new();
    headers.insert("x-hook-secret", secret.parse().unwrap());
    let answer = unsigned(&h, Method::POST, None, &headers).unwrap().unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers, vec![("X-Hook-Secret", secret.to_string())]);
    assert!(answer.body.is_empty());
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{secret}\n")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The same secret again is a retried handshake; another one is refused.
    assert!(unsigned(&h, Method::POST, None, &headers).unwrap().is_ok());
    headers.insert("x-hook-secret", "attacker0000".parse().unwrap());
    assert_eq!(
        unsigned(&h, Method::POST, None, &headers),
        Some(Err(Refused::SecretHeld))
    );
    // What follows verifies with it; a new keeper (a reload) reads it back.
    let body = br#"{"events":[]}"#;
    let mut signed = HeaderMap::new();
    signed.insert(
        "x-hook-signature",
        "10468027b67df18c739cc4794c6fc2d2806dcaaf2259fc3e1ed9d26433659853"
            .parse()
            .unwrap(),
    );
    let request = VerifyRequest {
        method: "POST",
        path_and_query: "/asana",
        headers: &signed,
        body,
    };
    let now = std::time::SystemTime::now();
    assert!(keeper.verifier(None).unwrap().verify(&request, now).is_ok());
    let reopened = AsanaSecret::new("asana", &path, asana_spec());
    assert!(reopened
        .verifier(None)
        .unwrap()
        .verify(&request, now)
        .is_ok());
    assert_eq!(
        reopened.offer("attacker0000", None),
        Err(Refused::SecretHeld)
    );
}

#[test]
fn asana_refuses_repeated_or_odd_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let keeper = Arc::new(AsanaSecret::new(
        "asana",
        &dir.path().join("s"),
        asana_spec(),
    ));
    let h = Handshake::new(Kind::Asana, "asana", None, None, Some(keeper.clone()));
    let mut headers = HeaderMap::new();
    headers.append("x-hook-secret", "a".parse().unwrap());
    headers.append("x-hook-secret", "b".parse().unwrap());
    assert!(matches!(
        unsigned(&h, Method::POST, None, &headers),
        Some(Err(Refused::Malformed(_)))
    ));
    let mut headers = HeaderMap::new();
    headers.insert("x-hook-secret", "a b".parse().unwrap());
    assert!(matches!(
        unsigned(&h, Method::POST, None, &headers),
        Some(Err(Refused::Malformed(_)))
    ));
    assert!(
        keeper.verifier(None).is_none(),
        "nothing kept from a refused handshake"
    );
    assert_eq!(unsigned(&h, Method::POST, None, &HeaderMap::new()), None);
}

/// A [`SecretStore`] in memory, first value wins.
#[derive(Default)]
struct Memory(std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>);

impl SecretStore for Memory {
    fn secret(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.lock().unwrap().get(key).cloned())
    }

    fn keep_first(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, String> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .entry(key.to_string())
            .or_insert_with(|| value.to_vec())
            .clone())
    }
    fn forget(&self, key: &str) -> Result<bool, String> {
        Ok(self.0.lock().unwrap().remove(key).is_some())
    }
}

#[test]
fn asana_secret_goes_to_the_store_when_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unused");
    let store = Memory::default();
    let keeper = AsanaSecret::new("tasks", &path, asana_spec());
    keeper.offer("first0", Some(&store)).unwrap();
    assert!(!path.exists(), "no file when a store is configured");
    assert_eq!(
        store.secret("asana/tasks").unwrap(),
        Some(b"first0".to_vec())
    );
    // Another keeper (a reload) sees it, and cannot replace it.
    let other = AsanaSecret::new("tasks", &path, asana_spec());
    assert!(other.verifier(Some(&store)).is_some());
    assert_eq!(
        other.offer("second0", Some(&store)),
        Err(Refused::SecretHeld)
    );
    assert_eq!(other.offer("first0", Some(&store)), Ok(()));
}

#[test]
fn a_forgotten_secret_can_be_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kept");
    let keeper = AsanaSecret::new("tasks", &path, asana_spec());
    keeper.offer("first0", None).unwrap();
    assert_eq!(keeper.offer("second0", None), Err(Refused::SecretHeld));
    assert_eq!(keeper.forget(None), Ok(true));
    assert!(!path.exists());
    assert_eq!(keeper.offer("second0", None), Ok(()));
    let store = Memory::default();
    keeper.offer("third0", Some(&store)).unwrap();
    assert_eq!(keeper.forget(Some(&store)), Ok(true));
    assert_eq!(keeper.forget(Some(&store)), Ok(false));
}
