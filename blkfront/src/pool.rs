//! The data pool: pages granted to the backend once, at connect time, from
//! which every I/O buffer ([`Buf`]) is cut, so the data path never grants or
//! revokes (persistent grants) and never copies between the caller's buffer
//! and a granted page behind its back. For a backend the toolstack says not
//! to trust, freed buffers are zeroed, so the backend never reads what a
//! buffer held once it is given back (XSA-403).

use crate::error::{Error, Result};
use std::ops::Range;
use xenio_xen_sys::GrantRef;
use xenio_xen_sys::ring::XEN_PAGE_SIZE as PAGE;
use xenio_xenbus::{Granted, Region};

/// A buffer of pool pages (granted to the backend), `len` bytes long.
#[derive(Debug)]
pub struct Buf {
    /// Indexes of its pages in the pool, in order.
    pub(crate) pages: Vec<u32>,
    pub(crate) len: usize,
}

impl Buf {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The granted pages and which of them are free.
pub(crate) struct Pool<G: Granted> {
    granted: G,
    free: Vec<u32>,
    /// Zero a buffer's pages when it is freed (an untrusted backend).
    zero_on_free: bool,
}

impl<G: Granted> Pool<G> {
    /// Every page of `granted` free.
    pub(crate) fn new(granted: G) -> Self {
        let pages = granted.refs().len() as u32;
        Pool {
            granted,
            // Ascending, so that the top of the stack is a run of ascending
            // pages (and grant references): see `alloc`.
            free: (0..pages).collect(),
            zero_on_free: false,
        }
    }

    /// Zero buffers as they are freed (`on`), and zero every free page now,
    /// so that from here on no free page holds data.
    pub(crate) fn set_zero_on_free(&mut self, on: bool) {
        if on && !self.zero_on_free {
            for &p in &self.free {
                self.zero_page(p);
            }
        }
        self.zero_on_free = on;
    }

    fn zero_page(&self, page: u32) {
        if let Err(e) = self.granted.region().fill(page as usize * PAGE, PAGE, 0) {
            // In range by construction; say so loudly if it ever is not.
            tracing::error!("zeroing pool page {page}: {e}");
        }
    }

    /// A buffer of `len` bytes (rounded up to pages, at least one): the pages
    /// on top of the free stack, in stack order. Fresh pages and a buffer's
    /// pages given back come out ascending, so a buffer is usually pages with
    /// consecutive grant references, which a backend that maps its persistent
    /// grants into a window sees as one piece of memory.
    pub(crate) fn alloc(&mut self, len: usize) -> Result<Buf> {
        let n = len.div_ceil(PAGE).max(1);
        if n > self.free.len() {
            return Err(Error::PoolExhausted(self.in_use()));
        }
        let at = self.free.len() - n;
        let pages = self.free.split_off(at);
        Ok(Buf { pages, len })
    }

    /// Give a buffer's pages back (zeroed first for an untrusted backend).
    pub(crate) fn free(&mut self, buf: Buf) {
        if self.zero_on_free {
            for &p in &buf.pages {
                self.zero_page(p);
            }
        }
        self.free.extend(buf.pages);
    }

    fn in_use(&self) -> usize {
        self.granted.refs().len() - self.free.len()
    }

    /// The grant reference of every pool page.
    pub(crate) fn refs(&self) -> &[GrantRef] {
        self.granted.refs()
    }

    /// Copy `data` into `buf` at `offset`.
    pub(crate) fn write(&self, buf: &Buf, offset: usize, data: &[u8]) -> Result<()> {
        self.io(buf, offset, data.len(), |region, at, range| {
            region.write(at, &data[range])
        })
    }

    /// Copy bytes of `buf` at `offset` into `out`.
    pub(crate) fn read(&self, buf: &Buf, offset: usize, out: &mut [u8]) -> Result<()> {
        let len = out.len();
        self.io(buf, offset, len, |region, at, range| {
            region.read(at, &mut out[range])
        })
    }

    /// Call `f` for each page-sized piece of `len` bytes of `buf` at `offset`:
    /// the region, the piece's position in it, and its range in the caller's bytes.
    fn io(
        &self,
        buf: &Buf,
        offset: usize,
        len: usize,
        mut f: impl FnMut(&Region, usize, Range<usize>) -> xenio_xenbus::Result<()>,
    ) -> Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > buf.len) {
            return Err(Error::Invalid(format!(
                "{len} bytes at {offset} is outside a {}-byte buffer",
                buf.len
            )));
        }
        let region = self.granted.region();
        let mut done = 0;
        while done < len {
            let pos = offset + done;
            let (page, in_page) = (pos / PAGE, pos % PAGE);
            let n = (PAGE - in_page).min(len - done);
            let at = buf.pages[page] as usize * PAGE + in_page;
            f(region, at, done..done + n)?;
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Fake(Vec<GrantRef>, Arc<Region>);

    impl Granted for Fake {
        fn refs(&self) -> &[GrantRef] {
            &self.0
        }
        fn region(&self) -> &Arc<Region> {
            &self.1
        }
        fn revoke(&mut self) -> xenio_xenbus::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn buffers_are_runs_of_ascending_pages() {
        let refs = (8..8 + 16).map(GrantRef).collect();
        let mut pool = Pool::new(Fake(refs, Arc::new(Region::anonymous(16 * PAGE).unwrap())));
        let a = pool.alloc(3 * PAGE).unwrap();
        let b = pool.alloc(2 * PAGE).unwrap();
        assert_eq!(a.pages, [13, 14, 15]);
        assert_eq!(b.pages, [11, 12]);
        pool.free(a);
        let c = pool.alloc(3 * PAGE).unwrap();
        assert_eq!(
            c.pages,
            [13, 14, 15],
            "a buffer given back comes out the same"
        );
        assert_eq!(pool.in_use(), 5);
    }
}
