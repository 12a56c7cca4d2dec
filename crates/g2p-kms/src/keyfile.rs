//! The secrets a data directory keeps beside the key store, each created once (the first
//! writer wins when several processes start together) and readable by the owner only:
//!
//! * `realm-<name>.key`: a token realm's signing key, wrapped under the key-encryption key, so
//!   that tokens a client holds stay valid when the key manager restarts, as with Keycloak;
//! * `default-client-secret`: the secret of the client `kms serve` admits when none is
//!   configured.

use std::path::{Path, PathBuf};

use g2p_encryption::files::create_private_once;
use zeroize::Zeroizing;

use crate::error::KmsError;
use crate::kek::Kek;

/// The file holding the default client's secret.
pub const DEFAULT_CLIENT_SECRET_FILE: &str = "default-client-secret";

/// Reads `path`, or creates it with what `make` gives when it does not exist (the bytes of
/// whichever process created it first are kept).
fn read_or_create(
    path: &Path,
    make: impl FnOnce() -> Result<Zeroizing<Vec<u8>>, KmsError>,
) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    let read = || match std::fs::read(path) {
        Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(KmsError::Config(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    };
    if let Some(bytes) = read()? {
        return Ok(bytes);
    }
    let fresh = make()?;
    create_private_once(path, &fresh)
        .map_err(|e| KmsError::Config(format!("cannot write {}: {e}", path.display())))?;
    read()?.ok_or_else(|| KmsError::Config(format!("{} vanished", path.display())))
}

/// The signing key (PKCS#8 DER) of token realm `name`, kept in `dir/realm-<name>.key` wrapped
/// under `kek`; created on first use.
///
/// # Errors
/// [`KmsError::Config`] for a realm name that is not letters, digits, `-`, `_` and `.`, a
/// file that cannot be written, or one wrapped under another key-encryption key.
pub fn realm_key(dir: &Path, kek: &Kek, name: &str) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    let wrapped = realm_key_file(dir, name, &|| new_realm_key(kek, name))?;
    unwrap_realm_key(
        kek,
        name,
        &wrapped,
        &dir.join(realm_file(name)).display().to_string(),
    )
}

/// A new realm signing key, wrapped under `kek` for realm `name`.
pub(crate) fn new_realm_key(kek: &Kek, name: &str) -> Result<Vec<u8>, KmsError> {
    let key = crate::store::generate_pkcs8()?;
    kek.wrap(realm_context(name).as_bytes(), &key)
}

/// Opens a wrapped realm key kept at `location` (for the message).
pub(crate) fn unwrap_realm_key(
    kek: &Kek,
    name: &str,
    wrapped: &[u8],
    location: &str,
) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    kek.unwrap(realm_context(name).as_bytes(), wrapped)
        .ok_or_else(|| {
            KmsError::Config(format!(
                "the signing key of realm {name} in {location} does not unwrap (damaged, or written under another key-encryption key); remove it to make a new realm key (issued tokens stop working)"
            ))
        })
}

/// Checks a realm name: letters, digits, `-`, `_` and `.`.
pub(crate) fn check_realm_name(name: &str) -> Result<(), KmsError> {
    if is_realm_name(name) {
        Ok(())
    } else {
        Err(KmsError::Config(format!(
            "realm name {name:?}: use letters, digits, '-', '_' and '.'"
        )))
    }
}

/// The wrapped key of realm `name` in `dir/realm-<name>.key`, created with what `fresh`
/// makes when missing.
pub(crate) fn realm_key_file(
    dir: &Path,
    name: &str,
    fresh: &dyn Fn() -> Result<Vec<u8>, KmsError>,
) -> Result<Vec<u8>, KmsError> {
    check_realm_name(name)?;
    let wrapped = read_or_create(&dir.join(realm_file(name)), || fresh().map(Zeroizing::new))?;
    Ok(wrapped.to_vec())
}

/// Every realm key file in `dir`: `(realm name, wrapped key)`, by name.
pub(crate) fn realm_key_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, KmsError> {
    let cannot =
        |e: std::io::Error| KmsError::Config(format!("cannot read {}: {e}", dir.display()));
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(cannot)? {
        let entry = entry.map_err(cannot)?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if let Some(name) = realm_of_file(&file_name) {
            let wrapped = std::fs::read(entry.path()).map_err(cannot)?;
            found.push((name.to_string(), wrapped));
        }
    }
    found.sort();
    Ok(found)
}

fn is_realm_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The file name of realm `name`'s key in a data directory (and in a backup).
pub(crate) fn realm_file(name: &str) -> String {
    format!("realm-{name}.key")
}

/// What a realm key is bound to when wrapped.
pub(crate) fn realm_context(name: &str) -> String {
    format!("realm:{name}")
}

/// The realm whose key file is named `file_name`, if it is one.
pub(crate) fn realm_of_file(file_name: &str) -> Option<&str> {
    let name = file_name.strip_prefix("realm-")?.strip_suffix(".key")?;
    is_realm_name(name).then_some(name)
}

/// The id of the client `kms serve` admits when none is configured.
pub const DEFAULT_CLIENT_ID: &str = "openg2p-admin-client";

/// The client `kms serve` admits when none is configured: [`DEFAULT_CLIENT_ID`] with the
/// secret kept in `dir` and the default roles.
///
/// # Errors
/// As [`default_client_secret`].
pub fn default_client(dir: &Path) -> Result<crate::server::auth::Client, KmsError> {
    let secret = default_client_secret(dir)?;
    Ok(crate::server::auth::Client::new(
        DEFAULT_CLIENT_ID,
        &secret,
        crate::server::auth::DEFAULT_CLIENT_ROLES
            .iter()
            .map(|s| s.to_string())
            .collect(),
    ))
}

/// Where the default client's secret is kept in `dir`.
pub fn default_client_secret_path(dir: &Path) -> PathBuf {
    dir.join(DEFAULT_CLIENT_SECRET_FILE)
}

/// The default client's secret, kept in `dir/default-client-secret`; created (24 random
/// bytes, base64url) on first use.
///
/// # Errors
/// [`KmsError::Config`] when the file cannot be read or written, or is not text.
pub fn default_client_secret(dir: &Path) -> Result<String, KmsError> {
    let path = default_client_secret_path(dir);
    let bytes = read_or_create(&path, || {
        let mut random = [0u8; 24];
        aws_lc_rs::rand::fill(&mut random)
            .map_err(|_| KmsError::Internal("no randomness".into()))?;
        Ok(Zeroizing::new(
            g2p_encryption::b64::encode_b64u(&random).into_bytes(),
        ))
    })?;
    match std::str::from_utf8(&bytes).map(str::trim) {
        Ok(secret) if !secret.is_empty() => Ok(secret.to_string()),
        _ => Err(KmsError::Config(format!(
            "{} does not hold a secret (empty, or not text); remove it to make a new one",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::auth::{Client, Realm};

    #[test]
    fn a_kept_realm_key_outlives_the_realm() {
        let dir = tempfile::tempdir().unwrap();
        let kek = Kek::from_bytes(&[7u8; 32]).unwrap();
        let first = realm_key(dir.path(), &kek, "openg2p").unwrap();
        assert_eq!(*realm_key(dir.path(), &kek, "openg2p").unwrap(), *first);
        assert_ne!(*realm_key(dir.path(), &kek, "other").unwrap(), *first);
        let clients = || vec![Client::parse("app:pw").unwrap()];
        let before = Realm::with_key("openg2p", "http://kms", clients(), 300, &first).unwrap();
        let form: std::collections::HashMap<String, String> = [
            ("grant_type", "client_credentials"),
            ("client_id", "app"),
            ("client_secret", "pw"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let token = before.issue(&form, None).unwrap().access_token;
        let after = Realm::with_key("openg2p", "http://kms", clients(), 300, &first).unwrap();
        assert!(after.validate(&token).is_ok());
        let wrong = Kek::from_bytes(&[8u8; 32]).unwrap();
        let e = realm_key(dir.path(), &wrong, "openg2p").unwrap_err();
        assert!(e.to_string().contains("another key-encryption key"), "{e}");
        assert!(realm_key(dir.path(), &kek, "../x").is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("realm-openg2p.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn concurrent_first_starts_agree_on_one_realm_key() {
        let kek = Kek::from_bytes(&[7u8; 32]).unwrap();
        let fresh = tempfile::tempdir().unwrap();
        let keys: Vec<Vec<u8>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..6)
                .map(|_| scope.spawn(|| realm_key(fresh.path(), &kek, "race").unwrap().to_vec()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.windows(2).all(|w| w[0] == w[1]));
        let leftovers = std::fs::read_dir(fresh.path()).unwrap().count();
        assert_eq!(leftovers, 1, "temporary files left behind");
    }

    #[test]
    fn the_default_client_secret_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let first = default_client_secret(dir.path()).unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(default_client_secret(dir.path()).unwrap(), first);
        std::fs::write(default_client_secret_path(dir.path()), b"  \n").unwrap();
        let e = default_client_secret(dir.path()).unwrap_err();
        assert!(e.to_string().contains("does not hold a secret"), "{e}");
    }
}
