//! `bulk encrypt|decrypt`: chosen fields of every record of a JSON Lines file — a registry
//! export, say — through the provider, many records at once (`g2p_registry`). With `--out`,
//! the output is written whole or not at all; the first value that fails stops the run and
//! names its line and field.

use clap::{Args, Subcommand};
use g2p_config::Provider;
use g2p_encryption::files::AtomicFile;
use g2p_registry::fields::{Direction, FieldCrypt};
use g2p_registry::pipeline::{self, Options, PipelineError, Summary};
use g2p_registry::record::FieldPath;
use tokio::io::{AsyncBufRead, BufReader};

use crate::cli::Used;
use crate::commands::InOut;
use crate::failure::Failure;
use crate::io::io_failure;

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
    /// Records processed at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
}

impl From<PipelineError> for Failure {
    fn from(e: PipelineError) -> Self {
        Failure::of_kind(e.kind(), e.to_string())
    }
}

/// Runs `bulk encrypt` or `bulk decrypt`, and records it in the audit trail.
pub async fn run(used: &Used<'_>, command: &BulkCommand) -> Result<(), Failure> {
    let direction = match command {
        BulkCommand::Encrypt(_) => Direction::Encrypt,
        BulkCommand::Decrypt(_) => Direction::Decrypt,
    };
    let result = run_bulk(used.provider, command).await;
    let values = result.as_ref().map_or(0, |s| s.values);
    used.record(direction.as_str(), Vec::new(), (values, values), result)
        .map(|_| ())
}

async fn run_bulk(provider: &Provider, command: &BulkCommand) -> Result<Summary, Failure> {
    let (args, direction) = match command {
        BulkCommand::Encrypt(args) => (args, Direction::Encrypt),
        BulkCommand::Decrypt(args) => (args, Direction::Decrypt),
    };
    if args.concurrency == 0 {
        return Err(Failure::usage("--concurrency must be at least 1"));
    }
    let fields = args
        .fields
        .iter()
        .map(|f| FieldPath::parse(f).map_err(|e| Failure::usage(format!("--field {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let transform = FieldCrypt::new(provider.as_dyn(), fields, direction);
    let input = open_input(args.io.input.as_deref()).await?;
    let options = Options {
        concurrency: args.concurrency,
    };
    let summary = match &args.io.output {
        Some(path) => {
            let mut file = AtomicFile::create(path)
                .map_err(|e| io_failure(format!("cannot write {}: {e}", path.display()), &e))?;
            let summary = pipeline::run(input, &mut file, &transform, options, &|_| {}).await?;
            file.commit()
                .map_err(|e| io_failure(format!("cannot write {}: {e}", path.display()), &e))?;
            summary
        }
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout());
            pipeline::run(input, &mut out, &transform, options, &|_| {}).await?
        }
    };
    eprintln!(
        "{}ed {} values in {} records ({:.1} s)",
        direction.as_str(),
        summary.values,
        summary.records,
        summary.elapsed.as_secs_f64()
    );
    Ok(summary)
}

async fn open_input(
    path: Option<&std::path::Path>,
) -> Result<Box<dyn AsyncBufRead + Unpin + Send>, Failure> {
    Ok(match path {
        Some(path) => {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| io_failure(format!("cannot read {}: {e}", path.display()), &e))?;
            Box::new(BufReader::with_capacity(256 * 1024, file))
        }
        None => Box::new(BufReader::new(tokio::io::stdin())),
    })
}
