//! The keyed-hash engine behind every HMAC scheme. A scheme is data: where the signature is
//! carried ([`Carrier`]), how it is encoded, which timestamp and id headers exist, and a
//! [`Template`] of what is signed. Presets (github, stripe, slack, …) and the generic `hmac`
//! scheme build an [`HmacScheme`]; this file verifies and signs them all the same way, in the
//! order documented in the module root (missing → malformed → expired → mismatch).
//!
//! Owns the per-request path of HMAC schemes; owns no provider knowledge.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName};

use super::clock::{self, TimestampFormat};
use super::mac::{Algorithm, Digest, KeyedMac};
use super::url::SignedUrl;
use super::wire::{self, Encoding, SigList};
use super::{malformed, mismatch, Request, VerifyError};

/// One piece of the signed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Part {
    Lit(Box<[u8]>),
    Body,
    Timestamp,
    Id,
    Method,
    /// The external origin followed by the request target, as [`SignedUrl`] builds them.
    Url,
}

/// What is signed, as a sequence fed to the MAC one piece at a time (never concatenated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Template(pub(super) Vec<Part>);

impl Template {
    /// Parses `"{timestamp}.{body}"`-style text. Placeholders: `{body}`, `{timestamp}`, `{id}`,
    /// `{method}`, `{url}`; `{{` and `}}` are literal braces.
    pub(super) fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix("{{") {
                lit.push('{');
                rest = after;
            } else if let Some(after) = rest.strip_prefix("}}") {
                lit.push('}');
                rest = after;
            } else if c == '{' {
                let end = rest
                    .find('}')
                    .ok_or_else(|| format!("unclosed '{{' in {text:?}"))?;
                let part = match &rest[1..end] {
                    "body" => Part::Body,
                    "timestamp" => Part::Timestamp,
                    "id" => Part::Id,
                    "method" => Part::Method,
                    "url" => Part::Url,
                    other => {
                        return Err(format!(
                            "unknown placeholder {{{other}}} in {text:?}; use {{body}}, {{timestamp}}, {{id}}, {{method}} or {{url}} (write {{{{ for a literal brace)"
                        ))
                    }
                };
                if !lit.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut lit).into_bytes().into()));
                }
                parts.push(part);
                rest = &rest[end + 1..];
            } else if c == '}' {
                return Err(format!(
                    "unmatched '}}' in {text:?}; write }}}} for a literal brace"
                ));
            } else {
                lit.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit.into_bytes().into()));
        }
        Ok(Template(parts))
    }

    /// A built-in template; presets are unit-tested, so a bad one is a programming error.
    pub(super) fn preset(text: &'static str) -> Template {
        match Template::parse(text) {
            Ok(t) => t,
            Err(e) => panic!("bad preset template: {e}"),
        }
    }

    pub(super) fn count(&self, part: &Part) -> usize {
        self.0.iter().filter(|p| *p == part).count()
    }

    /// `url` is the origin and the signed form of the target, fed one after the other.
    fn feed(
        &self,
        mac: &mut KeyedMac,
        request: &Request<'_>,
        ts: &str,
        id: &str,
        url: (&str, &str),
    ) {
        for part in &self.0 {
            match part {
                Part::Lit(bytes) => mac.update(bytes),
                Part::Body => mac.update(request.body),
                Part::Timestamp => mac.update(ts.as_bytes()),
                Part::Id => mac.update(id.as_bytes()),
                Part::Method => mac.update(request.method.as_bytes()),
                Part::Url => {
                    mac.update(url.0.as_bytes());
                    mac.update(url.1.as_bytes());
                }
            }
        }
    }
}

/// Where the signature (and possibly the timestamp and id) travel.
#[derive(Debug)]
pub(super) enum Carrier {
    /// The first present header of `names` holds `prefix` + encoded MAC; with `separator`, a
    /// list of such entries (entries without the prefix are other versions and skipped).
    Header {
        names: Vec<HeaderName>,
        prefix: Cow<'static, str>,
        separator: Option<char>,
    },
    /// `t=…,v1=…,v1=…` (Stripe, Mux) or `ts=…;h1=…` (Paddle): timestamp and signatures in one
    /// header; keys other than `ts_key`/`sig_key` are skipped.
    Pairs {
        name: HeaderName,
        item_sep: char,
        ts_key: &'static str,
        sig_key: &'static str,
    },
    /// Standard Webhooks: id, timestamp and a space-separated `v1,<base64>` list, from the
    /// first family whose signature header is present (`webhook-*`, then `svix-*`).
    StandardWebhooks { families: Vec<Family> },
}

#[derive(Debug)]
pub(super) struct Family {
    pub(super) id: HeaderName,
    pub(super) timestamp: HeaderName,
    pub(super) signature: HeaderName,
}

/// A check run after the MAC matched, on the now-authenticated body (Linear's
/// `webhookTimestamp`). Gets the scheme's tolerance.
pub(super) type AfterMac = fn(&[u8], SystemTime, Duration) -> Result<(), VerifyError>;

#[derive(Debug)]
pub(super) struct HmacScheme {
    pub(super) algorithm: Algorithm,
    /// One per secret, in configured order.
    pub(super) keys: Vec<KeyedMac>,
    pub(super) encoding: Encoding,
    pub(super) carrier: Carrier,
    /// Header carrying the timestamp, for [`Carrier::Header`] schemes.
    pub(super) timestamp_header: Option<HeaderName>,
    /// Format of the signed timestamp, if the scheme has one.
    pub(super) timestamp_format: Option<TimestampFormat>,
    /// Header carrying the signed id, for [`Carrier::Header`] schemes.
    pub(super) id_header: Option<HeaderName>,
    pub(super) template: Template,
    /// For `{url}`: the external origin (`public_url`) and how the target follows it.
    pub(super) public_url: Option<SignedUrl>,
    pub(super) tolerance: Option<Duration>,
    pub(super) after_mac: Option<AfterMac>,
    /// Tried when this scheme's signature header is absent and the fallback's is present
    /// (GitHub's legacy SHA-1 header).
    pub(super) fallback: Option<Box<HmacScheme>>,
}

/// What a request's headers say, before any key is used.
struct Parsed<'a> {
    sigs: SigList,
    timestamp: &'a str,
    id: Option<&'a str>,
}

impl HmacScheme {
    /// A scheme over `{body}` only, one header, no timestamp: callers adjust fields.
    pub(super) fn body_only(
        algorithm: Algorithm,
        keys: Vec<KeyedMac>,
        encoding: Encoding,
        names: Vec<HeaderName>,
        prefix: &'static str,
    ) -> Self {
        HmacScheme {
            algorithm,
            keys,
            encoding,
            carrier: Carrier::Header {
                names,
                prefix: Cow::Borrowed(prefix),
                separator: None,
            },
            timestamp_header: None,
            timestamp_format: None,
            id_header: None,
            template: Template::preset("{body}"),
            public_url: None,
            tolerance: None,
            after_mac: None,
            fallback: None,
        }
    }

    /// Verifies `request`; on success returns the signed id, if the scheme has one.
    pub(super) fn verify<'a>(
        &self,
        request: &Request<'a>,
        now: SystemTime,
    ) -> Result<Option<&'a str>, VerifyError> {
        if let Some(fallback) = &self.fallback {
            if !self.signature_present(request.headers)
                && fallback.signature_present(request.headers)
            {
                return fallback.verify(request, now);
            }
        }
        let parsed = self.parse(request)?;
        let target = self.signed_target(request)?;
        if let Some(format) = self.timestamp_format {
            let ts = format
                .parse(parsed.timestamp)
                .ok_or_else(|| malformed(format!("timestamp is not {}", format.describe())))?;
            if let Some(tolerance) = self.tolerance {
                clock::check_window(ts, now, tolerance)?;
            }
        }
        let url = (self.origin(), &*target);
        let id = parsed.id.unwrap_or("");
        let matched = self.keys.iter().any(|key| {
            parsed.sigs.matches(
                self.compute(key, request, parsed.timestamp, id, url)
                    .as_slice(),
            )
        });
        if !matched {
            // A fixed text: a flood of bad signatures formats nothing.
            return Err(mismatch(
                "no provided signature matches the request under any configured secret",
            ));
        }
        if let (Some(check), Some(tolerance)) = (self.after_mac, self.tolerance) {
            check(request.body, now, tolerance)?;
        }
        Ok(parsed.id)
    }

    fn compute(
        &self,
        key: &KeyedMac,
        request: &Request<'_>,
        ts: &str,
        id: &str,
        url: (&str, &str),
    ) -> Digest {
        let mut mac = key.clone();
        self.template.feed(&mut mac, request, ts, id, url);
        mac.finalize()
    }

    /// The external origin of `{url}` (empty for schemes without one).
    fn origin(&self) -> &str {
        self.public_url.as_ref().map_or("", SignedUrl::origin)
    }

    /// The signed form of the request target for `{url}`; malformed or ambiguous when it cannot
    /// be signed (see [`SignedUrl::target`]). Empty for schemes without `{url}`.
    fn signed_target<'a>(&self, request: &Request<'a>) -> Result<Cow<'a, str>, VerifyError> {
        match &self.public_url {
            Some(url) => url.target(request.path_and_query),
            None => Ok(Cow::Borrowed("")),
        }
    }

    fn signature_present(&self, headers: &HeaderMap) -> bool {
        match &self.carrier {
            Carrier::Header { names, .. } => names.iter().any(|n| headers.contains_key(n)),
            Carrier::Pairs { name, .. } => headers.contains_key(name),
            Carrier::StandardWebhooks { families } => {
                families.iter().any(|f| headers.contains_key(&f.signature))
            }
        }
    }

    /// Missing and malformed checks: every required header first, then their syntax.
    fn parse<'a>(&self, request: &Request<'a>) -> Result<Parsed<'a>, VerifyError> {
        let headers = request.headers;
        let mut sigs = SigList::new(self.algorithm.output_len());
        let described = || {
            format!(
                "{} of a {}-byte {}",
                self.encoding.name(),
                self.algorithm.output_len(),
                self.algorithm.name()
            )
        };
        match &self.carrier {
            Carrier::Header {
                names,
                prefix,
                separator,
            } => {
                let (name, value) = first_header(headers, names)?;
                let timestamp = match &self.timestamp_header {
                    Some(h) => wire::header(headers, h)?,
                    None => "",
                };
                let id = match &self.id_header {
                    Some(h) => Some(wire::header(headers, h)?),
                    None => None,
                };
                match separator {
                    None => {
                        let encoded = value.strip_prefix(&**prefix).ok_or_else(|| {
                            malformed(format!("header {name} does not start with {prefix:?}"))
                        })?;
                        if !sigs.push(self.encoding, encoded)? {
                            return Err(malformed(format!(
                                "header {name} is not {prefix:?} followed by {}",
                                described()
                            )));
                        }
                    }
                    Some(sep) => {
                        for entry in value.split(*sep) {
                            if let Some(encoded) = entry.trim().strip_prefix(&**prefix) {
                                sigs.push(self.encoding, encoded)?;
                            }
                        }
                        if sigs.is_empty() {
                            return Err(malformed(format!(
                                "header {name} has no {prefix:?} entry holding {}",
                                described()
                            )));
                        }
                    }
                }
                Ok(Parsed {
                    sigs,
                    timestamp,
                    id,
                })
            }
            Carrier::Pairs {
                name,
                item_sep,
                ts_key,
                sig_key,
            } => {
                let value = wire::header(headers, name)?;
                let mut timestamp = None;
                let mut seen = 0;
                for item in value.split(*item_sep) {
                    let Some((key, val)) = item.trim().split_once('=') else {
                        continue;
                    };
                    if key == *ts_key {
                        if timestamp.replace(val).is_some() {
                            return Err(malformed(format!(
                                "header {name} has two {ts_key}= entries"
                            )));
                        }
                    } else if key == *sig_key {
                        seen += 1;
                        sigs.push(self.encoding, val)?;
                    }
                }
                let timestamp = timestamp.ok_or_else(|| {
                    malformed(format!("header {name} has no {ts_key}= timestamp"))
                })?;
                if sigs.is_empty() {
                    return Err(malformed(if seen == 0 {
                        format!("header {name} has no {sig_key}= signature")
                    } else {
                        format!("no {sig_key}= entry of header {name} is {}", described())
                    }));
                }
                Ok(Parsed {
                    sigs,
                    timestamp,
                    id: None,
                })
            }
            Carrier::StandardWebhooks { families } => {
                let family = families
                    .iter()
                    .find(|f| headers.contains_key(&f.signature))
                    .unwrap_or(&families[0]);
                let value = wire::header(headers, &family.signature)?;
                let id = wire::header(headers, &family.id)?;
                let timestamp = wire::header(headers, &family.timestamp)?;
                let mut seen = 0;
                for entry in value.split(' ') {
                    // Entries without a comma, and other versions (v1a, v2), are skipped.
                    if let Some(("v1", encoded)) = entry.split_once(',') {
                        seen += 1;
                        sigs.push(self.encoding, encoded)?;
                    }
                }
                if sigs.is_empty() {
                    let name = &family.signature;
                    return Err(malformed(if seen == 0 {
                        format!("header {name} has no v1 signature")
                    } else {
                        format!("no v1 entry of header {name} is {}", described())
                    }));
                }
                // The signed content is "{id}.{timestamp}.{body}": a '.' in the id would let a
                // sender move the boundary between id and timestamp.
                if id.contains('.') {
                    return Err(malformed(format!("header {} contains '.'", family.id)));
                }
                Ok(Parsed {
                    sigs,
                    timestamp,
                    id: Some(id),
                })
            }
        }
    }

    /// Headers of a delivery of `request.body` signed with the first key, as of `now`.
    pub(super) fn sign(
        &self,
        request: &Request<'_>,
        now: SystemTime,
    ) -> Result<Vec<(String, String)>, String> {
        let key = self.keys.first().ok_or("no secret configured")?;
        let timestamp = self
            .timestamp_format
            .map(|f| f.format(now))
            .unwrap_or_default();
        let needs_id = self.template.count(&Part::Id) > 0
            || matches!(self.carrier, Carrier::StandardWebhooks { .. });
        let id = if needs_id {
            format!("msg_{}", uuid::Uuid::new_v4().simple())
        } else {
            String::new()
        };
        let target = self
            .signed_target(request)
            .map_err(|e| e.detail().to_string())?;
        let mac = self.compute(key, request, &timestamp, &id, (self.origin(), &target));
        let sig = self.encoding.encode(mac.as_slice());
        let mut out = Vec::new();
        match &self.carrier {
            Carrier::Header { names, prefix, .. } => {
                out.push((names[0].to_string(), format!("{prefix}{sig}")));
                if let Some(h) = &self.timestamp_header {
                    out.push((h.to_string(), timestamp));
                }
                if let Some(h) = &self.id_header {
                    out.push((h.to_string(), id));
                }
            }
            Carrier::Pairs {
                name,
                item_sep,
                ts_key,
                sig_key,
            } => out.push((
                name.to_string(),
                format!("{ts_key}={timestamp}{item_sep}{sig_key}={sig}"),
            )),
            Carrier::StandardWebhooks { families } => {
                let f = &families[0];
                out.push((f.id.to_string(), id));
                out.push((f.timestamp.to_string(), timestamp));
                out.push((f.signature.to_string(), format!("v1,{sig}")));
            }
        }
        Ok(out)
    }

    /// MAC of `message` under the first key (Zoom's URL validation).
    pub(super) fn mac_first(&self, message: &[u8]) -> Option<Digest> {
        let mut mac = self.keys.first()?.clone();
        mac.update(message);
        Some(mac.finalize())
    }
}

/// The first of `names` present, with its value.
fn first_header<'h, 'n>(
    headers: &'h HeaderMap,
    names: &'n [HeaderName],
) -> Result<(&'n HeaderName, &'h str), VerifyError> {
    for name in names {
        if let Some(value) = wire::optional_header(headers, name)? {
            return Ok((name, value));
        }
    }
    // Report the primary header as absent.
    wire::header(headers, &names[0]).map(|v| (&names[0], v))
}

/// One precomputed MAC state per secret.
pub(super) fn keys(
    algorithm: Algorithm,
    secrets: &[(usize, crate::secret::Secret)],
) -> Vec<KeyedMac> {
    secrets
        .iter()
        .map(|(_, s)| KeyedMac::new(algorithm, s.expose()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parsing() {
        let t = Template::parse("v0:{timestamp}:{body}").unwrap();
        assert_eq!(
            t.0,
            vec![
                Part::Lit(b"v0:"[..].into()),
                Part::Timestamp,
                Part::Lit(b":"[..].into()),
                Part::Body
            ]
        );
        assert_eq!(
            Template::parse("{{{id}}}").unwrap().0,
            vec![
                Part::Lit(b"{"[..].into()),
                Part::Id,
                Part::Lit(b"}"[..].into())
            ]
        );
        assert_eq!(
            Template::parse("{method}{url}{body}{timestamp}")
                .unwrap()
                .0
                .len(),
            4
        );
        assert!(Template::parse("{body").unwrap_err().contains("unclosed"));
        assert!(Template::parse("{bdy}")
            .unwrap_err()
            .contains("unknown placeholder {bdy}"));
        assert!(Template::parse("body}").unwrap_err().contains("unmatched"));
        assert_eq!(
            Template::parse("é{body}").unwrap().0[0],
            Part::Lit("é".as_bytes().into())
        );
        assert_eq!(Template::parse("").unwrap().0, vec![]);
    }
}
