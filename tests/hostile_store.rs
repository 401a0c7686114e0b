//! Hostile pass on the store of queued delivery and on port-0 listeners,
//! through the real binary: a damaged `events.redb` at start, and another local
//! process joining a port the gateway chose.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const TOKEN: &str = "hostile-store-token";

fn queued_config(app: std::net::SocketAddr) -> String {
    format!(
        "[upstreams.app]\ntargets = [\"{app}\"]\ntimeout = \"2s\"\n\
         [storage]\npath = \"data\"\n\
         [[routes]]\nname = \"tok\"\npath = \"/tok\"\nupstream = \"app\"\n\
         verify = {{ scheme = \"token\", header = \"X-Hook-Token\", secrets = [\"literal:{TOKEN}\"] }}\n\
         delivery = \"queued\"\n"
    )
}

#[test]
fn a_truncated_store_stops_the_start_with_an_error_naming_the_file_not_a_panic() {
    let app = Upstream::start("app");
    let mut gateway = Gateway::start(&queued_config(app.addr));
    for n in 0..20 {
        post(
            gateway.proxy,
            "/tok",
            &[("X-Hook-Token", TOKEN)],
            format!("{{\"n\":{n}}}").as_bytes(),
        )
        .expect_status(202);
    }
    gateway.signal("TERM");
    assert!(gateway.wait_exit(Duration::from_secs(10)).is_some());
    // A copy cut short (a full disk during a backup, a bad restore).
    let file = gateway.dir.path().join("data").join("events.redb");
    let len = std::fs::metadata(&file).expect("events.redb").len();
    let handle = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    handle.set_len(len / 2).unwrap();
    drop(handle);
    let mut child = Command::new(BIN)
        .args(["serve", "-c", gateway.config_path.to_str().unwrap()])
        .current_dir(gateway.dir.path())
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > Duration::from_secs(15) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if status.is_none() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let status = status.unwrap_or_else(|| panic!("started on a truncated store: {text}"));
    // Guards the panic guard around `Database::create` in
    // `RedbStore::open`: redb 2.6 asserts on a file shorter than its header
    // says, and the process dies with a panic (exit 101) instead of the
    // start error that names the store.
    assert_ne!(status.code(), Some(101), "a panic: {text}");
    assert!(!status.success(), "{text}");
    assert!(text.contains("events.redb"), "{text}");
}
