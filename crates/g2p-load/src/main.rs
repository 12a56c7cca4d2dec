//! `g2p-load`: throughput and memory of the gateway (`g2p-keymanager serve`) and of the
//! embedded key manager's HTTP API (`g2p-keymanager kms serve`) under concurrent clients,
//! each figure next to this machine's crypto ceiling measured in the same run.
//!
//! ```text
//! cargo build --release -p g2p-keymanager -p g2p-load
//! target/release/g2p-load gateway   # single vs batch, peak memory under 64 clients
//! target/release/g2p-load kms       # decrypt / jwtSign vs the RSA private-op ceiling
//! target/release/g2p-load replicas --database-url postgres://…   # 1 vs 2 replicas, rotation
//! ```
//!
//! The client runs on the same machine as the server, so the figures are a lower bound:
//! both share the cores.
#![forbid(unsafe_code)]

mod kek;
mod replicas;
mod server;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use g2p_encryption::b64::encode_b64u;
use g2p_mosip::RequestWrapper;
use g2p_mosip::dto::{CryptomanagerRequest, JwtSignRequest};
use serde_json::{Value, json};

use crate::server::{Server, cpu_seconds_of};
use g2p_encryption::ceiling::{Crypto, Op};

#[derive(Debug, Parser)]
#[command(name = "g2p-load")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The gateway: single vs batch throughput for encrypt, decrypt and verify, and the
    /// gateway's peak memory under the concurrent clients.
    Gateway {
        #[command(flatten)]
        common: Common,
        /// Items per batch request.
        #[arg(long, default_value_t = 100)]
        batch: usize,
    },
    /// The embedded key manager's MOSIP API: decrypt and jwtSign throughput against the RSA
    /// private-operation ceiling, and encrypt throughput.
    Kms {
        #[command(flatten)]
        common: Common,
        /// An argument added to `kms serve` (repeatable), e.g. `--serve-arg=--kek`.
        #[arg(long = "serve-arg", value_name = "ARG", allow_hyphen_values = true)]
        serve_args: Vec<String>,
        /// An environment variable of `kms serve`, `NAME=VALUE` (repeatable; the variables of
        /// this process that configure g2p-keymanager are not passed on).
        #[arg(long = "serve-env", value_name = "NAME=VALUE")]
        serve_env: Vec<String>,
    },
    /// The key-encryption key's cost per unwrap of a private key (what a cold key costs the
    /// first request that needs it): in memory (a file KEK) and in a PKCS#11 token, with the
    /// RSA key's parse on top. Token: `--pkcs11-module`, `--pkcs11-token-label`, the PIN from
    /// `$G2P_KMS_PKCS11_PIN`, `SOFTHSM2_CONF` for SoftHSM.
    Kek {
        /// The PKCS#11 library.
        #[arg(long)]
        pkcs11_module: std::path::PathBuf,
        /// The token's label.
        #[arg(long)]
        pkcs11_token_label: String,
        /// Unwraps timed per KEK.
        #[arg(long, default_value_t = 2000)]
        count: usize,
    },
    /// `kms serve` replicas over one PostgreSQL database: decrypt and jwtSign throughput of
    /// one replica and of two (clients spread over both, tokens from the first) against the
    /// RSA private-operation ceiling, and how long a rotation on one replica takes to be seen
    /// by the other. The database should be empty (a new store is made in it).
    Replicas {
        #[command(flatten)]
        common: Common,
        /// The database, `postgres://…` (or `$G2P_KMS_DATABASE_URL`).
        #[arg(long, env = "G2P_KMS_DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// Rotations timed.
        #[arg(long, default_value_t = 20)]
        rotations: usize,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct Common {
    /// The g2p-keymanager binary to start.
    #[arg(long, default_value = "target/release/g2p-keymanager")]
    pub(crate) bin: PathBuf,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    pub(crate) clients: usize,
    /// Seconds per scenario (after a short warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub(crate) seconds: f64,
}

/// Requests and items completed in a measured window.
struct Stats {
    items: u64,
    requests: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
    /// CPU seconds the server used in the window.
    server_cpu: f64,
    /// CPU seconds this client used in the window.
    client_cpu: f64,
}

impl Stats {
    fn items_per_sec(&self) -> f64 {
        self.items as f64 / self.elapsed.as_secs_f64()
    }

    fn server_cpu_us_per_item(&self) -> f64 {
        1e6 * self.server_cpu / self.items.max(1) as f64
    }

    fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        self.latencies_us.sort_unstable();
        let i = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }
}

/// One prepared request: a URL, a body, headers, and how many items it carries.
#[derive(Clone)]
pub(crate) struct Job {
    url: String,
    body: Arc<Vec<u8>>,
    pub(crate) headers: Vec<(&'static str, String)>,
    items: u64,
    /// MOSIP answers errors with HTTP 200: such bodies contain this.
    pub(crate) error_marker: Option<&'static str>,
}

async fn send(http: &reqwest::Client, job: &Job) -> Result<()> {
    let mut request = http
        .post(&job.url)
        .header("content-type", "application/json")
        .body(job.body.as_ref().clone());
    for (name, value) in &job.headers {
        request = request.header(*name, value);
    }
    let response = request.send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        bail!(
            "{} answered {status}: {}",
            job.url,
            String::from_utf8_lossy(&body)
        );
    }
    if let Some(marker) = job.error_marker
        && body.windows(marker.len()).any(|w| w == marker.as_bytes())
    {
        bail!(
            "{} answered an error: {}",
            job.url,
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

/// Runs `clients` loops sending `job` for `seconds` after a warm-up.
async fn drive(
    http: &reqwest::Client,
    job: &Job,
    clients: usize,
    seconds: f64,
    server: &Server,
) -> Result<Stats> {
    drive_all(http, std::slice::from_ref(job), clients, seconds, &[server]).await
}

/// Runs `clients` loops for `seconds` after a warm-up, client `i` sending `jobs[i % n]`
/// (one job per server, say); the servers' CPU is summed.
async fn drive_all(
    http: &reqwest::Client,
    jobs: &[Job],
    clients: usize,
    seconds: f64,
    servers: &[&Server],
) -> Result<Stats> {
    let cpu = || -> Result<f64> { servers.iter().map(|s| s.cpu_seconds()).sum::<Result<f64>>() };
    // Warm-up: connections, caches, lazily created keys.
    run_for(http, jobs, clients, Duration::from_millis(500)).await?;
    let server_before = cpu()?;
    let client_before = cpu_seconds_of("/proc/self/stat")?;
    let mut stats = run_for(http, jobs, clients, Duration::from_secs_f64(seconds)).await?;
    stats.server_cpu = cpu()? - server_before;
    stats.client_cpu = cpu_seconds_of("/proc/self/stat")? - client_before;
    Ok(stats)
}

async fn run_for(
    http: &reqwest::Client,
    jobs: &[Job],
    clients: usize,
    window: Duration,
) -> Result<Stats> {
    let started = Instant::now();
    let deadline = started + window;
    let mut tasks = Vec::new();
    for client in 0..clients {
        let http = http.clone();
        let job = jobs[client % jobs.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                send(&http, &job).await?;
                latencies.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies_us = Vec::new();
    for task in tasks {
        latencies_us.extend(task.await??);
    }
    let requests = latencies_us.len() as u64;
    Ok(Stats {
        items: requests * jobs[0].items,
        requests,
        elapsed: started.elapsed(),
        latencies_us,
        server_cpu: 0.0,
        client_cpu: 0.0,
    })
}

/// One table row. `ceiling` is the all-core rate (operations per second) of the crypto
/// operation each item needs.
fn row(name: &str, clients: usize, stats: &mut Stats, ceiling: f64) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    // CPU one operation costs at the ceiling, against what the server spent per item.
    let crypto_share = (cores / ceiling) * 1e6 / stats.server_cpu_us_per_item();
    println!(
        "| {name} | {clients} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} | {:.0} % | {:.0} % | {:.0} % |",
        stats.items_per_sec(),
        stats.requests as f64 / stats.elapsed.as_secs_f64(),
        stats.percentile_ms(0.5),
        stats.percentile_ms(0.99),
        stats.server_cpu_us_per_item(),
        100.0 * stats.items_per_sec() / ceiling,
        100.0 * crypto_share,
        100.0 * stats.client_cpu / (stats.client_cpu + stats.server_cpu).max(1e-9),
    );
}

fn header(reference: &str) {
    println!(
        "| scenario | clients | items/s | requests/s | p50 ms | p99 ms | server CPU µs/item | throughput vs {reference} | crypto share of server CPU | load client's share of CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
}

async fn post_json(http: &reqwest::Client, url: &str, body: &Value) -> Result<Value> {
    let response = http.post(url).json(body).send().await?;
    let status = response.status();
    let value: Value = response.json().await?;
    if !status.is_success() {
        bail!("{url} answered {status}: {value}");
    }
    Ok(value)
}

fn job(url: String, body: &Value, items: u64) -> Result<Job> {
    Ok(Job {
        url,
        body: Arc::new(serde_json::to_vec(body)?),
        headers: Vec::new(),
        items,
        error_marker: Some("\"error\""),
    })
}

async fn gateway(common: &Common, batch: usize) -> Result<()> {
    let server = Server::start(&common.bin, &["serve", "--listen", "127.0.0.1:0"])?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(common.clients)
        .build()?;
    let url = server.url.clone();
    let record = encode_b64u(
        br#"{"name":"Amina Yusuf","address":"12 Market Road, Kano","account":"0099887766","household":7}"#,
    );
    let sealed = post_json(
        &http,
        &format!("{url}/v1/encrypt"),
        &json!({"data": record}),
    )
    .await?;
    let signed = post_json(
        &http,
        &format!("{url}/v1/sign"),
        &json!({"payload": {"beneficiary": "B-1029", "amount": 150, "currency": "KES"}}),
    )
    .await?;
    let (idle_rss, _) = server.memory_kib()?;
    let crypto = Crypto::new()?;
    let n = common.clients;
    println!(
        "Each scenario runs {n} clients for {}s; its ceiling is the all-core rate of the item's RSA operation, measured in process just before it.\n",
        common.seconds
    );
    header("the ceiling of the item's RSA operation");
    // Each operation once per request, then in batches of `batch`.
    let operations = [
        ("encrypt", json!({"data": record}), Op::OaepEncrypt),
        ("verify", json!({"jws": signed["jws"]}), Op::Rs256Verify),
        ("decrypt", json!({"data": sealed["data"]}), Op::OaepDecrypt),
    ];
    for (endpoint, item, op) in operations {
        let mut single = 0.0;
        for (kind, body, items) in [
            ("single", item.clone(), 1),
            ("batch", json!({ "items": vec![item; batch] }), batch as u64),
        ] {
            let job = job(format!("{url}/v1/{endpoint}"), &body, items)?;
            let reference = crypto.rate(op, 1.5);
            let mut stats = drive(&http, &job, n, common.seconds, &server).await?;
            row(
                &format!("{endpoint}, {kind} ({}: {reference:.0}/s)", op.label()),
                n,
                &mut stats,
                reference,
            );
            if items == 1 {
                single = stats.items_per_sec();
            } else {
                println!(
                    "|  ↳ batch / single | | {:.2}× | | | | | | | |",
                    stats.items_per_sec() / single
                );
            }
        }
    }
    let (rss, peak) = server.memory_kib()?;
    println!(
        "\ngateway memory: {:.1} MiB resident when idle; peak {:.1} MiB under {n} clients (batches of {batch}); {:.1} MiB after",
        idle_rss as f64 / 1024.0,
        peak as f64 / 1024.0,
        rss as f64 / 1024.0
    );
    Ok(())
}

/// A token of the load client from `kms serve`'s realm.
async fn kms_token(http: &reqwest::Client, base: &str) -> Result<String> {
    let token: Value = http
        .post(format!(
            "{base}/realms/openg2p/protocol/openid-connect/token"
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "load"),
            ("client_secret", "load-secret"),
        ])
        .send()
        .await?
        .json()
        .await?;
    Ok(token["access_token"]
        .as_str()
        .context("no access_token")?
        .to_string())
}

/// The `/encrypt` or `/decrypt` body for `data` (b64u), in the MOSIP wrapper.
fn crypto_body(data: String) -> Result<Value> {
    Ok(serde_json::to_value(RequestWrapper::new(
        CryptomanagerRequest {
            application_id: "REGISTRATION".into(),
            reference_id: "ENCRYPT".into(),
            time_stamp: Some(g2p_mosip::timestamp::now_strict()),
            data,
            salt: None,
            aad: None,
            prepend_thumbprint: None,
        },
    ))?)
}

/// The three MOSIP request bodies the scenarios send: `/encrypt`, `/decrypt` (of what the
/// first encrypted) and `/jwtSign`.
async fn kms_bodies(
    http: &reqwest::Client,
    base: &str,
    cookie: &str,
) -> Result<(Value, Value, Value)> {
    let record = encode_b64u(br#"{"name":"Amina Yusuf","account":"0099887766"}"#);
    let encrypt_request = crypto_body(record)?;
    let sealed: Value = http
        .post(format!("{base}/v1/keymanager/encrypt"))
        .header("cookie", cookie)
        .json(&encrypt_request)
        .send()
        .await?
        .json()
        .await?;
    let data = sealed["response"]["data"]
        .as_str()
        .context("encrypt failed")?
        .to_string();
    let sign_request = serde_json::to_value(RequestWrapper::new(JwtSignRequest {
        data_to_sign: encode_b64u(br#"{"beneficiary":"B-1029","amount":150}"#),
        application_id: "ID_REPO".into(),
        include_payload: true,
        ..JwtSignRequest::default()
    }))?;
    Ok((encrypt_request, crypto_body(data)?, sign_request))
}

async fn kms(common: &Common, serve_args: &[String], serve_env: &[String]) -> Result<()> {
    let mut args = vec![
        "kms",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--client",
        "load:load-secret",
    ];
    args.extend(serve_args.iter().map(String::as_str));
    let env = serve_env
        .iter()
        .map(|pair| pair.split_once('=').context("--serve-env takes NAME=VALUE"))
        .collect::<Result<Vec<_>>>()?;
    let server = Server::start_with_env(&common.bin, &args, &env)?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(common.clients)
        .build()?;
    let base = server.url.clone();
    let cookie = format!("Authorization={}", kms_token(&http, &base).await?);
    let (encrypt_request, decrypt_request, sign_request) =
        kms_bodies(&http, &base, &cookie).await?;
    let crypto = Crypto::new()?;
    let n = common.clients;
    println!(
        "Each scenario runs {n} clients for {}s; its ceiling is the all-core rate of the request's RSA operation, measured in process just before it.\n",
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
        (
            "MOSIP /encrypt",
            "encrypt",
            &encrypt_request,
            Op::OaepEncrypt,
        ),
    ];
    for (name, endpoint, body, op) in scenarios {
        let mut job = job(format!("{base}/v1/keymanager/{endpoint}"), body, 1)?;
        job.headers = vec![("cookie", cookie.clone())];
        job.error_marker = Some("\"errorCode\"");
        let reference = crypto.rate(op, 1.5);
        let mut stats = drive(&http, &job, n, common.seconds, &server).await?;
        row(
            &format!("{name} ({}: {reference:.0}/s)", op.label()),
            n,
            &mut stats,
            reference,
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match &cli.command {
            Cmd::Gateway { common, batch } => gateway(common, *batch).await,
            Cmd::Kms {
                common,
                serve_args,
                serve_env,
            } => kms(common, serve_args, serve_env).await,
            Cmd::Kek {
                pkcs11_module,
                pkcs11_token_label,
                count,
            } => kek::run(pkcs11_module, pkcs11_token_label, *count),
            Cmd::Replicas {
                common,
                database_url,
                rotations,
            } => replicas::run(common, database_url, *rotations).await,
        }
    })
}
