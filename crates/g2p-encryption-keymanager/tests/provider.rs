//! The provider against the fake Keymanager and token server of `g2p-testkit`, which is
//! written from the spec independently of `g2p-mosip`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

use std::sync::Arc;
use std::time::Duration;

use g2p_encryption::clock::Clock;
use g2p_encryption::{
    EncryptionProvider, Error, ErrorKind, KeyUse, SignOptions, SignPayload, SignatureError,
};
use g2p_encryption_keymanager::{
    EncryptMode, EncryptionPath, KeymanagerConfig, KeymanagerProvider, KeymanagerSettings,
    VerifyMode,
};
use g2p_testkit::{FakeKeymanager, FakeOptions, TestKey, b64u, cipher, jose, unb64};
use serde_json::json;

fn settings(fake: &FakeKeymanager) -> KeymanagerSettings {
    KeymanagerConfig::settings(
        &fake.api_base_url(),
        &fake.auth_url(),
        &fake.options().client_id,
        &fake.options().client_secret,
    )
}

fn provider_with(
    fake: &FakeKeymanager,
    edit: impl FnOnce(&mut KeymanagerSettings),
) -> Arc<KeymanagerProvider> {
    let mut s = settings(fake);
    edit(&mut s);
    Arc::new(KeymanagerProvider::new(s.build().unwrap()).unwrap())
}

fn provider(fake: &FakeKeymanager) -> Arc<KeymanagerProvider> {
    provider_with(fake, |_| {})
}

fn ker_code(e: &Error) -> String {
    e.to_string()
}

#[tokio::test]
async fn one_token_for_many_concurrent_calls() {
    let fake = FakeKeymanager::start().await;
    fake.current_key("ID_REPO", "");
    let p = provider(&fake);
    let mut tasks = Vec::new();
    for i in 0..32 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            p.jwt_sign(&SignPayload::Json(json!({"n": i})), &SignOptions::default())
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(fake.token_requests(), 1);
    assert_eq!(fake.calls("jwtSign"), 32);
    // Every call carried the token as the Authorization cookie.
    let issued = fake.issued_tokens();
    for cookie in fake.cookies() {
        let value = cookie
            .unwrap()
            .strip_prefix("Authorization=")
            .unwrap()
            .to_string();
        assert!(issued.contains(&value));
    }
}

#[tokio::test]
async fn token_is_refreshed_ahead_of_expiry_from_the_jwt_exp() {
    // No expires_in: the expiry comes from the JWT's exp claim. A 20-second token is reused
    // for half its life, then refreshed before the Keymanager would refuse it.
    let fake = FakeKeymanager::start_with(FakeOptions {
        token_lifetime: 20,
        send_expires_in: false,
        ..FakeOptions::default()
    })
    .await;
    fake.current_key("ID_REPO", "");
    let clock = Clock::adjustable();
    let config = settings(&fake).build().unwrap().with_clock(clock.clone());
    let p = KeymanagerProvider::new(config).unwrap();
    p.jwks().await.unwrap();
    assert_eq!(fake.token_requests(), 1);
    clock.advance(Duration::from_secs(9));
    p.client().tokens().token().await.unwrap();
    assert_eq!(
        fake.token_requests(),
        1,
        "a token within half its life was not reused"
    );
    clock.advance(Duration::from_secs(2));
    p.client().tokens().token().await.unwrap();
    assert_eq!(
        fake.token_requests(),
        2,
        "token older than exp - skew was reused"
    );
    let t = p.client().tokens().token().await.unwrap();
    assert_eq!(fake.token_requests(), 2, "fresh token was not reused");
    assert_eq!(t.subject(), Some("service-account-openg2p-admin-client"));
}

#[tokio::test]
async fn a_401_invalidates_the_token_and_retries_once() {
    let fake = FakeKeymanager::start().await;
    let p = provider(&fake);
    let sealed = p.encrypt(b"first").await.unwrap();
    let tokens_before = fake.token_requests();
    // The Keymanager now refuses the cached token (e.g. Keycloak restarted).
    fake.expire_all_tokens();
    assert_eq!(p.decrypt(&sealed).await.unwrap(), b"first");
    assert_eq!(fake.token_requests(), tokens_before + 1);

    // Two 401s in a row: one retry only, then an auth error.
    fake.reject_next_with_401(2);
    let calls_before = fake.calls("decrypt");
    let e = p.decrypt(&sealed).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert!(e.to_string().contains("401"), "{e}");
    assert!(e.to_string().contains("KER-ATH-401"), "{e}");
    assert_eq!(fake.calls("decrypt"), calls_before + 2);
}

#[tokio::test]
async fn ker_errors_on_http_200_are_typed_errors() {
    let fake = FakeKeymanager::start().await;
    let p = provider(&fake);
    let sealed = p.encrypt(b"data").await.unwrap();
    fake.fail_next_with(
        "KER-CRY-012",
        "Not authorized to access keys of REGISTRATION",
    );
    let e = p.decrypt(&sealed).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Configuration);
    assert_eq!(
        ker_code(&e),
        "keymanager error KER-CRY-012: Not authorized to access keys of REGISTRATION"
    );
}

#[tokio::test]
async fn opaque_decryption_failures() {
    // Whatever refused a ciphertext — the tag (KER-FSE-004), the key unwrap (KER-KMS-019),
    // an unknown key (KER-KMS-025) — the caller gets one answer, without the KER code.
    let fake = FakeKeymanager::start().await;
    let p = provider(&fake);
    let sealed = p.encrypt(b"data").await.unwrap();
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let tag = p.decrypt(&tampered).await.unwrap_err();
    let mut foreign = sealed.clone();
    foreign[6..38].fill(0); // the thumbprint, after `VER_R2`
    let unknown = p.decrypt(&foreign).await.unwrap_err();
    fake.fail_next_with("KER-KMS-019", "Not able to decrypt Symmetric Key");
    let unwrap = p.decrypt(&sealed).await.unwrap_err();
    for e in [&tag, &unknown, &unwrap] {
        assert_eq!(e.kind(), ErrorKind::Refused);
        assert!(!e.to_string().contains("KER-"), "{e}");
    }
    assert_eq!(tag.to_string(), unknown.to_string());
    assert_eq!(tag.to_string(), unwrap.to_string());
}

#[tokio::test]
async fn jwt_sign_request_body_follows_spec_3_3() {
    let fake = FakeKeymanager::start().await;
    let p = provider(&fake);
    let doc = json!({"name": "Alice", "household": 4});
    let options = SignOptions {
        include_payload: false,
        include_certificate: true,
        include_cert_hash: true,
        certificate_url: Some("https://example.org/cert.pem".into()),
    };
    let token = p
        .jwt_sign(&SignPayload::Json(doc.clone()), &options)
        .await
        .unwrap();

    let body = fake.last_body("jwtSign").unwrap();
    assert_eq!(body["id"], "string");
    assert_eq!(body["version"], "string");
    assert_eq!(body["metadata"], json!({}));
    let rt = body["requesttime"].as_str().unwrap();
    assert_eq!(rt.len(), 24, "{rt}");
    assert!(rt.ends_with('Z') && &rt[19..20] == ".", "{rt}");
    let request = body["request"].as_object().unwrap();
    let expected_payload = serde_json::to_vec(&doc).unwrap();
    assert_eq!(request["dataToSign"], b64u(&expected_payload));
    assert!(!request["dataToSign"].as_str().unwrap().contains('='));
    assert_eq!(request["applicationId"], "ID_REPO");
    assert_eq!(
        request["referenceId"], "",
        "referenceId must be sent as \"\" (Q7)"
    );
    assert_eq!(request["includePayload"], false);
    assert_eq!(request["includeCertificate"], true);
    assert_eq!(request["includeCertHash"], true);
    assert_eq!(request["certificateUrl"], "https://example.org/cert.pem");
    let mut keys: Vec<&str> = request.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "applicationId",
            "certificateUrl",
            "dataToSign",
            "includeCertHash",
            "includeCertificate",
            "includePayload",
            "referenceId"
        ]
    );

    // The token is detached, carries the fake's certificate and verifies independently.
    let key = fake.current_key("ID_REPO", "");
    assert!(token.contains(".."));
    assert!(jose::verify(
        key.public_key_der(),
        &token,
        Some(&b64u(&expected_payload))
    ));
    let header: serde_json::Value =
        serde_json::from_slice(&unb64(token.split('.').next().unwrap())).unwrap();
    assert_eq!(header["kid"], fake.current_key_id("ID_REPO", ""));
    assert_eq!(unb64(header["x5c"][0].as_str().unwrap()), key.cert_der());
    assert_eq!(header["x5u"], "https://example.org/cert.pem");

    // And our own verifier accepts it with the detached payload.
    let verified = p.jwt_verify(&token, Some(&expected_payload)).await.unwrap();
    assert_eq!(verified.payload_json().unwrap(), doc);
}

#[tokio::test]
async fn text_is_signed_with_jws_sign_and_explicit_flags() {
    let fake = FakeKeymanager::start().await;
    let p = provider(&fake);
    let token = p
        .jwt_sign(
            &SignPayload::Text("not json at all".into()),
            &SignOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(fake.calls("jwtSign"), 0);
    let request = fake.last_body("jwsSign").unwrap()["request"].clone();
    assert_eq!(
        request["validateJson"], false,
        "validateJson must be sent (Q14)"
    );
    assert_eq!(request["b64JWSHeaderParam"], true);
    assert_eq!(request["signAlgorithm"], "RS256");
    assert_eq!(request["referenceId"], "");
    let verified = p.jwt_verify(&token, None).await.unwrap();
    assert_eq!(verified.payload(), b"not json at all");
    let e = p
        .jwt_sign(&SignPayload::Text(String::new()), &SignOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn local_encryption_opens_with_the_fakes_private_key() {
    for (salt, aad) in [
        (None, None),
        (None, Some(b"household-aad".to_vec())),
        (Some((0u8..12).collect::<Vec<u8>>()), Some(b"aad".to_vec())),
        (Some((0u8..32).collect::<Vec<u8>>()), None),
    ] {
        let fake = FakeKeymanager::start().await;
        let p = provider_with(&fake, |s| {
            s.encrypt_salt = salt.as_deref().map(b64u);
            s.encrypt_aad = aad.as_deref().map(b64u);
        });
        let plaintext = "Amina Yusuf, Plot 12, Kisumu; M-Pesa +254700000000".as_bytes();
        let sealed = p.encrypt(plaintext).await.unwrap();
        assert_eq!(p.encryption_path().await.unwrap(), EncryptionPath::Local);
        // Sealed locally: no /encrypt, one canary /decrypt, one certificate fetch.
        let sealed2 = p.encrypt(plaintext).await.unwrap();
        assert_ne!(sealed, sealed2);
        assert_eq!(fake.calls("encrypt"), 0);
        assert_eq!(fake.calls("decrypt"), 1);
        assert_eq!(fake.calls("getCertificate"), 1);
        let key = fake.current_key("REGISTRATION", "ENCRYPT");
        let opened = cipher::open(&key, salt.as_deref(), aad.as_deref(), &sealed).unwrap();
        assert_eq!(opened, plaintext);
        let (version_header, thumbprint, _, _) = cipher::split(&sealed).unwrap();
        assert_eq!(version_header, salt.is_none() && aad.is_none());
        assert_eq!(thumbprint, key.thumbprint());
        // And the Keymanager decrypts it.
        assert_eq!(p.decrypt(&sealed2).await.unwrap(), plaintext);
    }
}

#[tokio::test]
async fn a_failed_canary_falls_back_to_remote_encrypt() {
    let fake = FakeKeymanager::start().await;
    fake.serve_mismatched_certificate(true);
    let p = provider(&fake);
    let sealed = p.encrypt(b"beneficiary").await.unwrap();
    assert_eq!(p.encryption_path().await.unwrap(), EncryptionPath::Remote);
    assert_eq!(fake.calls("encrypt"), 1);
    assert_eq!(fake.calls("decrypt"), 1, "one canary");
    let key = fake.current_key("REGISTRATION", "ENCRYPT");
    assert_eq!(
        cipher::open(&key, None, None, &sealed).unwrap(),
        b"beneficiary"
    );
    p.encrypt(b"again").await.unwrap();
    assert_eq!(fake.calls("encrypt"), 2);
    assert_eq!(
        fake.calls("decrypt"),
        1,
        "the verdict is cached with the certificate"
    );
}

#[tokio::test]
async fn remote_encrypt_mode_always_calls_encrypt() {
    let fake = FakeKeymanager::start().await;
    let salt: Vec<u8> = (0u8..12).collect();
    let p = provider_with(&fake, |s| {
        s.encrypt_mode = Some(EncryptMode::Remote);
        s.encrypt_salt = Some(b64u(&salt));
    });
    let sealed = p.encrypt(b"x").await.unwrap();
    p.encrypt(b"y").await.unwrap();
    assert_eq!(fake.calls("encrypt"), 2);
    assert_eq!(fake.calls("getCertificate"), 0);
    let request = fake.last_body("encrypt").unwrap()["request"].clone();
    assert_eq!(request["salt"], b64u(&salt));
    assert!(
        request.get("aad").is_none(),
        "absent aad is omitted, not null (Q8)"
    );
    assert_eq!(request["referenceId"], "ENCRYPT");
    let key = fake.current_key("REGISTRATION", "ENCRYPT");
    assert_eq!(
        cipher::open(&key, Some(&salt), None, &sealed).unwrap(),
        b"x"
    );
}

#[tokio::test]
async fn a_foreign_certificate_fails_local_verification() {
    let fake = FakeKeymanager::start().await;
    let real_kid = fake.current_key_id("ID_REPO", "");
    let p = provider(&fake);
    let intruder = TestKey::generate("ID_REPO");
    let x5c = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(intruder.cert_der())
    };
    let payload = br#"{"amount":1000000}"#;
    for header in [
        json!({"alg": "RS256", "x5c": [x5c]}),
        json!({"alg": "RS256", "x5c": [x5c], "kid": real_kid}),
        json!({"alg": "RS256", "kid": real_kid}),
        json!({"alg": "RS256"}),
    ] {
        let forged = jose::sign(&intruder, &header, payload, false);
        let e = p.jwt_verify(&forged, None).await.unwrap_err();
        assert!(matches!(e, Error::InvalidSignature(_)), "{header}: {e}");
    }
    // The Keymanager's /jwtVerify would accept the first one (it trusts x5c, spec 5.3);
    // remote mode refuses it before asking.
    let remote = provider_with(&fake, |s| s.verify_mode = Some(VerifyMode::Remote));
    let forged = jose::sign(
        &intruder,
        &json!({"alg": "RS256", "x5c": [x5c]}),
        payload,
        false,
    );
    let e = remote.jwt_verify(&forged, None).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidSignature(SignatureError::UntrustedCertificate)
        ),
        "{e}"
    );
    assert_eq!(fake.calls("jwtVerify"), 0);
}

#[tokio::test]
async fn verification_never_crosses_applications_in_remote_mode() {
    // /jwtVerify would verify against whatever key the token names; a kid or certificate hash
    // that is not one of the signing keys is refused here, without asking.
    let fake = FakeKeymanager::start().await;
    fake.current_key("ID_REPO", "");
    let other = fake.current_key_id("REGISTRATION", "");
    let intruder = TestKey::generate("intruder");
    let p = provider_with(&fake, |s| s.verify_mode = Some(VerifyMode::Remote));
    for header in [
        json!({"alg": "RS256", "kid": other}),
        json!({"alg": "RS256", "kid": "made-up"}),
        json!({"alg": "RS256", "x5t#S256": b64u(&intruder.thumbprint())}),
    ] {
        let token = jose::sign(&intruder, &header, b"{}", false);
        let e = p.jwt_verify(&token, None).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Refused, "{header}: {e}");
    }
    assert_eq!(fake.calls("jwtVerify"), 0);
}

#[tokio::test]
async fn remote_verification_uses_jwt_verify() {
    let fake = FakeKeymanager::start().await;
    let p = provider_with(&fake, |s| s.verify_mode = Some(VerifyMode::Remote));
    let doc = json!({"a": 1});
    let options = SignOptions {
        include_payload: false,
        ..SignOptions::default()
    };
    let token = p
        .jwt_sign(&SignPayload::Json(doc.clone()), &options)
        .await
        .unwrap();
    let bytes = serde_json::to_vec(&doc).unwrap();
    let verified = p.jwt_verify(&token, Some(&bytes)).await.unwrap();
    assert_eq!(verified.payload(), bytes);
    let request = fake.last_body("jwtVerify").unwrap()["request"].clone();
    assert_eq!(request["actualData"], b64u(&bytes));
    assert_eq!(request["validateTrust"], false);
    assert_eq!(request["referenceId"], "");
    let e = p.jwt_verify(&token, Some(br#"{"a":2}"#)).await.unwrap_err();
    assert!(
        matches!(e, Error::InvalidSignature(SignatureError::RemoteVerdict(_))),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::Refused);
}

#[tokio::test]
async fn tampered_and_malformed_tokens_are_refused() {
    let fake = FakeKeymanager::start().await;
    let p = provider(&fake);
    let token = p
        .jwt_sign(
            &SignPayload::Json(json!({"paid": 10})),
            &SignOptions::default(),
        )
        .await
        .unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64u(br#"{"paid":99}"#), parts[2]);
    let e = p.jwt_verify(&tampered, None).await.unwrap_err();
    assert!(
        matches!(e, Error::InvalidSignature(SignatureError::Mismatch)),
        "{e}"
    );
    for garbage in ["", "a.b", "not a jws", "e30.e30.!!!"] {
        let e = p.jwt_verify(garbage, None).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{garbage:?}: {e}");
    }
    let detached = p
        .jwt_sign(
            &SignPayload::Json(json!({"x": 1})),
            &SignOptions {
                include_payload: false,
                ..SignOptions::default()
            },
        )
        .await
        .unwrap();
    let e = p.jwt_verify(&detached, None).await.unwrap_err();
    assert!(
        matches!(e, Error::InvalidSignature(SignatureError::MissingPayload)),
        "{e}"
    );
}

#[tokio::test]
async fn tokens_signed_before_a_rotation_still_verify() {
    let fake = FakeKeymanager::start().await;
    let p = provider(&fake);
    let old = p
        .jwt_sign(&SignPayload::Json(json!({"v": 1})), &SignOptions::default())
        .await
        .unwrap();
    p.jwt_verify(&old, None).await.unwrap();
    assert_eq!(fake.calls("getAllCertificates"), 2);
    fake.rotate("ID_REPO", "");
    let new = p
        .jwt_sign(&SignPayload::Json(json!({"v": 2})), &SignOptions::default())
        .await
        .unwrap();
    // The cached set does not know the new kid yet: one refetch (enc + sig) finds it.
    let verified = p.jwt_verify(&new, None).await.unwrap();
    assert_eq!(
        verified.key_id(),
        Some(fake.current_key_id("ID_REPO", "").as_str())
    );
    assert_eq!(fake.calls("getAllCertificates"), 4);
    // The old token still verifies, by its kid, from the cache.
    p.jwt_verify(&old, None).await.unwrap();
    assert_eq!(fake.calls("getAllCertificates"), 4);

    // Made-up key ids do not make the provider hammer the Keymanager: a second rotation
    // within the refetch interval is not looked up again.
    fake.rotate("ID_REPO", "");
    let newer = p
        .jwt_sign(&SignPayload::Json(json!({"v": 3})), &SignOptions::default())
        .await
        .unwrap();
    let e = p.jwt_verify(&newer, None).await.unwrap_err();
    assert!(
        matches!(e, Error::InvalidSignature(SignatureError::UnknownKey(_))),
        "{e}"
    );
    assert_eq!(fake.calls("getAllCertificates"), 4);
}

#[tokio::test]
async fn jwks_lists_encryption_and_signing_keys() {
    let fake = FakeKeymanager::start().await;
    let enc_kid = fake.current_key_id("REGISTRATION", "ENCRYPT");
    let sig_kid = fake.current_key_id("ID_REPO", "");
    let p = provider(&fake);
    let set = p.jwks().await.unwrap();
    assert_eq!(set.keys.len(), 2);
    let enc = set.find(&enc_kid).unwrap();
    assert_eq!(enc.key_use, Some(KeyUse::Enc));
    assert_eq!(
        unb64(&enc.x5c[0]),
        fake.current_key("REGISTRATION", "ENCRYPT").cert_der()
    );
    let sig = set.find(&sig_kid).unwrap();
    assert_eq!(sig.key_use, Some(KeyUse::Sig));
    assert_eq!(sig.alg.as_deref(), Some("RS256"));
    // Cached: a second call does not ask again.
    p.jwks().await.unwrap();
    assert_eq!(fake.calls("getAllCertificates"), 2);
}

#[tokio::test]
async fn bad_ciphertexts_are_refused_before_any_call() {
    let fake = FakeKeymanager::start().await;
    let p = provider(&fake);
    for bad in [
        &b""[..],
        b"plain text without splitter",
        b"#KEY_SPLITTER#abc",
    ] {
        let e = p.decrypt(bad).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("ciphertext"), "{e}");
    }
    assert_eq!(fake.calls("decrypt"), 0);
    let e = p.encrypt(b"").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn wrong_credentials_surface_the_oauth_error_without_the_secret() {
    let fake = FakeKeymanager::start().await;
    let p = provider_with(&fake, |s| {
        s.auth_client_secret = Some("wrong-secret-value".to_string().into());
    });
    let e = p.jwks().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth);
    let text = e.to_string();
    assert!(text.contains("invalid_client"), "{text}");
    assert!(
        text.contains("Invalid client or Invalid client credentials"),
        "{text}"
    );
    assert!(!text.contains("wrong-secret-value"));
    assert!(!format!("{p:?}").contains("wrong-secret-value"));
    assert_eq!(fake.calls("getAllCertificates"), 0);
}

#[tokio::test]
async fn timeouts_and_unreachable_servers_are_typed() {
    let fake = FakeKeymanager::start().await;
    let p = provider_with(&fake, |s| s.api_timeout = Some(1));
    p.client().tokens().token().await.unwrap();
    fake.set_delay(Some(Duration::from_millis(2500)));
    let e = p.jwks().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.to_string().contains("within 1 s"), "{e}");

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut s = KeymanagerConfig::settings(
        &format!("http://{closed}/v1/keymanager"),
        &format!("http://{closed}/token"),
        "c",
        "s",
    );
    s.api_timeout = Some(2);
    let p = KeymanagerProvider::new(s.build().unwrap()).unwrap();
    let e = p.jwks().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains(&closed.to_string()), "{e}");
}
