//! `g2p-keymanager bench`: the configured provider's throughput and latency per operation,
//! next to this machine's crypto ceiling for that operation measured in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use g2p_encryption::ceiling::{Crypto, Op as CeilingOp};
use g2p_encryption::{CallCounts, EncryptionProvider, SignOptions, SignPayload};
use serde::Serialize;

use crate::cli::Used;
use crate::failure::Failure;

/// Operations `bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchOp {
    /// Encrypt a value of `--payload-size` bytes.
    Encrypt,
    /// Decrypt a ciphertext of such a value.
    Decrypt,
    /// Sign a JSON document of about `--payload-size` bytes (attached payload).
    Sign,
    /// Verify such a token.
    Verify,
    /// The four, one after the other.
    All,
}

impl BenchOp {
    fn name(self) -> &'static str {
        match self {
            BenchOp::Encrypt => "encrypt",
            BenchOp::Decrypt => "decrypt",
            BenchOp::Sign => "sign",
            BenchOp::Verify => "verify",
            BenchOp::All => "all",
        }
    }

    /// The in-process operation that bounds this one on this machine.
    fn ceiling(self, payload_size: usize) -> CeilingOp {
        match self {
            BenchOp::Encrypt => CeilingOp::Seal(payload_size),
            BenchOp::Decrypt => CeilingOp::OaepDecrypt,
            BenchOp::Sign => CeilingOp::Rs256Sign,
            BenchOp::Verify | BenchOp::All => CeilingOp::Rs256Verify,
        }
    }
}

/// `bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = BenchOp::All)]
    pub op: BenchOp,
    /// Seconds each operation is measured, after a warm-up.
    #[arg(long, default_value_t = 10.0, value_parser = positive)]
    pub duration: f64,
    /// Operations in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// Bytes of each value encrypted or signed.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub payload_size: u32,
    /// Seconds of warm-up before each measurement (default: a fifth of the duration, at most
    /// 2).
    #[arg(long, value_parser = non_negative)]
    pub warmup: Option<f64>,
    /// One JSON object per operation instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn positive(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{text:?} is not a positive number of seconds")),
    }
}

fn non_negative(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{text:?} is not a number of seconds")),
    }
}

/// One operation's figures.
#[derive(Debug, Serialize)]
struct Figures {
    op: &'static str,
    provider: String,
    kind: &'static str,
    concurrency: u32,
    payload_size: u32,
    duration_s: f64,
    operations: u64,
    ops_per_sec: f64,
    ceiling_op: String,
    ceiling_ops_per_sec: f64,
    ratio: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    errors: u64,
    retries: u64,
    token_fetches: u64,
}

/// What each worker repeats.
enum Work {
    Encrypt(Vec<u8>),
    Decrypt(Vec<u8>),
    Sign(SignPayload),
    Verify(String),
}

impl Work {
    async fn prepare(
        op: BenchOp,
        provider: &dyn EncryptionProvider,
        size: usize,
    ) -> Result<Self, Failure> {
        let value = vec![b'x'; size];
        let document = || {
            // A JSON document of about `size` bytes.
            let filler = "x".repeat(size.saturating_sub(24).max(1));
            SignPayload::Json(serde_json::json!({"beneficiary": "B-1029", "note": filler}))
        };
        Ok(match op {
            BenchOp::Encrypt | BenchOp::All => Work::Encrypt(value),
            BenchOp::Decrypt => Work::Decrypt(provider.encrypt(&value).await?),
            BenchOp::Sign => Work::Sign(document()),
            BenchOp::Verify => Work::Verify(
                provider
                    .jwt_sign(&document(), &SignOptions::default())
                    .await?,
            ),
        })
    }

    async fn once(&self, provider: &dyn EncryptionProvider) -> Result<(), g2p_encryption::Error> {
        match self {
            Work::Encrypt(value) => provider.encrypt(value).await.map(drop),
            Work::Decrypt(ciphertext) => provider.decrypt(ciphertext).await.map(drop),
            Work::Sign(payload) => provider
                .jwt_sign(payload, &SignOptions::default())
                .await
                .map(drop),
            Work::Verify(token) => provider.jwt_verify(token, None).await.map(drop),
        }
    }
}

/// Latencies and errors of a run.
struct Run {
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<g2p_encryption::Error>,
    elapsed: Duration,
}

/// Runs `work` on `concurrency` tasks for `seconds`.
async fn drive(
    provider: &Arc<dyn EncryptionProvider>,
    work: &Arc<Work>,
    concurrency: u32,
    seconds: f64,
) -> Run {
    let window = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let errors = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (provider, work, errors) = (provider.clone(), work.clone(), errors.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut first_error = None;
                while started.elapsed() < window {
                    let t = Instant::now();
                    match work.once(provider.as_ref()).await {
                        Ok(()) => latencies.push(t.elapsed().as_micros() as u64),
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (latencies, first_error)
            })
        })
        .collect();
    let mut latencies_us = Vec::new();
    let mut first_error = None;
    for task in tasks {
        if let Ok((mut latencies, error)) = task.await {
            latencies_us.append(&mut latencies);
            if first_error.is_none() {
                first_error = error;
            }
        }
    }
    Run {
        latencies_us,
        errors: errors.load(Ordering::Relaxed),
        first_error,
        elapsed: started.elapsed(),
    }
}

/// The `p`-th percentile of sorted latencies, in milliseconds.
fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    let at = rank.clamp(1, sorted_us.len()) - 1;
    sorted_us[at] as f64 / 1000.0
}

fn counts(provider: &dyn EncryptionProvider) -> CallCounts {
    provider.call_counts().unwrap_or_default()
}

async fn measure(
    used: &Used<'_>,
    args: &BenchArgs,
    op: BenchOp,
    crypto: &Arc<Crypto>,
) -> Result<Figures, Failure> {
    let provider = used.provider.as_dyn();
    let size = args.payload_size as usize;
    let work = Arc::new(Work::prepare(op, provider.as_ref(), size).await?);
    let warmup = args.warmup.unwrap_or((args.duration / 5.0).min(2.0));
    if warmup > 0.0 {
        drive(&provider, &work, args.concurrency, warmup).await;
    }
    let before = counts(provider.as_ref());
    let mut run = drive(&provider, &work, args.concurrency, args.duration).await;
    let after = counts(provider.as_ref());
    let succeeded = run.latencies_us.len() as u64;
    used.audit.record_pair(
        op.name(),
        Some(used.name),
        None,
        Vec::new(),
        (
            usize::try_from(succeeded + run.errors).unwrap_or(usize::MAX),
            usize::try_from(succeeded).unwrap_or(usize::MAX),
        ),
        None,
    );
    if succeeded == 0 {
        let cause = run
            .first_error
            .map_or_else(|| "no operation completed".to_string(), |e| e.to_string());
        return Err(Failure::of_kind(
            g2p_encryption::ErrorKind::Unavailable,
            format!("bench {}: every operation failed: {cause}", op.name()),
        ));
    }
    if let Some(e) = &run.first_error {
        tracing::warn!(op = op.name(), errors = run.errors, first = %e, "some operations failed");
    }
    // The ceiling, measured now on every core, for as long as makes it steady.
    let ceiling_op = op.ceiling(size);
    let seconds = (args.duration / 5.0).clamp(0.5, 2.0);
    let crypto = crypto.clone();
    let ceiling = tokio::task::spawn_blocking(move || crypto.rate(ceiling_op, seconds))
        .await
        .map_err(|e| Failure::system(format!("crypto ceiling: {e}")))?;
    run.latencies_us.sort_unstable();
    let ops_per_sec = succeeded as f64 / run.elapsed.as_secs_f64();
    Ok(Figures {
        op: op.name(),
        provider: used.name.to_string(),
        kind: provider.kind(),
        concurrency: args.concurrency,
        payload_size: args.payload_size,
        duration_s: run.elapsed.as_secs_f64(),
        operations: succeeded,
        ops_per_sec,
        ceiling_op: ceiling_op.label(),
        ceiling_ops_per_sec: ceiling,
        ratio: if ceiling > 0.0 {
            ops_per_sec / ceiling
        } else {
            0.0
        },
        p50_ms: percentile_ms(&run.latencies_us, 50.0),
        p90_ms: percentile_ms(&run.latencies_us, 90.0),
        p99_ms: percentile_ms(&run.latencies_us, 99.0),
        errors: run.errors,
        retries: after.retries.saturating_sub(before.retries),
        token_fetches: after.token_fetches.saturating_sub(before.token_fetches),
    })
}

fn table_row(f: &Figures) -> String {
    format!(
        "{:<8} {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>8} {:>7} {:>12.1} {:>6.1}%  {}\n",
        f.op,
        f.ops_per_sec,
        f.p50_ms,
        f.p90_ms,
        f.p99_ms,
        f.errors,
        f.retries,
        f.token_fetches,
        f.ceiling_ops_per_sec,
        100.0 * f.ratio,
        f.ceiling_op
    )
}

/// Runs `bench`.
///
/// # Errors
/// When an operation cannot be prepared, or every attempt of one failed.
pub async fn run(used: &Used<'_>, args: &BenchArgs) -> Result<(), Failure> {
    let ops = match args.op {
        BenchOp::All => vec![
            BenchOp::Encrypt,
            BenchOp::Decrypt,
            BenchOp::Sign,
            BenchOp::Verify,
        ],
        one => vec![one],
    };
    let crypto = Arc::new(
        tokio::task::spawn_blocking(Crypto::new)
            .await
            .map_err(|e| Failure::system(format!("crypto ceiling: {e}")))??,
    );
    let mut out = std::io::stdout().lock();
    if !args.json {
        let header = format!(
            "# provider {} ({}), concurrency {}, payload {} bytes, {} s per operation; ceiling: this machine's rate of the operation's crypto on every core, in process\n{:<8} {:>10} {:>8} {:>8} {:>8} {:>7} {:>8} {:>7} {:>12} {:>7}  {}\n",
            used.name,
            used.provider.as_dyn().kind(),
            args.concurrency,
            args.payload_size,
            args.duration,
            "op",
            "ops/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "errors",
            "retries",
            "tokens",
            "ceiling/s",
            "ratio",
            "ceiling operation"
        );
        write(&mut out, &header)?;
    }
    for op in ops {
        let figures = measure(used, args, op, &crypto).await?;
        let line = if args.json {
            let mut text = serde_json::to_string(&figures)
                .map_err(|e| Failure::system(format!("bench output: {e}")))?;
            text.push('\n');
            text
        } else {
            table_row(&figures)
        };
        write(&mut out, &line)?;
    }
    Ok(())
}

fn write(out: &mut impl std::io::Write, text: &str) -> Result<(), Failure> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::system(format!("cannot write the figures: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_sorted_latencies() {
        let sorted: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile_ms(&sorted, 50.0), 50.0);
        assert_eq!(percentile_ms(&sorted, 90.0), 90.0);
        assert_eq!(percentile_ms(&sorted, 99.0), 99.0);
        assert_eq!(percentile_ms(&[7000], 99.0), 7.0);
        assert_eq!(percentile_ms(&[], 50.0), 0.0);
    }
}
