//! No secret ever reaches the output: the real binary, configured with known,
//! distinctive secrets through every form (`file:`, `${ENV}`, `literal:`, and an
//! admin token), in both log formats at debug level, is fed traffic and bad
//! configs (to `check` and to reloads); everything it wrote and answered is
//! then searched for the secrets.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const FILE_SECRET: &str = "hgsecret-file-7d1e9b";
const ENV_SECRET: &str = "hgsecret-env-33c0a2";
const LITERAL_SECRET: &str = "hgsecret-literal-c8b4f1";
const TOKEN_SECRET: &str = "hgsecret-token-51aa07";
const ADMIN_TOKEN: &str = "hgsecret-admin-0e6f24";
const ENV_NAME: &str = "HOOKGATE_NEVER_LOGGED_SECRET";

/// Every string that must not appear anywhere.
const SECRETS: [&str; 5] = [
    FILE_SECRET,
    ENV_SECRET,
    LITERAL_SECRET,
    TOKEN_SECRET,
    ADMIN_TOKEN,
];

struct Run {
    child: Child,
    dir: tempfile::TempDir,
    proxy: SocketAddr,
    admin: SocketAddr,
    /// Everything else the test saw: `check` output, admin answers.
    seen: String,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Run {
    fn config_path(&self) -> PathBuf {
        self.dir.path().join("hookgate.toml")
    }

    fn server(&self, log_format: &str) -> String {
        server(log_format)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// `POST /reload` with the admin token; the answer is remembered.
    fn reload(&mut self) -> u16 {
        let request = format!(
            "POST /reload HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.admin
        );
        let answer = send_raw(self.admin, request.as_bytes()).expect("POST /reload");
        self.seen.push_str(&String::from_utf8_lossy(&answer.body));
        answer.status
    }

    /// `hookgate check` on `text`; its output is remembered.
    fn check(&mut self, text: &str) -> i32 {
        let path = self.dir.path().join("check.toml");
        std::fs::write(&path, text).unwrap();
        let output = Command::new(BIN)
            .args(["check", "-c", path.to_str().unwrap()])
            .env(ENV_NAME, ENV_SECRET)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        self.seen.push_str(&String::from_utf8_lossy(&output.stdout));
        self.seen.push_str(&String::from_utf8_lossy(&output.stderr));
        output.status.code().unwrap_or(-1)
    }
}

/// The `[server]` section: listeners on port 0, their addresses read back
/// from the log (`wait_listening`).
fn server(log_format: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nthreads = 1\nshutdown_grace = \"1s\"\nwatch = false\nlog_format = \"{log_format}\"\nadmin_token = \"file:admin-token\"\n"
    )
}

fn routes(upstream: SocketAddr) -> String {
    let github =
        |secret: &str| format!("verify = {{ scheme = \"github\", secrets = [\"{secret}\"] }}");
    Setup::new()
        .upstream_named("app", &[upstream], "")
        .route("from-file", "/file", "app", &github("file:github-secret"))
        .route("from-env", "/env", "app", &github(&format!("${{{ENV_NAME}}}")))
        .route("inline", "/inline", "app", &github(&format!("literal:{LITERAL_SECRET}")))
        .route(
            "token",
            "/token",
            "app",
            &format!(
                "verify = {{ scheme = \"token\", header = \"X-Webhook-Token\", secrets = [\"literal:{TOKEN_SECRET}\"] }}"
            ),
        )
        .rest()
}

/// Starts `serve` with `log_format` at debug level and waits for readiness.
fn start(log_format: &str, upstream: SocketAddr) -> Run {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("github-secret"), format!("{FILE_SECRET}\n")).unwrap();
    std::fs::write(dir.path().join("admin-token"), ADMIN_TOKEN).unwrap();
    let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
    let config_path = dir.path().join("hookgate.toml");
    let text = format!("{}{}", server(log_format), routes(upstream));
    std::fs::write(&config_path, text).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "-c", config_path.to_str().unwrap()])
        .env("HOOKGATE_LOG", "debug")
        .env(ENV_NAME, ENV_SECRET)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let bound = wait_listening(&mut child, &dir.path().join("gateway.log"), 1);
    let mut run = Run {
        child,
        dir,
        proxy: addr(0),
        admin: addr(0),
        seen: String::new(),
    };
    let bound = bound.unwrap_or_else(|why| panic!("no listeners ({why}):\n{}", run.log()));
    (run.proxy, run.admin) = (bound.proxy[0], bound.admin);
    let ready = wait_until(Duration::from_secs(20), || {
        get(run.admin, "/readyz").is_ok_and(|r| r.status == 200)
    });
    assert!(ready, "not ready:\n{}", run.log());
    run
}

/// Bad configs, each carrying a secret where it does not belong: a string
/// instead of a list, wrong types in many keys, broken secret references.
fn bad_configs(run: &Run, log_format: &str, upstream: SocketAddr) -> Vec<String> {
    let server = run.server(log_format);
    let good = routes(upstream);
    let mut bad = Vec::new();
    for secret in SECRETS {
        // The issue's case: secrets = "<literal>" instead of a list.
        bad.push(format!(
            "{server}{}",
            good.replace(
                "secrets = [\"file:github-secret\"]",
                &format!("secrets = \"{secret}\"")
            )
        ));
        bad.push(format!(
            "{server}{}",
            good.replace(
                "secrets = [\"file:github-secret\"]",
                &format!("secrets = \"literal:{secret}\"")
            )
        ));
        // Broken references and bare strings.
        for written in [
            format!("${secret}"),
            format!("{{{secret}}}"),
            format!("${{{secret}"),
            secret.to_string(),
        ] {
            bad.push(format!(
                "{server}{}",
                good.replace("\"file:github-secret\"", &format!("\"{written}\""))
            ));
        }
        bad.push(format!(
            "{}{good}",
            server.replace(
                "admin_token = \"file:admin-token\"",
                &format!("admin_token = \"{secret}\"")
            )
        ));
        bad.push(format!(
            "{}{good}",
            server.replace(
                "admin_token = \"file:admin-token\"",
                &format!("admin_token = [\"{secret}\"]")
            )
        ));
        // Wrong types in other keys.
        let without = |key: &str| -> String {
            server
                .lines()
                .filter(|line| !line.starts_with(&format!("{key} =")))
                .map(|line| format!("{line}\n"))
                .collect()
        };
        for (key, value) in [
            ("threads", format!("\"{secret}\"")),
            ("max_inflight", format!("\"{secret}\"")),
            ("watch", format!("\"{secret}\"")),
            ("log_format", format!("\"{secret}\"")),
            ("listen", format!("\"{secret}\"")),
            ("trusted_proxies", format!("\"{secret}\"")),
            ("admin_hosts", format!("\"{secret}\"")),
            ("allow_no_routes", format!("\"{secret}\"")),
            ("upstream_keepalive_pool", format!("[\"{secret}\"]")),
            ("fanout", format!("\"{secret}\"")),
        ] {
            bad.push(format!("{}{key} = {value}\n{good}", without(key)));
        }
        for (from, to) in [
            ("path = \"/file\"", format!("path = [\"{secret}\"]")),
            (
                "upstream = \"app\"",
                format!("upstream = {{ name = \"{secret}\" }}"),
            ),
            ("name = \"from-file\"", format!("name = [\"{secret}\"]")),
            ("targets = [", format!("targets = \"{secret}\"\nx = [")),
            ("scheme = \"token\"", format!("scheme = [\"{secret}\"]")),
            (
                "header = \"X-Webhook-Token\"",
                format!("header = {{ v = \"{secret}\" }}"),
            ),
        ] {
            bad.push(format!("{server}{}", good.replacen(from, &to, 1)));
        }
        bad.push(format!("{server}[ip_sets]\noffice = \"{secret}\"\n{good}"));
        bad.push(format!(
            "{server}{}",
            good.replace("upstream = \"app\"\nverify = { scheme = \"token\"", &format!("upstream = \"app\"\nrate_limit = \"{secret}\"\nevent = \"{secret}\"\nverify = {{ scheme = \"token\""))
        ));
    }
    bad
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        if let Some(at) = text.find(secret) {
            let start = text[..at]
                .char_indices()
                .rev()
                .nth(200)
                .map_or(0, |(i, _)| i);
            panic!(
                "{secret} found in {what}:\n…{}…",
                &text[start..(at + secret.len() + 100).min(text.len())]
            );
        }
    }
}

/// Traffic (valid and forged deliveries, the right and a wrong token), bad
/// configs to `check` and to reloads, in both log formats: no secret in the
/// log, the `check` output or any admin answer. Guards `problem::without_values`
/// (serde quotes the value) and `secrets::parse`'s messages, which never echo.
#[test]
fn no_secret_in_any_output_in_either_log_format() {
    let upstream = Upstream::start("app");
    for log_format in ["text", "json"] {
        let mut run = start(log_format, upstream.addr);
        let body = br#"{"action":"opened"}"#;
        for (path, secret) in [
            ("/file", FILE_SECRET),
            ("/env", ENV_SECRET),
            ("/inline", LITERAL_SECRET),
        ] {
            let good = github_signature(secret, body);
            let answer = post(run.proxy, path, &[("X-Hub-Signature-256", &good)], body);
            assert_eq!(answer.status, 200, "{log_format} {path}");
            let forged = github_signature("not-the-secret", body);
            let answer = post(run.proxy, path, &[("X-Hub-Signature-256", &forged)], body);
            assert_eq!(answer.status, 401);
            run.seen.push_str(&String::from_utf8_lossy(&answer.body));
        }
        let answer = post(
            run.proxy,
            "/token",
            &[("X-Webhook-Token", TOKEN_SECRET)],
            body,
        );
        assert_eq!(answer.status, 200);
        let answer = post(
            run.proxy,
            "/token",
            &[("X-Webhook-Token", "wrong-token")],
            body,
        );
        assert_eq!(answer.status, 401);

        let good = std::fs::read_to_string(run.config_path()).unwrap();
        let bad = bad_configs(&run, log_format, upstream.addr);
        assert!(bad.len() > 100, "{}", bad.len());
        for (i, text) in bad.iter().enumerate() {
            assert_eq!(run.check(text), 78, "bad config {i} passed check:\n{text}");
        }
        // Reloads: every kind once (the first secret's set), to keep the test short.
        for text in bad.iter().take(bad.len() / SECRETS.len()) {
            std::fs::write(run.config_path(), text).unwrap();
            assert_eq!(run.reload(), 422, "{text}");
        }
        std::fs::write(run.config_path(), &good).unwrap();
        assert_eq!(run.reload(), 200);
        let config = send_raw(
            run.admin,
            format!(
                "GET /config HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n",
                run.admin
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(config.status, 200);
        run.seen.push_str(&String::from_utf8_lossy(&config.body));
        let metrics = get(run.admin, "/metrics").unwrap();
        run.seen.push_str(&String::from_utf8_lossy(&metrics.body));

        let log = run.log();
        assert!(
            log.contains("configuration reload refused")
                && log.contains("routes[0].verify.secrets"),
            "the refusals are logged with their keys:\n{log}"
        );
        if log_format == "json" {
            assert!(log.lines().any(|l| l.starts_with('{')), "{log}");
        }
        assert_no_secret(&format!("the {log_format} log"), &log);
        assert_no_secret("check output and admin answers", &run.seen);
        assert!(
            run.seen.contains("wrong type"),
            "serde errors were exercised"
        );
    }
}

/// Malformed request heads carrying a token and a signature header: the proxy
/// must not log the raw head (Pingora puts up to 2 KiB of it in the error).
#[test]
fn malformed_requests_do_not_log_their_head() {
    // Guards the `ctx.detail` written in `Gateway::refuse_head` (proxy/mod.rs):
    // logging Pingora's error as is puts the head, token included, in the log.

    let upstream = Upstream::start("app");
    for log_format in ["text", "json"] {
        let run = start(log_format, upstream.addr);
        let heads: Vec<Vec<u8>> = vec![
            format!("POST /token HTTP/1.1\r\nHost: x\r\nX-Webhook-Token: {TOKEN_SECRET}\r\nX-Bad: a\0b\r\nContent-Length: 0\r\n\r\n").into_bytes(),
            format!("POST /file HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: sha256={FILE_SECRET}\r\nX-Nul: \0\r\n\r\n").into_bytes(),
            format!("GARBAGE {TOKEN_SECRET} \x01\x02 NOT-HTTP\r\nX-Webhook-Token: {TOKEN_SECRET}\r\n\r\n").into_bytes(),
            format!("POST /token HTTP/1.1\r\nHost: x\r\nX-Webhook-Token {LITERAL_SECRET}\r\n\r\n").into_bytes(),
        ];
        for head in &heads {
            // The answer (if any) does not matter; what is logged does.
            let _ = send_raw(run.proxy, head);
        }
        // The gateway still serves; once a later request's access-log line is
        // written, the malformed requests' lines (if any) are too.
        let later = post(run.proxy, "/env", &[], b"{}");
        assert_eq!(later.status, 401);
        assert!(
            wait_until(Duration::from_secs(5), || run.log().contains("from-env")),
            "{}",
            run.log()
        );
        assert_no_secret(&format!("the {log_format} log"), &run.log());
    }
}
