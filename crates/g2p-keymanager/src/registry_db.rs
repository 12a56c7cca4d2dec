//! `registry … --database-url`: a live registry table, a locked batch per transaction;
//! Ctrl-C finishes the batch in hand and stops (exit 130), and a re-run goes on from there.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use g2p_registry::Transform;
use g2p_registry::database::{self, DatabaseError, DatabaseOptions, Mode};
use g2p_registry::envelope::DEFAULT_FIELDS;
use g2p_registry::pipeline::{Report, Summary};
use g2p_registry::settings::RegistrySettings;

use crate::failure::Failure;
use crate::records_io::EXIT_INTERRUPTED;
use crate::registry_cmd::RegistryArgs;

impl From<DatabaseError> for Failure {
    fn from(e: DatabaseError) -> Self {
        match e {
            DatabaseError::Interrupted(_) => Failure {
                exit: EXIT_INTERRUPTED,
                message: e.to_string(),
            },
            other => Failure::of_kind(other.kind(), other.to_string()),
        }
    }
}

/// The batch counts on standard error, unless quiet.
struct Batches {
    quiet: bool,
}

impl Report for Batches {
    fn progress(&self, summary: &Summary) {
        if !self.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprint!(
                "\r{} rows, {} changed, {:.0} rows/s   ",
                summary.records,
                summary.changed,
                crate::records_io::rate(summary.records, summary.elapsed)
            );
        }
    }
}

/// Runs `verb` with `transform` over the table at `url`.
pub async fn run(
    verb: &str,
    args: &RegistryArgs,
    file: &RegistrySettings,
    url: &str,
    transform: &Arc<dyn Transform>,
) -> Result<Summary, Failure> {
    if args.files.input.is_some() || args.files.output.is_some() || args.files.rejects.is_some() {
        return Err(Failure::usage(
            "--in, --out and --rejects are for files; a database is changed in place",
        ));
    }
    let mode = match verb {
        "encrypt" => Mode::Encrypt {
            registrants_only: !args.all_records,
        },
        "decrypt" => Mode::Decrypt,
        "rewrap" => Mode::Rewrap,
        _ => Mode::Inspect,
    };
    if mode == Mode::Decrypt && !args.yes {
        return Err(Failure::usage(
            "decrypting a registry database removes the protection of every record: add --yes if that is what you want",
        ));
    }
    let fields = crate::registry_cmd::named_fields(args, file)?;
    let options = DatabaseOptions {
        table: args
            .table
            .clone()
            .or_else(|| file.table.clone())
            .unwrap_or_else(|| "res_partner".into()),
        id_column: args
            .id_column
            .clone()
            .or_else(|| file.id_column.clone())
            .unwrap_or_else(|| "id".into()),
        named: fields.is_some(),
        fields: fields.unwrap_or_else(|| DEFAULT_FIELDS.iter().map(|f| f.to_string()).collect()),
        batch_size: args.batch_size,
        concurrency: args.files.options()?.concurrency,
    };
    let ca = args.database_ca.as_ref().or(file.database_ca.as_ref());
    let mut client = database::connect(url, ca.map(std::path::PathBuf::as_path)).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = stop.clone();
    let listener = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.store(true, Ordering::SeqCst);
            eprintln!("\ninterrupted: finishing the batch in hand (Ctrl-C again to stop now)");
        }
        if tokio::signal::ctrl_c().await.is_ok() {
            // The connection closes with the process: the batch in hand is rolled back.
            eprintln!("interrupted again: stopping now; the batch in hand is rolled back");
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
    });
    let report = Batches {
        quiet: args.files.quiet,
    };
    let result = database::run(&mut client, &options, mode, transform, &stop, &report).await;
    listener.abort();
    if !args.files.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!();
    }
    Ok(result?)
}
