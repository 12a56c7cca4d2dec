//! Registry files: JSON Lines (one object per line) and CSV (a header, then one row per
//! record, every value text). Reading happens on a thread of its own that parses ahead of the
//! pipeline into a bounded channel, so memory stays flat and parsing does not hold up the
//! workers; writing is to any [`Write`].

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::record::Record;

/// Records handed over at once by the reader thread (fewer wake-ups than one by one).
const BATCH: usize = 64;
/// Batches parsed ahead of the pipeline.
const READ_AHEAD: usize = 16;

type Batch = Vec<Result<Item, String>>;

/// The reader thread's end of the channel: items gathered into batches.
struct Batcher<'a> {
    sender: &'a mpsc::Sender<Batch>,
    batch: Batch,
}

impl<'a> Batcher<'a> {
    fn new(sender: &'a mpsc::Sender<Batch>) -> Self {
        Batcher {
            sender,
            batch: Vec::with_capacity(BATCH),
        }
    }

    /// Adds an item; `false` once the pipeline has gone away.
    fn push(&mut self, item: Result<Item, String>) -> bool {
        self.batch.push(item);
        self.batch.len() < BATCH || self.flush()
    }

    fn flush(&mut self) -> bool {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        batch.is_empty() || self.sender.blocking_send(batch).is_ok()
    }
}

impl Drop for Batcher<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The shape of a registry file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    JsonLines,
    /// A header row naming the columns, then one row per record.
    Csv,
}

impl Format {
    /// `jsonl` (also `json-lines`, `ndjson`) or `csv`.
    ///
    /// # Errors
    /// A message naming the accepted names.
    pub fn from_name(name: &str) -> Result<Self, String> {
        match name.to_ascii_lowercase().as_str() {
            "jsonl" | "json-lines" | "ndjson" => Ok(Format::JsonLines),
            "csv" => Ok(Format::Csv),
            other => Err(format!("{other:?} is not a format (jsonl or csv)")),
        }
    }

    /// The format a file name suggests: `.csv` is CSV, `.jsonl`, `.ndjson` and `.json` are
    /// JSON Lines; `None` for anything else.
    pub fn guess(path: &Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" | "json" => Some(Format::JsonLines),
            _ => None,
        }
    }

    /// `jsonl` or `csv`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::JsonLines => "jsonl",
            Format::Csv => "csv",
        }
    }
}

/// A line or row as it was read, for setting it aside unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Raw {
    /// A JSON Lines line, without its line ending.
    Line(Vec<u8>),
    /// A CSV row's fields.
    Fields(Vec<Vec<u8>>),
}

/// A line that is not a record, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// What is wrong (never the content).
    pub message: String,
    /// The line as read.
    pub raw: Raw,
}

/// One item of the input: a record, or a line that is not one.
#[derive(Debug)]
pub struct Item {
    /// 1-based line number where the record starts.
    pub line: usize,
    /// The record.
    pub read: Result<Record, Unreadable>,
}

/// Records streaming in from a reader thread.
#[derive(Debug)]
pub struct RecordReader {
    header: Option<Vec<String>>,
    items: mpsc::Receiver<Batch>,
    pending: std::collections::VecDeque<Result<Item, String>>,
}

impl RecordReader {
    /// The CSV header (column names); `None` for JSON Lines.
    pub fn header(&self) -> Option<&[String]> {
        self.header.as_deref()
    }

    /// The next item; `Err` when the input cannot be read any more (an I/O error).
    pub async fn next(&mut self) -> Option<Result<Item, String>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            self.pending = self.items.recv().await?.into();
        }
    }

    /// A reader over records already in memory (tests, and sources that are not files).
    pub fn from_records(records: Vec<Record>) -> Self {
        let (_, items) = mpsc::channel(1);
        let pending = records
            .into_iter()
            .enumerate()
            .map(|(i, record)| {
                Ok(Item {
                    line: i + 1,
                    read: Ok(record),
                })
            })
            .collect();
        RecordReader {
            header: None,
            items,
            pending,
        }
    }
}

/// Starts reading `input` in `format`. A CSV header is read before this returns.
///
/// # Errors
/// A message when the CSV header cannot be read.
pub fn read(format: Format, input: Box<dyn Read + Send>) -> Result<RecordReader, String> {
    let (sender, items) = mpsc::channel(READ_AHEAD);
    let header = match format {
        Format::JsonLines => {
            std::thread::spawn(move || read_json_lines(input, &sender));
            None
        }
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .flexible(true)
                .has_headers(true)
                .from_reader(input);
            let header: Vec<String> = reader
                .headers()
                .map_err(|e| format!("cannot read the CSV header: {e}"))?
                .iter()
                .map(str::to_string)
                .collect();
            if let Some(dup) = first_duplicate(&header) {
                return Err(format!("the CSV header names the column {dup:?} twice"));
            }
            let columns = header.clone();
            std::thread::spawn(move || read_csv(reader, &columns, &sender));
            Some(header)
        }
    };
    Ok(RecordReader {
        header,
        items,
        pending: Default::default(),
    })
}

fn first_duplicate(names: &[String]) -> Option<&str> {
    let mut seen = std::collections::HashSet::new();
    names
        .iter()
        .find(|n| !seen.insert(n.as_str()))
        .map(String::as_str)
}

fn read_json_lines(input: Box<dyn Read + Send>, sender: &mpsc::Sender<Batch>) {
    let mut out = Batcher::new(sender);
    let mut input = BufReader::with_capacity(256 * 1024, input);
    let mut buffer = Vec::new();
    let mut line = 0;
    loop {
        buffer.clear();
        line += 1;
        match input.read_until(b'\n', &mut buffer) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                out.push(Err(format!("line {line} cannot be read: {e}")));
                return;
            }
        }
        let mut text = trim_line_end(&buffer);
        if line == 1 {
            // A byte-order mark some editors put at the start of a file.
            text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
        }
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let read = parse_json_line(text);
        if !out.push(Ok(Item { line, read })) {
            return;
        }
    }
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn parse_json_line(text: &[u8]) -> Result<Record, Unreadable> {
    let unreadable = |message: String| Unreadable {
        message,
        raw: Raw::Line(text.to_vec()),
    };
    match serde_json::from_slice::<Value>(text) {
        Ok(Value::Object(record)) => Ok(record),
        Ok(other) => Err(unreadable(format!(
            "{} is not a record (a JSON object)",
            crate::record::kind_of(&other)
        ))),
        Err(e) => Err(unreadable(format!("not JSON: {}", without_position(&e)))),
    }
}

/// serde_json's message without " at line 1 column N" (the line is ours to name).
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

fn read_csv(
    mut reader: csv::Reader<Box<dyn Read + Send>>,
    columns: &[String],
    sender: &mpsc::Sender<Batch>,
) {
    let mut out = Batcher::new(sender);
    let mut row = csv::ByteRecord::new();
    loop {
        let read = reader.read_byte_record(&mut row);
        let line = usize::try_from(row.position().map_or(0, |p| p.line())).unwrap_or(usize::MAX);
        match read {
            Ok(false) => return,
            Ok(true) => {}
            Err(e) => {
                out.push(Err(format!("the CSV cannot be read: {e}")));
                return;
            }
        }
        let read = csv_record(columns, &row);
        if !out.push(Ok(Item { line, read })) {
            return;
        }
    }
}

fn csv_record(columns: &[String], row: &csv::ByteRecord) -> Result<Record, Unreadable> {
    let unreadable = |message: String| Unreadable {
        message,
        raw: Raw::Fields(row.iter().map(<[u8]>::to_vec).collect()),
    };
    if row.len() != columns.len() {
        return Err(unreadable(format!(
            "the row has {} fields, the header {}",
            row.len(),
            columns.len()
        )));
    }
    let mut record = Record::new();
    for (name, value) in columns.iter().zip(row.iter()) {
        let value = std::str::from_utf8(value)
            .map_err(|_| unreadable(format!("column {name} is not UTF-8 text")))?;
        record.insert(name.clone(), Value::String(value.to_string()));
    }
    Ok(record)
}

/// Where records go.
pub trait RecordWriter: Send {
    /// Writes a record.
    ///
    /// # Errors
    /// A message when the record cannot be written (an I/O error, a member a CSV has no column
    /// for).
    fn write(&mut self, record: &Record) -> Result<(), String>;

    /// Writes a line or row as it was read.
    ///
    /// # Errors
    /// A message when it cannot be written.
    fn write_raw(&mut self, raw: &Raw) -> Result<(), String>;

    /// Flushes what is buffered.
    ///
    /// # Errors
    /// A message when it cannot be written.
    fn finish(&mut self) -> Result<(), String>;
}

/// A writer of `format` over `out`. A CSV gets `columns` as its header (write it even when no
/// record follows).
pub fn writer<'a>(
    format: Format,
    columns: Vec<String>,
    out: &'a mut (dyn Write + Send),
) -> Box<dyn RecordWriter + 'a> {
    match format {
        Format::JsonLines => Box::new(JsonLinesWriter {
            out: std::io::BufWriter::with_capacity(256 * 1024, out),
        }),
        Format::Csv => Box::new(CsvWriter {
            out: csv::WriterBuilder::new()
                .flexible(true)
                .buffer_capacity(256 * 1024)
                .from_writer(out),
            columns,
            header_written: false,
            row: Vec::new(),
        }),
    }
}

fn write_error(e: impl std::fmt::Display) -> String {
    format!("cannot write: {e}")
}

struct JsonLinesWriter<W: Write> {
    out: std::io::BufWriter<W>,
}

impl<W: Write + Send> RecordWriter for JsonLinesWriter<W> {
    fn write(&mut self, record: &Record) -> Result<(), String> {
        serde_json::to_writer(&mut self.out, record).map_err(write_error)?;
        self.out.write_all(b"\n").map_err(write_error)
    }

    fn write_raw(&mut self, raw: &Raw) -> Result<(), String> {
        match raw {
            Raw::Line(line) => {
                self.out.write_all(line).map_err(write_error)?;
                self.out.write_all(b"\n").map_err(write_error)
            }
            Raw::Fields(fields) => {
                let texts: Vec<Value> = fields
                    .iter()
                    .map(|f| Value::String(String::from_utf8_lossy(f).into_owned()))
                    .collect();
                serde_json::to_writer(&mut self.out, &texts).map_err(write_error)?;
                self.out.write_all(b"\n").map_err(write_error)
            }
        }
    }

    fn finish(&mut self) -> Result<(), String> {
        self.out.flush().map_err(write_error)
    }
}

struct CsvWriter<W: Write> {
    out: csv::Writer<W>,
    columns: Vec<String>,
    header_written: bool,
    row: Vec<String>,
}

impl<W: Write + Send> CsvWriter<W> {
    fn header(&mut self) -> Result<(), String> {
        if !self.header_written {
            self.out.write_record(&self.columns).map_err(write_error)?;
            self.header_written = true;
        }
        Ok(())
    }
}

/// A JSON value as CSV text: strings as they are, null as empty, anything else as JSON.
fn csv_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl<W: Write + Send> RecordWriter for CsvWriter<W> {
    fn write(&mut self, record: &Record) -> Result<(), String> {
        self.header()?;
        if let Some(extra) = record.keys().find(|k| !self.columns.contains(k)) {
            return Err(format!("the CSV has no column {extra:?}"));
        }
        self.row.clear();
        for column in &self.columns {
            self.row
                .push(record.get(column).map(csv_text).unwrap_or_default());
        }
        self.out.write_record(&self.row).map_err(write_error)
    }

    fn write_raw(&mut self, raw: &Raw) -> Result<(), String> {
        self.header()?;
        match raw {
            Raw::Fields(fields) => self
                .out
                .write_byte_record(&csv::ByteRecord::from(fields.clone())),
            Raw::Line(line) => self.out.write_record([line.as_slice()]),
        }
        .map_err(write_error)
    }

    fn finish(&mut self) -> Result<(), String> {
        self.header()?;
        self.out.flush().map_err(write_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(format: Format, text: &str) -> (Option<Vec<String>>, Vec<Item>) {
        let mut reader = read(format, Box::new(std::io::Cursor::new(text.to_string()))).unwrap();
        let mut items = Vec::new();
        while let Some(item) = reader.next().await {
            items.push(item.unwrap());
        }
        (reader.header, items)
    }

    #[tokio::test]
    async fn json_lines_name_each_bad_line_and_keep_it_raw() {
        let (_, items) = all(
            Format::JsonLines,
            "{\"a\":1}\r\n\n[1]\n{broken\n\"text\"\n{\"b\":\"é\"}",
        )
        .await;
        let lines: Vec<usize> = items.iter().map(|i| i.line).collect();
        assert_eq!(lines, [1, 3, 4, 5, 6]);
        assert!(items[0].read.is_ok() && items[4].read.is_ok());
        let bad = items[1].read.as_ref().unwrap_err();
        assert_eq!(bad.message, "an array is not a record (a JSON object)");
        assert_eq!(bad.raw, Raw::Line(b"[1]".to_vec()));
        let bad = items[2].read.as_ref().unwrap_err();
        assert!(bad.message.starts_with("not JSON: "), "{}", bad.message);
        assert!(!bad.message.contains("line 1"), "{}", bad.message);
    }

    #[tokio::test]
    async fn a_byte_order_mark_before_the_first_record_is_ignored() {
        let (_, items) = all(Format::JsonLines, "\u{feff}{\"a\":1}\n{\"b\":2}\n").await;
        assert_eq!(items.len(), 2);
        assert!(items.iter().all(|i| i.read.is_ok()));
    }

    #[tokio::test]
    async fn csv_rows_become_text_records_and_ragged_rows_are_named() {
        let (header, items) = all(
            Format::Csv,
            "id,name,note\n1,\"Amina, A.\",\"two\nlines\"\n2,Bo\n3,,\n",
        )
        .await;
        assert_eq!(header.unwrap(), ["id", "name", "note"]);
        assert_eq!(items.len(), 3);
        let first = items[0].read.as_ref().unwrap();
        assert_eq!(first["name"], "Amina, A.");
        assert_eq!(first["note"], "two\nlines");
        assert_eq!(items[1].line, 4);
        assert_eq!(
            items[1].read.as_ref().unwrap_err().message,
            "the row has 2 fields, the header 3"
        );
        assert_eq!(items[2].read.as_ref().unwrap()["note"], "");
    }

    #[test]
    fn csv_header_with_a_repeated_column_is_refused() {
        let err = read(
            Format::Csv,
            Box::new(std::io::Cursor::new("a,b,a\n1,2,3\n")),
        )
        .unwrap_err();
        assert!(err.contains("\"a\" twice"), "{err}");
    }

    #[test]
    fn csv_writer_refuses_a_member_without_a_column() {
        let mut out = Vec::new();
        {
            let mut w = writer(Format::Csv, vec!["a".into(), "b".into()], &mut out);
            let mut r = Record::new();
            r.insert("a".into(), Value::Bool(true));
            r.insert("b".into(), Value::Null);
            w.write(&r).unwrap();
            r.insert("c".into(), Value::from(1));
            assert_eq!(w.write(&r).unwrap_err(), "the CSV has no column \"c\"");
            w.finish().unwrap();
        }
        assert_eq!(String::from_utf8(out).unwrap(), "a,b\ntrue,\n");
    }

    #[test]
    fn formats_are_guessed_from_the_extension() {
        assert_eq!(Format::guess(Path::new("r.CSV")), Some(Format::Csv));
        assert_eq!(Format::guess(Path::new("r.jsonl")), Some(Format::JsonLines));
        assert_eq!(Format::guess(Path::new("r.txt")), None);
        assert!(Format::from_name("xml").is_err());
    }
}
