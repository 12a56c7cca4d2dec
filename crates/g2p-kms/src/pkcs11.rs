//! A key-encryption key that never leaves a PKCS#11 token (an HSM; SoftHSM in development):
//! a non-extractable, sensitive AES-256 key found by its label, created on first use for a
//! new store. Every wrap and unwrap of a private key is an AES-GCM operation done by the
//! token (`CKM_AES_GCM`, 96-bit nonce, the key's alias as additional data, 128-bit tag), so
//! the wrapped format is the one the file KEK writes: `nonce || ciphertext || tag`.
//!
//! The token is reached through a pool of sessions (one per core, at least two), each used by
//! one operation at a time, so wrapping is not serialised behind one session; unwrapped keys
//! are cached above (the key store), so the token is not on the path of every decrypt.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::KmsError;

/// The environment variable holding the token's user PIN (never in a file or a log).
pub const PIN_ENV: &str = "G2P_KMS_PKCS11_PIN";
/// The key's label when none is configured.
pub const DEFAULT_KEY_LABEL: &str = "g2p-kms-kek";
/// GCM nonce and tag lengths, as the file KEK's.
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Most sessions opened.
const MOST_SESSIONS: usize = 16;

/// Where the key is: `[kms.kek]` with `source = "pkcs11"`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Settings {
    /// Path of the PKCS#11 library (SoftHSM: `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: Option<PathBuf>,
    /// The token's label (or give `slot`).
    pub token_label: Option<String>,
    /// The slot's id (or give `token_label`).
    pub slot: Option<u64>,
    /// The key's label (default `g2p-kms-kek`).
    pub key_label: Option<String>,
}

impl Pkcs11Settings {
    /// The key's label.
    pub fn key_label(&self) -> &str {
        self.key_label.as_deref().unwrap_or(DEFAULT_KEY_LABEL)
    }
}

fn config(message: String) -> KmsError {
    KmsError::Config(message)
}

/// One initialised context per library in the process: `C_Initialize` once, never finalised
/// (several stores may use one token).
fn context(module: &Path) -> Result<Pkcs11, KmsError> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut contexts = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(context) = contexts.get(module) {
        return Ok(context.clone());
    }
    let context = Pkcs11::new(module).map_err(|e| {
        config(format!(
            "cannot load the PKCS#11 module {}: {e}",
            module.display()
        ))
    })?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(config(format!(
                "the PKCS#11 module {} does not initialise: {e}",
                module.display()
            )));
        }
    }
    contexts.insert(module.to_path_buf(), context.clone());
    Ok(context)
}

/// The key-encryption key in a token.
pub struct TokenKek {
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
    key: ObjectHandle,
    description: String,
}

impl std::fmt::Debug for TokenKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKek")
            .field("key", &self.description)
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

/// The slot of the token the settings name.
fn find_slot(context: &Pkcs11, settings: &Pkcs11Settings, module: &Path) -> Result<Slot, KmsError> {
    let slots = context.get_slots_with_token().map_err(|e| {
        config(format!(
            "the PKCS#11 module {} lists no slots: {e}",
            module.display()
        ))
    })?;
    let mut labels = Vec::new();
    for slot in slots {
        if settings.slot == Some(slot.id()) {
            return Ok(slot);
        }
        let Ok(info) = context.get_token_info(slot) else {
            continue;
        };
        let label = info.label().trim().to_string();
        if settings.token_label.as_deref().map(str::trim) == Some(label.as_str()) {
            return Ok(slot);
        }
        labels.push(format!("{label:?} (slot {})", slot.id()));
    }
    let wanted = match (&settings.token_label, settings.slot) {
        (Some(label), _) => format!("labelled {label:?}"),
        (None, Some(slot)) => format!("in slot {slot}"),
        (None, None) => {
            return Err(config(
                "[kms.kek] needs token_label or slot to find the PKCS#11 token".into(),
            ));
        }
    };
    Err(config(format!(
        "no PKCS#11 token {wanted} in {} (tokens: {})",
        module.display(),
        if labels.is_empty() {
            "none".to_string()
        } else {
            labels.join(", ")
        }
    )))
}

/// Logs the user in, saying how many tries remain when the PIN is wrong and the token tells.
fn login(
    context: &Pkcs11,
    slot: Slot,
    session: &Session,
    pin: &str,
    token: &str,
) -> Result<(), KmsError> {
    let pin = cryptoki::types::AuthPin::new(pin.into());
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(Pkcs11Error::Pkcs11(RvError::PinIncorrect, _)) => {
            let tries = match context.get_token_info(slot) {
                Ok(info) if info.user_pin_locked() => "; the PIN is now locked".to_string(),
                Ok(info) if info.user_pin_final_try() => {
                    "; one try remains before the token locks the PIN".to_string()
                }
                Ok(info) if info.user_pin_count_low() => {
                    "; the token says few tries remain".to_string()
                }
                _ => String::new(),
            };
            Err(config(format!(
                "wrong PIN for PKCS#11 token {token:?} ({PIN_ENV}){tries}"
            )))
        }
        Err(Pkcs11Error::Pkcs11(RvError::PinLocked, _)) => Err(config(format!(
            "the user PIN of PKCS#11 token {token:?} is locked; its security officer must unlock it"
        ))),
        Err(e) => Err(config(format!(
            "cannot log in to PKCS#11 token {token:?}: {e}"
        ))),
    }
}

impl TokenKek {
    /// Opens the key: loads the module, finds the token, logs in with `pin`, finds the key by
    /// label — or, with `create` (a new store), makes it inside the token, non-extractable.
    ///
    /// # Errors
    /// [`KmsError::Config`] naming what is wrong: the module does not load, no such token, a
    /// wrong or locked PIN (with the tries left when the token says), no key with that label
    /// (for an existing store), several, or one that is extractable.
    pub fn open(settings: &Pkcs11Settings, pin: &str, create: bool) -> Result<Self, KmsError> {
        let module = settings.module.as_deref().ok_or_else(|| {
            config(
                "[kms.kek] source = \"pkcs11\" needs module, the path of the PKCS#11 library"
                    .into(),
            )
        })?;
        let context = context(module)?;
        let slot = find_slot(&context, settings, module)?;
        let token = context
            .get_token_info(slot)
            .map(|i| i.label().trim().to_string())
            .unwrap_or_else(|_| format!("slot {}", slot.id()));
        if context
            .get_token_info(slot)
            .is_ok_and(|i| i.user_pin_locked())
        {
            return Err(config(format!(
                "the user PIN of PKCS#11 token {token:?} is locked; its security officer must unlock it"
            )));
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut sessions = Vec::new();
        for _ in 0..cores.clamp(2, MOST_SESSIONS) {
            let session = context.open_rw_session(slot).map_err(|e| {
                config(format!(
                    "cannot open a session with PKCS#11 token {token:?}: {e}"
                ))
            })?;
            sessions.push(session);
        }
        // Login state belongs to the application: one login serves every session.
        let first = sessions
            .first()
            .ok_or_else(|| KmsError::Internal("no session".into()))?;
        login(&context, slot, first, pin, &token)?;
        let label = settings.key_label();
        let key = find_key(first, label, &token, create)?;
        Ok(TokenKek {
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            next: AtomicUsize::new(0),
            key,
            description: format!("key {label:?} in PKCS#11 token {token:?}"),
        })
    }

    /// Which key this is, for messages.
    pub fn description(&self) -> &str {
        &self.description
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        // A free session if there is one; else wait for the next in turn.
        for session in &self.sessions {
            if let Ok(guard) = session.try_lock() {
                return guard;
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.sessions.len();
        self.sessions[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// AES-GCM in the token: `ciphertext || tag` of `plaintext` under `nonce` and `aad`.
    ///
    /// # Errors
    /// What the token says.
    pub(crate) fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KmsError> {
        let mut iv = *nonce;
        let params = GcmParams::new(&mut iv, aad, 128.into())
            .map_err(|e| KmsError::Internal(format!("GCM parameters: {e}")))?;
        self.session()
            .encrypt(&Mechanism::AesGcm(params), self.key, plaintext)
            .map_err(|e| KmsError::Internal(format!("the PKCS#11 token did not wrap: {e}")))
    }

    /// Opens what [`TokenKek::seal`] made; `None` when the key, nonce or aad differ.
    pub(crate) fn open_sealed(
        &self,
        nonce: &[u8],
        aad: &[u8],
        sealed: &[u8],
    ) -> Option<Zeroizing<Vec<u8>>> {
        if nonce.len() != NONCE_LEN || sealed.len() < TAG_LEN {
            return None;
        }
        let mut iv = [0u8; NONCE_LEN];
        iv.copy_from_slice(nonce);
        let params = GcmParams::new(&mut iv, aad, 128.into()).ok()?;
        self.session()
            .decrypt(&Mechanism::AesGcm(params), self.key, sealed)
            .ok()
            .map(Zeroizing::new)
    }
}

/// The key labelled `label`: found, or made when `create`; it must be sensitive and not
/// extractable.
fn find_key(
    session: &Session,
    label: &str,
    token: &str,
    create: bool,
) -> Result<ObjectHandle, KmsError> {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let found = session
        .find_objects(&template)
        .map_err(|e| config(format!("cannot search PKCS#11 token {token:?}: {e}")))?;
    let key = match found.as_slice() {
        [key] => *key,
        [] if create => {
            let key = session
                .generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                        Attribute::ValueLen(32.into()),
                        Attribute::Label(label.as_bytes().to_vec()),
                    ],
                )
                .map_err(|e| {
                    config(format!(
                        "cannot create the key-encryption key in PKCS#11 token {token:?}: {e}"
                    ))
                })?;
            tracing::warn!(
                token,
                key = label,
                "created a key-encryption key in the token"
            );
            key
        }
        [] => {
            return Err(config(format!(
                "PKCS#11 token {token:?} holds no AES key labelled {label:?}, and the store exists: its keys were wrapped under another key (check [kms.kek] key_label, or the token)"
            )));
        }
        _ => {
            return Err(config(format!(
                "PKCS#11 token {token:?} holds {} AES keys labelled {label:?}; keep one",
                found.len()
            )));
        }
    };
    let attributes = session
        .get_attributes(key, &[AttributeType::Sensitive, AttributeType::Extractable])
        .map_err(|e| {
            config(format!(
                "cannot read the key's attributes in {token:?}: {e}"
            ))
        })?;
    let flag = |wanted: AttributeType| {
        attributes.iter().find_map(|a| match (a, wanted) {
            (Attribute::Sensitive(v), AttributeType::Sensitive)
            | (Attribute::Extractable(v), AttributeType::Extractable) => Some(*v),
            _ => None,
        })
    };
    if flag(AttributeType::Sensitive) != Some(true)
        || flag(AttributeType::Extractable) != Some(false)
    {
        return Err(config(format!(
            "the key labelled {label:?} in PKCS#11 token {token:?} could leave the token (CKA_SENSITIVE must be true, CKA_EXTRACTABLE false); refusing to use it"
        )));
    }
    Ok(key)
}
