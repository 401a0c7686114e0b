//! Reading the event type of a verified request: from a header, a JSON pointer, a form field
//! (optionally holding JSON), or an XML path.
//!
//! Owns: the compiled [`Extractor`] and its lookups over a [`Verified`] body, the XML path
//! syntax, and the one-reading rules for forms and XML. Does not own: the `event` table's file
//! layer and validation (`config::events`), which [`Scope`] a route needs
//! (`events::EventRouter`), matching the event against rules (`events::rules`), or any answer
//! to the sender.
//!
//! Nothing here copies the body. Header values and JSON strings without escapes are borrowed;
//! a form field is percent-decoded only when it holds escapes (a Slack `payload` always does,
//! so that one field is decoded before its JSON is walked); XML text is borrowed unless it
//! holds entity references or is split by comments/CDATA.
//!
//! # One reading
//! The upstream reads the same bytes again, so whatever readers could read differently is
//! refused (400) rather than decided by us:
//! - **JSON**: see [`mod@super::pointer`] (duplicate keys on the path, inexact numbers, and
//!   how much of the body each [`Scope`] validates).
//! - **Forms**: the field must occur once in the body ([`EventError::RepeatedField`]; PHP and
//!   Rails keep the last, Go's `FormValue` and Python's `parse_qs(...)[k][0]` the first), and
//!   its percent-decoded bytes must be UTF-8 ([`EventError::FieldNotUtf8`]; readers differ
//!   between replacing and keeping invalid bytes). The whole body is scanned, in both scopes.
//! - **XML**: in every element on the path, the child the path follows must occur once
//!   ([`EventError::RepeatedElement`], compared by local name as the path is), and the
//!   attribute a path ends in must occur once on its element. A `<!DOCTYPE>` is refused: its
//!   internal subset can declare entities that a reader expanding them sees as elements on the
//!   path. With [`Scope::Path`] the root element is read to its end and nothing after it; with
//!   [`Scope::Document`] the body must also be UTF-8 and hold exactly one root element, with
//!   only comments, processing instructions and whitespace around it, every element's
//!   attributes well-formed and named once, and every entity reference predefined or a
//!   character reference. quick-xml checks that end tags match; it is not a full XML 1.0
//!   well-formedness checker (names are not validated, for one).

use std::borrow::Cow;

use http::{HeaderMap, HeaderName};
use quick_xml::events::Event;

use super::pointer::{JsonPointer, PointerError, Scope};
use super::EventError;
use crate::verify::Verified;

/// Where a route's event type comes from, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extractor {
    /// `event = { header = "X-GitHub-Event" }`: the header's only line.
    Header(HeaderName),
    /// `event = { json = "/type" }`.
    Json(JsonPointer),
    /// `event = { form = "event" }`: the only field of that name in a urlencoded body.
    Form(String),
    /// `event = { form = "payload", json = "/type" }`: JSON inside a form field (Slack).
    FormJson(String, JsonPointer),
    /// `event = { xml = "/event/type" }` or `{ xml = "/notification/@type" }`.
    Xml(XmlPath),
}

impl Extractor {
    /// The raw event text, or `None` when the request does not carry one (header absent,
    /// pointer or path leading nowhere, field absent, JSON `null`). `scope` is how much of
    /// the body is read and validated: [`Scope::Path`] on routes that verify the body,
    /// [`Scope::Document`] otherwise (module doc). The JSON in a form field is read with the
    /// same scope.
    pub fn extract<'a>(
        &self,
        verified: &Verified<'a>,
        headers: &'a HeaderMap,
        scope: Scope,
    ) -> Result<Option<Cow<'a, str>>, EventError> {
        let body = verified.body();
        let format = match self {
            Extractor::Header(_) => None,
            Extractor::Json(_) => Some(Format::Json),
            Extractor::Form(_) | Extractor::FormJson(..) => Some(Format::Form),
            Extractor::Xml(_) => Some(Format::Xml),
        };
        if let Some(format) = format.filter(|&format| !declares(headers, format)) {
            return Err(EventError::ContentType(format.describe()));
        }
        match self {
            Extractor::Header(name) => header(headers, name),
            Extractor::Json(pointer) => pointer.lookup(body, scope).map_err(EventError::from),
            Extractor::Form(field) => form_field(body, field),
            Extractor::FormJson(field, pointer) => match form_field(body, field)? {
                None => Ok(None),
                Some(Cow::Borrowed(json)) => Ok(pointer.lookup(json.as_bytes(), scope)?),
                Some(Cow::Owned(json)) => Ok(pointer
                    .lookup(json.as_bytes(), scope)?
                    .map(|v| Cow::Owned(v.into_owned()))),
            },
            Extractor::Xml(path) => path.lookup(body, scope),
        }
    }
}

/// A body format an event or a delivery id is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Form,
    Xml,
}

impl Format {
    /// The media types that declare it, for the sender's reason.
    pub fn describe(self) -> &'static str {
        match self {
            Format::Json => "application/json (or +json)",
            Format::Form => "application/x-www-form-urlencoded",
            Format::Xml => "application/xml, text/xml (or +xml)",
        }
    }
}

/// Whether the request's `Content-Type` agrees with `format`. Apps parse a body by its
/// declared type: a JSON body sent as a form is read as form fields by Flask, Rails and
/// PHP, which may name another event than the JSON does. No `Content-Type` at all is
/// accepted (frameworks then parse no fields); several are not (RFC 9110 §8.3).
pub fn declares(headers: &HeaderMap, format: Format) -> bool {
    let mut values = headers.get_all(http::header::CONTENT_TYPE).iter();
    let Some(value) = values.next() else {
        return true;
    };
    if values.next().is_some() {
        return false;
    }
    let essence = value
        .as_bytes()
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let is = |media: &[u8]| essence.eq_ignore_ascii_case(media);
    let suffix = |tail: &[u8]| {
        essence.len() > tail.len()
            && essence[essence.len() - tail.len()..].eq_ignore_ascii_case(tail)
    };
    match format {
        Format::Json => is(b"application/json") || suffix(b"+json"),
        Format::Form => is(b"application/x-www-form-urlencoded"),
        Format::Xml => is(b"application/xml") || is(b"text/xml") || suffix(b"+xml"),
    }
}

impl From<PointerError> for EventError {
    fn from(e: PointerError) -> Self {
        match e {
            PointerError::Syntax(detail) => EventError::Json(detail),
            PointerError::NotScalar { pointer, kind } => EventError::NotScalar { pointer, kind },
            e @ (PointerError::DuplicateKey { .. } | PointerError::InexactNumber { .. }) => {
                EventError::AmbiguousJson(e)
            }
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

/// The field called `name` in a urlencoded body (WHATWG URL, "application/x-www-form-urlencoded
/// parsing"), decoded (`+` is a space). Errors when it occurs more than once or its decoded
/// bytes are not UTF-8. Reads the whole body.
pub(crate) fn form_field<'a>(
    body: &'a [u8],
    name: &str,
) -> Result<Option<Cow<'a, str>>, EventError> {
    let mut found = None;
    for pair in body.split(|&b| b == b'&') {
        let raw_key = pair.split(|&b| b == b'=').next().unwrap_or_default();
        // Only a key with escapes needs decoding before the comparison; values are decoded
        // only for the field asked for.
        let is_field = if raw_key.iter().any(|&b| b == b'%' || b == b'+') {
            form_urlencoded::parse(raw_key)
                .next()
                .is_some_and(|(key, _)| key == name)
        } else {
            raw_key == name.as_bytes()
        };
        if !is_field {
            continue;
        }
        let Some((_, value)) = form_urlencoded::parse(pair).next() else {
            continue;
        };
        if found.is_some() {
            return Err(EventError::RepeatedField(name.to_string()));
        }
        // Decoding is lossy (invalid bytes become U+FFFD); check the bytes when it shows.
        if value.contains('\u{FFFD}') {
            let raw = pair.splitn(2, |&b| b == b'=').nth(1).unwrap_or_default();
            if std::str::from_utf8(&percent_decode(raw)).is_err() {
                return Err(EventError::FieldNotUtf8(name.to_string()));
            }
        }
        found = Some(value);
    }
    Ok(found)
}

/// `+` to a space and `%XX` to its byte, anything else as is (the WHATWG percent-decode).
fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < raw.len() => match (hex(raw[i + 1]), hex(raw[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// A path of element names from the root, optionally ending in an attribute:
/// `/event/type` is the text of `<type>` inside the root `<event>`; `/notification/@type` is
/// the `type` attribute of the root `<notification>`.
///
/// Names compare by local name (a namespace prefix is ignored: `/event/type` matches
/// `<ns:event><ns:type>`), case-sensitively. Each element on the path must occur once in its
/// parent, and an attribute once on its element (a repeat is an error); the element's text
/// is the concatenation of its text and CDATA (child elements are
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
    /// `scope` says how much of the document is read (module doc). Errors: not XML as far as
    /// read ([`EventError::Xml`]), a repeated element or attribute on the path.
    pub fn lookup<'a>(
        &self,
        xml: &'a [u8],
        scope: Scope,
    ) -> Result<Option<Cow<'a, str>>, EventError> {
        if scope == Scope::Document {
            if let Err(e) = std::str::from_utf8(xml) {
                return Err(EventError::Xml(format!(
                    "invalid UTF-8 at byte {}",
                    e.valid_up_to()
                )));
            }
        }
        let mut reader = quick_xml::Reader::from_reader(xml);
        // Defaults of note: end names are checked, text is not trimmed, empty elements stay
        // `Event::Empty`.
        let last = self.elements.len() - 1;
        // Path elements open now: `elements[..open]`. Elements off the path are skipped
        // whole, so every open element is on the path.
        let mut open = 0usize;
        // `seen[k]`: `elements[k]` already occurred in the open `elements[k - 1]`; `seen[0]`:
        // the root element (on the path or not) was read.
        let mut seen = vec![false; self.elements.len()];
        let mut found = None;
        loop {
            let event = reader.read_event().map_err(|e| xml_error(&reader, &e))?;
            match event {
                Event::Start(ref start) | Event::Empty(ref start) => {
                    let empty = matches!(event, Event::Empty(_));
                    if scope == Scope::Document {
                        check_attributes(start)?;
                    }
                    if open == 0 && seen[0] {
                        return Err(EventError::Xml("more than one root element".to_string()));
                    }
                    let on_path = local_name_is(start, &self.elements[open]);
                    if open > 0 && on_path && seen[open] {
                        return Err(EventError::RepeatedElement {
                            path: self.text.clone(),
                            parent: self.elements[open - 1].to_string(),
                            element: self.elements[open].to_string(),
                        });
                    }
                    seen[open] |= on_path || open == 0;
                    if on_path && open == last {
                        found = match &self.attribute {
                            Some(name) => self.attribute(start, name)?,
                            None if empty => Some(Cow::Borrowed("")),
                            None => Some(element_text(&mut reader, scope)?),
                        };
                        if self.attribute.is_some() && !empty {
                            skip(&mut reader, start, scope)?;
                        }
                    } else if on_path && !empty {
                        open += 1;
                        seen[open] = false;
                    } else if !empty {
                        skip(&mut reader, start, scope)?;
                    }
                }
                Event::End(_) => open = open.saturating_sub(1),
                Event::Eof => {
                    if open > 0 {
                        return Err(EventError::Xml("unexpected end of document".into()));
                    }
                    if scope == Scope::Document && !seen[0] {
                        return Err(EventError::Xml("no root element".into()));
                    }
                    return Ok(found);
                }
                Event::DocType(_) => {
                    return Err(EventError::Xml(
                        "a <!DOCTYPE> is not accepted (its entities could change what other \
                         readers see on the path)"
                            .into(),
                    ))
                }
                Event::Text(ref t)
                    if open == 0
                        && scope == Scope::Document
                        && !t.iter().all(u8::is_ascii_whitespace) =>
                {
                    return Err(EventError::Xml("text outside the root element".into()));
                }
                Event::CData(_) | Event::GeneralRef(_) if open == 0 && scope == Scope::Document => {
                    return Err(EventError::Xml("text outside the root element".into()));
                }
                Event::GeneralRef(ref r) if scope == Scope::Document => {
                    reference_text(r)?;
                }
                _ => {}
            }
            // The root element is complete: with `Scope::Path`, nothing after it counts.
            if open == 0 && seen[0] && scope == Scope::Path {
                return Ok(found);
            }
        }
    }

    /// The value of the attribute `name` (by local name) of `start`, which must occur once.
    fn attribute<'a>(
        &self,
        start: &quick_xml::events::BytesStart<'_>,
        name: &str,
    ) -> Result<Option<Cow<'a, str>>, EventError> {
        let mut found = None;
        for attr in start.attributes() {
            let attr = attr.map_err(|e| EventError::Xml(format!("bad attribute: {e}")))?;
            if attr.key.local_name().as_ref() != name.as_bytes() {
                continue;
            }
            if found.is_some() {
                return Err(EventError::RepeatedAttribute {
                    path: self.text.clone(),
                    attribute: name.to_string(),
                });
            }
            let value = attr
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| EventError::Xml(format!("bad attribute value: {e}")))?;
            found = Some(Cow::Owned(value.into_owned()));
        }
        Ok(found)
    }
}

/// Reads past the end of the element `start` opened. With [`Scope::Document`], checks on the
/// way what quick-xml leaves to its caller: attribute syntax, unique attribute names, and
/// that every entity reference is predefined or a character reference (quick-xml itself
/// checks that end tags match).
fn skip(
    reader: &mut quick_xml::Reader<&[u8]>,
    start: &quick_xml::events::BytesStart<'_>,
    scope: Scope,
) -> Result<(), EventError> {
    if scope == Scope::Path {
        return reader
            .read_to_end(start.name())
            .map(|_| ())
            .map_err(|e| xml_error(reader, &e));
    }
    let mut depth = 1usize;
    while depth > 0 {
        match reader.read_event().map_err(|e| xml_error(reader, &e))? {
            Event::Start(child) => {
                check_attributes(&child)?;
                depth += 1;
            }
            Event::Empty(child) => check_attributes(&child)?,
            Event::End(_) => depth -= 1,
            Event::GeneralRef(r) => {
                reference_text(&r)?;
            }
            Event::Eof => return Err(EventError::Xml("unexpected end of document".into())),
            _ => {}
        }
    }
    Ok(())
}

/// Every attribute of `start` is well-formed, named once, with only predefined or character
/// references in its value.
fn check_attributes(start: &quick_xml::events::BytesStart<'_>) -> Result<(), EventError> {
    for attr in start.attributes() {
        let attr = attr.map_err(|e| EventError::Xml(format!("bad attribute: {e}")))?;
        attr.normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| EventError::Xml(format!("bad attribute value: {e}")))?;
    }
    Ok(())
}

/// The text of a character reference or predefined entity; any other entity is an error
/// (entities declared in a DTD are never expanded).
fn reference_text(r: &quick_xml::events::BytesRef<'_>) -> Result<Cow<'static, str>, EventError> {
    if let Some(c) = r
        .resolve_char_ref()
        .map_err(|e| EventError::Xml(e.to_string()))?
    {
        return Ok(Cow::Owned(c.to_string()));
    }
    let name = r.decode().map_err(|e| EventError::Xml(e.to_string()))?;
    match quick_xml::escape::resolve_predefined_entity(&name) {
        Some(s) => Ok(Cow::Borrowed(s)),
        None => Err(EventError::Xml(format!(
            "entity &{}; is not predefined (DTD entities are not expanded)",
            truncate(&name, 32)
        ))),
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

/// The text of the element just opened, up to its end tag, trimmed. Child elements are
/// skipped (and checked with [`Scope::Document`]).
fn element_text<'a>(
    reader: &mut quick_xml::Reader<&'a [u8]>,
    scope: Scope,
) -> Result<Cow<'a, str>, EventError> {
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
            Event::GeneralRef(r) => push(reference_text(&r)?),
            Event::Start(child) => {
                if scope == Scope::Document {
                    check_attributes(&child)?;
                }
                skip(reader, &child, scope)?;
            }
            Event::Empty(child) if scope == Scope::Document => check_attributes(&child)?,
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
mod tests;
