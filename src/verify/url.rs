//! The URL that URL-signing schemes sign: the external origin the provider called (the
//! route's `public_url`: scheme, host, port if any, and any path prefix a load balancer
//! strips) followed by the request target, the origin-form path and query exactly as the
//! sender sent them. How the target enters the MAC depends on the provider:
//!
//! - **As sent** ([`SignedUrl::as_sent`]): Twilio, Square and the generic `{url}`. Byte for
//!   byte: no percent-decoding, no re-encoding, no reordering of parameters, an empty `?`
//!   kept. Twilio: "Validate the request with the exact webhook URL Twilio requested, and keep
//!   any query parameters URL-encoded" (<https://www.twilio.com/docs/api/errors/57012>);
//!   Square: the notification URL of the subscription, exactly
//!   (<https://developer.squareup.com/docs/webhooks/step3validate>).
//! - **HubSpot v3** ([`SignedUrl::hubspot_v3`]): the URI with these twelve escapes decoded
//!   (hex digits of either case) and every other byte as sent, per "Validate the v3 request
//!   signature" (<https://developers.hubspot.com/docs/apps/legacy-apps/authentication/validating-requests>):
//!   `%3A :`, `%2F /`, `%3F ?`, `%40 @`, `%21 !`, `%24 $`, `%27 '`, `%28 (`, `%29 )`, `%2A *`,
//!   `%2C ,`, `%3B ;`. The `?` that starts the query is literal already. `%20`, `+`, `%2B`,
//!   `%26`, `%3D`, `%25` and the rest stay as sent. Decoding is one pass (`%2540` stays).
//!
//! HubSpot's decoding means one signature covers several spellings of a target, and the
//! gateway forwards the spelling it received. Where two spellings can mean different things
//! to the app, the request is refused as ambiguous (400 `bad_request` with the reason)
//! instead, whoever signed it:
//! - in the **path**, `%2F`, `%3F` and `%3B` (an encoded `/` is not a segment boundary, an
//!   encoded `?` does not start a query, `;` starts path parameters in some servers);
//! - in the **query**, `%3B` (some parsers split parameters on `;`: Rack 2, Python before
//!   3.9.2); a query with a literal `;` passes, and its `%3B` respelling is refused.
//!
//! Every other escape in the table decodes to a character that query parsers and routers
//! read the same as its escape. The signed target is rebuilt per request only when it holds
//! an escape to decode.
//!
//! Owns: the origin-form check, HubSpot's decoding and its refusals. Does not own: validating
//! `public_url` (`compile.rs`), Twilio's default-port variants (`twilio.rs`), the HTTP answer.

use std::borrow::Cow;

use super::{ambiguous, malformed, VerifyError};

/// How a scheme turns the request target into the signed URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    AsSent,
    HubSpotV3,
}

/// The external origin and how the request target follows it in the signed message.
#[derive(Debug)]
pub(super) struct SignedUrl {
    /// `public_url` without a trailing `/` (HubSpot: with the table's escapes decoded).
    origin: String,
    form: Form,
}

impl SignedUrl {
    /// Twilio, Square, generic `{url}`: `public_url` + the target exactly as sent.
    pub(super) fn as_sent(public_url: String) -> SignedUrl {
        SignedUrl {
            origin: public_url,
            form: Form::AsSent,
        }
    }

    /// HubSpot v3: `public_url` + the target, both with HubSpot's twelve escapes decoded. The
    /// configured origin is trusted (no refusals there).
    pub(super) fn hubspot_v3(public_url: String) -> SignedUrl {
        let origin = match decode_hubspot(&public_url, |_, _| Ok(())) {
            Ok(Cow::Owned(decoded)) => decoded,
            _ => public_url,
        };
        SignedUrl {
            origin,
            form: Form::HubSpotV3,
        }
    }

    /// The origin part of the signed URL.
    pub(super) fn origin(&self) -> &str {
        &self.origin
    }

    /// The target part of the signed URL for `path_and_query` (the origin-form request target
    /// as received). Malformed when it is not origin-form; ambiguous (HubSpot) when it holds an
    /// escape the module doc lists as refused.
    pub(super) fn target<'a>(&self, path_and_query: &'a str) -> Result<Cow<'a, str>, VerifyError> {
        let target = origin_form(path_and_query)?;
        match self.form {
            Form::AsSent => Ok(Cow::Borrowed(target)),
            Form::HubSpotV3 => decode_hubspot(target, refuse_ambiguous),
        }
    }
}

/// `path_and_query` if it is an origin-form target (starts with `/`), else malformed: a
/// URL-signing scheme cannot place anything else after `public_url`.
pub(super) fn origin_form(path_and_query: &str) -> Result<&str, VerifyError> {
    if path_and_query.starts_with('/') {
        Ok(path_and_query)
    } else {
        Err(malformed(
            "request target is not a path (origin form), so the signed URL cannot be rebuilt",
        ))
    }
}

/// Where an escape sits in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Path,
    Query,
}

/// The refusals of the module doc.
fn refuse_ambiguous(part: Part, decoded: u8) -> Result<(), VerifyError> {
    let refused = match part {
        Part::Path => matches!(decoded, b'/' | b'?' | b';'),
        Part::Query => decoded == b';',
    };
    if !refused {
        return Ok(());
    }
    let (escape, place) = match (decoded, part) {
        (b'/', _) => ("%2F", "path"),
        (b'?', _) => ("%3F", "path"),
        (_, Part::Path) => ("%3B", "path"),
        (_, Part::Query) => ("%3B", "query"),
    };
    Err(ambiguous(format!(
        "request {place} contains {escape}: HubSpot signs it decoded, so the signature does not \
         tell it from {:?}, which the app may read differently",
        decoded as char
    )))
}

/// The byte a HubSpot-decoded escape `%<hi><lo>` stands for, if it is in the table.
fn hubspot_escape(hi: u8, lo: u8) -> Option<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let byte = u8::try_from(hex(hi)? << 4 | hex(lo)?).ok()?;
    matches!(
        byte,
        b':' | b'/' | b'?' | b'@' | b'!' | b'$' | b'\'' | b'(' | b')' | b'*' | b',' | b';'
    )
    .then_some(byte)
}

/// `text` with the table's escapes decoded in one pass; `check` may refuse an escape by where
/// it sits. Borrowed when there is nothing to decode.
fn decode_hubspot<'a>(
    text: &'a str,
    check: impl Fn(Part, u8) -> Result<(), VerifyError>,
) -> Result<Cow<'a, str>, VerifyError> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    // Start of the text not yet copied to `out`.
    let mut copied = 0;
    let mut part = Part::Path;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'?' {
            part = Part::Query;
        } else if bytes[i] == b'%' {
            if let Some(decoded) = bytes
                .get(i + 1)
                .zip(bytes.get(i + 2))
                .and_then(|(&hi, &lo)| hubspot_escape(hi, lo))
            {
                check(part, decoded)?;
                let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
                // Escapes and their replacements are ASCII: these are char boundaries.
                out.push_str(&text[copied..i]);
                out.push(decoded as char);
                i += 3;
                copied = i;
                continue;
            }
        }
        i += 1;
    }
    Ok(match out {
        None => Cow::Borrowed(text),
        Some(mut out) => {
            out.push_str(&text[copied..]);
            Cow::Owned(out)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hubspot(target: &str) -> Result<String, String> {
        SignedUrl::hubspot_v3("https://h.example".into())
            .target(target)
            .map(Cow::into_owned)
            .map_err(|e| format!("{}: {}", e.reason(), e.detail()))
    }

    #[test]
    fn as_sent_keeps_every_byte() {
        let url = SignedUrl::as_sent("https://h.example:8443".into());
        for target in ["/", "/hook?", "/a%2Fb?x=%40&y=a+b%20c&x=1", "/p;q?r=%3B"] {
            assert!(matches!(url.target(target), Ok(Cow::Borrowed(t)) if t == target));
        }
        assert_eq!(url.origin(), "https://h.example:8443");
        for bad in ["", "*", "hook", "https://h.example/hook"] {
            assert_eq!(url.target(bad).unwrap_err().reason(), "malformed", "{bad}");
        }
    }

    #[test]
    fn hubspot_decodes_exactly_the_table() {
        assert_eq!(
            hubspot("/h?q=%3A%2F%3F%40%21%24%27%28%29%2A%2C").unwrap(),
            "/h?q=:/?@!$'()*,"
        );
        assert_eq!(
            hubspot("/h?q=%3a%2f%40").unwrap(),
            "/h?q=:/@",
            "either case"
        );
        // Not in the table, incomplete or double-encoded: as sent.
        let kept = "/h?q=%20+%2B%26%3D%25%2540%3%4%";
        assert_eq!(hubspot(kept).unwrap(), kept);
        assert!(matches!(
            SignedUrl::hubspot_v3("https://h".into()).target("/plain?x=1"),
            Ok(Cow::Borrowed(_))
        ));
        // In the path: harmless escapes decode.
        assert_eq!(
            hubspot("/users/jane%40example.com%3A1?x=1").unwrap(),
            "/users/jane@example.com:1?x=1"
        );
        // The configured origin decodes too, without refusals.
        let url = SignedUrl::hubspot_v3("https://h.example/a%2Fb%40c".into());
        assert_eq!(url.origin(), "https://h.example/a/b@c");
    }

    #[test]
    fn hubspot_refuses_spellings_the_app_may_read_differently() {
        for (target, needle) in [
            ("/a%2Fb", "path contains %2F"),
            ("/a%2fb?x=1", "path contains %2F"),
            ("/a%3Fx=1", "path contains %3F"),
            ("/a%3Bjsessionid=1", "path contains %3B"),
            ("/a?x=1%3By=2", "query contains %3B"),
        ] {
            let err = hubspot(target).unwrap_err();
            assert!(err.starts_with("ambiguous: "), "{target}: {err}");
            assert!(err.contains(needle), "{target}: {err}");
        }
        // The same characters literal, or in the query where they are data, pass.
        assert_eq!(hubspot("/a/b;c?x=1;y=2").unwrap(), "/a/b;c?x=1;y=2");
        assert_eq!(hubspot("/a?next=%2F%3F").unwrap(), "/a?next=/?");
    }
}
