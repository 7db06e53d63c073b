//! Reading and atomically writing the PKI's files with exact permission bits.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::PkiError;

/// Permission bits of a file anyone may read (a CA certificate).
pub(crate) const PUBLIC_MODE: u32 = 0o644;
/// Permission bits of a private key or a token file.
pub(crate) const PRIVATE_MODE: u32 = 0o600;

/// Writes `contents` to `path` atomically: a temporary file in the same directory, created
/// private, gets the bytes, `mode` and an fsync, then is renamed over `path`. A reader sees
/// the old file or the new one, never a part, and a key is never readable by others.
pub(crate) fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let io_error = |action, source| PkiError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    // tempfile creates the file with mode 0600, whatever the umask.
    let mut temporary = tempfile::NamedTempFile::new_in(directory)
        .map_err(|error| io_error("creating a temporary file for", error))?;
    temporary
        .write_all(contents)
        .map_err(|error| io_error("writing", error))?;
    temporary
        .as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|error| io_error("setting the permissions of", error))?;
    temporary
        .as_file()
        .sync_all()
        .map_err(|error| io_error("syncing", error))?;
    temporary
        .persist(path)
        .map_err(|error| io_error("renaming into place", error.error))?;
    // The rename is durable once the directory is synced.
    if let Ok(directory) = fs::File::open(directory) {
        let _ = directory.sync_all();
    }
    Ok(())
}

/// Reads `path` whole.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    fs::read(path).map_err(|source| PkiError::Io {
        action: "reading",
        path: path.to_owned(),
        source,
    })
}

/// Reads a private key file, refusing one that group or others may read.
pub(crate) fn read_private(path: &Path) -> Result<Vec<u8>, PkiError> {
    let metadata = fs::metadata(path).map_err(|source| PkiError::Io {
        action: "reading",
        path: path.to_owned(),
        source,
    })?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PkiError::KeyFileTooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    read(path)
}
