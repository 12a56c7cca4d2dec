//! OpenG2P's registry encryption: the personal fields of a registrant gathered into one JSON
//! object (in the order of the field list, only those with a value), serialised as Python's
//! `json.dumps` does, sealed into one MOSIP ciphertext, stored raw in `encrypted_val` (base64 in
//! files) with `is_encrypted` set and each gathered field replaced by a placeholder. Reading
//! decrypts `encrypted_val`, parses the object whatever its key order or spacing, and puts
//! each field back.
//!
//! [`Seal`] encrypts, [`Open`] decrypts, [`Rewrap`] re-seals records whose ciphertext names an
//! older key than the provider's current one, [`Inspect`] counts without changing anything.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use g2p_encryption::{EncryptionProvider, Error, ErrorKind, b64};
use g2p_mosip::cipher;
use serde::Serialize;
use serde_json::Value;

use crate::pipeline::{RecordError, Transform, Transformed};
use crate::pyjson;
use crate::record::Record;

/// The fields OpenG2P encrypts by default.
pub const DEFAULT_FIELDS: [&str; 7] = [
    "name",
    "family_name",
    "given_name",
    "addl_name",
    "display_name",
    "address",
    "birth_place",
];
/// The column holding the raw ciphertext.
pub const ENCRYPTED_VAL: &str = "encrypted_val";
/// The column saying the record is encrypted.
pub const IS_ENCRYPTED: &str = "is_encrypted";
/// The column saying the record is a registrant.
pub const IS_REGISTRANT: &str = "is_registrant";
/// The placeholder OpenG2P puts in place of an encrypted field.
pub const DEFAULT_PLACEHOLDER: &str = "encrypted";

/// What [`Seal`] encrypts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeSettings {
    /// The fields gathered, in this order.
    pub fields: Vec<String>,
    /// Whether the fields were named by the user (each must then occur in some record) or
    /// are the default list (at least one must).
    pub named: bool,
    /// What replaces an encrypted field.
    pub placeholder: String,
    /// Encrypt only records with `is_registrant` true.
    pub registrants_only: bool,
}

impl Default for EnvelopeSettings {
    fn default() -> Self {
        EnvelopeSettings {
            fields: DEFAULT_FIELDS.iter().map(|f| f.to_string()).collect(),
            named: false,
            placeholder: DEFAULT_PLACEHOLDER.into(),
            registrants_only: true,
        }
    }
}

/// Python's truth of a value, which decides whether OpenG2P gathers a field: null, false, 0,
/// "" and empty containers are not gathered.
pub fn has_value(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A boolean column, as JSON (`true`) or as text from a CSV or an Odoo export (`True`, `t`,
/// `1`, `yes`); anything else is false.
pub fn flag(record: &Record, name: &str) -> bool {
    match record.get(name) {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_i64().is_some_and(|i| i != 0),
        Some(Value::String(s)) => matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "true" | "t" | "1" | "yes" | "y"
        ),
        _ => false,
    }
}

/// The raw ciphertext in `encrypted_val`: `Ok(None)` when there is none.
///
/// # Errors
/// [`RecordError`] when it is there but not base64 (either alphabet, padded or not).
pub fn stored_ciphertext(record: &Record) -> Result<Option<Vec<u8>>, RecordError> {
    match record.get(ENCRYPTED_VAL) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => b64::decode_lenient(s.trim()).map(Some).map_err(|e| {
            RecordError::in_field(
                &ENCRYPTED_VAL,
                ErrorKind::InvalidInput,
                format!("not base64: {e}"),
            )
        }),
        Some(other) => Err(RecordError::in_field(
            &ENCRYPTED_VAL,
            ErrorKind::InvalidInput,
            format!(
                "{} is not a base64 ciphertext",
                crate::record::kind_of(other)
            ),
        )),
    }
}

fn failed(field: &str) -> impl Fn(Error) -> RecordError + '_ {
    move |e: Error| RecordError::in_field(&field, e.kind(), e.to_string())
}

/// The ciphertext of an encrypted record; `None` for one that is not encrypted.
fn ciphertext_of(record: &Record) -> Result<Option<Vec<u8>>, RecordError> {
    if !flag(record, IS_ENCRYPTED) {
        return Ok(None);
    }
    match stored_ciphertext(record)? {
        Some(ciphertext) => Ok(Some(ciphertext)),
        None => Err(RecordError::in_field(
            &ENCRYPTED_VAL,
            ErrorKind::InvalidInput,
            "is_encrypted is true but encrypted_val is empty",
        )),
    }
}

/// Decrypts a sealed record's ciphertext into the object of its fields.
async fn open_fields(
    provider: &dyn EncryptionProvider,
    ciphertext: &[u8],
) -> Result<(Vec<u8>, serde_json::Map<String, Value>), RecordError> {
    let plaintext = provider
        .decrypt(ciphertext)
        .await
        .map_err(failed(ENCRYPTED_VAL))?;
    let not_object = || {
        RecordError::in_field(
            &ENCRYPTED_VAL,
            ErrorKind::InvalidInput,
            "decrypts to something that is not a JSON object of fields",
        )
    };
    match serde_json::from_slice::<Value>(&plaintext) {
        Ok(Value::Object(fields)) => Ok((plaintext, fields)),
        _ => Err(not_object()),
    }
}

/// Encrypts registrants' personal fields into one ciphertext each.
#[derive(Debug)]
pub struct Seal {
    provider: Arc<dyn EncryptionProvider>,
    settings: EnvelopeSettings,
    seen: Vec<AtomicBool>,
    registrant_column_seen: AtomicBool,
}

impl Seal {
    /// Sealing with `settings`.
    pub fn new(provider: Arc<dyn EncryptionProvider>, settings: EnvelopeSettings) -> Self {
        let seen = settings
            .fields
            .iter()
            .map(|_| AtomicBool::new(false))
            .collect();
        Seal {
            provider,
            settings,
            seen,
            registrant_column_seen: AtomicBool::new(false),
        }
    }

    /// The exact bytes sealed for `record`: the object of its fields with a value, in the
    /// order of the list, as `json.dumps` writes it; `None` when it has none. Notes which
    /// fields occur.
    fn gather(&self, record: &Record) -> Option<(Vec<String>, String)> {
        let mut gathered = serde_json::Map::new();
        for (name, seen) in self.settings.fields.iter().zip(&self.seen) {
            if let Some(value) = record.get(name) {
                seen.store(true, Ordering::Relaxed);
                if has_value(value) {
                    gathered.insert(name.clone(), value.clone());
                }
            }
        }
        if gathered.is_empty() {
            return None;
        }
        let names = gathered.keys().cloned().collect();
        Some((names, pyjson::dumps(&Value::Object(gathered))))
    }
}

#[async_trait]
impl Transform for Seal {
    async fn apply(&self, mut record: Record) -> Result<Transformed, RecordError> {
        if record.contains_key(IS_REGISTRANT) {
            self.registrant_column_seen.store(true, Ordering::Relaxed);
        }
        let wanted = !flag(&record, IS_ENCRYPTED)
            && (!self.settings.registrants_only || flag(&record, IS_REGISTRANT));
        let gathered = self.gather(&record);
        let Some((names, plaintext)) = gathered.filter(|_| wanted) else {
            return Ok(Transformed::unchanged(record));
        };
        let ciphertext = self
            .provider
            .encrypt(plaintext.as_bytes())
            .await
            .map_err(failed(ENCRYPTED_VAL))?;
        record.insert(
            ENCRYPTED_VAL.into(),
            Value::String(b64::encode_b64(&ciphertext)),
        );
        record.insert(IS_ENCRYPTED.into(), Value::Bool(true));
        for name in &names {
            record.insert(
                name.clone(),
                Value::String(self.settings.placeholder.clone()),
            );
        }
        Ok(Transformed {
            record,
            values: names.len(),
        })
    }

    fn unmatched(&self) -> Vec<String> {
        let unseen: Vec<String> = self
            .settings
            .fields
            .iter()
            .zip(&self.seen)
            .filter(|(_, seen)| !seen.load(Ordering::Relaxed))
            .map(|(name, _)| name.clone())
            .collect();
        let mut missing = if self.settings.named || unseen.len() == self.settings.fields.len() {
            unseen
        } else {
            Vec::new()
        };
        if self.settings.registrants_only && !self.registrant_column_seen.load(Ordering::Relaxed) {
            missing.push(IS_REGISTRANT.into());
        }
        missing
    }

    fn added_columns(&self) -> Vec<String> {
        vec![ENCRYPTED_VAL.into(), IS_ENCRYPTED.into()]
    }
}

/// Decrypts encrypted records and puts their fields back.
#[derive(Debug)]
pub struct Open {
    provider: Arc<dyn EncryptionProvider>,
}

impl Open {
    /// Opening through `provider`.
    pub fn new(provider: Arc<dyn EncryptionProvider>) -> Self {
        Open { provider }
    }
}

#[async_trait]
impl Transform for Open {
    async fn apply(&self, mut record: Record) -> Result<Transformed, RecordError> {
        let Some(ciphertext) = ciphertext_of(&record)? else {
            return Ok(Transformed::unchanged(record));
        };
        let (_, fields) = open_fields(self.provider.as_ref(), &ciphertext).await?;
        let values = fields.len();
        for (name, value) in fields {
            record.insert(name, value);
        }
        record.insert(ENCRYPTED_VAL.into(), Value::Null);
        record.insert(IS_ENCRYPTED.into(), Value::Bool(false));
        Ok(Transformed { record, values })
    }
}

/// The thumbprint of the certificate `provider` seals under now, learnt by sealing a probe.
///
/// # Errors
/// The provider's, when it cannot encrypt; [`Error::Configuration`] when its ciphertext names
/// no key (a key manager too old to prepend the thumbprint).
pub async fn current_thumbprint(provider: &dyn EncryptionProvider) -> Result<Vec<u8>, Error> {
    let probe = provider.encrypt(b"{}").await?;
    cipher::parse(&probe)
        .ok()
        .and_then(|p| p.thumbprint.map(<[u8]>::to_vec))
        .ok_or_else(|| {
            Error::Configuration(
                "the provider's ciphertexts carry no key thumbprint, so old and new keys cannot be told apart"
                    .into(),
            )
        })
}

/// Re-seals encrypted records whose ciphertext names a key other than the current one.
#[derive(Debug)]
pub struct Rewrap {
    provider: Arc<dyn EncryptionProvider>,
    current: Vec<u8>,
}

impl Rewrap {
    /// Rewrapping to the key `provider` seals under now.
    ///
    /// # Errors
    /// See [`current_thumbprint`].
    pub async fn new(provider: Arc<dyn EncryptionProvider>) -> Result<Self, Error> {
        let current = current_thumbprint(provider.as_ref()).await?;
        Ok(Rewrap { provider, current })
    }
}

#[async_trait]
impl Transform for Rewrap {
    async fn apply(&self, mut record: Record) -> Result<Transformed, RecordError> {
        let Some(ciphertext) = ciphertext_of(&record)? else {
            return Ok(Transformed::unchanged(record));
        };
        let thumbprint = cipher::parse(&ciphertext).ok().and_then(|p| p.thumbprint);
        if thumbprint == Some(self.current.as_slice()) {
            return Ok(Transformed::unchanged(record));
        }
        // The very bytes sealed before are sealed again: no re-serialisation.
        let (plaintext, _) = open_fields(self.provider.as_ref(), &ciphertext).await?;
        let sealed = self
            .provider
            .encrypt(&plaintext)
            .await
            .map_err(failed(ENCRYPTED_VAL))?;
        record.insert(
            ENCRYPTED_VAL.into(),
            Value::String(b64::encode_b64(&sealed)),
        );
        Ok(Transformed { record, values: 1 })
    }
}

/// Counts of one key in [`Inventory`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KeyCount {
    /// Records sealed under it.
    pub records: usize,
    /// Of those, records that did not decrypt (with verification).
    pub undecryptable: usize,
}

/// What [`Inspect`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Inventory {
    /// Records not encrypted.
    pub plain: usize,
    /// Records encrypted.
    pub encrypted: usize,
    /// Encrypted records per key thumbprint (upper hex; `legacy` for ciphertexts that name
    /// none, `unreadable` for values that are not a ciphertext).
    pub by_key: BTreeMap<String, KeyCount>,
    /// Records that did not decrypt, by line or id (at most [`Inventory::LISTED`]).
    pub failures: Vec<String>,
}

impl Inventory {
    /// How many failing records are named.
    pub const LISTED: usize = 20;
}

/// Counts records per key without changing them; with a provider, also decrypts each to
/// check it. Never looks at or reports the fields themselves.
#[derive(Debug)]
pub struct Inspect {
    verify: Option<Arc<dyn EncryptionProvider>>,
    inventory: Mutex<Inventory>,
}

impl Inspect {
    /// Inspection; `verify` decrypts every encrypted record to check it.
    pub fn new(verify: Option<Arc<dyn EncryptionProvider>>) -> Self {
        Inspect {
            verify,
            inventory: Mutex::new(Inventory::default()),
        }
    }

    /// What was found so far.
    pub fn inventory(&self) -> Inventory {
        self.inventory
            .lock()
            .map(|i| i.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    fn note(&self, key: String, failure: Option<String>) {
        let mut inventory = self
            .inventory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inventory.encrypted += 1;
        let count = inventory.by_key.entry(key).or_default();
        count.records += 1;
        if let Some(who) = failure {
            count.undecryptable += 1;
            if inventory.failures.len() < Inventory::LISTED {
                inventory.failures.push(who);
            }
        }
    }
}

#[async_trait]
impl Transform for Inspect {
    async fn apply(&self, record: Record) -> Result<Transformed, RecordError> {
        let ciphertext = match ciphertext_of(&record) {
            Ok(Some(ciphertext)) => ciphertext,
            Ok(None) => {
                let mut inventory = self
                    .inventory
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                inventory.plain += 1;
                return Ok(Transformed::unchanged(record));
            }
            Err(_) => {
                self.note("unreadable".into(), Some(record_name(&record)));
                return Ok(Transformed::unchanged(record));
            }
        };
        let key = match cipher::parse(&ciphertext) {
            Ok(parsed) => parsed.thumbprint_hex().unwrap_or_else(|| "legacy".into()),
            Err(_) => {
                self.note("unreadable".into(), Some(record_name(&record)));
                return Ok(Transformed::unchanged(record));
            }
        };
        let failure = match &self.verify {
            Some(provider) => match open_fields(provider.as_ref(), &ciphertext).await {
                Ok(_) => None,
                Err(e) if matches!(e.kind, ErrorKind::InvalidInput | ErrorKind::Refused) => {
                    Some(record_name(&record))
                }
                Err(e) => return Err(e),
            },
            None => None,
        };
        self.note(key, failure);
        Ok(Transformed::unchanged(record))
    }
}

/// How a record is named in reports: its `id`, never its fields.
fn record_name(record: &Record) -> String {
    match record.get("id") {
        Some(Value::String(s)) => format!("id {s}"),
        Some(Value::Number(n)) => format!("id {n}"),
        _ => "a record without id".into(),
    }
}
