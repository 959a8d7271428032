//! File handling with the CA's hygiene rules: never overwrite, private keys created 0600 with
//! `O_EXCL` (never widened then narrowed), key files refused when group or others can read them.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::CaError;

/// Mode of private key files.
pub(crate) const KEY_MODE: u32 = 0o600;
/// Mode of certificate files (public).
pub(crate) const CERT_MODE: u32 = 0o644;
/// Mode of a directory created to hold a CA.
pub(crate) const DIR_MODE: u32 = 0o700;

/// One file to write.
pub(crate) struct NewFile<'a> {
    pub path: PathBuf,
    pub contents: &'a [u8],
    pub mode: u32,
}

/// Creates `dir` (and parents) with mode 0700 unless it exists.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), CaError> {
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|source| CaError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// Writes every file or none: refuses if any exists, creates each with `O_EXCL` and its final
/// mode, and removes the ones it created if a later one fails.
pub(crate) fn write_all_new(files: &[NewFile<'_>]) -> Result<(), CaError> {
    if let Some(existing) = files.iter().find(|f| f.path.symlink_metadata().is_ok()) {
        return Err(CaError::AlreadyExists(existing.path.clone()));
    }
    let mut created: Vec<&Path> = Vec::with_capacity(files.len());
    for file in files {
        match write_new(file) {
            Ok(()) => created.push(&file.path),
            Err(err) => {
                for path in created {
                    // Best effort: the error being returned is the one that matters.
                    let _ = fs::remove_file(path);
                }
                return Err(err);
            }
        }
    }
    Ok(())
}

fn write_new(file: &NewFile<'_>) -> Result<(), CaError> {
    let path = &file.path;
    let mut handle = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(file.mode)
        .open(path)
        .map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => CaError::AlreadyExists(path.clone()),
            _ => CaError::WriteFile {
                path: path.clone(),
                source,
            },
        })?;
    let wrote = (|| {
        // The umask may have narrowed a public file's mode; certificates are meant to be
        // readable. Private files keep whatever (narrower) mode they were created with.
        if file.mode != KEY_MODE {
            handle.set_permissions(fs::Permissions::from_mode(file.mode))?;
        }
        handle.write_all(file.contents)?;
        handle.sync_all()
    })();
    wrote.map_err(|source| {
        // Do not leave a half-written file behind.
        let _ = fs::remove_file(path);
        CaError::WriteFile {
            path: path.clone(),
            source,
        }
    })
}

/// Reads a private key file after checking, on the opened file, that only its owner can read it.
pub(crate) fn read_private(path: &Path) -> Result<Vec<u8>, CaError> {
    let read_err = |source| CaError::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mode = file.metadata().map_err(read_err)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CaError::KeyTooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).map_err(read_err)?;
    Ok(buf)
}

/// Reads a public file.
pub(crate) fn read_public(path: &Path) -> Result<Vec<u8>, CaError> {
    fs::read(path).map_err(|source| CaError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writes_each_file_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        let cert = dir.path().join("c");
        write_all_new(&[
            NewFile {
                path: key.clone(),
                contents: b"secret",
                mode: KEY_MODE,
            },
            NewFile {
                path: cert.clone(),
                contents: b"public",
                mode: CERT_MODE,
            },
        ])
        .unwrap();
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&cert), 0o644);
        assert_eq!(fs::read(&key).unwrap(), b"secret");
    }

    #[test]
    fn refuses_before_writing_anything_when_one_file_exists() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first");
        let second = dir.path().join("second");
        fs::write(&second, b"keep me").unwrap();
        let err = write_all_new(&[
            NewFile {
                path: first.clone(),
                contents: b"x",
                mode: KEY_MODE,
            },
            NewFile {
                path: second.clone(),
                contents: b"y",
                mode: CERT_MODE,
            },
        ])
        .unwrap_err();
        assert!(
            matches!(&err, CaError::AlreadyExists(p) if *p == second),
            "{err:?}"
        );
        assert!(!first.exists(), "nothing written when refusing");
        assert_eq!(fs::read(&second).unwrap(), b"keep me");
    }

    #[test]
    fn refuses_a_dangling_symlink_too() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
        let err = write_all_new(&[NewFile {
            path: link.clone(),
            contents: b"x",
            mode: KEY_MODE,
        }])
        .unwrap_err();
        assert!(matches!(err, CaError::AlreadyExists(p) if p == link));
        assert!(!dir.path().join("elsewhere").exists());
    }

    #[test]
    fn reading_a_group_readable_key_is_refused_with_chmod_advice() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        fs::write(&key, b"secret").unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_private(&key).unwrap_err();
        assert!(
            matches!(err, CaError::KeyTooOpen { mode: 0o640, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_private(&key).unwrap(), b"secret");
    }

    #[test]
    fn creates_missing_directory_private() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("a/b");
        ensure_dir(&ca_dir).unwrap();
        assert_eq!(mode(&ca_dir), 0o700);
    }
}
