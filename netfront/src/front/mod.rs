//! [`NetFront`]: the connected interface. It owns the queues and drives them:
//! the handshake (again when the backend changes), sending on the queue of a
//! frame's flow, receiving round robin, and sleeping on the event channels.
//! Its parts (declared and driven here; between them they share types only):
//!
//! - `handshake`: the frontend's side of the XenbusState handshake;
//! - `queue`: one queue, its two rings and event channel(s);
//! - `tx`: a tx ring, its pages, and how a frame is laid out in slots;
//! - `rx`: an rx ring kept full of buffers, and packet reassembly.

mod handshake;
mod queue;
mod rx;
mod tx;

use crate::counters::{Counters, add};
use crate::error::{Error, Result};
use crate::options::{DEFAULT_MAC, Info, Options};
use crate::packet::{GsoKind, PacketMeta};
use handshake::QueueRefs;
use queue::{PlatformQueue, Queue};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tx::{check_frame, layout_into};
use xenio_xen_sys::netif::{
    NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED, NetifExtraGso, XEN_NETIF_GSO_TYPE_TCPV4,
    XEN_NETIF_GSO_TYPE_TCPV6,
};
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xen_sys::{DomId, GrantRef};
use xenio_xenbus::handshake::keys::{self, parse_key};
use xenio_xenbus::handshake::{Endpoint, read_state};
use xenio_xenbus::platform::Platform;
use xenio_xenbus::{EventChannel, Store, Tx, Watch};

/// A connected netif frontend over platform `P`.
pub struct NetFront<P: Platform> {
    platform: Arc<P>,
    dir: String,
    backend_dir: String,
    backend_id: DomId,
    options: Options,
    info: Info,
    queues: Vec<PlatformQueue<P>>,
    watch: <P::Store as Store>::Watch,
    counters: Arc<Counters>,
    next_rx_queue: usize,
    /// Flags for the next frames' first slots (`NETTXF_csum_blank`, ...).
    tx_flags: u16,
    /// A frame buffer kept between sends through smoltcp.
    scratch: Vec<u8>,
    /// A frame's slots, kept between sends.
    layout: Vec<(u16, usize)>,
    /// When the backend's state was last looked at.
    last_check: Instant,
    /// Calls of `recv` that found nothing.
    idle_recvs: u32,
    /// `close` ran (nothing to say when dropped).
    closed: bool,
}

impl<P: Platform> NetFront<P> {
    /// Connect the frontend whose store directory is `dir`
    /// (`/local/domain/<me>/device/vif/<devid>`, created by the toolstack):
    /// run the handshake (`xen/io/netif.h`), grant and post the rx buffers, and
    /// return once both ends are `Connected`.
    ///
    /// # Errors
    ///
    /// [`Error::Platform`] when the store has no `backend`/`backend-id` in
    /// `dir`, when the backend does not reach `InitWait` and then `Connected`
    /// within [`Options::timeout`] (`Platform(Timeout)`), or when the rings,
    /// buffers or event channels cannot be granted or allocated;
    /// [`Error::BadKey`] when the backend does not offer `feature-rx-copy`, a
    /// key it wrote is malformed, or the toolstack's `mac` is not a MAC address.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use xenio_netfront::{NetFront, Options};
    /// use xenio_xenbus::DomId;
    /// use xenio_xenbus::handshake::{DeviceKind, DevicePaths};
    /// use xenio_xenbus::platform::{InProcess, Platform};
    ///
    /// // Two domains as threads of this process: domain 0 serves interface 0 of
    /// // domain 1 (xenio's netback, with frames kept in memory).
    /// let world = InProcess::new()?;
    /// let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vif, 0);
    /// # let dom0 = world.domain(DomId(0))?;
    /// # xenio_xenbus::handshake::create_device(dom0.store(), &paths, &[])?;
    /// # let network = xenio_netback::MemNetwork::default();
    /// # let frames = network.frames.clone();
    /// # let backend_dir = paths.backend.clone();
    /// # let backend = std::thread::spawn(move || {
    /// #     let config = xenio_netback::BackendConfig { once: true, ..Default::default() };
    /// #     let (counters, stop) = (Default::default(), Default::default());
    /// #     xenio_netback::serve(&dom0, &backend_dir, &network, &config, &counters, &stop)
    /// # });
    /// let guest = Arc::new(world.domain(DomId(1))?);
    /// let mut nic = NetFront::connect(guest, &paths.frontend, Options::default())?;
    /// let info = nic.info().clone();
    /// println!("mac {:02x?}, mtu {}, {} queue(s)", info.mac, info.mtu, info.queues);
    /// assert!(nic.can_send(info.mtu + 14)?);
    /// nic.close()?;
    /// # backend.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect(platform: Arc<P>, dir: &str, options: Options) -> Result<Self> {
        let store = platform.store();
        let backend_dir = store.read_string(Tx::NONE, &format!("{dir}/{}", keys::BACKEND))?;
        let backend_id_path = format!("{dir}/{}", keys::BACKEND_ID);
        let backend_id = DomId(parse_key::<u16>(
            &backend_id_path,
            &store.read_string(Tx::NONE, &backend_id_path)?,
        )?);
        let watch = store.watch(
            &format!("{backend_dir}/{}", keys::STATE),
            "netfront-backend-state",
        )?;
        let mut front = NetFront {
            dir: dir.to_string(),
            backend_dir,
            backend_id,
            info: Info {
                queues: 1,
                sg: false,
                split_event_channels: false,
                mtu: 1500,
                mac: DEFAULT_MAC,
                csum_offload: false,
                gso_tcpv4: false,
                gso_tcpv6: false,
            },
            queues: Vec::new(),
            watch,
            counters: Arc::new(Counters::default()),
            next_rx_queue: 0,
            tx_flags: 0,
            scratch: Vec::new(),
            layout: Vec::new(),
            last_check: Instant::now(),
            idle_recvs: 0,
            closed: false,
            options,
            platform,
        };
        front.handshake()?;
        Ok(front)
    }

    /// What was negotiated.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// The counters (shared: keep the `Arc` to read them from another thread).
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Set the flags of the first slot of frames sent from now on
    /// (`NETTXF_csum_blank`, `NETTXF_data_validated`; others are ignored).
    pub fn set_tx_flags(&mut self, flags: u16) {
        self.tx_flags = flags & (NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED);
    }

    /// The handshake, for the first connection and every reconnection.
    fn handshake(&mut self) -> Result<()> {
        let platform = self.platform.clone();
        let info = handshake::negotiate(platform.store(), &self.dir, &self.options)?;
        let grants = self.platform.grants()?;
        let events = self.platform.events();
        let (be, split) = (self.backend_id, info.split_event_channels);
        if self.queues.len() != info.queues as usize {
            self.queues.clear();
            for _ in 0..info.queues {
                self.queues.push(Queue::new(grants, events, be, split)?);
            }
        } else {
            // Reconnecting with the same geometry: fresh rings in the same pages.
            for q in &mut self.queues {
                q.reset(events, be, split)?;
            }
        }
        // Post every rx buffer.
        for q in &mut self.queues {
            q.rx.post_all()?;
        }
        let refs: Vec<QueueRefs> = self
            .queues
            .iter()
            .map(|q| QueueRefs {
                tx_ring_ref: q.tx.ring_ref(),
                rx_ring_ref: q.rx.ring_ref(),
                tx_port: q.tx_channel().port(),
                rx_port: q.rx_channel().map(|c| c.port()),
            })
            .collect();
        let keys =
            handshake::ring_keys(&refs, info.sg, self.options.csum_offload, self.options.gso);
        handshake::connect(platform.store(), &self.dir, &keys, self.options.timeout)?;
        self.info = info;
        // Tell the backend the rx buffers are there.
        for q in &self.queues {
            q.notify_rx(&self.counters)?;
        }
        Ok(())
    }

    // ------------------------------------------------------------ tx

    /// The queue a frame goes on: a hash of its IPv4 addresses and ports, so
    /// one flow stays on one queue (in order).
    fn pick_queue(&self, frame: &[u8]) -> usize {
        let n = self.queues.len();
        if n == 1 {
            return 0;
        }
        let key = frame.get(26..38).unwrap_or(&[]);
        let h = key.iter().fold(0x811c9dc5u32, |h, &b| {
            (h ^ u32::from(b)).wrapping_mul(0x01000193)
        });
        h as usize % n
    }

    /// Slots a frame of `len` bytes takes, or why it cannot be sent.
    fn check_frame(&self, len: usize) -> Result<usize> {
        check_frame(
            len,
            self.options.max_slot_bytes,
            self.options.tx_offset,
            self.info.sg,
        )
    }

    /// Whether a frame of `len` bytes can be sent now without waiting (frees
    /// the slots the backend answered first).
    ///
    /// # Errors
    ///
    /// As [`NetFront::send`].
    pub fn can_send(&mut self, len: usize) -> Result<bool> {
        let n = self.check_frame(len)?;
        for q in &mut self.queues {
            if q.tx.free_slots() < n {
                q.tx.reap(self.backend_id, &self.counters)?;
            }
        }
        Ok(self.queues.iter().all(|q| q.tx.free_slots() >= n))
    }

    /// Copy a frame onto a tx ring (the queue of its flow) and notify the
    /// backend if it asked. `Ok(false)`: the ring is full right now (wait for
    /// the backend, then try again).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when the frame cannot be sent at all (empty or longer
    /// than [`MAX_FRAME`](crate::MAX_FRAME), or more than one slot without
    /// `feature-sg`), [`Error::Backend`] when the backend answers a slot that is
    /// not in flight, [`Error::Ring`] when it broke the ring,
    /// [`Error::Platform`] when the notification fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use xenio_netfront::{NetFront, Options};
    /// use xenio_xenbus::DomId;
    /// use xenio_xenbus::handshake::{DeviceKind, DevicePaths};
    /// use xenio_xenbus::platform::{InProcess, Platform};
    ///
    /// // Two domains as threads of this process: domain 0 serves interface 0 of
    /// // domain 1 (xenio's netback, with frames kept in memory).
    /// let world = InProcess::new()?;
    /// let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vif, 0);
    /// # let dom0 = world.domain(DomId(0))?;
    /// # xenio_xenbus::handshake::create_device(dom0.store(), &paths, &[])?;
    /// # let network = xenio_netback::MemNetwork::default();
    /// # let frames = network.frames.clone();
    /// # let backend_dir = paths.backend.clone();
    /// # let backend = std::thread::spawn(move || {
    /// #     let config = xenio_netback::BackendConfig { once: true, ..Default::default() };
    /// #     let (counters, stop) = (Default::default(), Default::default());
    /// #     xenio_netback::serve(&dom0, &backend_dir, &network, &config, &counters, &stop)
    /// # });
    /// let guest = Arc::new(world.domain(DomId(1))?);
    /// let mut nic = NetFront::connect(guest, &paths.frontend, Options::default())?;
    /// // An Ethernet broadcast of 60 bytes.
    /// let frame = [0xffu8; 60];
    /// while !nic.send(&frame)? {
    ///     // The tx ring is full: wait for the backend to take some.
    ///     nic.wait(Duration::from_millis(10))?;
    /// }
    /// # while frames.sent.lock().unwrap().is_empty() {
    /// #     std::thread::sleep(Duration::from_millis(1));
    /// # }
    /// assert_eq!(nic.counters().tx_packets.load(std::sync::atomic::Ordering::Relaxed), 1);
    /// nic.close()?;
    /// # backend.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send(&mut self, frame: &[u8]) -> Result<bool> {
        self.send_with(frame, self.tx_flags, None)
    }

    /// Send one packet with its offload metadata: a checksum left blank
    /// (`NETTXF_csum_blank`), or a TCP segment of up to 64 KiB
    /// ([`PacketMeta::gso`]: one GSO extra info slot after the first, the
    /// segment's bytes in as many slots as they need) for the backend, or the
    /// host behind it, to cut into `mss`-sized segments. What the backend does
    /// with the checksum field of a large segment: xenio's writes the
    /// pseudo-header sum into it, Linux's expects it there.
    /// `Ok(false)`: the ring is full right now.
    ///
    /// # Errors
    ///
    /// As [`NetFront::send`]; and [`Error::Invalid`] for a large segment of a
    /// kind that was not negotiated ([`Info::gso_tcpv4`], [`Info::gso_tcpv6`]),
    /// an MSS of 0, or a checksum left blank without
    /// [`Info::csum_offload`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use xenio_netfront::{Gso, GsoKind, NetFront, Options, PacketMeta};
    /// use xenio_xenbus::DomId;
    /// use xenio_xenbus::handshake::{DeviceKind, DevicePaths};
    /// use xenio_xenbus::platform::{InProcess, Platform};
    ///
    /// // xenio's netback in this process, over a network that takes GSO.
    /// let world = InProcess::new()?;
    /// let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vif, 0);
    /// # let dom0 = world.domain(DomId(0))?;
    /// # xenio_xenbus::handshake::create_device(dom0.store(), &paths, &[])?;
    /// # let network = xenio_netback::MemNetwork { offloads: xenio_netback::Offloads::ALL, ..Default::default() };
    /// # let frames = network.frames.clone();
    /// # let backend_dir = paths.backend.clone();
    /// # let backend = std::thread::spawn(move || {
    /// #     let config = xenio_netback::BackendConfig { once: true, ..Default::default() };
    /// #     let (counters, stop) = (Default::default(), Default::default());
    /// #     xenio_netback::serve(&dom0, &backend_dir, &network, &config, &counters, &stop)
    /// # });
    /// let guest = Arc::new(world.domain(DomId(1))?);
    /// let options = Options { csum_offload: true, gso: true, ..Options::default() };
    /// let mut nic = NetFront::connect(guest, &paths.frontend, options)?;
    /// assert!(nic.info().gso_tcpv4);
    /// // Ethernet, IPv4 (total length 40 + 30000), TCP (data offset 5), 30000 bytes.
    /// let mut packet = vec![0u8; 14 + 40 + 30_000];
    /// packet[12..14].copy_from_slice(&[0x08, 0x00]);
    /// packet[14] = 0x45;
    /// packet[16..18].copy_from_slice(&(40u16 + 30_000).to_be_bytes());
    /// packet[22] = 64;
    /// packet[23] = 6;
    /// packet[46] = 5 << 4;
    /// let meta = PacketMeta {
    ///     csum_blank: true,
    ///     gso: Some(Gso { kind: GsoKind::TcpV4, mss: 1460 }),
    ///     ..PacketMeta::default()
    /// };
    /// while !nic.send_packet(&packet, &meta)? {
    ///     nic.wait(Duration::from_millis(10))?;
    /// }
    /// # while frames.sent.lock().unwrap().is_empty() {
    /// #     std::thread::sleep(Duration::from_millis(1));
    /// # }
    /// # assert_eq!(frames.sent.lock().unwrap()[0].len(), packet.len());
    /// nic.close()?;
    /// # backend.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_packet(&mut self, frame: &[u8], meta: &PacketMeta) -> Result<bool> {
        let mut flags = 0;
        if meta.csum_blank || meta.gso.is_some() {
            if !self.info.csum_offload {
                return Err(Error::Invalid(
                    "a checksum left blank, but checksum offload was not negotiated".into(),
                ));
            }
            flags |= NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED;
        }
        if meta.data_validated {
            flags |= NETTXF_DATA_VALIDATED;
        }
        let gso = match meta.gso {
            None => None,
            Some(g) => {
                let (ok, type_) = match g.kind {
                    GsoKind::TcpV4 => (self.info.gso_tcpv4, XEN_NETIF_GSO_TYPE_TCPV4),
                    GsoKind::TcpV6 => (self.info.gso_tcpv6, XEN_NETIF_GSO_TYPE_TCPV6),
                };
                if !ok || g.mss == 0 {
                    return Err(Error::Invalid(format!(
                        "{:?} GSO with MSS {} (negotiated: tcpv4 {}, tcpv6 {})",
                        g.kind, g.mss, self.info.gso_tcpv4, self.info.gso_tcpv6
                    )));
                }
                Some(NetifExtraGso {
                    size: g.mss,
                    type_,
                    pad: 0,
                    features: 0,
                })
            }
        };
        self.send_with(frame, flags, gso)
    }

    fn send_with(&mut self, frame: &[u8], flags: u16, gso: Option<NetifExtraGso>) -> Result<bool> {
        self.check_frame(frame.len())?;
        let qi = self.pick_queue(frame);
        let mut layout = std::mem::take(&mut self.layout);
        layout_into(
            &mut layout,
            frame.len(),
            self.options.max_slot_bytes,
            self.options.tx_offset,
        );
        let r = self.send_laid_out(frame, &layout, flags, gso, qi);
        self.layout = layout;
        r
    }

    fn send_laid_out(
        &mut self,
        frame: &[u8],
        layout: &[(u16, usize)],
        flags: u16,
        gso: Option<NetifExtraGso>,
        qi: usize,
    ) -> Result<bool> {
        let need = layout.len() + usize::from(gso.is_some());
        let q = &mut self.queues[qi];
        if q.tx.free_slots() < need {
            q.tx.reap(self.backend_id, &self.counters)?;
            if q.tx.free_slots() < need {
                return Ok(false);
            }
        }
        q.send(frame, layout, flags, gso, &self.counters)?;
        add(&self.counters.tx_packets, 1);
        add(&self.counters.tx_bytes, frame.len() as u64);
        add(&self.counters.tx_slots, need as u64);
        Ok(true)
    }

    // ------------------------------------------------------------ rx

    /// Take one received frame, if any, into `out` (replacing its contents),
    /// looking at the queues in turn; the buffers it used are posted again at
    /// once. `Ok(false)`: nothing has arrived (see [`NetFront::wait`]).
    /// Packets the backend described badly are dropped and counted
    /// ([`Counters::rx_errors`](crate::Counters::rx_errors)), not errors.
    ///
    /// # Errors
    ///
    /// [`Error::Ring`] when the backend broke a ring, [`Error::Platform`]
    /// when a notification or the store fails; and, when the backend went away and the frontend reconnects, the errors
    /// of [`NetFront::connect`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use xenio_netfront::{NetFront, Options};
    /// use xenio_xenbus::DomId;
    /// use xenio_xenbus::handshake::{DeviceKind, DevicePaths};
    /// use xenio_xenbus::platform::{InProcess, Platform};
    ///
    /// // Two domains as threads of this process: domain 0 serves interface 0 of
    /// // domain 1 (xenio's netback, with frames kept in memory).
    /// let world = InProcess::new()?;
    /// let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vif, 0);
    /// # let dom0 = world.domain(DomId(0))?;
    /// # xenio_xenbus::handshake::create_device(dom0.store(), &paths, &[])?;
    /// # let network = xenio_netback::MemNetwork::default();
    /// # let frames = network.frames.clone();
    /// # let backend_dir = paths.backend.clone();
    /// # let backend = std::thread::spawn(move || {
    /// #     let config = xenio_netback::BackendConfig { once: true, ..Default::default() };
    /// #     let (counters, stop) = (Default::default(), Default::default());
    /// #     xenio_netback::serve(&dom0, &backend_dir, &network, &config, &counters, &stop)
    /// # });
    /// let guest = Arc::new(world.domain(DomId(1))?);
    /// let mut nic = NetFront::connect(guest, &paths.frontend, Options::default())?;
    /// # frames.incoming.lock().unwrap().push_back(vec![0xab; 60]);
    /// // The backend has a frame for us (from its network).
    /// let mut frame = Vec::new();
    /// while !nic.recv(&mut frame)? {
    ///     nic.wait(Duration::from_millis(100))?;
    /// }
    /// assert_eq!(frame, [0xab; 60]);
    /// nic.close()?;
    /// # backend.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv(&mut self, out: &mut Vec<u8>) -> Result<bool> {
        Ok(self.recv_packet(out)?.is_some())
    }

    /// As [`NetFront::recv`], with the packet's offload metadata: with
    /// [`Options::csum_offload`] a packet may come with its checksum blank
    /// (`csum_blank`: the host left it; trust it or finish it), and with
    /// [`Options::gso`] as one TCP segment of up to 64 KiB (`gso`).
    /// `Ok(None)`: nothing has arrived.
    ///
    /// # Errors
    ///
    /// As [`NetFront::recv`].
    pub fn recv_packet(&mut self, out: &mut Vec<u8>) -> Result<Option<PacketMeta>> {
        let n = self.queues.len();
        for k in 0..n {
            let qi = (self.next_rx_queue + k) % n;
            if let Some(meta) = self.queues[qi].recv(out, &self.counters)? {
                self.next_rx_queue = (qi + 1) % n;
                return Ok(Some(meta));
            }
        }
        // Nothing came: every 16th time, see whether the backend is still there
        // (at most every 200 ms; reading the clock on every call costs).
        self.idle_recvs = self.idle_recvs.wrapping_add(1);
        if self.idle_recvs % 16 == 0 && self.last_check.elapsed() > Duration::from_millis(200) {
            self.last_check = Instant::now();
            self.check_backend()?;
        }
        Ok(None)
    }

    // ------------------------------------------------------------ waiting

    /// Sleep until the backend notifies (or `max` passes, at most a second);
    /// returns at once if a ring already has responses. Reconnects if the
    /// backend went away.
    ///
    /// # Errors
    ///
    /// [`Error::Platform`] when polling the event channels fails,
    /// [`Error::Ring`] when the backend broke a ring; and, when the backend went away and the frontend reconnects, the errors
    /// of [`NetFront::connect`].
    pub fn wait(&mut self, max: Duration) -> Result<()> {
        for q in &mut self.queues {
            if q.rx.has_unpublished() {
                q.publish_rx(&self.counters)?;
            }
        }
        for q in &mut self.queues {
            if q.final_check(self.backend_id, &self.counters)? {
                return Ok(());
            }
        }
        add(&self.counters.sleeps, 1);
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds: Vec<PollFd<'_>> = self
            .queues
            .iter()
            .flat_map(|q| q.channels())
            .map(|c| PollFd::new(c.as_fd(), PollFlags::POLLIN))
            .collect();
        let ms = max.as_millis().clamp(0, 1000) as u16;
        let fired = match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) => n > 0,
            Err(nix::errno::Errno::EINTR) => true,
            Err(e) => {
                return Err(Error::Platform(xenio_xenbus::Error::io(
                    "poll",
                    std::io::Error::from(e),
                )));
            }
        };
        drop(fds);
        if fired {
            for c in self.queues.iter().flat_map(|q| q.channels()) {
                c.take_pending()?;
            }
        }
        // A dead backend's channels may poll ready for ever: look at its state
        // when idle, and at least every 200 ms.
        if !fired || self.last_check.elapsed() > Duration::from_millis(200) {
            self.last_check = Instant::now();
            self.check_backend()?;
        }
        Ok(())
    }

    /// If the backend left `Connected`, reconnect (the handshake again, fresh
    /// rings; frames in flight are lost, as on a real link). A backend that
    /// closes the device for good (Closing or Closed with `online` 0, or its
    /// directory removed) is answered as Linux's netfront does (Closing, then
    /// Closed) and is an error: the frontend does not wait for it.
    ///
    /// # Errors
    ///
    /// [`Error::Platform`] when the store fails; [`Error::Backend`] when the
    /// backend closed the device for good; and, when the backend went away
    /// and the frontend reconnects, the errors of [`NetFront::connect`].
    pub fn check_backend(&mut self) -> Result<()> {
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
            return Ok(());
        }
        if matches!(
            state,
            XenbusState::Closing | XenbusState::Closed | XenbusState::Unknown
        ) {
            // A backend whose directory is gone (Unknown: the toolstack, or
            // a backend that created the device, removed it) is gone; its
            // `online` can no longer be read (xenstored says EACCES under a
            // removed directory), nor this device's directory.
            let gone = state == XenbusState::Unknown
                || self
                    .platform
                    .store()
                    .read_opt(Tx::NONE, &format!("{}/{}", self.backend_dir, keys::ONLINE))?
                    .is_some_and(|v| v.trim() == "0");
            if state != XenbusState::Unknown {
                let ep = Endpoint::frontend(self.platform.store(), &self.dir)?;
                ep.switch(XenbusState::Closing, &[])?;
                ep.switch(XenbusState::Closed, &[])?;
            }
            if gone {
                // Said Closed already: nothing more to say when dropped.
                self.closed = true;
                tracing::info!("backend {} closed the device", self.backend_dir);
                return Err(Error::Backend {
                    backend: self.backend_id,
                    what: format!("closed the device ({state:?})"),
                });
            }
        }
        tracing::info!(
            "backend {} went to {state:?}: reconnecting",
            self.backend_dir
        );
        add(&self.counters.reconnects, 1);
        self.handshake()
    }

    /// Tear down: Closing, wait for the backend, Closed.
    ///
    /// # Errors
    ///
    /// [`Error::Platform`] when the store fails or the backend does not go to
    /// `Closing` or `Closed` within [`Options::timeout`].
    pub fn close(mut self) -> Result<()> {
        self.closed = true;
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

    /// Frames (sent, received) per queue since connecting.
    pub fn queue_frames(&self) -> Vec<(u64, u64)> {
        self.queues
            .iter()
            .map(|q| (q.tx.frames, q.rx.frames))
            .collect()
    }

    /// The grant references of queue `q`'s rx buffers (tests).
    pub fn rx_buffer_refs(&self, q: usize) -> &[GrantRef] {
        self.queues[q].rx.buffer_refs()
    }

    /// The buffer smoltcp's frames are built in, kept between sends.
    pub(crate) fn scratch(&mut self) -> &mut Vec<u8> {
        &mut self.scratch
    }
}

/// A frontend dropped without [`NetFront::close`] says Closed (best effort,
/// without waiting, and only while its directory is there), so that its
/// backend does not wait for it.
impl<P: Platform> Drop for NetFront<P> {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        // Not into a directory the toolstack (or the backend) removed.
        let state = format!("{}/{}", self.dir, keys::STATE);
        if !matches!(
            self.platform.store().read_opt(Tx::NONE, &state),
            Ok(Some(_))
        ) {
            return;
        }
        if let Ok(ep) = Endpoint::frontend(self.platform.store(), &self.dir) {
            let _ = ep.switch(XenbusState::Closed, &[]);
        }
    }
}
