//! Reading input and writing output: stdin/stdout by default, files on request. A file is
//! written to a temporary sibling and renamed into place, so a failed run leaves no partial
//! output behind.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

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
    result.map_err(|e| Failure::usage(format!("cannot read {name}: {e}")))?;
    if data.len() as u64 > MAX_INPUT_BYTES {
        return Err(Failure::usage(format!(
            "{name} is larger than {MAX_INPUT_BYTES} bytes"
        )));
    }
    Ok(data)
}

/// Writes `data` to `path` (atomically) or stdout.
pub fn write_output(path: Option<&Path>, data: &[u8]) -> Result<(), Failure> {
    match path {
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(data)
                .and_then(|()| out.flush())
                .map_err(|e| Failure::usage(format!("cannot write standard output: {e}")))
        }
        Some(path) => write_file_atomically(path, data)
            .map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display()))),
    }
}

fn write_file_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let temp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
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
