//! Backups of the embedded key store: one SQLite file holding the keys as the store keeps
//! them (private keys wrapped under the key-encryption key) and the realms' token signing
//! keys (wrapped too), never the key-encryption key itself nor the default client's secret.
//! Without its key-encryption key a backup opens nothing.
//!
//! A backup is a consistent snapshot even while `kms serve` writes to the store (SQLite's
//! `VACUUM INTO` reads in one transaction) and is written whole or not at all. A restore
//! checks everything before it writes anything: the file is an intact key store of a schema
//! this program knows, the key-encryption key given opens its check value, and every private
//! key in it unwraps. The store file is put in place last, so an interrupted restore leaves
//! no store and can be run again.

use std::path::{Path, PathBuf};

use g2p_encryption::files::{AtomicFile, create_private_once};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use zeroize::Zeroizing;

use crate::error::KmsError;
use crate::kek::{KEK_ENV, KEK_FILE, Kek, STORE_FILE};
use crate::keyfile::{realm_context, realm_of_file};
use crate::store::{Backend, Contents, SCHEMA_VERSION, SqliteBackend};

/// Key material, wiped when dropped.
type Secret = Zeroizing<Vec<u8>>;

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// Key records (keys and trusted or partner certificates).
    pub keys: usize,
    /// Records with a private key.
    pub private_keys: usize,
    /// Realms whose token signing key is in the backup.
    pub realms: Vec<String>,
    /// When the backup was made (Unix seconds); `None` for a plain copy of a store file.
    pub made_at: Option<i64>,
}

/// Where a restore takes the key-encryption key from.
#[derive(Debug, Clone, Copy)]
pub enum KekSource<'a> {
    /// A `kek` file (32 bytes), copied into the data directory.
    File(&'a Path),
    /// A base64 value (from [`KEK_ENV`]); nothing is written.
    Base64(&'a str),
    /// The `kek` file already in the data directory.
    DataDir,
}

fn config(message: String) -> KmsError {
    KmsError::Config(message)
}

/// The store's files in a data directory that a backup must never overwrite.
fn is_store_file(name: &str) -> bool {
    name == KEK_FILE
        || name.starts_with(STORE_FILE)
        || name == crate::keyfile::DEFAULT_CLIENT_SECRET_FILE
        || realm_of_file(name).is_some()
}

/// Refuses an `out` that is one of the data directory's own files.
fn refuse_store_file(out: &Path, dir: &Path) -> Result<(), KmsError> {
    let out_name = out.file_name().map(|n| n.to_string_lossy().into_owned());
    if out_name.as_deref().is_none_or(is_store_file) && same_dir(out, dir) {
        return Err(config(format!(
            "{} is one of the key store's own files; write the backup elsewhere",
            out.display()
        )));
    }
    Ok(())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    let parent = match a.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match (parent.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn utf8(path: &Path) -> Result<&str, KmsError> {
    path.to_str()
        .ok_or_else(|| config(format!("{}: the path is not UTF-8", path.display())))
}

/// Writes a backup of the key store in `dir` to `out` (replaced whole if it exists; a new
/// file is readable by its owner only). Needs no key-encryption key: the keys are copied
/// wrapped.
///
/// # Errors
/// [`KmsError::Config`] when `dir` holds no key store, `out` would overwrite one of the
/// store's own files or cannot be written, or the store is of an unknown schema.
pub fn backup(dir: &Path, out: &Path) -> Result<BackupSummary, KmsError> {
    let store = dir.join(STORE_FILE);
    if !store.is_file() {
        return Err(config(format!(
            "no key store in {} ({STORE_FILE} is missing); check the data directory",
            dir.display()
        )));
    }
    refuse_store_file(out, dir)?;
    let source = Connection::open_with_flags(
        &store,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| config(format!("cannot open {}: {e}", store.display())))?;
    source.busy_timeout(std::time::Duration::from_secs(30))?;
    schema_of(&source, &store)?;
    let (file, copy) = snapshot(source, out)?;
    let entries = std::fs::read_dir(dir)
        .map_err(|e| config(format!("cannot read {}: {e}", dir.display())))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| config(format!("cannot read {}: {e}", dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if realm_of_file(&name).is_some() {
            let content = Zeroizing::new(
                std::fs::read(entry.path())
                    .map_err(|e| config(format!("cannot read {}: {e}", entry.path().display())))?,
            );
            files.push((name, content));
        }
    }
    finish(copy, file, out, &files)
}

/// Completes the copy `copy` of a store as a backup — the realm key `files` (file name,
/// wrapped key) and the time it was made — and puts it in place.
fn finish(
    copy: Connection,
    file: AtomicFile,
    out: &Path,
    files: &[(String, Secret)],
) -> Result<BackupSummary, KmsError> {
    copy.pragma_update(None, "journal_mode", "DELETE")?;
    copy.execute_batch(
        "CREATE TABLE backup_files (name TEXT PRIMARY KEY, content BLOB NOT NULL);",
    )?;
    for (name, content) in files {
        copy.execute(
            "INSERT INTO backup_files (name, content) VALUES (?1, ?2)",
            params![name, content.as_slice()],
        )?;
    }
    let made_at = time::OffsetDateTime::now_utc().unix_timestamp();
    copy.execute(
        "INSERT INTO meta (name, value) VALUES ('backup_made_at', ?1)",
        params![made_at],
    )?;
    let summary = summarize(&copy)?;
    drop(copy);
    file.commit()
        .map_err(|e| config(format!("cannot write {}: {e}", out.display())))?;
    Ok(summary)
}

/// Writes a backup of the store kept in `backend` (a PostgreSQL database shared by replicas,
/// say) to `out` (never one of the files of the data directory `dir`: its `kek`, say), in the same format as [`backup`]: `kms restore` puts it in a data directory,
/// and `kms migrate` takes it from there to a database again. Read in one consistent
/// transaction; the keys stay wrapped.
///
/// # Errors
/// [`KmsError::Config`] when the backend holds no key store or `out` cannot be written;
/// database errors.
pub fn backup_backend(
    backend: &dyn Backend,
    out: &Path,
    dir: &Path,
) -> Result<BackupSummary, KmsError> {
    refuse_store_file(out, dir)?;
    let contents = backend.export()?;
    if contents.kek_check.is_none() {
        return Err(config(format!(
            "no key store in the {}; check the database URL",
            backend.location()
        )));
    }
    let cannot_write =
        |e: &dyn std::fmt::Display| config(format!("cannot write {}: {e}", out.display()));
    let file = AtomicFile::create(out).map_err(|e| cannot_write(&e))?;
    let temp = file.temporary_path().to_path_buf();
    let here = temp.parent().unwrap_or(Path::new("."));
    let copy = SqliteBackend::open_file(here, &temp)?;
    copy.import(
        &Contents {
            realm_keys: Vec::new(),
            ..contents.clone()
        },
        crate::store::Import::Replacing,
    )?;
    drop(copy);
    let files: Vec<(String, Secret)> = contents
        .realm_keys
        .iter()
        .map(|(name, wrapped)| {
            (
                crate::keyfile::realm_file(name),
                Zeroizing::new(wrapped.clone()),
            )
        })
        .collect();
    finish(Connection::open(&temp)?, file, out, &files)
}

/// A consistent copy of the database `source` (one read transaction) started as `target`:
/// the file to commit once the copy is adjusted, and a connection to the copy.
fn snapshot(source: Connection, target: &Path) -> Result<(AtomicFile, Connection), KmsError> {
    let cannot_write =
        |e: &dyn std::fmt::Display| config(format!("cannot write {}: {e}", target.display()));
    let file = AtomicFile::create(target).map_err(|e| cannot_write(&e))?;
    let temp = file.temporary_path().to_path_buf();
    source
        .execute("VACUUM INTO ?1", params![utf8(&temp)?])
        .map_err(|e| cannot_write(&e))?;
    drop(source);
    let copy = Connection::open(&temp)?;
    Ok((file, copy))
}

/// The schema version of a key store, checked against this program's.
fn schema_of(conn: &Connection, path: &Path) -> Result<i64, KmsError> {
    let not_a_store =
        |detail: String| config(format!("{} is not a key store: {detail}", path.display()));
    let version: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| not_a_store(e.to_string()))?;
    match version {
        None => Err(not_a_store("it has no schema version".into())),
        Some(v) if v > SCHEMA_VERSION => Err(config(format!(
            "{} has schema version {v}; this program knows up to {SCHEMA_VERSION}",
            path.display()
        ))),
        Some(v) => Ok(v),
    }
}

fn has_table(conn: &Connection, name: &str) -> Result<bool, KmsError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            params![name],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// The realm key files in a backup: `(file name, wrapped key)`.
fn backup_files(conn: &Connection) -> Result<Vec<(String, Secret)>, KmsError> {
    if !has_table(conn, "backup_files")? {
        return Ok(Vec::new());
    }
    let mut statement = conn.prepare("SELECT name, content FROM backup_files ORDER BY name")?;
    let rows = statement.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            Zeroizing::new(r.get::<_, Vec<u8>>(1)?),
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn summarize(conn: &Connection) -> Result<BackupSummary, KmsError> {
    let (keys, private_keys): (i64, i64) =
        conn.query_row("SELECT count(*), count(private_key) FROM keys", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let made_at: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE name = 'backup_made_at'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let realms = backup_files(conn)?
        .iter()
        .filter_map(|(name, _)| realm_of_file(name).map(String::from))
        .collect();
    Ok(BackupSummary {
        keys: usize::try_from(keys).unwrap_or(0),
        private_keys: usize::try_from(private_keys).unwrap_or(0),
        realms,
        made_at,
    })
}

/// The key a restore uses, and the bytes of a `kek` file to install with the store.
fn resolve_kek(source: KekSource<'_>, dir: &Path) -> Result<(Kek, Option<Secret>), KmsError> {
    match source {
        KekSource::File(path) => {
            let bytes = Zeroizing::new(
                std::fs::read(path)
                    .map_err(|e| config(format!("cannot read {}: {e}", path.display())))?,
            );
            let kek = Kek::from_bytes(&bytes)
                .map_err(|e| config(format!("{}: {}", path.display(), e.message())))?;
            Ok((kek, Some(bytes)))
        }
        KekSource::Base64(text) => Ok((Kek::load(dir, Some(text))?, None)),
        KekSource::DataDir => {
            let path = dir.join(KEK_FILE);
            if !path.is_file() {
                return Err(config(format!(
                    "a restore needs the key-encryption key the backup was made under: give its kek file, or set {KEK_ENV} ({} does not exist)",
                    path.display()
                )));
            }
            Ok((Kek::load(dir, None)?, None))
        }
    }
}

/// Refuses to replace `path` with `bytes` when it holds something else.
fn refuse_other(path: &Path, bytes: &[u8], what: &str) -> Result<(), KmsError> {
    match std::fs::read(path).map(Zeroizing::new) {
        Ok(existing) if existing.as_slice() != bytes => Err(config(format!(
            "{} already holds another {what}; restore into an empty directory",
            path.display()
        ))),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(config(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Restores the backup `input` into the data directory `dir`, which must hold no key store,
/// checking it all first (see the module's documentation).
///
/// # Errors
/// [`KmsError::Config`] naming what is wrong: `input` is not an intact key store backup, the
/// key-encryption key does not open it, a key in it does not unwrap, `dir` already holds a
/// store (or another `kek` or realm key), or a file cannot be written.
pub fn restore(input: &Path, dir: &Path, source: KekSource<'_>) -> Result<BackupSummary, KmsError> {
    let store = dir.join(STORE_FILE);
    for leftover in [STORE_FILE, "keys.db-wal"] {
        if dir.join(leftover).exists() {
            return Err(config(format!(
                "{} already holds a key store ({leftover}); restore into an empty directory, or move the store away first",
                dir.display()
            )));
        }
    }
    let backup = open_backup(input)?;
    let (kek, kek_file) = resolve_kek(source, dir)?;
    check_backup(&backup, input, &kek)?;
    let summary = summarize(&backup)?;
    let files = backup_files(&backup)?;

    if let Some(bytes) = &kek_file {
        refuse_other(&dir.join(KEK_FILE), bytes, "key-encryption key")?;
    }
    for (name, content) in &files {
        refuse_other(&dir.join(name), content, "realm key")?;
    }

    std::fs::create_dir_all(dir)
        .map_err(|e| config(format!("cannot create {}: {e}", dir.display())))?;
    let write_once = |path: &Path, bytes: &[u8]| {
        create_private_once(path, bytes)
            .map(|_| ())
            .map_err(|e| config(format!("cannot write {}: {e}", path.display())))
    };
    if let Some(bytes) = &kek_file {
        write_once(&dir.join(KEK_FILE), bytes)?;
    }
    for (name, content) in &files {
        write_once(&dir.join(name), content)?;
    }
    let (file, copy) = snapshot(backup, &store)?;
    copy.execute_batch(
        "DROP TABLE IF EXISTS backup_files;
         DELETE FROM meta WHERE name LIKE 'backup\\_%' ESCAPE '\\';",
    )?;
    drop(copy);
    file.commit()
        .map_err(|e| config(format!("cannot write {}: {e}", store.display())))?;
    Ok(summary)
}

/// Opens a backup read-only and checks that SQLite finds it intact.
fn open_backup(input: &Path) -> Result<Connection, KmsError> {
    let not_a_backup = |detail: String| {
        config(format!(
            "{} is not a key store backup: {detail}",
            input.display()
        ))
    };
    if !input.is_file() {
        return Err(config(format!("{} does not exist", input.display())));
    }
    let conn = Connection::open_with_flags(
        input,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| not_a_backup(e.to_string()))?;
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| not_a_backup(e.to_string()))?;
    if integrity != "ok" {
        return Err(not_a_backup(format!("damaged ({integrity})")));
    }
    schema_of(&conn, input)?;
    Ok(conn)
}

/// The key opens the backup's check value, every private key and every realm key.
fn check_backup(conn: &Connection, input: &Path, kek: &Kek) -> Result<(), KmsError> {
    let check: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM meta WHERE name = 'kek_check'", [], |r| {
            r.get(0)
        })
        .optional()?;
    if !check.is_some_and(|c| kek.made(&c)) {
        return Err(config(format!(
            "the key-encryption key given does not open {}: the backup was made under another one; give the kek file (or {KEK_ENV}) of the store it was taken from",
            input.display()
        )));
    }
    let mut statement = conn.prepare(
        "SELECT alias, key_id, private_key FROM keys WHERE private_key IS NOT NULL ORDER BY alias",
    )?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let alias: String = row.get(0)?;
        let key_id: String = row.get(1)?;
        let wrapped: Vec<u8> = row.get(2)?;
        if kek.unwrap(alias.as_bytes(), &wrapped).is_none() {
            return Err(config(format!(
                "key {key_id} in {} does not unwrap: the backup is damaged",
                input.display()
            )));
        }
    }
    for (name, content) in backup_files(conn)? {
        let realm = realm_of_file(&name).ok_or_else(|| {
            config(format!(
                "{} holds an unexpected file {name:?}",
                input.display()
            ))
        })?;
        if kek
            .unwrap(realm_context(realm).as_bytes(), &content)
            .is_none()
        {
            return Err(config(format!(
                "the key of realm {realm} in {} does not unwrap: the backup is damaged",
                input.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{KeyStore, StoreOptions};

    /// A store in `dir` with one rotation and a realm key; its key ids.
    fn store(dir: &Path) -> Vec<String> {
        let kek = Kek::load(dir, None).unwrap();
        crate::keyfile::realm_key(dir, &kek, "openg2p").unwrap();
        let store = KeyStore::open(dir, kek, StoreOptions::default()).unwrap();
        store.rotate("REGISTRATION", "ENCRYPT").unwrap();
        ids(&store)
    }

    fn ids(store: &KeyStore) -> Vec<String> {
        let mut ids: Vec<String> = store
            .list()
            .unwrap()
            .into_iter()
            .map(|r| r.key_id)
            .collect();
        ids.sort();
        ids
    }

    fn reopen(dir: &Path) -> KeyStore {
        KeyStore::open(dir, Kek::load(dir, None).unwrap(), StoreOptions::default()).unwrap()
    }

    #[test]
    fn a_restored_store_holds_every_key_and_the_realm_keys() {
        let from = tempfile::tempdir().unwrap();
        let keys = store(from.path());
        let out = from.path().join("backup.db");
        let made = backup(from.path(), &out).unwrap();
        assert_eq!(made.keys, keys.len());
        assert_eq!(made.realms, vec!["openg2p".to_string()]);
        assert!(made.made_at.is_some());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let to = tempfile::tempdir().unwrap();
        let target = to.path().join("restored");
        let kek = from.path().join(KEK_FILE);
        let restored = restore(&out, &target, KekSource::File(&kek)).unwrap();
        assert_eq!(restored, made);
        assert_eq!(
            std::fs::read(target.join(KEK_FILE)).unwrap(),
            std::fs::read(&kek).unwrap()
        );
        assert_eq!(ids(&reopen(&target)), keys);
        let original = Kek::load(from.path(), None).unwrap();
        let copied = Kek::load(&target, None).unwrap();
        assert_eq!(
            *crate::keyfile::realm_key(&target, &copied, "openg2p").unwrap(),
            *crate::keyfile::realm_key(from.path(), &original, "openg2p").unwrap()
        );
        // The store file holds no trace of the backup.
        let conn = Connection::open(target.join(STORE_FILE)).unwrap();
        assert!(!has_table(&conn, "backup_files").unwrap());

        // The key from the environment, and the kek file already in place, do as well.
        let encoded = g2p_encryption::b64::encode_b64(&std::fs::read(&kek).unwrap());
        let by_env = to.path().join("env");
        restore(&out, &by_env, KekSource::Base64(&encoded)).unwrap();
        assert!(!by_env.join(KEK_FILE).exists(), "the kek was written");
        let in_place = to.path().join("in-place");
        std::fs::create_dir(&in_place).unwrap();
        std::fs::copy(&kek, in_place.join(KEK_FILE)).unwrap();
        restore(&out, &in_place, KekSource::DataDir).unwrap();
        assert_eq!(ids(&reopen(&in_place)), keys);
    }

    #[test]
    fn a_restore_with_the_wrong_kek_is_refused_and_writes_nothing() {
        let from = tempfile::tempdir().unwrap();
        store(from.path());
        let out = from.path().join("backup.db");
        backup(from.path(), &out).unwrap();
        let other = tempfile::tempdir().unwrap();
        Kek::load(other.path(), None).unwrap();
        let target = other.path().join("restored");
        let e = restore(&out, &target, KekSource::File(&other.path().join(KEK_FILE)))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("does not open") && e.contains("backup.db"),
            "{e}"
        );
        assert!(!target.exists(), "something was written");
        // No kek at all: told where to give one.
        let e = restore(&out, &target, KekSource::DataDir)
            .unwrap_err()
            .to_string();
        assert!(e.contains(KEK_ENV), "{e}");
    }

    #[test]
    fn a_restore_never_replaces_a_store() {
        let from = tempfile::tempdir().unwrap();
        store(from.path());
        let out = from.path().join("backup.db");
        backup(from.path(), &out).unwrap();
        let e = restore(&out, from.path(), KekSource::DataDir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("already holds a key store"), "{e}");
        // A directory with another kek (or realm key) is refused too.
        let other = tempfile::tempdir().unwrap();
        Kek::load(other.path(), None).unwrap();
        let kek = from.path().join(KEK_FILE);
        let e = restore(&out, other.path(), KekSource::File(&kek))
            .unwrap_err()
            .to_string();
        assert!(e.contains("another key-encryption key"), "{e}");
        assert!(!other.path().join(STORE_FILE).exists());
    }

    #[test]
    fn damaged_or_foreign_backups_are_refused() {
        let from = tempfile::tempdir().unwrap();
        store(from.path());
        let kek = from.path().join(KEK_FILE);
        let out = from.path().join("backup.db");
        backup(from.path(), &out).unwrap();
        let target = tempfile::tempdir().unwrap();
        let restore_from = |path: &Path| {
            restore(path, &target.path().join("r"), KekSource::File(&kek))
                .unwrap_err()
                .to_string()
        };

        let text = from.path().join("notes.txt");
        std::fs::write(
            &text,
            "not a database at all, but long enough to look like one ".repeat(20),
        )
        .unwrap();
        assert!(restore_from(&text).contains("is not a key store backup"));
        let bytes = std::fs::read(&out).unwrap();
        let truncated = from.path().join("truncated.db");
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let e = restore_from(&truncated);
        assert!(e.contains("not a key store"), "{e}");
        let other = from.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x);")
            .unwrap();
        assert!(restore_from(&other).contains("is not a key store"));
        assert!(restore_from(&from.path().join("missing.db")).contains("does not exist"));

        // A private key whose bytes changed.
        let tampered = from.path().join("tampered.db");
        std::fs::copy(&out, &tampered).unwrap();
        Connection::open(&tampered)
            .unwrap()
            .execute_batch(
                "UPDATE keys SET private_key = zeroblob(64) WHERE alias =
                 (SELECT alias FROM keys WHERE private_key IS NOT NULL LIMIT 1);",
            )
            .unwrap();
        let e = restore_from(&tampered);
        assert!(e.contains("does not unwrap"), "{e}");
        assert!(!target.path().join("r").exists());
    }

    #[test]
    fn a_backup_needs_a_store_and_never_overwrites_it() {
        let empty = tempfile::tempdir().unwrap();
        let e = backup(empty.path(), &empty.path().join("b.db"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no key store") && e.contains(&empty.path().display().to_string()));
        assert!(!empty.path().join(STORE_FILE).exists(), "a store was made");
        let from = tempfile::tempdir().unwrap();
        let keys = store(from.path());
        for name in [STORE_FILE, "keys.db-wal", KEK_FILE, "realm-openg2p.key"] {
            let e = backup(from.path(), &from.path().join(name))
                .unwrap_err()
                .to_string();
            assert!(e.contains("own files"), "{name}: {e}");
        }
        assert_eq!(ids(&reopen(from.path())), keys);
    }
}
