//! `[cluster] tls` (issue 15) end to end: a real TLS-only `redis-server`
//! whose certificate is signed by a private CA generated here (`rcgen`), and
//! real gateways on `rediss://`. With `tls = { ca = … }` two gateways share a
//! rate limit; without the CA the gateway is not ready and its log says the
//! TLS handshake failed; with `--tls-auth-clients yes` only a gateway with a
//! client certificate gets in; `rediss://` to a plain-text Redis names TLS.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::redis::{RedisServer, TlsFiles};
use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all
/// PEM files in `dir`.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        // Distinct names: OpenSSL (Redis's side) takes a certificate whose
        // subject equals its issuer for self-signed, and then refuses it.
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "hookgate test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issue = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.subject_alt_names = vec![SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST))];
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        };
        issue("server");
        issue("client");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn server(&self, auth_clients: bool) -> RedisServer {
        RedisServer::start_tls(&TlsFiles {
            cert: &self.path("server.pem"),
            key: &self.path("server.key"),
            ca: &self.path("ca.pem"),
            auth_clients,
        })
    }
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// `[cluster]` on `rediss://` at `addr` with these `tls` keys (none: no table).
fn cluster(addr: SocketAddr, tls: &str) -> String {
    let mut table = format!("[cluster]\nredis = \"rediss://{addr}/0\"\n");
    if !tls.is_empty() {
        table.push_str(&format!("tls = {{ {tls} }}\n"));
    }
    table
}

fn limited(table: &str, app: &Upstream) -> Setup {
    Setup::new().table(table).upstream(app).route(
        "hooks",
        "/hooks",
        "app",
        "rate_limit = { rate = \"4/h\" }",
    )
}

/// Two gateways trusting the private CA share one limit over TLS: of 10
/// deliveries spread over both, exactly 4 pass. Guards
/// `redis::Client::build_with_tls(info, tls.certificates())` in
/// `sentinel::client_for` (`src/cluster/sentinel.rs`): without it only the
/// system store is trusted and neither gateway gets ready.
#[test]
fn with_the_private_ca_two_gateways_share_a_limit_over_tls() {
    let pki = Pki::new();
    let redis = pki.server(false);
    let app = Upstream::start("app");
    let setup = limited(
        &cluster(
            redis.addr,
            &format!("ca = \"{}\"", shown(&pki.path("ca.pem"))),
        ),
        &app,
    );
    let gateways = [setup.start(), setup.start()];
    let statuses: Vec<u16> = (0..10)
        .map(|i| post(gateways[i % 2].proxy, "/hooks", &[], b"{}").status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        4,
        "{statuses:?}"
    );
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429));
    for gateway in &gateways {
        gateway.assert_metric("hookgate_cluster_up", &[], 1.0);
    }
}

/// Waits (bounded) until the log of `gateway` contains `text`; the log.
fn log_with(gateway: &Gateway, text: &str) -> (bool, String) {
    let found = wait_until(Duration::from_secs(10), || gateway.log().contains(text));
    (found, gateway.log())
}

/// `/readyz`'s status once the admin listener answers (it may start after
/// the log line a test waited for), polled for up to 10 s.
fn readyz(gateway: &Gateway) -> Option<u16> {
    let mut status = None;
    wait_until(Duration::from_secs(10), || {
        status = get(gateway.admin, "/readyz").ok().map(|r| r.status);
        status.is_some()
    });
    status
}

/// Without the CA (the system store does not know it) the gateway starts
/// but is not ready, refuses rate-limited deliveries with 503, and its log
/// says the TLS handshake failed. Guards the TLS wording of
/// `sentinel::describe` (`src/cluster/sentinel.rs`), used by the ping's log.
#[test]
fn without_the_ca_the_gateway_is_not_ready_and_says_tls() {
    let pki = Pki::new();
    let redis = pki.server(false);
    let app = Upstream::start("app");
    let gateway = Gateway::spawn("", &limited(&cluster(redis.addr, ""), &app).rest());
    let (found, log) = log_with(&gateway, "TLS handshake failed");
    assert!(found, "log:\n{log}");
    assert_eq!(readyz(&gateway), Some(503), "log:\n{log}");
    gateway.assert_metric("hookgate_cluster_up", &[], 0.0);
    let mut answer = None;
    wait_until(Duration::from_secs(10), || {
        answer = try_post(gateway.proxy, "/hooks", &[], b"{}")
            .ok()
            .map(|r| r.status);
        answer.is_some()
    });
    assert_eq!(answer, Some(503));
    assert_eq!(app.count(), 0);
}

/// `--tls-auth-clients yes`: a gateway with the CA but no client certificate
/// is refused by Redis (not ready, TLS named in the log); one with
/// `cert`/`key` works. Guards the `client_tls` of
/// `TlsMaterial::certificates` (`src/config/cluster.rs`): without it no
/// client certificate is sent and the second gateway never gets ready.
#[test]
fn a_client_certificate_is_presented_when_redis_requires_one() {
    let pki = Pki::new();
    let redis = pki.server(true);
    let app = Upstream::start("app");
    let ca = format!("ca = \"{}\"", shown(&pki.path("ca.pem")));
    let without = Gateway::spawn("", &limited(&cluster(redis.addr, &ca), &app).rest());
    let with = limited(
        &cluster(
            redis.addr,
            &format!(
                "{ca}, cert = \"{}\", key = \"{}\"",
                shown(&pki.path("client.pem")),
                shown(&pki.path("client.key"))
            ),
        ),
        &app,
    )
    .start();
    with.assert_metric("hookgate_cluster_up", &[], 1.0);
    assert_eq!(post(with.proxy, "/hooks", &[], b"{}").status, 200);
    let (found, log) = log_with(&without, "cluster: Redis");
    assert!(found, "log:\n{log}");
    assert_eq!(readyz(&without), Some(503), "log:\n{log}");
    without.assert_metric("hookgate_cluster_up", &[], 0.0);
    assert!(!with.log().contains("PRIVATE KEY"));
}

/// `rediss://` to a Redis that speaks plain text: the start log says TLS,
/// not only that PING had no answer. Guards `ClusterClient::no_answer`
/// (`src/cluster/mod.rs`) and `sentinel::describe`.
#[test]
fn rediss_to_a_plain_text_redis_names_tls() {
    let redis = RedisServer::start();
    let app = Upstream::start("app");
    let gateway = Gateway::spawn("", &limited(&cluster(redis.addr, ""), &app).rest());
    let (found, log) = log_with(&gateway, "cluster: Redis does not answer yet");
    assert!(found, "log:\n{log}");
    let line = log
        .lines()
        .find(|l| l.contains("cluster: Redis does not answer yet"))
        .unwrap();
    assert!(line.contains("TLS"), "{line}");
}

/// A client key that is not the client certificate's (here the server's key
/// given with the client certificate) is a config error at load, keyed
/// `cluster.tls.key`, naming both files and no key material: `hookgate check`
/// fails and the gateway does not start. It used to pass `check` and start,
/// then fail every connection (never ready). Guards the
/// `client_key_matches(cert, key)` check of `compile_tls`
/// (`src/config/cluster.rs`): without it, `check` exits 0.
#[test]
fn a_client_key_that_does_not_match_its_certificate_is_refused_at_load() {
    let pki = Pki::new();
    let key_path = shown(&pki.path("server.key"));
    let text = format!(
        "{}[upstreams.app]\ntargets = [\"127.0.0.1:9000\"]\n\
         [[routes]]\nname = \"hooks\"\npath = \"/hooks\"\nupstream = \"app\"\n",
        cluster(
            "127.0.0.1:6380".parse().unwrap(),
            &format!(
                "ca = \"{}\", cert = \"{}\", key = \"{key_path}\"",
                shown(&pki.path("ca.pem")),
                shown(&pki.path("client.pem")),
            ),
        )
    );
    let (code, stdout, stderr) = check_config(&text);
    let output = format!("{stdout}{stderr}");
    assert_ne!(code, 0, "{output}");
    let line = output
        .lines()
        .find(|line| line.contains("cluster.tls.key"))
        .unwrap_or_else(|| panic!("no cluster.tls.key problem:\n{output}"));
    assert!(line.contains(&key_path), "{line}");
    assert!(line.contains("client.pem"), "{line}");
    let key = std::fs::read_to_string(pki.path("server.key")).unwrap();
    let key_body = key.lines().nth(1).unwrap();
    assert!(!output.contains(key_body), "key material shown:\n{output}");
    assert!(!output.contains("PRIVATE KEY"), "{output}");

    // The good pair passes.
    let good = text.replace(&key_path, &shown(&pki.path("client.key")));
    let (code, stdout, stderr) = check_config(&good);
    assert_eq!(code, 0, "{stdout}{stderr}");
}
