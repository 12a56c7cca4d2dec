//! Who may make a key. A crypto call (`/encrypt`, `/jwtSign`, `getCertificate`, ...) uses the
//! current key of its pair, and makes one only for a pair the configuration declares (or that
//! already has keys, on expiry). Anything else is refused, naming the pair, unless unknown
//! references are admitted — then ids are checked and key generation is rate-limited, so a
//! caller cannot loop unseen references into unbounded RSA key generation. The administrator
//! (`generateMasterKey`, `kms keys`) makes keys for any pair with a policy.

use std::collections::BTreeSet;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use g2p_mosip::KerCode;

use crate::error::KmsError;

/// Who asks for a key that does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Minting {
    /// A crypto call: declared pairs only (or, when admitted, any valid pair, rate-limited).
    OnUse,
    /// The administrator, or the key hierarchy itself (a master key to issue a base key).
    Admin,
}

/// The pairs crypto calls may make keys for, and what happens with the others.
#[derive(Debug)]
pub(super) struct MintingRules {
    declared: RwLock<BTreeSet<(String, String)>>,
    admit_unknown_references: bool,
    per_minute: u32,
    window: Mutex<(Instant, u32)>,
}

/// Longest application or reference id admitted.
const MAX_ID_LEN: usize = 64;

/// Checks an id admitted without being declared: letters, digits, `_`, `-` and `.`, at most
/// 64 of them.
fn check_id(name: &str, value: &str) -> Result<(), KmsError> {
    let ok = value.len() <= MAX_ID_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(KmsError::invalid(format!(
            "request.{name} {value:?}: use at most {MAX_ID_LEN} letters, digits, '_', '-' and '.'"
        )))
    }
}

impl MintingRules {
    pub(super) fn new(
        declared: BTreeSet<(String, String)>,
        admit_unknown_references: bool,
        per_minute: u32,
    ) -> Self {
        MintingRules {
            declared: RwLock::new(declared),
            admit_unknown_references,
            per_minute,
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    pub(super) fn declare(&self, application_id: &str, reference_id: &str) {
        self.declared
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((application_id.to_string(), reference_id.to_string()));
    }

    fn is_declared(&self, application_id: &str, reference_id: &str) -> bool {
        self.declared
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(application_id.to_string(), reference_id.to_string()))
    }

    /// Whether a crypto call may make the first key of `(app, ref)`.
    ///
    /// # Errors
    /// KER-KMS-026 naming the pair when it is not declared and unknown references are not
    /// admitted, or when too many keys were made in the last minute; KER-KMS-005 for an id
    /// that is not admitted.
    pub(super) fn may_mint(
        &self,
        application_id: &str,
        reference_id: &str,
    ) -> Result<(), KmsError> {
        if self.is_declared(application_id, reference_id) {
            return Ok(());
        }
        if !self.admit_unknown_references {
            return Err(KmsError::ker_with(
                KerCode::Kms026,
                format!(
                    "{} (no key for {application_id}/{reference_id}: the pair is not declared; declare it in [kms.references] or start kms serve with --admit-unknown-references)",
                    KerCode::Kms026.message()
                ),
            ));
        }
        check_id("applicationId", application_id)?;
        check_id("referenceId", reference_id)?;
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if window.0.elapsed() >= Duration::from_secs(60) {
            *window = (Instant::now(), 0);
        }
        if window.1 >= self.per_minute {
            return Err(KmsError::ker_with(
                KerCode::Kms026,
                format!(
                    "{} (more than {} new keys in a minute for undeclared pairs; try again later)",
                    KerCode::Kms026.message(),
                    self.per_minute
                ),
            ));
        }
        window.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_pairs_only_unless_admitted_and_then_bounded() {
        let declared = [("REGISTRATION".to_string(), "ENCRYPT".to_string())].into();
        let strict = MintingRules::new(declared, false, 2);
        assert!(strict.may_mint("REGISTRATION", "ENCRYPT").is_ok());
        let e = strict.may_mint("REGISTRATION", "NEW").unwrap_err();
        assert_eq!(e.code(), KerCode::Kms026);
        assert!(e.message().contains("REGISTRATION/NEW"), "{e}");
        strict.declare("REGISTRATION", "NEW");
        assert!(strict.may_mint("REGISTRATION", "NEW").is_ok());

        let lenient = MintingRules::new(BTreeSet::new(), true, 2);
        assert!(lenient.may_mint("REGISTRATION", "A").is_ok());
        let e = lenient.may_mint("REGISTRATION", "bad id!").unwrap_err();
        assert_eq!(e.code(), KerCode::Kms005);
        let e = lenient
            .may_mint("REGISTRATION", &"X".repeat(65))
            .unwrap_err();
        assert_eq!(e.code(), KerCode::Kms005);
        assert!(lenient.may_mint("REGISTRATION", "B").is_ok());
        let e = lenient.may_mint("REGISTRATION", "C").unwrap_err();
        assert!(e.message().contains("in a minute"), "{e}");
    }
}
