//! Loading certificates and private keys from PEM files. Messages name the path as written in the
//! config; key material never appears in them.

use std::path::Path;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Every certificate in the PEM file at `file` (shown to the user as `shown`); at least one.
pub fn load_certs(shown: &Path, file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| describe(shown, e, "certificate"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| describe(shown, e, "certificate"))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {}", shown.display()));
    }
    Ok(certs)
}

/// The private key in the PEM file at `file`, refusing a file that group or others may access.
pub fn load_private_key(shown: &Path, file: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let metadata =
        std::fs::metadata(file).map_err(|e| format!("reading {}: {e}", shown.display()))?;
    refuse_shared_key_file(shown, file, &metadata)?;
    PrivateKeyDer::from_pem_file(file).map_err(|e| describe(shown, e, "private key"))
}

#[cfg(unix)]
fn refuse_shared_key_file(
    shown: &Path,
    file: &Path,
    metadata: &std::fs::Metadata,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;

    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    let access = if mode & 0o044 != 0 {
        "readable"
    } else {
        "accessible"
    };
    Err(format!(
        "{} is {access} by group/others (mode {mode:04o}); run chmod 600 {}",
        shown.display(),
        file.display()
    ))
}

#[cfg(not(unix))]
fn refuse_shared_key_file(_: &Path, _: &Path, _: &std::fs::Metadata) -> Result<(), String> {
    Ok(())
}

fn describe(shown: &Path, err: pem::Error, what: &str) -> String {
    let shown = shown.display();
    match err {
        pem::Error::Io(e) => format!("reading {shown}: {e}"),
        pem::Error::NoItemsFound => format!("no {what} found in {shown}"),
        other => format!("parsing {shown}: {other}"),
    }
}
