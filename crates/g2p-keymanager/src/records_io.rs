//! Running a record pipeline over files for `bulk` and `registry`: the format, the input (a
//! file or standard input), the output written whole or not at all (a file through a
//! temporary and a rename; standard output only once the run succeeded, from a spool), the
//! rejects, the progress bar, Ctrl-C, and the summary line.

use std::io::{IsTerminal, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use clap::Args;
use g2p_encryption::files::AtomicFile;
use g2p_registry::Transform;
use g2p_registry::format::{self, Format, RecordReader};
use g2p_registry::pipeline::{self, Options, PipelineError, Report, Sinks, Summary};

use crate::failure::Failure;
use crate::io::io_failure;

/// Exit code of a run stopped by Ctrl-C.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Rejected records named on standard error before the rest are only counted.
const REJECTS_NAMED: usize = 100;

/// Files and how a run over them goes.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// Read records from this file instead of standard input.
    #[arg(long = "in", value_name = "PATH")]
    pub input: Option<PathBuf>,
    /// Write records to this file (written whole, or not at all) instead of standard output
    /// (written only once every record is done).
    #[arg(long = "out", value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// `jsonl` (one JSON object per line) or `csv` (a header row, then one row per record);
    /// by default from the extension of --in or --out, else jsonl.
    #[arg(long, value_name = "FORMAT", value_parser = Format::from_name)]
    pub format: Option<Format>,
    /// Set lines that are not records, and records that fail (a value that is not base64 or
    /// does not decrypt), aside in this file, as they were read, and carry on; without it the
    /// first one stops the run. A failure of the key manager always stops it.
    #[arg(long, value_name = "PATH")]
    pub rejects: Option<PathBuf>,
    /// Go on when a field to process occurs in no record (by default a mistake: nothing is
    /// written, exit 2).
    #[arg(long)]
    pub allow_missing_fields: bool,
    /// Records processed at once (a remote Keymanager also caps its own requests in flight,
    /// `max_in_flight`).
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// No progress bar and no summary line.
    #[arg(long)]
    pub quiet: bool,
}

impl FileArgs {
    /// The format: `--format`, else the extension of `--in`, then of `--out`, else JSON Lines.
    pub fn format(&self) -> Format {
        self.format
            .or_else(|| self.input.as_deref().and_then(Format::guess))
            .or_else(|| self.output.as_deref().and_then(Format::guess))
            .unwrap_or(Format::JsonLines)
    }

    /// The pipeline's options.
    ///
    /// # Errors
    /// A usage failure for `--concurrency 0`.
    pub fn options(&self) -> Result<Options, Failure> {
        if self.concurrency == 0 {
            return Err(Failure::usage("--concurrency must be at least 1"));
        }
        Ok(Options {
            concurrency: self.concurrency,
            allow_missing_fields: self.allow_missing_fields,
        })
    }
}

impl From<PipelineError> for Failure {
    fn from(e: PipelineError) -> Self {
        Failure::of_kind(e.kind(), e.to_string())
    }
}

/// A reader that counts the bytes read, for the progress bar.
struct Counted<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The progress bar (only when standard error is a terminal) and the rejects' reasons.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    bytes: Arc<AtomicU64>,
    rejects_named: AtomicUsize,
}

impl Progress {
    fn new(total_bytes: Option<u64>, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = match total_bytes {
                Some(total) => indicatif::ProgressBar::new(total).with_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:30} {percent:>3}% {msg} · ETA {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                ),
                None => indicatif::ProgressBar::new_spinner(),
            };
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            bytes: Arc::new(AtomicU64::new(0)),
            rejects_named: AtomicUsize::new(0),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Report for Progress {
    fn progress(&self, summary: &Summary) {
        let Some(bar) = &self.bar else { return };
        if summary.records.is_multiple_of(256) {
            bar.set_position(self.bytes.load(Ordering::Relaxed));
            bar.set_message(format!(
                "{} records, {:.0}/s",
                summary.records,
                rate(summary.records, summary.elapsed)
            ));
        }
    }

    fn rejected(&self, error: &PipelineError) {
        let named = self.rejects_named.fetch_add(1, Ordering::Relaxed);
        let line = match named {
            n if n < REJECTS_NAMED => format!("rejected: {error}"),
            REJECTS_NAMED => "rejected: further rejects are only counted".to_string(),
            _ => return,
        };
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }
}

/// Records per second.
pub fn rate(records: usize, elapsed: Duration) -> f64 {
    records as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// The one-line summary of a run, e.g. `registry encrypt: read 10, encrypted 8, skipped 2,
/// failed 0 in 0.4 s (25 records/s)`.
pub fn summary_line(what: &str, done: &str, summary: &Summary) -> String {
    format!(
        "{what}: read {}, {done} {}, skipped {}, failed {} in {:.1} s ({:.0} records/s)",
        summary.records,
        summary.changed,
        summary.skipped,
        summary.failed,
        summary.elapsed.as_secs_f64(),
        rate(summary.records, summary.elapsed)
    )
}

fn open_input(
    path: Option<&Path>,
    counter: &Arc<AtomicU64>,
) -> Result<(Box<dyn Read + Send>, Option<u64>), Failure> {
    let read = counter.clone();
    Ok(match path {
        Some(path) => {
            let file = std::fs::File::open(path)
                .map_err(|e| io_failure(format!("cannot read {}: {e}", path.display()), &e))?;
            let size = file.metadata().ok().map(|m| m.len());
            (Box::new(Counted { inner: file, read }), size)
        }
        None => (
            Box::new(Counted {
                inner: std::io::stdin(),
                read,
            }),
            None,
        ),
    })
}

/// Where the output goes until the run has succeeded.
enum Target {
    File(PathBuf, AtomicFile),
    Spool(std::fs::File),
}

impl Target {
    fn open(path: Option<&Path>) -> Result<Self, Failure> {
        match path {
            Some(path) => AtomicFile::create(path)
                .map(|file| Target::File(path.to_path_buf(), file))
                .map_err(|e| io_failure(format!("cannot write {}: {e}", path.display()), &e)),
            None => tempfile::tempfile()
                .map(Target::Spool)
                .map_err(|e| io_failure(format!("cannot make a spool file: {e}"), &e)),
        }
    }

    fn writer(&mut self) -> &mut (dyn Write + Send) {
        match self {
            Target::File(_, file) => file,
            Target::Spool(file) => file,
        }
    }

    fn commit(self) -> Result<(), Failure> {
        match self {
            Target::File(path, file) => file
                .commit()
                .map_err(|e| io_failure(format!("cannot write {}: {e}", path.display()), &e)),
            Target::Spool(mut file) => {
                let failed = |e: std::io::Error| {
                    io_failure(format!("cannot write standard output: {e}"), &e)
                };
                file.rewind().map_err(failed)?;
                let mut out = std::io::stdout().lock();
                std::io::copy(&mut file, &mut out).map_err(failed)?;
                out.flush().map_err(failed)
            }
        }
    }
}

/// Runs `transform` over the records of `args.input`, writing them (when `writes` is true) to
/// `args.output`. Nothing is written unless the whole run succeeds; Ctrl-C stops it (exit
/// 130) with nothing written.
///
/// # Errors
/// The pipeline's failure, or the files'.
pub async fn run_files(
    args: &FileArgs,
    transform: &Arc<dyn Transform>,
    writes: bool,
) -> Result<Summary, Failure> {
    let format = args.format();
    let options = args.options()?;
    let counter = Arc::new(AtomicU64::new(0));
    let (input, size) = open_input(args.input.as_deref(), &counter)?;
    let reader: RecordReader = format::read(format, input).map_err(Failure::usage)?;
    let input_columns: Vec<String> = reader.header().map(<[String]>::to_vec).unwrap_or_default();
    let mut columns = input_columns.clone();
    for added in transform.added_columns() {
        if !columns.contains(&added) {
            columns.push(added);
        }
    }
    let mut target = if writes {
        Some(Target::open(args.output.as_deref())?)
    } else {
        None
    };
    let mut rejects = match &args.rejects {
        Some(path) => Some(Target::open(Some(path))?),
        None => None,
    };
    let mut progress = Progress::new(size, args.quiet);
    progress.bytes = counter;
    let result = {
        let mut output = target
            .as_mut()
            .map(|t| format::writer(format, columns, t.writer()));
        let mut reject_writer = rejects
            .as_mut()
            .map(|t| format::writer(format, input_columns, t.writer()));
        let sinks = Sinks {
            output: output.as_deref_mut().map(|w| w as _),
            rejects: reject_writer.as_deref_mut().map(|w| w as _),
        };
        let work = pipeline::run(reader, sinks, transform, options, &progress);
        tokio::select! {
            result = work => result.map_err(Failure::from),
            _ = tokio::signal::ctrl_c() => Err(Failure {
                exit: EXIT_INTERRUPTED,
                message: "interrupted: nothing was written".into(),
            }),
        }
    };
    progress.finish();
    let summary = result?;
    if let Some(target) = target {
        target.commit()?;
    }
    if let Some(rejects) = rejects {
        rejects.commit()?;
    }
    Ok(summary)
}
