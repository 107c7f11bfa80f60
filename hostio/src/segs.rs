//! Checking an operation's segments and copying between them and a private
//! buffer: what the queues that cannot hand shared memory straight to the kernel
//! (qcow2 through imago, multi-segment NBD requests, RBD) share.
//!
//! Shared memory is only ever copied (a snapshot of what the peer wrote), never
//! turned into a Rust reference: the peer may change it at any moment.

use crate::disk::{IoMem, IoSeg};
use std::io;

/// Most segments in one operation (as [`DiskQueue`](crate::disk::DiskQueue)).
pub(crate) const MAX_SEGS: usize = libc::UIO_MAXIOV as usize;

/// Check the segments of a read (`read`: they receive data) or a write, each
/// length a multiple of `align`, and return the total length.
pub(crate) fn check(segs: &[IoSeg], read: bool, align: u64) -> Result<u64, String> {
    if segs.is_empty() || segs.len() > MAX_SEGS {
        return Err(format!("{} segments (1..={MAX_SEGS} allowed)", segs.len()));
    }
    let mut total = 0u64;
    for (i, s) in segs.iter().enumerate() {
        if read && !s.mem.is_writable() {
            return Err(format!(
                "segment {i} is read-only memory: a read cannot fill it"
            ));
        }
        let inside = s
            .offset
            .checked_add(s.len)
            .is_some_and(|end| end <= s.mem.len());
        if !inside {
            return Err(format!(
                "segment {i} ({} bytes at offset {}) is outside its region of {} bytes",
                s.len,
                s.offset,
                s.mem.len()
            ));
        }
        if s.len == 0 || (s.len as u64) % align != 0 {
            return Err(format!(
                "segment {i} is {} bytes: segments must be non-empty multiples of {align} bytes",
                s.len
            ));
        }
        total += s.len as u64;
    }
    Ok(total)
}

/// Copy the segments, in order, into the front of `buf` (a write's data).
pub(crate) fn gather(segs: &[IoSeg], buf: &mut [u8]) -> io::Result<()> {
    let mut at = 0;
    for s in segs {
        let dst = buf
            .get_mut(at..at + s.len)
            .ok_or_else(|| io::Error::other("bounce buffer too small"))?;
        let r = match &s.mem {
            IoMem::ReadWrite(r) => r.read(s.offset, dst),
            IoMem::ReadOnly(r) => r.read(s.offset, dst),
        };
        r.map_err(|e| io::Error::other(e.to_string()))?;
        at += s.len;
    }
    Ok(())
}

/// Copy the front of `buf`, in order, into the segments (a read's data).
pub(crate) fn scatter(buf: &[u8], segs: &[IoSeg]) -> io::Result<()> {
    let mut at = 0;
    for s in segs {
        let src = buf
            .get(at..at + s.len)
            .ok_or_else(|| io::Error::other("bounce buffer too small"))?;
        match &s.mem {
            IoMem::ReadWrite(r) => r
                .write(s.offset, src)
                .map_err(|e| io::Error::other(e.to_string()))?,
            IoMem::ReadOnly(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "a read into read-only memory",
                ));
            }
        }
        at += s.len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use xenio_xenbus::Region;

    #[test]
    fn check_gather_scatter() {
        let a = Arc::new(Region::anonymous(4096).unwrap());
        let b = Arc::new(Region::anonymous(4096).unwrap());
        a.fill(0, 4096, 1).unwrap();
        b.fill(0, 4096, 2).unwrap();
        let segs = vec![
            IoSeg::new(a.clone(), 512, 1024),
            IoSeg::new(b.clone(), 0, 512),
        ];
        assert_eq!(check(&segs, true, 512), Ok(1536));
        assert!(check(&segs, true, 1024).is_err());
        assert!(check(&[], false, 512).is_err());
        assert!(check(&[IoSeg::new(a.clone(), 4000, 512)], false, 512).is_err());
        let ro = IoMem::ReadOnly(Arc::new(Region::anonymous(4096).unwrap().into_read_only()));
        assert!(check(&[IoSeg::new(ro, 0, 512)], true, 512).is_err());
        let mut buf = vec![0u8; 1536];
        gather(&segs, &mut buf).unwrap();
        assert!(buf[..1024].iter().all(|&x| x == 1) && buf[1024..].iter().all(|&x| x == 2));
        buf.iter_mut().for_each(|x| *x = 9);
        scatter(&buf, &segs).unwrap();
        let mut got = [0u8; 1];
        a.read(512, &mut got).unwrap();
        assert_eq!(got[0], 9);
        a.read(511, &mut got).unwrap();
        assert_eq!(got[0], 1);
        assert!(gather(&segs, &mut [0u8; 100]).is_err());
    }
}
