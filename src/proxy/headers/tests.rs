//! Tests of `proxy::headers`.

use super::*;

fn request(headers: &[(&str, &str)]) -> RequestHeader {
    let mut request = RequestHeader::build("POST", b"/hook?x=1", None).unwrap();
    for (name, value) in headers {
        request.append_header(name.to_string(), *value).unwrap();
    }
    request
}

fn forwarding() -> Forwarding<'static> {
    Forwarding {
        target: "/hook?x=1",
        authority: Some("gw.example"),
        peer: Some("10.1.2.3".parse().unwrap()),
        trusted_peer: false,
        client: Some("10.1.2.3".parse().unwrap()),
        client_header: None,
        tls: false,
        local_port: None,
        request_id: "req-1",
        route: "stripe",
        event: None,
    }
}

/// The head as an upstream parses it: request line and headers in order.
struct Parsed {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Parsed {
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn one(&self, name: &str) -> &str {
        match self.all(name).as_slice() {
            [value] => value,
            other => panic!("{name}: expected one value, got {other:?}"),
        }
    }
}

fn parse(head: &UpstreamHead) -> Parsed {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut slots);
    let status = request.parse(head.wire()).expect("a valid HTTP/1.1 head");
    assert_eq!(
        status,
        httparse::Status::Complete(head.wire().len()),
        "nothing after the head"
    );
    assert_eq!(request.version, Some(1));
    Parsed {
        method: request.method.unwrap().to_string(),
        target: request.path.unwrap().to_string(),
        headers: request
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8(h.value.to_vec()).unwrap(),
                )
            })
            .collect(),
    }
}

#[test]
fn strips_hop_by_hop_and_sets_framing() {
    let downstream = request(&[
        ("Host", "gw.example"),
        ("Connection", "keep-alive, X-Secret-Hop"),
        ("X-Secret-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("Expect", "100-continue"),
        ("Proxy-Client-IP", "6.6.6.6"),
        ("Stripe-Signature", "t=1,v1=ab"),
        ("X-Hookgate-Route", "spoofed"),
    ]);
    let head = upstream_head(&downstream, 11, &forwarding()).unwrap();
    assert_eq!(head.method(), Method::POST);
    let up = parse(&head);
    assert_eq!(
        (up.method.as_str(), up.target.as_str()),
        ("POST", "/hook?x=1")
    );
    for gone in [
        "connection",
        "x-secret-hop",
        "keep-alive",
        "transfer-encoding",
        "expect",
        "proxy-client-ip",
    ] {
        assert!(up.all(gone).is_empty(), "{gone} forwarded");
    }
    assert_eq!(up.one("content-length"), "11");
    assert_eq!(up.one("host"), "gw.example");
    assert_eq!(up.one("stripe-signature"), "t=1,v1=ab");
    assert_eq!(up.one("x-hookgate-route"), "stripe");
    assert_eq!(up.one("x-request-id"), "req-1");
    assert_eq!(up.one("x-forwarded-for"), "10.1.2.3");
    assert_eq!(up.one("x-forwarded-proto"), "http");
}

#[test]
fn the_wire_form_is_exact() {
    let downstream = request(&[("Host", "gw.example"), ("X-A", "1"), ("X-A", "2")]);
    let forwarding = Forwarding {
        tls: true,
        event: Some("push"),
        ..forwarding()
    };
    let head = upstream_head(&downstream, 3, &forwarding).unwrap();
    assert_eq!(
        std::str::from_utf8(head.wire()).unwrap(),
        "POST /hook?x=1 HTTP/1.1\r\n\
         host: gw.example\r\n\
         x-a: 1\r\n\
         x-a: 2\r\n\
         x-forwarded-for: 10.1.2.3\r\n\
         x-forwarded-proto: https\r\n\
         x-forwarded-host: gw.example\r\n\
         x-request-id: req-1\r\n\
         x-hookgate-route: stripe\r\n\
         x-hookgate-event: push\r\n\
         content-length: 3\r\n\
         \r\n"
    );
}

#[test]
fn forwarded_headers_are_kept_from_trusted_proxies_only() {
    let downstream = request(&[
        ("Host", "spoofed.example"),
        ("X-Forwarded-For", "1.1.1.1"),
        ("X-Forwarded-For", "2.2.2.2"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "lb.example"),
        ("X-Forwarded-Port", "443"),
        ("Forwarded", "for=9.9.9.9;proto=https"),
        ("X-Real-IP", "9.9.9.9"),
        ("X-Client-IP", "9.9.9.9"),
    ]);
    let client_header = HeaderName::from_static("x-client-ip");
    let untrusted = Forwarding {
        client_header: Some(&client_header),
        local_port: Some(8080),
        ..forwarding()
    };
    let up = parse(&upstream_head(&downstream, 0, &untrusted).unwrap());
    assert_eq!(up.one("host"), "gw.example");
    assert_eq!(up.one("x-forwarded-for"), "10.1.2.3");
    assert_eq!(up.one("x-forwarded-proto"), "http");
    assert_eq!(up.one("x-forwarded-host"), "gw.example");
    assert_eq!(up.one("x-forwarded-port"), "8080");
    assert_eq!(up.one("x-client-ip"), "10.1.2.3");
    assert!(up.all("forwarded").is_empty());
    assert!(up.all("x-real-ip").is_empty());
    assert_eq!(up.one("content-length"), "0");

    let trusted = Forwarding {
        trusted_peer: true,
        client: Some("2.2.2.2".parse().unwrap()),
        ..untrusted
    };
    let up = parse(&upstream_head(&downstream, 0, &trusted).unwrap());
    assert_eq!(up.one("host"), "gw.example");
    assert_eq!(up.one("x-forwarded-for"), "1.1.1.1, 2.2.2.2, 10.1.2.3");
    assert_eq!(up.one("x-forwarded-proto"), "https");
    assert_eq!(up.one("x-forwarded-host"), "gw.example");
    assert_eq!(up.one("x-forwarded-port"), "443");
    assert_eq!(up.one("x-client-ip"), "2.2.2.2");
    assert!(up.all("forwarded").is_empty());
    assert!(up.all("x-real-ip").is_empty());

    let unknown_peer = Forwarding {
        peer: None,
        ..trusted
    };
    let up = parse(&upstream_head(&downstream, 0, &unknown_peer).unwrap());
    assert_eq!(up.one("x-forwarded-for"), "1.1.1.1, 2.2.2.2");
}

#[test]
fn a_bodiless_get_has_no_framing_and_the_decided_target_and_host() {
    let downstream =
        RequestHeader::build("GET", b"https://gw.example:8443//ping?q=1", None).unwrap();
    let decided = Forwarding {
        target: "/ping?q=1",
        authority: Some("gw.example:8443"),
        ..forwarding()
    };
    let up = parse(&upstream_head(&downstream, 0, &decided).unwrap());
    assert_eq!(
        (up.method.as_str(), up.target.as_str()),
        ("GET", "/ping?q=1")
    );
    assert!(up.all("content-length").is_empty());
    assert_eq!(up.one("host"), "gw.example:8443");
    let no_host = Forwarding {
        authority: None,
        ..decided
    };
    let up = parse(&upstream_head(&downstream, 0, &no_host).unwrap());
    assert_eq!(up.one("host"), "");
    assert!(up.all("x-forwarded-host").is_empty());
}

#[test]
fn values_that_could_split_the_head_are_not_written() {
    let downstream = request(&[("Host", "gw.example")]);
    let event = Forwarding {
        event: Some("push\r\nx-injected: 1"),
        ..forwarding()
    };
    let up = parse(&upstream_head(&downstream, 0, &event).unwrap());
    assert!(up.all("x-hookgate-event").is_empty());
    assert!(up.all("x-injected").is_empty());
    let route = Forwarding {
        route: "a\nb",
        ..forwarding()
    };
    assert!(upstream_head(&downstream, 0, &route).is_err());
    let event = Forwarding {
        event: Some("pédé\tcafé"),
        ..forwarding()
    };
    let up = parse(&upstream_head(&downstream, 0, &event).unwrap());
    assert_eq!(up.one("x-hookgate-event"), "pédé\tcafé");
}

#[test]
fn responses_lose_their_connection_headers_only() {
    let mut fields: Vec<(Bytes, Bytes)> = [
        ("Connection", "keep-alive, X-Hop"),
        ("X-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Content-Length", "2"),
        ("Proxy-Authenticate", "Basic"),
        ("Proxy-Foo", "1"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]
    .into_iter()
    .map(|(name, value)| {
        (
            Bytes::from_static(name.as_bytes()),
            Bytes::from_static(value.as_bytes()),
        )
    })
    .collect();
    let relay = |fields: &Vec<(Bytes, Bytes)>| {
        downstream_response(201, fields.iter().cloned(), "req-1").unwrap()
    };
    let response = relay(&fields);
    let one = |response: &AnswerHead, name: &str| -> Vec<String> {
        response
            .values(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    };
    assert_eq!(response.status, 201);
    for gone in [
        "connection",
        "x-hop",
        "keep-alive",
        "proxy-authenticate",
        "proxy-foo",
    ] {
        assert!(!response.has(gone.as_bytes()), "{gone} relayed");
    }
    assert_eq!(one(&response, "content-length"), ["2"]);
    assert_eq!(one(&response, "set-cookie"), ["a=1", "b=2"]);
    assert_eq!(one(&response, "x-request-id"), ["req-1"]);
    fields.push((
        Bytes::from_static(b"X-Request-Id"),
        Bytes::from_static(b"theirs"),
    ));
    let response = relay(&fields);
    // The request's own id, in place of the upstream's (README: echoed back).
    assert_eq!(one(&response, "x-request-id"), ["req-1"]);
}

#[test]
fn request_ids_from_senders_must_be_plain() {
    assert_eq!(
        sender_request_id(&request(&[("X-Request-Id", "abc-123")])),
        Some("abc-123")
    );
    assert_eq!(
        sender_request_id(&request(&[("X-Request-Id", "a\"b")])),
        None
    );
    assert_eq!(sender_request_id(&request(&[("X-Request-Id", "")])), None);
    let long = "a".repeat(129);
    assert_eq!(
        sender_request_id(&request(&[("X-Request-Id", &long)])),
        None
    );
    assert_eq!(sender_request_id(&request(&[])), None);
}
