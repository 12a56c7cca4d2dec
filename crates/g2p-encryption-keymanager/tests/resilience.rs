//! The provider against a Keymanager that misbehaves: the testkit's fake behind its
//! fault-injecting proxy (seeded, so each run sees the same faults).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use g2p_encryption::{EncryptionProvider, ErrorKind, SignOptions, SignPayload, deadline};
use g2p_encryption_keymanager::{KeymanagerProvider, KeymanagerSettings};
use g2p_testkit::FakeKeymanager;
use g2p_testkit::chaos::{ChaosProxy, FaultPlan};
use serde_json::json;

fn settings(fake: &FakeKeymanager, proxy: &ChaosProxy) -> KeymanagerSettings {
    let mut s = g2p_encryption_keymanager::KeymanagerConfig::settings(
        &proxy.rewrite(&fake.api_base_url()),
        &proxy.rewrite(&fake.auth_url()),
        &fake.options().client_id,
        &fake.options().client_secret,
    );
    s.api_timeout = Some(5);
    s.retry_base = Some(0.005);
    s.retry_max = Some(0.05);
    s
}

fn provider(s: KeymanagerSettings) -> Arc<KeymanagerProvider> {
    Arc::new(KeymanagerProvider::new(s.build().unwrap()).unwrap())
}

async fn setup(plan: FaultPlan) -> (FakeKeymanager, ChaosProxy) {
    let fake = FakeKeymanager::start().await;
    fake.current_key("REGISTRATION", "ENCRYPT");
    fake.current_key("ID_REPO", "");
    let proxy = ChaosProxy::start(fake.addr(), 7, plan, FaultPlan::default()).await;
    (fake, proxy)
}

fn document() -> SignPayload {
    SignPayload::Json(json!({"beneficiary": "B-1029", "amount": 150}))
}

#[tokio::test]
async fn answers_that_are_not_worth_repeating_are_not_repeated() {
    for (plan, kind) in [
        (
            FaultPlan {
                server_error: 1.0,
                ..FaultPlan::default()
            },
            ErrorKind::Remote,
        ),
        (
            FaultPlan {
                malformed: 1.0,
                ..FaultPlan::default()
            },
            ErrorKind::InvalidResponse,
        ),
    ] {
        let (fake, proxy) = setup(plan).await;
        let p = provider(settings(&fake, &proxy));
        let e = p
            .jwt_sign(&document(), &SignOptions::default())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), kind, "{e}");
        assert_eq!(proxy.counts().requests_to("jwtSign"), 1, "{e}");
        assert_eq!(p.call_counts().unwrap().retries, 0);
    }
}

#[tokio::test]
async fn a_cut_answer_is_retried_and_the_last_error_counts_the_attempts() {
    let (fake, proxy) = setup(FaultPlan {
        cut: 1.0,
        ..FaultPlan::default()
    })
    .await;
    let p = provider(settings(&fake, &proxy));
    let e = p
        .jwt_sign(&document(), &SignOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("gave up after 4 attempts"), "{e}");
    assert_eq!(proxy.counts().requests_to("jwtSign"), 4);
    assert_eq!(p.call_counts().unwrap().retries, 3);
}

#[tokio::test]
async fn a_token_endpoint_down_for_a_few_calls_is_waited_out() {
    let (fake, proxy) = setup(FaultPlan::default()).await;
    proxy.token_down_for_calls(2);
    let p = provider(settings(&fake, &proxy));
    p.jwt_sign(&document(), &SignOptions::default())
        .await
        .unwrap();
    assert_eq!(proxy.counts().requests_to("token"), 3);
    assert_eq!(fake.token_requests(), 1);
    // Down for longer than the attempts: the error says so, naming the token endpoint.
    let (fake, proxy) = setup(FaultPlan::default()).await;
    proxy.token_down_for_calls(10);
    let p = provider(settings(&fake, &proxy));
    let e = p
        .jwt_sign(&document(), &SignOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("/token") && text.contains("gave up after 4 attempts"),
        "{text}"
    );
    assert_eq!(proxy.counts().requests_to("jwtSign"), 0);
}

#[tokio::test]
async fn retries_stop_in_time_for_the_callers_deadline() {
    let (fake, proxy) = setup(FaultPlan::default()).await;
    let mut s = settings(&fake, &proxy);
    s.max_attempts = Some(20);
    s.retry_base = Some(0.2);
    s.retry_max = Some(1.0);
    let p = provider(s);
    p.jwt_sign(&document(), &SignOptions::default())
        .await
        .unwrap();
    proxy.down_for(Duration::from_secs(60));
    let started = Instant::now();
    let e = deadline::within(Duration::from_millis(700), async {
        p.jwt_sign(&document(), &SignOptions::default()).await
    })
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(750),
        "{:?}",
        started.elapsed()
    );
    assert!(e.to_string().contains("deadline"), "{e}");
}

#[tokio::test]
async fn a_keymanager_down_past_the_grace_fails_fast_and_recovers_by_itself() {
    let (fake, proxy) = setup(FaultPlan::default()).await;
    let mut s = settings(&fake, &proxy);
    s.certificate_ttl = Some(1);
    s.jwks_ttl = Some(1);
    s.outage_grace = Some(2);
    s.breaker_threshold = Some(3);
    s.breaker_cooldown = Some(0.4);
    let p = provider(s);
    let token = p
        .jwt_sign(&document(), &SignOptions::default())
        .await
        .unwrap();
    let sealed = p.encrypt(b"before the outage").await.unwrap();
    p.jwt_verify(&token, None).await.unwrap();

    proxy.down_for(Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Inside the grace: local encryption and verification go on from the cached
    // certificate and key set, and say so; decrypt and sign cannot.
    let again = p.encrypt(b"during the outage").await.unwrap();
    p.jwt_verify(&token, None).await.unwrap();
    assert!(p.call_counts().unwrap().stale_served >= 2);
    let e = p.decrypt(&sealed).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");

    // The circuit is open now: calls fail fast, and do not pile up on the Keymanager.
    let before = proxy.counts().total_requests();
    let started = Instant::now();
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let p = p.clone();
            let sealed = sealed.clone();
            tokio::spawn(async move { p.decrypt(&sealed).await })
        })
        .collect();
    for call in calls {
        let e = call.await.unwrap().unwrap_err();
        assert!(e.to_string().starts_with("kms_unavailable"), "{e}");
    }
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert!(proxy.counts().total_requests() - before <= 1);
    assert!(
        p.ready()
            .await
            .unwrap_err()
            .to_string()
            .starts_with("kms_unavailable")
    );

    // Past the grace, local encryption stops too.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let e = p.encrypt(b"after the grace").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");

    // The Keymanager comes back: after the cool-down one probe closes the circuit.
    proxy.up();
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(p.decrypt(&sealed).await.unwrap(), b"before the outage");
    assert_eq!(p.decrypt(&again).await.unwrap(), b"during the outage");
    p.encrypt(b"after the outage").await.unwrap();
    p.ready().await.unwrap();
}

#[tokio::test]
async fn a_429_is_retried_after_the_time_it_asks_for() {
    let (fake, proxy) = setup(FaultPlan {
        too_many_requests: 1.0,
        retry_after_secs: 1,
        ..FaultPlan::default()
    })
    .await;
    let mut s = settings(&fake, &proxy);
    s.max_attempts = Some(2);
    let p = provider(s);
    let started = Instant::now();
    let e = p
        .jwt_sign(&document(), &SignOptions::default())
        .await
        .unwrap_err();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(
        e.to_string()
            .contains("HTTP 429 (gave up after 2 attempts)"),
        "{e}"
    );
    assert_eq!(proxy.counts().requests_to("jwtSign"), 2);
    // A 429 says the service is there: it does not open the circuit.
    assert!(p.client().unavailable().is_none());
}
