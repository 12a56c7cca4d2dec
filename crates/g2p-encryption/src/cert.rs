//! X.509 certificates as the key manager hands them out (PEM or DER), reduced to what
//! encryption and verification need.

use aws_lc_rs::digest;
use der::{Decode, Encode};
use x509_cert::Certificate;

use crate::{Error, b64};

/// A parsed certificate: its DER, its RSA public key and its validity.
///
/// Negative serial numbers (which real MOSIP certificates carry) are accepted.
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    der: Vec<u8>,
    spki_der: Vec<u8>,
    modulus: Vec<u8>,
    exponent: Vec<u8>,
    not_before: i64,
    not_after: i64,
}

impl std::fmt::Debug for CertificateInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateInfo")
            .field("sha256", &b64::encode_b64u(&self.sha256()))
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish()
    }
}

const RSA_ENCRYPTION_OID: &str = "1.2.840.113549.1.1.1";

impl CertificateInfo {
    /// Parses the first certificate of a PEM text.
    ///
    /// # Errors
    /// [`Error::InvalidCertificate`] when there is no `CERTIFICATE` block or it does not parse.
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        Self::from_der(&pem_to_der(pem)?)
    }

    /// Parses a DER-encoded certificate holding an RSA public key.
    ///
    /// # Errors
    /// [`Error::InvalidCertificate`] when the DER is not an X.509 certificate or the key is not RSA.
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        let cert = Certificate::from_der(der)
            .map_err(|e| Error::InvalidCertificate(format!("not an X.509 certificate: {e}")))?;
        let tbs = &cert.tbs_certificate;
        let spki = &tbs.subject_public_key_info;
        if spki.algorithm.oid.to_string() != RSA_ENCRYPTION_OID {
            return Err(Error::InvalidCertificate(format!(
                "public key algorithm {} is not RSA",
                spki.algorithm.oid
            )));
        }
        let spki_der = spki
            .to_der()
            .map_err(|e| Error::InvalidCertificate(format!("public key: {e}")))?;
        let key_bytes = spki.subject_public_key.as_bytes().ok_or_else(|| {
            Error::InvalidCertificate("public key bit string is not whole bytes".into())
        })?;
        let rsa = pkcs1::RsaPublicKey::from_der(key_bytes)
            .map_err(|e| Error::InvalidCertificate(format!("RSA public key: {e}")))?;
        Ok(Self {
            der: der.to_vec(),
            spki_der,
            modulus: rsa.modulus.as_bytes().to_vec(),
            exponent: rsa.public_exponent.as_bytes().to_vec(),
            not_before: unix(tbs.validity.not_before),
            not_after: unix(tbs.validity.not_after),
        })
    }

    /// DER of the whole certificate.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// DER of the SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// RSA modulus, big-endian without leading zeros.
    pub fn modulus(&self) -> &[u8] {
        &self.modulus
    }

    /// RSA public exponent, big-endian without leading zeros.
    pub fn exponent(&self) -> &[u8] {
        &self.exponent
    }

    /// notBefore as Unix seconds.
    pub fn not_before(&self) -> i64 {
        self.not_before
    }

    /// notAfter as Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// SHA-256 of the DER: the MOSIP thumbprint and `x5t#S256`.
    pub fn sha256(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest::digest(&digest::SHA256, &self.der).as_ref());
        out
    }

    /// SHA-1 of the DER (`x5t`).
    pub fn sha1(&self) -> [u8; 20] {
        let mut out = [0u8; 20];
        out.copy_from_slice(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &self.der).as_ref());
        out
    }

    /// The certificate as PEM with 64-character lines and a trailing newline.
    pub fn to_pem(&self) -> String {
        der_to_pem(&self.der)
    }
}

fn unix(time: x509_cert::time::Time) -> i64 {
    let secs = time.to_unix_duration().as_secs();
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// Extracts the DER of the first `CERTIFICATE` block of a PEM text.
///
/// # Errors
/// [`Error::InvalidCertificate`] when no block is found or its body is not base64.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, Error> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem
        .find(BEGIN)
        .ok_or_else(|| Error::InvalidCertificate("no BEGIN CERTIFICATE line in PEM".into()))?
        + BEGIN.len();
    let len = pem[start..]
        .find(END)
        .ok_or_else(|| Error::InvalidCertificate("no END CERTIFICATE line in PEM".into()))?;
    let body: String = pem[start..start + len]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    b64::decode_lenient(&body).map_err(|e| Error::InvalidCertificate(format!("PEM body: {e}")))
}

/// Encodes DER as a PEM `CERTIFICATE` block (64-character lines, `\n`, trailing newline).
pub fn der_to_pem(der: &[u8]) -> String {
    let body = b64::encode_b64(der);
    let mut pem = String::with_capacity(body.len() + body.len() / 64 + 60);
    pem.push_str("-----BEGIN CERTIFICATE-----\n");
    for chunk in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let err = CertificateInfo::from_pem("hello").unwrap_err();
        assert!(err.to_string().contains("BEGIN CERTIFICATE"), "{err}");
        let err = CertificateInfo::from_der(b"\x30\x03\x02\x01\x01").unwrap_err();
        assert!(
            err.to_string().contains("not an X.509 certificate"),
            "{err}"
        );
    }

    #[test]
    fn pem_round_trip_keeps_bytes() {
        let der = vec![1u8; 100];
        let pem = der_to_pem(&der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert!(pem.ends_with("-----END CERTIFICATE-----\n"));
        assert_eq!(pem_to_der(&pem).unwrap(), der);
    }
}
