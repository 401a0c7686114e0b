//! `hookgate check` and config loading: exit codes, errors that name the file,
//! line and key, and every shipped file in `conf/` loads.

mod common;

use std::path::Path;
use std::process::Command;

use common::BIN;
use hookgate::config::Config;

fn check(text: &str) -> (i32, String, String) {
    common::check_config(text)
}

#[test]
fn a_valid_file_exits_0_and_prints_the_route_table() {
    // Guards `Config::describe` (config/mod.rs) and the `Command::Check` arm
    // of main.rs printing it.

    let (code, stdout, stderr) = check(
        r#"
[upstreams.app]
targets = ["127.0.0.1:9000"]

[[routes]]
name = "stripe"
path = "/webhooks/stripe"
methods = ["POST"]
upstream = "app"
"#,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(
        stdout.contains("stripe") && stdout.contains("/webhooks/stripe -> app [127.0.0.1:9000]"),
        "{stdout}"
    );
}

/// `check` shows each route's allowlist, rate limit and dedupe, so an operator
/// sees what guards a route without reading the TOML. Guards the `allow`,
/// `rate_limit` and `dedupe` parts of `Config::describe`.
#[test]
fn check_lists_a_routes_allowlist_rate_limit_and_dedupe() {
    let (code, stdout, stderr) = check(
        r#"
[ip_sets]
office = ["10.0.0.0/8", "192.168.1.0/24", "172.16.0.0/12", "127.0.0.1"]

[upstreams.app]
targets = ["127.0.0.1:9000"]

[[routes]]
name = "guarded"
path = "/guarded"
upstream = "app"
allow = ["office"]
rate_limit = { rate = "100/s", burst = 20, per = "ip" }
dedupe = { key = "header:X-Delivery", ttl = "1h" }

[[routes]]
name = "open"
path = "/open"
upstream = "app"
"#,
    );
    assert_eq!(code, 0, "{stderr}");
    let guarded = stdout
        .lines()
        .find(|l| l.contains("/guarded"))
        .unwrap_or("");
    assert!(
        guarded.contains("allow 10.0.0.0/8 127.0.0.1/32 172.16.0.0/12 and 1 more"),
        "{stdout}"
    );
    assert!(
        guarded.contains("rate_limit 100/1s burst 20 per ip"),
        "{stdout}"
    );
    assert!(
        guarded.contains("dedupe header:x-delivery ttl 1h"),
        "{stdout}"
    );
    let open = stdout.lines().find(|l| l.contains("/open")).unwrap_or("");
    assert!(
        !open.contains("allow") && !open.contains("rate_limit") && !open.contains("dedupe"),
        "{stdout}"
    );
    assert!(!stdout.contains("shared: [cluster]"), "{stdout}");
    // With [cluster], both live in Redis and the table says so (check does not connect).
    let (code, stdout, stderr) = check(&format!(
        "[cluster]\nredis = \"redis://127.0.0.1:1/0\"\n{}",
        "[upstreams.app]\ntargets = [\"127.0.0.1:9000\"]\n[[routes]]\nname = \"g\"\npath = \"/g\"\nupstream = \"app\"\nrate_limit = { rate = \"5/s\" }\ndedupe = { key = \"header:X-Delivery\" }\n"
    ));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.matches("(shared: [cluster])").count(), 2, "{stdout}");
}

#[test]
fn every_problem_is_listed_with_its_line_and_key_and_exit_78() {
    // Guards `Problems` collecting every error with `locate::line_of`: stopping
    // at the first problem, or losing the line, turns it red.

    let text = r#"[server]
listen = ["0.0.0.0:8080"]
max_body = "1 megabyte"

[upstreams.app]
targets = ["127.0.0.1:9000"]
timeout = "10"

[[routes]]
name = "stripe"
path = "/webhooks/stripe"
upstream = "biling"

[[routes]]
name = "stripe"
path = "webhooks/github"
upstream = "app"
"#;
    let (code, stdout, stderr) = check(text);
    assert_eq!(code, 78, "stdout: {stdout}\nstderr: {stderr}");
    let expected = [
        ("test.toml:3: server.max_body", "invalid size"),
        ("test.toml:7: upstreams.app.timeout", "invalid duration"),
        (
            "test.toml:12: routes[0].upstream",
            "unknown upstream \"biling\"; defined upstreams: app",
        ),
        ("test.toml:15: routes[1].name", "used twice"),
        ("test.toml:16: routes[1].path", "must start with '/'"),
    ];
    for (location, message) in expected {
        let line = stderr.lines().find(|line| line.contains(location));
        assert!(
            line.is_some_and(|l| l.contains(message)),
            "missing {location} … {message} in:\n{stderr}"
        );
    }
    assert!(stderr.contains("5 configuration problems"), "{stderr}");
}

/// A method listed twice is a mistake `check` names (the 405's `Allow` would
/// list it once, so the file and the answer would disagree).
#[test]
fn a_method_listed_twice_is_a_problem() {
    let text = r#"[upstreams.app]
targets = ["127.0.0.1:9000"]

[[routes]]
name = "twice"
path = "/twice"
upstream = "app"
methods = ["POST", "HEAD", "post"]
"#;
    let (code, stdout, stderr) = check(text);
    assert_eq!(code, 78, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stderr.contains("test.toml:8: routes[0].methods[2]: POST is listed twice"),
        "{stderr}"
    );
}

#[test]
fn syntax_errors_and_unknown_keys_name_their_line() {
    // Guards `#[serde(deny_unknown_fields)]` on the file types (config/file.rs)
    // and the span-to-line mapping of TOML errors.

    let (code, _, stderr) = check("[server]\nlisten = [\"0.0.0.0:8080\"]\nlisten_port = 8080\n");
    assert_eq!(code, 78);
    assert!(
        stderr.contains("test.toml:3:") && stderr.contains("unknown field `listen_port`"),
        "{stderr}"
    );

    let (code, _, stderr) = check("[[routes]]\nname = \"a\"\npath = \"/a\n");
    assert_eq!(code, 78);
    assert!(stderr.contains("test.toml:3:"), "{stderr}");

    let (code, _, stderr) = check("[[routes]]\nname = \"a\"\npath = \"/a\"\n");
    assert_eq!(code, 78);
    assert!(stderr.contains("missing field `upstream`"), "{stderr}");
}

#[test]
fn a_missing_file_is_a_config_error() {
    // Guards the read error arm of `Config::load` mapping to exit 78.

    let output = Command::new(BIN)
        .args(["check", "-c", "/nonexistent/hookgate.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read the file"));
}

#[test]
fn serve_refuses_to_start_on_a_bad_config() {
    // Guards the `Config::load` error arm of `Command::Serve` in main.rs
    // (exit 78 before any listener is bound).

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[routes]]\nname = \"a\"\npath = \"/a\"\nupstream = \"nope\"\n",
    )
    .unwrap();
    let output = Command::new(BIN)
        .args(["serve", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr).contains("bad.toml:4: routes[0].upstream"));
}

/// Every shipped configuration loads; the glob must find them. The examples
/// reference secrets by environment variable: `conf/examples/example.env` holds
/// placeholder values of the right shape.
#[test]
fn every_file_in_conf_loads() {
    // Guards the shipped files in conf/ against the validator: a renamed key
    // or a stricter rule that they break turns it red.

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let placeholders = std::fs::read_to_string(root.join("examples/example.env")).unwrap();
    for line in placeholders
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (name, value) = line.split_once('=').expect("NAME=value lines");
        std::env::set_var(name, value);
    }
    let mut files = Vec::new();
    collect_toml(&root, &mut files);
    assert!(
        files.len() >= 20,
        "expected the default, demo and provider example configs, found {files:?}"
    );
    for file in &files {
        if let Err(e) = Config::load(file) {
            panic!("{e}");
        }
    }
    assert!(files.iter().any(|f| f.ends_with("hookgate.toml")));
    assert!(files.iter().any(|f| f.ends_with("demo.toml")));
    for provider in [
        "github",
        "stripe",
        "slack",
        "shopify",
        "standard-webhooks",
        "twilio",
        "discord",
    ] {
        let wanted = format!("examples/{provider}.toml");
        assert!(
            files.iter().any(|f| f.ends_with(&wanted)),
            "no example for {provider}"
        );
    }
}

fn collect_toml(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_toml(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

const APP: &str = "[upstreams.app]\ntargets = [\"127.0.0.1:9000\"]\n";

fn with_route(verify: &str) -> String {
    format!(
        "{APP}\n[[routes]]\nname = \"gh\"\npath = \"/gh\"\nupstream = \"app\"\nverify = {verify}\n"
    )
}

/// A secret must say what it is: a broken `${...}` or a bare string is an error
/// naming the route and key, never a silent literal key (guards
/// `config::secrets::parse`'s final `Err`).
#[test]
fn a_broken_or_bare_secret_is_an_error_naming_route_and_key() {
    for (secret, why) in [
        (
            "$GITHUB_TYPO_SECRET",
            "broken environment variable reference",
        ),
        (
            "{GITHUB_TYPO_SECRET}",
            "broken environment variable reference",
        ),
        (
            "${GITHUB_TYPO_SECRET",
            "broken environment variable reference",
        ),
        ("whsec_GITHUB_TYPO_SECRET", "bare string"),
    ] {
        let (code, _, stderr) = check(&with_route(&format!(
            "{{ scheme = \"github\", secrets = [\"{secret}\"] }}"
        )));
        assert_eq!(code, 78, "{secret}: {stderr}");
        assert!(
            stderr.contains("test.toml:8: routes[0].verify.secrets[0]: route \"gh\"")
                && stderr.contains(why)
                && stderr.contains("literal:VALUE"),
            "{secret}: {stderr}"
        );
        assert!(!stderr.contains("TYPO_SECRET"), "value echoed: {stderr}");
    }
}

/// `literal:` works and `check` warns about it on stderr, exit 0. Guards the
/// `secrets::is_literal` warning in `compile_route`.
#[test]
fn literal_secrets_load_with_a_warning() {
    let (code, stdout, stderr) = check(&with_route(
        "{ scheme = \"github\", secrets = [\"literal:inline-value-1\"] }",
    ));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(
        stderr.contains("warning: routes[0].verify.secrets[0] (route \"gh\") is written inline"),
        "{stderr}"
    );
    assert!(!stderr.contains("inline-value-1") && !stdout.contains("inline-value-1"));
}

/// Serde quotes a value of the wrong type; the message names the key and the
/// types only (guards `problem::without_values` in `Config::from_toml`).
#[test]
fn type_errors_name_the_key_and_never_the_value() {
    let (code, _, stderr) = check(&with_route(
        "{ scheme = \"github\", secrets = \"whsec_a_string_not_a_list\" }",
    ));
    assert_eq!(code, 78);
    assert!(
        stderr.contains("test.toml:8: routes[0].verify.secrets: wrong type: expected a sequence, found a string"),
        "{stderr}"
    );
    assert!(!stderr.contains("whsec_a_string"), "{stderr}");
    let (code, _, stderr) = check("[server]\nlog_format = \"json-SECRETISH\"\n");
    assert_eq!(code, 78);
    assert!(
        stderr.contains("test.toml:2: server.log_format: unknown value"),
        "{stderr}"
    );
    assert!(!stderr.contains("SECRETISH"), "{stderr}");
}

/// An empty (truncated) file or one without routes would answer every delivery
/// 404: refused by `check` and `serve` unless `allow_no_routes` says it is meant.
/// Guards the `!had_routes` check in `config::compile` (and the empty-text
/// check in `Config::from_toml` for the message).
#[test]
fn an_empty_file_or_no_routes_is_refused_unless_allowed() {
    for text in [
        "",
        "  \n\n",
        "# only a comment\n[server]\nlisten = [\"127.0.0.1:8080\"]\n",
        APP,
    ] {
        let (code, stdout, stderr) = check(text);
        assert_eq!(code, 78, "{text:?}: {stdout}");
        assert!(
            stderr.contains("the file is empty") || stderr.contains("routes: no [[routes]]"),
            "{text:?}: {stderr}"
        );
    }
    let (code, _, stderr) = check("[server]\nallow_no_routes = true\n");
    assert_eq!(code, 0, "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.toml");
    std::fs::write(&path, "").unwrap();
    let output = Command::new(BIN)
        .args(["serve", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr).contains("the file is empty"));
}

/// A queued route with neither `verify` nor `allow` loads with a warning: anyone
/// can fill the store. Guards the queued-without-verify warning in `Config::from_toml`.
#[test]
fn a_queued_route_open_to_anyone_loads_with_a_warning() {
    let queued = |extra: &str| {
        format!(
            "{APP}\n[storage]\npath = \"data\"\n\n[[routes]]\nname = \"open\"\npath = \"/open\"\nupstream = \"app\"\ndelivery = \"queued\"\n{extra}\n"
        )
    };
    let (code, _, stderr) = check(&queued(""));
    assert_eq!(code, 0, "{stderr}");
    // The whole warning, on one line with single spaces: guards the line
    // continuations of its text (they once left runs of 18 spaces in it).
    assert!(
        stderr.lines().any(|line| line
            == "warning: route \"open\" is queued without verify: anyone who can reach it \
                can store requests (up to [storage] max_bytes) that are then delivered to \
                the app; add verify, or an allow list"),
        "{stderr}"
    );
    for guarded in [
        "verify = { scheme = \"github\", secrets = [\"literal:k\"] }",
        "allow = [\"10.0.0.0/8\"]",
    ] {
        let (code, _, stderr) = check(&queued(guarded));
        assert_eq!(code, 0, "{stderr}");
        assert!(
            !stderr.contains("queued without verify"),
            "{guarded}: {stderr}"
        );
    }
}

/// The problems, as `(key, message)`, of a config `text` that must be refused
/// (loaded as `/nonexistent/hookgate.toml`).
#[track_caller]
fn refusal(text: &str) -> Vec<(String, String)> {
    let error = Config::from_toml(text, Path::new("/nonexistent/hookgate.toml"))
        .expect_err("the config is refused");
    (error.problems.iter())
        .map(|p| (p.problem.key.clone(), p.problem.message.clone()))
        .collect()
}

/// The lease a claim needs covers the whole forward (`response_timeout`) and
/// the forwarded mark written after it (`command_timeout`): a lease equal to
/// the `response_timeout` could end just before the mark lands, and another
/// instance would forward the delivery again. At the bound the file loads;
/// a millisecond under it, it is refused with the same bounds in its remedy.
/// Guards the `+ command_timeout` of `config::check_claim_lease`.
#[test]
fn a_claim_lease_must_cover_the_forward_and_its_mark() {
    let file = |lease: &str| {
        format!(
            r#"
[cluster]
redis = "redis://127.0.0.1:9/0"
command_timeout = "1s"
claim_lease = "{lease}"

[upstreams.app]
targets = ["127.0.0.1:9"]
response_timeout = "10s"

[[routes]]
name = "one"
path = "/one"
upstream = "app"
dedupe = {{ key = "header:X-Delivery" }}
"#
        )
    };
    let at = Path::new("/nonexistent/hookgate.toml");
    Config::from_toml(&file("11s"), at).expect("a lease of response_timeout + command_timeout");
    for lease in ["10s", "10s 999ms"] {
        let problems = refusal(&file(lease));
        assert_eq!(problems.len(), 1, "{problems:?}");
        let (key, message) = &problems[0];
        assert_eq!(key, "cluster.claim_lease", "{problems:?}");
        assert!(
            message.contains("set claim_lease to at least 11s")
                && message.contains("derived per route: the longest response_timeout + 5s"),
            "{problems:?}"
        );
    }
}

/// One route's problem names every upstream of it over the bound, slowest
/// first, so lowering them as told is accepted at once (a hostile pass had to
/// follow the remedy three times, one upstream per round). Guards the `over`
/// list of `config::check_claim_lease`.
#[test]
fn a_short_claim_lease_names_every_upstream_of_the_route_over_it() {
    let file = |a: &str, b: &str, c: &str| {
        format!(
            r#"
[cluster]
redis = "redis://127.0.0.1:9/0"
claim_lease = "30s"

[upstreams.app]
targets = ["127.0.0.1:9"]
response_timeout = "{a}"

[upstreams.b]
targets = ["127.0.0.1:9"]
response_timeout = "{b}"

[upstreams.c]
targets = ["127.0.0.1:9"]
response_timeout = "{c}"

[[routes]]
name = "r"
path = "/r"
upstream = ["app", "b"]
dedupe = {{ key = "header:X-Delivery" }}
event = {{ header = "X-Event" }}
  [[routes.events]]
  match = "other"
  upstream = "c"
"#
        )
    };
    let at = Path::new("/nonexistent/hookgate.toml");
    let problems = refusal(&file("60s", "50s", "40s"));
    assert_eq!(problems.len(), 1, "{problems:?}");
    let message = &problems[0].1;
    assert!(
        message.contains(
            "the response_timeouts of upstreams \"app\" (1m), \"b\" (50s), \"c\" (40s) plus"
        ) && message.contains("lower those response_timeouts to at most 29s 750ms"),
        "{problems:?}"
    );
    Config::from_toml(&file("29s 750ms", "29s 750ms", "29s 750ms"), at)
        .expect("the remedy, followed once");
}

/// Durations that would overflow a deadline or a lease sent to Redis are
/// config problems, not panics: an upstream duration is at most a day, a
/// `command_timeout` an hour, a `claim_lease` a week, and each more than 0.
/// A hostile pass made `check` panic with a `response_timeout` of u64::MAX
/// seconds, and every deduped request panic without a `claim_lease`. Guards
/// `units::parse_duration_within` in `compile_upstream` and `Cluster` compile.
#[test]
fn durations_past_their_bound_are_problems_not_panics() {
    let file = |timeout: &str, cluster: &str| {
        format!(
            r#"
[cluster]
redis = "redis://127.0.0.1:9/0"
{cluster}

[upstreams.app]
targets = ["127.0.0.1:9"]
response_timeout = "{timeout}"

[[routes]]
name = "r"
path = "/r"
upstream = "app"
dedupe = {{ key = "header:X-Delivery" }}
"#
        )
    };
    let at = Path::new("/nonexistent/hookgate.toml");
    for (timeout, cluster, key, said) in [
        (
            "18446744073709551615s",
            "",
            "upstreams.app.response_timeout",
            "more than the most allowed, 1day",
        ),
        (
            "100000h",
            "claim_lease = \"1h\"",
            "upstreams.app.response_timeout",
            "more than the most allowed, 1day",
        ),
        (
            "0s",
            "",
            "upstreams.app.response_timeout",
            "must be more than 0",
        ),
        (
            "10s",
            "claim_lease = \"10000000000000h\"",
            "cluster.claim_lease",
            "more than the most allowed, 7days",
        ),
        (
            "10s",
            "command_timeout = \"2h\"",
            "cluster.command_timeout",
            "more than the most allowed, 1h",
        ),
    ] {
        let problems = refusal(&file(timeout, cluster));
        assert!(
            (problems.iter()).any(|(k, message)| k == key && message.contains(said)),
            "{timeout} {cluster}: {problems:?}"
        );
    }
    Config::from_toml(&file("24h", "claim_lease = \"168h\""), at).expect("at the bounds");
}

/// On a reload, the running lease's remedy names what a restart with this
/// file needs: the file's `command_timeout`, not the running one. A hostile
/// pass followed "restart with a claim_lease of at least 1m 10s 250ms" and
/// `check` refused the result, wanting 1m 12s. Guards `restart_command_timeout`
/// in `config::check_claim_lease`.
#[test]
fn the_restart_remedy_of_a_running_lease_uses_the_files_command_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookgate.toml");
    let file = |lease: &str| {
        format!(
            r#"
[server]
listen = ["127.0.0.1:0"]

[cluster]
redis = "redis://127.0.0.1:9/0"
command_timeout = "2s"
{lease}

[upstreams.app]
targets = ["127.0.0.1:9"]
response_timeout = "70s"

[[routes]]
name = "r"
path = "/r"
upstream = "app"
dedupe = {{ key = "header:X-Delivery" }}
"#
        )
    };
    std::fs::write(&path, file("")).unwrap();
    let running = hookgate::config::Running {
        store: false,
        claim_lease: Some(hookgate::config::ClaimLease {
            lease: std::time::Duration::from_secs(60),
            command_timeout: std::time::Duration::from_millis(250),
        }),
    };
    let error = Config::load_for_reload(&path, running).expect_err("outgrows the running lease");
    let message = error.to_string();
    assert!(
        message.contains("restart hookgate with a claim_lease of at least 1m 12s"),
        "{message}"
    );
    std::fs::write(&path, file("claim_lease = \"1m 12s\"")).unwrap();
    Config::load(&path).expect("the remedy, followed");
}

/// Report every problem at once: a `claim_lease` shorter than the forwards of
/// two deduped routes is one `cluster.claim_lease` line per route, each with
/// the start-time remedy. Guards the per-route loop of
/// `config::check_claim_lease`: reporting only the slowest pair names one route.
#[test]
fn a_short_claim_lease_names_every_deduped_route_it_concerns() {
    let text = r#"
[cluster]
redis = "redis://127.0.0.1:9/0"
claim_lease = "3s"

[upstreams.slow]
targets = ["127.0.0.1:9"]
response_timeout = "10s"

[upstreams.slower]
targets = ["127.0.0.1:9"]
response_timeout = "20s"

[[routes]]
name = "one"
path = "/one"
upstream = "slow"
dedupe = { key = "header:X-Delivery" }

[[routes]]
name = "two"
path = "/two"
upstream = "slower"
dedupe = { key = "header:X-Delivery" }

[[routes]]
name = "queued"
path = "/queued"
upstream = "slower"
dedupe = { key = "header:X-Delivery" }
delivery = "queued"

[storage]
path = "data"
"#;
    let leases: Vec<String> = (refusal(text).into_iter())
        .filter(|(key, _)| key == "cluster.claim_lease")
        .map(|(_, message)| message)
        .collect();
    assert_eq!(leases.len(), 2, "{leases:?}");
    assert!(
        leases[0].contains("response_timeout 10s of upstream \"slow\" plus the command_timeout 250ms of the forwarded mark (route \"one\" dedupes)")
            && leases[0].contains("lower that response_timeout to at most 2s 750ms, or set claim_lease to at least 10s 250ms"),
        "{leases:?}"
    );
    assert!(
        leases[1].contains("response_timeout 20s of upstream \"slower\" plus the command_timeout 250ms of the forwarded mark (route \"two\" dedupes)")
            && leases[1].contains("set claim_lease to at least 20s 250ms"),
        "{leases:?}"
    );
}
