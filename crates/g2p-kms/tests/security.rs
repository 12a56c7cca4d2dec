//! Regression tests of the security review, each named after the defect it closes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use g2p_encryption::{EncryptionProvider, Error, SignOptions, SignPayload, SignatureError};
use g2p_kms::server::auth::{Client, Realm};
use g2p_kms::server::{ServerState, serve};
use g2p_kms::{Kek, Kms, LocalProvider, LocalSettings, SignSpec, StoreOptions};
use g2p_testkit::{TestKey, b64u, jose};
use serde_json::json;

fn open(dir: &std::path::Path) -> Arc<Kms> {
    Arc::new(Kms::open(dir, Kek::load(dir, None).unwrap(), StoreOptions::default()).unwrap())
}

fn sign(kms: &Kms, app: &str, reference: &str, certificate: bool) -> String {
    kms.sign(&SignSpec {
        application_id: app,
        reference_id: reference,
        payload: br#"{"amount":150}"#,
        include_payload: true,
        include_certificate: certificate,
        include_cert_hash: false,
        certificate_url: None,
        algorithm: g2p_encryption::Alg::Rs256,
        b64: true,
    })
    .unwrap()
}

#[test]
fn verification_never_crosses_applications() {
    let dir = tempfile::tempdir().unwrap();
    let kms = open(dir.path());
    // Our own key of another application: by kid, and carrying its certificate.
    for with_certificate in [false, true] {
        let token = sign(&kms, "REGISTRATION", "", with_certificate);
        assert!(kms.verify(&token, None, "REGISTRATION", "", None).unwrap());
        assert!(
            !kms.verify(&token, None, "ID_REPO", "", None).unwrap(),
            "a REGISTRATION token verified as ID_REPO (certificate: {with_certificate})"
        );
    }
    // A partner's certificate uploaded under another application.
    let partner = TestKey::generate("partner");
    kms.store()
        .upload_partner_certificate("PARTNER_APP", "", &partner.cert_pem())
        .unwrap();
    let header =
        json!({"alg": "RS256", "x5c": [g2p_encryption::b64::encode_b64(partner.cert_der())]});
    let token = jose::sign(&partner, &header, br#"{"amount":150}"#, false);
    assert!(kms.verify(&token, None, "PARTNER_APP", "", None).unwrap());
    assert!(!kms.verify(&token, None, "ID_REPO", "", None).unwrap());
    // The same by certificate hash.
    let header = json!({"alg": "RS256", "x5t#S256": b64u(&partner.thumbprint())});
    let token = jose::sign(&partner, &header, br#"{"amount":150}"#, false);
    assert!(kms.verify(&token, None, "PARTNER_APP", "", None).unwrap());
    assert!(!kms.verify(&token, None, "ID_REPO", "", None).unwrap());
}

#[tokio::test]
async fn local_verification_trusts_no_partner_certificate_as_its_own_key() {
    let dir = tempfile::tempdir().unwrap();
    let kms = open(dir.path());
    let provider = LocalProvider::new(kms.clone(), LocalSettings::default());
    // A partner certificate uploaded under the provider's own signing pair.
    let partner = TestKey::generate("partner");
    let record = kms
        .store()
        .upload_partner_certificate("ID_REPO", "", &partner.cert_pem())
        .unwrap();
    for header in [
        json!({"alg": "RS256", "kid": record.key_id}),
        json!({"alg": "RS256", "x5c": [g2p_encryption::b64::encode_b64(partner.cert_der())]}),
    ] {
        let token = jose::sign(&partner, &header, br#"{"amount":150}"#, false);
        let refused = provider.jwt_verify(&token, None).await.unwrap_err();
        assert!(
            matches!(refused, Error::InvalidSignature(_)),
            "{header}: {refused}"
        );
    }
    // Its own tokens still verify.
    let own = provider
        .jwt_sign(
            &SignPayload::Json(json!({"amount": 150})),
            &SignOptions::default(),
        )
        .await
        .unwrap();
    provider.jwt_verify(&own, None).await.unwrap();
}

#[test]
fn local_verification_refuses_keys_outside_their_validity() {
    let expired = TestKey::generate_with_validity("old", -30, -1);
    let set = g2p_encryption::JwkSet {
        keys: vec![g2p_encryption::Jwk::from_certificate(
            &g2p_encryption::cert::CertificateInfo::from_der(expired.cert_der()).unwrap(),
            Some("old".into()),
            g2p_encryption::KeyUse::Sig,
        )],
    };
    let token = jose::sign(
        &expired,
        &json!({"alg": "RS256", "kid": "old"}),
        b"{}",
        false,
    );
    let refused = g2p_encryption::UnverifiedJws::parse(&token)
        .unwrap()
        .verify(&set)
        .unwrap_err();
    assert!(
        matches!(
            refused,
            Error::InvalidSignature(SignatureError::OutsideValidity)
        ),
        "{refused}"
    );
}

fn open_with(dir: &std::path::Path, options: StoreOptions) -> Arc<Kms> {
    Arc::new(Kms::open(dir, Kek::load(dir, None).unwrap(), options).unwrap())
}

#[test]
fn no_key_is_minted_by_a_crypto_call_unless_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let kms = open(dir.path());
    let count = || kms.store().list().unwrap().len();
    let params = g2p_mosip::cipher::CipherParams::default();
    let before = count();
    // Declared by default: REGISTRATION/ENCRYPT. Anything else is refused, naming the pair.
    kms.encrypt("REGISTRATION", "ENCRYPT", &params, b"x")
        .unwrap();
    let made = count();
    for (app, reference) in [("REGISTRATION", "UNSEEN"), ("ID_REPO", "X1")] {
        let e = kms.encrypt(app, reference, &params, b"x").unwrap_err();
        assert_eq!(e.code(), g2p_mosip::KerCode::Kms026, "{e}");
        assert!(e.message().contains(&format!("{app}/{reference}")), "{e}");
        let e = kms.certificate(app, reference).unwrap_err();
        assert_eq!(e.code(), g2p_mosip::KerCode::Kms026, "{e}");
    }
    // An unknown application is named as such.
    let e = kms.certificate("NO_SUCH_APP", "").unwrap_err();
    assert_eq!(e.code(), g2p_mosip::KerCode::Kms002, "{e}");
    assert_eq!(count(), made, "a refused call made a key");
    assert!(made > before);
    // ROOT with a reference is never a second CA, even for the administrator.
    let e = kms
        .certificate_for("ROOT", "EXTRA", g2p_kms::Minting::Admin)
        .unwrap_err();
    assert_eq!(e.code(), g2p_mosip::KerCode::Kms016, "{e}");
    // The administrator's path, and a declaration, make keys.
    kms.certificate_for("ID_REPO", "X1", g2p_kms::Minting::Admin)
        .unwrap();
    kms.declare("REGISTRATION", "UNSEEN");
    kms.encrypt("REGISTRATION", "UNSEEN", &params, b"x")
        .unwrap();
    assert_eq!(count(), made + 2);

    // Admitted on request: ids checked, ROOT/KERNEL/PARTNER refused, generation bounded.
    let dir = tempfile::tempdir().unwrap();
    let kms = open_with(
        dir.path(),
        StoreOptions {
            admit_unknown_references: true,
            undeclared_keys_per_minute: 2,
            ..StoreOptions::default()
        },
    );
    let bad = kms
        .encrypt("REGISTRATION", "no spaces", &params, b"x")
        .unwrap_err();
    assert_eq!(bad.code(), g2p_mosip::KerCode::Kms005, "{bad}");
    let long = "R".repeat(65);
    let bad = kms
        .encrypt("REGISTRATION", &long, &params, b"x")
        .unwrap_err();
    assert_eq!(bad.code(), g2p_mosip::KerCode::Kms005, "{bad}");
    for app in ["ROOT", "KERNEL", "PARTNER"] {
        let e = kms.certificate(app, "ENC").unwrap_err();
        assert!(
            matches!(
                e.code(),
                g2p_mosip::KerCode::Kms016 | g2p_mosip::KerCode::Kms002
            ),
            "{app}: {e}"
        );
    }
    kms.encrypt("REGISTRATION", "A", &params, b"x").unwrap();
    kms.encrypt("REGISTRATION", "B", &params, b"x").unwrap();
    let e = kms.encrypt("REGISTRATION", "C", &params, b"x").unwrap_err();
    assert!(e.message().contains("in a minute"), "{e}");
    // A pair that has keys is not held back by the limit.
    kms.encrypt("REGISTRATION", "A", &params, b"y").unwrap();
}

async fn serve_with(kms: Arc<Kms>, clients: Vec<Client>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let realm = Realm::new("openg2p", &base, clients, 300).unwrap();
    tokio::spawn(serve(
        listener,
        ServerState::new(kms, realm),
        std::future::pending(),
    ));
    base
}

async fn token(base: &str, id: &str, secret: &str) -> String {
    let answer: serde_json::Value = reqwest::Client::new()
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
    answer["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn least_privilege_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let kms = open(dir.path());
    let default_client = g2p_kms::keyfile::default_client(dir.path()).unwrap();
    let secret =
        std::fs::read_to_string(g2p_kms::keyfile::default_client_secret_path(dir.path())).unwrap();
    let base = serve_with(
        kms,
        vec![
            Client::parse("plain:plain-secret").unwrap(),
            Client::parse("admin:admin-secret:KEY_MAKER").unwrap(),
            default_client,
        ],
    )
    .await;
    let admin_call = |token: String| {
        let base = base.clone();
        async move {
            reqwest::Client::new()
                .post(format!(
                    "{base}/v1/keymanager/generateMasterKey/CERTIFICATE"
                ))
                .header("cookie", format!("Authorization={token}"))
                .json(&json!({"request": {"applicationId": "REGISTRATION", "force": true}}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // A client configured without roles, and the default client, may not administer keys.
    assert_eq!(
        admin_call(token(&base, "plain", "plain-secret").await).await,
        403
    );
    assert_eq!(
        admin_call(token(&base, "openg2p-admin-client", secret.trim()).await).await,
        403
    );
    assert_eq!(
        admin_call(token(&base, "admin", "admin-secret").await).await,
        200
    );
}

#[test]
fn the_key_encryption_key_is_created_safely() {
    // Concurrent first starts agree on one key; nothing half-written is left behind.
    let dir = tempfile::tempdir().unwrap();
    let keks: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let kek = Kek::load(dir.path(), None).unwrap();
                    kek.wrap(b"probe", b"x").unwrap();
                    std::fs::read(dir.path().join("kek")).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(keks.iter().all(|k| k.len() == 32 && *k == keks[0]));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["kek"], "temporary files left behind");
    // An existing store whose key file is gone does not get a new key.
    let store = tempfile::tempdir().unwrap();
    open(store.path());
    std::fs::remove_file(store.path().join("kek")).unwrap();
    let e = Kek::load(store.path(), None).unwrap_err();
    assert!(
        e.to_string().contains("is missing but the key store"),
        "{e}"
    );
    assert!(!store.path().join("kek").exists());
    // A damaged (empty) key file is named, not replaced.
    std::fs::write(store.path().join("kek"), b"").unwrap();
    let e = Kek::load(store.path(), None).unwrap_err();
    assert!(
        e.to_string().contains("kek") && e.to_string().contains("32 bytes"),
        "{e}"
    );
}

#[test]
fn one_key_id_one_key() {
    // Two key managers created the same day give their keys different ids.
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(a.path()), open(b.path()));
    for (app, reference) in [
        ("REGISTRATION", "ENCRYPT"),
        ("ID_REPO", ""),
        ("KERNEL", "SIGN"),
    ] {
        let ka = a.certificate(app, reference).unwrap();
        let kb = b.certificate(app, reference).unwrap();
        assert_ne!(ka.thumbprint, kb.thumbprint);
        assert_ne!(ka.key_id, kb.key_id, "{app}/{reference}");
    }
    // A second key of one pair on the same day has its own id too.
    let first = a.certificate("REGISTRATION", "ENCRYPT").unwrap();
    let second = a.store().rotate("REGISTRATION", "ENCRYPT").unwrap();
    assert_ne!(first.key_id, second.key_id);
}

#[tokio::test]
async fn opaque_decryption_failures() {
    let dir = tempfile::tempdir().unwrap();
    let kms = open(dir.path());
    let provider = LocalProvider::new(kms.clone(), LocalSettings::default());
    let sealed = provider.encrypt(b"data").await.unwrap();
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let mut unknown = sealed.clone();
    unknown[6..38].fill(0);
    // A salt: the data is read as mode A, and the tag fails under these settings.
    let other = LocalProvider::new(
        kms,
        LocalSettings {
            cipher_params: g2p_mosip::cipher::CipherParams::new(Some(vec![7; 12]), None),
            ..LocalSettings::default()
        },
    );
    let answers = [
        provider.decrypt(&tampered).await.unwrap_err(),
        provider.decrypt(&unknown).await.unwrap_err(),
        other.decrypt(&sealed).await.unwrap_err(),
    ];
    for e in &answers {
        assert_eq!(e.kind(), g2p_encryption::ErrorKind::Refused, "{e}");
        assert!(!e.to_string().contains("KER-"), "{e}");
        assert_eq!(e.to_string(), answers[0].to_string());
    }
}

/// Sends `head` and `body_part` on a fresh connection and reads what the server answers
/// within five seconds (it has not been given the rest of the body).
async fn answer_without_the_body(base: &str, head: &str, body_part: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body_part).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("no answer before the body arrived")
        .unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

#[tokio::test]
async fn authenticate_before_reading_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let base = serve_with(
        open(dir.path()),
        vec![Client::parse("app:app-secret").unwrap()],
    )
    .await;
    // 24 MB announced, a few bytes sent, no token: refused at once.
    let head = "POST /v1/keymanager/encrypt HTTP/1.1\r\nHost: kms\r\nContent-Type: application/json\r\nContent-Length: 24000000\r\n\r\n";
    let answer = answer_without_the_body(&base, head, b"{\"request\":").await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // With a token but not JSON (a form a browser could be made to post): refused before the
    // body is read too.
    let token = token(&base, "app", "app-secret").await;
    let head = format!(
        "POST /v1/keymanager/encrypt HTTP/1.1\r\nHost: kms\r\nCookie: Authorization={token}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 24000000\r\n\r\n"
    );
    let answer = answer_without_the_body(&base, &head, b"data=").await;
    assert!(answer.starts_with("HTTP/1.1 415"), "{answer}");
    assert!(answer.contains("application/json"), "{answer}");
}

#[tokio::test]
async fn requests_are_bounded_in_time_and_number() {
    let dir = tempfile::tempdir().unwrap();
    let kms = open(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let realm = Realm::new(
        "openg2p",
        &base,
        vec![Client::parse("app:app-secret").unwrap()],
        300,
    )
    .unwrap();
    let options = g2p_kms::server::ServerOptions {
        request_timeout: std::time::Duration::from_millis(500),
        max_concurrent_requests: 1,
    };
    tokio::spawn(serve(
        listener,
        ServerState::with_options(kms, realm, options),
        std::future::pending(),
    ));
    let token = token(&base, "app", "app-secret").await;
    // A body that never completes holds the one slot until the request times out.
    let head = format!(
        "POST /v1/keymanager/encrypt HTTP/1.1\r\nHost: kms\r\nCookie: Authorization={token}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    );
    let started = std::time::Instant::now();
    let slow = answer_without_the_body(&base, &head, b"{");
    let quick = async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let status = reqwest::Client::new()
            .get(format!(
                "{base}/v1/keymanager/getCertificate?applicationId=REGISTRATION&referenceId=ENCRYPT"
            ))
            .header("cookie", format!("Authorization={token}"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        (status, std::time::Instant::now())
    };
    let (slow, (quick, quick_done)) = tokio::join!(slow, quick);
    assert!(slow.starts_with("HTTP/1.1 504"), "{slow}");
    assert!(slow.contains("KER-KMS-500"), "{slow}");
    // The second request waited for the one slot, which the first held until its timeout:
    // it cannot have ended before then.
    assert!(
        quick_done.duration_since(started) >= std::time::Duration::from_millis(450),
        "served alongside ({quick})"
    );
    assert!(matches!(quick, 200 | 504), "{quick}");
}

#[tokio::test]
async fn kms_serve_audits_key_operations_without_data_or_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.log");
    let audit = g2p_encryption::audit::AuditLog::open(&g2p_encryption::audit::AuditSink::File {
        path: audit_path.clone(),
        max_bytes: 1 << 20,
        keep: 1,
    })
    .unwrap();
    let kms = open(&dir.path().join("data"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let realm = Realm::new(
        "openg2p",
        &base,
        vec![Client::parse("registry-app:s3cr3t-client:REGISTRATION_ADMIN,KEY_MAKER").unwrap()],
        300,
    )
    .unwrap();
    let state = ServerState::new(kms, realm).with_audit(audit.clone());
    tokio::spawn(serve(listener, state, std::future::pending()));
    let token = token(&base, "registry-app", "s3cr3t-client").await;
    let call = |endpoint: &'static str, request: serde_json::Value| {
        let (base, token) = (base.clone(), token.clone());
        async move {
            let answer: serde_json::Value = reqwest::Client::new()
                .post(format!("{base}/v1/keymanager/{endpoint}"))
                .header("cookie", format!("Authorization={token}"))
                .header("x-request-id", format!("id-{}", endpoint.replace('/', ".")))
                .json(&json!({"id": "x", "version": "1", "requesttime": g2p_mosip::timestamp::now_strict(), "request": request}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer
        }
    };
    let ts = g2p_mosip::timestamp::now_strict();
    let secret_text = "Fatima Bello 0803";
    let data = b64u(secret_text.as_bytes());
    let sealed = call("encrypt", json!({"applicationId": "REGISTRATION", "referenceId": "ENCRYPT", "timeStamp": ts, "data": data})).await;
    let ct = sealed["response"]["data"].as_str().unwrap().to_string();
    call("decrypt", json!({"applicationId": "REGISTRATION", "referenceId": "ENCRYPT", "timeStamp": ts, "data": ct})).await;
    // One character of the tag changed (not the last, whose low bits may be padding).
    let mut tampered = ct.clone().into_bytes();
    let at = tampered.len() - 4;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let refused = call("decrypt", json!({"applicationId": "REGISTRATION", "referenceId": "ENCRYPT", "timeStamp": ts, "data": tampered})).await;
    assert!(refused["errors"].is_array(), "{refused}");
    let signed = call("jwtSign", json!({"applicationId": "ID_REPO", "referenceId": "", "dataToSign": b64u(br#"{"beneficiary":"B-77"}"#), "includePayload": true})).await;
    let jws = signed["response"]["jwtSignedData"]
        .as_str()
        .unwrap()
        .to_string();
    call(
        "jwtVerify",
        json!({"applicationId": "ID_REPO", "referenceId": "", "jwtSignatureData": jws}),
    )
    .await;
    call(
        "generateMasterKey/CERTIFICATE",
        json!({"applicationId": "REGISTRATION", "force": true}),
    )
    .await;
    audit.flush().unwrap();

    let text = std::fs::read_to_string(&audit_path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ops: Vec<&str> = lines
        .iter()
        .map(|l| l["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        ["encrypt", "decrypt", "decrypt", "sign", "verify", "rotate"]
    );
    for line in &lines {
        assert_eq!(line["service"], "kms");
        assert_eq!(line["caller"], "registry-app");
        assert!(line["request_id"].as_str().unwrap().starts_with("id-"));
    }
    assert_eq!(
        lines[0]["keys"], lines[1]["keys"],
        "decrypted with the key that sealed"
    );
    assert_eq!(lines[1]["outcome"], "ok");
    assert_eq!(lines[2]["outcome"], "refused");
    assert!(lines[2]["error"].as_str().unwrap().starts_with("KER-"));
    assert_eq!(lines[3]["application_id"], "ID_REPO");
    assert_eq!(lines[4]["outcome"], "ok");
    assert_eq!(lines[5]["application_id"], "REGISTRATION");
    for secret in [
        secret_text,
        &data,
        &ct[..40],
        &jws[..40],
        "s3cr3t-client",
        &token[..40],
        "B-77",
    ] {
        assert!(!text.contains(secret), "{secret:?} in the audit trail");
    }
}
