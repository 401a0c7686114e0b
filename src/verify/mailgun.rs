//! A signature carried inside the body (scheme `mailgun`), as Mailgun signs its webhooks
//! (<https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks>):
//! `signature = hex(HMAC-SHA256(webhook signing key, timestamp + token))`, with the three values
//! in the body: a JSON body's top-level `"signature": {"timestamp", "token", "signature"}`
//! (current webhooks), or top-level `timestamp`, `token`, `signature` fields of an
//! `application/x-www-form-urlencoded` body (legacy webhooks). A subaccount's event also carries
//! `parent-signature`, the same HMAC under the primary account's key: either one matching any
//! configured secret passes, so the primary account's key may be configured instead.
//!
//! **What it proves.** Mailgun's signature covers the timestamp and the random token only, not
//! `event-data`: it shows the sender knows the key and when it signed, not that the event is
//! unchanged. The token is the signed delivery id ([`super::Verified::signed_id`]): use
//! `dedupe = { key = "signed" }` to refuse a replayed token within the window.
//!
//! Which format is read follows the `Content-Type` the app will also see; anything else
//! (multipart included) is malformed. The JSON is read with every member name unique at the
//! levels read (a second `signature` is malformed, so the gateway and the app cannot read
//! different ones). Keys: `secrets`, `tolerance` (default 5 minutes: Mailgun documents none;
//! this is gateway policy).

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use http::header::CONTENT_TYPE;

use super::clock::{self, TimestampFormat};
use super::compile::Cx;
use super::mac::{Algorithm, KeyedMac};
use super::wire::{self, Encoding, SigList};
use super::{malformed, mismatch, missing, Request, VerifyError};

pub(super) struct Mailgun {
    keys: Vec<KeyedMac>,
    tolerance: Duration,
}

/// The signature block as found in the body. JSON strings without escapes are borrowed, so
/// the token can be handed out as the signed id.
#[derive(serde::Deserialize)]
struct Block<'a> {
    #[serde(borrow)]
    timestamp: Option<Stamp<'a>>,
    #[serde(borrow)]
    token: Option<Text<'a>>,
    #[serde(borrow)]
    signature: Option<Text<'a>>,
    #[serde(borrow, rename = "parent-signature")]
    parent_signature: Option<Text<'a>>,
}

/// A string, borrowed from the body when it has no escapes (serde borrows a `Cow` only as a
/// direct field, not inside an `Option`).
#[derive(serde::Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// Mailgun documents the timestamp as an integer and shows it as a string; both are read.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Stamp<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Number(u64),
}

#[derive(serde::Deserialize)]
struct JsonBody<'a> {
    #[serde(borrow)]
    signature: Option<Block<'a>>,
}

impl Mailgun {
    pub(super) fn verify<'a>(
        &self,
        request: &Request<'a>,
        now: SystemTime,
    ) -> Result<Option<&'a str>, VerifyError> {
        let content_type = wire::header(request.headers, &CONTENT_TYPE)?;
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let block = match media.as_str() {
            "application/json" => {
                let body: JsonBody<'a> = serde_json::from_slice(request.body).map_err(|e| {
                    malformed(if e.to_string().contains("duplicate field") {
                        "the JSON body has a signature member twice".to_string()
                    } else {
                        format!("the JSON body does not parse as an object with a signature object (line {}, column {})", e.line(), e.column())
                    })
                })?;
                body.signature
                    .ok_or_else(|| missing("the JSON body has no signature object"))?
            }
            "application/x-www-form-urlencoded" => form_block(request.body)?,
            _ => return Err(malformed(
                "Content-Type is neither application/json nor application/x-www-form-urlencoded",
            )),
        };
        let (Some(timestamp), Some(token), Some(signature)) =
            (&block.timestamp, &block.token, &block.signature)
        else {
            return Err(missing(
                "the signature block lacks timestamp, token or signature",
            ));
        };
        let timestamp: Cow<'_, str> = match timestamp {
            Stamp::Text(t) => Cow::Borrowed(t.as_ref()),
            Stamp::Number(n) => Cow::Owned(n.to_string()),
        };
        // The token is the signed id that `dedupe` keys on, compared as written: the same
        // token spelled with a JSON escape (`\u0061`) or a form escape (`%61`, `+`) would
        // verify (the HMAC covers the decoded text) yet be a new id, so a replay would pass
        // deduplication. Mailgun's tokens are plain letters and digits: refuse any escape.
        let Text(Cow::Borrowed(token)) = token else {
            return Err(malformed(
                "the token is written with escapes (JSON \\u or form %XX/+); Mailgun writes it plainly",
            ));
        };
        if token.is_empty() || token.len() > 256 {
            return Err(malformed("the token is empty or longer than 256 bytes"));
        }
        let mut sigs = SigList::new(32);
        let mut parsed = sigs.push(Encoding::Hex, &signature.0)?;
        if let Some(parent) = &block.parent_signature {
            parsed |= sigs.push(Encoding::Hex, &parent.0)?;
        }
        if !parsed {
            return Err(malformed("the signature is not 64 hex digits"));
        }
        let ts = TimestampFormat::UnixSeconds
            .parse(&timestamp)
            .ok_or_else(|| malformed("the timestamp is not integer Unix seconds"))?;
        clock::check_window(ts, now, self.tolerance)?;
        let matched = self.keys.iter().any(|key| {
            let mut mac = key.clone();
            mac.update(timestamp.as_bytes());
            mac.update(token.as_bytes());
            sigs.matches(mac.finalize().as_slice())
        });
        if !matched {
            return Err(mismatch(format!(
                "the body's signature matches timestamp+token under none of the {} configured key(s)",
                self.keys.len()
            )));
        }
        Ok(Some(token))
    }

    /// `request.body` with a signature block for a fresh token, signed with the first key as
    /// of `now`: a JSON object gets (or has replaced) its top-level `signature`; a form body
    /// gets the three fields appended. For `hookgate sign`.
    pub(super) fn sign_body(&self, body: &[u8], now: SystemTime) -> Result<Vec<u8>, String> {
        let key = self.keys.first().ok_or("no secret configured")?;
        let timestamp = TimestampFormat::UnixSeconds.format(now);
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            &uuid::Uuid::new_v4().simple().to_string()[..18]
        );
        let mut mac = key.clone();
        mac.update(timestamp.as_bytes());
        mac.update(token.as_bytes());
        let signature = hex::encode(mac.finalize().as_slice());
        if let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice(body) {
            object.insert(
                "signature".into(),
                serde_json::json!({"timestamp": timestamp, "token": token, "signature": signature}),
            );
            return Ok(serde_json::Value::Object(object).to_string().into_bytes());
        }
        let mut out = body.to_vec();
        if !out.is_empty() {
            out.push(b'&');
        }
        out.extend_from_slice(
            format!("timestamp={timestamp}&token={token}&signature={signature}").as_bytes(),
        );
        Ok(out)
    }

    /// Whether `body` would be signed as JSON (so `hookgate sign` sends that Content-Type).
    pub(super) fn is_json(body: &[u8]) -> bool {
        matches!(
            serde_json::from_slice::<serde_json::Value>(body),
            Ok(serde_json::Value::Object(_))
        )
    }
}

/// The signature fields of a form body; each may appear once.
fn form_block(body: &[u8]) -> Result<Block<'_>, VerifyError> {
    let mut block = Block {
        timestamp: None,
        token: None,
        signature: None,
        parent_signature: None,
    };
    for (name, value) in form_urlencoded::parse(body) {
        let slot = match name.as_ref() {
            "timestamp" => {
                if block.timestamp.replace(Stamp::Text(value)).is_some() {
                    return Err(malformed("the form has the field timestamp twice"));
                }
                continue;
            }
            "token" => &mut block.token,
            "signature" => &mut block.signature,
            "parent-signature" => &mut block.parent_signature,
            _ => continue,
        };
        if slot.replace(Text(value)).is_some() {
            return Err(malformed(format!("the form has the field {name} twice")));
        }
    }
    Ok(block)
}

pub(super) fn compile(cx: &mut Cx) -> Option<Mailgun> {
    cx.allow_only(&["tolerance"]);
    let tolerance = cx.tolerance(Duration::from_secs(300));
    let secrets = cx.secrets(
        "the HTTP webhook signing key (Mailgun → Sending → Webhooks → HTTP webhook signing key)",
    );
    Some(Mailgun {
        keys: secrets
            .iter()
            .map(|(_, s)| KeyedMac::new(Algorithm::Sha256, s.expose()))
            .collect(),
        tolerance,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;

    const SECRET: &str = "secret-a-0123456789";

    fn sig(ts: &str, token: &str, key: &str) -> String {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(ts.as_bytes());
        mac.update(token.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn json(ts: &str, token: &str, signature: &str) -> Msg {
        let body = format!(
            r#"{{"signature":{{"timestamp":"{ts}","token":"{token}","signature":"{signature}"}},"event-data":{{"event":"delivered"}}}}"#
        );
        Msg::post("/mailgun", body.as_bytes()).header("Content-Type", "application/json")
    }

    #[test]
    fn json_body_checks_in_order() {
        let v = compile("scheme = \"mailgun\"\nsecrets = [\"${A}\"]");
        let rotated = compile("scheme = \"mailgun\"\nsecrets = [\"${B}\", \"${A}\"]");
        let ts = NOW.to_string();
        let token = "e0b5477167110d68991efc6b9f89f0a11066af27834600e123";
        let good = json(&ts, token, &sig(&ts, token, SECRET));
        assert_eq!(reason(good.verify(&v, NOW)), "ok");
        assert_eq!(reason(good.verify(&rotated, NOW)), "ok");
        let verified = v.verify(&good.request(), at(NOW)).unwrap();
        assert_eq!(
            verified.signed_id(),
            Some(token),
            "the token is the signed id"
        );
        assert_eq!(
            reason(json(&ts, token, &sig(&ts, token, "other")).verify(&v, NOW)),
            "mismatch"
        );
        let other_token = json(&ts, "x", &sig(&ts, token, SECRET));
        assert_eq!(reason(other_token.verify(&v, NOW)), "mismatch");
        assert_eq!(reason(good.verify(&v, NOW + 301)), "expired");
        assert_eq!(reason(good.verify(&v, NOW - 301)), "expired");
        assert_eq!(reason(json(&ts, token, "zz").verify(&v, NOW)), "malformed");
        assert_eq!(
            reason(json("12.5", token, &sig("12.5", token, SECRET)).verify(&v, NOW)),
            "malformed"
        );
        let mut no_ct = good.clone();
        no_ct.headers.remove("content-type");
        assert_eq!(reason(no_ct.verify(&v, NOW)), "missing");
        let mut multipart = good.clone();
        multipart.set("Content-Type", "multipart/form-data; boundary=x");
        assert_eq!(reason(multipart.verify(&v, NOW)), "malformed");
        let unsigned =
            Msg::post("/m", br#"{"event-data":{}}"#).header("Content-Type", "application/json");
        assert_eq!(reason(unsigned.verify(&v, NOW)), "missing");
        let mut twice = good.clone();
        let s = sig(&ts, token, SECRET);
        twice.body = format!(
            r#"{{"signature":{{"timestamp":"{ts}","token":"{token}","signature":"{s}"}},"signature":{{"timestamp":"{ts}","token":"{token}","signature":"{s}"}}}}"#
        )
        .into_bytes();
        assert_eq!(
            reason(twice.verify(&v, NOW)),
            "malformed",
            "a second signature member"
        );
        let mut not_json = good.clone();
        not_json.body = b"{".to_vec();
        assert_eq!(reason(not_json.verify(&v, NOW)), "malformed");
        // Integer timestamps are read too.
        let mut int_ts = good.clone();
        int_ts.body =
            format!(r#"{{"signature":{{"timestamp":{ts},"token":"{token}","signature":"{s}"}}}}"#)
                .into_bytes();
        assert_eq!(reason(int_ts.verify(&v, NOW)), "ok");
        // A stale forgery is "expired", decided before the MAC.
        assert_eq!(
            reason(json(&ts, token, &sig(&ts, token, "other")).verify(&v, NOW + 301)),
            "expired"
        );
    }

    #[test]
    fn parent_signature_and_form_bodies() {
        let v = compile("scheme = \"mailgun\"\nsecrets = [\"${A}\"]");
        let ts = NOW.to_string();
        let token = "tok123";
        let body = format!(
            r#"{{"signature":{{"timestamp":"{ts}","token":"{token}","signature":"{}","parent-signature":"{}"}}}}"#,
            sig(&ts, token, "subaccount-key"),
            sig(&ts, token, SECRET)
        );
        let m = Msg::post("/m", body.as_bytes()).header("Content-Type", "application/json");
        assert_eq!(
            reason(m.verify(&v, NOW)),
            "ok",
            "parent signature under the primary key"
        );
        let form = format!(
            "timestamp={ts}&token={token}&signature={}&event=delivered",
            sig(&ts, token, SECRET)
        );
        let f = Msg::post("/m", form.as_bytes()).header(
            "Content-Type",
            "application/x-www-form-urlencoded; charset=utf-8",
        );
        assert_eq!(reason(f.verify(&v, NOW)), "ok");
        let mut doubled = f.clone();
        doubled.body.extend_from_slice(b"&token=other");
        assert_eq!(reason(doubled.verify(&v, NOW)), "malformed");
        let mut tampered = f.clone();
        tampered.body = form.replace("tok123", "tok124").into_bytes();
        assert_eq!(reason(tampered.verify(&v, NOW)), "mismatch");
        let mut partial = f.clone();
        partial.body = format!("timestamp={ts}&token={token}").into_bytes();
        assert_eq!(reason(partial.verify(&v, NOW)), "missing");
    }

    #[test]
    fn signed_bodies_verify_and_errors_are_clean() {
        let v = compile("scheme = \"mailgun\"\nsecrets = [\"${A}\"]");
        for (body, ct) in [
            (
                &br#"{"event-data":{"event":"opened"}}"#[..],
                "application/json",
            ),
            (&b"event=opened"[..], "application/x-www-form-urlencoded"),
        ] {
            let (signed, content_type) = v.sign_body(body, at(NOW)).unwrap().unwrap();
            assert_eq!(content_type, ct);
            let m = Msg::post("/m", &signed).header("Content-Type", ct);
            assert_eq!(
                reason(m.verify(&v, NOW)),
                "ok",
                "{}",
                String::from_utf8_lossy(&signed)
            );
        }
        let ts = NOW.to_string();
        let e = json(&ts, "t", &sig(&ts, "t", "x"))
            .verify(&v, NOW)
            .unwrap_err();
        assert!(!format!("{e:?}").contains("secret-a"), "{e:?}");
        assert_problem("scheme = \"mailgun\"", "secrets", "signing key");
        assert_problem(
            "scheme = \"mailgun\"\nsecrets = [\"${A}\"]\nheader = \"X\"",
            "header",
            "remove it",
        );
    }
}
