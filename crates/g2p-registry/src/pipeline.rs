//! The streaming pipeline: records read one by one ([`crate::format::RecordReader`]),
//! transformed concurrently (a bounded number at a time), written in input order. Memory
//! stays flat in the size of the input.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use g2p_encryption::ErrorKind;

use crate::format::{Item, Raw, RecordReader, RecordWriter};
use crate::record::Record;

/// What a transform made of a record.
#[derive(Debug)]
pub struct Transformed {
    /// The record to write.
    pub record: Record,
    /// How many values the transform changed; 0 when it left the record as it was.
    pub values: usize,
}

impl Transformed {
    /// The record, left as it was.
    pub fn unchanged(record: Record) -> Self {
        Transformed { record, values: 0 }
    }
}

/// Why one record could not be transformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", field.as_ref().map(|f| format!("field {f}: ")).unwrap_or_default())]
pub struct RecordError {
    /// The field that failed, if one did.
    pub field: Option<String>,
    /// What kind of failure (bad input, refused data, the key manager failing).
    pub kind: ErrorKind,
    /// What is wrong.
    pub message: String,
}

impl RecordError {
    /// A failure of `field`.
    pub fn in_field(field: &impl ToString, kind: ErrorKind, message: impl Into<String>) -> Self {
        RecordError {
            field: Some(field.to_string()),
            kind,
            message: message.into(),
        }
    }
}

/// What the pipeline does to each record.
#[async_trait]
pub trait Transform: Send + Sync {
    /// Transforms one record.
    ///
    /// # Errors
    /// [`RecordError`] naming the field and the cause; the run stops at the first one.
    async fn apply(&self, record: Record) -> Result<Transformed, RecordError>;

    /// After a run: the fields the transform was told to process that no record had —
    /// most likely a misspelt name. Empty by default.
    fn unmatched(&self) -> Vec<String> {
        Vec::new()
    }

    /// Columns the transform may add to a record (a CSV output needs them in its header).
    fn added_columns(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records read.
    pub records: usize,
    /// Records the transform changed.
    pub changed: usize,
    /// Records written as they were (nothing to do).
    pub skipped: usize,
    /// Records set aside as rejects.
    pub failed: usize,
    /// Values changed.
    pub values: usize,
    /// Time taken.
    pub elapsed: Duration,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A line is not a record.
    #[error("line {line}: {message}")]
    Input {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A record could not be transformed.
    #[error("line {line}, {error}")]
    Record {
        /// 1-based line number.
        line: usize,
        /// Why.
        error: RecordError,
    },
    /// Fields to process that no record has.
    #[error(
        "no record has {}: nothing was written (check the names; --allow-missing-fields if this is intended{})",
        list_fields(fields),
        if fields.iter().any(|f| f == crate::envelope::IS_REGISTRANT) {
            "; without is_registrant, --all-records encrypts every record"
        } else {
            ""
        }
    )]
    MissingFields {
        /// The fields.
        fields: Vec<String>,
    },
    /// The input could not be read or the output written.
    #[error("{0}")]
    Io(String),
}

fn list_fields(fields: &[String]) -> String {
    let names: Vec<String> = fields.iter().map(|f| format!("{f:?}")).collect();
    match names.len() {
        1 => format!("the field {}", names[0]),
        _ => format!("the fields {}", names.join(", ")),
    }
}

impl PipelineError {
    /// What kind of failure stopped the run.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PipelineError::Input { .. } | PipelineError::MissingFields { .. } => {
                ErrorKind::InvalidInput
            }
            PipelineError::Record { error, .. } => error.kind,
            PipelineError::Io(_) => ErrorKind::Internal,
        }
    }

    /// Whether the failure is the record's own (bad input, a value that does not decrypt)
    /// rather than the key manager's or the machine's: only those may be set aside.
    pub fn is_the_records(&self) -> bool {
        matches!(self.kind(), ErrorKind::InvalidInput | ErrorKind::Refused)
            && !matches!(self, PipelineError::MissingFields { .. })
    }
}

/// How a run goes.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Records transformed at once (at least 1).
    pub concurrency: usize,
    /// Run on when a named field occurs in no record.
    pub allow_missing_fields: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            concurrency: 16,
            allow_missing_fields: false,
        }
    }
}

/// What the caller hears during a run.
pub trait Report: Sync {
    /// The counts, after each record.
    fn progress(&self, _summary: &Summary) {}

    /// A record set aside, and why (the error names the line and field, never the data).
    fn rejected(&self, _error: &PipelineError) {}
}

/// A report that says nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Report for Silent {}

/// Where records go: the output (none for a run that only looks), and the rejects, when bad
/// records are to be set aside rather than stop the run.
#[allow(missing_debug_implementations)]
pub struct Sinks<'a> {
    /// The transformed records, in input order.
    pub output: Option<&'a mut dyn RecordWriter>,
    /// Lines and records that could not be read or transformed, as they were read.
    pub rejects: Option<&'a mut dyn RecordWriter>,
}

enum Done {
    Written(Transformed),
    Rejected(PipelineError, Reject),
}

enum Reject {
    Raw(Raw),
    Record(Record),
}

/// Chunks of records in flight at once: each is one task, so records are transformed on
/// every worker of the runtime (not only the one polling the pipeline) while the task
/// switches stay few.
const CHUNKS_IN_FLIGHT: usize = 4;

/// How many records go in one chunk for `concurrency` records in flight.
fn chunk_size(concurrency: usize) -> usize {
    concurrency.max(1).div_ceil(CHUNKS_IN_FLIGHT)
}

/// Transforms `records` (`concurrency` at a time) in tasks of their own, spread over the
/// runtime's workers; results in input order.
pub async fn apply_all(
    transform: &Arc<dyn Transform>,
    records: Vec<Record>,
    concurrency: usize,
) -> Vec<Result<Transformed, RecordError>> {
    let size = chunk_size(concurrency);
    let mut records = records.into_iter().peekable();
    let mut chunks = Vec::new();
    while records.peek().is_some() {
        chunks.push(records.by_ref().take(size).collect::<Vec<Record>>());
    }
    let tasks = futures_util::stream::iter(chunks).map(|chunk| {
        let transform = transform.clone();
        let count = chunk.len();
        async move {
            let task = tokio::spawn(async move {
                futures_util::future::join_all(chunk.into_iter().map(|r| transform.apply(r))).await
            });
            match task.await {
                Ok(done) => done,
                Err(e) => (0..count).map(|_| Err(task_failed(&e))).collect(),
            }
        }
    });
    tasks.buffered(CHUNKS_IN_FLIGHT).concat().await
}

fn task_failed(e: &tokio::task::JoinError) -> RecordError {
    RecordError {
        field: None,
        kind: ErrorKind::Internal,
        message: format!("the record's task failed: {e}"),
    }
}

async fn process(
    item: Result<Item, String>,
    transform: &dyn Transform,
    keep_original: bool,
) -> Result<Done, PipelineError> {
    let item = item.map_err(PipelineError::Io)?;
    let line = item.line;
    let record = match item.read {
        Ok(record) => record,
        Err(unreadable) => {
            return Ok(Done::Rejected(
                PipelineError::Input {
                    line,
                    message: unreadable.message,
                },
                Reject::Raw(unreadable.raw),
            ));
        }
    };
    let original = keep_original.then(|| record.clone());
    match transform.apply(record).await {
        Ok(done) => Ok(Done::Written(done)),
        Err(error) => {
            let error = PipelineError::Record { line, error };
            match original {
                Some(original) => Ok(Done::Rejected(error, Reject::Record(original))),
                None => Err(error),
            }
        }
    }
}

/// Processes a chunk of items in a task of its own.
async fn process_chunk(
    items: Vec<Result<Item, String>>,
    transform: &Arc<dyn Transform>,
    keep_original: bool,
) -> Vec<Result<Done, PipelineError>> {
    let transform = transform.clone();
    let task = tokio::spawn(async move {
        let work = items
            .into_iter()
            .map(|item| process(item, transform.as_ref(), keep_original));
        futures_util::future::join_all(work).await
    });
    match task.await {
        Ok(done) => done,
        Err(e) => vec![Err(PipelineError::Io(task_failed(&e).message))],
    }
}

/// Reads records from `input`, applies `transform` to each (`options.concurrency` at a
/// time), and writes each result to `sinks.output` in input order. `report` hears the counts
/// after every record.
///
/// Without a rejects sink, the run stops at the first line that is not a record or record
/// that fails; with one, such lines and records go there unchanged and the run carries on.
/// A failure of the key manager always stops the run. Either way, what was written by then
/// is for the caller to discard (an [`g2p_encryption::files::AtomicFile`] not committed).
///
/// # Errors
/// [`PipelineError`] naming the line (and the field) that failed;
/// [`PipelineError::MissingFields`] after the last record when a field to process occurs in
/// none (unless `options.allow_missing_fields`).
pub async fn run(
    mut input: RecordReader,
    mut sinks: Sinks<'_>,
    transform: &Arc<dyn Transform>,
    options: Options,
    report: &dyn Report,
) -> Result<Summary, PipelineError> {
    let started = Instant::now();
    let keep_original = sinks.rejects.is_some();
    let items = futures_util::stream::unfold(&mut input, |input| async move {
        input.next().await.map(|item| (item, input))
    });
    let results = items
        .chunks(chunk_size(options.concurrency))
        .map(|chunk| process_chunk(chunk, transform, keep_original))
        .buffered(CHUNKS_IN_FLIGHT)
        .flat_map(futures_util::stream::iter);
    let mut results = std::pin::pin!(results);
    let mut summary = Summary::default();
    while let Some(result) = results.next().await {
        summary.records += 1;
        match result? {
            Done::Written(done) => {
                if let Some(output) = sinks.output.as_deref_mut() {
                    output.write(&done.record).map_err(PipelineError::Io)?;
                }
                if done.values > 0 {
                    summary.changed += 1;
                } else {
                    summary.skipped += 1;
                }
                summary.values += done.values;
            }
            Done::Rejected(error, original) => match sinks.rejects.as_deref_mut() {
                Some(rejects) if error.is_the_records() => {
                    match &original {
                        Reject::Raw(raw) => rejects.write_raw(raw),
                        Reject::Record(record) => rejects.write(record),
                    }
                    .map_err(|e| PipelineError::Io(format!("rejects: {e}")))?;
                    summary.failed += 1;
                    report.rejected(&error);
                }
                _ => return Err(error),
            },
        }
        summary.elapsed = started.elapsed();
        report.progress(&summary);
    }
    if summary.records > 0 && !options.allow_missing_fields {
        let fields = transform.unmatched();
        if !fields.is_empty() {
            return Err(PipelineError::MissingFields { fields });
        }
    }
    for sink in [sinks.output, sinks.rejects].into_iter().flatten() {
        sink.finish().map_err(PipelineError::Io)?;
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}
