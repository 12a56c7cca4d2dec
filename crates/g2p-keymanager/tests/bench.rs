//! `g2p-keymanager bench`: figures for the embedded default and for the Keymanager provider
//! against `kms serve`, as a table or one JSON object per operation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{command, stop};
use serde_json::Value;

const MEMBERS: [&str; 11] = [
    "op",
    "provider",
    "ops_per_sec",
    "ceiling_ops_per_sec",
    "ratio",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "errors",
    "retries",
    "token_fetches",
];

fn figures(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn check(f: &Value) {
    for member in MEMBERS {
        assert!(!f[member].is_null(), "{member} missing in {f}");
    }
    let n = |m: &str| f[m].as_f64().unwrap();
    assert!(
        n("ops_per_sec") > 0.0 && n("ceiling_ops_per_sec") > 0.0,
        "{f}"
    );
    assert!(
        (n("ratio") - n("ops_per_sec") / n("ceiling_ops_per_sec")).abs() < 1e-9,
        "{f}"
    );
    assert!(
        n("p50_ms") <= n("p90_ms") && n("p90_ms") <= n("p99_ms"),
        "{f}"
    );
    assert_eq!(f["errors"], 0, "{f}");
}

#[test]
fn bench_measures_every_operation_of_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(
        &[
            "bench",
            "--duration",
            "0.3",
            "--warmup",
            "0",
            "--concurrency",
            "2",
            "--json",
        ],
        dir.path(),
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = figures(&out.stdout);
    let ops: Vec<&str> = all.iter().map(|f| f["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["encrypt", "decrypt", "sign", "verify"]);
    for f in &all {
        check(f);
        assert_eq!(f["provider"], "default");
        assert_eq!(f["kind"], "local");
        assert_eq!(
            (f["retries"].as_u64(), f["token_fetches"].as_u64()),
            (Some(0), Some(0))
        );
    }
    // The table, for people.
    let out = command(
        &["bench", "--op", "verify", "--duration", "0.2"],
        dir.path(),
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("ceiling/s") && text.contains("RS256 verify"),
        "{text}"
    );
    // Bad arguments are refused before anything runs.
    for args in [
        vec!["bench", "--duration", "0"],
        vec!["bench", "--op", "rotate"],
        vec!["bench", "--concurrency", "0"],
    ] {
        let out = command(&args, dir.path()).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn bench_measures_the_keymanager_provider_against_kms_serve() {
    let dir = tempfile::tempdir().unwrap();
    let (child, url) = common::kms_serve(&dir.path().join("kms"));
    let mut out = command(
        &[
            "bench",
            "--op",
            "decrypt",
            "--duration",
            "0.5",
            "--concurrency",
            "4",
            "--json",
        ],
        dir.path(),
    );
    let out = common::with_keymanager_env(&mut out, &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = figures(&out.stdout);
    assert_eq!(all.len(), 1);
    check(&all[0]);
    assert_eq!(all[0]["kind"], "keymanager");
    assert_eq!(all[0]["ceiling_op"], "RSA-OAEP-SHA256 decrypt");
    let (code, _) = stop(child);
    assert_eq!(code, 0);

    // With the key manager gone, every operation fails: bench says so and exits 3.
    let mut gone = command(
        &[
            "bench",
            "--op",
            "sign",
            "--duration",
            "0.2",
            "--timeout",
            "5",
        ],
        dir.path(),
    );
    let out = common::with_keymanager_env(&mut gone, &url)
        .env("KEYMANAGER_MAX_ATTEMPTS", "2")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
