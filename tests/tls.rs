//! The TLS listener end to end: HTTP/1.1 and h2 (by ALPN) through rustls, with
//! the exact body at the upstream and `X-Forwarded-Proto: https`.

mod common;

use common::*;

#[test]
fn tls_listener_serves_http1_and_h2() {
    let certificate = LocalhostCertificate::new();
    let upstream = Upstream::start("app");
    let gateway = Setup::new()
        .server(&certificate.tls_setting())
        .upstream(&upstream)
        .route("hooks", "/hooks", "app", "")
        .start();
    let tls_addr = gateway.tls.expect("the TLS listener announced");
    let root = reqwest::Certificate::from_pem(certificate.pem.as_bytes()).unwrap();
    let body = bytes(70_000, 7);
    for (http2, version) in [
        (false, reqwest::Version::HTTP_11),
        (true, reqwest::Version::HTTP_2),
    ] {
        let mut builder = reqwest::blocking::Client::builder()
            .add_root_certificate(root.clone())
            .resolve("localhost", tls_addr);
        if !http2 {
            builder = builder.http1_only();
        }
        let client = builder.build().unwrap();
        let response = client
            .post(format!("https://localhost:{}/hooks", tls_addr.port()))
            .body(body.clone())
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), version);
        assert_eq!(response.text().unwrap(), "{\"ok\":true}");
    }
    let received = upstream.received();
    assert_eq!(received.len(), 2);
    for request in &received {
        assert!(request.body == body, "body differs");
        assert_eq!(request.header("x-forwarded-proto"), Some("https"));
        assert_eq!(request.header("content-length"), Some("70000"));
        assert_eq!(
            request.header("host"),
            Some(format!("localhost:{}", tls_addr.port()).as_str())
        );
    }
    // The plain listener still answers.
    assert_eq!(post(gateway.proxy, "/hooks", &[], b"plain").status, 200);
}
