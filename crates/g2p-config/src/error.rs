//! Why a configuration cannot be used.

use g2p_encryption::{ErrorKind, ProviderError};
use g2p_kms::KmsError;

/// A configuration that cannot be used, or a provider that cannot be built from it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file, the environment or a setting is wrong; the message names the key and where
    /// it came from.
    #[error("{0}")]
    Invalid(String),
    /// The embedded key manager could not be opened.
    #[error("{0}")]
    Kms(#[from] KmsError),
}

impl ConfigError {
    /// What kind of failure it is: a configuration mistake, or the embedded key store
    /// failing.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConfigError::Invalid(_) => ErrorKind::Configuration,
            ConfigError::Kms(e) => e.kind(),
        }
    }
}

/// A figment error as one line: the key (or environment variable) and where it came from (the
/// file, the environment), what is wrong, and the value when it is text. `prefix` is the table
/// the value was extracted from.
pub(crate) fn invalid(
    error: figment::Error,
    prefix: &[&str],
    figment: &figment::Figment,
) -> ConfigError {
    let prefix: Vec<String> = prefix.iter().map(|p| p.to_string()).collect();
    let mut messages = Vec::new();
    for e in error {
        // figment puts the prefix of an inner extraction after the key; put it first.
        let mut path = e.path.clone();
        if !prefix.is_empty() && path.len() > prefix.len() && path.ends_with(&prefix) {
            path.rotate_right(prefix.len());
        }
        let dotted = path.join(".");
        let keys: Vec<&str> = path.iter().map(String::as_str).collect();
        let source = e.metadata.as_ref().map(|md| {
            md.source
                .as_ref()
                .map_or_else(|| md.name.to_string(), |s| s.to_string())
        });
        let key = match (&e.metadata, &e.profile) {
            (Some(md), Some(profile)) if !keys.is_empty() => {
                let key = md.interpolate(profile, &keys);
                key.strip_prefix("default.").unwrap_or(&key).to_string()
            }
            _ => dotted.clone(),
        };
        // The value helps, unless it may be a secret.
        let secret = ["secret", "password", "token", "kek"]
            .iter()
            .any(|word| dotted.contains(word));
        let value = figment
            .find_value(&dotted)
            .ok()
            .and_then(|v| v.as_str().map(|s| format!(" = {s:?}")))
            .filter(|_| !dotted.is_empty() && !secret)
            .unwrap_or_default();
        let place = match (key.is_empty(), source) {
            (false, Some(source)) => format!("{key}{value} in {source}: "),
            (false, None) => format!("{key}{value}: "),
            (true, Some(source)) => format!("{source}: "),
            (true, None) => String::new(),
        };
        let kind = e.kind.to_string().trim_end().replace('\n', " ");
        messages.push(format!("configuration: {place}{kind}"));
    }
    ConfigError::Invalid(messages.join("; "))
}
