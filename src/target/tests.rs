//! Tests of `target`.

use super::*;

fn canonical(path: &str) -> Result<(String, String), TargetError> {
    canonical_path(path).map(|(f, r)| (f.into_owned(), r.into_owned()))
}

#[test]
fn canonical_paths() {
    let ok = [
        // (sent, forwarded, routed on)
        ("/webhooks/github", "/webhooks/github", "/webhooks/github"),
        ("/webhooks/%67ithub", "/webhooks/github", "/webhooks/github"),
        ("/webhooks//github", "/webhooks/github", "/webhooks/github"),
        (
            "//webhooks///github/",
            "/webhooks/github/",
            "/webhooks/github/",
        ),
        ("/webhooks/./github", "/webhooks/github", "/webhooks/github"),
        (
            "/webhooks/x/../github",
            "/webhooks/github",
            "/webhooks/github",
        ),
        (
            "/webhooks/x/%2E%2E/github",
            "/webhooks/github",
            "/webhooks/github",
        ),
        (
            "/webhooks/x/%2e./github",
            "/webhooks/github",
            "/webhooks/github",
        ),
        (
            "/../../webhooks/github",
            "/webhooks/github",
            "/webhooks/github",
        ),
        (
            "/webhooks/github/.",
            "/webhooks/github/",
            "/webhooks/github/",
        ),
        (
            "/webhooks/github/x/..",
            "/webhooks/github/",
            "/webhooks/github/",
        ),
        ("/", "/", "/"),
        ("/..", "/", "/"),
        ("/a%20b", "/a%20b", "/a b"),
        ("/a%3ab", "/a%3Ab", "/a:b"),
        ("/a%25b", "/a%25b", "/a%b"),
        ("/a|b", "/a%7Cb", "/a|b"),
        ("/.well-known/x", "/.well-known/x", "/.well-known/x"),
        ("/a...b/...", "/a...b/...", "/a...b/..."),
        ("/Webhooks/GitHub", "/Webhooks/GitHub", "/Webhooks/GitHub"),
        (
            "/h/a:b@c!$&'()*+,=",
            "/h/a:b@c!$&'()*+,=",
            "/h/a:b@c!$&'()*+,=",
        ),
    ];
    for (sent, forwarded, routed) in ok {
        assert_eq!(
            canonical(sent),
            Ok((forwarded.to_string(), routed.to_string())),
            "{sent}"
        );
    }
    let refused = [
        ("/webhooks%2Fgithub", TargetError::EncodedSlash),
        ("/webhooks%2fgithub", TargetError::EncodedSlash),
        ("/webhooks%5Cgithub", TargetError::EncodedSlash),
        ("/webhooks\\github", TargetError::Backslash),
        ("/webhooks/github;a=b", TargetError::PathParameter),
        ("/webhooks/github%3Bx", TargetError::PathParameter),
        ("/webhooks/%zz", TargetError::InvalidEscape),
        ("/webhooks/%4", TargetError::InvalidEscape),
        ("/webhooks/%", TargetError::InvalidEscape),
        ("/webhooks/%00", TargetError::Control),
        ("/webhooks/%0d%0a", TargetError::Control),
        ("/webhooks/\u{1}", TargetError::Control),
        ("/webhooks/%C3%A9", TargetError::NonAscii),
        ("/webhooks/é", TargetError::NonAscii),
    ];
    for (sent, error) in refused {
        assert_eq!(canonical(sent), Err(error), "{sent}");
    }
}

#[test]
fn canonical_paths_are_borrowed() {
    for path in ["/webhooks/github", "/", "/a/b/", "/.well-known/x"] {
        let (forwarded, routed) = canonical_path(path).unwrap();
        assert!(matches!(forwarded, Cow::Borrowed(_)), "{path}");
        assert!(matches!(routed, Cow::Borrowed(_)), "{path}");
    }
}

#[test]
fn target_forms() {
    let target = read_target(b"/h/x?a=%40b&c").unwrap();
    assert_eq!(target.path, "/h/x");
    assert_eq!(target.query, Some("a=%40b&c"));
    assert_eq!(target.received, "/h/x?a=%40b&c");
    assert_eq!(target.absolute_authority, None);
    assert_eq!(target.forwarded(), "/h/x?a=%40b&c");

    let target = read_target(b"HTTPS://Secure.Example:8443/h//x?q").unwrap();
    assert_eq!(target.absolute_authority, Some("Secure.Example:8443"));
    assert_eq!(target.path, "/h/x");
    assert_eq!(target.received, "/h//x?q");
    assert_eq!(target.forwarded(), "/h/x?q");

    let target = read_target(b"http://a.example?q=1").unwrap();
    assert_eq!(target.path, "/");
    assert_eq!(target.forwarded(), "/?q=1");

    assert_eq!(read_target(b"*"), Err(TargetError::Form));
    assert_eq!(read_target(b"a.example:443"), Err(TargetError::Form));
    assert_eq!(read_target(b"ftp://a/b"), Err(TargetError::Form));
    assert_eq!(read_target(b"/a#frag"), Err(TargetError::Fragment));
    assert_eq!(read_target(b"/a?x#frag"), Err(TargetError::Fragment));
    assert_eq!(read_target(b"/a?x\x01"), Err(TargetError::Control));
    assert_eq!(read_target(b"/a\xff"), Err(TargetError::NonAscii));
}

fn authority(
    target: &[u8],
    hosts: &[&str],
    h2: Option<&str>,
    version: Version,
) -> Result<Option<(String, String)>, TargetError> {
    let target = read_target(target).unwrap();
    let mut headers = HeaderMap::new();
    for host in hosts {
        headers.append(http::header::HOST, host.parse().unwrap());
    }
    read_authority(&target, &headers, h2, version)
        .map(|a| a.map(|a| (a.host().to_string(), a.header().to_string())))
}

#[test]
fn dotted_quads() {
    for name in ["127.0.0.1", "0.0.0.0", "255.255.255.255", "10.0.200.9"] {
        assert!(is_dotted_quad(name), "{name}");
    }
    for name in [
        "127.1",
        "1.2.3.256",
        "1.2.3.04",
        "1.2.3.4000",
        "1.2.3.65536000",
        "1.2.3.4.5",
        "1..3.4",
        "1.2.3.",
        "1.2.3.x",
        "",
        ".1.2.3",
        "01.2.3.4",
        "1.2.3.00",
        "999.1.1.1",
    ] {
        assert!(!is_dotted_quad(name), "{name}");
    }
    // The same answer as the standard library's strict parser (no leading
    // zeros, four octets) over every string of up to 7 bytes from a small alphabet.
    let alphabet = [b'0', b'1', b'2', b'5', b'9', b'.'];
    let mut checked = 0;
    for len in 0..=7u32 {
        for n in 0..alphabet.len().pow(len) {
            let mut rest = n;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let b = alphabet[rest % alphabet.len()];
                    rest /= alphabet.len();
                    b
                })
                .collect();
            let name = std::str::from_utf8(&bytes).unwrap();
            assert_eq!(
                is_dotted_quad(name),
                name.parse::<std::net::Ipv4Addr>().is_ok(),
                "{name}"
            );
            checked += 1;
        }
    }
    assert!(checked > 300_000);
}

#[test]
fn authority_rule() {
    let v11 = Version::HTTP_11;
    let some = |h: &str, v: &str| Ok(Some((h.to_string(), v.to_string())));
    let table = [
        (
            &b"/x"[..],
            &["A.Example"][..],
            None,
            v11,
            some("a.example", "a.example"),
        ),
        (
            b"/x",
            &["a.example.:8080"],
            None,
            v11,
            some("a.example", "a.example:8080"),
        ),
        (
            b"/x",
            &["a.example:"],
            None,
            v11,
            some("a.example", "a.example"),
        ),
        (b"/x", &["[::1]:9"], None, v11, some("[::1]", "[::1]:9")),
        // One spelling per port, as the number it is.
        (
            b"/x",
            &["a.example:0080"],
            None,
            v11,
            some("a.example", "a.example:80"),
        ),
        (
            b"/x",
            &["a.example:000"],
            None,
            v11,
            some("a.example", "a.example:0"),
        ),
        (
            b"/x",
            &["127.0.0.1"],
            None,
            v11,
            some("127.0.0.1", "127.0.0.1"),
        ),
        (
            b"http://Secure.Example/h/x",
            &[],
            None,
            Version::HTTP_10,
            some("secure.example", "secure.example"),
        ),
        // RFC 9112 §3.2: HTTP/1.1 needs `Host` whatever the target's form.
        (
            b"http://Secure.Example/h/x",
            &[],
            None,
            v11,
            Err(TargetError::HostMissing),
        ),
        (
            b"/x",
            &[],
            Some("h2.example"),
            Version::HTTP_2,
            some("h2.example", "h2.example"),
        ),
        // An empty Host: none on HTTP/1.0, invalid on HTTP/1.1 (RFC 9110 §4.2.1).
        (b"/x", &[""], None, Version::HTTP_10, Ok(None)),
        (b"/x", &[""], None, v11, Err(TargetError::HostInvalid)),
        (b"/x", &[], None, Version::HTTP_10, Ok(None)),
        (b"/x", &[], None, v11, Err(TargetError::HostMissing)),
        (
            b"/x",
            &["a.example", "b.example"],
            None,
            v11,
            Err(TargetError::HostInvalid),
        ),
        (
            b"/x",
            &["a example"],
            None,
            v11,
            Err(TargetError::HostInvalid),
        ),
        (
            b"/x",
            &["a.example:99999"],
            None,
            v11,
            Err(TargetError::HostInvalid),
        ),
        (
            b"/x",
            &["a.example:8x"],
            None,
            v11,
            Err(TargetError::HostInvalid),
        ),
        (
            b"/x",
            &["a..example"],
            None,
            v11,
            Err(TargetError::HostInvalid),
        ),
        (b"/x", &["."], None, v11, Err(TargetError::HostInvalid)),
        (b"/x", &["[zz]"], None, v11, Err(TargetError::HostInvalid)),
        (
            b"/x",
            &["[::FFFF:127.0.0.1]:80"],
            None,
            v11,
            Err(TargetError::HostInvalid),
        ),
        (
            b"/x",
            &["[::127.0.0.1]"],
            None,
            v11,
            Err(TargetError::HostInvalid),
        ),
        (
            b"/x",
            &["[2001:DB8::1]:80"],
            None,
            v11,
            some("[2001:db8::1]", "[2001:db8::1]:80"),
        ),
        (b"/x", &["[0:0::1]"], None, v11, some("[::1]", "[::1]")),
        (
            b"/x",
            &["a.example.."],
            None,
            v11,
            Err(TargetError::HostInvalid),
        ),
        (
            b"/x",
            &[".a.example"],
            None,
            v11,
            Err(TargetError::HostInvalid),
        ),
        (b"/x", &["127.1"], None, v11, Err(TargetError::HostInvalid)),
        (
            b"/x",
            &["0x7f.0.0.1"],
            None,
            v11,
            Err(TargetError::HostInvalid),
        ),
        (
            b"/x",
            &["2130706433"],
            None,
            v11,
            Err(TargetError::HostInvalid),
        ),
        (
            b"/x",
            &["127.000.000.001"],
            None,
            v11,
            Err(TargetError::HostInvalid),
        ),
        (
            b"/x",
            &["0177.0.0.1"],
            None,
            v11,
            Err(TargetError::HostInvalid),
        ),
        (
            b"/x",
            &["127.0.0.1."],
            None,
            v11,
            some("127.0.0.1", "127.0.0.1"),
        ),
        (
            b"/x",
            &["a.b.c.0x1"],
            None,
            v11,
            Err(TargetError::HostInvalid),
        ),
        (
            b"/x",
            &["v2.example"],
            None,
            v11,
            some("v2.example", "v2.example"),
        ),
        (
            b"/x",
            &["a.example/x"],
            None,
            v11,
            Err(TargetError::HostInvalid),
        ),
    ];
    for (target, hosts, h2, version, expected) in table {
        assert_eq!(
            authority(target, hosts, h2, version),
            expected,
            "{:?} {hosts:?}",
            String::from_utf8_lossy(target)
        );
    }
}
