//! Reading input and writing output: stdin/stdout by default, files on request. A file is
//! written whole or not at all (`g2p_encryption::files`), so a failed run leaves no partial
//! output behind.

use std::io::{Read, Write};
use std::path::Path;

use crate::failure::Failure;

/// Largest input read (a document, a ciphertext or a token).
pub const MAX_INPUT_BYTES: u64 = 256 * 1024 * 1024;

/// Reads all of `path`, or stdin when `None`.
pub fn read_input(path: Option<&Path>) -> Result<Vec<u8>, Failure> {
    let mut data = Vec::new();
    let (result, name) = match path {
        Some(p) => (
            std::fs::File::open(p).and_then(|f| f.take(MAX_INPUT_BYTES + 1).read_to_end(&mut data)),
            p.display().to_string(),
        ),
        None => (
            std::io::stdin()
                .lock()
                .take(MAX_INPUT_BYTES + 1)
                .read_to_end(&mut data),
            "standard input".to_string(),
        ),
    };
    result.map_err(|e| io_failure(format!("cannot read {name}: {e}"), &e))?;
    if data.len() as u64 > MAX_INPUT_BYTES {
        return Err(Failure::usage(format!(
            "{name} is larger than {MAX_INPUT_BYTES} bytes"
        )));
    }
    Ok(data)
}

/// A file named wrongly (missing, not permitted, a directory) is the caller's mistake; any
/// other I/O failure (a full disk, a device error) is this machine's.
pub fn io_failure(message: String, error: &std::io::Error) -> Failure {
    use std::io::ErrorKind as Kind;
    match error.kind() {
        Kind::NotFound | Kind::PermissionDenied | Kind::IsADirectory | Kind::NotADirectory => {
            Failure::usage(message)
        }
        _ => Failure::system(message),
    }
}

/// Writes `data` to `path` (whole or not at all, readable by the owner only unless it
/// replaces a file with other permissions) or stdout.
pub fn write_output(path: Option<&Path>, data: &[u8]) -> Result<(), Failure> {
    match path {
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(data)
                .and_then(|()| out.flush())
                .map_err(|e| io_failure(format!("cannot write standard output: {e}"), &e))
        }
        Some(path) => g2p_encryption::files::write_atomically(path, data)
            .map_err(|e| io_failure(format!("cannot write {}: {e}", path.display()), &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_and_leave_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.bin");
        write_output(Some(&out), b"abc").unwrap();
        assert_eq!(read_input(Some(&out)).unwrap(), b"abc");
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1);
        let e = read_input(Some(&dir.path().join("missing"))).unwrap_err();
        assert!(e.message.contains("missing"));
        let e = write_output(Some(&dir.path().join("no/such/dir/f")), b"x").unwrap_err();
        assert!(e.message.contains("no/such/dir/f"));
    }
}
