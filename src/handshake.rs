//! Setup handshakes answered by the gateway for routes that set `handshake`: the requests a
//! provider sends to prove that an endpoint is really the one it was given, before (and for
//! some, between) deliveries.
//!
//! Owns: the kinds of handshake ([`Kind`]), recognising one on a route's request, checking the
//! value to echo, and the exact answer (status, content type, body bytes, headers) each
//! provider documents; and Asana's handed-over secret ([`AsanaSecret`]): keeping it, and the
//! verifier its later deliveries are checked with. Does not own: when in the request path a
//! handshake is looked for (`proxy`), verification of signed handshakes (`verify`, which runs
//! first for them), the route's `handshake` key (`config::handshake`), or metrics.
//!
//! # Kinds, what they look like, and the answer
//! | kind | request | signed | answer |
//! | --- | --- | --- | --- |
//! | `slack` | POST JSON `{"type":"url_verification","challenge":…}` | yes | 200 `text/plain`, the challenge |
//! | `zoom` | POST JSON `{"event":"endpoint.url_validation","payload":{"plainToken":…}}` | yes | 200 JSON `{"plainToken":…,"encryptedToken":hex(HMAC-SHA256(secret, plainToken))}` |
//! | `twitch` | POST, `Twitch-Eventsub-Message-Type: webhook_callback_verification`, JSON `challenge` | yes | 200 `text/plain`, the challenge |
//! | `discord` | POST JSON `{"type":1}` (PING) | yes | 200 JSON `{"type":1}` (PONG) |
//! | `meta` | GET `?hub.mode=subscribe&hub.challenge=…&hub.verify_token=…` | no: the verify token | 200 `text/plain`, the challenge |
//! | `dropbox` | GET `?challenge=…` | no | 200 `text/plain`, the challenge |
//! | `x-crc` | GET `?crc_token=…` | no: the answer proves the secret | 200 JSON `{"response_token":"sha256="+base64(HMAC-SHA256(secret, crc_token))}` |
//! | `microsoft-graph` | POST `?validationToken=…` | no | 200 `text/plain`, the decoded token |
//! | `asana` | POST with `X-Hook-Secret` | no | 200, `X-Hook-Secret` echoed; the secret is kept |
//!
//! # What is echoed
//! Only bounded values made of a small set of characters ([`MAX_ECHO`]; letters, digits and
//! `-._~:+/=` plus, for Graph's validation token, spaces), never HTML or anything a browser
//! could run: every answer carries `X-Content-Type-Options: nosniff` and `Cache-Control:
//! no-store`, and a value outside the set is refused with 400 rather than escaped.
//!
//! # Asana
//! Asana's handshake is not signed: whoever reaches the route can offer a secret. hookgate
//! takes one only while it holds none for the route (so an attacker cannot replace it once
//! set), and only from clients the route's allowlist admits (that step runs first). The same
//! secret offered again is answered again (a retried handshake); a different one is refused
//! with 409 until the operator removes the kept one (the file, or the store's entry: see
//! the README). Deliveries before a secret is held fail verification (401). Where it is kept:
//! the durable store when `[storage]` is set ([`SecretStore`]), else a file.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderMap, Method};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::Secret;
use crate::verify::{Verifier, VerifySpec};

/// The longest value a handshake answer echoes, in bytes.
pub const MAX_ECHO: usize = 512;

/// One kind of setup handshake; its name is what `handshake = "…"` and a provider row's
/// `handshake` field say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// <https://api.slack.com/events/url_verification>
    Slack,
    /// <https://developers.zoom.us/docs/api/webhooks/#validate-your-webhook-endpoint>
    Zoom,
    /// <https://dev.twitch.tv/docs/eventsub/handling-webhook-events/#responding-to-a-challenge-request>
    Twitch,
    /// <https://discord.com/developers/docs/interactions/overview#setting-up-an-endpoint-acknowledging-ping-requests>
    Discord,
    /// <https://developers.facebook.com/docs/graph-api/webhooks/getting-started#verification-requests>
    Meta,
    /// <https://www.dropbox.com/developers/reference/webhooks#documentation>
    Dropbox,
    /// <https://developer.x.com/en/docs/x-api/enterprise/account-activity-api/guides/securing-webhooks>
    XCrc,
    /// <https://learn.microsoft.com/en-us/graph/change-notifications-delivery-webhooks#notificationurl-validation>
    MicrosoftGraph,
    /// <https://developers.asana.com/reference/createwebhook>
    Asana,
}

impl Kind {
    /// Every kind, in the order of the module table.
    pub const ALL: [Kind; 9] = [
        Kind::Slack,
        Kind::Zoom,
        Kind::Twitch,
        Kind::Discord,
        Kind::Meta,
        Kind::Dropbox,
        Kind::XCrc,
        Kind::MicrosoftGraph,
        Kind::Asana,
    ];

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Slack => "slack",
            Kind::Zoom => "zoom",
            Kind::Twitch => "twitch",
            Kind::Discord => "discord",
            Kind::Meta => "meta",
            Kind::Dropbox => "dropbox",
            Kind::XCrc => "x-crc",
            Kind::MicrosoftGraph => "microsoft-graph",
            Kind::Asana => "asana",
        }
    }

    /// The kind a verification scheme implies when the route names no provider.
    pub fn of_scheme(scheme: &str) -> Option<Kind> {
        match scheme {
            "slack" => Some(Kind::Slack),
            "zoom" => Some(Kind::Zoom),
            "twitch" => Some(Kind::Twitch),
            "discord" => Some(Kind::Discord),
            _ => None,
        }
    }

    /// Whether the provider signs the handshake like its deliveries: it is answered only
    /// after the route's verification passed.
    pub fn signed(self) -> bool {
        matches!(
            self,
            Kind::Slack | Kind::Zoom | Kind::Twitch | Kind::Discord
        )
    }

    /// Whether the handshake is a GET (routes otherwise limited to POST take it).
    pub fn is_get(self) -> bool {
        matches!(self, Kind::Meta | Kind::Dropbox | Kind::XCrc)
    }

    /// Whether the answer needs the route's (first) secret: Zoom's and X's HMACs.
    pub fn needs_key(self) -> bool {
        matches!(self, Kind::Zoom | Kind::XCrc)
    }
}

/// The answer to a handshake, written by the proxy as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// `None` for an empty body (Asana's answer is its header).
    pub content_type: Option<&'static str>,
    /// Headers besides `Content-Type`, `Content-Length`, `X-Content-Type-Options` and
    /// `Cache-Control`, which every answer has.
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl Answer {
    fn text(body: impl Into<Bytes>) -> Answer {
        Answer {
            status: 200,
            content_type: Some("text/plain"),
            headers: Vec::new(),
            body: body.into(),
        }
    }

    fn json(body: String) -> Answer {
        Answer {
            status: 200,
            content_type: Some("application/json"),
            headers: Vec::new(),
            body: Bytes::from(body),
        }
    }
}

/// Why a request recognised as a handshake was not answered. The text is for the log; it
/// never holds a secret, a token or the echoed value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// 400: the challenge is missing, repeated, too long or has characters not echoed.
    #[error("handshake malformed: {0}")]
    Malformed(&'static str),
    /// 403: Meta's `hub.verify_token` is not the route's.
    #[error("hub.verify_token does not match the route's verify_token")]
    TokenMismatch,
    /// 409: Asana offered a secret while another is held for the route.
    #[error("an X-Hook-Secret is already held for this route; remove it to accept a new one")]
    SecretHeld,
    /// 503: the secret could not be kept (the handshake is not confirmed).
    #[error("the X-Hook-Secret could not be kept: {0}")]
    Store(String),
}

impl Refused {
    /// Shown to the sender under `reason` for 400s (fixed text, no request value).
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Refused::Malformed(why) => Some(why),
            _ => None,
        }
    }
}

/// What a handshake looks at: the request as received.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a Method,
    /// The query, without `?`, as received.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// Where Asana secrets are kept, when the gateway has a durable store.
    pub secrets: Option<&'a dyn SecretStore>,
}

/// A route's compiled handshake.
pub struct Handshake {
    kind: Kind,
    /// The `provider` label of `hookgate_handshakes_total`: the route's provider row, else
    /// the kind.
    provider: String,
    /// Zoom and X: the route's first secret.
    key: Option<Secret>,
    /// Meta: SHA-256 of the configured verify token (compared in constant time).
    verify_token: Option<[u8; 32]>,
    /// Asana: the handed-over secret.
    asana: Option<Arc<AsanaSecret>>,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("kind", &self.kind)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// `key` is required for [`Kind::needs_key`] kinds, `verify_token` for Meta, `asana` for
    /// Asana (config checks this; a missing one refuses every handshake of the kind).
    pub fn new(
        kind: Kind,
        provider: &str,
        key: Option<Secret>,
        verify_token: Option<Secret>,
        asana: Option<Arc<AsanaSecret>>,
    ) -> Self {
        Handshake {
            kind,
            provider: provider.to_string(),
            key,
            verify_token: verify_token.map(|t| Sha256::digest(t.expose()).into()),
            asana,
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The `provider` metric label.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// Asana's kept secret, for verifying the deliveries that follow the handshake.
    pub fn asana(&self) -> Option<&Arc<AsanaSecret>> {
        self.asana.as_ref()
    }

    /// An unsigned handshake (Meta, Dropbox, X, Microsoft Graph, Asana), looked at before
    /// verification: `None` when `request` is not one (it then goes on as any request).
    pub fn unsigned(&self, request: &Request<'_>) -> Option<Result<Answer, Refused>> {
        match self.kind {
            Kind::Meta if request.method == Method::GET => {
                let query = Query::new(request.query?);
                query.has("hub.mode").then(|| self.meta(&query))
            }
            Kind::Dropbox if request.method == Method::GET => {
                let query = Query::new(request.query?);
                query.has("challenge").then(|| {
                    let challenge = query.one("challenge")?;
                    Ok(Answer::text(echoable(&challenge, false)?.to_string()))
                })
            }
            Kind::XCrc if request.method == Method::GET => {
                let query = Query::new(request.query?);
                query.has("crc_token").then(|| self.x_crc(&query))
            }
            Kind::MicrosoftGraph if request.method == Method::POST => {
                let query = Query::new(request.query?);
                query.has("validationToken").then(|| {
                    let token = query.one("validationToken")?;
                    Ok(Answer::text(echoable(&token, true)?.to_string()))
                })
            }
            Kind::Asana if request.method == Method::POST => request
                .headers
                .contains_key("x-hook-secret")
                .then(|| self.asana_handshake(request.headers, request.secrets)),
            _ => None,
        }
    }

    /// A signed handshake (Slack, Zoom, Twitch, Discord), looked at after the route's
    /// verification passed, on the verified body: `None` when it is a delivery. On an X CRC
    /// route, a verified body the CRC answer could have signed is refused here too.
    pub fn signed(&self, headers: &HeaderMap, body: &[u8]) -> Option<Result<Answer, Refused>> {
        match self.kind {
            Kind::Slack => {
                let value = json(body)?;
                (value.get("type")? == "url_verification").then(|| {
                    let challenge = string_field(&value, "challenge")?;
                    Ok(Answer::text(echoable(challenge, false)?.to_string()))
                })
            }
            Kind::Zoom => {
                let value = json(body)?;
                (value.get("event")? == "endpoint.url_validation").then(|| self.zoom(&value))
            }
            Kind::Twitch => {
                let kind = headers.get("twitch-eventsub-message-type")?;
                (kind.as_bytes() == b"webhook_callback_verification").then(|| {
                    let value =
                        json(body).ok_or(Refused::Malformed("body is not a JSON object"))?;
                    let challenge = string_field(&value, "challenge")?;
                    Ok(Answer::text(echoable(challenge, false)?.to_string()))
                })
            }
            Kind::Discord => {
                let value = json(body)?;
                (value.get("type")? == 1).then(|| Ok(Answer::json("{\"type\":1}".to_string())))
            }
            // Not a handshake, but the other side of one: the CRC answer is the HMAC of any
            // `crc_token`, which is also the signature of a delivery whose body is that token.
            // A verified body that could have been a `crc_token` may have been signed by the
            // gateway itself on anyone's request, so it is refused.
            Kind::XCrc => std::str::from_utf8(body)
                .ok()
                .filter(|text| echoable(text, false).is_ok())
                .map(|_| {
                    Err(Refused::Malformed(
                        "the body is made only of crc_token characters, so the route's CRC answer could have signed it",
                    ))
                }),
            _ => None,
        }
    }

    fn meta(&self, query: &Query<'_>) -> Result<Answer, Refused> {
        if query.one("hub.mode")? != "subscribe" {
            return Err(Refused::Malformed("hub.mode is not subscribe"));
        }
        let challenge = query.one("hub.challenge")?;
        let offered = query.one("hub.verify_token")?;
        let Some(expected) = &self.verify_token else {
            return Err(Refused::TokenMismatch);
        };
        let offered: [u8; 32] = Sha256::digest(offered.as_bytes()).into();
        if !bool::from(offered.ct_eq(expected)) {
            return Err(Refused::TokenMismatch);
        }
        Ok(Answer::text(echoable(&challenge, false)?.to_string()))
    }

    fn x_crc(&self, query: &Query<'_>) -> Result<Answer, Refused> {
        let token = query.one("crc_token")?;
        let token = echoable(&token, false)?;
        let mac = hmac_sha256(self.key.as_ref(), token.as_bytes())?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(mac);
        Ok(Answer::json(format!(
            "{{\"response_token\":\"sha256={encoded}\"}}"
        )))
    }

    fn zoom(&self, value: &serde_json::Value) -> Result<Answer, Refused> {
        let plain = value
            .get("payload")
            .and_then(|p| p.get("plainToken"))
            .and_then(|t| t.as_str())
            .ok_or(Refused::Malformed("payload.plainToken is missing"))?;
        let plain = echoable(plain, false)?;
        let encrypted = hex::encode(hmac_sha256(self.key.as_ref(), plain.as_bytes())?);
        // Hand-written so the field order is the documented one; both values need no
        // JSON escaping (`echoable`'s characters and hex).
        Ok(Answer::json(format!(
            "{{\"plainToken\":\"{plain}\",\"encryptedToken\":\"{encrypted}\"}}"
        )))
    }

    fn asana_handshake(
        &self,
        headers: &HeaderMap,
        secrets: Option<&dyn SecretStore>,
    ) -> Result<Answer, Refused> {
        let mut offered = headers.get_all("x-hook-secret").iter();
        let (Some(value), None) = (offered.next(), offered.next()) else {
            return Err(Refused::Malformed("X-Hook-Secret is repeated"));
        };
        let value = value
            .to_str()
            .map_err(|_| Refused::Malformed("X-Hook-Secret is not ASCII"))?;
        if value.is_empty()
            || value.len() > 256
            || !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Refused::Malformed(
                "X-Hook-Secret must be 1 to 256 letters, digits, '-' or '_'",
            ));
        }
        let Some(keeper) = &self.asana else {
            return Err(Refused::Store("no place to keep it".into()));
        };
        keeper.offer(value, secrets)?;
        Ok(Answer {
            status: 200,
            content_type: None,
            headers: vec![("X-Hook-Secret", value.to_string())],
            body: Bytes::new(),
        })
    }
}

fn hmac_sha256(key: Option<&Secret>, message: &[u8]) -> Result<[u8; 32], Refused> {
    let key = key.ok_or(Refused::Store("the route has no secret".into()))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose())
        .map_err(|_| Refused::Store("unusable secret".into()))?;
    mac.update(message);
    Ok(mac.finalize().into_bytes().into())
}

/// The body as a JSON object, or `None` (then it is no handshake).
fn json(body: &[u8]) -> Option<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.is_object().then_some(value)
}

fn string_field<'v>(value: &'v serde_json::Value, name: &'static str) -> Result<&'v str, Refused> {
    value
        .get(name)
        .and_then(|v| v.as_str())
        .ok_or(Refused::Malformed(
            "the challenge is missing or not a string",
        ))
}

/// `value` when it may be echoed: 1 to [`MAX_ECHO`] bytes of letters, digits and `-._~:+/=`
/// (and spaces when `spaces`, for Graph's validation token).
pub fn echoable(value: &str, spaces: bool) -> Result<&str, Refused> {
    if value.is_empty() {
        return Err(Refused::Malformed("the challenge is empty"));
    }
    if value.len() > MAX_ECHO {
        return Err(Refused::Malformed("the challenge is longer than 512 bytes"));
    }
    let allowed =
        |b: u8| b.is_ascii_alphanumeric() || b"-._~:+/=".contains(&b) || (spaces && b == b' ');
    if !value.bytes().all(allowed) {
        return Err(Refused::Malformed(
            "the challenge has characters that are not echoed (letters, digits and -._~:+/= only)",
        ));
    }
    Ok(value)
}

/// A decoded query string; a parameter given twice is refused where it matters.
struct Query<'a> {
    pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Query<'a> {
    fn new(query: &'a str) -> Self {
        Query {
            pairs: form_urlencoded::parse(query.as_bytes()).collect(),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == name)
    }

    /// The one value of `name`: missing or repeated is malformed (the app could read
    /// another one than the gateway).
    fn one(&self, name: &'static str) -> Result<Cow<'a, str>, Refused> {
        let mut values = self.pairs.iter().filter(|(k, _)| k == name);
        match (values.next(), values.next()) {
            (Some((_, v)), None) => Ok(v.clone()),
            (None, _) => Err(Refused::Malformed(match name {
                "hub.challenge" => "hub.challenge is missing",
                "hub.verify_token" => "hub.verify_token is missing",
                "hub.mode" => "hub.mode is missing",
                _ => "a handshake parameter is missing",
            })),
            (Some(_), Some(_)) => Err(Refused::Malformed("a handshake parameter is repeated")),
        }
    }
}

/// Where Asana secrets are kept when the gateway has a durable store (`[storage]`): a small
/// key/value table beside the queued deliveries. Keys are `asana/<route name>`.
pub trait SecretStore: Send + Sync {
    /// The value kept under `key`, if any.
    fn secret(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// Keeps `value` under `key` unless a value is already there, durably before it returns;
    /// returns the value kept (the earlier one when there was one).
    fn keep_first(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, String>;
    /// Removes the value under `key`, durably; whether there was one.
    fn forget(&self, key: &str) -> Result<bool, String>;
}

/// Asana's handed-over secret for one route: at most one, kept in the durable store when the
/// gateway has one, else in a file (created atomically, mode 0600), and the verifier of
/// `X-Hook-Signature` built from it. Either way the first secret kept wins, also across
/// snapshots and processes sharing the place.
pub struct AsanaSecret {
    /// The key in a [`SecretStore`].
    key: String,
    path: PathBuf,
    /// The route's `verify` table with the secret reference that [`AsanaSecret::offer`]
    /// resolves to the kept secret.
    spec: VerifySpec,
    held: RwLock<Option<Held>>,
}

struct Held {
    digest: [u8; 32],
    verifier: Arc<Verifier>,
}

/// The secret reference in an Asana route's `verify` table that stands for the secret the
/// handshake hands over.
pub const ASANA_SECRET_REFERENCE: &str = "handshake:x-hook-secret";

impl AsanaSecret {
    /// The keeper of route `route`'s secret, in `store` when the gateway has one, else in the
    /// file at `path`, with `spec` (the route's effective `verify` table, whose only secret is
    /// [`ASANA_SECRET_REFERENCE`]) for its verifier. Nothing is read until it is used.
    pub fn new(route: &str, path: &Path, spec: VerifySpec) -> AsanaSecret {
        AsanaSecret {
            key: format!("asana/{route}"),
            path: path.to_path_buf(),
            spec,
            held: RwLock::new(None),
        }
    }

    /// Where the secret is kept without a store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The verifier of deliveries, once a secret is held (read from where it is kept if
    /// another snapshot or process kept it since).
    pub fn verifier(&self, store: Option<&dyn SecretStore>) -> Option<Arc<Verifier>> {
        if let Some(held) = self.held.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return Some(held.verifier.clone());
        }
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        if held.is_none() {
            match self.load(store) {
                Ok(loaded) => *held = loaded,
                Err(e) => tracing::warn!(error = %e, "kept X-Hook-Secret not usable"),
            }
        }
        held.as_ref().map(|h| h.verifier.clone())
    }

    /// The kept secret, compiled; `None` when none is kept.
    fn load(&self, store: Option<&dyn SecretStore>) -> Result<Option<Held>, String> {
        let kept = match store {
            Some(store) => store.secret(&self.key)?,
            None => match std::fs::read(&self.path) {
                Ok(mut bytes) => {
                    if bytes.ends_with(b"\n") {
                        bytes.pop();
                    }
                    Some(bytes)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(format!("{}: {e}", self.path.display())),
            },
        };
        kept.map(|secret| {
            self.compile(&secret)
                .map_err(|e| format!("the kept X-Hook-Secret is not usable: {e}"))
        })
        .transpose()
    }

    fn compile(&self, secret: &[u8]) -> Result<Held, String> {
        if secret.is_empty() {
            return Err("empty".into());
        }
        let resolve = |reference: &str| {
            if reference == ASANA_SECRET_REFERENCE {
                Ok(Secret::new(secret))
            } else {
                Err("only the handshake's secret is used".to_string())
            }
        };
        let verifier = Verifier::compile(&self.spec, &resolve).map_err(|problems| {
            problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        Ok(Held {
            digest: Sha256::digest(secret).into(),
            verifier: Arc::new(verifier),
        })
    }

    /// Takes `secret` when none is kept (kept durably before it is used; the first one kept
    /// wins), accepts it again when it is the kept one, refuses another. What is kept is read
    /// again before a refusal, so a secret removed while the gateway runs can be replaced.
    pub fn offer(&self, secret: &str, store: Option<&dyn SecretStore>) -> Result<(), Refused> {
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        if self.compare(held.as_ref(), secret).is_ok() {
            return Ok(());
        }
        // Another secret, or none held yet: read what is kept now (the held one may have been
        // removed by `hookgate forget-handshake`, or kept by another snapshot or process).
        *held = self.load(store).map_err(Refused::Store)?;
        if held.is_none() {
            let kept = match store {
                Some(store) => store
                    .keep_first(&self.key, secret.as_bytes())
                    .map_err(Refused::Store)?,
                None => match create_private(&self.path, secret.as_bytes()) {
                    Ok(()) => secret.as_bytes().to_vec(),
                    // Another keeper wrote it first: compare with that one.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        match self.load(None).map_err(Refused::Store)? {
                            Some(loaded) => {
                                *held = Some(loaded);
                                return self.compare(held.as_ref(), secret);
                            }
                            None => return Err(Refused::Store("the kept secret vanished".into())),
                        }
                    }
                    Err(e) => return Err(Refused::Store(format!("{}: {e}", self.path.display()))),
                },
            };
            *held = Some(self.compile(&kept).map_err(Refused::Store)?);
        }
        self.compare(held.as_ref(), secret)
    }

    /// Removes the kept secret (`hookgate forget-handshake`), so that the next handshake may
    /// set a new one; whether one was kept.
    pub fn forget(&self, store: Option<&dyn SecretStore>) -> Result<bool, String> {
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        *held = None;
        match store {
            Some(store) => store.forget(&self.key),
            None => match std::fs::remove_file(&self.path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(format!("{}: {e}", self.path.display())),
            },
        }
    }

    fn compare(&self, held: Option<&Held>, secret: &str) -> Result<(), Refused> {
        let current = held.ok_or_else(|| Refused::Store("the kept secret vanished".into()))?;
        let offered: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        if bool::from(offered.ct_eq(&current.digest)) {
            Ok(())
        } else {
            Err(Refused::SecretHeld)
        }
    }
}

/// `hookgate forget-handshake --route NAME`: removes the Asana secret kept for the route (in
/// the store of `[storage]`, which needs the gateway stopped, else the file), so that the next
/// handshake sets a new one. Returns what was done, for the operator.
pub fn forget(config: &crate::config::Config, route: &str) -> Result<String, String> {
    let settings = config
        .route(route)
        .ok_or_else(|| format!("no route named {route:?}"))?;
    let keeper = settings
        .handshake
        .as_ref()
        .and_then(|h| h.asana())
        .ok_or_else(|| format!("route {route:?} has no asana handshake"))?;
    let redb = config
        .storage
        .as_ref()
        .and_then(|storage| match &storage.backend {
            crate::config::storage::Backend::Redb { path } => Some((path, storage.max_bytes)),
            // A Redis store keeps no handshake secrets: they are in files.
            crate::config::storage::Backend::Redis { .. } => None,
        });
    let (forgot, place) = match redb {
        Some((path, max_bytes)) => {
            let store =
                crate::delivery::redb_store::RedbStore::open(path, max_bytes).map_err(|e| {
                    format!("{e} (stop the gateway first: the store is open while it runs)")
                })?;
            (
                keeper.forget(Some(&store))?,
                format!("the store in {}", path.display()),
            )
        }
        None => (keeper.forget(None)?, keeper.path().display().to_string()),
    };
    Ok(if forgot {
        format!("route {route}: the kept X-Hook-Secret was removed from {place}; the next Asana handshake sets a new one\n")
    } else {
        format!("route {route}: no X-Hook-Secret was kept in {place}\n")
    })
}

/// Creates `path` holding `bytes` and a newline, atomically and only if it does not exist
/// (`AlreadyExists` otherwise): a new 0600 file beside it is written and synced, then
/// hard-linked to `path` (which fails rather than replace), then the directory is synced.
fn create_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("no file name"))?;
    let temporary = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let written = (|| {
        let mut file = options.open(&temporary)?;
        file.write_all(bytes)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::hard_link(&temporary, path)?;
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&temporary);
    written
}

#[cfg(test)]
mod tests;
