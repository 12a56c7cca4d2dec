//! `--timeout`: a command that uses a provider ends in time, says why, and writes no output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::command;

#[test]
fn a_command_ends_at_its_timeout_without_output() {
    // A key manager that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "Amina Yusuf").unwrap();
    let output = dir.path().join("out.txt");
    let started = Instant::now();
    let out = command(
        &[
            "--timeout",
            "1.5",
            "encrypt",
            "--in",
            input.to_str().unwrap(),
            "--out",
            output.to_str().unwrap(),
        ],
        dir.path(),
    )
    .env(
        "KEYMANAGER_API_BASE_URL",
        format!("http://{addr}/v1/keymanager"),
    )
    .env("KEYMANAGER_AUTH_URL", format!("http://{addr}/token"))
    .env("KEYMANAGER_AUTH_CLIENT_ID", "app")
    .env("KEYMANAGER_AUTH_CLIENT_SECRET", "app-secret")
    .output()
    .unwrap();
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    assert!(
        stderr.contains("deadline") || stderr.contains("--timeout"),
        "{stderr}"
    );
    assert!(!output.exists(), "an output file was written");
    // A timeout that is not a positive number is refused.
    let out = command(&["--timeout", "-1", "jwks"], dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
