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

    /// Read `out.len()` bytes at `offset` (both multiples of 512), waiting for
    /// the data; through pool buffers of up to a quarter of the pool.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a misaligned or out-of-range read,
    /// [`Error::PoolExhausted`] when the caller holds most of the pool,
    /// [`Error::Io`] when the backend reports an I/O error,
    /// [`Error::Timeout`] when no completion comes within [`Options::timeout`](crate::Options::timeout),
    /// and the errors of [`BlkFront::poll`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use xenio_blkfront::{BlkFront, Options};
    /// use xenio_xenbus::DomId;
    /// use xenio_xenbus::handshake::{DeviceKind, DevicePaths};
    /// use xenio_xenbus::platform::{InProcess, Platform};
    ///
    /// // Two domains as threads of this process: domain 0 serves a 4 MiB disk
    /// // (xenio's blkback over an image file) as device 51712 of domain 1.
    /// let world = InProcess::new()?;
    /// let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vbd, 51712);
    /// # let dom0 = world.domain(DomId(0))?;
    /// # xenio_xenbus::handshake::create_device(dom0.store(), &paths, &[])?;
    /// # let image = tempfile::NamedTempFile::new()?;
    /// # image.as_file().set_len(4 << 20)?;
    /// # let storage = xenio_blkback::FileStorage::open(
    /// #     image.path(),
    /// #     false,
    /// #     xenio_hostio::disk::Direct::Auto,
    /// # )?;
    /// # let backend_dir = paths.backend.clone();
    /// # let backend = std::thread::spawn(move || {
    /// #     let config = xenio_blkback::BackendConfig { once: true, ..Default::default() };
    /// #     let (counters, stop) = (Default::default(), Default::default());
    /// #     xenio_blkback::serve(&dom0, &backend_dir, &storage, &config, &counters, &stop)
    /// # });
    /// let guest = Arc::new(world.domain(DomId(1))?);
    /// let mut disk = BlkFront::connect(guest, &paths.frontend, Options::default())?;
    /// disk.write_at(4096, &[7u8; 1024])?;
    /// let mut back = vec![0u8; 1024];
    /// disk.read_at(4096, &mut back)?;
    /// assert_eq!(back, [7u8; 1024]);
    /// disk.close()?;
    /// # backend.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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

    /// Write `data` at `offset` (both multiples of 512), waiting until the
    /// backend has written it; through pool buffers of up to a quarter of the
    /// pool. Durable only after [`BlkFront::flush`].
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a misaligned or out-of-range write or a
    /// read-only disk, and otherwise as [`BlkFront::read_at`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use xenio_blkfront::{BlkFront, Options};
    /// use xenio_xenbus::DomId;
    /// use xenio_xenbus::handshake::{DeviceKind, DevicePaths};
    /// use xenio_xenbus::platform::{InProcess, Platform};
    ///
    /// // Two domains as threads of this process: domain 0 serves a 4 MiB disk
    /// // (xenio's blkback over an image file) as device 51712 of domain 1.
    /// let world = InProcess::new()?;
    /// let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vbd, 51712);
    /// # let dom0 = world.domain(DomId(0))?;
    /// # xenio_xenbus::handshake::create_device(dom0.store(), &paths, &[])?;
    /// # let image = tempfile::NamedTempFile::new()?;
    /// # image.as_file().set_len(4 << 20)?;
    /// # let storage = xenio_blkback::FileStorage::open(
    /// #     image.path(),
    /// #     false,
    /// #     xenio_hostio::disk::Direct::Auto,
    /// # )?;
    /// # let backend_dir = paths.backend.clone();
    /// # let backend = std::thread::spawn(move || {
    /// #     let config = xenio_blkback::BackendConfig { once: true, ..Default::default() };
    /// #     let (counters, stop) = (Default::default(), Default::default());
    /// #     xenio_blkback::serve(&dom0, &backend_dir, &storage, &config, &counters, &stop)
    /// # });
    /// let guest = Arc::new(world.domain(DomId(1))?);
    /// let mut disk = BlkFront::connect(guest, &paths.frontend, Options::default())?;
    /// let data: Vec<u8> = (0..8192u32).map(|i| i as u8).collect();
    /// disk.write_at(64 << 10, &data)?;
    /// disk.flush()?;
    /// disk.close()?;
    /// # backend.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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

    /// Make written data durable (`BLKIF_OP_FLUSH_DISKCACHE`).
    ///
    /// # Errors
    ///
    /// [`Error::NotSupported`] when the backend offers neither
    /// `feature-flush-cache` nor `feature-barrier` (or answers
    /// `BLKIF_RSP_EOPNOTSUPP`), and otherwise as [`BlkFront::read_at`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use xenio_blkfront::{BlkFront, Options};
    /// use xenio_xenbus::DomId;
    /// use xenio_xenbus::handshake::{DeviceKind, DevicePaths};
    /// use xenio_xenbus::platform::{InProcess, Platform};
    ///
    /// // Two domains as threads of this process: domain 0 serves a 4 MiB disk
    /// // (xenio's blkback over an image file) as device 51712 of domain 1.
    /// let world = InProcess::new()?;
    /// let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vbd, 51712);
    /// # let dom0 = world.domain(DomId(0))?;
    /// # xenio_xenbus::handshake::create_device(dom0.store(), &paths, &[])?;
    /// # let image = tempfile::NamedTempFile::new()?;
    /// # image.as_file().set_len(4 << 20)?;
    /// # let storage = xenio_blkback::FileStorage::open(
    /// #     image.path(),
    /// #     false,
    /// #     xenio_hostio::disk::Direct::Auto,
    /// # )?;
    /// # let backend_dir = paths.backend.clone();
    /// # let backend = std::thread::spawn(move || {
    /// #     let config = xenio_blkback::BackendConfig { once: true, ..Default::default() };
    /// #     let (counters, stop) = (Default::default(), Default::default());
    /// #     xenio_blkback::serve(&dom0, &backend_dir, &storage, &config, &counters, &stop)
    /// # });
    /// let guest = Arc::new(world.domain(DomId(1))?);
    /// let mut disk = BlkFront::connect(guest, &paths.frontend, Options::default())?;
    /// disk.write_at(0, &[1u8; 512])?;
    /// if disk.info().flush {
    ///     disk.flush()?;
    /// }
    /// disk.close()?;
    /// # backend.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn flush(&mut self) -> Result<()> {
        if !self.info().flush && !self.info().barrier {
            return Err(Error::NotSupported("flush (no feature-flush-cache)".into()));
        }
        self.run(Op::Flush).map(drop)
    }

    /// Discard `len` bytes at `offset` (both multiples of 512): the backend
    /// may deallocate them (`BLKIF_OP_DISCARD`).
    ///
    /// # Errors
    ///
    /// [`Error::NotSupported`] when the backend has no `feature-discard` (see
    /// [`Info::discard`](crate::Info::discard)), and otherwise as
    /// [`BlkFront::read_at`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use xenio_blkfront::{BlkFront, Options};
    /// use xenio_xenbus::DomId;
    /// use xenio_xenbus::handshake::{DeviceKind, DevicePaths};
    /// use xenio_xenbus::platform::{InProcess, Platform};
    ///
    /// // Two domains as threads of this process: domain 0 serves a 4 MiB disk
    /// // (xenio's blkback over an image file) as device 51712 of domain 1.
    /// let world = InProcess::new()?;
    /// let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vbd, 51712);
    /// # let dom0 = world.domain(DomId(0))?;
    /// # xenio_xenbus::handshake::create_device(dom0.store(), &paths, &[])?;
    /// # let image = tempfile::NamedTempFile::new()?;
    /// # image.as_file().set_len(4 << 20)?;
    /// # let storage = xenio_blkback::FileStorage::open(
    /// #     image.path(),
    /// #     false,
    /// #     xenio_hostio::disk::Direct::Auto,
    /// # )?;
    /// # let backend_dir = paths.backend.clone();
    /// # let backend = std::thread::spawn(move || {
    /// #     let config = xenio_blkback::BackendConfig { once: true, ..Default::default() };
    /// #     let (counters, stop) = (Default::default(), Default::default());
    /// #     xenio_blkback::serve(&dom0, &backend_dir, &storage, &config, &counters, &stop)
    /// # });
    /// let guest = Arc::new(world.domain(DomId(1))?);
    /// let mut disk = BlkFront::connect(guest, &paths.frontend, Options::default())?;
    /// if disk.info().discard.is_some() {
    ///     disk.discard(1 << 20, 1 << 20)?;
    /// }
    /// disk.close()?;
    /// # backend.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn discard(&mut self, offset: u64, len: u64) -> Result<()> {
        self.run(Op::Discard { offset, len }).map(drop)
    }

    /// Bytes per op of the blocking calls: a quarter of the pool, 1 MiB at most.
    fn chunk_bytes(&self) -> usize {
        (self.pool_refs().len() / 4).clamp(1, 256) * PAGE
    }
}
