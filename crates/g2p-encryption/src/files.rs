//! Files written whole or not at all, private to their owner: key files, client secrets,
//! decrypted output.
//!
//! Every file is first written to a temporary sibling with an unpredictable name, created
//! exclusively (so a planted file or symbolic link is never followed) and readable by the
//! owner only, then synced and moved into place, and the directory synced, so a crash leaves
//! either the old file or the new one.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The directory `path` is in (`.` for a bare file name).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// An unpredictable, exclusively created sibling of `path` with the given mode.
fn temporary_sibling(path: &Path, mode: u32) -> io::Result<(File, PathBuf)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let dir = parent_of(path);
    let mut last = None;
    for _ in 0..8 {
        let mut suffix = [0u8; 12];
        aws_lc_rs::rand::fill(&mut suffix)
            .map_err(|_| io::Error::other("the system has no randomness"))?;
        let temp = dir.join(format!(".{name}.{}.tmp", hex::encode(suffix)));
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        match options.open(&temp) {
            Ok(file) => return Ok((file, temp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no temporary file name was free")))
}

/// Syncs a directory, so that a rename or link in it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// The mode a replacement of `path` gets: the mode of the file it replaces, else 0600.
fn replacement_mode(path: &Path) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).map_or(0o600, |m| m.permissions().mode() & 0o7777)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        0o600
    }
}

/// Whether `path` is a device, a pipe or a socket, or names one through `/dev` or `/proc`
/// (`/dev/stdout` is a link to `/proc/self/fd/1`, which may in turn point at a regular file
/// the shell redirected to): such a target is written into, never replaced.
fn is_special(path: &Path) -> bool {
    let system = |p: &Path| p.starts_with("/dev") || p.starts_with("/proc");
    system(path)
        || std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
        || std::fs::read_link(path).is_ok_and(|target| system(&target))
}

/// A file written whole or not at all. Bytes go to a temporary sibling; [`AtomicFile::commit`]
/// syncs it, renames it over the target and syncs the directory. Dropped without a commit,
/// the temporary file is removed and the target is untouched.
///
/// A new file is readable by its owner only; a replaced file keeps its mode.
///
/// A target that is not a regular file — `/dev/null`, `/dev/stdout`, a named pipe — is never
/// replaced: the bytes are kept in a private temporary file and copied into it on commit, so
/// it still receives nothing unless the whole write succeeded.
#[derive(Debug)]
pub struct AtomicFile {
    file: Option<io::BufWriter<File>>,
    temp: PathBuf,
    target: PathBuf,
    special: bool,
}

impl AtomicFile {
    /// Starts writing `path`.
    ///
    /// # Errors
    /// When the directory does not exist or cannot be written.
    pub fn create(path: &Path) -> io::Result<Self> {
        let special = is_special(path);
        let (file, temp) = if special {
            temporary_sibling(&std::env::temp_dir().join("g2p-output"), 0o600)?
        } else {
            temporary_sibling(path, replacement_mode(path))?
        };
        Ok(AtomicFile {
            file: Some(io::BufWriter::with_capacity(256 * 1024, file)),
            temp,
            target: path.to_path_buf(),
            special,
        })
    }

    /// The temporary file being written, for writers that need a path rather than a
    /// stream (a database writing a copy of itself, say). It exists and is empty until
    /// written; [`AtomicFile::commit`] moves whatever it then holds into place.
    pub fn temporary_path(&self) -> &Path {
        &self.temp
    }

    /// Puts the file in place.
    ///
    /// # Errors
    /// Write, sync and rename failures; the target is then untouched.
    pub fn commit(mut self) -> io::Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("already committed"))?;
        let file = file.into_inner().map_err(io::IntoInnerError::into_error)?;
        if self.special {
            let copied = File::open(&self.temp).and_then(|mut spool| {
                let mut target = OpenOptions::new().write(true).open(&self.target)?;
                io::copy(&mut spool, &mut target)?;
                target.flush()
            });
            drop(file);
            let _ = std::fs::remove_file(&self.temp);
            return copied;
        }
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.temp, &self.target)?;
        sync_dir(&parent_of(&self.target))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("already committed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Writes `bytes` to `path` whole or not at all (see [`AtomicFile`]).
///
/// # Errors
/// As [`AtomicFile::create`] and [`AtomicFile::commit`].
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes)?;
    file.commit()
}

/// Creates `path` holding `bytes`, readable by the owner only, unless it already exists. The
/// bytes are written whole to a temporary sibling, synced, and linked into place: if another
/// process created the file first, the link fails and that file is kept. Returns whether this
/// call created the file.
///
/// # Errors
/// Write, sync and link failures other than "the file exists".
pub fn create_private_once(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    let (mut file, temp) = temporary_sibling(path, 0o600)?;
    let written = (|| {
        file.write_all(bytes)?;
        file.sync_all()?;
        match std::fs::hard_link(&temp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&temp);
    let created = written?;
    if created {
        sync_dir(&parent_of(path))?;
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    #[cfg(unix)]
    #[test]
    fn a_device_target_is_written_into_never_replaced() {
        use std::os::unix::fs::FileTypeExt;
        let mut file = AtomicFile::create(Path::new("/dev/null")).unwrap();
        file.write_all(b"registry").unwrap();
        let spool = file.temporary_path().to_path_buf();
        assert!(!spool.starts_with("/dev"), "{}", spool.display());
        file.commit().unwrap();
        let meta = std::fs::metadata("/dev/null").unwrap();
        assert!(meta.file_type().is_char_device(), "/dev/null was replaced");
        assert!(!spool.exists(), "the spool was left behind");
        // Names of standard streams and links into /dev or /proc are never replaced either.
        assert!(is_special(Path::new("/dev/stdout")));
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("out");
        std::os::unix::fs::symlink("/proc/self/fd/1", &link).unwrap();
        assert!(is_special(&link));
        assert!(!is_special(&dir.path().join("plain.txt")));
    }

    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn atomic_files_appear_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        write_atomically(&out, b"first").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"first");
        #[cfg(unix)]
        assert_eq!(mode(&out), 0o600);
        let mut unfinished = AtomicFile::create(&out).unwrap();
        unfinished.write_all(b"second").unwrap();
        drop(unfinished);
        assert_eq!(std::fs::read(&out).unwrap(), b"first");
        assert_eq!(entries(dir.path()), ["out"]);
        let e = write_atomically(&dir.path().join("no/such/dir/f"), b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[cfg(unix)]
    #[test]
    fn a_replaced_file_keeps_its_mode_and_a_planted_link_is_not_followed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("shared.txt");
        std::fs::write(&out, b"old").unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomically(&out, b"new").unwrap();
        assert_eq!(mode(&out), 0o640);
        // A link planted where a predictable temporary name would be is left alone.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(".shared.txt.tmp")).unwrap();
        write_atomically(&out, b"newer").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(&out).unwrap(), b"newer");
    }

    #[test]
    fn created_once_and_the_first_writer_wins() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        let created: Vec<bool> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..6u8)
                .map(|i| {
                    let key = &key;
                    scope.spawn(move || create_private_once(key, &[i; 32]).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(created.iter().filter(|c| **c).count(), 1);
        let bytes = std::fs::read(&key).unwrap();
        assert_eq!(bytes.len(), 32);
        assert!(bytes.iter().all(|b| *b == bytes[0]), "a mix of writers");
        assert_eq!(entries(dir.path()), ["key"], "temporary files left behind");
        #[cfg(unix)]
        assert_eq!(mode(&key), 0o600);
        assert!(!create_private_once(&key, b"other").unwrap());
        assert_eq!(std::fs::read(&key).unwrap(), bytes);
    }
}
