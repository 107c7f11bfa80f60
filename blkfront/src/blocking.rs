//! The blocking conveniences of [`BlkFront`]: one op submitted and waited
//! for, with the caller's bytes copied through pool buffers. Built on the
//! asynchronous API ([`BlkFront::submit`], [`BlkFront::poll`]) alone.

use crate::error::{Error, Result};
use crate::front::BlkFront;
use crate::op::Op;
use crate::pool::Buf;
use std::time::{Duration, Instant};
use xenio_xen_sys::ring::XEN_PAGE_SIZE as PAGE;
use xenio_xenbus::platform::Platform;

impl<P: Platform> BlkFront<P> {
    /// Submit and wait for one op.
    fn run(&mut self, op: Op) -> Result<Option<Buf>> {
        let token = self.submit(op)?;
        let timeout = self.timeout();
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            out.clear();
            self.poll(&mut out, Some(Duration::from_millis(200)))?;
            let mut mine = None;
            for d in out.drain(..) {
                if d.token == token {
                    mine = Some(d);
                } else {
                    self.requeue(d);
                }
            }
            if let Some(d) = mine {
                return d.result.map(|()| d.buf);
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "no completion for {token:?} after {timeout:?}"
                )));
            }
        }
    }

    /// Read `out.len()` bytes at `offset` (both multiples of 512).
    pub fn read_at(&mut self, offset: u64, out: &mut [u8]) -> Result<()> {
        for (i, chunk) in out.chunks_mut(self.chunk_bytes()).enumerate() {
            let off = offset + (i * self.chunk_bytes()) as u64;
            let buf = self.alloc(chunk.len())?;
            let buf = self
                .run(Op::Read { offset: off, buf })?
                .expect("reads return their buffer");
            let r = self.buf_read(&buf, 0, chunk);
            self.free(buf);
            r?;
        }
        Ok(())
    }

    /// Write `data` at `offset` (both multiples of 512).
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        for (i, chunk) in data.chunks(self.chunk_bytes()).enumerate() {
            let off = offset + (i * self.chunk_bytes()) as u64;
            let buf = self.alloc(chunk.len())?;
            if let Err(e) = self.buf_write(&buf, 0, chunk) {
                self.free(buf);
                return Err(e);
            }
            let buf = self
                .run(Op::Write { offset: off, buf })?
                .expect("writes return their buffer");
            self.free(buf);
        }
        Ok(())
    }

    /// Make written data durable.
    pub fn flush(&mut self) -> Result<()> {
        if !self.info().flush && !self.info().barrier {
            return Err(Error::NotSupported("flush (no feature-flush-cache)".into()));
        }
        self.run(Op::Flush).map(drop)
    }

    /// Discard `len` bytes at `offset`.
    pub fn discard(&mut self, offset: u64, len: u64) -> Result<()> {
        self.run(Op::Discard { offset, len }).map(drop)
    }

    /// Bytes per op of the blocking calls: a quarter of the pool, 1 MiB at most.
    fn chunk_bytes(&self) -> usize {
        (self.pool_refs().len() / 4).clamp(1, 256) * PAGE
    }
}
