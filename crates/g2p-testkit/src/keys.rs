//! RSA-2048 keys with X.509 certificates.

use aws_lc_rs::digest;
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, PrivateDecryptingKey,
};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256, RSA_PSS_SHA256, RsaKeyPair};
use rcgen::{CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// An RSA-2048 key pair and a certificate for it.
pub struct TestKey {
    pkcs8: Vec<u8>,
    signing: RsaKeyPair,
    cert_der: Vec<u8>,
}

impl std::fmt::Debug for TestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestKey")
            .field("sha256", &self.thumbprint_hex())
            .finish()
    }
}

impl TestKey {
    /// A new key with a self-signed certificate for `cn`, valid from yesterday for a year.
    pub fn generate(cn: &str) -> Self {
        Self::generate_with_validity(cn, -1, 365)
    }

    /// A new key whose self-signed certificate is valid from `from_days` to `to_days`
    /// relative to now.
    pub fn generate_with_validity(cn: &str, from_days: i64, to_days: i64) -> Self {
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        let pkcs8 = AsDer::<Pkcs8V1Der>::as_der(&private)
            .unwrap()
            .as_ref()
            .to_vec();
        let signing = RsaKeyPair::from_pkcs8(&pkcs8).unwrap();
        let key_pair = KeyPair::from_pkcs8_der_and_sign_algo(
            &pkcs8.as_slice().into(),
            &rcgen::PKCS_RSA_SHA256,
        )
        .unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        dn.push(DnType::OrganizationName, "IITB");
        params.distinguished_name = dn;
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from_days);
        params.not_after = now + time::Duration::days(to_days);
        let cert = params.self_signed(&key_pair).unwrap();
        TestKey {
            pkcs8,
            signing,
            cert_der: cert.der().to_vec(),
        }
    }

    /// PKCS#8 DER of the private key.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// Certificate DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Certificate PEM, 64-character lines, trailing newline (as BouncyCastle writes it).
    pub fn cert_pem(&self) -> String {
        use base64::Engine as _;
        let body = base64::engine::general_purpose::STANDARD.encode(&self.cert_der);
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        pem
    }

    /// SHA-256 of the certificate DER.
    pub fn thumbprint(&self) -> [u8; 32] {
        digest::digest(&digest::SHA256, &self.cert_der)
            .as_ref()
            .try_into()
            .unwrap()
    }

    /// Upper-hex thumbprint, as MOSIP stores it.
    pub fn thumbprint_hex(&self) -> String {
        hex::encode_upper(self.thumbprint())
    }

    /// Public key as DER RSAPublicKey.
    pub fn public_key_der(&self) -> &[u8] {
        self.signing.public_key().as_ref()
    }

    /// RSASSA-PKCS1-v1_5 SHA-256 signature.
    pub fn sign_rs256(&self, message: &[u8]) -> Vec<u8> {
        self.sign(&RSA_PKCS1_SHA256, message)
    }

    /// RSASSA-PSS SHA-256 signature.
    pub fn sign_ps256(&self, message: &[u8]) -> Vec<u8> {
        self.sign(&RSA_PSS_SHA256, message)
    }

    fn sign(&self, alg: &'static dyn aws_lc_rs::signature::RsaEncoding, message: &[u8]) -> Vec<u8> {
        let mut sig = vec![0u8; self.signing.public_modulus_len()];
        self.signing
            .sign(
                alg,
                &aws_lc_rs::rand::SystemRandom::new(),
                message,
                &mut sig,
            )
            .unwrap();
        sig
    }

    /// RSA-OAEP (SHA-256, MGF1-SHA-256) decryption; `None` when it fails.
    pub fn oaep_decrypt(&self, ciphertext: &[u8]) -> Option<Vec<u8>> {
        let private = PrivateDecryptingKey::from_pkcs8(&self.pkcs8).ok()?;
        let oaep = OaepPrivateDecryptingKey::new(private).ok()?;
        let mut out = vec![0u8; oaep.min_output_size()];
        let plain = oaep
            .decrypt(&OAEP_SHA256_MGF1SHA256, ciphertext, &mut out, None)
            .ok()?;
        Some(plain.to_vec())
    }

    /// RSA-OAEP (SHA-256, MGF1-SHA-256) encryption to this key.
    pub fn oaep_encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        let private = PrivateDecryptingKey::from_pkcs8(&self.pkcs8).unwrap();
        let public = aws_lc_rs::rsa::OaepPublicEncryptingKey::new(private.public_key()).unwrap();
        let mut out = vec![0u8; public.ciphertext_size()];
        public
            .encrypt(&OAEP_SHA256_MGF1SHA256, plaintext, &mut out, None)
            .unwrap()
            .to_vec()
    }
}
