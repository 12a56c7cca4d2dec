//! Everything a PostgreSQL store holds, read in one consistent transaction and written in
//! one: what migrations, backups and a change of key-encryption key move.

use deadpool_postgres::{Pool, Transaction};

use super::{COLUMNS, db_error, insert, pool_error, row_to_key};
use crate::error::KmsError;
use crate::store::backend::{Contents, Import, StoredKey, changed, same_contents};

/// Every key, realm key and the KEK's check value, in one repeatable-read transaction.
pub(super) async fn export(pool: &Pool) -> Result<Contents, KmsError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| db_error(&e))?;
    let contents = read_all(&tx).await?;
    tx.commit().await.map_err(|e| db_error(&e))?;
    Ok(contents)
}

/// Everything the store holds, read in `tx`.
async fn read_all(tx: &Transaction<'_>) -> Result<Contents, KmsError> {
    let keys = tx
        .query(
            &format!("SELECT {COLUMNS}, private_key FROM g2p_kms_keys ORDER BY generated_at, seq"),
            &[],
        )
        .await
        .map_err(|e| db_error(&e))?
        .iter()
        .map(|row| StoredKey {
            private_key: row.get(10),
            ..row_to_key(row)
        })
        .collect();
    let realm_keys = tx
        .query(
            "SELECT name, wrapped FROM g2p_kms_realm_keys ORDER BY name",
            &[],
        )
        .await
        .map_err(|e| db_error(&e))?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let kek_check = tx
        .query_opt(
            "SELECT value FROM g2p_kms_meta WHERE name = 'kek_check'",
            &[],
        )
        .await
        .map_err(|e| db_error(&e))?
        .map(|row| row.get(0));
    Ok(Contents {
        keys,
        realm_keys,
        kek_check,
    })
}

/// Writes `contents` in one transaction with the tables locked, in place of what the store
/// holds as `mode` allows.
pub(super) async fn import(
    pool: &Pool,
    contents: &Contents,
    mode: Import<'_>,
    location: &str,
) -> Result<(), KmsError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(|e| db_error(&e))?;
    tx.batch_execute("LOCK TABLE g2p_kms_keys, g2p_kms_realm_keys, g2p_kms_meta IN EXCLUSIVE MODE")
        .await
        .map_err(|e| db_error(&e))?;
    if let Import::ReplacingExactly(expected) = mode
        && !same_contents(&read_all(&tx).await?, expected)
    {
        return Err(changed(location));
    }
    if matches!(mode, Import::IntoEmpty) {
        let held = tx
            .query_one(
                "SELECT (SELECT count(*) FROM g2p_kms_keys), (SELECT count(*) FROM g2p_kms_realm_keys), (SELECT count(*) FROM g2p_kms_meta WHERE name = 'kek_check')",
                &[],
            )
            .await
            .map_err(|e| db_error(&e))?;
        let (keys, realms, checks): (i64, i64, i64) = (held.get(0), held.get(1), held.get(2));
        if keys + realms + checks > 0 {
            return Err(crate::store::backend::occupied(location, keys, realms));
        }
    }
    tx.batch_execute(
        "DELETE FROM g2p_kms_keys; DELETE FROM g2p_kms_realm_keys; DELETE FROM g2p_kms_meta WHERE name = 'kek_check';",
    )
    .await
    .map_err(|e| db_error(&e))?;
    for key in &contents.keys {
        insert(&tx, key).await?;
    }
    for (name, wrapped) in &contents.realm_keys {
        tx.execute(
            "INSERT INTO g2p_kms_realm_keys (name, wrapped) VALUES ($1, $2)",
            &[name, wrapped],
        )
        .await
        .map_err(|e| db_error(&e))?;
    }
    if let Some(check) = &contents.kek_check {
        tx.execute(
            "INSERT INTO g2p_kms_meta (name, value) VALUES ('kek_check', $1)",
            &[check],
        )
        .await
        .map_err(|e| db_error(&e))?;
    }
    tx.commit().await.map_err(|e| db_error(&e))?;
    Ok(())
}
