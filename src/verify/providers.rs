//! Provider presets: one row per webhook provider, written as data in `providers.toml` and
//! compiled into the binary. A route names a row with `verify = { provider = "shopify",
//! secrets = [...] }`; the row's `verify` table is the base and every key the route sets
//! overrides it (see [`overlay`]).
//!
//! Owns: the table (its parsing, lookup, close-name suggestions), the overlay of a route's
//! `verify` table onto a row, and the listing printed by `hookgate providers`. Does not own:
//! the schemes themselves (every row is expressed through an existing scheme of this module),
//! the route's `event`/`dedupe` tables (`config` applies a row's `event` to a route with event
//! rules and no `event` table, and its `delivery_id` to `dedupe = { key = "provider" }`, when
//! they are bare keys rather than notes), fetching anything at runtime (a row's `ips` is a URL
//! or a note).
//!
//! Each row: `name` (what routes write), `title`, `verify` (the same keys as a route's
//! `verify` table, without `secrets`), `event` and `delivery_id` (`"header:<Name>"`,
//! `"json:<pointer>"`, `"form:<field>"`, `"standard-webhooks"` for the signed id, or a note),
//! optional `ips`, optional `handshake` (the setup handshake `crate::handshake` answers for
//! routes with `handshake = true`), and `docs`, the URL of the provider documentation the row was written from.
//! Every row has one test vector in `tests/fixtures/providers.json`, computed from that
//! documentation by `tests/fixtures/provider_vectors.py`.

use std::sync::LazyLock;

use super::VerifySpec;

/// One provider preset, as written in `providers.toml`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Lower-case name routes use: `provider = "shopify"`.
    pub name: String,
    /// Display name: `"Shopify"`.
    pub title: String,
    /// The scheme and its parameters, exactly as a route's `verify` table would say them.
    pub verify: VerifySpec,
    /// Where the event type is: `"header:X-Shopify-Topic"`, `"json:/type"`, … or a note.
    pub event: String,
    /// Where the delivery id is: `"header:X-Shopify-Webhook-Id"`, `"standard-webhooks"`, … or
    /// a note when the provider sends none.
    pub delivery_id: String,
    /// The provider's published source-address list (a URL or a note); not fetched.
    #[serde(default)]
    pub ips: Option<String>,
    /// The setup handshake the gateway answers for routes with `handshake = true`
    /// (`"slack"`, `"meta"`, … one of `crate::handshake::Kind`), if the provider has one.
    #[serde(default)]
    pub handshake: Option<String>,
    /// The documentation page the row was written from.
    pub docs: String,
}

impl Provider {
    /// The row's canonical scheme name (`"standard-webhooks"` for `svix`).
    pub fn scheme(&self) -> &'static str {
        super::canonical_scheme(&self.verify.scheme).unwrap_or("unknown")
    }

    /// Whether the row verifies with a shared secret (so `hookgate sign` can sign for it):
    /// not the public-key rows (`discord`, `ecdsa`, `jwt` with RS256/ES256).
    pub fn shared_secret(&self) -> bool {
        match self.scheme() {
            "discord" | "ecdsa" => false,
            "jwt" => self.verify.algorithm.as_deref() == Some("HS256"),
            _ => true,
        }
    }

    /// The event header, when the row's event type is in a header.
    pub fn event_header(&self) -> Option<&str> {
        self.event.strip_prefix("header:")
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    provider: Vec<Provider>,
}

static TABLE: LazyLock<Vec<Provider>> = LazyLock::new(|| {
    // The file is compiled in and checked by the tests; a broken table is a build defect.
    let table: Table = toml::from_str(include_str!("providers.toml"))
        .unwrap_or_else(|e| panic!("src/verify/providers.toml does not parse: {e}"));
    table.provider
});

/// Every provider row, in file order (alphabetical by name).
pub fn all() -> &'static [Provider] {
    &TABLE
}

/// The row named `name` (exact, lower-case), if any.
pub fn find(name: &str) -> Option<&'static Provider> {
    TABLE.iter().find(|p| p.name == name)
}

/// Up to five row names close to `name` (edit distance ≤ 2, or one contains the other), for
/// the "unknown provider" error.
pub fn close_names(name: &str) -> Vec<&'static str> {
    let wanted = name.to_ascii_lowercase();
    let mut scored: Vec<(usize, &'static str)> = TABLE
        .iter()
        .filter_map(|p| {
            let d = edit_distance(&wanted, &p.name);
            let related =
                wanted.len() >= 3 && (p.name.contains(&wanted) || wanted.contains(&p.name));
            (d <= 2 || related).then_some((d, p.name.as_str()))
        })
        .collect();
    scored.sort();
    scored.into_iter().take(5).map(|(_, n)| n).collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The effective `verify` table of a route naming a provider: every key the route sets wins,
/// every other key comes from the row. `provider` itself is cleared; `scheme` is the row's
/// (a route's own `scheme` is checked against it by the caller).
pub fn overlay(row: &VerifySpec, route: &VerifySpec) -> VerifySpec {
    // Destructured without `..`: a new key in VerifySpec fails to compile here until it is
    // decided whether a row may set it.
    let VerifySpec {
        scheme: _,
        provider: _,
        secrets,
        tolerance,
        public_url,
        public_key,
        sha1_fallback,
        algorithm,
        header,
        encoding,
        prefix,
        separator,
        signed,
        timestamp_header,
        timestamp_format,
        id_header,
        bearer,
        issuer,
        body_sha256_claim,
        signed_body,
    } = route.clone();
    VerifySpec {
        scheme: row.scheme.clone(),
        provider: None,
        secrets,
        tolerance: tolerance.or_else(|| row.tolerance.clone()),
        public_url: public_url.or_else(|| row.public_url.clone()),
        public_key: public_key.or_else(|| row.public_key.clone()),
        sha1_fallback: sha1_fallback.or(row.sha1_fallback),
        algorithm: algorithm.or_else(|| row.algorithm.clone()),
        header: header.or_else(|| row.header.clone()),
        encoding: encoding.or_else(|| row.encoding.clone()),
        prefix: prefix.or_else(|| row.prefix.clone()),
        separator: separator.or_else(|| row.separator.clone()),
        signed: signed.or_else(|| row.signed.clone()),
        timestamp_header: timestamp_header.or_else(|| row.timestamp_header.clone()),
        timestamp_format: timestamp_format.or_else(|| row.timestamp_format.clone()),
        id_header: id_header.or_else(|| row.id_header.clone()),
        bearer: bearer.or(row.bearer),
        issuer: issuer.or_else(|| row.issuer.clone()),
        body_sha256_claim: body_sha256_claim.or_else(|| row.body_sha256_claim.clone()),
        signed_body: signed_body.or_else(|| row.signed_body.clone()),
    }
}

/// The scheme parameters a row sets beyond its scheme name, as `key = value` text
/// (`header = "X-Hub-Signature", prefix = "sha256="`), for the listing.
pub fn parameters(spec: &VerifySpec) -> String {
    let text = |k: &str, v: &Option<String>| v.as_ref().map(|v| format!("{k} = {v:?}"));
    let flag = |k: &str, v: Option<bool>| v.map(|v| format!("{k} = {v}"));
    [
        text("algorithm", &spec.algorithm),
        text("header", &spec.header),
        text("encoding", &spec.encoding),
        text("prefix", &spec.prefix),
        text("separator", &spec.separator),
        text("signed", &spec.signed),
        text("timestamp_header", &spec.timestamp_header),
        text("timestamp_format", &spec.timestamp_format),
        text("id_header", &spec.id_header),
        text("tolerance", &spec.tolerance),
        text("issuer", &spec.issuer),
        text("body_sha256_claim", &spec.body_sha256_claim),
        flag("sha1_fallback", spec.sha1_fallback),
        flag("bearer", spec.bearer),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ")
}

/// What `hookgate providers` prints: one line per row (name, scheme, event source, delivery
/// id, docs), or with `markdown` the README's table.
pub fn listing(markdown: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if markdown {
        out.push_str(
            "| provider | name | scheme | event type | delivery id | handshake | docs |\n",
        );
        out.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
        for p in all() {
            let scheme = match parameters(&p.verify) {
                params if params.is_empty() => format!("`{}`", p.scheme()),
                params => format!("`{}` ({})", p.scheme(), params.replace('|', "\\|")),
            };
            let _ = writeln!(
                out,
                "| {} | `{}` | {} | {} | {} | {} | [docs]({}) |",
                p.title,
                p.name,
                scheme,
                code_or_note(&p.event),
                code_or_note(&p.delivery_id),
                p.handshake
                    .as_deref()
                    .map_or(String::new(), |h| format!("`{h}`")),
                p.docs
            );
        }
        let _ = writeln!(out, "\n{} providers.", all().len());
        return out;
    }
    let _ = writeln!(
        out,
        "{:<20} {:<18} {:<40} {:<36} docs",
        "provider", "scheme", "event type", "delivery id"
    );
    for p in all() {
        let _ = writeln!(
            out,
            "{:<20} {:<18} {:<40} {:<36} {}",
            p.name,
            p.scheme(),
            p.event,
            p.delivery_id,
            p.docs
        );
    }
    let _ = writeln!(
        out,
        "\n{} providers. Use one with verify = {{ provider = \"NAME\", secrets = [\"${{SECRET}}\"] }}; any verify key overrides the row.",
        all().len()
    );
    out
}

fn code_or_note(text: &str) -> String {
    let is_source = ["header:", "json:", "form:"]
        .iter()
        .any(|p| text.starts_with(p))
        || text == "standard-webhooks";
    if is_source {
        format!("`{text}`")
    } else {
        text.replace('|', "\\|")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::verify::Verifier;

    #[test]
    fn every_row_is_well_formed_and_compiles_with_a_secret() {
        assert!(all().len() >= 16, "table lost rows: {}", all().len());
        let mut names: Vec<&str> = all().iter().map(|p| p.name.as_str()).collect();
        let sorted = names.clone();
        names.sort_unstable();
        assert_eq!(names, sorted, "rows are kept in alphabetical order");
        names.dedup();
        assert_eq!(names.len(), all().len(), "duplicate provider names");
        for p in all() {
            assert!(
                p.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{}: name must be lower-case ascii, digits, '-'",
                p.name
            );
            assert!(p.docs.starts_with("https://"), "{}: docs URL", p.name);
            assert!(
                p.verify.secrets.is_empty(),
                "{}: a row has no secrets",
                p.name
            );
            assert!(
                p.verify.provider.is_none(),
                "{}: a row names no provider",
                p.name
            );
            assert_ne!(p.scheme(), "unknown", "{}: scheme", p.name);
            if let Some(kind) = &p.handshake {
                assert!(
                    crate::handshake::Kind::parse(kind).is_some(),
                    "{}: handshake {kind:?} is not a kind",
                    p.name
                );
            }
            let mut spec = VerifySpec {
                provider: Some(p.name.clone()),
                ..VerifySpec::default()
            };
            if p.shared_secret() {
                spec.secrets = vec!["${S}".into()];
            } else {
                spec.public_key = Some("${K}".into());
            }
            if matches!(p.scheme(), "twilio" | "hubspot" | "square")
                || p.verify
                    .signed
                    .as_deref()
                    .is_some_and(|s| s.contains("{url}"))
            {
                spec.public_url = Some("https://hooks.example.com".into());
            }
            let resolve = |r: &str| {
                Ok(Secret::new(match r {
                    "${K}" if p.scheme() == "discord" => {
                        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a".into()
                    }
                    // An EC P-256 SubjectPublicKeyInfo (ecdsa, jwt ES256), base64 DER.
                    "${K}" => "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAECIu5/yKrKRp0yG/Gd7qJe6re43DMYSm4LRcLo/wmQVxELamnFgZ5VtkeqgK5OtQJSQ6HzV51jqajMaHet1uoRg==".into(),
                    _ if p.scheme() == "standard-webhooks" => {
                        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()
                    }
                    _ => "a-secret-0123456789".to_string(),
                }))
            };
            let verifier = Verifier::compile(&spec, &resolve)
                .unwrap_or_else(|e| panic!("{}: row does not compile: {e:?}", p.name));
            assert_eq!(verifier.provider(), Some(p.name.as_str()));
        }
    }

    #[test]
    fn close_names_suggest_typos_and_parts() {
        assert_eq!(close_names("shopfy"), vec!["shopify"]);
        assert!(close_names("githbu").contains(&"github"));
        assert!(close_names("zzzzzzzzzz").is_empty());
    }

    #[test]
    fn listing_has_one_line_per_row() {
        let text = listing(false);
        assert_eq!(text.lines().count(), all().len() + 3);
        let md = listing(true);
        assert_eq!(
            md.lines().filter(|l| l.starts_with("| ")).count(),
            all().len() + 2
        );
    }
}
