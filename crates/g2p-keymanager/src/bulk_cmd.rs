//! `bulk encrypt|decrypt`: chosen fields of every record of a JSON Lines or CSV file — a
//! registry export, say — each its own ciphertext, through the provider, many records at once
//! (`g2p_registry`). The output is written whole or not at all; the first value that fails
//! stops the run and names its line and field (or goes to `--rejects`).

use clap::{Args, Subcommand};
use g2p_registry::fields::{Direction, FieldCrypt};
use g2p_registry::record::FieldPath;

use crate::cli::Used;
use crate::failure::Failure;
use crate::records_io::{self, FileArgs};

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
    pub files: FileArgs,
    /// A field to process: a name or a dotted path into nested objects (`address.city`);
    /// repeat, or separate with commas. Records without it are left as they are, but a field
    /// that no record has is refused (see --allow-missing-fields).
    #[arg(
        long = "field",
        value_delimiter = ',',
        required = true,
        value_name = "PATH"
    )]
    pub fields: Vec<String>,
}

/// Runs `bulk encrypt` or `bulk decrypt`, and records it in the audit trail.
pub async fn run(used: &Used<'_>, command: &BulkCommand) -> Result<(), Failure> {
    let (args, direction) = match command {
        BulkCommand::Encrypt(args) => (args, Direction::Encrypt),
        BulkCommand::Decrypt(args) => (args, Direction::Decrypt),
    };
    let result = run_bulk(used, args, direction).await;
    let values = result.as_ref().map_or(0, |s| s.values);
    used.record(direction.as_str(), Vec::new(), (values, values), result)
        .map(|_| ())
}

async fn run_bulk(
    used: &Used<'_>,
    args: &BulkArgs,
    direction: Direction,
) -> Result<g2p_registry::Summary, Failure> {
    let fields = args
        .fields
        .iter()
        .map(|f| FieldPath::parse(f).map_err(|e| Failure::usage(format!("--field {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let transform: std::sync::Arc<dyn g2p_registry::Transform> =
        std::sync::Arc::new(FieldCrypt::new(used.provider.as_dyn(), fields, direction));
    let summary = records_io::run_files(&args.files, &transform, true).await?;
    if !args.files.quiet {
        eprintln!(
            "{}; {} values",
            records_io::summary_line(
                &format!("bulk {}", direction.as_str()),
                &format!("{}ed", direction.as_str()),
                &summary
            ),
            summary.values
        );
    }
    Ok(summary)
}
