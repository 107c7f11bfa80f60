//! The two paths the study compares, behind one small interface ([`Dev`]):
//!
//! - [`NativeDev`]: the file itself through xenio-hostio's disk queue (io_uring, or
//!   synchronous `preadv`/`pwritev`), O_DIRECT by default: the paper's native
//!   kernel.
//! - [`XenioDev`]: blkfront (this process, domain 1) -> shared rings -> `xenio
//!   blkback` (a child process, domain 0) -> the same file: the paper's Xen guest.
//!
//! A workload owns a few numbered buffers (the device's memory: anonymous pages
//! for the native path, granted pool pages for xenio), copies user data in and
//! out of them as a guest kernel would, submits reads and writes on them and
//! waits for completions. [`Recorder`] wraps any device and logs every
//! submitted operation, for the tests that check each workload's I/O pattern.

use crate::common::error::{BenchError, Result};
use crate::study::types::Dev;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use xenio_blkfront::{BlkFront, Buf, Op, Token};
use xenio_hostio::disk::{
    BlockFile, Completion, Direct, DiskOpen, DiskQueue, DiskQueueOptions, Io,
};
use xenio_xenbus::Region;
use xenio_xenbus::platform::Platform;

/// No completion for this long while operations are in flight: the run stops.
const STALL: Duration = Duration::from_secs(30);

/// The native path: the file through xenio-hostio's disk queue.
pub struct NativeDev {
    queue: DiskQueue,
    bufs: Vec<Arc<Region>>,
    out: Vec<Completion>,
}

impl NativeDev {
    /// Open `path` (O_DIRECT unless `buffered`) with up to `depth` operations in
    /// flight, through io_uring or, with `sync`, synchronous `preadv`/`pwritev`.
    pub fn open(path: &Path, buffered: bool, sync: bool, depth: u32) -> Result<Self> {
        let direct = if buffered { Direct::Off } else { Direct::On };
        let file = BlockFile::open(
            path,
            DiskOpen {
                readonly: false,
                direct,
            },
        )
        .map_err(|err| BenchError::Platform {
            what: format!("opening {} for the native path", path.display()),
            err: err.into(),
        })?;
        let queue = DiskQueue::with_options(
            Arc::new(file),
            &DiskQueueOptions {
                depth,
                force_sync: sync,
                completion_fd: false,
                ..DiskQueueOptions::default()
            },
        )
        .map_err(|err| BenchError::Platform {
            what: "setting up the native path's I/O queue".into(),
            err: err.into(),
        })?;
        Ok(NativeDev {
            queue,
            bufs: Vec::new(),
            out: Vec::new(),
        })
    }

    /// `io_uring` or `pread/pwrite (...)`, and whether O_DIRECT is on.
    pub fn describe(&self) -> String {
        let mode = match self.queue.mode() {
            xenio_hostio::disk::IoMode::Uring => "io_uring".to_string(),
            xenio_hostio::disk::IoMode::Sync { .. } => "preadv/pwritev".to_string(),
        };
        let direct = if self.queue.file().direct() {
            "O_DIRECT"
        } else {
            "page cache"
        };
        format!("{mode}, {direct}")
    }

    fn platform<E: Into<xenio_xenbus::Error>>(what: &str) -> impl FnOnce(E) -> BenchError + '_ {
        move |err| BenchError::Platform {
            what: what.to_string(),
            err: err.into(),
        }
    }
}

impl Dev for NativeDev {
    fn size(&self) -> u64 {
        self.queue.file().size_bytes()
    }

    fn buffers(&mut self, n: usize, len: usize) -> Result<()> {
        self.bufs.clear();
        for _ in 0..n {
            let r = Region::anonymous(len).map_err(Self::platform("allocating a buffer"))?;
            self.bufs.push(Arc::new(r));
        }
        Ok(())
    }

    fn copy_in(&mut self, b: usize, data: &[u8]) -> Result<()> {
        self.bufs[b]
            .write(0, data)
            .map_err(Self::platform("filling a buffer"))
    }

    fn copy_out(&mut self, b: usize, out: &mut [u8]) -> Result<()> {
        self.bufs[b]
            .read(0, out)
            .map_err(Self::platform("reading a buffer"))
    }

    fn submit(&mut self, b: usize, write: bool, offset: u64, len: usize) -> Result<()> {
        let segs = vec![xenio_hostio::disk::IoSeg::new(self.bufs[b].clone(), 0, len)];
        let io = if write {
            Io::Write { offset, segs }
        } else {
            Io::Read { offset, segs }
        };
        self.queue
            .submit(b as u64, io)
            .map_err(Self::platform("submitting native I/O"))?;
        self.queue
            .flush_submissions()
            .map_err(Self::platform("submitting native I/O"))?;
        Ok(())
    }

    fn wait(&mut self, done: &mut Vec<usize>) -> Result<()> {
        self.out.clear();
        self.queue
            .complete(&mut self.out, 1, Some(STALL))
            .map_err(Self::platform("waiting for native I/O"))?;
        if self.out.is_empty() {
            return Err(BenchError::Stalled {
                config: "native".into(),
                what: "a completion from the native I/O engine",
                secs: STALL.as_secs(),
            });
        }
        for c in self.out.drain(..) {
            c.result
                .map_err(|e| BenchError::io("native I/O".to_string(), e))?;
            done.push(c.tag as usize);
        }
        Ok(())
    }
}

/// The xenio path: a connected blkfront; its backend is a separate process.
pub struct XenioDev<'f, P: Platform> {
    front: &'f mut BlkFront<P>,
    bufs: Vec<Option<Buf>>,
    tokens: HashMap<Token, usize>,
    completions: Vec<xenio_blkfront::Done>,
    label: String,
}

impl<'f, P: Platform> XenioDev<'f, P> {
    /// Drive `front` (which waits for responses as its options say).
    pub fn new(front: &'f mut BlkFront<P>, label: &str) -> Self {
        XenioDev {
            front,
            bufs: Vec::new(),
            tokens: HashMap::new(),
            completions: Vec::new(),
            label: label.to_string(),
        }
    }

    fn fe(&self) -> impl FnOnce(xenio_blkfront::Error) -> BenchError + '_ {
        move |err| BenchError::Frontend {
            config: self.label.clone(),
            err,
        }
    }

    fn buf(&self, b: usize) -> Result<&Buf> {
        self.bufs
            .get(b)
            .and_then(Option::as_ref)
            .ok_or_else(|| BenchError::Usage(format!("buffer {b} is in flight or missing")))
    }

    fn release(&mut self) {
        for b in self.bufs.drain(..).flatten() {
            self.front.free(b);
        }
    }
}

impl<P: Platform> Drop for XenioDev<'_, P> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<P: Platform> Dev for XenioDev<'_, P> {
    fn size(&self) -> u64 {
        self.front.size()
    }

    fn buffers(&mut self, n: usize, len: usize) -> Result<()> {
        self.release();
        for _ in 0..n {
            let b = self.front.alloc(len).map_err(|err| BenchError::Frontend {
                config: self.label.clone(),
                err,
            })?;
            self.bufs.push(Some(b));
        }
        Ok(())
    }

    fn copy_in(&mut self, b: usize, data: &[u8]) -> Result<()> {
        let buf = self.buf(b)?;
        self.front.buf_write(buf, 0, data).map_err(self.fe())
    }

    fn copy_out(&mut self, b: usize, out: &mut [u8]) -> Result<()> {
        let buf = self.buf(b)?;
        self.front.buf_read(buf, 0, out).map_err(self.fe())
    }

    fn submit(&mut self, b: usize, write: bool, offset: u64, len: usize) -> Result<()> {
        let buf = self
            .bufs
            .get_mut(b)
            .and_then(Option::take)
            .ok_or_else(|| BenchError::Usage(format!("buffer {b} is in flight or missing")))?;
        if buf.len() != len {
            // Only whole buffers are transferred; workloads size them exactly.
            let have = buf.len();
            self.bufs[b] = Some(buf);
            return Err(BenchError::Usage(format!(
                "xenio transfers whole buffers: {len} bytes asked of a {have}-byte buffer"
            )));
        }
        let op = if write {
            Op::Write { offset, buf }
        } else {
            Op::Read { offset, buf }
        };
        let token = self.front.submit(op).map_err(|err| BenchError::Frontend {
            config: self.label.clone(),
            err,
        })?;
        self.tokens.insert(token, b);
        Ok(())
    }

    fn wait(&mut self, done: &mut Vec<usize>) -> Result<()> {
        let start = std::time::Instant::now();
        loop {
            self.completions.clear();
            self.front
                .poll(&mut self.completions, Some(Duration::from_millis(200)))
                .map_err(|err| BenchError::Frontend {
                    config: self.label.clone(),
                    err,
                })?;
            if !self.completions.is_empty() {
                break;
            }
            if start.elapsed() > STALL {
                return Err(BenchError::Stalled {
                    config: self.label.clone(),
                    what: "a completion from the backend",
                    secs: STALL.as_secs(),
                });
            }
        }
        for d in self.completions.drain(..) {
            d.result.map_err(|err| BenchError::Frontend {
                config: self.label.clone(),
                err,
            })?;
            let b = self
                .tokens
                .remove(&d.token)
                .ok_or_else(|| BenchError::Stalled {
                    config: self.label.clone(),
                    what: "a completion with a token that was submitted",
                    secs: 0,
                })?;
            self.bufs[b] = d.buf;
            done.push(b);
        }
        Ok(())
    }
}

/// One submitted operation, as [`Recorder`] saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoRec {
    /// A write (else a read).
    pub write: bool,
    /// Byte offset.
    pub offset: u64,
    /// Bytes.
    pub len: usize,
}

/// Any device, with every submitted operation logged in submission order.
pub struct Recorder<D> {
    /// The device.
    pub inner: D,
    /// What was submitted.
    pub log: Vec<IoRec>,
}

impl<D: Dev> Recorder<D> {
    /// Wrap `inner`.
    pub fn new(inner: D) -> Self {
        Recorder {
            inner,
            log: Vec::new(),
        }
    }
}

impl<D: Dev> Dev for Recorder<D> {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn buffers(&mut self, n: usize, len: usize) -> Result<()> {
        self.inner.buffers(n, len)
    }
    fn copy_in(&mut self, b: usize, data: &[u8]) -> Result<()> {
        self.inner.copy_in(b, data)
    }
    fn copy_out(&mut self, b: usize, out: &mut [u8]) -> Result<()> {
        self.inner.copy_out(b, out)
    }
    fn submit(&mut self, b: usize, write: bool, offset: u64, len: usize) -> Result<()> {
        self.log.push(IoRec { write, offset, len });
        self.inner.submit(b, write, offset, len)
    }
    fn wait(&mut self, done: &mut Vec<usize>) -> Result<()> {
        self.inner.wait(done)
    }
}
