//! `keyId` / `kid` derivation (spec 6.5).

use aws_lc_rs::digest;
use time::Date;
use time::macros::format_description;

use g2p_encryption::b64;

/// `UPPERHEX(SHA-1(app + "_" + ref + "_" + MM-dd-yyyy))`, stored as `uni_ident`.
pub fn unique_identifier(application_id: &str, reference_id: &str, generated_on: Date) -> String {
    let date = generated_on
        .format(format_description!("[month]-[day]-[year]"))
        .unwrap_or_default();
    unique_identifier_of(&format!("{application_id}_{reference_id}_{date}"))
}

/// `UPPERHEX(SHA-1(value))` for an arbitrary unique value (e.g. with a disambiguator, or
/// `app_ref_THUMBPRINT` for uploaded other-domain certificates).
pub fn unique_identifier_of(unique_value: &str) -> String {
    hex::encode_upper(digest::digest(
        &digest::SHA1_FOR_LEGACY_USE_ONLY,
        unique_value.as_bytes(),
    ))
}

/// `b64u(SHA-256(bytes_from_hex(unique_identifier)))`; `None` when the identifier is not hex.
pub fn key_id_from_unique_identifier(unique_identifier: &str) -> Option<String> {
    let bytes = hex::decode(unique_identifier).ok()?;
    Some(b64::encode_b64u(
        digest::digest(&digest::SHA256, &bytes).as_ref(),
    ))
}

/// The keyId of the key generated for `(application_id, reference_id)` on `generated_on`.
pub fn key_id(application_id: &str, reference_id: &str, generated_on: Date) -> String {
    let unique = unique_identifier(application_id, reference_id, generated_on);
    key_id_from_unique_identifier(&unique).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn non_hex_identifier_has_no_key_id() {
        assert_eq!(key_id_from_unique_identifier("zz"), None);
        assert_eq!(key_id("A", "B", date!(2024 - 01 - 16)).len(), 43);
    }
}
