//! `bulk encrypt|decrypt`: chosen fields of every record of a JSON Lines file — a registry
//! export, say — through the provider, many values at once. Other fields, the key order and
//! the record order are kept. The output is written whole or not at all: the first value that
//! fails stops the run and names its line and field.

use clap::{Args, Subcommand};
use futures_util::StreamExt;
use g2p_encryption::b64;
use serde_json::Value;

use crate::commands::InOut;
use crate::failure::Failure;
use crate::io::{read_input, write_output};
use g2p_config::Provider;

/// `bulk` subcommands.
#[derive(Debug, Subcommand)]
pub enum BulkCommand {
    /// Replace each chosen text field by its base64url ciphertext.
    Encrypt(BulkArgs),
    /// Replace each chosen ciphertext field by its text.
    Decrypt(BulkArgs),
}

/// `bulk` arguments.
#[derive(Debug, Args)]
pub struct BulkArgs {
    #[command(flatten)]
    pub io: InOut,
    /// A field to process: a name or a dotted path into nested objects (`address.city`);
    /// repeat, or separate with commas. Records without it are left as they are.
    #[arg(
        long = "field",
        value_delimiter = ',',
        required = true,
        value_name = "PATH"
    )]
    pub fields: Vec<String>,
    /// Values processed at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
}

/// One value to process: where it is and what it holds.
struct Job {
    record: usize,
    field: usize,
    text: String,
}

fn at_path<'a>(record: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    path.split('.')
        .try_fold(record, |value, name| value.as_object_mut()?.get_mut(name))
}

fn located(line: usize, field: &str, failure: Failure) -> Failure {
    Failure {
        exit: failure.exit,
        message: format!("line {line}, field {field}: {}", failure.message),
    }
}

/// Runs `bulk encrypt` or `bulk decrypt`.
pub async fn run(provider: &Provider, command: &BulkCommand) -> Result<(), Failure> {
    let (args, encrypt) = match command {
        BulkCommand::Encrypt(args) => (args, true),
        BulkCommand::Decrypt(args) => (args, false),
    };
    if args.concurrency == 0 {
        return Err(Failure::usage("--concurrency must be at least 1"));
    }
    if let Some(bad) = args.fields.iter().find(|f| f.split('.').any(str::is_empty)) {
        return Err(Failure::usage(format!(
            "--field {bad:?} is not a field path"
        )));
    }
    let input = read_input(args.io.input.as_deref())?;
    let text = std::str::from_utf8(&input)
        .map_err(|e| Failure::usage(format!("input is not UTF-8 text: {e}")))?;
    // (line number, record) for every non-blank line.
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(record @ Value::Object(_)) => records.push((i + 1, record)),
            Ok(_) => {
                return Err(Failure::usage(format!("line {}: not a JSON object", i + 1)));
            }
            Err(e) => return Err(Failure::usage(format!("line {}: not JSON: {e}", i + 1))),
        }
    }
    let mut jobs = Vec::new();
    for (r, (line, record)) in records.iter_mut().enumerate() {
        for (f, field) in args.fields.iter().enumerate() {
            match at_path(record, field) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => jobs.push(Job {
                    record: r,
                    field: f,
                    text: std::mem::take(s),
                }),
                Some(other) => {
                    return Err(Failure::usage(format!(
                        "line {line}, field {field}: {} is not text (bulk {} takes strings)",
                        kind_of(other),
                        if encrypt { "encrypt" } else { "decrypt" }
                    )));
                }
            }
        }
    }
    let provider = provider.as_dyn();
    let started = std::time::Instant::now();
    let count = jobs.len();
    let mut results = futures_util::stream::iter(jobs.into_iter().map(|job| {
        let provider = provider.clone();
        async move {
            let out = if encrypt {
                provider
                    .encrypt(job.text.as_bytes())
                    .await
                    .map(|ct| b64::encode_b64u(&ct))
                    .map_err(Failure::from)
            } else {
                open(&*provider, &job.text).await
            };
            (job.record, job.field, out)
        }
    }))
    .buffered(args.concurrency);
    while let Some((r, f, out)) = results.next().await {
        let (line, record) = &mut records[r];
        let value = out.map_err(|e| located(*line, &args.fields[f], e))?;
        if let Some(slot) = at_path(record, &args.fields[f]) {
            *slot = Value::String(value);
        }
    }
    let mut output = Vec::new();
    for (_, record) in &records {
        serde_json::to_writer(&mut output, record)
            .map_err(|e| Failure::usage(format!("cannot write a record: {e}")))?;
        output.push(b'\n');
    }
    write_output(args.io.output.as_deref(), &output)?;
    eprintln!(
        "{} {count} values in {} records ({:.1} s)",
        if encrypt { "encrypted" } else { "decrypted" },
        records.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn open(
    provider: &dyn g2p_encryption::EncryptionProvider,
    text: &str,
) -> Result<String, Failure> {
    let ciphertext = b64::decode_lenient(text.trim())
        .map_err(|e| Failure::usage(format!("not a base64url ciphertext: {e}")))?;
    let plaintext = provider.decrypt(&ciphertext).await?;
    String::from_utf8(plaintext)
        .map_err(|_| Failure::usage("the decrypted value is not UTF-8 text"))
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_reach_nested_fields_only_through_objects() {
        let mut record = json!({"name": "A", "address": {"city": "Kano"}, "tags": ["x"]});
        assert_eq!(
            at_path(&mut record, "address.city"),
            Some(&mut json!("Kano"))
        );
        assert!(at_path(&mut record, "address.zip").is_none());
        assert!(at_path(&mut record, "tags.0").is_none());
        assert!(at_path(&mut record, "name.first").is_none());
    }
}
