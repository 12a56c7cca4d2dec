//! One behaviour suite for every key-store backend: each behaviour runs against the SQLite
//! store of a fresh data directory and against a fresh database of a throwaway PostgreSQL
//! cluster (skipped, loudly, when PostgreSQL is not installed; failed under `CI=true`).
//! Several handles on one store stand for several processes (`kms serve` replicas, `kms keys`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use g2p_encryption::{EncryptionProvider, SignOptions, SignPayload};
use g2p_kms::store::backend::{Import, Query, Stored};
use g2p_kms::store::{Backend, PostgresBackend, PostgresOptions, SqliteBackend, StoredKey};
use g2p_kms::{
    Kek, KeyStore, Kms, KmsError, LocalProvider, LocalSettings, Minting, Policies, StoreOptions,
};
use g2p_testkit::postgres::PgCluster;

/// Longest a change made through one handle may take to be seen through another.
const VISIBLE_WITHIN: Duration = Duration::from_secs(5);

/// Where a behaviour's store lives.
enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

struct Store {
    place: Place,
    kek: [u8; 32],
}

impl Store {
    fn backend(&self) -> Box<dyn Backend> {
        match &self.place {
            Place::Sqlite(dir) => Box::new(SqliteBackend::open(dir.path()).unwrap()),
            Place::Postgres(url) => Box::new(
                PostgresBackend::connect(&PostgresOptions {
                    url: url.clone().into(),
                    ca: None,
                    pool_size: 8,
                })
                .unwrap(),
            ),
        }
    }

    fn kek(&self) -> Kek {
        Kek::from_bytes(&self.kek).unwrap()
    }

    fn open_with(&self, options: StoreOptions) -> Arc<Kms> {
        Arc::new(Kms::open_with(self.backend(), self.kek(), options).unwrap())
    }

    /// Another handle on the store, as another process would have.
    fn open(&self) -> Arc<Kms> {
        self.open_with(StoreOptions::default())
    }
}

fn thumbprint(ciphertext: &[u8]) -> String {
    g2p_mosip::cipher::parse(ciphertext)
        .unwrap()
        .thumbprint_hex()
        .unwrap()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Keys of the pair still valid beyond now (ended keys expire a minute before their end).
fn live_keys(kms: &Kms, app: &str, reference: &str) -> usize {
    let at = now();
    kms.all_certificates(app, reference)
        .unwrap()
        .iter()
        .filter(|r| r.expires_at > at)
        .count()
}

/// Waits until `seen` holds, at most [`VISIBLE_WITHIN`]; how long it took.
fn within(what: &str, mut seen: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !seen() {
        assert!(
            started.elapsed() < VISIBLE_WITHIN,
            "{what}: not seen within {VISIBLE_WITHIN:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    started.elapsed()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn operations_work_and_survive_a_restart(store: &Store) {
    let rt = runtime();
    let provider = LocalProvider::new(store.open(), LocalSettings::default());
    let (sealed, token) = rt.block_on(async {
        let sealed = provider.encrypt(b"beneficiary").await.unwrap();
        let token = provider
            .jwt_sign(&SignPayload::Text("doc".into()), &SignOptions::default())
            .await
            .unwrap();
        provider.jwt_verify(&token, None).await.unwrap();
        (sealed, token)
    });
    let kms = provider.kms();
    let kinds: Vec<_> = kms
        .store()
        .list()
        .unwrap()
        .iter()
        .map(|r| (r.application_id.clone(), r.reference_id.clone()))
        .collect();
    for app in ["ROOT", "REGISTRATION", "ID_REPO", "KERNEL", "OPENG2P"] {
        assert!(
            kinds.contains(&(app.to_string(), String::new())),
            "{app}: {kinds:?}"
        );
    }
    let count = kinds.len();
    drop(provider);
    let again = LocalProvider::new(store.open(), LocalSettings::default());
    rt.block_on(async {
        assert_eq!(again.decrypt(&sealed).await.unwrap(), b"beneficiary");
        again.jwt_verify(&token, None).await.unwrap();
        again.ready().await.unwrap();
    });
    assert_eq!(
        again.kms().store().list().unwrap().len(),
        count,
        "a restart made keys"
    );
}

fn another_kek_is_refused_and_changes_nothing(store: &Store) {
    let count = store.open().store().list().unwrap().len();
    let e = Kms::open_with(
        store.backend(),
        Kek::from_bytes(&[0x5a; 32]).unwrap(),
        StoreOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, KmsError::Config(_)), "{e:?}");
    assert!(e.to_string().contains("does not match"), "{e}");
    assert_eq!(store.open().store().list().unwrap().len(), count);
}

fn rotation_and_revocation_are_seen_by_other_handles(store: &Store) {
    let serving = store.open();
    let admin = store.open();
    let params = g2p_mosip::cipher::CipherParams::default();
    let seal = |kms: &Kms| {
        kms.encrypt("REGISTRATION", "ENCRYPT", &params, b"x")
            .unwrap()
    };
    let first = seal(&serving);
    assert_eq!(
        thumbprint(&seal(&serving)),
        thumbprint(&first),
        "cached key kept"
    );
    // Told of changes, the store seals from memory: no lookups.
    within("the change signal", || serving.store().backend().watching());
    seal(&serving);
    let reads = serving.store().backend().reads();
    for _ in 0..20 {
        seal(&serving);
    }
    assert_eq!(
        serving.store().backend().reads(),
        reads,
        "sealing read the store"
    );
    let rotated = admin.store().rotate("REGISTRATION", "ENCRYPT").unwrap();
    within("a rotation", || {
        thumbprint(&seal(&serving)) == rotated.thumbprint
    });
    assert_eq!(live_keys(&serving, "REGISTRATION", "ENCRYPT"), 1);
    // Revoked: the next crypto call anywhere makes a new key; the old ones still decrypt.
    assert!(
        admin
            .store()
            .expire_current("REGISTRATION", "ENCRYPT", now())
            .unwrap()
    );
    within("a revocation", || {
        thumbprint(&seal(&serving)) != rotated.thumbprint
    });
    assert_eq!(live_keys(&admin, "REGISTRATION", "ENCRYPT"), 1);
    for kms in [&serving, &admin] {
        assert_eq!(
            kms.decrypt("REGISTRATION", "ENCRYPT", &params, &first)
                .unwrap(),
            b"x"
        );
    }
}

fn racing_handles_make_exactly_one_current_key(store: &Store) {
    let mut options = StoreOptions::default();
    options
        .policies
        .admit_unknown_applications(Some(Policies::standard()));
    let handles: Vec<_> = (0..6).map(|_| store.open_with(options.clone())).collect();
    // The first key of a new application (its master key and a base key), made at once.
    let start = Arc::new(Barrier::new(handles.len()));
    let made: Vec<String> = std::thread::scope(|scope| {
        let threads: Vec<_> = handles
            .iter()
            .map(|kms| {
                let start = Arc::clone(&start);
                scope.spawn(move || {
                    start.wait();
                    kms.store()
                        .current_key_for("NEWAPP", "ENCRYPT", now(), Minting::Admin)
                        .unwrap()
                        .record
                        .key_id
                        .clone()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert!(made.iter().all(|k| *k == made[0]), "{made:?}");
    assert_eq!(handles[0].all_certificates("NEWAPP", "").unwrap().len(), 1);
    assert_eq!(
        handles[0]
            .all_certificates("NEWAPP", "ENCRYPT")
            .unwrap()
            .len(),
        1
    );
    // Rotations at once: each makes a key, one stays current.
    let start = Arc::new(Barrier::new(handles.len()));
    std::thread::scope(|scope| {
        for kms in &handles {
            let start = Arc::clone(&start);
            scope.spawn(move || {
                start.wait();
                kms.store().rotate("NEWAPP", "ENCRYPT").unwrap();
            });
        }
    });
    assert_eq!(
        handles[0]
            .all_certificates("NEWAPP", "ENCRYPT")
            .unwrap()
            .len(),
        7
    );
    assert_eq!(live_keys(&handles[0], "NEWAPP", "ENCRYPT"), 1);
}

fn partner_certificates_and_realm_keys_are_shared(store: &Store) {
    let one = store.open();
    let two = store.open();
    let partner = g2p_testkit::TestKey::generate("partner.example").cert_pem();
    let uploaded = one
        .store()
        .upload_partner_certificate("PARTNER", "BANK", &partner)
        .unwrap();
    let again = two
        .store()
        .upload_partner_certificate("PARTNER", "BANK", &partner)
        .unwrap();
    assert_eq!(uploaded.key_id, again.key_id);
    assert_eq!(one.all_certificates("PARTNER", "BANK").unwrap().len(), 1);
    let key = one.store().realm_key("openg2p").unwrap();
    assert_eq!(*two.store().realm_key("openg2p").unwrap(), *key);
    assert_ne!(*two.store().realm_key("other").unwrap(), *key);
    assert!(two.store().realm_key("../x").is_err());
}

fn a_backup_restores_into_a_data_directory(store: &Store) {
    let kms = store.open();
    kms.store().rotate("REGISTRATION", "ENCRYPT").unwrap();
    kms.store().realm_key("openg2p").unwrap();
    let params = g2p_mosip::cipher::CipherParams::default();
    let sealed = kms
        .encrypt("REGISTRATION", "ENCRYPT", &params, b"kept")
        .unwrap();
    let keys = kms.store().list().unwrap().len();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("keys.backup");
    let summary =
        g2p_kms::backup::backup_backend(kms.store().backend(), &file, out.path()).unwrap();
    assert_eq!(summary.keys, keys);
    assert_eq!(summary.realms, vec!["openg2p".to_string()]);
    let restored = out.path().join("restored");
    let kek_text = g2p_encryption::b64::encode_b64(&store.kek);
    g2p_kms::backup::restore(
        &file,
        &restored,
        g2p_kms::backup::KekSource::Base64(&kek_text),
    )
    .unwrap();
    let copy = Kms::open(&restored, store.kek(), StoreOptions::default()).unwrap();
    assert_eq!(copy.store().list().unwrap().len(), keys);
    assert_eq!(
        copy.decrypt("REGISTRATION", "ENCRYPT", &params, &sealed)
            .unwrap(),
        b"kept"
    );
    assert_eq!(
        *copy.store().realm_key("openg2p").unwrap(),
        *kms.store().realm_key("openg2p").unwrap()
    );
}

fn a_data_directory_migrates_into_it(store: &Store) {
    let source = tempfile::tempdir().unwrap();
    let original = KeyStore::open(source.path(), store.kek(), StoreOptions::default()).unwrap();
    original.rotate("REGISTRATION", "ENCRYPT").unwrap();
    original.realm_key("openg2p").unwrap();
    drop(original);
    let before = Kms::open(source.path(), store.kek(), StoreOptions::default()).unwrap();
    let params = g2p_mosip::cipher::CipherParams::default();
    let sealed = before
        .encrypt("REGISTRATION", "ENCRYPT", &params, b"moved")
        .unwrap();
    let keys: Vec<StoredKey> = SqliteBackend::open(source.path())
        .unwrap()
        .export()
        .unwrap()
        .keys;
    let summary =
        g2p_kms::migrate::migrate(source.path(), store.kek(), store.backend(), false).unwrap();
    assert_eq!(summary.keys, keys.len());
    assert!(summary.verified_ciphertexts >= 1);
    let after = store.open();
    assert_eq!(after.store().list().unwrap().len(), keys.len());
    assert_eq!(
        after
            .decrypt("REGISTRATION", "ENCRYPT", &params, &sealed)
            .unwrap(),
        b"moved"
    );
    assert_eq!(
        *after.store().realm_key("openg2p").unwrap(),
        *before.store().realm_key("openg2p").unwrap()
    );
    let e =
        g2p_kms::migrate::migrate(source.path(), store.kek(), store.backend(), false).unwrap_err();
    assert!(e.to_string().contains("--force"), "{e}");
    // The import checks again in its own transaction (a store made after the first look).
    let contents = SqliteBackend::open(source.path())
        .unwrap()
        .export()
        .unwrap();
    let e = store
        .backend()
        .import(&contents, Import::IntoEmpty)
        .unwrap_err();
    assert!(e.to_string().contains("already holds a key store"), "{e}");
    assert_eq!(after.store().list().unwrap().len(), keys.len());
}

fn the_pair_lock_counts_a_key_made_a_moment_later(store: &Store) {
    // Replica A takes the time, then generates for a while; replica B, a second later,
    // stores first. A's check must still see B's key, though it is "newer" than A's moment.
    let backend = store.backend();
    let row = |n: u8, at: i64| StoredKey {
        alias: format!("race-{n}"),
        application_id: "RACE".into(),
        reference_id: "LATER".into(),
        key_id: format!("kid-{n}"),
        unique_identifier: format!("uid-{n}"),
        thumbprint: format!("{n:064X}"),
        certificate: vec![n],
        private_key: Some(vec![n]),
        generated_at: at,
        expires_at: at + 86_400,
        kind: "base".into(),
    };
    let check = backend.kek_check(b"check value").unwrap();
    let t = now();
    assert_eq!(
        backend
            .store_current(&row(1, t + 5), (0, false), &check)
            .unwrap(),
        Stored::Ours
    );
    // The loser is told the winner's key.
    let Stored::Theirs(theirs) = backend
        .store_current(&row(2, t), (0, false), &check)
        .unwrap()
    else {
        panic!("a second current key was stored");
    };
    assert_eq!(theirs.alias, "race-1");
    // A rotation as of the earlier moment ends the later key too.
    assert_eq!(
        backend
            .store_current(&row(3, t), (0, true), &check)
            .unwrap(),
        Stored::Ours
    );
    let live: Vec<String> = backend
        .select(Query::Pair("RACE", "LATER"))
        .unwrap()
        .into_iter()
        .filter(|k| k.expires_at > t)
        .map(|k| k.alias)
        .collect();
    assert_eq!(live, vec!["race-3".to_string()]);
    // A process that opened the store under another KEK (migrate-kek ran since) stores
    // nothing: its key would be wrapped under the old one.
    let e = backend
        .store_current(&row(4, t), (0, true), b"the old check value")
        .unwrap_err();
    assert!(e.to_string().contains("migrate-kek"), "{e}");
    // A rewrite of the whole store (migrate-kek) is refused when the store changed since it
    // was read, and goes through when it did not.
    let read = backend.export().unwrap();
    assert_eq!(
        backend
            .store_current(&row(5, t), (0, true), &check)
            .unwrap(),
        Stored::Ours
    );
    let e = backend
        .import(&read, Import::ReplacingExactly(&read))
        .unwrap_err();
    assert!(e.to_string().contains("changed while"), "{e}");
    let now_read = backend.export().unwrap();
    backend
        .import(&now_read, Import::ReplacingExactly(&now_read))
        .unwrap();
    assert_eq!(backend.export().unwrap().keys.len(), now_read.keys.len());
}

type Behaviour = fn(&Store);

/// The behaviours every backend shares, each on a store of its own.
const BEHAVIOURS: &[(&str, Behaviour)] = &[
    (
        "operations work and survive a restart",
        operations_work_and_survive_a_restart,
    ),
    (
        "another KEK is refused",
        another_kek_is_refused_and_changes_nothing,
    ),
    (
        "rotation and revocation are seen",
        rotation_and_revocation_are_seen_by_other_handles,
    ),
    (
        "racing handles make one current key",
        racing_handles_make_exactly_one_current_key,
    ),
    (
        "partner certificates and realm keys are shared",
        partner_certificates_and_realm_keys_are_shared,
    ),
    (
        "a backup restores into a data directory",
        a_backup_restores_into_a_data_directory,
    ),
    (
        "a data directory migrates into it",
        a_data_directory_migrates_into_it,
    ),
    (
        "the pair lock counts a key made a moment later",
        the_pair_lock_counts_a_key_made_a_moment_later,
    ),
];

fn kek(i: usize) -> [u8; 32] {
    let mut kek = [0u8; 32];
    aws_lc_rs::rand::fill(&mut kek).unwrap();
    kek[0] = u8::try_from(i).unwrap();
    kek
}

#[test]
fn the_sqlite_store_behaves() {
    for (i, (name, behaviour)) in BEHAVIOURS.iter().enumerate() {
        eprintln!("sqlite: {name}");
        let store = Store {
            place: Place::Sqlite(tempfile::tempdir().unwrap()),
            kek: kek(i),
        };
        behaviour(&store);
    }
}

#[test]
fn the_postgres_store_behaves() {
    let Some(cluster) = PgCluster::start("the_postgres_store_behaves") else {
        return;
    };
    for (i, (name, behaviour)) in BEHAVIOURS.iter().enumerate() {
        eprintln!("postgres: {name}");
        let store = Store {
            place: Place::Postgres(cluster.create_database(&format!("behaviour{i}"))),
            kek: kek(i),
        };
        behaviour(&store);
    }
}

#[test]
fn a_database_outage_fails_operations_cleanly_and_the_store_recovers_by_itself() {
    let Some(cluster) = PgCluster::start("a_database_outage_fails_operations_cleanly") else {
        return;
    };
    let store = Store {
        place: Place::Postgres(cluster.create_database("outage")),
        kek: kek(0),
    };
    let serving = store.open();
    let params = g2p_mosip::cipher::CipherParams::default();
    let seal = || serving.encrypt("REGISTRATION", "ENCRYPT", &params, b"x");
    let sealed = seal().unwrap();
    cluster.stop();
    // Not listening any more, the store stops trusting its caches: operations go to the
    // database and fail as unavailable (HTTP 503 in the Keymanager's envelope), never hang.
    within("the outage", || {
        matches!(seal(), Err(KmsError::Unavailable(_)))
    });
    let e = serving
        .decrypt("REGISTRATION", "ENCRYPT", &params, &sealed)
        .unwrap_err();
    assert!(matches!(e, KmsError::Unavailable(_)), "{e:?}");
    assert_eq!(e.code(), g2p_mosip::KerCode::Kms500);
    assert!(e.message().contains("unavailable"), "{e}");
    let e = serving.store().ready().unwrap_err();
    assert!(matches!(e, KmsError::Unavailable(_)), "{e:?}");
    assert!(!serving.store().backend().watching());
    cluster.start_again();
    let started = Instant::now();
    while serving.store().ready().is_err() || seal().is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the store did not recover after the database came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        serving
            .decrypt("REGISTRATION", "ENCRYPT", &params, &sealed)
            .unwrap(),
        b"x"
    );
    // Listening again: a rotation elsewhere is seen.
    within("listening again", || serving.store().backend().watching());
    let rotated = store
        .open()
        .store()
        .rotate("REGISTRATION", "ENCRYPT")
        .unwrap();
    within("a rotation after the outage", || {
        thumbprint(&seal().unwrap()) == rotated.thumbprint
    });
}

#[test]
fn a_schema_from_a_newer_program_is_refused() {
    let Some(cluster) = PgCluster::start("a_schema_from_a_newer_program_is_refused") else {
        return;
    };
    let url = cluster.create_database("newer");
    let store = Store {
        place: Place::Postgres(url.clone()),
        kek: kek(0),
    };
    drop(store.open());
    runtime().block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .execute(
                "INSERT INTO g2p_kms_schema_history (version, name, applied_on, checksum) VALUES (99, 'from_the_future', '2030-01-01T00:00:00Z', '1')",
                &[],
            )
            .await
            .unwrap();
    });
    let e = PostgresBackend::connect(&PostgresOptions {
        url: url.into(),
        ca: None,
        pool_size: 2,
    })
    .unwrap_err();
    assert!(e.to_string().contains("newer version"), "{e}");
}
