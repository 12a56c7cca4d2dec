//! One provider conformance suite, run against `LocalProvider` and against the Keymanager
//! provider pointed at the embedded server; plus server checks from spec section 10,
//! rotation and restart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

use std::sync::Arc;

use g2p_encryption::{
    EncryptionProvider, Error, ErrorKind, KeyUse, SignOptions, SignPayload, SignatureError,
};
use g2p_encryption_keymanager::{KeymanagerConfig, KeymanagerProvider};
use g2p_kms::server::auth::{Client, Realm};
use g2p_kms::server::{ServerState, serve};
use g2p_kms::{Kek, Kms, LocalProvider, LocalSettings, StoreOptions};
use g2p_testkit::{TestKey, b64u, jose, unb64};
use serde_json::{Value, json};

const CLIENT: &str = "openg2p-admin-client";
const SECRET: &str = "kms-test-secret";

fn open(dir: &std::path::Path) -> Arc<Kms> {
    Arc::new(Kms::open(dir, Kek::load(dir, None).unwrap(), StoreOptions::default()).unwrap())
}

struct Server {
    base: String,
    kms: Arc<Kms>,
}

async fn start(kms: Arc<Kms>, clients: Vec<Client>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let realm = Realm::new("openg2p", &base, clients, 300).unwrap();
    let state = ServerState::new(kms.clone(), realm);
    tokio::spawn(serve(listener, state, std::future::pending()));
    Server { base, kms }
}

fn default_clients() -> Vec<Client> {
    vec![
        // Administration is asked for explicitly.
        Client::parse(&format!("{CLIENT}:{SECRET}:REGISTRATION_ADMIN,KEY_MAKER")).unwrap(),
        Client::parse("reader:reader-secret:TEST").unwrap(),
    ]
}

fn remote(server: &Server) -> KeymanagerProvider {
    let s = KeymanagerConfig::settings(
        &format!("{}/v1/keymanager", server.base),
        &format!(
            "{}/realms/openg2p/protocol/openid-connect/token",
            server.base
        ),
        CLIENT,
        SECRET,
    );
    KeymanagerProvider::new(s.build().unwrap()).unwrap()
}

/// What every provider must do, whichever key manager is behind it.
async fn conformance(p: &dyn EncryptionProvider) {
    // Encrypt / decrypt, sizes from 1 byte to 1 MiB.
    for size in [1usize, 31, 1024, 1 << 20] {
        let pt: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let ct = p.encrypt(&pt).await.unwrap();
        let parsed = g2p_mosip::cipher::parse(&ct).unwrap();
        assert!(parsed.thumbprint.is_some() && parsed.version_header);
        assert_eq!(p.decrypt(&ct).await.unwrap(), pt, "size {size}");
    }
    // Tampered data is refused; malformed data is invalid input.
    let mut ct = p.encrypt(b"household 42").await.unwrap();
    let n = ct.len();
    ct[n - 1] ^= 1;
    let e = p.decrypt(&ct).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    assert_eq!(e.to_string(), Error::ciphertext_refused().to_string());
    assert_eq!(
        p.decrypt(b"no splitter").await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        p.encrypt(b"").await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );

    // Sign / verify: attached, detached, text, certificate options; tampering refused.
    let doc = json!({"beneficiary": "B-7", "amount": 250});
    let token = p
        .jwt_sign(&SignPayload::Json(doc.clone()), &SignOptions::default())
        .await
        .unwrap();
    assert_eq!(
        p.jwt_verify(&token, None)
            .await
            .unwrap()
            .payload_json()
            .unwrap(),
        doc
    );
    let options = SignOptions {
        include_payload: false,
        include_certificate: true,
        include_cert_hash: true,
        certificate_url: Some("https://example.org/c".into()),
    };
    let detached = p
        .jwt_sign(&SignPayload::Text("pay B-7".into()), &options)
        .await
        .unwrap();
    assert!(detached.contains(".."));
    let header: Value =
        serde_json::from_slice(&unb64(detached.split('.').next().unwrap())).unwrap();
    assert_eq!(header["alg"], "RS256");
    assert!(
        header["kid"].is_string() && header["x5c"].is_array() && header["x5t#S256"].is_string()
    );
    assert_eq!(header["x5u"], "https://example.org/c");
    assert_eq!(
        p.jwt_verify(&detached, Some(b"pay B-7"))
            .await
            .unwrap()
            .payload(),
        b"pay B-7"
    );
    let e = p.jwt_verify(&detached, Some(b"pay B-8")).await.unwrap_err();
    assert!(
        matches!(e, Error::InvalidSignature(SignatureError::Mismatch)),
        "{e}"
    );

    // A token carrying a foreign certificate is refused.
    let intruder = TestKey::generate("ID_REPO");
    let x5c = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(intruder.cert_der())
    };
    let forged = jose::sign(
        &intruder,
        &json!({"alg": "RS256", "x5c": [x5c], "kid": header["kid"]}),
        b"{}",
        false,
    );
    assert!(matches!(
        p.jwt_verify(&forged, None).await.unwrap_err(),
        Error::InvalidSignature(_)
    ));

    // JWKS: enc and sig keys, kid = keyId, the signing kid among them.
    let set = p.jwks().await.unwrap();
    assert!(set.keys.iter().any(|k| k.key_use == Some(KeyUse::Enc)));
    let sig = set.find(header["kid"].as_str().unwrap()).unwrap();
    assert_eq!(sig.key_use, Some(KeyUse::Sig));
    assert_eq!(
        unb64(&sig.x5c[0]),
        unb64(header["x5c"][0].as_str().unwrap())
    );
}

#[tokio::test]
async fn local_provider_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let p = LocalProvider::new(open(dir.path()), LocalSettings::default());
    conformance(&p).await;
}

#[tokio::test]
async fn keymanager_provider_against_the_embedded_server_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(open(dir.path()), default_clients()).await;
    let p = remote(&server);
    conformance(&p).await;
    // Data from the local provider and the server interoperate (same store).
    let local = LocalProvider::new(server.kms.clone(), LocalSettings::default());
    let ct = local.encrypt(b"moved").await.unwrap();
    assert_eq!(p.decrypt(&ct).await.unwrap(), b"moved");
}

async fn token_for(base: &str, id: &str, secret: &str) -> String {
    let r: Value = reqwest::Client::new()
        .post(format!(
            "{base}/realms/openg2p/protocol/openid-connect/token"
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["access_token"].as_str().unwrap().to_string()
}

async fn call(base: &str, token: Option<&str>, endpoint: &str, request: Value) -> (u16, Value) {
    let mut b = reqwest::Client::new()
        .post(format!("{base}/v1/keymanager/{endpoint}"))
        .json(&json!({
            "id": "string", "version": "string", "requesttime": g2p_mosip::timestamp::now_strict(),
            "metadata": {}, "request": request
        }));
    if let Some(t) = token {
        b = b.header("Cookie", format!("Authorization={t}"));
    }
    let r = b.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn ker(body: &Value) -> &str {
    body["errors"][0]["errorCode"].as_str().unwrap_or("")
}

#[tokio::test]
async fn server_follows_the_spec_checks() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(open(dir.path()), default_clients()).await;
    let base = &server.base;
    let t = token_for(base, CLIENT, SECRET).await;
    let ts = g2p_mosip::timestamp::now_strict();
    let salt = b64u(&[3u8; 32]);
    let aad = b64u(b"aad-value-for-test");

    // Mode A round trip, echo of id/version, errors null.
    let (s, enc) = call(base, Some(&t), "encrypt", json!({"applicationId": "REGISTRATION", "referenceId": "ENCRYPT", "timeStamp": ts, "data": b64u(b"Alice"), "salt": salt, "aad": aad})).await;
    assert_eq!(s, 200);
    assert_eq!(enc["id"], "string");
    assert!(enc["errors"].is_null());
    let data = enc["response"]["data"].as_str().unwrap().to_string();
    let (_, dec) = call(base, Some(&t), "decrypt", json!({"applicationId": "REGISTRATION", "referenceId": "ENCRYPT", "timeStamp": ts, "data": data, "salt": salt, "aad": aad})).await;
    assert_eq!(unb64(dec["response"]["data"].as_str().unwrap()), b"Alice");
    // Wrong aad → KER-FSE-004 on HTTP 200.
    let (s, bad) = call(base, Some(&t), "decrypt", json!({"applicationId": "REGISTRATION", "referenceId": "ENCRYPT", "timeStamp": ts, "data": data, "salt": salt, "aad": b64u(b"other")})).await;
    assert_eq!((s, ker(&bad)), (200, "KER-FSE-004"));
    assert!(bad["response"].is_null());
    // Another application's key → KER-KMS-024; unknown thumbprint → KER-KMS-025.
    let (_, r) = call(base, Some(&t), "decrypt", json!({"applicationId": "ID_REPO", "referenceId": "ENCRYPT", "timeStamp": ts, "data": data, "salt": salt, "aad": aad})).await;
    assert_eq!(ker(&r), "KER-KMS-024");
    let foreign = g2p_testkit::cipher::seal(&TestKey::generate("x"), None, None, b"x");
    let (_, r) = call(base, Some(&t), "decrypt", json!({"applicationId": "REGISTRATION", "referenceId": "ENCRYPT", "timeStamp": ts, "data": b64u(&foreign)})).await;
    assert_eq!(ker(&r), "KER-KMS-025");
    // No splitter → KER-CRY-003 (not a 500); bad base64; validation errors.
    let (s, r) = call(base, Some(&t), "decrypt", json!({"applicationId": "REGISTRATION", "referenceId": "ENCRYPT", "timeStamp": ts, "data": b64u(b"no splitter")})).await;
    assert_eq!((s, ker(&r)), (200, "KER-CRY-003"));
    let (_, r) = call(base, Some(&t), "encrypt", json!({"applicationId": "REGISTRATION", "referenceId": "ENCRYPT", "timeStamp": ts, "data": "***"})).await;
    assert_eq!(ker(&r), "KER-CRY-003");
    let (_, r) = call(base, Some(&t), "encrypt", json!({"applicationId": "REGISTRATION", "referenceId": "ENCRYPT", "timeStamp": "2025-01-15T10:20:30Z", "data": "QQ"})).await;
    assert_eq!(ker(&r), "KER-KMS-005");
    let (_, r) = call(base, Some(&t), "encrypt", json!({"applicationId": "REGISTRATION", "referenceId": "ENCRYPT", "timeStamp": ts, "data": "QQ", "salt": " "})).await;
    assert_eq!(ker(&r), "KER-KMS-005");
    let (_, r) = call(
        base,
        Some(&t),
        "encrypt",
        json!({"applicationId": "REGISTRATION", "referenceId": "", "timeStamp": ts, "data": "QQ"}),
    )
    .await;
    assert_eq!(ker(&r), "KER-CRY-011");
    let (_, r) = call(
        base,
        Some(&t),
        "encrypt",
        json!({"applicationId": "NOPE", "referenceId": "ENCRYPT", "timeStamp": ts, "data": "QQ"}),
    )
    .await;
    assert_eq!(ker(&r), "KER-KMS-002");
    // Lenient base64 on input: padded standard alphabet is accepted.
    let (_, r) = call(base, Some(&t), "encrypt", json!({"applicationId": "REGISTRATION", "referenceId": "ENCRYPT", "timeStamp": ts, "data": "QUJD+w=="})).await;
    assert!(r["errors"].is_null(), "{r}");

    // The fake-independent opener decrypts the server's mode C output with the private key?
    // (Keys never leave the store; instead the testkit seals to the server's certificate.)
    let (_, cert) = reqwest_get(
        base,
        &t,
        "getCertificate?applicationId=REGISTRATION&referenceId=ENCRYPT",
    )
    .await;
    let pem = cert["response"]["certificate"].as_str().unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));

    // jwtSign: header, kid = keyId of getAllCertificates, JSON check.
    let (_, r) = call(base, Some(&t), "jwtSign", json!({"dataToSign": b64u(br#"{"a":1}"#), "applicationId": "ID_REPO", "referenceId": "", "includePayload": true, "includeCertificate": false, "includeCertHash": true})).await;
    let jws = r["response"]["jwtSignedData"].as_str().unwrap().to_string();
    let header: Value = serde_json::from_slice(&unb64(jws.split('.').next().unwrap())).unwrap();
    let (_, all) = reqwest_get(
        base,
        &t,
        "getAllCertificates?applicationId=ID_REPO&referenceId=",
    )
    .await;
    let listed = &all["response"]["allCertificates"][0];
    assert_eq!(header["kid"], listed["keyId"]);
    assert!(header.get("x5c").is_none() && header["x5t#S256"].is_string());
    let (_, r) = call(
        base,
        Some(&t),
        "jwtSign",
        json!({"dataToSign": b64u(b"not json"), "applicationId": "ID_REPO", "referenceId": ""}),
    )
    .await;
    assert_eq!(ker(&r), "KER-JWS-103");
    let (_, r) = call(
        base,
        Some(&t),
        "jwtSign",
        json!({"dataToSign": b64u(b"{}"), "applicationId": "ID_REPO", "referenceId": "ENCRYPT"}),
    )
    .await;
    assert_eq!(ker(&r), "KER-KMS-020");

    // jwtVerify: valid, tampered, foreign x5c (false, unlike the real service).
    let (_, r) = call(base, Some(&t), "jwtVerify", json!({"jwtSignatureData": jws, "applicationId": "ID_REPO", "referenceId": "", "validateTrust": false})).await;
    assert_eq!(r["response"]["signatureValid"], true);
    let parts: Vec<&str> = jws.split('.').collect();
    let (_, r) = call(base, Some(&t), "jwtVerify", json!({"jwtSignatureData": format!("{}.{}.{}", parts[0], b64u(br#"{"a":2}"#), parts[2]), "applicationId": "ID_REPO", "referenceId": ""})).await;
    assert_eq!(r["response"]["signatureValid"], false);
    let intruder = TestKey::generate("ID_REPO");
    let x5c = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(intruder.cert_der())
    };
    let forged = jose::sign(
        &intruder,
        &json!({"alg": "RS256", "x5c": [x5c]}),
        br#"{"a":1}"#,
        false,
    );
    let (_, r) = call(
        base,
        Some(&t),
        "jwtVerify",
        json!({"jwtSignatureData": forged, "applicationId": "ID_REPO", "referenceId": ""}),
    )
    .await;
    assert_eq!(r["response"]["signatureValid"], false);
    // An uploaded partner certificate makes the partner's signatures verify, for the pair
    // it was uploaded under and no other.
    let admin = call(base, Some(&t), "uploadOtherDomainCertificate", json!({"applicationId": "ID_REPO", "referenceId": "PARTNER_BANK", "certificateData": intruder.cert_pem()})).await;
    assert!(admin.1["errors"].is_null(), "{}", admin.1);
    for (reference, valid) in [("PARTNER_BANK", true), ("", false)] {
        let (_, r) = call(
            base,
            Some(&t),
            "jwtVerify",
            json!({"jwtSignatureData": forged, "applicationId": "ID_REPO", "referenceId": reference}),
        )
        .await;
        assert_eq!(r["response"]["signatureValid"], valid, "{reference:?}");
    }

    // Auth: no token, a bad token, a Bearer header, and a missing role.
    let (s, r) = call(base, None, "encrypt", json!({})).await;
    assert_eq!((s, ker(&r)), (401, "KER-ATH-401"));
    let (s, _) = call(base, Some("garbage.token.here"), "encrypt", json!({})).await;
    assert_eq!(s, 401);
    let r = reqwest::Client::new()
        .get(format!(
            "{base}/v1/keymanager/getAllCertificates?applicationId=ID_REPO"
        ))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let reader = token_for(base, "reader", "reader-secret").await;
    let (s, r) = call(
        base,
        Some(&reader),
        "uploadOtherDomainCertificate",
        json!({}),
    )
    .await;
    assert_eq!((s, ker(&r)), (403, "KER-ATH-403"));
    // Malformed body → 400 with the wrapper.
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/keymanager/encrypt"))
        .header("Cookie", format!("Authorization={t}"))
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(ker(&body), "KER-KMS-005");

    // Token endpoint errors (RFC 6749).
    let tok = |form: Vec<(&'static str, &'static str)>| {
        let url = format!("{base}/realms/openg2p/protocol/openid-connect/token");
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .form(&form)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, r) = tok(vec![
        ("grant_type", "client_credentials"),
        ("client_id", CLIENT),
        ("client_secret", "wrong"),
    ])
    .await;
    assert_eq!((s, r["error"].as_str().unwrap()), (401, "invalid_client"));
    let (s, r) = tok(vec![("grant_type", "password")]).await;
    assert_eq!(
        (s, r["error"].as_str().unwrap()),
        (400, "unsupported_grant_type")
    );
    let (s, r) = tok(vec![("client_id", CLIENT)]).await;
    assert_eq!((s, r["error"].as_str().unwrap()), (400, "invalid_request"));
}

async fn reqwest_get(base: &str, token: &str, path: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{base}/v1/keymanager/{path}"))
        .header("Cookie", format!("Authorization={token}"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn rotation_keeps_old_data_and_tokens_valid() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(open(dir.path()), default_clients()).await;
    let p = remote(&server);
    let before = p.encrypt(b"before rotation").await.unwrap();
    let token = p
        .jwt_sign(&SignPayload::Json(json!({"v": 1})), &SignOptions::default())
        .await
        .unwrap();
    let old_enc = server
        .kms
        .store()
        .rotate("REGISTRATION", "ENCRYPT")
        .unwrap();
    let old_sig = server.kms.store().rotate("ID_REPO", "").unwrap();
    // A fresh provider (no cached certificate) seals with the new key.
    let p2 = remote(&server);
    let after = p2.encrypt(b"after rotation").await.unwrap();
    let tp = |ct: &[u8]| {
        g2p_mosip::cipher::parse(ct)
            .unwrap()
            .thumbprint_hex()
            .unwrap()
    };
    assert_ne!(tp(&before), tp(&after));
    assert_eq!(tp(&after), old_enc.thumbprint);
    assert_eq!(p2.decrypt(&before).await.unwrap(), b"before rotation");
    assert_eq!(p2.decrypt(&after).await.unwrap(), b"after rotation");
    assert_eq!(
        server
            .kms
            .all_certificates("REGISTRATION", "ENCRYPT")
            .unwrap()
            .len(),
        2
    );
    // Signed before rotation: still verifies, by kid.
    assert!(p2.jwt_verify(&token, None).await.is_ok());
    let new_token = p2
        .jwt_sign(&SignPayload::Json(json!({"v": 2})), &SignOptions::default())
        .await
        .unwrap();
    let kid = |t: &str| {
        serde_json::from_slice::<Value>(&unb64(t.split('.').next().unwrap())).unwrap()["kid"]
            .clone()
    };
    assert_eq!(kid(&new_token), old_sig.key_id);
    assert_ne!(
        kid(&token),
        kid(&new_token),
        "same-day rotation gets a disambiguated keyId"
    );
    assert!(p2.jwt_verify(&new_token, None).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_by_another_process_is_seen_at_once() {
    // Two handles on one data directory, as `kms serve` and `kms keys rotate` are.
    let dir = tempfile::tempdir().unwrap();
    let serving = LocalProvider::new(open(dir.path()), LocalSettings::default());
    let first = serving.encrypt(b"one").await.unwrap();
    let first_again = serving.encrypt(b"two").await.unwrap();
    let tp = |ct: &[u8]| {
        g2p_mosip::cipher::parse(ct)
            .unwrap()
            .thumbprint_hex()
            .unwrap()
    };
    assert_eq!(tp(&first), tp(&first_again));
    let admin = open(dir.path());
    let rotated = admin.store().rotate("REGISTRATION", "ENCRYPT").unwrap();
    let after = serving.encrypt(b"three").await.unwrap();
    assert_eq!(
        tp(&after),
        rotated.thumbprint,
        "the serving handle kept the old key"
    );
    assert_eq!(serving.decrypt(&first).await.unwrap(), b"one");
    assert_eq!(serving.decrypt(&after).await.unwrap(), b"three");
    // Verification keys are cached; a token from a key made since is still verified.
    let options = SignOptions::default();
    let old = serving
        .jwt_sign(&SignPayload::Text("a".into()), &options)
        .await
        .unwrap();
    serving.jwt_verify(&old, None).await.unwrap();
    let new_key = admin.store().rotate("ID_REPO", "").unwrap();
    // Many verifications at once of tokens from the new key: one reloads, all succeed.
    let mut tokens = Vec::new();
    for i in 0..24 {
        let text = SignPayload::Text(format!("b{i}"));
        tokens.push(serving.jwt_sign(&text, &options).await.unwrap());
    }
    let tasks: Vec<_> = tokens
        .into_iter()
        .map(|token| {
            let serving = serving.clone();
            tokio::spawn(async move {
                serving
                    .jwt_verify(&token, None)
                    .await
                    .map(|v| v.key_id().map(str::to_string))
            })
        })
        .collect();
    for task in tasks {
        let kid = task.await.unwrap().unwrap();
        assert_eq!(kid.as_deref(), Some(new_key.key_id.as_str()));
    }
    serving.jwt_verify(&old, None).await.unwrap();
}

#[tokio::test]
async fn data_survives_a_restart_and_a_wrong_kek_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ct = {
        let p = LocalProvider::new(open(dir.path()), LocalSettings::default());
        p.encrypt(b"kept across restarts").await.unwrap()
    };
    let p = LocalProvider::new(open(dir.path()), LocalSettings::default());
    assert_eq!(p.decrypt(&ct).await.unwrap(), b"kept across restarts");
    let keys_before = p.kms().store().list().unwrap().len();
    drop(p);
    let e = Kms::open(
        dir.path(),
        Kek::from_bytes(&[1u8; 32]).unwrap(),
        StoreOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
    // Nothing was generated over it.
    assert_eq!(open(dir.path()).store().list().unwrap().len(), keys_before);
}

#[tokio::test]
async fn generate_master_key_gives_a_certificate_or_a_csr_for_the_same_key() {
    use x509_cert::der::{Decode, DecodePem, Encode};
    let dir = tempfile::tempdir().unwrap();
    let server = start(open(dir.path()), default_clients()).await;
    let t = token_for(&server.base, CLIENT, SECRET).await;
    let request = json!({"applicationId": "REGISTRATION", "referenceId": ""});
    let (s, r) = call(
        &server.base,
        Some(&t),
        "generateMasterKey/CERTIFICATE",
        request,
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert!(r["response"]["certSignRequest"].is_null(), "{r}");
    let cert =
        x509_cert::Certificate::from_pem(r["response"]["certificate"].as_str().unwrap()).unwrap();
    let request = json!({"applicationId": "REGISTRATION", "referenceId": "", "commonName": "Registry Intermediate", "country": "KE", "organization": "Social Protection Secretariat"});
    let (_, r) = call(&server.base, Some(&t), "generateMasterKey/csr", request).await;
    assert!(r["errors"].is_null() || r["errors"] == json!([]), "{r}");
    assert!(r["response"]["certificate"].is_null(), "{r}");
    let pem = r["response"]["certSignRequest"].as_str().unwrap();
    assert!(
        pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
        "{pem}"
    );
    let der = unb64(
        &pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>(),
    );
    let csr = x509_cert::request::CertReq::from_der(&der).unwrap();
    let subject = csr.info.subject.to_string();
    assert!(
        subject.contains("CN=Registry Intermediate")
            && subject.contains("C=KE")
            && subject.contains("O=Social Protection Secretariat"),
        "{subject}"
    );
    // The request is for the master key's own public key, and is signed by it.
    let spki = &cert.tbs_certificate.subject_public_key_info;
    assert_eq!(
        csr.info.public_key.to_der().unwrap(),
        spki.to_der().unwrap()
    );
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        spki.subject_public_key.raw_bytes(),
    )
    .verify(&csr.info.to_der().unwrap(), csr.signature.raw_bytes())
    .unwrap();
    // Other object types and references are refused with the spec's codes.
    let (_, r) = call(
        &server.base,
        Some(&t),
        "generateMasterKey/PKCS12",
        json!({"applicationId": "REGISTRATION"}),
    )
    .await;
    assert_eq!(r["errors"][0]["errorCode"], "KER-KMS-009", "{r}");
    let (_, r) = call(
        &server.base,
        Some(&t),
        "generateMasterKey/CSR",
        json!({"applicationId": "REGISTRATION", "referenceId": "ENCRYPT"}),
    )
    .await;
    assert_eq!(r["errors"][0]["errorCode"], "KER-KMS-010", "{r}");
}

#[tokio::test]
async fn an_oversized_body_is_refused_in_the_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(open(dir.path()), default_clients()).await;
    let t = token_for(&server.base, CLIENT, SECRET).await;
    let data = "A".repeat(g2p_kms::server::MAX_BODY_BYTES + 1);
    let r = reqwest::Client::new()
        .post(format!("{}/v1/keymanager/encrypt", server.base))
        .header("Cookie", format!("Authorization={t}"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"request":{{"data":"{data}"}}}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["errorCode"], "KER-KMS-005", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("MiB")
    );
    assert!(body["response"].is_null());
}

/// Longer than IV + tag, so that mode-A data read as mode B reaches the tag check.
const RECORD: &[u8] = b"Alice Wanjiru, 14 Riverside Drive, Kisumu";

#[tokio::test]
async fn server_spec_checks_modes_verify_envelope_and_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(open(dir.path()), default_clients()).await;
    let base = &server.base;
    let t = token_for(base, CLIENT, SECRET).await;
    let ts = g2p_mosip::timestamp::now_strict();
    let salt = b64u(&[5u8; 32]);
    let aad = b64u(b"programme-aad");
    let crypt = |endpoint: &'static str, data: String, salt: Option<&str>, aad: Option<&str>| {
        let mut request = json!({"applicationId": "REGISTRATION", "referenceId": "ENCRYPT", "timeStamp": ts, "data": data});
        if let Some(s) = salt {
            request["salt"] = json!(s);
        }
        if let Some(a) = aad {
            request["aad"] = json!(a);
        }
        let t = t.clone();
        async move { call(base, Some(&t), endpoint, request).await.1 }
    };

    // Check 25: the envelope of a success.
    let enc = crypt("encrypt", b64u(RECORD), Some(&salt), Some(&aad)).await;
    // `yyyy-MM-ddTHH:mm:ss.SSSZ` exactly.
    assert!(
        g2p_mosip::timestamp::parse_strict(enc["responsetime"].as_str().unwrap()).is_ok(),
        "{enc}"
    );
    assert!(
        enc["errors"].is_null() && enc["metadata"].is_null(),
        "{enc}"
    );

    // Check 11: each mode refuses the other salt/aad combinations with KER-FSE-004.
    let mode_a = enc["response"]["data"].as_str().unwrap().to_string();
    let mode_b = crypt("encrypt", b64u(RECORD), None, Some(&aad)).await["response"]["data"]
        .as_str()
        .unwrap()
        .to_string();
    let mode_c = crypt("encrypt", b64u(RECORD), None, None).await["response"]["data"]
        .as_str()
        .unwrap()
        .to_string();
    // (A short mode-A ciphertext read as mode B is shorter than IV + tag: KER-FSE-002, 4.4.)
    let short = crypt("encrypt", b64u(b"Alice"), Some(&salt), Some(&aad)).await;
    let short = short["response"]["data"].as_str().unwrap().to_string();
    assert_eq!(
        ker(&crypt("decrypt", short, None, Some(&aad)).await),
        "KER-FSE-002"
    );
    for (data, salt, aad, case) in [
        (&mode_a, None, Some(aad.as_str()), "mode A without its salt"),
        (
            &mode_b,
            Some(salt.as_str()),
            Some(aad.as_str()),
            "mode B with a salt",
        ),
        (&mode_c, Some(salt.as_str()), None, "mode C with a salt"),
    ] {
        let r = crypt("decrypt", data.clone(), salt, aad).await;
        assert_eq!(ker(&r), "KER-FSE-004", "{case}: {r}");
        assert!(r["response"].is_null(), "{case}");
    }
    for (data, salt, aad) in [
        (&mode_a, Some(salt.as_str()), Some(aad.as_str())),
        (&mode_b, None, Some(aad.as_str())),
        (&mode_c, None, None),
        // Mode C authenticates its own random prefix; a request aad is not used (4.4).
        (&mode_c, None, Some(aad.as_str())),
    ] {
        let r = crypt("decrypt", data.clone(), salt, aad).await;
        assert_eq!(r["response"]["data"], b64u(RECORD), "{r}");
    }

    // Check 21: jwtVerify answers, detached tokens with and without actualData.
    let payload = br#"{"household":"H-77","members":5}"#;
    let (_, signed) = call(base, Some(&t), "jwtSign", json!({"dataToSign": b64u(payload), "applicationId": "ID_REPO", "referenceId": "", "includePayload": false})).await;
    let detached = signed["response"]["jwtSignedData"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detached.contains(".."), "{detached}");
    let verify = |request: Value| {
        let t = t.clone();
        async move { call(base, Some(&t), "jwtVerify", request).await.1 }
    };
    let r = verify(json!({"jwtSignatureData": detached, "actualData": b64u(payload), "applicationId": "ID_REPO", "referenceId": ""})).await;
    assert_eq!(r["response"]["signatureValid"], true, "{r}");
    assert_eq!(r["response"]["message"], "Validation Successful");
    assert_eq!(r["response"]["trustValid"], "TRUST_NOT_VERIFIED");
    let r = verify(json!({"jwtSignatureData": detached, "actualData": b64u(br#"{"household":"H-77","members":9}"#), "applicationId": "ID_REPO", "referenceId": ""})).await;
    assert_eq!(r["response"]["signatureValid"], false, "{r}");
    assert_eq!(r["response"]["message"], "Validation Failed");
    assert!(
        r["errors"].is_null(),
        "a failed verification is not an error: {r}"
    );
    let r = verify(
        json!({"jwtSignatureData": detached, "applicationId": "ID_REPO", "referenceId": ""}),
    )
    .await;
    assert!(
        r["response"]["signatureValid"] == false || ker(&r) == "KER-JWS-105",
        "detached without actualData: {r}"
    );

    // Check 23: getAllCertificates of the master key, of a base key, of an unknown app, and
    // without an application; every keyId is the kid of the tokens its key signs.
    let (_, master) = reqwest_get(
        base,
        &t,
        "getAllCertificates?applicationId=ID_REPO&referenceId=",
    )
    .await;
    let master = master["response"]["allCertificates"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(master.len(), 1);
    let header: Value =
        serde_json::from_slice(&unb64(detached.split('.').next().unwrap())).unwrap();
    assert_eq!(header["kid"], master[0]["keyId"]);
    let (_, base_keys) = reqwest_get(
        base,
        &t,
        "getAllCertificates?applicationId=REGISTRATION&referenceId=ENCRYPT",
    )
    .await;
    assert_eq!(
        base_keys["response"]["allCertificates"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (_, unknown) = reqwest_get(
        base,
        &t,
        "getAllCertificates?applicationId=NO_SUCH_APP&referenceId=",
    )
    .await;
    assert_eq!(
        unknown["response"]["allCertificates"],
        json!([]),
        "{unknown}"
    );
    let (_, missing) = reqwest_get(base, &t, "getAllCertificates?referenceId=").await;
    assert_eq!(ker(&missing), "KER-KMS-005", "{missing}");
}
