//! Storing a pair's current key: one transaction holding the pair's advisory lock.

use deadpool_postgres::Pool;

use super::{COLUMNS, LIVE, db_error, insert, pool_error, row_to_key};
use crate::error::KmsError;
use crate::store::backend::{Stored, StoredKey, kek_changed};

/// [`crate::store::Backend::store_current`] for PostgreSQL: under
/// `pg_advisory_xact_lock` on the pair, the store's KEK check value compared with
/// `kek_check`, then the live keys ended (`replace`) or the newest one returned, then `key`
/// inserted.
pub(super) async fn store(
    pool: &Pool,
    key: &StoredKey,
    (margin, replace): (i64, bool),
    kek_check: &[u8],
    location: &str,
) -> Result<Stored, KmsError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(|e| db_error(&e))?;
    let pair = format!("g2p-kms:{}\u{1f}{}", key.application_id, key.reference_id);
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&pair],
    )
    .await
    .map_err(|e| db_error(&e))?;
    let stored = tx
        .query_opt(
            "SELECT value FROM g2p_kms_meta WHERE name = 'kek_check'",
            &[],
        )
        .await
        .map_err(|e| db_error(&e))?
        .map(|row| row.get::<_, Vec<u8>>(0));
    if stored.as_deref() != Some(kek_check) {
        return Err(kek_changed(location));
    }
    let args: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [
        &key.application_id,
        &key.reference_id,
        &key.generated_at,
        &margin,
    ];
    if replace {
        tx.execute(
            &format!("UPDATE g2p_kms_keys SET expires_at = $3 - 60 WHERE {LIVE}"),
            &args,
        )
        .await
        .map_err(|e| db_error(&e))?;
    } else {
        let existing = tx
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM g2p_kms_keys WHERE {LIVE} ORDER BY generated_at DESC, seq DESC LIMIT 1"
                ),
                &args,
            )
            .await
            .map_err(|e| db_error(&e))?;
        if let Some(existing) = existing {
            return Ok(Stored::Theirs(Box::new(row_to_key(&existing))));
        }
    }
    insert(&tx, key).await?;
    tx.commit().await.map_err(|e| db_error(&e))?;
    Ok(Stored::Ours)
}
