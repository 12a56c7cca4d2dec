//! The streaming pipeline: records read one by one from a JSON Lines export, transformed
//! concurrently (a bounded number at a time), written in input order. Memory stays flat in
//! the size of the input.

use std::io::Write;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use g2p_encryption::ErrorKind;
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::record::Record;

/// What a transform made of a record.
#[derive(Debug)]
pub struct Transformed {
    /// The record to write.
    pub record: Record,
    /// How many values the transform changed.
    pub values: usize,
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
}

/// Counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records read and written.
    pub records: usize,
    /// Values changed.
    pub values: usize,
    /// Time taken.
    pub elapsed: Duration,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A line is not a JSON object.
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
    /// The input could not be read or the output written.
    #[error("{0}")]
    Io(String),
}

impl PipelineError {
    /// What kind of failure stopped the run.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PipelineError::Input { .. } => ErrorKind::InvalidInput,
            PipelineError::Record { error, .. } => error.kind,
            PipelineError::Io(_) => ErrorKind::Internal,
        }
    }
}

/// How a run goes.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Records transformed at once (at least 1).
    pub concurrency: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { concurrency: 16 }
    }
}

fn parse_line(line: usize, text: &str) -> Result<Record, PipelineError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(record)) => Ok(record),
        Ok(_) => Err(PipelineError::Input {
            line,
            message: "not a JSON object".into(),
        }),
        Err(e) => Err(PipelineError::Input {
            line,
            message: format!("not JSON: {e}"),
        }),
    }
}

/// Reads JSON Lines from `input`, applies `transform` to each record (`options.concurrency`
/// at a time), and writes each result as a line of `output`, in input order. Blank lines
/// are skipped. `progress` hears the counts after every record written.
///
/// The run stops at the first failure; what was written to `output` by then is for the
/// caller to discard (an [`g2p_encryption::files::AtomicFile`] that is not committed).
///
/// # Errors
/// [`PipelineError`] naming the line (and the field) that failed.
pub async fn run(
    input: impl AsyncBufRead + Unpin + Send,
    output: &mut (dyn Write + Send),
    transform: &dyn Transform,
    options: Options,
    progress: &(dyn Fn(&Summary) + Sync),
) -> Result<Summary, PipelineError> {
    let started = Instant::now();
    let lines =
        futures_util::stream::unfold((input.lines(), 0usize), |(mut lines, n)| async move {
            let next = lines.next_line().await;
            let line = n + 1;
            match next {
                Ok(Some(text)) => Some((Ok((line, text)), (lines, line))),
                Ok(None) => None,
                Err(e) => Some((
                    Err(PipelineError::Input {
                        line,
                        message: format!("cannot be read: {e}"),
                    }),
                    (lines, line),
                )),
            }
        });
    let results = lines
        .filter(|item| {
            let blank = matches!(item, Ok((_, text)) if text.trim().is_empty());
            std::future::ready(!blank)
        })
        .map(|item| async move {
            let (line, text) = item?;
            let record = parse_line(line, &text)?;
            transform
                .apply(record)
                .await
                .map_err(|error| PipelineError::Record { line, error })
        })
        .buffered(options.concurrency.max(1));
    let mut results = std::pin::pin!(results);
    let mut summary = Summary::default();
    while let Some(result) = results.next().await {
        let done = result?;
        serde_json::to_writer(&mut *output, &done.record)
            .map_err(|e| PipelineError::Io(format!("cannot write a record: {e}")))?;
        output
            .write_all(b"\n")
            .map_err(|e| PipelineError::Io(format!("cannot write a record: {e}")))?;
        summary.records += 1;
        summary.values += done.values;
        summary.elapsed = started.elapsed();
        progress(&summary);
    }
    output
        .flush()
        .map_err(|e| PipelineError::Io(format!("cannot write the output: {e}")))?;
    summary.elapsed = started.elapsed();
    Ok(summary)
}
