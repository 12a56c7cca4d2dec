//! Certificates and requests of the store's keys: subjects, X.509 parameters per key kind,
//! PKCS#10 requests.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{KeyKind, KeyRecord};
use crate::error::KmsError;

/// Subject fields of a certificate signing request; blank ones take the certificate's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsrSubject {
    /// CN.
    pub common_name: Option<String>,
    /// OU.
    pub organization_unit: Option<String>,
    /// O.
    pub organization: Option<String>,
    /// L.
    pub location: Option<String>,
    /// ST.
    pub state: Option<String>,
    /// C.
    pub country: Option<String>,
}

pub(super) fn distinguished_name(
    kind: KeyKind,
    application_id: &str,
    reference_id: &str,
) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    let cn = match kind {
        KeyKind::Root => "ROOT".to_string(),
        KeyKind::Master => application_id.to_string(),
        KeyKind::Sign | KeyKind::Base | KeyKind::Partner => {
            format!("{application_id}-{reference_id}")
        }
    };
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationalUnitName, "g2p-kms");
    dn.push(DnType::OrganizationName, "g2p-keymanager");
    dn
}

pub(super) fn certificate_params(
    kind: KeyKind,
    application_id: &str,
    reference_id: &str,
    not_before: i64,
    not_after: i64,
) -> Result<CertificateParams, KmsError> {
    let internal = |e: rcgen::Error| KmsError::Internal(format!("certificate: {e}"));
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(internal)?;
    params.distinguished_name = distinguished_name(kind, application_id, reference_id);
    let (is_ca, usages) = match kind {
        KeyKind::Root => (
            IsCa::Ca(BasicConstraints::Constrained(2)),
            vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyCertSign,
            ],
        ),
        KeyKind::Master => (
            IsCa::Ca(BasicConstraints::Constrained(1)),
            vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyCertSign,
            ],
        ),
        KeyKind::Sign => (IsCa::NoCa, vec![KeyUsagePurpose::DigitalSignature]),
        KeyKind::Base | KeyKind::Partner => (IsCa::NoCa, vec![KeyUsagePurpose::KeyEncipherment]),
    };
    params.is_ca = is_ca;
    params.key_usages = usages;
    params.not_before = OffsetDateTime::from_unix_timestamp(not_before)
        .map_err(|e| KmsError::Internal(e.to_string()))?;
    params.not_after = OffsetDateTime::from_unix_timestamp(not_after)
        .map_err(|e| KmsError::Internal(e.to_string()))?;
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial).map_err(|_| KmsError::Internal("no randomness".into()))?;
    serial[0] = (serial[0] & 0x7f) | 0x01; // positive and 16 bytes long
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(params)
}

pub(crate) fn generate_pkcs8() -> Result<Zeroizing<Vec<u8>>, KmsError> {
    let key = PrivateDecryptingKey::generate(KeySize::Rsa2048)
        .map_err(|_| KmsError::Internal("RSA key generation failed".into()))?;
    let der = AsDer::<Pkcs8V1Der>::as_der(&key)
        .map_err(|_| KmsError::Internal("PKCS#8 encoding failed".into()))?;
    Ok(Zeroizing::new(der.as_ref().to_vec()))
}

pub(super) fn rcgen_key(pkcs8: &[u8]) -> Result<KeyPair, KmsError> {
    KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.into(), &rcgen::PKCS_RSA_SHA256)
        .map_err(|e| KmsError::Internal(format!("key: {e}")))
}

/// A PKCS#10 request (PEM) for the key `pkcs8` of `record`; blank subject fields take the
/// certificate's.
pub(super) fn certificate_request(
    record: &KeyRecord,
    pkcs8: &[u8],
    subject: &CsrSubject,
) -> Result<String, KmsError> {
    let key = rcgen_key(pkcs8)?;
    let internal = |e: rcgen::Error| KmsError::Internal(format!("certificate request: {e}"));
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(internal)?;
    let defaults = distinguished_name(record.kind, &record.application_id, &record.reference_id);
    let mut dn = DistinguishedName::new();
    let given = |v: &Option<String>| v.as_ref().filter(|v| !v.trim().is_empty()).cloned();
    for (kind, value) in [
        (DnType::CommonName, given(&subject.common_name)),
        (
            DnType::OrganizationalUnitName,
            given(&subject.organization_unit),
        ),
        (DnType::OrganizationName, given(&subject.organization)),
        (DnType::LocalityName, given(&subject.location)),
        (DnType::StateOrProvinceName, given(&subject.state)),
        (DnType::CountryName, given(&subject.country)),
    ] {
        match value {
            Some(v) => dn.push(kind, v),
            None => {
                if let Some(d) = defaults.get(&kind) {
                    dn.push(kind, d.clone());
                }
            }
        }
    }
    params.distinguished_name = dn;
    params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(internal)
}
