//! A route's `handshake` key: whether the gateway answers the provider's setup handshake
//! itself (`crate::handshake`), and with what.
//!
//! Owns: [`HandshakeFile`] as written, and its validation into a [`crate::handshake::Handshake`]
//! (problems keyed `handshake`, `handshake.kind`, `handshake.verify_token`,
//! `handshake.secret_file`, `verify`, relative to the route). Does not own recognising or
//! answering handshakes (`handshake`) or the route's other keys.
//!
//! ```toml
//! [[routes]]
//! verify = { provider = "slack", secrets = ["${SLACK_SIGNING_SECRET}"] }
//! handshake = true                 # the kind comes from the provider row (or the scheme)
//!
//! handshake = "x-crc"              # or named: for providers without a row's handshake
//! handshake = { verify_token = "${META_VERIFY_TOKEN}" }          # Meta: its verify token
//! handshake = { kind = "asana", secret_file = "asana.secret" }   # Asana: where its secret is kept
//! ```
//! Without the key (or with `false`) the handshake goes to the app, as any request.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::secrets::Resolver;
use super::Problem;
use crate::handshake::{AsanaSecret, Handshake, Kind, ASANA_SECRET_REFERENCE};
use crate::secret::Secret;
use crate::verify::{providers, Verifier, VerifySpec};

/// `handshake = true | false | "kind" | { kind, verify_token, secret_file }` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum HandshakeFile {
    On(bool),
    Kind(String),
    Table(HandshakeTable),
}

/// The table form of `handshake`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandshakeTable {
    /// One of the kinds of [`Kind`]; by default the provider row's, else the scheme's.
    pub kind: Option<String>,
    /// Meta: the verify token entered in the app dashboard (`${ENV}` or `file:`).
    pub verify_token: Option<String>,
    /// Asana: the file the handed-over secret is kept in when there is no `[storage]`,
    /// relative to the config file; default `<route name>.hook-secret` beside it.
    pub secret_file: Option<String>,
}

/// What the route's verifier must be compiled from, decided before it is compiled.
pub struct Plan {
    kind: Kind,
    table: HandshakeTable,
    /// Asana: the `verify` table to compile instead of the route's (its secret is the
    /// handshake's, [`ASANA_SECRET_REFERENCE`]).
    pub verify: Option<VerifySpec>,
}

/// Step 1, before the route's verifier is compiled: which handshake the route asks for, if
/// any. Problems are keyed relative to the route.
pub fn plan(
    file: Option<&HandshakeFile>,
    verify: Option<&VerifySpec>,
) -> Result<Option<Plan>, Vec<Problem>> {
    let (named, table) = match file {
        None | Some(HandshakeFile::On(false)) => return Ok(None),
        Some(HandshakeFile::On(true)) => (None, HandshakeTable::default()),
        Some(HandshakeFile::Kind(kind)) => (Some(("handshake", kind.clone())), Default::default()),
        Some(HandshakeFile::Table(table)) => (
            table.kind.clone().map(|k| ("handshake.kind", k)),
            table.clone(),
        ),
    };
    let row = verify
        .and_then(|v| v.provider.as_deref())
        .and_then(providers::find);
    let implied = match row {
        Some(row) => row.handshake.as_deref().and_then(Kind::parse),
        None => verify.and_then(|v| Kind::of_scheme(&v.scheme)),
    };
    let mut problems = Vec::new();
    let kind = match named {
        Some((key, name)) => match Kind::parse(&name) {
            None => {
                return Err(vec![Problem::new(
                    key,
                    format!("unknown handshake kind; use one of: {}", kind_names()),
                )])
            }
            Some(kind) if implied.is_some_and(|i| i != kind) => {
                return Err(vec![Problem::new(
                    key,
                    format!(
                        "the route's provider answers the {} handshake; write handshake = true",
                        implied.map_or("", Kind::as_str)
                    ),
                )])
            }
            Some(kind) => kind,
        },
        None => match implied {
            Some(kind) => kind,
            // Only Meta's handshake has a verify token: `handshake = { verify_token = … }` on
            // a route verified as GitHub-style `X-Hub-Signature-256` (Meta's scheme) without
            // `provider = "meta"` means Meta's, as the README shows it.
            None if table.verify_token.is_some() => Kind::Meta,
            None => {
                return Err(vec![Problem::new(
                    "handshake",
                    format!(
                        "the route's provider or scheme has no setup handshake; remove handshake, or name one (handshake = \"x-crc\"; kinds: {})",
                        kind_names()
                    ),
                )])
            }
        },
    };
    if kind.signed() && verify.is_none() {
        problems.push(Problem::new(
            "handshake",
            format!(
                "{} signs its handshake: add the route's verify table, so the handshake is answered only once verified",
                kind.as_str()
            ),
        ));
    }
    if kind.needs_key() && verify.is_none_or(|v| v.secrets.is_empty()) {
        problems.push(Problem::new(
            "handshake",
            format!(
                "the {} handshake is answered with an HMAC of the route's first secret: add verify.secrets",
                kind.as_str()
            ),
        ));
    }
    if kind == Kind::XCrc && !signs_the_body_alone(verify) {
        problems.push(Problem::new(
            "handshake",
            "the x-crc answer is HMAC-SHA256 of any crc_token under the route's first secret, so it signs whatever anyone asks: on a route whose signature covers more than the body (a timestamp, a URL, a JWT) that forges deliveries; use x-crc only with X's own scheme: verify = { scheme = \"hmac\", header = \"x-twitter-webhooks-signature\", prefix = \"sha256=\", encoding = \"base64\", secrets = [...] } (no signed template)",
        ));
    }
    match (kind, &table.verify_token) {
        (Kind::Meta, None) => problems.push(Problem::new(
            "handshake",
            "Meta's handshake needs the verify token: handshake = { verify_token = \"${META_VERIFY_TOKEN}\" }",
        )),
        (Kind::Meta, Some(_)) | (_, None) => {}
        (_, Some(_)) => problems.push(Problem::new(
            "handshake.verify_token",
            "only the meta handshake has a verify token; remove it",
        )),
    }
    if kind != Kind::Asana && table.secret_file.is_some() {
        problems.push(Problem::new(
            "handshake.secret_file",
            "only the asana handshake keeps a secret; remove it",
        ));
    }
    let asana_verify = (kind == Kind::Asana)
        .then(|| asana_spec(verify, &mut problems))
        .flatten();
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Some(Plan {
        kind,
        table,
        verify: asana_verify,
    }))
}

/// Whether `verify` is the generic `hmac` scheme over the body alone (X's own scheme): the
/// only one an X CRC answer may share its secret with. With anything else in the signed
/// message (Stripe's `{t}.{body}`, a JWS signing input, `{timestamp}`/`{url}` templates) the
/// answer to a chosen `crc_token` is a valid signature of a chosen delivery. With the body
/// alone, only bodies made of `crc_token` characters could be signed that way, and those are
/// refused at run time ([`crate::handshake::Handshake::signed`]).
fn signs_the_body_alone(verify: Option<&VerifySpec>) -> bool {
    verify.is_some_and(|v| {
        v.provider.is_none()
            && v.scheme == "hmac"
            && v.signed.as_deref().is_none_or(|t| t == "{body}")
    })
}

/// Asana's `verify` table: the route's (default `hmac` over the body in `X-Hook-Signature`,
/// hex HMAC-SHA256), its one secret the handshake's.
fn asana_spec(verify: Option<&VerifySpec>, problems: &mut Vec<Problem>) -> Option<VerifySpec> {
    let mut spec = match verify {
        Some(spec) => spec.clone(),
        None => VerifySpec {
            scheme: "hmac".into(),
            header: Some("X-Hook-Signature".into()),
            ..VerifySpec::default()
        },
    };
    if !spec.secrets.is_empty() {
        problems.push(Problem::new(
            "verify.secrets",
            "an Asana route with handshake takes its secret from the X-Hook-Secret handshake; remove secrets (or remove handshake and configure the secret)",
        ));
        return None;
    }
    spec.secrets = vec![ASANA_SECRET_REFERENCE.to_string()];
    Some(spec)
}

/// The stand-in for [`ASANA_SECRET_REFERENCE`] while the route's verifier is compiled: a
/// random key nobody knows, so that until a secret is held nothing verifies.
pub fn placeholder_secret() -> Secret {
    Secret::new(format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    ))
}

/// Step 2, once the route's verifier compiled: the handshake with its secrets resolved.
pub fn compile(
    plan: Plan,
    route_name: &str,
    verify: Option<&VerifySpec>,
    verifier: &Verifier,
    resolver: &Resolver<'_>,
) -> Result<Arc<Handshake>, Vec<Problem>> {
    let mut problems = Vec::new();
    let key = if plan.kind.needs_key() {
        verify
            .and_then(|v| v.secrets.first())
            .and_then(|reference| resolver.resolve(reference).ok())
    } else {
        None
    };
    let verify_token = match &plan.table.verify_token {
        Some(reference) => match resolver.resolve(reference) {
            Ok(token) => Some(token),
            Err(e) => {
                problems.push(Problem::new("handshake.verify_token", e));
                None
            }
        },
        None => None,
    };
    let asana = match plan.verify {
        Some(spec) => {
            let path = secret_path(
                resolver.base_dir(),
                route_name,
                plan.table.secret_file.as_deref(),
            );
            Some(Arc::new(AsanaSecret::new(route_name, &path, spec)))
        }
        None => None,
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let provider = verifier.provider().unwrap_or(plan.kind.as_str());
    Ok(Arc::new(Handshake::new(
        plan.kind,
        provider,
        key,
        verify_token,
        asana,
    )))
}

fn secret_path(base_dir: &Path, route_name: &str, file: Option<&str>) -> PathBuf {
    match file {
        Some(file) => base_dir.join(file),
        None => base_dir.join(format!("{route_name}.hook-secret")),
    }
}

fn kind_names() -> String {
    Kind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
