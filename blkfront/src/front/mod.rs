//! [`BlkFront`]: the connected device. It owns the pool, the queues and the
//! ops in flight, and drives them: the handshake (again when the backend
//! changes), submission into free ring slots, and completion, spinning or
//! sleeping on the event channels while it waits. Its parts (declared and
//! driven here; between them they share types only):
//!
//! - `handshake`: the frontend's side of the XenbusState handshake;
//! - `submit`: checking an op and splitting it into blkif requests;
//! - `queue`: one ring, its slots, request ids and response validation;
//! - `complete`: ops in flight until their last request is answered.

mod complete;
mod handshake;
mod queue;
mod submit;

use crate::error::{Error, Result};
use crate::op::{Done, Op, Token};
use crate::options::{Info, Options};
use crate::pool::{Buf, Pool};
use complete::Completions;
use handshake::Geometry;
use queue::{PlatformQueue, Queue};
use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use submit::Spec;
use xenio_ring::wait::{WaitPolicy, WaitStats};
use xenio_xen_sys::blkif::BLKIF_MAX_SEGMENTS_PER_REQUEST;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xen_sys::{DomId, GrantRef, Port};
use xenio_xenbus::handshake::keys::{self, blkif, parse_key};
use xenio_xenbus::handshake::{Endpoint, read_state};
use xenio_xenbus::platform::Platform;
use xenio_xenbus::{Access, EventChannel, GrantTable, Store, Tx, Watch};

/// A connected blkif frontend over platform `P`.
pub struct BlkFront<P: Platform> {
    platform: Arc<P>,
    dir: String,
    backend_dir: String,
    backend_id: DomId,
    options: Options,
    info: Info,
    queues: Vec<PlatformQueue<P>>,
    watch: <P::Store as Store>::Watch,
    pool: Pool<<P::Grants as GrantTable>::Granted>,
    /// Requests waiting for a free ring slot, in order.
    backlog: VecDeque<Spec>,
    ops: Completions,
    next_token: u64,
    next_queue: usize,
    reconnects: u64,
    notifications: u64,
    /// How `poll` waits for responses (learned across calls).
    waiting: WaitPolicy,
    /// The toolstack's `trusted` key for this device (absent: trusted).
    trusted: bool,
}

impl<P: Platform> BlkFront<P> {
    /// Connect the frontend whose store directory is `dir`
    /// (`/local/domain/<me>/device/vbd/<devid>`, created by the toolstack):
    /// grant the data pool, run the handshake (`xen/io/blkif.h`), and return
    /// once the backend and the frontend are both `Connected`.
    ///
    /// The device need not exist yet: `connect` waits up to
    /// [`Options::device_timeout`] (30 s) for it to appear (its `backend` key)
    /// and for its backend to start (its `state` past `Initialising`), as a
    /// frontend started beside its backend must.
    ///
    /// # Errors
    ///
    /// [`Error::NotReady`], naming the missing key or the backend's state,
    /// when the device or its backend is not there within
    /// [`Options::device_timeout`]; [`Error::Closed`] when the device is
    /// removed while connecting; [`Error::Platform`] when the backend does not
    /// reach `InitWait` and then `Connected`
    /// within [`Options::timeout`] (`Platform(Timeout)`), or when the pool, the
    /// rings or the event channels cannot be granted or allocated;
    /// [`Error::BadKey`] when a key the backend wrote is malformed or
    /// `sectors` is missing.
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
    /// let mut first_sector = [0u8; 512];
    /// disk.read_at(0, &mut first_sector)?;
    /// let info = disk.info().clone();
    /// assert_eq!(disk.size(), 4 << 20);
    /// println!("{} sectors, ring order {}, {} queue(s)", info.sectors, info.ring_page_order, info.queues);
    /// disk.close()?;
    /// # backend.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect(platform: Arc<P>, dir: &str, options: Options) -> Result<Self> {
        let store = platform.store();
        let (backend_dir, backend_id) =
            handshake::await_device(store, dir, options.device_timeout)?;
        let watch = store.watch(
            &format!("{backend_dir}/{}", keys::STATE),
            "blkfront-backend-state",
        )?;
        let pool_pages = options.pool_pages.max(16);
        let pool = Pool::new(platform.grants()?.grant(
            backend_id,
            pool_pages,
            Access::ReadWrite,
        )?);
        let mut front = BlkFront {
            dir: dir.to_string(),
            backend_dir,
            backend_id,
            info: Info {
                sectors: 0,
                sector_size: 512,
                physical_sector_size: 512,
                readonly: false,
                flush: false,
                barrier: false,
                discard: None,
                ring_page_order: 0,
                queues: 1,
                max_segments: BLKIF_MAX_SEGMENTS_PER_REQUEST,
                persistent: false,
            },
            queues: Vec::new(),
            watch,
            pool,
            backlog: VecDeque::new(),
            ops: Completions::default(),
            next_token: 1,
            next_queue: 0,
            reconnects: 0,
            notifications: 0,
            waiting: WaitPolicy::new(options.wait),
            trusted: true,
            options,
            platform,
        };
        front.handshake()?;
        Ok(front)
    }

    /// How [`poll`](Self::poll)'s waits for responses went so far: how many
    /// ended, how many of them while spinning (the rest slept on the event
    /// channels), how many spins found nothing.
    pub fn wait_stats(&self) -> WaitStats {
        self.waiting.stats()
    }

    /// What was negotiated.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// How many times the frontend reconnected to a new backend.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// Disk size in bytes.
    pub fn size(&self) -> u64 {
        self.info.size()
    }

    /// Notifications sent to the backend so far.
    pub fn notifications(&self) -> u64 {
        self.notifications
    }

    /// Whether the toolstack trusts the backend: the frontend directory's
    /// `trusted` key, written by the toolstack, as Linux's xen-blkfront reads
    /// it (absent or non-zero: trusted; `0`: not). For an untrusted backend
    /// `feature-persistent` is not offered whatever [`Options::persistent`]
    /// says, and buffers are zeroed when freed, so the backend never reads what
    /// a buffer held once it is back in the pool. Buffers in use are the
    /// backend's to read either way (the pool is granted for the connection),
    /// so keep in a [`Buf`] only what the backend may see.
    pub fn backend_trusted(&self) -> bool {
        self.trusted
    }

    /// The handshake, for the first connection and every reconnection; then
    /// every request that had no response is issued again.
    fn handshake(&mut self) -> Result<()> {
        let platform = self.platform.clone();
        self.trusted = handshake::backend_trusted(platform.store(), &self.dir)?;
        // An untrusted backend gets no persistent grants and never sees what a
        // freed buffer held (Linux's xen-blkfront bounces through pages of its
        // own for it; xenio's pool pages are such pages).
        self.pool.set_zero_on_free(!self.trusted);
        let geometry = handshake::negotiate(platform.store(), &self.dir, &self.options)?;
        self.set_up_queues(geometry)?;
        let rings: Vec<(&[GrantRef], Port)> = self
            .queues
            .iter()
            .map(|q| (q.ring_refs(), q.port()))
            .collect();
        let keys = handshake::ring_keys(geometry, &rings, self.options.persistent && self.trusted);
        self.info = handshake::connect(
            platform.store(),
            &self.dir,
            &keys,
            geometry,
            self.options.timeout,
        )?;
        // Re-issue everything that had no response, in slot order, then the backlog.
        for qi in 0..self.queues.len() {
            for s in self.queues[qi].in_flight_slots() {
                self.queues[qi].push(qi, s)?;
            }
            self.publish(qi)?;
        }
        self.issue_backlog()
    }

    /// New queues for a new geometry (what was in flight goes back to the
    /// front of the backlog), or the same queues reset for a new backend.
    fn set_up_queues(&mut self, g: Geometry) -> Result<()> {
        let grants = self.platform.grants()?;
        let events = self.platform.events();
        let reconnect = !self.queues.is_empty();
        if !reconnect
            || self.queues.len() != g.queues as usize
            || self.info.ring_page_order != g.order
            || self.info.max_segments != g.max_segments
        {
            if reconnect && !self.queues.iter().all(|q| q.is_idle()) {
                // Geometry changed with requests in flight: put them back in the backlog.
                for q in &mut self.queues {
                    for spec in q.take_in_flight() {
                        self.backlog.push_front(spec);
                    }
                }
            }
            self.queues.clear();
            for _ in 0..g.queues {
                self.queues.push(Queue::new(
                    grants,
                    events,
                    self.backend_id,
                    g.order,
                    g.max_segments,
                )?);
            }
        } else {
            // Same geometry: reset the rings in place, new event channels.
            for q in &mut self.queues {
                q.reset(events, self.backend_id)?;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ buffers

    /// A buffer of `len` bytes from the grant pool (rounded up to pages).
    ///
    /// # Errors
    ///
    /// [`Error::PoolExhausted`] when the pool has too few free pages: complete
    /// (and [`free`](BlkFront::free)) some I/O first.
    pub fn alloc(&mut self, len: usize) -> Result<Buf> {
        self.pool.alloc(len)
    }

    /// Give a buffer back to the pool.
    pub fn free(&mut self, buf: Buf) {
        self.pool.free(buf);
    }

    /// Copy `data` into `buf` at `offset`.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when `offset + data.len()` is past the buffer's end.
    pub fn buf_write(&self, buf: &Buf, offset: usize, data: &[u8]) -> Result<()> {
        self.pool.write(buf, offset, data)
    }

    /// Copy bytes of `buf` at `offset` into `out`.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when `offset + out.len()` is past the buffer's end.
    pub fn buf_read(&self, buf: &Buf, offset: usize, out: &mut [u8]) -> Result<()> {
        self.pool.read(buf, offset, out)
    }

    // ------------------------------------------------------------ submission

    /// Submit an I/O without waiting; its completion (with the op's buffer)
    /// comes out of [`BlkFront::poll`]. Requests that find no free ring slot
    /// wait in the frontend and go out as responses free slots.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when the op is refused before anything is sent (an
    /// offset or length not a non-zero multiple of 512, a range past the end of
    /// the disk, a write to a read-only disk, a barrier write over 44 KiB; its
    /// buffer goes back to the pool), [`Error::NotSupported`] for a discard the
    /// backend does not offer, [`Error::Ring`] or [`Error::Platform`] when the
    /// requests cannot be pushed or the backend notified. Errors of the I/O
    /// itself come in [`Done::result`](crate::Done::result).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use xenio_blkfront::{BlkFront, Op, Options};
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
    /// // Write 8 KiB at 1 MiB from a pool buffer, without waiting...
    /// let buf = disk.alloc(8192)?;
    /// disk.buf_write(&buf, 0, &[0x5a; 8192])?;
    /// let token = disk.submit(Op::Write { offset: 1 << 20, buf })?;
    /// // ...then wait for the completion, which hands the buffer back.
    /// let mut done = Vec::new();
    /// while done.is_empty() {
    ///     disk.poll(&mut done, Some(Duration::from_secs(1)))?;
    /// }
    /// let d = done.pop().unwrap();
    /// assert_eq!(d.token, token);
    /// d.result?;
    /// disk.free(d.buf.unwrap());
    /// disk.close()?;
    /// # backend.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn submit(&mut self, op: Op) -> Result<Token> {
        let token = Token(self.next_token);
        self.next_token += 1;
        let planned = match submit::plan(op, &self.info, self.pool.refs()) {
            Ok(p) => p,
            Err((e, buf)) => {
                if let Some(buf) = buf {
                    self.free(buf);
                }
                return Err(e);
            }
        };
        self.ops
            .add(token, planned.specs.len(), planned.what, planned.buf);
        for mut s in planned.specs {
            s.pending = token.0;
            self.backlog.push_back(s);
        }
        self.issue_backlog()?;
        Ok(token)
    }

    /// Move backlog requests into free ring slots, queue by queue, and publish.
    fn issue_backlog(&mut self) -> Result<()> {
        let mut touched = vec![false; self.queues.len()];
        while !self.backlog.is_empty() {
            let nq = self.queues.len();
            let Some(qi) = (0..nq)
                .map(|i| (self.next_queue + i) % nq)
                .find(|&i| self.queues[i].has_room())
            else {
                break;
            };
            self.next_queue = (qi + 1) % nq;
            let spec = self.backlog.pop_front().expect("front exists");
            let slot = self.queues[qi].occupy(spec);
            self.queues[qi].push(qi, slot)?;
            touched[qi] = true;
        }
        for (qi, t) in touched.into_iter().enumerate() {
            if t {
                self.publish(qi)?;
            }
        }
        Ok(())
    }

    fn publish(&mut self, qi: usize) -> Result<()> {
        if self.queues[qi].publish()? {
            self.notifications += 1;
        }
        Ok(())
    }

    // ------------------------------------------------------------ completion

    /// Collect completions into `out`, waiting up to `wait` for at least one if
    /// none is ready (`None`: do not wait). Returns how many were added.
    /// Waiting spins as [`Options::wait`] says, then sleeps on the event
    /// channels; a backend that left `Connected` meanwhile is reconnected to
    /// and every request without a response is issued again.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the backend answers a request that is not in
    /// flight or with the wrong operation (the response is skipped; good
    /// responses that came with it still complete, and come out of the next
    /// call), [`Error::Ring`] when it broke the ring,
    /// [`Error::Platform`] when an event channel or the store fails; and, when the
    /// backend went away and the frontend reconnects, the errors of
    /// [`BlkFront::connect`]. An op that failed at the backend
    /// is a completion with an error in [`Done::result`](crate::Done::result),
    /// not an error of `poll`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use xenio_blkfront::{BlkFront, Op, Options};
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
    /// // Four 4 KiB reads in flight at once, collected as they complete.
    /// for i in 0..4 {
    ///     let buf = disk.alloc(4096)?;
    ///     disk.submit(Op::Read { offset: i * 4096, buf })?;
    /// }
    /// let mut done = Vec::new();
    /// while done.len() < 4 {
    ///     disk.poll(&mut done, Some(Duration::from_secs(1)))?;
    /// }
    /// for d in done {
    ///     d.result?;
    ///     let buf = d.buf.expect("a read hands its buffer back");
    ///     let mut first = [0u8; 16];
    ///     disk.buf_read(&buf, 0, &mut first)?;
    ///     disk.free(buf);
    /// }
    /// disk.close()?;
    /// # backend.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn poll(&mut self, out: &mut Vec<Done>, wait: Option<Duration>) -> Result<usize> {
        let deadline = wait.map(|w| Instant::now() + w);
        loop {
            self.reap()?;
            if self.ops.any_done() {
                self.waiting.ended();
                return Ok(self.ops.drain_into(out));
            }
            let Some(deadline) = deadline else {
                return Ok(0);
            };
            if self.ops.in_flight() == 0 {
                self.waiting.abandon();
                return Ok(0);
            }
            // Every round, not only when a sleep times out: under steady I/O
            // the channel always fires, and a backend closing (`xl
            // block-detach`) or restarting would go unnoticed.
            self.check_backend()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.waiting.gave_up();
                return Ok(0);
            }
            if self.spin(left)? {
                continue;
            }
            self.sleep(left.min(Duration::from_millis(100)))?;
        }
    }

    /// Look for responses without sleeping, for as long as the wait policy
    /// says (at most `max`); whether any came.
    fn spin(&mut self, max: Duration) -> Result<bool> {
        let queues = &mut self.queues;
        self.waiting.spin_at_most(max, || {
            for q in queues.iter_mut() {
                if q.has_responses()? {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    /// Sleep until an event channel fires (or `max` passes), watching the backend.
    fn sleep(&mut self, max: Duration) -> Result<()> {
        // Arm every queue: only sleep if no queue has work after its final check.
        for q in &mut self.queues {
            if q.final_check()? {
                return Ok(());
            }
        }
        let fired = match self.queues.len() {
            1 => self.queues[0].channel().wait(Some(max))?,
            _ => self.wait_any(max)?,
        };
        if !fired {
            self.check_backend()?;
        }
        Ok(())
    }

    /// Several queues: sleep on all their event channels at once (each channel's
    /// descriptor is readable while an event is pending), then consume what fired.
    fn wait_any(&mut self, max: Duration) -> Result<bool> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds: Vec<PollFd<'_>> = self
            .queues
            .iter()
            .map(|q| PollFd::new(q.channel().as_fd(), PollFlags::POLLIN))
            .collect();
        let ms = u16::try_from(max.as_millis().max(1)).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                return Err(Error::Platform(xenio_xenbus::Error::EventChannel {
                    port: self.queues[0].port(),
                    reason: format!("poll on {} event channels: {e}", fds.len()),
                }));
            }
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut any = false;
        for (q, ready) in self.queues.iter().zip(ready) {
            if ready {
                any |= q.channel().take_pending()?;
            }
        }
        Ok(any)
    }

    /// If the backend left `Connected` (it died and a new one is starting, or it
    /// is closing), reconnect and re-issue what is in flight.
    fn check_backend(&mut self) -> Result<()> {
        let mut changed = false;
        while self.watch.next_event(Some(Duration::ZERO))?.is_some() {
            changed = true;
        }
        if !changed {
            return Ok(());
        }
        let state = read_state(
            self.platform.store(),
            &format!("{}/{}", self.backend_dir, keys::STATE),
        )?;
        if state == XenbusState::Connected {
            // A backend writes `Connected` again to announce a new size
            // (online resize, as Linux's blkback does it).
            return self.read_size().map(|_| ());
        }
        tracing::info!(
            "backend {} went to {state:?}: reconnecting",
            self.backend_dir
        );
        self.reconnects += 1;
        self.handshake()
    }

    /// Look at what the backend announced since the last look: a new size
    /// (online resize: the disk grew while connected) or a restart (then
    /// reconnect and re-issue what was in flight, as [`poll`](Self::poll) does
    /// when it waits). Returns whether the size changed; [`size`](Self::size)
    /// and [`info`](Self::info) say the new one.
    ///
    /// # Errors
    ///
    /// As [`poll`](Self::poll) when it reconnects; [`Error::BadKey`] when the
    /// backend's `sectors` is malformed.
    pub fn refresh(&mut self) -> Result<bool> {
        let before = self.info.sectors;
        self.check_backend()?;
        Ok(self.info.sectors != before)
    }

    /// Read the backend's `sectors` again; whether it changed.
    fn read_size(&mut self) -> Result<bool> {
        let path = format!("{}/{}", self.backend_dir, blkif::SECTORS);
        let Some(v) = self.platform.store().read_opt(Tx::NONE, &path)? else {
            return Ok(false);
        };
        let sectors: u64 = parse_key(&path, &v)?;
        if sectors == self.info.sectors {
            return Ok(false);
        }
        tracing::info!(
            "{}: the disk is now {sectors} sectors (was {})",
            self.backend_dir,
            self.info.sectors
        );
        self.info.sectors = sectors;
        Ok(true)
    }

    /// Take every response from every queue and complete ops. A response the
    /// backend should not have sent is skipped and reported (the first such
    /// error is returned) after the others taken with it are completed: they
    /// are off the ring, and would otherwise never complete.
    fn reap(&mut self) -> Result<()> {
        let mut rsps = Vec::new();
        let mut bad = None;
        for qi in 0..self.queues.len() {
            rsps.clear();
            self.queues[qi].take_responses(&mut rsps)?;
            for r in &rsps {
                match self.queues[qi].complete(qi, r, self.backend_id) {
                    Ok(op) => self.ops.answered(op, r.status),
                    Err(e) => {
                        tracing::warn!("{e}");
                        bad.get_or_insert(e);
                    }
                }
            }
        }
        if !self.backlog.is_empty() {
            self.issue_backlog()?;
        }
        bad.map_or(Ok(()), Err)
    }

    /// Hand a completion taken out of [`BlkFront::poll`] back, to come out of
    /// it again.
    pub(crate) fn requeue(&mut self, done: Done) {
        self.ops.requeue(done);
    }

    /// How long to wait for the backend at each step.
    pub(crate) fn timeout(&self) -> Duration {
        self.options.timeout
    }

    /// Tear down: Closing, wait for the backend, Closed.
    ///
    /// # Errors
    ///
    /// [`Error::Platform`] when the store fails or the backend does not go to
    /// `Closing` or `Closed` within [`Options::timeout`].
    pub fn close(self) -> Result<()> {
        let mut ep = Endpoint::frontend(self.platform.store(), &self.dir)?;
        ep.switch(XenbusState::Closing, &[])?;
        ep.wait_peer(self.options.timeout, |s| {
            matches!(
                s,
                XenbusState::Closing | XenbusState::Closed | XenbusState::Unknown
            )
        })?;
        ep.switch(XenbusState::Closed, &[])?;
        Ok(())
    }

    /// Requests submitted and not completed.
    pub fn in_flight(&self) -> usize {
        self.ops.in_flight()
    }

    /// The grant references of the data pool (for tests and diagnostics).
    pub fn pool_refs(&self) -> &[GrantRef] {
        self.pool.refs()
    }
}
