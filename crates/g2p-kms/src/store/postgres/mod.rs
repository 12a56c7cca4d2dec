//! The PostgreSQL backend: one database shared by the replicas of `kms serve`.
//!
//! * Connections come from a bounded pool (deadpool-postgres) with timeouts on waiting,
//!   connecting and every operation, so an unreachable database fails a request with
//!   [`KmsError::Unavailable`] instead of hanging it; broken connections are dropped and new
//!   ones made, so a replica carries on by itself after a database restart.
//! * At most one current key per pair: the transaction that stores a key holds the pair's
//!   advisory lock (`pg_advisory_xact_lock`) while it checks and inserts.
//! * Changes reach every replica through `LISTEN`/`NOTIFY`: a trigger on the keys table
//!   notifies, a listening connection moves the change stamp and the caches empty. While
//!   the listener is not connected (or its heartbeat goes unanswered) the stamp changes on
//!   every call, so nothing is served from a cache that might be stale.
//! * The driver is async; the store is not. Each operation runs on the backend's own small
//!   runtime and the calling thread waits for it, which is safe from any thread (a blocking
//!   task, a plain thread, or an async worker).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::Row;

use super::backend::{Backend, Contents, Import, Query, Stamp, Stored, StoredKey};
use changes::{Changes, listen};

mod changes;
mod contents;
mod current;
use crate::error::KmsError;

/// The versioned schema, `migrations/postgres` of this crate.
mod schema {
    refinery::embed_migrations!("migrations/postgres");
}
use schema::migrations;

/// The table refinery records applied migrations in (the database may be shared with other
/// programs that use refinery).
pub(crate) const HISTORY_TABLE: &str = "g2p_kms_schema_history";
/// Longest wait for a pooled connection, and to make one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest an operation may take before the database counts as unavailable.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest the schema migration may take (it may wait for another process's).
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(120);
/// Most pooled connections when none is configured.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// Lock key of the migration: one process migrates at a time.
const MIGRATION_LOCK: i64 = 0x6732_705f_6b6d_7301;

const COLUMNS: &str = "alias, application_id, reference_id, key_id, unique_identifier, thumbprint, certificate, generated_at, expires_at, kind";
const CURRENT: &str = "application_id = $1 AND reference_id = $2 AND kind <> 'partner' AND generated_at <= $3 AND $3 < expires_at - $4";
/// The pair's keys not yet ended at `$3`, whenever they were made: what the pair's lock
/// checks and a rotation ends (a key another process made a moment later counts).
const LIVE: &str =
    "application_id = $1 AND reference_id = $2 AND kind <> 'partner' AND $3 < expires_at - $4";
const INSERT: &str = "INSERT INTO g2p_kms_keys (alias, application_id, reference_id, key_id, unique_identifier, thumbprint, certificate, private_key, generated_at, expires_at, kind)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// How to reach the database.
#[derive(Clone)]
pub struct PostgresOptions {
    /// `postgres://…` or `host=… user=…` (may hold a password: never shown).
    pub url: secrecy::SecretString,
    /// A PEM file of CA certificates trusted for the server's certificate, besides the
    /// system's.
    pub ca: Option<std::path::PathBuf>,
    /// Most pooled connections.
    pub pool_size: usize,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &"[redacted]")
            .field("ca", &self.ca)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// The PostgreSQL backend.
pub struct PostgresBackend {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    location: String,
    changes: Arc<Changes>,
    reads: AtomicU64,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A database error: unavailable when the connection or the server is the problem (worth
/// retrying), internal otherwise.
fn db_error(e: &tokio_postgres::Error) -> KmsError {
    let message = g2p_postgres::describe_error(e);
    let unavailable = match e.code() {
        // Connection exceptions (08), operator intervention: shutdown, cancelled statements
        // (57), insufficient resources (53), a read-only server after a failover (25006), a
        // serialization failure or deadlock worth retrying (40001, 40P01).
        Some(code) => {
            let code = code.code();
            ["08", "57", "53"].iter().any(|c| code.starts_with(c))
                || ["25006", "40001", "40P01"].contains(&code)
        }
        // Without a server's code: the connection (closed, refused, timed out, an I/O error)
        // is unavailable; a conversion or row-count error is a fault of ours.
        None => {
            e.is_closed()
                || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
                || message.starts_with("error connecting")
                || message.starts_with("timeout")
        }
    };
    if unavailable {
        KmsError::Unavailable(message)
    } else {
        KmsError::Internal(format!("database: {message}"))
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> KmsError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db_error(&e),
        deadpool_postgres::PoolError::Timeout(_) => KmsError::Unavailable(format!(
            "no database connection within {} s",
            CONNECT_TIMEOUT.as_secs()
        )),
        other => KmsError::Unavailable(other.to_string()),
    }
}

fn row_to_key(row: &Row) -> StoredKey {
    StoredKey {
        alias: row.get(0),
        application_id: row.get(1),
        reference_id: row.get(2),
        key_id: row.get(3),
        unique_identifier: row.get(4),
        thumbprint: row.get(5),
        certificate: row.get(6),
        generated_at: row.get(7),
        expires_at: row.get(8),
        kind: row.get(9),
        private_key: None,
    }
}

fn location_of(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "PostgreSQL database {} on {host}:{port}",
        config.get_dbname().unwrap_or("(default)")
    )
}

impl PostgresBackend {
    /// Connects, checks that the database answers, and brings the schema up to date (one
    /// process at a time, under an advisory lock).
    ///
    /// # Errors
    /// [`KmsError::Config`] for a URL or CA file that cannot be used, a database that cannot
    /// be reached, or a schema made by a newer program.
    pub fn connect(options: &PostgresOptions) -> Result<Self, KmsError> {
        use secrecy::ExposeSecret;
        let mut config =
            g2p_postgres::parse_url(options.url.expose_secret()).map_err(KmsError::Config)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // A connection that went quiet (a partition, a failover to another address) is
        // declared dead in about a minute instead of the system's default quarter hour.
        config.keepalives_idle(Duration::from_secs(30));
        config.keepalives_interval(Duration::from_secs(10));
        config.keepalives_retries(3);
        #[cfg(target_os = "linux")]
        config.tcp_user_timeout(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name("g2p-kms");
        }
        let tls = g2p_postgres::tls(options.ca.as_deref()).map_err(KmsError::Config)?;
        let location = location_of(&config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("g2p-kms-postgres")
            .enable_all()
            .build()
            .map_err(|e| KmsError::Internal(format!("database runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                // Each connection answers a query before it is handed out again, so one that
                // a timeout left behind is replaced rather than hanging the next caller.
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| KmsError::Internal(format!("database pool: {e}")))?;
        let changes = Arc::new(Changes::default());
        let backend = PostgresBackend {
            runtime: Some(runtime),
            handle,
            pool,
            location,
            changes: Arc::clone(&changes),
            reads: AtomicU64::new(0),
        };
        let unreachable = |e: KmsError| {
            KmsError::Config(format!(
                "cannot use the key store's {}: {}",
                backend.location,
                e.message()
            ))
        };
        backend.migrate(&config, &tls).map_err(unreachable)?;
        backend.handle.spawn(listen(
            (config, tls),
            backend.pool.clone(),
            changes,
            backend.location.clone(),
        ));
        Ok(backend)
    }

    /// Whether the backend is told of changes now (its listener is connected and its last
    /// heartbeat came back); while not, it serves nothing from its record cache.
    pub fn is_listening(&self) -> bool {
        self.changes.listening.load(Ordering::SeqCst)
    }

    /// Runs `operation` on the backend's runtime and waits for it, at most
    /// [`OPERATION_TIMEOUT`].
    fn run<T, F>(&self, operation: F) -> Result<T, KmsError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, KmsError>> + Send + 'static,
    {
        self.run_within(OPERATION_TIMEOUT, operation)
    }

    /// [`PostgresBackend::run`] with another time limit.
    fn run_within<T, F>(&self, limit: Duration, operation: F) -> Result<T, KmsError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, KmsError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let outcome = match tokio::time::timeout(limit, operation).await {
                Ok(outcome) => outcome,
                Err(_) => Err(KmsError::Unavailable(format!(
                    "the database did not answer within {} s",
                    limit.as_secs()
                ))),
            };
            let _ = tx.send(outcome);
        });
        rx.recv()
            .map_err(|_| KmsError::Internal("the database task ended".into()))?
    }

    /// Applies the migrations on a connection of its own, closed afterwards: the session's
    /// advisory lock (one migrating process at a time) goes with it whatever happens.
    fn migrate(
        &self,
        config: &tokio_postgres::Config,
        tls: &tokio_postgres_rustls::MakeRustlsConnect,
    ) -> Result<(), KmsError> {
        let (config, tls) = (config.clone(), tls.clone());
        self.run_within(MIGRATION_TIMEOUT, async move {
            let (mut client, connection) = config.connect(tls).await.map_err(|e| db_error(&e))?;
            // Ends when `client` is dropped, which closes the session.
            tokio::spawn(connection);
            client
                .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(|e| db_error(&e))?;
            let outcome = migrations::runner()
                .set_migration_table_name(HISTORY_TABLE)
                .run_async(&mut client)
                .await;
            let unlocked = client
                .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
                .await;
            outcome.map_err(|e| {
                let newer = matches!(e.kind(), refinery::error::Kind::MissingVersion(_));
                KmsError::Config(format!(
                    "the schema cannot be brought up to date ({e}){}",
                    if newer {
                        "; it was made by a newer version of g2p-keymanager"
                    } else {
                        ""
                    }
                ))
            })?;
            unlocked.map_err(|e| db_error(&e))?;
            Ok(())
        })
    }
}

impl Backend for PostgresBackend {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn stamp(&self) -> Result<Stamp, KmsError> {
        let generation = self.changes.generation.load(Ordering::SeqCst);
        if self.changes.listening.load(Ordering::SeqCst) {
            // A backstop: whatever happens to notifications, nothing is cached past the
            // minute.
            let minute = time::OffsetDateTime::now_utc().unix_timestamp() / 60;
            Ok((minute, generation))
        } else {
            // Not told of changes: a stamp never seen before, so no cached entry is used.
            Ok((-1, self.changes.generation.fetch_add(1, Ordering::SeqCst)))
        }
    }

    fn select(&self, query: Query<'_>) -> Result<Vec<StoredKey>, KmsError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let pool = self.pool.clone();
        let sql = |filter: &str| format!("SELECT {COLUMNS} FROM g2p_kms_keys WHERE {filter}");
        let (statement, args): (String, Vec<Param>) = match query {
            Query::All => (sql("true ORDER BY generated_at, seq"), vec![]),
            Query::Pair(app, reference) => (
                sql("application_id = $1 AND reference_id = $2 ORDER BY generated_at, seq"),
                vec![app.into(), reference.into()],
            ),
            Query::Thumbprint(t) => (sql("thumbprint = $1"), vec![t.into()]),
            Query::KeyId(k) => (sql("key_id = $1"), vec![k.into()]),
            Query::Current {
                application_id,
                reference_id,
                at,
                margin,
            } => (
                sql(&format!("{CURRENT} ORDER BY generated_at DESC, seq DESC")),
                vec![
                    application_id.into(),
                    reference_id.into(),
                    at.into(),
                    margin.into(),
                ],
            ),
        };
        self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let statement = client
                .prepare_cached(&statement)
                .await
                .map_err(|e| db_error(&e))?;
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                args.iter().map(Param::as_sql).collect();
            let rows = client
                .query(&statement, &refs)
                .await
                .map_err(|e| db_error(&e))?;
            Ok(rows.iter().map(row_to_key).collect())
        })
    }

    fn has_keys(&self, application_id: &str, reference_id: &str) -> Result<bool, KmsError> {
        let pool = self.pool.clone();
        let (app, reference) = (application_id.to_string(), reference_id.to_string());
        self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let row = client
                .query_opt(
                    "SELECT 1 FROM g2p_kms_keys WHERE application_id = $1 AND reference_id = $2 AND kind <> 'partner' LIMIT 1",
                    &[&app, &reference],
                )
                .await
                .map_err(|e| db_error(&e))?;
            Ok(row.is_some())
        })
    }

    fn wrapped_private(&self, alias: &str) -> Result<Option<Vec<u8>>, KmsError> {
        let pool = self.pool.clone();
        let alias = alias.to_string();
        self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let row = client
                .query_opt(
                    "SELECT private_key FROM g2p_kms_keys WHERE alias = $1",
                    &[&alias],
                )
                .await
                .map_err(|e| db_error(&e))?
                .ok_or_else(|| KmsError::Internal(format!("no key {alias} in the store")))?;
            Ok(row.get(0))
        })
    }

    fn store_current(
        &self,
        key: &StoredKey,
        (margin, replace): (i64, bool),
        kek_check: &[u8],
    ) -> Result<Stored, KmsError> {
        let pool = self.pool.clone();
        let key = key.clone();
        let kek_check = kek_check.to_vec();
        let location = self.location.clone();
        let stored = self.run(async move {
            current::store(&pool, &key, (margin, replace), &kek_check, &location).await
        })?;
        self.changes.moved();
        Ok(stored)
    }

    fn set_expiry(&self, alias: &str, expires_at: i64) -> Result<(), KmsError> {
        let pool = self.pool.clone();
        let alias = alias.to_string();
        self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            client
                .execute(
                    "UPDATE g2p_kms_keys SET expires_at = $1 WHERE alias = $2",
                    &[&expires_at, &alias],
                )
                .await
                .map_err(|e| db_error(&e))?;
            Ok(())
        })?;
        self.changes.moved();
        Ok(())
    }

    fn insert_partner(&self, key: &StoredKey) -> Result<bool, KmsError> {
        let pool = self.pool.clone();
        let key = key.clone();
        let stored = self.run(async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(|e| db_error(&e))?;
            let inserted = tx
                .execute(
                    &format!("{INSERT} ON CONFLICT (thumbprint) DO NOTHING"),
                    &insert_args(&key),
                )
                .await
                .map_err(|e| db_error(&e))?;
            tx.commit().await.map_err(|e| db_error(&e))?;
            Ok(inserted == 1)
        })?;
        self.changes.moved();
        Ok(stored)
    }

    fn kek_check(&self, fresh: &[u8]) -> Result<Vec<u8>, KmsError> {
        let pool = self.pool.clone();
        let fresh = fresh.to_vec();
        self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            client
                .execute(
                    "INSERT INTO g2p_kms_meta (name, value) VALUES ('kek_check', $1) ON CONFLICT (name) DO NOTHING",
                    &[&fresh],
                )
                .await
                .map_err(|e| db_error(&e))?;
            let row = client
                .query_one("SELECT value FROM g2p_kms_meta WHERE name = 'kek_check'", &[])
                .await
                .map_err(|e| db_error(&e))?;
            Ok(row.get(0))
        })
    }

    fn realm_key(
        &self,
        name: &str,
        fresh: &dyn Fn() -> Result<Vec<u8>, KmsError>,
    ) -> Result<Vec<u8>, KmsError> {
        crate::keyfile::check_realm_name(name)?;
        let read = |new: Option<Vec<u8>>| {
            let pool = self.pool.clone();
            let name = name.to_string();
            self.run(async move {
                let client = pool.get().await.map_err(pool_error)?;
                if let Some(wrapped) = new {
                    client
                        .execute(
                            "INSERT INTO g2p_kms_realm_keys (name, wrapped) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                            &[&name, &wrapped],
                        )
                        .await
                        .map_err(|e| db_error(&e))?;
                }
                let row = client
                    .query_opt(
                        "SELECT wrapped FROM g2p_kms_realm_keys WHERE name = $1",
                        &[&name],
                    )
                    .await
                    .map_err(|e| db_error(&e))?;
                Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
            })
        };
        if let Some(wrapped) = read(None)? {
            return Ok(wrapped);
        }
        read(Some(fresh()?))?
            .ok_or_else(|| KmsError::Internal(format!("the key of realm {name} vanished")))
    }

    fn export(&self) -> Result<Contents, KmsError> {
        let pool = self.pool.clone();
        self.run(async move { contents::export(&pool).await })
    }

    fn import(&self, contents: &Contents, mode: Import<'_>) -> Result<(), KmsError> {
        let pool = self.pool.clone();
        let contents = contents.clone();
        let location = self.location.clone();
        // The mode borrows; the operation runs elsewhere: carry what it needs.
        let expected = match mode {
            Import::ReplacingExactly(expected) => Some(expected.clone()),
            _ => None,
        };
        let into_empty = matches!(mode, Import::IntoEmpty);
        self.run(async move {
            let mode = match &expected {
                Some(expected) => Import::ReplacingExactly(expected),
                None if into_empty => Import::IntoEmpty,
                None => Import::Replacing,
            };
            contents::import(&pool, &contents, mode, &location).await
        })?;
        self.changes.moved();
        Ok(())
    }

    fn watching(&self) -> bool {
        self.is_listening()
    }

    fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    fn remote(&self) -> bool {
        true
    }

    fn ready(&self) -> Result<(), KmsError> {
        let pool = self.pool.clone();
        self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| db_error(&e))?;
            Ok(())
        })
    }
}

/// An owned query argument.
enum Param {
    Text(String),
    Int(i64),
}

impl Param {
    fn as_sql(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        match self {
            Param::Text(s) => s,
            Param::Int(i) => i,
        }
    }
}

impl From<&str> for Param {
    fn from(s: &str) -> Self {
        Param::Text(s.to_string())
    }
}

impl From<i64> for Param {
    fn from(i: i64) -> Self {
        Param::Int(i)
    }
}

fn insert_args(key: &StoredKey) -> [&(dyn tokio_postgres::types::ToSql + Sync); 11] {
    [
        &key.alias,
        &key.application_id,
        &key.reference_id,
        &key.key_id,
        &key.unique_identifier,
        &key.thumbprint,
        &key.certificate,
        &key.private_key,
        &key.generated_at,
        &key.expires_at,
        &key.kind,
    ]
}

async fn insert(tx: &deadpool_postgres::Transaction<'_>, key: &StoredKey) -> Result<(), KmsError> {
    let statement = tx.prepare_cached(INSERT).await.map_err(|e| db_error(&e))?;
    tx.execute(&statement, &insert_args(key))
        .await
        .map_err(|e| db_error(&e))?;
    Ok(())
}
