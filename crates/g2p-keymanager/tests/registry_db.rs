//! `registry … --database-url` against a real PostgreSQL (a throwaway cluster): 100,000
//! OpenG2P-shaped rows encrypted while another connection keeps updating random rows, an
//! interrupted run resumed after a key rotation, a rewrap that touches only the rows sealed
//! under the old key, inspection, and a decrypt that gives back every original value. Then
//! the refusals that must leave the table as it was.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use g2p_testkit::postgres::PgCluster;
use tokio_postgres::{Client, NoTls};

const ROWS: i64 = 100_000;

const SCHEMA: &str = "
CREATE TABLE res_partner (
    id serial PRIMARY KEY,
    name varchar, family_name varchar, given_name varchar, addl_name varchar,
    display_name varchar, address text, birth_place varchar,
    phone varchar, notes text, is_registrant boolean, is_group boolean,
    is_encrypted boolean, encrypted_val bytea, write_date timestamp
)";

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

async fn fill(client: &Client) {
    client.batch_execute(SCHEMA).await.unwrap();
    client
        .execute(
            "INSERT INTO res_partner (name, given_name, family_name, addl_name, display_name, \
             address, birth_place, phone, notes, is_registrant, is_group)
             SELECT CASE WHEN i % 97 = 0 THEN NULL ELSE 'Person ' || i || ' Ñúñez \"Q\"' END,
                    CASE WHEN i % 97 = 0 THEN NULL ELSE 'Given' || i END,
                    CASE WHEN i % 7 = 0 OR i % 97 = 0 THEN NULL ELSE 'Family ' || i END,
                    CASE WHEN i % 3 = 0 THEN '' ELSE NULL END,
                    NULL,
                    CASE WHEN i % 97 = 0 THEN NULL ELSE i || E' Market Road\\nKano' END,
                    CASE WHEN i % 5 = 0 OR i % 97 = 0 THEN '' ELSE 'أمينة' END,
                    '080' || i, 'v0', i % 10 <> 0, i % 10 = 0
             FROM generate_series(1, $1::bigint) AS i",
            &[&ROWS],
        )
        .await
        .unwrap();
    client
        .batch_execute(
            "CREATE TABLE expected AS SELECT id, name, family_name, given_name, addl_name, \
             display_name, address, birth_place, is_registrant FROM res_partner",
        )
        .await
        .unwrap();
}

async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// Keeps updating random rows' non-personal columns, as a running Odoo would, and remembers
/// the last value written to each.
fn updater(url: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<HashMap<i32, String>> {
    tokio::spawn(async move {
        let client = connect(&url).await;
        let update = client
            .prepare(
                "UPDATE res_partner SET notes = $1::text, phone = $1::text, write_date = now() WHERE id = $2",
            )
            .await
            .unwrap();
        let mut last = HashMap::new();
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let id = i32::try_from((state >> 33) % ROWS as u64 + 1).unwrap();
            n += 1;
            let value = format!("u{n}");
            client.execute(&update, &[&value, &id]).await.unwrap();
            last.insert(id, value);
        }
        last
    })
}

fn registry(args: &[&str], data: &std::path::Path, url: &str) -> std::process::Command {
    let mut all = vec!["registry"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--database-url", url, "--quiet"]);
    common::command(&all, data)
}

async fn wait(mut child: Child) -> Output {
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn fingerprints(client: &Client) -> HashMap<i32, String> {
    client
        .query(
            "SELECT id, md5(encrypted_val) FROM res_partner WHERE is_encrypted",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_registry_is_encrypted_once_resumed_rewrapped_and_restored() {
    let Some(cluster) =
        PgCluster::start("a_live_registry_is_encrypted_once_resumed_rewrapped_and_restored")
    else {
        return;
    };
    let url = cluster.url();
    let client = connect(&url).await;
    fill(&client).await;
    let eligible = count(
        &client,
        "SELECT count(*) FROM res_partner WHERE is_registrant AND (name <> '' OR given_name <> '' \
         OR family_name <> '' OR address <> '' OR birth_place <> '')",
    )
    .await;
    assert!(eligible > 80_000, "{eligible}");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let stop = Arc::new(AtomicBool::new(false));
    let updates = updater(url.clone(), stop.clone());

    // A first run, interrupted (Ctrl-C) once a quarter of the rows are done: it finishes its
    // batch and stops.
    let mut child = registry(&["encrypt", "--batch-size", "500"], &data, &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while count(
        &client,
        "SELECT count(*) FROM res_partner WHERE is_encrypted",
    )
    .await
        < eligible / 4
    {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the first run is stuck"
        );
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            panic!("the first run ended early: {}", stderr_of(&out));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = wait(child).await;
    assert_eq!(out.status.code(), Some(130), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("interrupted after"),
        "{}",
        stderr_of(&out)
    );
    let first_run: HashSet<i32> = fingerprints(&client).await.into_keys().collect();
    let done = i64::try_from(first_run.len()).unwrap();
    assert!(
        done >= eligible / 4 && done < eligible,
        "{done} of {eligible}"
    );

    // The key is rotated; the second run resumes and seals the rest under the new key.
    let rotate = common::rotate_encryption_key(&data);
    assert!(rotate.status.success(), "{}", stderr_of(&rotate));
    let out = wait(
        registry(&["encrypt", "--batch-size", "500"], &data, &url)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
    .await;
    assert!(out.status.success(), "{}", stderr_of(&out));
    stop.store(true, Ordering::SeqCst);
    let last = updates.await.unwrap();
    assert!(
        last.len() > 100,
        "the updater made only {} updates",
        last.len()
    );

    // No concurrent update was lost; every eligible registrant is encrypted, nothing else is.
    let ids: Vec<i32> = last.keys().copied().collect();
    let rows = client
        .query(
            "SELECT id, notes, phone FROM res_partner WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .unwrap();
    for row in rows {
        let id: i32 = row.get(0);
        assert_eq!(row.get::<_, String>(1), last[&id], "notes of {id}");
        assert_eq!(row.get::<_, String>(2), last[&id], "phone of {id}");
    }
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM res_partner WHERE is_encrypted"
        )
        .await,
        eligible
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM res_partner WHERE is_encrypted AND (NOT is_registrant OR name <> 'encrypted' OR given_name <> 'encrypted' OR birth_place = 'أمينة' OR addl_name = 'encrypted')").await,
        0
    );

    // Rewrap touches exactly the rows sealed under the old key.
    let before = fingerprints(&client).await;
    let out = wait(
        registry(&["rewrap"], &data, &url)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
    .await;
    assert!(out.status.success(), "{}", stderr_of(&out));
    let after = fingerprints(&client).await;
    let changed: HashSet<i32> = after
        .iter()
        .filter(|(id, md5)| before[*id] != **md5)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(changed, first_run);
    let again = wait(
        registry(&["rewrap"], &data, &url)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
    .await;
    assert!(again.status.success());
    assert_eq!(
        fingerprints(&client).await,
        after,
        "a second rewrap changed rows"
    );

    // One key left; no personal data in the report.
    let out = wait(
        registry(&["inspect", "--json"], &data, &url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
    .await;
    assert!(out.status.success(), "{}", stderr_of(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["records"], ROWS);
    assert_eq!(report["encrypted"], eligible);
    assert_eq!(report["keys"].as_array().unwrap().len(), 1);
    assert_eq!(report["keys"][0]["records"], eligible);
    assert!(report["keys"][0]["key_id"].is_string(), "{report}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Person"));

    // Decrypting restores every original value: each registrant was sealed exactly once.
    let refused = wait(
        registry(&["decrypt"], &data, &url)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr_of(&refused).contains("--yes"));
    let out = wait(
        registry(&["decrypt", "--yes"], &data, &url)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
    .await;
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM res_partner r JOIN expected e USING (id) WHERE \
             (r.name, r.family_name, r.given_name, r.addl_name, r.display_name, r.address, r.birth_place) \
             IS DISTINCT FROM \
             (e.name, e.family_name, e.given_name, e.addl_name, e.display_name, e.address, e.birth_place) \
             OR r.is_encrypted OR r.encrypted_val IS NOT NULL"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_is_not_a_registry_is_refused_before_anything_changes() {
    let Some(cluster) =
        PgCluster::start("a_table_that_is_not_a_registry_is_refused_before_anything_changes")
    else {
        return;
    };
    let url = cluster.url();
    let client = connect(&url).await;
    client
        .batch_execute(
            "CREATE TABLE res_partner (id serial PRIMARY KEY, name varchar, is_registrant boolean, is_encrypted boolean);
             INSERT INTO res_partner (name, is_registrant) VALUES ('Ada', true);
             CREATE TABLE people (pid serial PRIMARY KEY, name varchar, is_registrant boolean, is_encrypted boolean, encrypted_val text);",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let check = |args: &[&str], needle: &str| {
        let out = registry(args, &data, &url).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
        assert!(
            stderr_of(&out).contains(needle),
            "{needle:?} not in {}",
            stderr_of(&out)
        );
    };
    check(
        &["encrypt"],
        "table \"res_partner\" has no column \"encrypted_val\"; nothing was changed",
    );
    check(
        &["encrypt", "--table", "missing"],
        "there is no table \"missing\"",
    );
    check(
        &["encrypt", "--table", "people", "--id-column", "pid"],
        "column \"encrypted_val\" of \"people\" is not bytea",
    );
    client
        .batch_execute("ALTER TABLE res_partner ADD COLUMN encrypted_val bytea")
        .await
        .unwrap();
    check(
        &["encrypt", "--fields", "name,nme"],
        "has no column \"nme\"",
    );
    check(
        &["encrypt", "--in", "x.jsonl"],
        "--in, --out and --rejects are for files",
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM res_partner WHERE name = 'Ada' AND is_encrypted IS NULL"
        )
        .await,
        1
    );

    // A table without is_registrant: every record with --all-records, and read back; a
    // field list with spaces after the commas means the same fields.
    client
        .batch_execute(
            "CREATE TABLE contacts (id serial PRIMARY KEY, name varchar, address text, \
             is_encrypted boolean, encrypted_val bytea);
             INSERT INTO contacts (name, address) VALUES ('Ada', 'Kano'), ('Bo', NULL);",
        )
        .await
        .unwrap();
    let table = ["--table", "contacts", "--fields", "name, address"];
    let mut encrypt = vec!["encrypt", "--all-records"];
    encrypt.extend(table);
    let out = registry(&encrypt, &data, &url).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM contacts WHERE is_encrypted AND name = 'encrypted'"
        )
        .await,
        2
    );
    let mut inspect = vec!["inspect", "--json"];
    inspect.extend(table);
    let out = registry(&inspect, &data, &url).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let mut decrypt = vec!["decrypt", "--yes"];
    decrypt.extend(table);
    let out = registry(&decrypt, &data, &url).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM contacts WHERE name IN ('Ada', 'Bo') AND NOT is_encrypted"
        )
        .await,
        2
    );

    // An unreachable database is the database's failure (exit 3), and names no password.
    let out = registry(
        &["inspect"],
        &data,
        "postgres://odoo:s3cret@127.0.0.1:1/registry",
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("cannot connect to the registry database"));
    assert!(!stderr_of(&out).contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_over_tls_is_trusted_only_through_a_known_ca() {
    let ca = common::ca("registry database CA");
    let (server_cert, server_key) = common::issue(&ca, &["127.0.0.1"]);
    let Some(cluster) = PgCluster::start_tls(
        "a_database_over_tls_is_trusted_only_through_a_known_ca",
        &server_cert,
        &server_key,
    ) else {
        return;
    };
    let client = connect(&cluster.url()).await;
    client.batch_execute(SCHEMA).await.unwrap();
    client
        .batch_execute("INSERT INTO res_partner (name, is_registrant) VALUES ('Ada', true)")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let url = format!("{}?sslmode=require", cluster.url());

    // A certificate from an unknown CA is refused: nothing is read or changed.
    let out = registry(&["encrypt"], &data, &url).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("certificate"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM res_partner WHERE is_encrypted"
        )
        .await,
        0
    );

    // Trusted through --database-ca, over TLS.
    let out = registry(
        &["encrypt", "--database-ca", ca_file.to_str().unwrap()],
        &data,
        &url,
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM res_partner WHERE is_encrypted"
        )
        .await,
        1
    );

    // Turning TLS off is explicit (sslmode=disable).
    let plain = format!("{}?sslmode=disable", cluster.url());
    let out = registry(&["inspect"], &data, &plain).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
}
