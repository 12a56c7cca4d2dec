//! `g2p-load replicas`: `kms serve` replicas over one PostgreSQL database.
//!
//! Decrypt and jwtSign throughput with one replica, then with two (client `i` calls replica
//! `i % 2`, with a token the first replica issued), each next to the all-core rate of the RSA
//! private operation measured just before; then how long a rotation made through one replica
//! takes to be seen through the other (`generateMasterKey` with `force` on the first, the
//! second's `getCertificate` polled until the certificate changes).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use g2p_encryption::ceiling::{Crypto, Op};
use serde_json::{Value, json};

use crate::server::Server;
use crate::{Common, Job, drive_all, header, job, kms_bodies, kms_token, row};

/// The issuer both replicas name, as behind a load balancer.
const PUBLIC_URL: &str = "http://keymanager.load";

fn start(common: &Common, env: &[(&str, &str)]) -> Result<Server> {
    Server::start_with_env(
        &common.bin,
        &[
            "kms",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--client",
            "load:load-secret:REGISTRATION_ADMIN,KEY_MAKER",
            "--public-url",
            PUBLIC_URL,
        ],
        env,
    )
}

fn random_kek() -> Result<String> {
    let mut kek = [0u8; 32];
    aws_lc_rs::rand::fill(&mut kek)?;
    Ok(g2p_encryption::b64::encode_b64(&kek))
}

/// The PEM of the current `ID_REPO` master certificate through `base`.
async fn certificate(http: &reqwest::Client, base: &str, cookie: &str) -> Result<String> {
    let body: Value = http
        .get(format!(
            "{base}/v1/keymanager/getCertificate?applicationId=ID_REPO&referenceId="
        ))
        .header("cookie", cookie)
        .send()
        .await?
        .json()
        .await?;
    Ok(body["response"]["certificate"]
        .as_str()
        .with_context(|| format!("getCertificate: {body}"))?
        .to_string())
}

/// Rotates the `ID_REPO` master key through `base`.
async fn rotate(http: &reqwest::Client, base: &str, cookie: &str) -> Result<()> {
    let body: Value = http
        .post(format!(
            "{base}/v1/keymanager/generateMasterKey/CERTIFICATE"
        ))
        .header("cookie", cookie)
        .json(&json!({
            "id": "load", "version": "1.0",
            "requesttime": g2p_mosip::timestamp::now_strict(),
            "request": {"applicationId": "ID_REPO", "referenceId": "", "force": true}
        }))
        .send()
        .await?
        .json()
        .await?;
    if body["response"].is_null() {
        bail!("generateMasterKey: {body}");
    }
    Ok(())
}

pub async fn run(common: &Common, database_url: &str, rotations: usize) -> Result<()> {
    let kek = random_kek()?;
    let env = [
        ("G2P_KMS_DATABASE_URL", database_url),
        ("G2P_KMS_KEK", kek.as_str()),
    ];
    let first = start(common, &env)?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(common.clients)
        .build()?;
    let cookie = format!("Authorization={}", kms_token(&http, &first.url).await?);
    let (_, decrypt_request, sign_request) = kms_bodies(&http, &first.url, &cookie).await?;
    let crypto = Crypto::new()?;
    let n = common.clients;
    let jobs_for = |servers: &[&Server], endpoint: &str, body: &Value| -> Result<Vec<Job>> {
        servers
            .iter()
            .map(|s| {
                let mut job = job(format!("{}/v1/keymanager/{endpoint}", s.url), body, 1)?;
                job.headers = vec![("cookie", cookie.clone())];
                job.error_marker = Some("\"errorCode\"");
                Ok(job)
            })
            .collect()
    };
    println!(
        "Each scenario runs {n} clients for {}s; client i calls replica i mod the replicas, with a token the first issued. The replicas share this machine's cores; the ceiling is the all-core rate of the request's RSA operation, measured in process just before it.\n",
        common.seconds
    );
    header("the ceiling of the request's RSA operation");
    let scenarios = [
        (
            "MOSIP /decrypt",
            "decrypt",
            &decrypt_request,
            Op::OaepDecrypt,
        ),
        ("MOSIP /jwtSign", "jwtSign", &sign_request, Op::Rs256Sign),
    ];
    let mut one = Vec::new();
    for (name, endpoint, body, op) in scenarios {
        let reference = crypto.rate(op, 1.5);
        let jobs = jobs_for(&[&first], endpoint, body)?;
        let mut stats = drive_all(&http, &jobs, n, common.seconds, &[&first]).await?;
        row(
            &format!("{name}, 1 replica ({}: {reference:.0}/s)", op.label()),
            n,
            &mut stats,
            reference,
        );
        one.push(stats.items_per_sec());
    }
    let second = start(common, &env)?;
    for ((name, endpoint, body, op), single) in scenarios.into_iter().zip(one) {
        let reference = crypto.rate(op, 1.5);
        let jobs = jobs_for(&[&first, &second], endpoint, body)?;
        let mut stats = drive_all(&http, &jobs, n, common.seconds, &[&first, &second]).await?;
        row(
            &format!("{name}, 2 replicas ({}: {reference:.0}/s)", op.label()),
            n,
            &mut stats,
            reference,
        );
        println!(
            "|  ↳ 2 replicas / 1 | | {:.2}× | | | | | | | |",
            stats.items_per_sec() / single
        );
    }

    rotation_visibility(&http, (&first, &second), &cookie, rotations).await
}

/// Rotates the `ID_REPO` master key through `first` `rotations` times and prints how long
/// each took to be seen through `second`.
async fn rotation_visibility(
    http: &reqwest::Client,
    (first, second): (&Server, &Server),
    cookie: &str,
    rotations: usize,
) -> Result<()> {
    let mut seen = Vec::with_capacity(rotations);
    for _ in 0..rotations {
        let before = certificate(http, &second.url, cookie).await?;
        rotate(http, &first.url, cookie).await?;
        let rotated = Instant::now();
        loop {
            if certificate(http, &second.url, cookie).await? != before {
                seen.push(rotated.elapsed());
                break;
            }
            if rotated.elapsed() > Duration::from_secs(30) {
                bail!("a rotation was not seen by the other replica within 30 s");
            }
        }
    }
    seen.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    if let (Some(min), Some(max)) = (seen.first(), seen.last()) {
        println!(
            "\nrotation through one replica seen through the other, {rotations} rotations: median {:.1} ms, min {:.1} ms, max {:.1} ms (timed from the rotation's answer to the first getCertificate naming the new certificate)",
            ms(seen[seen.len() / 2]),
            ms(*min),
            ms(*max)
        );
    }
    Ok(())
}
