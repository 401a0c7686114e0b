//! Signature and token verification of webhook deliveries: one [`Verifier`] per route,
//! compiled once from the route's `verify = { ... }` table, then asked about every request.
//!
//! Owns: the `verify` table's file layer ([`VerifySpec`]), its validation (every problem at
//! once, keyed relative to the table), the algorithms of every scheme (one file each), the
//! [`Verified`] proof the router requires, and `hookgate sign`'s signing. Does not own: where
//! secrets come from (`${ENV}` / `file:` references are resolved by the closure the config
//! loader passes to [`Verifier::compile`]), reading or bounding the body, the HTTP answer,
//! metrics, or deduplication of delivery ids (see [`Verified::signed_id`] for the id to use).
//!
//! # Schemes
//! `github`, `gitlab`, `stripe`, `slack`, `shopify`, `standard-webhooks` (alias `svix`),
//! `twilio`, `zoom`, `twitch`, `discord`, `hubspot`, `square`, `paddle`, `linear`, `token`, the
//! generic `hmac`, and three for the long tail: `ecdsa` (P-256 over timestamp + body, SendGrid),
//! `jwt` (a JWS with HS256/RS256/ES256 and a body-hash claim, Netlify and Plaid) and `mailgun`
//! (the signature inside the body). Public keys come from PEM, JWK or JWK Set files
//! (`keys.rs`). Providers without a scheme of their own map onto these through the
//! preset table in [`providers`] (`verify = { provider = "bitbucket", secrets = [...] }`): Meta
//! uses `github`; Mux and Calendly use `stripe` with their own header; Clerk uses `svix`;
//! Bitbucket, Jira, Intercom, Typeform, PagerDuty, Sentry, Vercel, Zendesk and most others use
//! `hmac`. `hookgate providers` lists every row.
//!
//! # Order of checks (and why)
//! Every scheme answers in the same order, and each class of answer depends only on what the
//! sender can already see:
//! 1. **Missing**: a required header is absent or empty.
//! 2. **Malformed**: a header does not parse (wrong prefix, bad hex/base64, wrong length, a
//!    non-integer timestamp, no entry of the expected version in a signature list). With it,
//!    **Ambiguous**: the signature could not tell apart spellings of the request that the app
//!    may read differently (HubSpot's decoded URI escapes); a 400, not a 401.
//! 3. **Expired**: the signed timestamp is outside `now ± tolerance`.
//! 4. **Mismatch**: no provided signature equals the MAC under any configured secret.
//!
//! Steps 1–3 use public data only, so their answers reveal nothing about the key. Checking the
//! window *before* the MAC means a stale request is always "expired" whether or not its
//! signature is genuine: a replayed or edited old delivery never learns whether it was
//! validly signed (MAC-then-time would hand out exactly that oracle), and replays cost no HMAC
//! work. A stale request whose signature header does not even parse is "malformed", not
//! "expired": expiry is only reported about a syntactically valid signed request. The one
//! exception is Linear, whose timestamp lives *inside* the signed body: the body is parsed only
//! after its MAC matched. Two schemes must read unauthenticated data to find what is signed, and
//! keep the same order: `jwt` reads the token's claims (bounded by the header size) and
//! `mailgun` reads the signature block out of the body; both refuse a member name given twice.
//!
//! # Policy choices
//! - **Both directions.** Timestamps more than `tolerance` in the future are rejected too.
//!   Stripe's SDKs check only the past (vector `stripe-future-timestamp-sdk-accepts`); we reject
//!   future timestamps for every scheme, which also closes the digit-shifting forgeries
//!   possible in separator-less formats such as HubSpot's `…{body}{timestamp}`.
//! - **Rotation.** Every scheme takes several secrets; any one matching passes. Lists of
//!   signatures in one header (Stripe/Mux `v1`, Paddle `h1`, Standard Webhooks `v1,`, generic
//!   `separator`) accept any entry; entries of other versions are skipped.
//! - **Constant time.** Every MAC and token comparison uses `subtle`'s `ConstantTimeEq` over
//!   decoded bytes of equal length, across all provided signatures. Tokens are compared as
//!   SHA-256 digests so neither their content nor their length leaks through timing.
//! - **No secret material in output.** Errors carry only header names, lengths, versions and
//!   times; never a secret, an expected MAC or a provided signature. `Debug` of [`Verifier`]
//!   and [`VerifySpec`] redacts.
//! - **Repeated headers** (the same signature header twice) are malformed: the gateway and the
//!   upstream must not disagree about which one counted.
//!
//! # Cost
//! The keyed HMAC state of every secret is computed once at compile time and cloned per
//! request (a memcpy, no allocation); the MAC is fed incrementally (prefix, body, suffix), the
//! body is never copied, and provided signatures are decoded into stack buffers. Exceptions:
//! Twilio form bodies (parameters must be decoded and sorted), Discord (Ed25519 strict
//! verification needs the message contiguous: one copy of timestamp+body), `jwt` (the token's
//! header and claims are decoded, a few hundred bytes), `mailgun` (the body is parsed to find
//! the signature block), `ecdsa` (ring verifies the message in one piece: one copy of
//! timestamp+body) and error details.

mod clock;
mod compile;
mod discord;
mod ecdsa;
mod engine;
mod generic;
mod github;
mod gitlab;
mod hubspot;
mod jwt;
mod keys;
mod linear;
mod mac;
mod mailgun;
mod paddle;
pub mod providers;
mod shopify;
mod slack;
mod square;
mod standard_webhooks;
mod stripe;
#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;
mod token;
mod twilio;
mod twitch;
mod url;
mod wire;
mod zoom;

use std::borrow::Cow;
use std::fmt;
use std::time::SystemTime;

use crate::problem::Problem;
use crate::secret::Secret;

/// Every scheme name accepted in `verify.scheme` (aliases included).
pub const SCHEMES: &[&str] = &[
    "github",
    "gitlab",
    "stripe",
    "slack",
    "shopify",
    "standard-webhooks",
    "svix",
    "twilio",
    "zoom",
    "twitch",
    "discord",
    "hubspot",
    "square",
    "paddle",
    "linear",
    "token",
    "hmac",
    "ecdsa",
    "jwt",
    "mailgun",
];

/// The file layer of a route's `verify = { ... }` table.
///
/// Which optional keys a scheme accepts, and their defaults, is checked by
/// [`Verifier::compile`]; a key the scheme does not use is reported, not ignored.
#[derive(Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    /// Scheme name, one of [`SCHEMES`]. May be left out when `provider` is set (then it is the
    /// provider's scheme, and if given must be that scheme).
    #[serde(default)]
    pub scheme: String,
    /// A provider preset from [`providers`] (`"shopify"`, `"bitbucket"`, …; `hookgate
    /// providers` lists them): its scheme and parameters are the defaults, and every other
    /// key set here overrides the row's value.
    pub provider: Option<String>,
    /// Secret references (`"${STRIPE_WEBHOOK_SECRET}"`, `"file:/run/secrets/x"`), resolved
    /// through the resolver given to [`Verifier::compile`]. Several for rotation.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Allowed clock difference, both directions (`"5m"`). Timestamped schemes only.
    pub tolerance: Option<String>,
    /// External origin (plus any path prefix a load balancer strips) the provider calls, e.g.
    /// `"https://hooks.example.com"`, with the port if the provider's URL has one; the
    /// request's path and query are appended as received (HubSpot: with its twelve listed
    /// escapes decoded; Twilio: also tried with the default port toggled, as its SDKs do).
    /// Required by `twilio`, `hubspot`, `square`; optional `{url}` for `hmac`.
    pub public_url: Option<String>,
    /// `discord`: the application's Ed25519 public key, hex (or a `${ENV}`/`file:` reference).
    /// `ecdsa`, `jwt` (RS256/ES256): the sender's public key as PEM, JWK, JWK Set or base64
    /// DER, inline or as a `file:` path relative to the config file (re-read on reload).
    pub public_key: Option<String>,
    /// `github`: also accept the legacy SHA-1 `X-Hub-Signature` when the SHA-256 header is
    /// absent. Default false.
    pub sha1_fallback: Option<bool>,
    /// `hmac`: `sha1` | `sha256` (default) | `sha512`; `twilio`: `sha1` (default) | `sha256`;
    /// `jwt`: `HS256` | `RS256` | `ES256` (required: the only algorithm accepted).
    pub algorithm: Option<String>,
    /// `hmac`/`token`/`jwt`/`ecdsa`: the header carrying the signature/token; `stripe`: header
    /// name for Stripe-format providers such as Mux (default `Stripe-Signature`).
    pub header: Option<String>,
    /// `hmac`: `hex` (default) | `base64`.
    pub encoding: Option<String>,
    /// `hmac`: text before the encoded MAC, e.g. `"sha256="`.
    pub prefix: Option<String>,
    /// `hmac`: the header holds a list of signatures separated by this character (`","`).
    pub separator: Option<String>,
    /// `hmac`: what is signed, with `{body}` (exactly once), `{timestamp}`, `{id}`, `{method}`,
    /// `{url}` placeholders. Default `"{body}"`.
    pub signed: Option<String>,
    /// `hmac`: header carrying the signed timestamp (required with `{timestamp}`); `ecdsa`: the
    /// timestamp header (required).
    pub timestamp_header: Option<String>,
    /// `hmac`: `unix` (seconds, default) | `unix_ms` | `rfc3339`.
    pub timestamp_format: Option<String>,
    /// `hmac`: header carrying the signed delivery id (required with `{id}`).
    pub id_header: Option<String>,
    /// `token`/`jwt`: expect `Authorization: Bearer <token>`.
    pub bearer: Option<bool>,
    /// `jwt`: the `iss` the token must carry (Netlify: `"netlify"`).
    pub issuer: Option<String>,
    /// `jwt`: the claim holding the lower-case hex SHA-256 of the body (Netlify: `"sha256"`,
    /// Plaid: `"request_body_sha256"`). Without it the token does not cover the body.
    pub body_sha256_claim: Option<String>,
    /// Which bytes the signature covers when the body has a `Content-Encoding`: `"as_sent"`
    /// (default: the bytes on the wire, what an HMAC over the raw body covers) or `"decoded"`
    /// (the body once gzip/deflate/br is undone, as Stream signs). Not for token schemes.
    pub signed_body: Option<String>,
}

impl VerifySpec {
    /// A spec with only `scheme` and `secrets` set.
    pub fn new(scheme: &str, secrets: &[&str]) -> Self {
        VerifySpec {
            scheme: scheme.to_string(),
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
            ..VerifySpec::default()
        }
    }
}

impl fmt::Debug for VerifySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // References are fine to print; anything that looks like an inline value is not.
        let secrets: Vec<&str> = self
            .secrets
            .iter()
            .map(|s| {
                if s.starts_with("${") || s.starts_with("file:") {
                    s.as_str()
                } else {
                    "[redacted]"
                }
            })
            .collect();
        f.debug_struct("VerifySpec")
            .field("scheme", &self.scheme)
            .field("provider", &self.provider)
            .field("secrets", &secrets)
            .field("tolerance", &self.tolerance)
            .field("public_url", &self.public_url)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// What the verifier looks at: the request as received, with the whole body buffered.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// `"POST"`, as received (HubSpot signs it).
    pub method: &'a str,
    /// Origin-form target as received, e.g. `"/hooks/twilio?foo=1"` (URL-bound schemes sign
    /// `public_url` + this).
    pub path_and_query: &'a str,
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
}

/// Proof that a body passed its route's verification. Only this module can make one.
#[derive(Clone, Copy)]
pub struct Verified<'a> {
    /// The body as the app reads it: `wire` with its content coding undone.
    body: &'a [u8],
    /// The bytes as received.
    wire: &'a [u8],
    scheme: &'static str,
    signed_id: Option<&'a str>,
}

impl<'a> Verified<'a> {
    fn new(body: &'a [u8], scheme: &'static str, signed_id: Option<&'a str>) -> Self {
        Verified {
            body,
            wire: body,
            scheme,
            signed_id,
        }
    }

    /// The body as the app reads it: the received bytes with their content coding
    /// (`Content-Encoding`, see `encoding`) undone, or the received bytes themselves when the
    /// request has none or the route reads nothing of the body. Events, delivery ids and
    /// anything else that reads the body read these.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The exact bytes received, which the signature (or, with `signed_body = "decoded"`, the
    /// signed decoding of them) vouches for: forward these, nothing else.
    pub fn wire(&self) -> &'a [u8] {
        self.wire
    }

    /// Canonical scheme that vouched for the body (`"none"` for routes without `verify`).
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// The delivery id covered by the signature (Standard Webhooks `webhook-id`, Twitch
    /// message id, `hmac` `{id}`), the only ids safe to deduplicate on.
    pub fn signed_id(&self) -> Option<&'a str> {
        self.signed_id
    }
}

impl fmt::Debug for Verified<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("scheme", &self.scheme)
            .field("body_len", &self.body.len())
            .field("signed_id", &self.signed_id)
            .finish()
    }
}

/// Why a request failed verification. The detail is for the log: it names headers, lengths
/// and times, never secret material, the expected signature or the provided one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("signature missing: {0}")]
    Missing(Cow<'static, str>),
    #[error("signature malformed: {0}")]
    Malformed(Cow<'static, str>),
    /// The signature would cover spellings of the request that the app may read differently
    /// (HubSpot's partially decoded URI, see `url.rs`): refused as a bad request, whoever
    /// signed it. Decided on public data, with the malformed checks.
    #[error("request ambiguous: {0}")]
    Ambiguous(Cow<'static, str>),
    #[error("signature mismatch: {0}")]
    Mismatch(Cow<'static, str>),
    #[error("timestamp out of range: {0}")]
    Expired(Cow<'static, str>),
}

impl VerifyError {
    /// Metric label: `missing` | `malformed` | `ambiguous` | `mismatch` | `expired`.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::Missing(_) => "missing",
            VerifyError::Malformed(_) => "malformed",
            VerifyError::Ambiguous(_) => "ambiguous",
            VerifyError::Mismatch(_) => "mismatch",
            VerifyError::Expired(_) => "expired",
        }
    }

    /// Client-facing error code: `signature_missing` | `signature_invalid` | `bad_request`
    /// (ambiguous) | `timestamp_out_of_range`.
    pub fn error_code(&self) -> &'static str {
        match self {
            VerifyError::Missing(_) => "signature_missing",
            VerifyError::Malformed(_) | VerifyError::Mismatch(_) => "signature_invalid",
            VerifyError::Ambiguous(_) => "bad_request",
            VerifyError::Expired(_) => "timestamp_out_of_range",
        }
    }

    /// Non-secret detail for the log.
    pub fn detail(&self) -> &str {
        match self {
            VerifyError::Missing(d)
            | VerifyError::Malformed(d)
            | VerifyError::Ambiguous(d)
            | VerifyError::Mismatch(d)
            | VerifyError::Expired(d) => d,
        }
    }
}

/// A compiled `verify` table: scheme, resolved keys (precomputed HMAC states), options.
pub struct Verifier {
    scheme: &'static str,
    /// The provider row the route named, if any.
    provider: Option<&'static providers::Provider>,
    /// Whether the signature covers the decoded body (`signed_body = "decoded"`).
    signs_decoded: bool,
    kind: Kind,
}

enum Kind {
    Disabled,
    Hmac(Box<engine::HmacScheme>),
    Token(token::TokenCheck),
    Gitlab(gitlab::Gitlab),
    Twilio(twilio::Twilio),
    Discord(discord::Discord),
    Ecdsa(ecdsa::Ecdsa),
    Jwt(Box<jwt::Jwt>),
    Mailgun(mailgun::Mailgun),
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.scheme)
            .field("provider", &self.provider())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// The verifier of a route without `verify`: every request passes, as scheme `"none"`.
    /// Explicit so that every route produces a [`Verified`] the same way.
    pub fn disabled() -> Self {
        Verifier {
            scheme: "none",
            provider: None,
            signs_decoded: false,
            kind: Kind::Disabled,
        }
    }

    /// Validates `spec` for its scheme and resolves every secret through `resolve_secret`.
    ///
    /// On failure returns every problem found, each keyed relative to the `verify` table
    /// (`"scheme"`, `"secrets[1]"`, `"tolerance"`, `"public_url"`, …); the caller prefixes the
    /// route with [`Problem::within`]. With `provider`, the row's table is overlaid first
    /// ([`providers::overlay`]), so a key the route sets that the row's scheme does not use is
    /// reported like any other.
    pub fn compile(
        spec: &VerifySpec,
        resolve_secret: &dyn Fn(&str) -> Result<Secret, String>,
    ) -> Result<Verifier, Vec<Problem>> {
        let effective;
        let mut provider = None;
        let spec = match spec.provider.as_deref() {
            None => spec,
            Some(name) => {
                let Some(row) = providers::find(name) else {
                    let close = providers::close_names(name);
                    let hint = if close.is_empty() {
                        "`hookgate providers` lists them".to_string()
                    } else {
                        format!(
                            "did you mean {}? (`hookgate providers` lists all)",
                            close.join(", ")
                        )
                    };
                    let mut problems = vec![Problem::new(
                        "provider",
                        format!("unknown provider {name:?}; {hint}"),
                    )];
                    secret_problems(spec, resolve_secret, &mut problems);
                    return Err(problems);
                };
                if !spec.scheme.is_empty()
                    && canonical_scheme(&spec.scheme) != canonical_scheme(&row.verify.scheme)
                {
                    return Err(vec![Problem::new(
                        "scheme",
                        format!(
                            "provider {name:?} uses scheme {:?}; remove scheme (the provider sets it) or remove provider",
                            row.verify.scheme
                        ),
                    )]);
                }
                provider = Some(row);
                effective = providers::overlay(&row.verify, spec);
                &effective
            }
        };
        let Some(scheme) = canonical_scheme(&spec.scheme) else {
            let mut problems = vec![Problem::new(
                "scheme",
                if spec.scheme.is_empty() {
                    format!(
                        "set scheme (one of: {}) or provider (`hookgate providers` lists them)",
                        SCHEMES.join(", ")
                    )
                } else {
                    format!(
                        "unknown scheme {:?}; use one of: {}",
                        spec.scheme,
                        SCHEMES.join(", ")
                    )
                },
            )];
            // Still report unresolvable secrets, so one run shows everything.
            secret_problems(spec, resolve_secret, &mut problems);
            return Err(problems);
        };
        let mut cx = compile::Cx::new(spec, scheme, resolve_secret);
        let signs_decoded = match spec.signed_body.as_deref() {
            None | Some("as_sent") => false,
            Some("decoded") if matches!(scheme, "token" | "gitlab") => {
                cx.problem(
                    "signed_body",
                    format!("the {scheme} scheme signs no body; remove signed_body"),
                );
                false
            }
            Some("decoded") => true,
            Some(other) => {
                cx.problem(
                    "signed_body",
                    format!("unknown value {other:?}; use \"as_sent\" (the default: the bytes received) or \"decoded\" (the body once its Content-Encoding is undone)"),
                );
                false
            }
        };
        let kind = match scheme {
            "github" => github::compile(&mut cx).map(|h| Kind::Hmac(Box::new(h))),
            "gitlab" => gitlab::compile(&mut cx).map(Kind::Gitlab),
            "stripe" => stripe::compile(&mut cx).map(|h| Kind::Hmac(Box::new(h))),
            "slack" => slack::compile(&mut cx).map(|h| Kind::Hmac(Box::new(h))),
            "shopify" => shopify::compile(&mut cx).map(|h| Kind::Hmac(Box::new(h))),
            "standard-webhooks" => {
                standard_webhooks::compile(&mut cx).map(|h| Kind::Hmac(Box::new(h)))
            }
            "twilio" => twilio::compile(&mut cx).map(Kind::Twilio),
            "zoom" => zoom::compile(&mut cx).map(|h| Kind::Hmac(Box::new(h))),
            "twitch" => twitch::compile(&mut cx).map(|h| Kind::Hmac(Box::new(h))),
            "discord" => discord::compile(&mut cx).map(Kind::Discord),
            "hubspot" => hubspot::compile(&mut cx).map(|h| Kind::Hmac(Box::new(h))),
            "square" => square::compile(&mut cx).map(|h| Kind::Hmac(Box::new(h))),
            "paddle" => paddle::compile(&mut cx).map(|h| Kind::Hmac(Box::new(h))),
            "linear" => linear::compile(&mut cx).map(|h| Kind::Hmac(Box::new(h))),
            "token" => token::compile(&mut cx).map(Kind::Token),
            "ecdsa" => ecdsa::compile(&mut cx).map(Kind::Ecdsa),
            "jwt" => jwt::compile(&mut cx).map(|j| Kind::Jwt(Box::new(j))),
            "mailgun" => mailgun::compile(&mut cx).map(Kind::Mailgun),
            _ => generic::compile(&mut cx).map(|h| Kind::Hmac(Box::new(h))),
        };
        match (cx.into_problems(), kind) {
            (problems, Some(kind)) if problems.is_empty() => Ok(Verifier {
                scheme,
                provider,
                signs_decoded,
                kind,
            }),
            (problems, _) if !problems.is_empty() => Err(problems),
            // A scheme that failed must have said why; never accept silently.
            _ => Err(vec![Problem::new("", "verify table could not be compiled")]),
        }
    }

    /// Canonical scheme name (`"standard-webhooks"` for `svix`, `"none"` when disabled), for
    /// the `scheme` metric label.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// The provider row the route named (`verify = { provider = "..." }`), if any.
    pub fn provider(&self) -> Option<&'static str> {
        self.provider.map(|p| p.name.as_str())
    }

    /// The provider row itself, for its event and delivery-id sources.
    pub fn provider_row(&self) -> Option<&'static providers::Provider> {
        self.provider
    }

    /// One line for `hookgate check`: the scheme, and with a provider its name and where its
    /// event type and delivery id are (`hmac, provider bitbucket: event header:X-Event-Key,
    /// id header:X-Request-UUID`).
    pub fn describe(&self) -> String {
        match self.provider {
            None => self.scheme.to_string(),
            Some(p) => format!(
                "{}, provider {}: event {}, id {}",
                self.scheme, p.name, p.event, p.delivery_id
            ),
        }
    }

    /// The header whose value is the secret itself (the `token` scheme's `header`), which
    /// must never be shown; `None` for schemes that send a signature, not the secret.
    pub fn credential_header(&self) -> Option<&http::HeaderName> {
        match &self.kind {
            Kind::Token(t) => Some(t.header()),
            _ => None,
        }
    }

    /// Whether the signature covers the decoded body (`signed_body = "decoded"`): a request
    /// with a `Content-Encoding` must then be decoded before [`Verifier::verify_decoded`].
    pub fn signs_decoded(&self) -> bool {
        self.signs_decoded
    }

    /// Verifies a request whose body (`request.body`, as received) has a content coding, and
    /// `decoded`, that body with its coding undone: over `decoded` when the route signs the
    /// decoded body ([`Verifier::signs_decoded`]), else over the received bytes. The
    /// [`Verified`] reads `decoded` and forwards `request.body` either way.
    ///
    /// # Errors
    /// As [`Verifier::verify`].
    pub fn verify_decoded<'a>(
        &self,
        request: &Request<'a>,
        decoded: &'a [u8],
        now: SystemTime,
    ) -> Result<Verified<'a>, VerifyError> {
        let signed = if self.signs_decoded {
            Request {
                body: decoded,
                ..*request
            }
        } else {
            *request
        };
        let verified = self.verify(&signed, now)?;
        Ok(Verified {
            body: decoded,
            wire: request.body,
            ..verified
        })
    }

    /// Verifies `request` as of `now`. On success the [`Verified`] holds `request.body`.
    pub fn verify<'a>(
        &self,
        request: &Request<'a>,
        now: SystemTime,
    ) -> Result<Verified<'a>, VerifyError> {
        let signed_id = match &self.kind {
            Kind::Disabled => None,
            Kind::Hmac(h) => h.verify(request, now)?,
            Kind::Token(t) => {
                t.verify(request)?;
                None
            }
            Kind::Gitlab(g) => g.verify(request, now)?,
            Kind::Twilio(t) => {
                t.verify(request)?;
                None
            }
            Kind::Discord(d) => {
                d.verify(request, now)?;
                None
            }
            Kind::Ecdsa(e) => {
                e.verify(request, now)?;
                None
            }
            Kind::Jwt(j) => {
                j.verify(request, now)?;
                None
            }
            Kind::Mailgun(m) => m.verify(request, now)?,
        };
        Ok(Verified::new(request.body, self.scheme, signed_id))
    }

    /// Headers of a correctly signed delivery of `request.body` (with the first secret, as of
    /// `now`), for `hookgate sign`. Ids are random. For token schemes the header is the token
    /// itself. `Err` (with what to do) for schemes the gateway cannot sign (discord) or
    /// requests it cannot sign as given (twilio JSON without `bodySHA256`).
    pub fn sign(
        &self,
        request: &Request<'_>,
        now: SystemTime,
    ) -> Result<Vec<(String, String)>, String> {
        match &self.kind {
            Kind::Disabled => Ok(Vec::new()),
            Kind::Hmac(h) => h.sign(request, now),
            Kind::Token(t) => Ok(t.sign()),
            Kind::Gitlab(g) => g.sign(request, now),
            Kind::Twilio(t) => t.sign(request),
            Kind::Discord(_) => Err(discord::CANNOT_SIGN.to_string()),
            Kind::Ecdsa(_) => Err(ecdsa::CANNOT_SIGN.to_string()),
            Kind::Jwt(j) => j.sign(request, now),
            // The signature travels in the body: see `sign_body`.
            Kind::Mailgun(_) => Ok(Vec::new()),
        }
    }

    /// For schemes that carry the signature inside the body (`mailgun`): `body` with a
    /// signature for the first secret as of `now` added, and the Content-Type to send it with.
    /// `None` for every other scheme (their signature is in headers, see [`Verifier::sign`]).
    pub fn sign_body(
        &self,
        body: &[u8],
        now: SystemTime,
    ) -> Option<Result<(Vec<u8>, &'static str), String>> {
        match &self.kind {
            Kind::Mailgun(m) => {
                let content_type = if mailgun::Mailgun::is_json(body) {
                    "application/json"
                } else {
                    "application/x-www-form-urlencoded"
                };
                Some(m.sign_body(body, now).map(|b| (b, content_type)))
            }
            _ => None,
        }
    }

    /// Zoom's `endpoint.url_validation` answer: `hex(HMAC-SHA256(secret, plainToken))` with
    /// the first secret. `None` for other schemes.
    pub fn zoom_url_validation(&self, plain_token: &str) -> Option<String> {
        match (&self.kind, self.scheme) {
            (Kind::Hmac(h), "zoom") => zoom::url_validation(h, plain_token),
            _ => None,
        }
    }
}

/// Reports every secret reference that does not resolve (used when compiling stops early).
fn secret_problems(
    spec: &VerifySpec,
    resolve_secret: &dyn Fn(&str) -> Result<Secret, String>,
    problems: &mut Vec<Problem>,
) {
    for (i, reference) in spec.secrets.iter().enumerate() {
        if let Err(e) = resolve_secret(reference) {
            problems.push(Problem::new(format!("secrets[{i}]"), e));
        }
    }
}

/// Canonical name of a scheme as written in the config, or `None` if unknown.
fn canonical_scheme(name: &str) -> Option<&'static str> {
    match name {
        "svix" => Some("standard-webhooks"),
        other => SCHEMES
            .iter()
            .copied()
            .find(|s| *s == other && *s != "svix"),
    }
}

fn missing(detail: impl Into<Cow<'static, str>>) -> VerifyError {
    VerifyError::Missing(detail.into())
}

fn malformed(detail: impl Into<Cow<'static, str>>) -> VerifyError {
    VerifyError::Malformed(detail.into())
}

fn ambiguous(detail: impl Into<Cow<'static, str>>) -> VerifyError {
    VerifyError::Ambiguous(detail.into())
}

fn mismatch(detail: impl Into<Cow<'static, str>>) -> VerifyError {
    VerifyError::Mismatch(detail.into())
}

fn expired(detail: impl Into<Cow<'static, str>>) -> VerifyError {
    VerifyError::Expired(detail.into())
}
