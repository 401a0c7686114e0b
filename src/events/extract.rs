//! Reading the event type of a verified request: from a header, a JSON pointer, a form field
//! (optionally holding JSON), or an XML path.
//!
//! Owns: the compiled [`Extractor`] and its lookups over a [`Verified`] body, and the XML path
//! syntax. Does not own: the `event` table's file layer and validation (`events::EventSpec`),
//! matching the event against rules (`events::rules`), or any answer to the sender.
//!
//! Nothing here copies the body. Header values and JSON strings without escapes are borrowed;
//! a form field is percent-decoded only when it holds escapes (a Slack `payload` always does,
//! so that one field is decoded before its JSON is walked); XML text is borrowed unless it
//! holds entity references or is split by comments/CDATA.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName};
use quick_xml::events::Event;

use super::pointer::{JsonPointer, PointerError};
use super::EventError;
use crate::verify::Verified;

/// Where a route's event type comes from, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extractor {
    /// `event = { header = "X-GitHub-Event" }`: the header's only line.
    Header(HeaderName),
    /// `event = { json = "/type" }`.
    Json(JsonPointer),
    /// `event = { form = "event" }`: the first field of that name in a urlencoded body.
    Form(String),
    /// `event = { form = "payload", json = "/type" }`: JSON inside a form field (Slack).
    FormJson(String, JsonPointer),
    /// `event = { xml = "/event/type" }` or `{ xml = "/notification/@type" }`.
    Xml(XmlPath),
}

impl Extractor {
    /// The raw event text, or `None` when the request does not carry one (header absent,
    /// pointer or path leading nowhere, field absent, JSON `null`).
    pub fn extract<'a>(
        &self,
        verified: &Verified<'a>,
        headers: &'a HeaderMap,
    ) -> Result<Option<Cow<'a, str>>, EventError> {
        let body = verified.body();
        match self {
            Extractor::Header(name) => header(headers, name),
            Extractor::Json(pointer) => pointer.lookup(body).map_err(EventError::from),
            Extractor::Form(field) => Ok(form_field(body, field)),
            Extractor::FormJson(field, pointer) => match form_field(body, field) {
                None => Ok(None),
                Some(Cow::Borrowed(json)) => Ok(pointer.lookup(json.as_bytes())?),
                Some(Cow::Owned(json)) => Ok(pointer
                    .lookup(json.as_bytes())?
                    .map(|v| Cow::Owned(v.into_owned()))),
            },
            Extractor::Xml(path) => path.lookup(body),
        }
    }
}

impl From<PointerError> for EventError {
    fn from(e: PointerError) -> Self {
        match e {
            PointerError::Syntax(detail) => EventError::Json(detail),
            PointerError::NotScalar { pointer, kind } => EventError::NotScalar { pointer, kind },
        }
    }
}

fn header<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<Cow<'a, str>>, EventError> {
    let mut lines = headers.get_all(name).iter();
    let Some(value) = lines.next() else {
        return Ok(None);
    };
    if lines.next().is_some() {
        // The gateway and the upstream must not disagree about which line counted.
        return Err(EventError::RepeatedHeader(name.clone()));
    }
    value
        .to_str()
        .map(|s| Some(Cow::Borrowed(s)))
        .map_err(|_| EventError::HeaderNotText(name.clone()))
}

/// The first field called `name` in a urlencoded body, decoded (`+` is a space).
pub(crate) fn form_field<'a>(body: &'a [u8], name: &str) -> Option<Cow<'a, str>> {
    form_urlencoded::parse(body)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

/// A path of element names from the root, optionally ending in an attribute:
/// `/event/type` is the text of `<type>` inside the root `<event>`; `/notification/@type` is
/// the `type` attribute of the root `<notification>`.
///
/// Names compare by local name (a namespace prefix is ignored: `/event/type` matches
/// `<ns:event><ns:type>`), case-sensitively. The first element in document order on the
/// path wins; its text is the concatenation of its text and CDATA (child elements are
/// skipped), with predefined and character entities resolved, trimmed of surrounding
/// whitespace. Entities declared in a DTD are not expanded (an error), so no entity
/// expansion attack applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlPath {
    text: String,
    elements: Vec<Box<str>>,
    attribute: Option<Box<str>>,
}

impl XmlPath {
    /// Parses `"/event/type"` or `"/notification/@type"`.
    pub fn parse(text: &str) -> Result<XmlPath, String> {
        let usage = "write element names from the root, e.g. \"/event/type\", optionally ending \
                     in an attribute such as \"/notification/@type\"";
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("invalid XML path {text:?}: {usage}"));
        };
        let mut elements = Vec::new();
        let mut attribute = None;
        let segments: Vec<&str> = rest.split('/').collect();
        for (i, segment) in segments.iter().enumerate() {
            let (name, is_attribute) = match segment.strip_prefix('@') {
                Some(name) => (name, true),
                None => (*segment, false),
            };
            if !is_xml_name(name) {
                return Err(format!(
                    "invalid XML path {text:?}: {name:?} is not an element or attribute name; \
                     {usage}"
                ));
            }
            if is_attribute {
                if i + 1 != segments.len() || i == 0 {
                    return Err(format!(
                        "invalid XML path {text:?}: an attribute (@name) may only come last, \
                         after at least one element; {usage}"
                    ));
                }
                attribute = Some(name.into());
            } else {
                elements.push(name.into());
            }
        }
        Ok(XmlPath {
            text: text.to_string(),
            elements,
            attribute,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The text (or attribute) at this path in `xml`, `None` if the path is not there.
    pub fn lookup<'a>(&self, xml: &'a [u8]) -> Result<Option<Cow<'a, str>>, EventError> {
        let mut reader = quick_xml::Reader::from_reader(xml);
        // Defaults of note: end names are checked, text is not trimmed, empty elements stay
        // `Event::Empty`.
        let last = self.elements.len() - 1;
        // How many path elements the chain of open elements matches. Elements off the path
        // are skipped whole, so every open element is on the path.
        let mut matched = 0usize;
        loop {
            let event = reader.read_event().map_err(|e| xml_error(&reader, &e))?;
            match event {
                Event::Start(start) => {
                    let on_path = local_name_is(&start, &self.elements[matched]);
                    if !on_path {
                        reader
                            .read_to_end(start.name())
                            .map_err(|e| xml_error(&reader, &e))?;
                        continue;
                    }
                    if matched < last {
                        matched += 1;
                        continue;
                    }
                    return match &self.attribute {
                        Some(name) => attribute(&start, name),
                        None => element_text(&mut reader).map(Some),
                    };
                }
                Event::Empty(start)
                    if matched == last && local_name_is(&start, &self.elements[matched]) =>
                {
                    return match &self.attribute {
                        Some(name) => attribute(&start, name),
                        None => Ok(Some(Cow::Borrowed(""))),
                    };
                }
                Event::End(_) => {
                    // Only elements on the path are open here (others were skipped whole).
                    matched = matched.saturating_sub(1);
                    if matched == 0 {
                        // The root closed without the path: nothing after it counts.
                        return Ok(None);
                    }
                }
                Event::Eof => {
                    return if matched == 0 {
                        Ok(None)
                    } else {
                        Err(EventError::Xml("unexpected end of document".into()))
                    };
                }
                _ => {}
            }
        }
    }
}

fn is_xml_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.')
        && name
            .chars()
            .all(|c| !c.is_whitespace() && !"/@<>&\"'=[]()*,;!?".contains(c))
}

fn local_name_is(start: &quick_xml::events::BytesStart<'_>, name: &str) -> bool {
    start.local_name().as_ref() == name.as_bytes()
}

fn attribute<'a>(
    start: &quick_xml::events::BytesStart<'_>,
    name: &str,
) -> Result<Option<Cow<'a, str>>, EventError> {
    for attr in start.attributes() {
        let attr = attr.map_err(|e| EventError::Xml(format!("bad attribute: {e}")))?;
        if attr.key.local_name().as_ref() == name.as_bytes() {
            let value = attr
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| EventError::Xml(format!("bad attribute value: {e}")))?;
            return Ok(Some(Cow::Owned(value.into_owned())));
        }
    }
    Ok(None)
}

/// The text of the element just opened, up to its end tag, trimmed.
fn element_text<'a>(reader: &mut quick_xml::Reader<&'a [u8]>) -> Result<Cow<'a, str>, EventError> {
    let mut text: Option<Cow<'a, str>> = None;
    let mut push = |piece: Cow<'a, str>| match &mut text {
        None => text = Some(piece),
        Some(existing) => existing.to_mut().push_str(&piece),
    };
    loop {
        let event = reader.read_event().map_err(|e| xml_error(reader, &e))?;
        match event {
            Event::Text(t) => push(
                t.xml10_content()
                    .map_err(|e| EventError::Xml(e.to_string()))?,
            ),
            Event::CData(c) => push(c.decode().map_err(|e| EventError::Xml(e.to_string()))?),
            Event::GeneralRef(r) => {
                if let Some(c) = r
                    .resolve_char_ref()
                    .map_err(|e| EventError::Xml(e.to_string()))?
                {
                    push(Cow::Owned(c.to_string()));
                } else {
                    let name = r.decode().map_err(|e| EventError::Xml(e.to_string()))?;
                    match quick_xml::escape::resolve_predefined_entity(&name) {
                        Some(s) => push(Cow::Borrowed(s)),
                        None => {
                            return Err(EventError::Xml(format!(
                                "entity &{};  is not predefined (DTD entities are not expanded)",
                                truncate(&name, 32)
                            )))
                        }
                    }
                }
            }
            Event::Start(child) => {
                reader
                    .read_to_end(child.name())
                    .map_err(|e| xml_error(reader, &e))?;
            }
            Event::End(_) => break,
            Event::Eof => return Err(EventError::Xml("unexpected end of document".into())),
            _ => {}
        }
    }
    Ok(match text {
        None => Cow::Borrowed(""),
        Some(Cow::Borrowed(s)) => Cow::Borrowed(s.trim()),
        Some(Cow::Owned(s)) if s.trim().len() == s.len() => Cow::Owned(s),
        Some(Cow::Owned(s)) => Cow::Owned(s.trim().to_string()),
    })
}

fn xml_error(reader: &quick_xml::Reader<&[u8]>, e: &quick_xml::Error) -> EventError {
    EventError::Xml(format!(
        "at byte {}: {}",
        reader.error_position(),
        truncate(&e.to_string(), 120)
    ))
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{Request, Verifier};
    use std::time::SystemTime;

    fn run(
        extractor: &Extractor,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Option<String>, EventError> {
        let request = Request {
            method: "POST",
            path_and_query: "/hook",
            headers,
            body,
        };
        let verified = Verifier::disabled()
            .verify(&request, SystemTime::now())
            .unwrap();
        extractor
            .extract(&verified, headers)
            .map(|v| v.map(Cow::into_owned))
    }

    fn json(p: &str) -> Extractor {
        Extractor::Json(JsonPointer::parse(p).unwrap())
    }

    fn xml(p: &str) -> Extractor {
        Extractor::Xml(XmlPath::parse(p).unwrap())
    }

    #[test]
    fn github_push_event_in_header() {
        let mut headers = HeaderMap::new();
        headers.insert("x-github-event", "push".parse().unwrap());
        headers.insert(
            "x-github-delivery",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958".parse().unwrap(),
        );
        let body =
            br#"{"ref":"refs/heads/main","before":"6113728f27ae82c7b1a177c8d03f9e96e0adf246"}"#;
        let ex = Extractor::Header(HeaderName::from_static("x-github-event"));
        assert_eq!(run(&ex, &headers, body).unwrap().as_deref(), Some("push"));
        assert_eq!(run(&ex, &HeaderMap::new(), body).unwrap(), None);
        headers.append("x-github-event", "issues".parse().unwrap());
        assert!(matches!(
            run(&ex, &headers, body),
            Err(EventError::RepeatedHeader(_))
        ));
        let mut bad = HeaderMap::new();
        bad.insert(
            "x-github-event",
            http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert!(matches!(
            run(&ex, &bad, body),
            Err(EventError::HeaderNotText(_))
        ));
    }

    #[test]
    fn json_payloads() {
        let h = HeaderMap::new();
        let stripe = br#"{"id":"evt_1","object":"event","data":{"object":{"id":"pi_1","object":"payment_intent"}},"type":"payment_intent.succeeded"}"#;
        assert_eq!(
            run(&json("/type"), &h, stripe).unwrap().as_deref(),
            Some("payment_intent.succeeded")
        );
        assert_eq!(
            run(&json("/data/object/object"), &h, stripe)
                .unwrap()
                .as_deref(),
            Some("payment_intent")
        );
        let seed = br#"{"event_type":"user_signup","user":{"id":42}}"#;
        assert_eq!(
            run(&json("/event_type"), &h, seed).unwrap().as_deref(),
            Some("user_signup")
        );
        assert_eq!(run(&json("/type"), &h, seed).unwrap(), None);
        let err = run(&json("/type"), &h, b"type=push").unwrap_err();
        assert!(matches!(err, EventError::Json(_)), "{err}");
        assert!(
            err.to_string().starts_with("body is not valid JSON"),
            "{err}"
        );
    }

    #[test]
    fn form_fields_and_slack_interactivity() {
        let h = HeaderMap::new();
        let payload = r#"{"type":"block_actions","user":{"id":"U123","name":"a b"},"actions":[{"action_id":"approve"}]}"#;
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", payload)
            .finish();
        assert!(body.starts_with("payload=%7B%22type%22"));
        let slack = Extractor::FormJson("payload".into(), JsonPointer::parse("/type").unwrap());
        assert_eq!(
            run(&slack, &h, body.as_bytes()).unwrap().as_deref(),
            Some("block_actions")
        );
        let action = Extractor::FormJson(
            "payload".into(),
            JsonPointer::parse("/actions/0/action_id").unwrap(),
        );
        assert_eq!(
            run(&action, &h, body.as_bytes()).unwrap().as_deref(),
            Some("approve")
        );
        // A field that is not JSON is a bad request; an absent field is no event.
        assert!(matches!(
            run(&slack, &h, b"payload=%7Bnope"),
            Err(EventError::Json(_))
        ));
        assert_eq!(run(&slack, &h, b"token=x&team_id=T1").unwrap(), None);
        // Unescaped JSON in a field is walked in place.
        assert_eq!(
            run(&slack, &h, br#"payload={"type":"shortcut"}"#)
                .unwrap()
                .as_deref(),
            Some("shortcut")
        );

        let table: [(&[u8], Option<&str>); 7] = [
            (b"event=order.created&id=7", Some("order.created")),
            (b"id=7&event=order%2Ecreated", Some("order.created")),
            (b"event=a+b", Some("a b")),
            (b"event=first&event=second", Some("first")),
            (b"event=", Some("")),
            (b"events=x&xevent=y", None),
            (b"", None),
        ];
        let form = Extractor::Form("event".into());
        for (body, expected) in table {
            assert_eq!(
                run(&form, &h, body).unwrap().as_deref(),
                expected,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn form_field_is_borrowed_without_escapes() {
        assert!(matches!(
            form_field(b"a=1&event=push", "event"),
            Some(Cow::Borrowed("push"))
        ));
        assert!(matches!(
            form_field(b"event=pu%73h", "event"),
            Some(Cow::Owned(_))
        ));
    }

    #[test]
    fn xml_paths_parse() {
        let table: [(&str, bool); 12] = [
            ("/event/type", true),
            ("/notification/@type", true),
            ("/a", true),
            ("/a.b/c-d/e_f", true),
            ("/ns:event/type", true),
            ("event/type", false),
            ("/", false),
            ("/a//b", false),
            ("/@type", false),
            ("/a/@b/c", false),
            ("/a b", false),
            ("/1a", false),
        ];
        for (text, ok) in table {
            assert_eq!(XmlPath::parse(text).is_ok(), ok, "{text}");
        }
    }

    #[test]
    fn xml_lookups() {
        let h = HeaderMap::new();
        let notification = br#"<?xml version="1.0" encoding="UTF-8"?>
<!-- a provider notification -->
<event xmlns:x="urn:x">
  <id>9c2f</id>
  <meta><type>decoy</type></meta>
  <type>
    subscription.renewed
  </type>
  <type>second</type>
</event>"#;
        let table: [(&str, &[u8], Option<&str>); 17] = [
            ("/event/type", notification, Some("subscription.renewed")),
            ("/event/id", notification, Some("9c2f")),
            ("/event/meta/type", notification, Some("decoy")),
            ("/event/missing", notification, None),
            ("/other/type", notification, None),
            (
                "/event/type",
                b"<event><type>a &amp; b&#33;</type></event>",
                Some("a & b!"),
            ),
            (
                "/event/type",
                b"<event><type><![CDATA[<raw>]]></type></event>",
                Some("<raw>"),
            ),
            (
                "/event/type",
                b"<event><type>a<!-- c -->b<x>skip</x>c</type></event>",
                Some("abc"),
            ),
            ("/event/type", b"<event><type/></event>", Some("")),
            (
                "/event/type",
                b"<x:event xmlns:x='u'><x:type>ns</x:type></x:event>",
                Some("ns"),
            ),
            (
                "/event/@type",
                b"<event type=\"order.paid\"/>",
                Some("order.paid"),
            ),
            (
                "/event/@type",
                b"<event type='a&amp;b'><type>no</type></event>",
                Some("a&b"),
            ),
            ("/event/@type", b"<event kind='x'/>", None),
            (
                "/a/b/c",
                b"<a><b><x/></b><b><c>2nd b</c></b></a>",
                Some("2nd b"),
            ),
            ("/a/b", b"<a/>", None),
            ("/a/b", b"<a></a><a><b>after root</b></a>", None),
            ("/Event/Type", b"<event><type>case</type></event>", None),
        ];
        for (path, body, expected) in table {
            assert_eq!(
                run(&xml(path), &h, body).unwrap().as_deref(),
                expected,
                "{path} in {}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn xml_errors() {
        let h = HeaderMap::new();
        let table: [&[u8]; 6] = [
            b"<event><type>x</event>",
            b"<event><type>unterminated",
            b"<event><other></event>",
            b"<!DOCTYPE e [<!ENTITY boom \"x\">]><event><type>&boom;</type></event>",
            b"<event><type>&#0;</type></event>",
            b"<event",
        ];
        for body in table {
            let err = run(&xml("/event/type"), &h, body).unwrap_err();
            assert!(
                matches!(err, EventError::Xml(_)),
                "{}: {err:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn xml_text_is_borrowed_when_plain() {
        let p = XmlPath::parse("/e/t").unwrap();
        assert!(matches!(
            p.lookup(b"<e><t> plain </t></e>").unwrap(),
            Some(Cow::Borrowed("plain"))
        ));
    }
}
