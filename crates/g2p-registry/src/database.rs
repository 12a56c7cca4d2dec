//! A live registry in PostgreSQL (OpenG2P's `res_partner` by default): the same transforms as
//! for files, over rows taken in id order, a batch at a time. Each batch is one transaction
//! that locks its rows (`FOR UPDATE`, and `SKIP LOCKED` where rows leave the selection once
//! done, so a running Odoo is never blocked for long and its concurrent writes are never
//! overwritten), and commits whole or not at all. Re-running resumes where a run stopped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use g2p_encryption::ErrorKind;
use g2p_encryption::b64;
use serde_json::Value;
use tokio_postgres::Client;

use crate::envelope::{ENCRYPTED_VAL, IS_ENCRYPTED, IS_REGISTRANT, flag, stored_ciphertext};
use crate::pipeline::{RecordError, Report, Summary, Transform};
use crate::record::Record;

/// Longest wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// What a run does to the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Seal rows not yet encrypted (registrants only, unless `registrants_only` is false)
    /// that have something to seal.
    Encrypt {
        /// Only rows with `is_registrant`.
        registrants_only: bool,
    },
    /// Open encrypted rows.
    Decrypt,
    /// Re-seal encrypted rows under an older key.
    Rewrap,
    /// Look at encrypted and plain rows, change nothing.
    Inspect,
}

/// Which table, and how a run goes.
#[derive(Debug, Clone)]
pub struct DatabaseOptions {
    /// The table, optionally schema-qualified (`public.res_partner`).
    pub table: String,
    /// Its id column (an integer).
    pub id_column: String,
    /// The personal fields (columns), in order.
    pub fields: Vec<String>,
    /// Whether the fields were named by the user (each must be a column) or are the default
    /// list (at least one must).
    pub named: bool,
    /// Rows per transaction.
    pub batch_size: usize,
    /// Rows transformed at once within a batch.
    pub concurrency: usize,
}

/// Why a database run stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatabaseError {
    /// The database could not be reached.
    #[error("cannot connect to the registry database: {0}")]
    Connect(String),
    /// The table is not what a registry table must be; nothing was changed.
    #[error("{0}; nothing was changed")]
    Schema(String),
    /// A row failed; its batch was rolled back.
    #[error("id {id}, {error}; its batch of rows was rolled back, the batches before it are kept")]
    Record {
        /// The row's id.
        id: i64,
        /// Why.
        error: RecordError,
    },
    /// A query failed; the batch it was in was rolled back.
    #[error("the registry database: {0}")]
    Query(String),
    /// Stopped on request after the batch in hand.
    #[error("interrupted after {} rows ({} changed); the batches done are kept, run again to go on", .0.records, .0.changed)]
    Interrupted(Summary),
}

impl DatabaseError {
    /// What kind of failure stopped the run.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DatabaseError::Connect(_) | DatabaseError::Query(_) => ErrorKind::Unavailable,
            DatabaseError::Schema(_) => ErrorKind::Configuration,
            DatabaseError::Record { error, .. } => error.kind,
            DatabaseError::Interrupted(_) => ErrorKind::Internal,
        }
    }
}

fn query_error(e: tokio_postgres::Error) -> DatabaseError {
    DatabaseError::Query(describe_error(&e))
}

fn describe_error(e: &tokio_postgres::Error) -> String {
    g2p_postgres::describe_error(e)
}

/// Connects to `url` (`postgres://…` or `host=… user=…`). TLS as the URL's `sslmode` says
/// (`disable`; `prefer`, the default: TLS when the server offers it; `require`); a server's
/// certificate is always verified, against the system's roots and `ca`.
///
/// # Errors
/// [`DatabaseError::Connect`]; the message never repeats the URL (it may hold a password).
pub async fn connect(url: &str, ca: Option<&std::path::Path>) -> Result<Client, DatabaseError> {
    let config = g2p_postgres::parse_url(url).map_err(DatabaseError::Connect)?;
    let connecting = config.connect(g2p_postgres::tls(ca).map_err(DatabaseError::Connect)?);
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| {
            DatabaseError::Connect(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))
        })?
        .map_err(|e| DatabaseError::Connect(describe_error(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "registry database connection ended");
        }
    });
    Ok(client)
}

/// `"name"`, quoted for SQL; `schema.table` quoted part by part.
fn quote(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// The table as checked: its quoted names and the field columns it has.
#[derive(Debug)]
struct Table {
    table: String,
    id: String,
    fields: Vec<String>,
    has_registrant: bool,
}

async fn describe(
    client: &Client,
    options: &DatabaseOptions,
    mode: Mode,
) -> Result<Table, DatabaseError> {
    let (schema, name) = match options.table.rsplit_once('.') {
        Some((schema, name)) => (Some(schema.to_string()), name.to_string()),
        None => (None, options.table.clone()),
    };
    let rows = client
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = COALESCE($1, current_schema()) AND table_name = $2",
            &[&schema, &name],
        )
        .await
        .map_err(query_error)?;
    if rows.is_empty() {
        return Err(DatabaseError::Schema(format!(
            "there is no table {:?} (or it has no columns this user can see)",
            options.table
        )));
    }
    let columns: HashMap<String, String> = rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect();
    let missing = |column: &str| {
        DatabaseError::Schema(format!(
            "table {:?} has no column {column:?}",
            options.table
        ))
    };
    let mut required = vec![options.id_column.as_str(), ENCRYPTED_VAL, IS_ENCRYPTED];
    if matches!(
        mode,
        Mode::Encrypt {
            registrants_only: true
        }
    ) {
        required.push(IS_REGISTRANT);
    }
    for column in required {
        if !columns.contains_key(column) {
            return Err(missing(column));
        }
    }
    if columns.get(ENCRYPTED_VAL).map(String::as_str) != Some("bytea") {
        return Err(DatabaseError::Schema(format!(
            "column {ENCRYPTED_VAL:?} of {:?} is not bytea",
            options.table
        )));
    }
    let fields: Vec<String> = options
        .fields
        .iter()
        .filter(|f| columns.contains_key(f.as_str()))
        .cloned()
        .collect();
    if options.named {
        if let Some(absent) = options
            .fields
            .iter()
            .find(|f| !columns.contains_key(f.as_str()))
        {
            return Err(missing(absent));
        }
    } else if fields.is_empty() {
        return Err(DatabaseError::Schema(format!(
            "table {:?} has none of the fields {}",
            options.table,
            options.fields.join(", ")
        )));
    }
    Ok(Table {
        table: quote(&options.table),
        id: quote(&options.id_column),
        fields,
        has_registrant: columns.contains_key(IS_REGISTRANT),
    })
}

/// The SQL a run uses, built once.
struct Statements {
    select: String,
    update: String,
    remaining: Option<String>,
}

impl Statements {
    fn new(table: &Table, mode: Mode) -> Self {
        let fields: Vec<String> = table.fields.iter().map(|f| quote(f)).collect();
        let id = &table.id;
        let some_field = fields
            .iter()
            .map(|f| format!("COALESCE({f}::text, '') <> ''"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let (predicate, lock) = match mode {
            Mode::Encrypt { registrants_only } => (
                format!(
                    "NOT COALESCE(is_encrypted, false){} AND ({some_field})",
                    if registrants_only {
                        " AND COALESCE(is_registrant, false)"
                    } else {
                        ""
                    }
                ),
                "FOR UPDATE SKIP LOCKED",
            ),
            Mode::Decrypt => (
                "COALESCE(is_encrypted, false)".into(),
                "FOR UPDATE SKIP LOCKED",
            ),
            Mode::Rewrap => ("COALESCE(is_encrypted, false)".into(), "FOR UPDATE"),
            Mode::Inspect => ("true".into(), ""),
        };
        let select = format!(
            "SELECT {id}::bigint, COALESCE(is_registrant, false), COALESCE(is_encrypted, false), encrypted_val{} \
             FROM {table} WHERE {id} > $1::bigint AND ({predicate}) ORDER BY {id} LIMIT $2::bigint {lock}",
            fields
                .iter()
                .map(|f| format!(", {f}::text"))
                .collect::<String>(),
            table = table.table,
        );
        let select = if table.has_registrant {
            select
        } else {
            // A table without is_registrant (accepted with --all-records, and for reading).
            select.replace("COALESCE(is_registrant, false)", "false")
        };
        let names: String = (0..fields.len()).map(|i| format!(", f{i}")).collect();
        let types: String = (0..fields.len())
            .map(|i| format!(", ${}::text[]", i + 4))
            .collect();
        let sets: String = fields
            .iter()
            .enumerate()
            .map(|(i, f)| format!(", {f} = v.f{i}"))
            .collect();
        let update = format!(
            "UPDATE {table} AS t SET encrypted_val = v.ev, is_encrypted = v.enc{sets} \
             FROM unnest($1::bigint[], $2::bytea[], $3::bool[]{types}) AS v(id, ev, enc{names}) \
             WHERE t.{id} = v.id",
            table = table.table,
        );
        let remaining = matches!(mode, Mode::Encrypt { .. } | Mode::Decrypt)
            .then(|| format!("SELECT count(*) FROM {} WHERE {predicate}", table.table));
        Statements {
            select,
            update,
            remaining,
        }
    }
}

fn row_record(row: &tokio_postgres::Row, fields: &[String]) -> (i64, Record) {
    let id: i64 = row.get(0);
    let mut record = Record::new();
    record.insert("id".into(), Value::from(id));
    record.insert(IS_REGISTRANT.into(), Value::Bool(row.get(1)));
    record.insert(IS_ENCRYPTED.into(), Value::Bool(row.get(2)));
    let sealed: Option<Vec<u8>> = row.get(3);
    record.insert(
        ENCRYPTED_VAL.into(),
        sealed.map_or(Value::Null, |bytes| Value::String(b64::encode_b64(&bytes))),
    );
    for (i, field) in fields.iter().enumerate() {
        let value: Option<String> = row.get(4 + i);
        record.insert(field.clone(), value.map_or(Value::Null, Value::String));
    }
    (id, record)
}

/// The columns of one changed row, ready for the update.
#[derive(Default)]
struct Changes {
    ids: Vec<i64>,
    sealed: Vec<Option<Vec<u8>>>,
    encrypted: Vec<bool>,
    fields: Vec<Vec<Option<String>>>,
}

impl Changes {
    fn new(fields: usize) -> Self {
        Changes {
            fields: vec![Vec::new(); fields],
            ..Changes::default()
        }
    }

    fn push(&mut self, id: i64, record: &Record, fields: &[String]) -> Result<(), DatabaseError> {
        let failed = |error: RecordError| DatabaseError::Record { id, error };
        if let Some(extra) = record.keys().find(|k| {
            !fields.contains(k)
                && !["id", IS_REGISTRANT, IS_ENCRYPTED, ENCRYPTED_VAL].contains(&k.as_str())
        }) {
            return Err(failed(RecordError::in_field(
                extra,
                ErrorKind::InvalidInput,
                "is not one of the fields the table is processed with (see --fields)",
            )));
        }
        self.ids.push(id);
        self.sealed.push(stored_ciphertext(record).map_err(failed)?);
        self.encrypted.push(flag(record, IS_ENCRYPTED));
        for (column, name) in self.fields.iter_mut().zip(fields) {
            column.push(match record.get(name) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
            });
        }
        Ok(())
    }
}

struct Prepared {
    select: tokio_postgres::Statement,
    update: tokio_postgres::Statement,
}

struct Work<'a> {
    transform: &'a Arc<dyn Transform>,
    fields: &'a [String],
    concurrency: usize,
}

/// One transaction: the next `batch` rows after id `after`, transformed and written back.
/// Returns the last id taken; `None` when no row is left.
async fn run_batch(
    client: &mut Client,
    prepared: &Prepared,
    (after, batch): (i64, i64),
    work: &Work<'_>,
    summary: &mut Summary,
) -> Result<Option<i64>, DatabaseError> {
    let transaction = client.transaction().await.map_err(query_error)?;
    // A row another transaction holds for longer than this fails the batch (rolled back)
    // rather than hanging the run; rewrap is the one mode that waits for locks at all.
    transaction
        .batch_execute("SET LOCAL lock_timeout = '10s'")
        .await
        .map_err(query_error)?;
    let rows = transaction
        .query(&prepared.select, &[&after, &batch])
        .await
        .map_err(query_error)?;
    let Some(end) = rows.last().map(|r| r.get::<_, i64>(0)) else {
        return Ok(None);
    };
    let (ids, records): (Vec<i64>, Vec<Record>) =
        rows.iter().map(|row| row_record(row, work.fields)).unzip();
    let results = crate::pipeline::apply_all(work.transform, records, work.concurrency).await;
    let mut changes = Changes::new(work.fields.len());
    for (id, result) in ids.into_iter().zip(results) {
        let done = result.map_err(|error| DatabaseError::Record { id, error })?;
        summary.records += 1;
        if done.values > 0 {
            summary.changed += 1;
            summary.values += done.values;
            changes.push(id, &done.record, work.fields)?;
        } else {
            summary.skipped += 1;
        }
    }
    if !changes.ids.is_empty() {
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            vec![&changes.ids, &changes.sealed, &changes.encrypted];
        params.extend(
            changes
                .fields
                .iter()
                .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync)),
        );
        transaction
            .execute(&prepared.update, &params)
            .await
            .map_err(query_error)?;
    }
    transaction.commit().await.map_err(query_error)?;
    Ok(Some(end))
}

/// Runs `transform` over the rows of the table `mode` selects, `options.batch_size` rows per
/// transaction. `stop` ends the run after the batch in hand. `report` hears the counts after
/// each batch.
///
/// # Errors
/// [`DatabaseError`]: the table checked before anything changes, a failing row named by id
/// (its batch rolled back), [`DatabaseError::Interrupted`] when stopped.
pub async fn run(
    client: &mut Client,
    options: &DatabaseOptions,
    mode: Mode,
    transform: &Arc<dyn Transform>,
    stop: &AtomicBool,
    report: &dyn Report,
) -> Result<Summary, DatabaseError> {
    let table = describe(client, options, mode).await?;
    let statements = Statements::new(&table, mode);
    let prepared = Prepared {
        select: client
            .prepare(&statements.select)
            .await
            .map_err(query_error)?,
        update: client
            .prepare(&statements.update)
            .await
            .map_err(query_error)?,
    };
    let work = Work {
        transform,
        fields: &table.fields,
        concurrency: options.concurrency,
    };
    let started = Instant::now();
    let mut summary = Summary::default();
    let batch = i64::try_from(options.batch_size.max(1)).unwrap_or(i64::MAX);
    loop {
        // One pass over the table in id order; rows another transaction held are picked up by
        // the next pass, as long as passes make progress.
        let changed_before = summary.changed;
        let mut last = i64::MIN;
        loop {
            if stop.load(Ordering::SeqCst) {
                summary.elapsed = started.elapsed();
                return Err(DatabaseError::Interrupted(summary));
            }
            let Some(end) =
                run_batch(client, &prepared, (last, batch), &work, &mut summary).await?
            else {
                break;
            };
            last = end;
            summary.elapsed = started.elapsed();
            report.progress(&summary);
        }
        let Some(remaining) = &statements.remaining else {
            break;
        };
        let left: i64 = client
            .query_one(remaining, &[])
            .await
            .map_err(query_error)?
            .get(0);
        if left == 0 || summary.changed == changed_before {
            if left > 0 {
                tracing::warn!(
                    rows = left,
                    "rows held by other transactions were left; run again to finish them"
                );
            }
            break;
        }
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_part_by_part() {
        assert_eq!(quote("res_partner"), "\"res_partner\"");
        assert_eq!(quote("public.res_partner"), "\"public\".\"res_partner\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }
}
