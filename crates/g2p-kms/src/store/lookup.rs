//! Finding records: by pair, thumbprint or key id, the pair's current key, and the cache of
//! records read recently.

use std::collections::HashMap;

use super::backend::{Query, Stamp};
use super::record::into_record;
use super::{KeyKind, KeyRecord, KeyStore};
use crate::error::KmsError;

/// Records read recently, valid while the backend's change stamp stays as it was when they
/// were read (no process has changed the keys since). Saves a query and a certificate parse
/// on every decrypt and sign.
#[derive(Default)]
pub(super) struct RecordCache {
    pub(super) stamp: Stamp,
    pub(super) by_thumbprint: HashMap<String, KeyRecord>,
    pub(super) current: HashMap<(String, String), KeyRecord>,
}

/// Most records each map of the [`RecordCache`] holds; it starts over beyond that.
const CACHED_RECORDS: usize = 4096;

impl RecordCache {
    fn remember_thumbprint(&mut self, thumbprint_hex: &str, record: &KeyRecord) {
        if self.by_thumbprint.len() >= CACHED_RECORDS {
            self.by_thumbprint.clear();
        }
        self.by_thumbprint
            .insert(thumbprint_hex.to_string(), record.clone());
    }

    fn remember_current(&mut self, pair: (String, String), record: &KeyRecord) {
        if self.current.len() >= CACHED_RECORDS {
            self.current.clear();
        }
        self.current.insert(pair, record.clone());
    }
}

impl KeyStore {
    /// The record cache, emptied first when the database changed since it was filled.
    pub(super) fn records(&self) -> Result<std::sync::MutexGuard<'_, RecordCache>, KmsError> {
        let stamp = self.backend.stamp()?;
        let mut cache = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if cache.stamp != stamp {
            cache.by_thumbprint.clear();
            cache.current.clear();
            cache.stamp = stamp;
        }
        Ok(cache)
    }
    fn select(&self, query: Query<'_>) -> Result<Vec<KeyRecord>, KmsError> {
        self.backend
            .select(query)?
            .into_iter()
            .map(into_record)
            .collect()
    }

    /// Every key and certificate of `(app, ref)`, oldest first (expired ones included).
    ///
    /// # Errors
    /// Database errors.
    pub fn all(
        &self,
        application_id: &str,
        reference_id: &str,
    ) -> Result<Vec<KeyRecord>, KmsError> {
        self.select(Query::Pair(application_id, reference_id))
    }

    /// Every key in the store, oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub fn list(&self) -> Result<Vec<KeyRecord>, KmsError> {
        self.select(Query::All)
    }

    /// The record with this upper-hex certificate thumbprint (partner certificates included).
    ///
    /// # Errors
    /// Database errors.
    pub fn record_by_thumbprint(
        &self,
        thumbprint_hex: &str,
    ) -> Result<Option<KeyRecord>, KmsError> {
        let stamp = {
            let cache = self.records()?;
            if let Some(record) = cache.by_thumbprint.get(thumbprint_hex) {
                return Ok(Some(record.clone()));
            }
            cache.stamp
        };
        let found = self
            .select(Query::Thumbprint(thumbprint_hex))?
            .into_iter()
            .next();
        if let Some(record) = &found {
            let mut cache = self.records()?;
            // Kept only when nothing was written while reading.
            if cache.stamp == stamp {
                cache.remember_thumbprint(thumbprint_hex, record);
            }
        }
        Ok(found)
    }

    /// The record with this upper-hex thumbprint if the record cache holds it (no query).
    pub fn cached_record_by_thumbprint(&self, thumbprint_hex: &str) -> Option<KeyRecord> {
        self.records()
            .ok()?
            .by_thumbprint
            .get(thumbprint_hex)
            .cloned()
    }

    /// The record with this keyId.
    ///
    /// # Errors
    /// Database errors.
    pub fn record_by_key_id(&self, key_id: &str) -> Result<Option<KeyRecord>, KmsError> {
        Ok(self.select(Query::KeyId(key_id))?.into_iter().next())
    }
    /// The alias of the current key of `(app, ref)` when the record cache already knows it
    /// (and the database has not changed since); `None` otherwise. For the encryption hot
    /// path, which then needs no query and no copy of the record.
    ///
    /// # Errors
    /// Internal errors of the database.
    pub fn cached_current_alias(
        &self,
        application_id: &str,
        reference_id: &str,
        at: i64,
    ) -> Result<Option<String>, KmsError> {
        let kind = KeyKind::of(application_id, reference_id);
        let margin = self.pre_expire_seconds(kind, application_id);
        let cache = self.records()?;
        let pair = (application_id.to_string(), reference_id.to_string());
        let found = cache
            .current
            .get(&pair)
            .filter(|r| r.generated_at <= at && at < r.expires_at - margin)
            .map(|r| r.alias.clone());
        Ok(found)
    }

    pub(super) fn current_record(
        &self,
        application_id: &str,
        reference_id: &str,
        at: i64,
    ) -> Result<Option<KeyRecord>, KmsError> {
        let kind = KeyKind::of(application_id, reference_id);
        let margin = self.pre_expire_seconds(kind, application_id);
        let current_at = |r: &KeyRecord| r.generated_at <= at && at < r.expires_at - margin;
        let pair = (application_id.to_string(), reference_id.to_string());
        let stamp = {
            let cache = self.records()?;
            if let Some(record) = cache.current.get(&pair).filter(|r| current_at(r)) {
                return Ok(Some(record.clone()));
            }
            cache.stamp
        };
        let found = self
            .select(Query::Current {
                application_id,
                reference_id,
                at,
                margin,
            })?
            .into_iter()
            .next();
        if let Some(record) = &found {
            let mut cache = self.records()?;
            if cache.stamp == stamp {
                cache.remember_current(pair, record);
            }
        }
        Ok(found)
    }
}
