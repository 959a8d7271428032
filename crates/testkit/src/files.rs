//! Files for tests: temp dirs, large deterministic payloads, digests, PEM certificates.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use ring::digest::{Context, SHA256};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
pub use tempfile::TempDir;

/// Write granularity of [`write_pseudorandom_file`].
const BLOCK: usize = 1 << 20;

/// A temp dir (removed on Drop) whose name starts with `prefix`.
pub fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("creating a temp dir")
}

/// Writes `len` bytes of a xorshift64* stream seeded with `seed` to `path` and returns their
/// SHA-256. The same seed always gives the same bytes, and no block repeats, so a reordered
/// or duplicated block changes the digest.
pub fn write_pseudorandom_file(path: &Path, len: u64, seed: u64) -> io::Result<[u8; 32]> {
    let mut out = BufWriter::with_capacity(BLOCK, File::create(path)?);
    let mut digest = Context::new(&SHA256);
    let mut state = seed | 1; // xorshift state must not be zero
    let mut block = vec![0u8; BLOCK];
    let mut left = len;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            word.copy_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        let n = left.min(BLOCK as u64) as usize;
        out.write_all(&block[..n])?;
        digest.update(&block[..n]);
        left -= n as u64;
    }
    out.flush()?;
    Ok(finish(digest))
}

/// SHA-256 of a file's contents, read in blocks.
pub fn sha256_file(path: &Path) -> io::Result<[u8; 32]> {
    let mut file = File::open(path)?;
    let mut digest = Context::new(&SHA256);
    let mut buf = vec![0u8; BLOCK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(finish(digest));
        }
        digest.update(&buf[..n]);
    }
}

/// Every `CERTIFICATE` block in `pem` (other text around them is ignored).
pub fn certs_from_pem(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .collect()
}

fn finish(digest: Context) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.finish().as_ref());
    out
}
