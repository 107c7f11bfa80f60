//! The test file every disk benchmark measures on: written fully once, with
//! random data, before anything is measured, so that reads hit real blocks.

use crate::common::error::{BenchError, Result};
use crate::common::rng::Rng;
use std::io::Write;
use std::path::Path;

/// Write the whole file once with random data (O_DIRECT where allowed, so the
/// page cache does not end up holding it), then fsync. Returns whether O_DIRECT
/// was accepted.
pub fn precondition(path: &Path, size: u64, seed: u64) -> Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = |direct: bool| {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        if direct {
            o.custom_flags(nix::fcntl::OFlag::O_DIRECT.bits());
        }
        o.open(path)
    };
    let (mut f, direct) = match open(true) {
        Ok(f) => (f, true),
        Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => (
            open(false).map_err(|e| BenchError::io(format!("creating {}", path.display()), e))?,
            false,
        ),
        Err(e) => return Err(BenchError::io(format!("creating {}", path.display()), e)),
    };
    // O_DIRECT wants an aligned buffer: take the aligned part of a larger one.
    const CHUNK: usize = 4 << 20;
    let mut raw = vec![0u8; CHUNK + 4096];
    let at = raw.as_ptr().align_offset(4096);
    let buf = &mut raw[at..at + CHUNK];
    let mut rng = Rng::new(seed ^ 0xf11e);
    let mut left = size;
    while left > 0 {
        rng.fill(buf);
        let n = left.min(CHUNK as u64) as usize;
        f.write_all(&buf[..n])
            .map_err(|e| BenchError::io(format!("writing {}", path.display()), e))?;
        left -= n as u64;
    }
    f.sync_all()
        .map_err(|e| BenchError::io(format!("fsync of {}", path.display()), e))?;
    Ok(direct)
}
