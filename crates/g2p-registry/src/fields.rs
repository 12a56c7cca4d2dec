//! Field-level encryption: each chosen text field of a record becomes its own base64url
//! MOSIP ciphertext (and back). Other fields and the key order are kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use g2p_encryption::{EncryptionProvider, Error, ErrorKind, b64};
use serde_json::Value;

use crate::pipeline::{RecordError, Transform, Transformed};
use crate::record::{FieldPath, Record, kind_of};

/// Which way the fields go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Text to ciphertext.
    Encrypt,
    /// Ciphertext to text.
    Decrypt,
}

impl Direction {
    /// `encrypt` or `decrypt`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Encrypt => "encrypt",
            Direction::Decrypt => "decrypt",
        }
    }
}

/// Encrypts or decrypts chosen fields of each record through a provider.
#[derive(Debug)]
pub struct FieldCrypt {
    provider: Arc<dyn EncryptionProvider>,
    fields: Vec<FieldPath>,
    direction: Direction,
    seen: Vec<AtomicBool>,
}

impl FieldCrypt {
    /// The transform for `fields`, one way.
    pub fn new(
        provider: Arc<dyn EncryptionProvider>,
        fields: Vec<FieldPath>,
        direction: Direction,
    ) -> Self {
        let seen = fields.iter().map(|_| AtomicBool::new(false)).collect();
        FieldCrypt {
            provider,
            fields,
            direction,
            seen,
        }
    }

    async fn convert(&self, field: &FieldPath, text: &str) -> Result<String, RecordError> {
        let failed = |e: Error| RecordError::in_field(field, e.kind(), e.to_string());
        match self.direction {
            Direction::Encrypt => self
                .provider
                .encrypt(text.as_bytes())
                .await
                .map(|ct| b64::encode_b64u(&ct))
                .map_err(failed),
            Direction::Decrypt => {
                let ciphertext = b64::decode_lenient(text.trim()).map_err(|e| {
                    RecordError::in_field(
                        field,
                        ErrorKind::InvalidInput,
                        format!("not a base64url ciphertext: {e}"),
                    )
                })?;
                let plaintext = self.provider.decrypt(&ciphertext).await.map_err(failed)?;
                String::from_utf8(plaintext).map_err(|_| {
                    RecordError::in_field(
                        field,
                        ErrorKind::InvalidInput,
                        "the decrypted value is not UTF-8 text",
                    )
                })
            }
        }
    }
}

#[async_trait]
impl Transform for FieldCrypt {
    async fn apply(&self, mut record: Record) -> Result<Transformed, RecordError> {
        // Take the texts out first, then convert them all at once.
        let mut taken = Vec::new();
        for (field, seen) in self.fields.iter().zip(&self.seen) {
            let value = field.find_mut(&mut record);
            if value.is_some() {
                seen.store(true, Ordering::Relaxed);
            }
            match value {
                // Nothing to protect in an absent, null or empty value (a CSV's empty cell).
                None | Some(Value::Null) => {}
                Some(Value::String(text)) if text.is_empty() => {}
                Some(Value::String(text)) => taken.push((field, std::mem::take(text))),
                Some(other) => {
                    return Err(RecordError::in_field(
                        field,
                        ErrorKind::InvalidInput,
                        format!(
                            "{} is not text (bulk {} takes strings)",
                            kind_of(other),
                            self.direction.as_str()
                        ),
                    ));
                }
            }
        }
        let converted = futures_util::future::join_all(
            taken.iter().map(|(field, text)| self.convert(field, text)),
        )
        .await;
        let values = converted.len();
        for ((field, _), value) in taken.iter().zip(converted) {
            let value = value?;
            if let Some(slot) = field.find_mut(&mut record) {
                *slot = Value::String(value);
            }
        }
        Ok(Transformed { record, values })
    }

    fn unmatched(&self) -> Vec<String> {
        self.fields
            .iter()
            .zip(&self.seen)
            .filter(|(_, seen)| !seen.load(Ordering::Relaxed))
            .map(|(field, _)| field.to_string())
            .collect()
    }
}
