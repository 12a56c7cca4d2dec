//! The SQLite backend: `keys.db` in a data directory (WAL, `synchronous=FULL`), shared by the
//! processes that open the same directory; the realms' signing keys in files beside it.
//! Current-key uniqueness rests on SQLite's write lock (`BEGIN IMMEDIATE`); the change stamp
//! is `PRAGMA data_version` (another connection wrote) with this connection's change count.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::backend::{
    Backend, Contents, Import, Query, Stamp, Stored, StoredKey, changed, kek_changed, same_contents,
};
use crate::error::KmsError;

/// The versioned schema, `migrations/sqlite` of this crate.
mod schema {
    refinery::embed_migrations!("migrations/sqlite");
}
use schema::migrations;

/// Columns read for a record, in [`row_to_key`]'s order.
const COLUMNS: &str = "alias, application_id, reference_id, key_id, unique_identifier, thumbprint, certificate, generated_at, expires_at, kind";

/// How long a writer waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite backend.
pub struct SqliteBackend {
    path: PathBuf,
    dir: PathBuf,
    conn: Mutex<Connection>,
    reads: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn row_to_key(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredKey> {
    Ok(StoredKey {
        alias: row.get(0)?,
        application_id: row.get(1)?,
        reference_id: row.get(2)?,
        key_id: row.get(3)?,
        unique_identifier: row.get(4)?,
        thumbprint: row.get(5)?,
        certificate: row.get(6)?,
        generated_at: row.get(7)?,
        expires_at: row.get(8)?,
        kind: row.get(9)?,
        private_key: None,
    })
}

/// The condition of the pair's current keys (`?1` app, `?2` ref, `?3` at, `?4` margin).
const CURRENT: &str = "application_id = ?1 AND reference_id = ?2 AND kind != 'partner' AND generated_at <= ?3 AND ?3 < expires_at - ?4";
/// The pair's keys not yet ended at `?3`, whenever they were made: what the write lock's
/// holder checks and a rotation ends (a key another process made a moment later counts).
const LIVE: &str =
    "application_id = ?1 AND reference_id = ?2 AND kind != 'partner' AND ?3 < expires_at - ?4";

impl SqliteBackend {
    /// Opens (or creates) `dir/keys.db` and brings its schema up to date.
    ///
    /// # Errors
    /// [`KmsError::Config`] when the directory or file cannot be used, or the store was
    /// made by a newer program (a migration this one does not know).
    pub fn open(dir: &Path) -> Result<Self, KmsError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            KmsError::Config(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        Self::open_file(dir, &dir.join(crate::kek::STORE_FILE))
    }

    /// Opens (or creates) the store file `path`; realm keys are kept in `dir`.
    pub(crate) fn open_file(dir: &Path, path: &Path) -> Result<Self, KmsError> {
        let mut conn = Connection::open(path)
            .map_err(|e| KmsError::Config(format!("cannot open {}: {e}", path.display())))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        migrate(&mut conn, path)?;
        Ok(SqliteBackend {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
            conn: Mutex::new(conn),
            reads: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store's database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Applies the migrations this program knows. Processes opening a new store at once race to
/// apply them; the loser's transaction fails and it looks again.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), KmsError> {
    let mut attempt = 0;
    loop {
        match migrations::runner()
            .set_migration_table_name(super::postgres::HISTORY_TABLE)
            .run(conn)
        {
            Ok(_) => return Ok(()),
            Err(e) => {
                let message = e.to_string();
                let missing = matches!(e.kind(), refinery::error::Kind::MissingVersion(_));
                if missing || attempt >= 4 {
                    return Err(KmsError::Config(format!(
                        "{} cannot be brought up to this program's schema ({message}){}",
                        path.display(),
                        if missing {
                            "; it was made by a newer version of g2p-keymanager"
                        } else {
                            ""
                        }
                    )));
                }
                attempt += 1;
                std::thread::sleep(Duration::from_millis(50 * attempt));
            }
        }
    }
}

impl Backend for SqliteBackend {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn stamp(&self) -> Result<Stamp, KmsError> {
        let conn = self.conn();
        let version: i64 = conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        Ok((version, conn.total_changes()))
    }

    fn select(&self, query: Query<'_>) -> Result<Vec<StoredKey>, KmsError> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let conn = self.conn();
        let sql = |filter: &str| format!("SELECT {COLUMNS} FROM keys WHERE {filter}");
        let rows = match query {
            Query::All => conn
                .prepare_cached(&sql("1 = 1 ORDER BY generated_at, rowid"))?
                .query_map([], row_to_key)?
                .collect::<Result<Vec<_>, _>>()?,
            Query::Pair(app, reference) => conn
                .prepare_cached(&sql(
                    "application_id = ?1 AND reference_id = ?2 ORDER BY generated_at, rowid",
                ))?
                .query_map(params![app, reference], row_to_key)?
                .collect::<Result<Vec<_>, _>>()?,
            Query::Thumbprint(thumbprint) => conn
                .prepare_cached(&sql("thumbprint = ?1"))?
                .query_map(params![thumbprint], row_to_key)?
                .collect::<Result<Vec<_>, _>>()?,
            Query::KeyId(key_id) => conn
                .prepare_cached(&sql("key_id = ?1"))?
                .query_map(params![key_id], row_to_key)?
                .collect::<Result<Vec<_>, _>>()?,
            Query::Current {
                application_id,
                reference_id,
                at,
                margin,
            } => conn
                .prepare_cached(&sql(&format!(
                    "{CURRENT} ORDER BY generated_at DESC, rowid DESC"
                )))?
                .query_map(
                    params![application_id, reference_id, at, margin],
                    row_to_key,
                )?
                .collect::<Result<Vec<_>, _>>()?,
        };
        Ok(rows)
    }

    fn has_keys(&self, application_id: &str, reference_id: &str) -> Result<bool, KmsError> {
        let found: Option<i64> = self
            .conn()
            .query_row(
                "SELECT 1 FROM keys WHERE application_id = ?1 AND reference_id = ?2 AND kind != 'partner' LIMIT 1",
                params![application_id, reference_id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(found.is_some())
    }

    fn wrapped_private(&self, alias: &str) -> Result<Option<Vec<u8>>, KmsError> {
        let wrapped: Option<Option<Vec<u8>>> = self
            .conn()
            .query_row(
                "SELECT private_key FROM keys WHERE alias = ?1",
                params![alias],
                |r| r.get(0),
            )
            .optional()?;
        wrapped.ok_or_else(|| KmsError::Internal(format!("no key {alias} in the store")))
    }

    fn store_current(
        &self,
        key: &StoredKey,
        (margin, replace): (i64, bool),
        kek_check: &[u8],
    ) -> Result<Stored, KmsError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let stored: Option<Vec<u8>> = tx
            .query_row("SELECT value FROM meta WHERE name = 'kek_check'", [], |r| {
                r.get(0)
            })
            .optional()?;
        if stored.as_deref() != Some(kek_check) {
            return Err(kek_changed(&self.location()));
        }
        let at = key.generated_at;
        let pair = params![key.application_id, key.reference_id, at, margin];
        if replace {
            tx.execute(
                &format!("UPDATE keys SET expires_at = ?3 - 60 WHERE {LIVE}"),
                pair,
            )?;
        } else {
            let existing = tx
                .query_row(
                    &format!(
                        "SELECT {COLUMNS} FROM keys WHERE {LIVE} ORDER BY generated_at DESC, rowid DESC LIMIT 1"
                    ),
                    pair,
                    row_to_key,
                )
                .optional()?;
            if let Some(existing) = existing {
                return Ok(Stored::Theirs(Box::new(existing)));
            }
        }
        insert(&tx, key)?;
        tx.commit()?;
        Ok(Stored::Ours)
    }

    fn set_expiry(&self, alias: &str, expires_at: i64) -> Result<(), KmsError> {
        self.conn().execute(
            "UPDATE keys SET expires_at = ?1 WHERE alias = ?2",
            params![expires_at, alias],
        )?;
        Ok(())
    }

    fn insert_partner(&self, key: &StoredKey) -> Result<bool, KmsError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM keys WHERE thumbprint = ?1",
                params![key.thumbprint],
                |r| r.get(0),
            )
            .optional()?;
        if existing.is_some() {
            return Ok(false);
        }
        insert(&tx, key)?;
        tx.commit()?;
        Ok(true)
    }

    fn kek_check(&self, fresh: &[u8]) -> Result<Vec<u8>, KmsError> {
        let conn = self.conn();
        conn.execute(
            "INSERT OR IGNORE INTO meta (name, value) VALUES ('kek_check', ?1)",
            params![fresh],
        )?;
        Ok(
            conn.query_row("SELECT value FROM meta WHERE name = 'kek_check'", [], |r| {
                r.get(0)
            })?,
        )
    }

    fn realm_key(
        &self,
        name: &str,
        fresh: &dyn Fn() -> Result<Vec<u8>, KmsError>,
    ) -> Result<Vec<u8>, KmsError> {
        crate::keyfile::realm_key_file(&self.dir, name, fresh)
    }

    fn export(&self) -> Result<Contents, KmsError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let contents = read_all(&tx, &self.dir)?;
        drop(tx);
        Ok(contents)
    }

    fn import(&self, contents: &Contents, mode: Import<'_>) -> Result<(), KmsError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let realm_files = crate::keyfile::realm_key_files(&self.dir)?.len();
        if let Import::ReplacingExactly(expected) = mode
            && !same_contents(&read_all(&tx, &self.dir)?, expected)
        {
            return Err(changed(&self.location()));
        }
        let replace = !matches!(mode, Import::IntoEmpty);
        if !replace {
            let (keys, checks): (i64, i64) = tx.query_row(
                "SELECT (SELECT count(*) FROM keys), (SELECT count(*) FROM meta WHERE name = 'kek_check')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let realms = i64::try_from(realm_files).unwrap_or(i64::MAX);
            if keys + checks + realms > 0 {
                return Err(super::backend::occupied(&self.location(), keys, realms));
            }
        }
        tx.execute_batch("DELETE FROM keys; DELETE FROM meta WHERE name = 'kek_check';")?;
        for key in &contents.keys {
            insert(&tx, key)?;
        }
        if let Some(check) = &contents.kek_check {
            tx.execute(
                "INSERT INTO meta (name, value) VALUES ('kek_check', ?1)",
                params![check],
            )?;
        }
        tx.commit()?;
        drop(conn);
        for (name, wrapped) in &contents.realm_keys {
            if replace {
                crate::keyfile::check_realm_name(name)?;
                let path = self.dir.join(crate::keyfile::realm_file(name));
                g2p_encryption::files::write_atomically(&path, wrapped).map_err(|e| {
                    KmsError::Config(format!("cannot write {}: {e}", path.display()))
                })?;
                continue;
            }
            let kept = crate::keyfile::realm_key_file(&self.dir, name, &|| Ok(wrapped.clone()))?;
            if kept != *wrapped {
                return Err(KmsError::Config(format!(
                    "{} already holds another signing key of realm {name}",
                    self.dir.display()
                )));
            }
        }
        Ok(())
    }

    fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn ready(&self) -> Result<(), KmsError> {
        self.conn()
            .query_row("SELECT count(*) FROM meta", [], |r| r.get::<_, i64>(0))?;
        Ok(())
    }
}

/// Everything the store holds, read in `tx`.
fn read_all(tx: &rusqlite::Transaction<'_>, dir: &Path) -> Result<Contents, KmsError> {
    let keys = tx
        .prepare(&format!(
            "SELECT {COLUMNS}, private_key FROM keys ORDER BY generated_at, rowid"
        ))?
        .query_map([], |row| {
            let mut key = row_to_key(row)?;
            key.private_key = row.get(10)?;
            Ok(key)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let kek_check = tx
        .query_row("SELECT value FROM meta WHERE name = 'kek_check'", [], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(Contents {
        keys,
        realm_keys: crate::keyfile::realm_key_files(dir)?,
        kek_check,
    })
}

fn insert(tx: &rusqlite::Transaction<'_>, key: &StoredKey) -> Result<(), KmsError> {
    tx.prepare_cached(
        "INSERT INTO keys (alias, application_id, reference_id, key_id, unique_identifier, thumbprint, certificate, private_key, generated_at, expires_at, kind)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        key.alias,
        key.application_id,
        key.reference_id,
        key.key_id,
        key.unique_identifier,
        key.thumbprint,
        key.certificate,
        key.private_key,
        key.generated_at,
        key.expires_at,
        key.kind
    ])?;
    Ok(())
}
