//! `g2p-load`: throughput and memory of the gateway (`g2p-keymanager serve`) and of the
//! embedded key manager's HTTP API (`g2p-keymanager kms serve`) under concurrent clients,
//! each figure next to this machine's crypto ceiling measured in the same run.
//!
//! ```text
//! cargo build --release -p g2p-keymanager -p g2p-load
//! target/release/g2p-load gateway   # single vs batch, peak memory under 64 clients
//! target/release/g2p-load kms       # decrypt / jwtSign vs the RSA private-op ceiling
//! ```
//!
//! The client runs on the same machine as the server, so the figures are a lower bound:
//! both share the cores.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey,
};
use aws_lc_rs::signature::{
    KeyPair, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair, UnparsedPublicKey,
};
use clap::{Parser, Subcommand};
use g2p_encryption::b64::encode_b64u;
use serde_json::{Value, json};

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
    },
}

#[derive(Debug, clap::Args)]
struct Common {
    /// The g2p-keymanager binary to start.
    #[arg(long, default_value = "target/release/g2p-keymanager")]
    bin: PathBuf,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds per scenario (after a short warm-up).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
}

/// A server process started on a free port, killed on drop.
struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(bin: &PathBuf, args: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut command = Command::new(bin);
        for (key, _) in std::env::vars() {
            if key.starts_with("KEYMANAGER_") || key.starts_with("G2P_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .args(args)
            .env("G2P_DATA_DIR", dir.path())
            .env("G2P_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {} (build it first)", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first)?;
        if !first.starts_with("http://") {
            bail!("unexpected first line from the server: {first:?}");
        }
        Ok(Server {
            child,
            url: first.trim().to_string(),
            _dir: dir,
        })
    }

    /// CPU time the server has used so far, seconds (all its threads, live or ended).
    fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds_of(&format!("/proc/{}/stat", self.child.id()))
    }

    /// (current resident set, peak resident set) in KiB, from /proc.
    fn memory_kib(&self) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of a process from its `/proc/.../stat`, in seconds (USER_HZ = 100).
fn cpu_seconds_of(path: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(path)?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unreadable stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
    Ok((ticks(11) + ticks(12)) as f64 / 100.0)
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
struct Job {
    url: String,
    body: Arc<Vec<u8>>,
    headers: Vec<(&'static str, String)>,
    items: u64,
    /// MOSIP answers errors with HTTP 200: such bodies contain this.
    error_marker: Option<&'static str>,
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
    // Warm-up: connections, caches, lazily created keys.
    run_for(http, job, clients, Duration::from_millis(500)).await?;
    let server_before = server.cpu_seconds()?;
    let client_before = cpu_seconds_of("/proc/self/stat")?;
    let mut stats = run_for(http, job, clients, Duration::from_secs_f64(seconds)).await?;
    stats.server_cpu = server.cpu_seconds()? - server_before;
    stats.client_cpu = cpu_seconds_of("/proc/self/stat")? - client_before;
    Ok(stats)
}

async fn run_for(
    http: &reqwest::Client,
    job: &Job,
    clients: usize,
    window: Duration,
) -> Result<Stats> {
    let started = Instant::now();
    let deadline = started + window;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let http = http.clone();
        let job = job.clone();
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
        items: requests * job.items,
        requests,
        elapsed: started.elapsed(),
        latencies_us,
        server_cpu: 0.0,
        client_cpu: 0.0,
    })
}

/// Operations per second of `op` on every core at once, for `seconds`.
fn ceiling(seconds: f64, op: impl Fn() + Send + Sync + Clone + 'static) -> f64 {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let window = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let op = op.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while started.elapsed() < window {
                    op();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    total as f64 / started.elapsed().as_secs_f64()
}

/// The RSA operations the served requests need, for measuring their ceilings in process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    OaepEncrypt,
    OaepDecrypt,
    Rs256Sign,
    Rs256Verify,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::OaepEncrypt => "RSA-OAEP-SHA256 encrypt",
            Op::OaepDecrypt => "RSA-OAEP-SHA256 decrypt",
            Op::Rs256Sign => "RS256 sign",
            Op::Rs256Verify => "RS256 verify",
        }
    }
}

/// Keys and inputs for the ceilings.
struct Crypto {
    public: Arc<OaepPublicEncryptingKey>,
    private: Arc<OaepPrivateDecryptingKey>,
    ciphertext: Arc<Vec<u8>>,
    signer: Arc<RsaKeyPair>,
    signature: Arc<Vec<u8>>,
}

const MESSAGE: &[u8] = br#"{"beneficiary":"B-1029","amount":150}"#;

impl Crypto {
    fn new() -> Result<Self> {
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048)?;
        let public = OaepPublicEncryptingKey::new(private.public_key())?;
        let private = OaepPrivateDecryptingKey::new(private)?;
        let mut out = vec![0u8; 256];
        let ciphertext = public
            .encrypt(&OAEP_SHA256_MGF1SHA256, &[7u8; 32], &mut out, None)?
            .to_vec();
        let signer = RsaKeyPair::generate(KeySize::Rsa2048)?;
        let mut signature = vec![0u8; signer.public_modulus_len()];
        signer
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                MESSAGE,
                &mut signature,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Crypto {
            public: Arc::new(public),
            private: Arc::new(private),
            ciphertext: Arc::new(ciphertext),
            signer: Arc::new(signer),
            signature: Arc::new(signature),
        })
    }

    /// Operations per second of `op` on every core, measured now for `seconds`.
    fn rate(&self, op: Op, seconds: f64) -> f64 {
        match op {
            Op::OaepEncrypt => {
                let public = self.public.clone();
                ceiling(seconds, move || {
                    let mut out = [0u8; 256];
                    let _ = public.encrypt(&OAEP_SHA256_MGF1SHA256, &[7u8; 32], &mut out, None);
                })
            }
            Op::OaepDecrypt => {
                let private = self.private.clone();
                let ct = self.ciphertext.clone();
                ceiling(seconds, move || {
                    let mut out = [0u8; 256];
                    let _ = private.decrypt(&OAEP_SHA256_MGF1SHA256, &ct, &mut out, None);
                })
            }
            Op::Rs256Sign => {
                let signer = self.signer.clone();
                ceiling(seconds, move || {
                    let mut sig = vec![0u8; signer.public_modulus_len()];
                    let _ = signer.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), MESSAGE, &mut sig);
                })
            }
            Op::Rs256Verify => {
                let public_key = Arc::new(self.signer.public_key().as_ref().to_vec());
                let signature = self.signature.clone();
                ceiling(seconds, move || {
                    let key =
                        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_key.as_slice());
                    let _ = key.verify(MESSAGE, &signature);
                })
            }
        }
    }
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
    let many = |item: Value| json!({ "items": vec![item; batch] });
    let scenarios: [(&str, &str, Value, u64, Op); 6] = [
        (
            "encrypt, single",
            "encrypt",
            json!({"data": record}),
            1,
            Op::OaepEncrypt,
        ),
        (
            "encrypt, batch",
            "encrypt",
            many(json!({"data": record})),
            batch as u64,
            Op::OaepEncrypt,
        ),
        (
            "verify, single",
            "verify",
            json!({"jws": signed["jws"]}),
            1,
            Op::Rs256Verify,
        ),
        (
            "verify, batch",
            "verify",
            many(json!({"jws": signed["jws"]})),
            batch as u64,
            Op::Rs256Verify,
        ),
        (
            "decrypt, single",
            "decrypt",
            json!({"data": sealed["data"]}),
            1,
            Op::OaepDecrypt,
        ),
        (
            "decrypt, batch",
            "decrypt",
            many(json!({"data": sealed["data"]})),
            batch as u64,
            Op::OaepDecrypt,
        ),
    ];
    let mut singles = std::collections::BTreeMap::new();
    for (name, endpoint, body, items, op) in scenarios {
        let job = job(format!("{url}/v1/{endpoint}"), &body, items)?;
        let reference = crypto.rate(op, 1.5);
        let mut stats = drive(&http, &job, n, common.seconds, &server).await?;
        row(
            &format!("{name} ({}: {reference:.0}/s)", op.label()),
            n,
            &mut stats,
            reference,
        );
        if items == 1 {
            singles.insert(endpoint, stats.items_per_sec());
        } else if let Some(single) = singles.get(endpoint) {
            println!(
                "|  ↳ batch / single | | {:.2}× | | | | | | | |",
                stats.items_per_sec() / single
            );
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

async fn kms(common: &Common) -> Result<()> {
    let server = Server::start(
        &common.bin,
        &[
            "kms",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--client",
            "load:load-secret",
        ],
    )?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(common.clients)
        .build()?;
    let base = server.url.clone();
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
    let token = token["access_token"]
        .as_str()
        .context("no access_token")?
        .to_string();
    let wrap = |request: Value| json!({"id": "mosip.cryptomanager", "version": "1.0", "requesttime": g2p_mosip::timestamp::now_strict(), "request": request});
    let ts = g2p_mosip::timestamp::now_strict();
    let record = encode_b64u(br#"{"name":"Amina Yusuf","account":"0099887766"}"#);
    let encrypt_request = wrap(
        json!({"applicationId": "REGISTRATION", "referenceId": "ENCRYPT", "timeStamp": ts, "data": record}),
    );
    let cookie = vec![("cookie", format!("Authorization={token}"))];
    let sealed: Value = http
        .post(format!("{base}/v1/keymanager/encrypt"))
        .header("cookie", &cookie[0].1)
        .json(&encrypt_request)
        .send()
        .await?
        .json()
        .await?;
    let data = sealed["response"]["data"]
        .as_str()
        .context("encrypt failed")?
        .to_string();
    let decrypt_request = wrap(
        json!({"applicationId": "REGISTRATION", "referenceId": "ENCRYPT", "timeStamp": ts, "data": data}),
    );
    let sign_request = wrap(json!({
        "dataToSign": encode_b64u(br#"{"beneficiary":"B-1029","amount":150}"#),
        "applicationId": "ID_REPO", "referenceId": "",
        "includePayload": true, "includeCertificate": false, "includeCertHash": false
    }));
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
        job.headers = cookie.clone();
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
            Cmd::Kms { common } => kms(common).await,
        }
    })
}
