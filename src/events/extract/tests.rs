//! Tests of `events::extract`.

use super::*;

/// Extracts with both scopes; on a well-formed body they must agree.
fn run(
    extractor: &Extractor,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<String>, EventError> {
    let path = run_in(Scope::Path, extractor, headers, body);
    let document = run_in(Scope::Document, extractor, headers, body);
    assert_eq!(
        path,
        document,
        "scopes disagree on {}",
        String::from_utf8_lossy(body)
    );
    path
}

fn run_in(
    scope: Scope,
    extractor: &Extractor,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<String>, EventError> {
    let verified = crate::verify::testkit::unsigned(headers, body);
    extractor
        .extract(&verified, headers, scope)
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
    let body = br#"{"ref":"refs/heads/main","before":"6113728f27ae82c7b1a177c8d03f9e96e0adf246"}"#;
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

    let table: [(&[u8], Option<&str>); 8] = [
        (b"event=order.created&id=7", Some("order.created")),
        (b"&&event=x&&", Some("x")),
        (b"event=caf%C3%A9", Some("caf\u{e9}")),
        (b"id=7&event=order%2Ecreated", Some("order.created")),
        (b"event=a+b", Some("a b")),
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
        form_field(b"a=1&event=push", "event").unwrap(),
        Some(Cow::Borrowed("push"))
    ));
    assert!(matches!(
        form_field(b"event=pu%73h", "event").unwrap(),
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
  <other><type>nested off the path</type></other>
</event>"#;
    let table: [(&str, &[u8], Option<&str>); 16] = [
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
            b"<a><x><c>off</c></x><b><y/><c>in b</c></b></a>",
            Some("in b"),
        ),
        ("/a/b", b"<a/>", None),
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
fn repeated_form_fields_are_refused() {
    let h = HeaderMap::new();
    let form = Extractor::Form("event".into());
    let slack = Extractor::FormJson("payload".into(), JsonPointer::parse("/type").unwrap());
    let table: [(&Extractor, &[u8], EventError); 6] = [
        (
            &form,
            b"event=first&event=second",
            EventError::RepeatedField("event".into()),
        ),
        // The second occurrence at the very end, after other fields.
        (
            &form,
            b"event=a&x=1&y=2&event=a",
            EventError::RepeatedField("event".into()),
        ),
        // Spelled differently, decoded the same.
        (
            &form,
            b"event=a&%65vent=b",
            EventError::RepeatedField("event".into()),
        ),
        (
            &form,
            b"event=a&event",
            EventError::RepeatedField("event".into()),
        ),
        (
            &slack,
            b"payload=%7B%22type%22%3A%22a%22%7D&payload=%7B%7D",
            EventError::RepeatedField("payload".into()),
        ),
        // Percent-decoded bytes that are not UTF-8 (readers replace or keep them).
        (
            &form,
            b"event=caf%E9",
            EventError::FieldNotUtf8("event".into()),
        ),
    ];
    for (extractor, body, expected) in table {
        let shown = String::from_utf8_lossy(body);
        assert_eq!(run(extractor, &h, body), Err(expected), "{shown}");
    }
    let err = run(&form, &h, b"event=user_signup&event=payment_processed").unwrap_err();
    assert_eq!(
        err.to_string(),
        "form field \"event\" appears more than once; form readers disagree on which one \
         counts"
    );
    // Other fields may repeat; a literal U+FFFD is valid UTF-8.
    assert_eq!(
        run(&form, &h, b"x=1&x=2&event=a&events=b&events=c")
            .unwrap()
            .as_deref(),
        Some("a")
    );
    assert_eq!(
        run(&form, &h, b"event=%EF%BF%BD").unwrap().as_deref(),
        Some("\u{fffd}")
    );
    // The JSON inside the field follows the JSON rules.
    let dup = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", r#"{"type":"a","type":"b"}"#)
        .finish();
    assert!(matches!(
        run(&slack, &h, dup.as_bytes()),
        Err(EventError::AmbiguousJson(PointerError::DuplicateKey { .. }))
    ));
    let trailing = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", r#"{"type":"a"} x"#)
        .finish();
    assert_eq!(
        run_in(Scope::Path, &slack, &h, trailing.as_bytes())
            .unwrap()
            .as_deref(),
        Some("a")
    );
    assert!(matches!(
        run_in(Scope::Document, &slack, &h, trailing.as_bytes()),
        Err(EventError::Json(_))
    ));
}

#[test]
fn repeated_xml_elements_on_the_path_are_refused() {
    let h = HeaderMap::new();
    // (path, body, parent, element)
    let table: [(&str, &[u8], &str, &str); 6] = [
        (
            "/event/type",
            b"<event><type>a</type><type>b</type></event>",
            "event",
            "type",
        ),
        (
            "/event/type",
            b"<event><type>a</type><x>big</x><type/></event>",
            "event",
            "type",
        ),
        // By local name, as the path compares.
        (
            "/event/type",
            b"<event xmlns:a='u' xmlns:b='v'><a:type>a</a:type><b:type>b</b:type></event>",
            "event",
            "type",
        ),
        // A parent on the path repeated: the second could hold another value.
        ("/a/b/c", b"<a><b><c>1</c></b><b><c>2</c></b></a>", "a", "b"),
        ("/a/b/c", b"<a><b><x/></b><b><c>2</c></b></a>", "a", "b"),
        ("/a/b/@t", b"<a><b t='1'/><b t='2'/></a>", "a", "b"),
    ];
    for (path, body, parent, element) in table {
        let shown = String::from_utf8_lossy(body);
        assert_eq!(
            run(&xml(path), &h, body),
            Err(EventError::RepeatedElement {
                path: path.into(),
                parent: parent.into(),
                element: element.into(),
            }),
            "{path} in {shown}"
        );
    }
    let err = run(
        &xml("/event/type"),
        &h,
        b"<event><type>a</type><type>b</type></event>",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "element <type> appears more than once in <event> on the path /event/type; XML \
         readers disagree on which one counts"
    );
    // An attribute repeated by local name (a repeat by full name is not XML at all).
    let err = run(
        &xml("/event/@type"),
        &h,
        b"<event xmlns:a='u' a:type='x' type='y'/>",
    )
    .unwrap_err();
    assert_eq!(
        err,
        EventError::RepeatedAttribute {
            path: "/event/@type".into(),
            attribute: "type".into()
        }
    );
    assert!(matches!(
        run(&xml("/event/@type"), &h, b"<event type='x' type='y'/>"),
        Err(EventError::Xml(_))
    ));
    // Repeats off the path are fine.
    let table: [(&str, &[u8], Option<&str>); 3] = [
        (
            "/event/type",
            b"<event><id>1</id><id>2</id><type>t</type><m><type>x</type><type>y</type></m></event>",
            Some("t"),
        ),
        ("/a/b/c", b"<a><b><c>1</c><d/><d/></b></a>", Some("1")),
        (
            "/event/@type",
            b"<event type='t'><type>1</type><type>2</type></event>",
            Some("t"),
        ),
    ];
    for (path, body, expected) in table {
        assert_eq!(
            run(&xml(path), &h, body).unwrap().as_deref(),
            expected,
            "{path}"
        );
    }
}

#[test]
fn xml_scopes_differ_only_after_the_root() {
    let h = HeaderMap::new();
    let table: [&[u8]; 12] = [
        b"<event><type>a</type><x a=1></x></event>",
        b"<event><type>a</type><x a='1' a='2'/></event>",
        b"<event><type>a</type><x>&bogus;</x></event>",
        b"<event><type>a<y b='&bogus;'/></type></event>",
        b"<event x='1' x='2'><type>a</type></event>",
        b"<event><type>a</type></event><event><type>b</type></event>",
        b"<event><type>a</type></event><other/>",
        b"<event><type>a</type></event> trailing text",
        b"<event><type>a</type></event><![CDATA[x]]>",
        b"<event><type>a</type></event>&amp;",
        b"<event><type>a</type><x>\xff</x></event>",
        b"<event><type>a</type></event><",
    ];
    for body in table {
        let shown = String::from_utf8_lossy(body);
        assert_eq!(
            run_in(Scope::Path, &xml("/event/type"), &h, body)
                .unwrap()
                .as_deref(),
            Some("a"),
            "{shown}"
        );
        let err = run_in(Scope::Document, &xml("/event/type"), &h, body).unwrap_err();
        assert!(matches!(err, EventError::Xml(_)), "{shown}: {err:?}");
    }
    // A root off the path: nothing after it counts (Path), or it must be alone (Document).
    let body = b"<other/><event><type>a</type></event>";
    assert_eq!(run_in(Scope::Path, &xml("/event/type"), &h, body), Ok(None));
    assert!(run_in(Scope::Document, &xml("/event/type"), &h, body).is_err());
    // Comments, processing instructions and whitespace around the root are fine.
    let body = b"<?xml version='1.0'?>\n<!-- c --><event><type>a</type></event>\n<!-- end -->\n";
    assert_eq!(
        run(&xml("/event/type"), &h, body).unwrap().as_deref(),
        Some("a")
    );
    // Empty or no root.
    assert_eq!(run_in(Scope::Path, &xml("/event/type"), &h, b""), Ok(None));
    assert!(run_in(Scope::Document, &xml("/event/type"), &h, b" <!-- -->").is_err());
    // A DOCTYPE is refused in both scopes, with or without entities.
    let body = b"<!DOCTYPE event><event><type>a</type></event>";
    assert!(matches!(
        run(&xml("/event/type"), &h, body),
        Err(EventError::Xml(_))
    ));
}

#[test]
fn xml_text_is_borrowed_when_plain() {
    let p = XmlPath::parse("/e/t").unwrap();
    assert!(matches!(
        p.lookup(b"<e><t> plain </t></e>", Scope::Document).unwrap(),
        Some(Cow::Borrowed("plain"))
    ));
}
