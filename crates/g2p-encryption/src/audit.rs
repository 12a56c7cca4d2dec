//! The audit trail: one JSON line per key operation — who, what, with which key, when, and
//! how it ended — separate from the request log, and never a plaintext, ciphertext, token or
//! secret (a record has no field that could hold one).
//!
//! Lines go to a file (appended, synced in batches, rotated by size) or to standard error.
//! [`AuditLog::record`] hands the line to a writer thread and returns; [`AuditLog::flush`]
//! waits until every line handed over is written and synced.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every item succeeded.
    Ok,
    /// Some items of a batch failed.
    Partial,
    /// The data or the signature was refused.
    Refused,
    /// The operation failed (bad input, the key manager failing, ...).
    Error,
}

/// One key operation. Fields that do not apply are left out of the line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditRecord {
    /// When, RFC 3339 UTC with milliseconds (filled in by [`AuditLog::record`] when empty).
    pub time: String,
    /// What served it: `gateway`, `kms`, `cli`.
    pub service: &'static str,
    /// The request id (`x-request-id`), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Who asked: an API key's name, a token's client, a local user.
    pub caller: String,
    /// `encrypt`, `decrypt`, `sign`, `verify`, `rotate`, `revoke`, `upload`, ...
    pub operation: &'static str,
    /// The provider, for services with several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The key's application.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_id: Option<String>,
    /// The key's reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_id: Option<String>,
    /// The keys used: key ids, or `thumbprint:HEX` where only the thumbprint is known.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Items in the request (1, or a batch's size).
    pub items: usize,
    /// Items that succeeded.
    pub succeeded: usize,
    /// How it ended.
    pub outcome: Option<Outcome>,
    /// The kind of failure, when it failed (e.g. `refused`, `kms_unavailable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where audit lines go, and how a file is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    /// Nowhere.
    Off,
    /// Standard error, one line per record.
    Stderr,
    /// A file, appended to; rotated to `PATH.1`, `PATH.2`, ... beyond `max_bytes`, keeping
    /// `keep` old files.
    File {
        /// The file.
        path: PathBuf,
        /// Size beyond which the file is rotated.
        max_bytes: u64,
        /// Old files kept.
        keep: usize,
    },
}

/// The `[audit]` table of the configuration file.
///
/// ```toml
/// [audit]
/// path = "/var/log/g2p-keymanager/audit.log"   # "-": standard error
/// max_bytes = 67108864                          # rotated beyond this size
/// keep = 10                                     # old files kept
/// ```
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// The file (`-`: standard error); none: no audit trail.
    pub path: Option<PathBuf>,
    /// Size beyond which the file is rotated (default 64 MiB).
    pub max_bytes: Option<u64>,
    /// Old files kept (default 10).
    pub keep: Option<usize>,
}

impl AuditSettings {
    /// The sink: `given` (a command-line flag) or the table's path; `-` is standard error.
    pub fn sink(&self, given: Option<&Path>) -> AuditSink {
        match given.or(self.path.as_deref()) {
            None => AuditSink::Off,
            Some(path) if path == Path::new("-") => AuditSink::Stderr,
            Some(path) => AuditSink::File {
                path: path.to_path_buf(),
                max_bytes: self.max_bytes.unwrap_or(64 * 1024 * 1024),
                keep: self.keep.unwrap_or(10),
            },
        }
    }
}

enum Message {
    Line(Vec<u8>),
    Flush(SyncSender<io::Result<()>>),
}

/// The audit log: cheap to clone, shared by every task of a service.
#[derive(Debug, Clone)]
pub struct AuditLog {
    sender: Option<SyncSender<Message>>,
}

/// Lines waiting for the writer before `record` waits for room.
const QUEUE: usize = 16 * 1024;
/// Longest a written line waits for its `fsync`.
const SYNC_EVERY: Duration = Duration::from_millis(200);

impl AuditLog {
    /// A log that records nothing.
    pub fn off() -> Self {
        AuditLog { sender: None }
    }

    /// Opens a sink and starts its writer.
    ///
    /// # Errors
    /// A file that cannot be opened for appending (its directory missing, not permitted).
    pub fn open(sink: &AuditSink) -> io::Result<Self> {
        let target = match sink {
            AuditSink::Off => return Ok(Self::off()),
            AuditSink::Stderr => Target::Stderr,
            AuditSink::File {
                path,
                max_bytes,
                keep,
            } => Target::File(RotatingFile::open(path, *max_bytes, *keep)?),
        };
        let (sender, receiver) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || write_lines(receiver, target))?;
        Ok(AuditLog {
            sender: Some(sender),
        })
    }

    /// Whether records go anywhere.
    pub fn is_on(&self) -> bool {
        self.sender.is_some()
    }

    /// Hands one record to the writer (waiting only if thousands of lines are queued).
    pub fn record(&self, mut record: AuditRecord) {
        let Some(sender) = &self.sender else {
            return;
        };
        if record.time.is_empty() {
            record.time = rfc3339_millis(SystemTime::now());
        }
        match serde_json::to_vec(&record) {
            Ok(mut line) => {
                line.push(b'\n');
                if sender.send(Message::Line(line)).is_err() {
                    tracing::error!("the audit log writer has stopped; a record was lost");
                }
            }
            Err(e) => tracing::error!(error = %e, "an audit record could not be written"),
        }
    }

    /// Waits until every record handed over is written and synced.
    ///
    /// # Errors
    /// The writer's last I/O error.
    pub fn flush(&self) -> io::Result<()> {
        let Some(sender) = &self.sender else {
            return Ok(());
        };
        let (ack, done) = sync_channel(1);
        sender
            .send(Message::Flush(ack))
            .map_err(|_| io::Error::other("the audit log writer has stopped"))?;
        done.recv()
            .map_err(|_| io::Error::other("the audit log writer has stopped"))?
    }
}

enum Target {
    Stderr,
    File(RotatingFile),
}

impl Target {
    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        match self {
            Target::Stderr => io::stderr().lock().write_all(line),
            Target::File(file) => file.write(line),
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        match self {
            Target::Stderr => io::stderr().lock().flush(),
            Target::File(file) => file.sync(),
        }
    }
}

/// The writer thread: writes lines as they come, syncs after a quiet moment or at most
/// [`SYNC_EVERY`] after the first unsynced line, and answers flushes once synced.
fn write_lines(receiver: Receiver<Message>, mut target: Target) {
    let mut unsynced = false;
    let mut last_error: Option<io::Error> = None;
    loop {
        let message = if unsynced {
            receiver.recv_timeout(SYNC_EVERY)
        } else {
            receiver.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        match message {
            Ok(Message::Line(line)) => {
                if let Err(e) = target.write(&line) {
                    tracing::error!(error = %e, "an audit record could not be written");
                    last_error = Some(e);
                }
                unsynced = true;
            }
            Ok(Message::Flush(ack)) => {
                let result = target.sync().and_then(|()| match last_error.take() {
                    Some(e) => Err(e),
                    None => Ok(()),
                });
                unsynced = false;
                let _ = ack.send(result);
            }
            Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = target.sync() {
                    tracing::error!(error = %e, "the audit log could not be synced");
                    last_error = Some(e);
                }
                unsynced = false;
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = target.sync();
                return;
            }
        }
    }
}

/// An append-only file rotated by size.
struct RotatingFile {
    path: PathBuf,
    file: io::BufWriter<File>,
    size: u64,
    max_bytes: u64,
    keep: usize,
}

fn open_append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

impl RotatingFile {
    fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<Self> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file: io::BufWriter::new(file),
            size,
            max_bytes: max_bytes.max(1),
            keep,
        })
    }

    fn numbered(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_data()
    }

    /// `PATH` becomes `PATH.1`, `PATH.1` becomes `PATH.2`, ...; the oldest beyond `keep` goes.
    fn rotate(&mut self) -> io::Result<()> {
        self.sync()?;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(self.numbered(self.keep));
            for n in (1..self.keep).rev() {
                let from = self.numbered(n);
                if from.exists() {
                    std::fs::rename(&from, self.numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.numbered(1))?;
        }
        self.file = io::BufWriter::new(open_append(&self.path)?);
        self.size = 0;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::files::sync_dir(dir)?;
        }
        Ok(())
    }
}

/// `2026-12-04T13:50:42.123Z`.
fn rfc3339_millis(at: SystemTime) -> String {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(caller: &str) -> AuditRecord {
        AuditRecord {
            service: "test",
            caller: caller.into(),
            operation: "decrypt",
            items: 1,
            succeeded: 1,
            outcome: Some(Outcome::Ok),
            ..AuditRecord::default()
        }
    }

    #[test]
    fn times_are_rfc3339_utc() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_733_320_242_123);
        assert_eq!(rfc3339_millis(at), "2024-12-04T13:50:42.123Z");
        assert_eq!(
            rfc3339_millis(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339_millis(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn lines_are_written_synced_and_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&AuditSink::File {
            path: path.clone(),
            max_bytes: 400,
            keep: 2,
        })
        .unwrap();
        for i in 0..20 {
            log.record(record(&format!("caller-{i}")));
        }
        log.flush().unwrap();
        let mut lines = Vec::new();
        for file in [
            path.with_extension("log.2"),
            path.with_extension("log.1"),
            path.clone(),
        ] {
            if let Ok(text) = std::fs::read_to_string(&file) {
                assert!(
                    text.len() <= 400,
                    "{} is {} bytes",
                    file.display(),
                    text.len()
                );
                lines.extend(text.lines().map(String::from));
            }
        }
        assert!(!path.with_extension("log.3").exists(), "more than two kept");
        // The newest lines are kept, in order, each a whole JSON object.
        let callers: Vec<String> = lines
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert_eq!(v["operation"], "decrypt");
                assert!(v["time"].as_str().unwrap().ends_with('Z'));
                v["caller"].as_str().unwrap().to_string()
            })
            .collect();
        assert!(callers.ends_with(&["caller-19".to_string()]), "{callers:?}");
        let numbers: Vec<usize> = callers
            .iter()
            .map(|c| c.trim_start_matches("caller-").parse().unwrap())
            .collect();
        assert!(numbers.windows(2).all(|w| w[0] + 1 == w[1]), "{numbers:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(!AuditLog::off().is_on());
        AuditLog::off().record(record("nobody"));
        AuditLog::off().flush().unwrap();
    }
}
