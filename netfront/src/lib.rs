//! The netif frontend, as a library: connect to any netif backend through the
//! XenbusState handshake, then send and receive Ethernet frames through the
//! shared tx and rx rings; [`NetFront`] also implements smoltcp's
//! [`phy::Device`], so a user gets a TCP/IP stack over a Xen vif.
//!
//! Per queue, the frontend grants one page per tx ring slot (read-only: frames
//! are copied into them) and one page per rx ring slot (read-write: the backend
//! copies received frames into them, `request-rx-copy`). The rx ring is kept
//! full: every buffer the backend fills is copied out and posted again at once.
//! As in Linux's netfront, the rx request at ring index `i` has id
//! `i % ring size` and uses buffer page `i % ring size`.
//!
//! Nothing the backend writes is trusted: a response for a slot not in flight,
//! an rx response whose offset and size run past its page, or a packet longer
//! than any frame is counted and dropped, never a panic. When the backend goes
//! away and comes back (its `state` leaves `Connected`), the frontend
//! reconnects; frames in flight at that moment are lost, as on a real link.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use smoltcp::phy;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use xenio_ring::FrontRing;
use xenio_xen_sys::netif::*;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xen_sys::{DomId, GrantRef};
use xenio_xenbus::handshake::Endpoint;
use xenio_xenbus::platform::Platform;
use xenio_xenbus::{
    Access, EventChannel, EventChannels, GrantTable, Granted, Region, Store, Tx, Watch,
};

const PAGE: usize = 4096;
/// Largest frame the protocol can describe.
pub const MAX_FRAME: usize = XEN_NETIF_MAX_TX_SIZE;

/// What can go wrong in the frontend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The platform (store, grants, event channels) failed.
    #[error(transparent)]
    Platform(#[from] xenio_xenbus::Error),
    /// A ring failed; a broken ring means the backend wrote nonsense.
    #[error(transparent)]
    Ring(#[from] xenio_ring::RingError),
    /// The backend answered something impossible.
    #[error("backend {backend} misbehaved: {what}")]
    Backend {
        /// The backend domain.
        backend: DomId,
        /// What it did.
        what: String,
    },
    /// A key is missing or malformed.
    #[error("key {key}: {problem}")]
    BadKey {
        /// Which key.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// The frame cannot be sent (size, features).
    #[error("invalid frame: {0}")]
    Invalid(String),
}

impl From<xenio_xenbus::xenstore::Error> for Error {
    fn from(e: xenio_xenbus::xenstore::Error) -> Self {
        Error::Platform(e.into())
    }
}

/// Results of netfront.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the frontend asks for; the backend's features cap each.
#[derive(Clone, Debug)]
pub struct Options {
    /// Queues to use (capped by `multi-queue-max-queues`).
    pub queues: u32,
    /// Use split event channels if the backend offers them.
    pub split_event_channels: bool,
    /// Advertise `feature-sg` (receive frames over several buffers) and send
    /// frames over several slots when they need it (if the backend offers it).
    pub sg: bool,
    /// Most bytes per tx slot (at most 4096). Smaller values make every larger
    /// frame a multi-slot packet (tests, fragment handling).
    pub max_slot_bytes: usize,
    /// Offset of each frame's first fragment in its page (tests).
    pub tx_offset: u16,
    /// The MAC address; default: the toolstack's `mac` key, else 00:16:3e:00:00:01.
    pub mac: Option<[u8; 6]>,
    /// How long to wait for the backend at each handshake step.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            queues: 1,
            split_event_channels: true,
            sg: true,
            max_slot_bytes: PAGE,
            tx_offset: 0,
            mac: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What was negotiated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// Queues in use.
    pub queues: u32,
    /// Multi-slot packets in both directions.
    pub sg: bool,
    /// Two event channels per queue.
    pub split_event_channels: bool,
    /// The MTU (the `mtu` key, default 1500).
    pub mtu: usize,
    /// The MAC address.
    pub mac: [u8; 6],
}

/// Counters (read them any time).
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames put on the tx rings.
    pub tx_packets: AtomicU64,
    /// Their bytes.
    pub tx_bytes: AtomicU64,
    /// Tx slots used.
    pub tx_slots: AtomicU64,
    /// Tx packets the backend answered with an error or dropped.
    pub tx_errors: AtomicU64,
    /// Frames received.
    pub rx_packets: AtomicU64,
    /// Their bytes.
    pub rx_bytes: AtomicU64,
    /// Rx slots consumed.
    pub rx_slots: AtomicU64,
    /// Received packets dropped (error status, bad offset or size, too long).
    pub rx_errors: AtomicU64,
    /// Notifications sent to the backend (tx and rx channels).
    pub notifications: AtomicU64,
    /// Times [`NetFront::wait`] slept on the event channels.
    pub sleeps: AtomicU64,
    /// Reconnections to a new backend.
    pub reconnects: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A received packet being put together.
#[derive(Default)]
struct RxPartial {
    data: Vec<u8>,
    slots: usize,
    bad: Option<String>,
    /// Extra-info slots still to come.
    extras: bool,
    /// The last data slot said `NETRXF_more_data`.
    more: bool,
    started: bool,
}

struct Queue<G: Granted, C: EventChannel> {
    tx_ring_grant: G,
    rx_ring_grant: G,
    tx: FrontRing<NetifTxRequest, NetifTxResponse, Arc<Region>>,
    rx: FrontRing<NetifRxRequest, NetifRxResponse, Arc<Region>>,
    tx_channel: C,
    rx_channel: Option<C>,
    /// One page per tx id, granted read-only.
    tx_pages: G,
    tx_free: Vec<u16>,
    tx_busy: Vec<bool>,
    /// One page per rx id, granted read-write.
    rx_pages: G,
    partial: RxPartial,
    /// Frames sent and received on this queue.
    tx_frames: u64,
    rx_frames: u64,
    /// Rx buffers posted again but not yet published.
    rx_unpublished: u32,
}

type PlatformQueue<P> = Queue<
    <<P as Platform>::Grants as GrantTable>::Granted,
    <<P as Platform>::Events as EventChannels>::Channel,
>;

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
    scratch: Vec<u8>,
    /// When the backend's state was last looked at.
    last_check: std::time::Instant,
    /// Calls of `recv` that found nothing.
    idle_recvs: u32,
}

fn bad_key(key: &str, problem: impl Into<String>) -> Error {
    Error::BadKey {
        key: key.to_string(),
        problem: problem.into(),
    }
}

fn parse_key<T: std::str::FromStr>(v: Option<String>, key: &str, default: T) -> Result<T> {
    match v {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| bad_key(key, format!("not a number: {v:?}"))),
    }
}

/// Parse `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

impl<P: Platform> NetFront<P> {
    /// Connect the frontend whose store directory is `dir`
    /// (`/local/domain/<me>/device/vif/<devid>`, created by the toolstack).
    pub fn connect(platform: Arc<P>, dir: &str, options: Options) -> Result<Self> {
        let store = platform.store();
        let backend_dir = store.read_string(Tx::NONE, &format!("{dir}/backend"))?;
        let backend_id = DomId(parse_key::<u16>(
            Some(store.read_string(Tx::NONE, &format!("{dir}/backend-id"))?),
            "backend-id",
            0,
        )?);
        let watch = store.watch(&format!("{backend_dir}/state"), "netfront-backend-state")?;
        let mut front = NetFront {
            dir: dir.to_string(),
            backend_dir,
            backend_id,
            info: Info {
                queues: 1,
                sg: false,
                split_event_channels: false,
                mtu: 1500,
                mac: [0x00, 0x16, 0x3e, 0, 0, 1],
            },
            queues: Vec::new(),
            watch,
            counters: Arc::new(Counters::default()),
            next_rx_queue: 0,
            tx_flags: 0,
            scratch: Vec::new(),
            last_check: std::time::Instant::now(),
            idle_recvs: 0,
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

    fn handshake(&mut self) -> Result<()> {
        let timeout = self.options.timeout;
        let platform = self.platform.clone();
        let mut ep = Endpoint::frontend(platform.store(), &self.dir)?;
        ep.switch(XenbusState::Initialising, &[])?;
        ep.wait_peer(timeout, |s| s == XenbusState::InitWait)?;
        let key = |k: &str| ep.peer_key(k);
        let flag = |k: &str| -> Result<bool> { Ok(parse_key::<u32>(key(k)?, k, 0)? == 1) };
        if !flag("feature-rx-copy")? {
            return Err(bad_key(
                "feature-rx-copy",
                "the backend cannot copy into posted buffers",
            ));
        }
        let max_queues: u32 =
            parse_key(key("multi-queue-max-queues")?, "multi-queue-max-queues", 1)?;
        let nqueues = self.options.queues.clamp(1, max_queues.max(1));
        let split = self.options.split_event_channels && flag("feature-split-event-channels")?;
        let sg = self.options.sg && flag("feature-sg")?;
        let own = |k: &str| ep.own_key(k);
        let mtu: usize = parse_key(own("mtu")?, "mtu", 1500)?;
        let mac = match (self.options.mac, own("mac")?) {
            (Some(m), _) => m,
            (None, Some(s)) => parse_mac(&s).ok_or_else(|| bad_key("mac", s.clone()))?,
            (None, None) => [0x00, 0x16, 0x3e, 0, 0, 1],
        };
        drop(ep);

        let grants = self.platform.grants()?;
        let events = self.platform.events();
        let be = self.backend_id;
        if self.queues.len() != nqueues as usize {
            self.queues.clear();
            for _ in 0..nqueues {
                let tx_ring_grant = grants.grant(be, 1, Access::ReadWrite)?;
                let rx_ring_grant = grants.grant(be, 1, Access::ReadWrite)?;
                let tx = FrontRing::init(tx_ring_grant.region().clone())?;
                let rx = FrontRing::init(rx_ring_grant.region().clone())?;
                let (ts, rs) = (tx.size() as usize, rx.size() as usize);
                self.queues.push(Queue {
                    tx_pages: grants.grant(be, ts, Access::ReadOnly)?,
                    rx_pages: grants.grant(be, rs, Access::ReadWrite)?,
                    tx_free: (0..ts as u16).rev().collect(),
                    tx_busy: vec![false; ts],
                    tx_ring_grant,
                    rx_ring_grant,
                    tx,
                    rx,
                    tx_channel: events.alloc_unbound(be)?,
                    rx_channel: if split {
                        Some(events.alloc_unbound(be)?)
                    } else {
                        None
                    },
                    partial: RxPartial::default(),
                    tx_frames: 0,
                    rx_frames: 0,
                    rx_unpublished: 0,
                });
            }
        } else {
            // Reconnecting with the same geometry: fresh rings in the same pages.
            for q in &mut self.queues {
                q.tx = FrontRing::init(q.tx_ring_grant.region().clone())?;
                q.rx = FrontRing::init(q.rx_ring_grant.region().clone())?;
                q.tx_channel = events.alloc_unbound(be)?;
                q.rx_channel = if split {
                    Some(events.alloc_unbound(be)?)
                } else {
                    None
                };
                let ts = q.tx_busy.len();
                q.tx_free = (0..ts as u16).rev().collect();
                q.tx_busy.fill(false);
                q.partial = RxPartial::default();
                q.rx_unpublished = 0;
            }
        }
        // Post every rx buffer.
        for q in &mut self.queues {
            for _ in 0..q.rx.size() {
                let idx = q.rx.req_prod_pvt();
                let id = (idx & (q.rx.size() - 1)) as u16;
                q.rx.push_request(&NetifRxRequest {
                    id,
                    pad: 0,
                    gref: q.rx_pages.refs()[id as usize].0,
                })?;
            }
            q.rx.push_requests();
        }

        let mut keys: Vec<(String, String)> = Vec::new();
        let one = |prefix: &str, q: &PlatformQueue<P>, keys: &mut Vec<(String, String)>| {
            keys.push((
                format!("{prefix}tx-ring-ref"),
                q.tx_ring_grant.refs()[0].0.to_string(),
            ));
            keys.push((
                format!("{prefix}rx-ring-ref"),
                q.rx_ring_grant.refs()[0].0.to_string(),
            ));
            match &q.rx_channel {
                Some(rx) => {
                    keys.push((
                        format!("{prefix}event-channel-tx"),
                        q.tx_channel.port().0.to_string(),
                    ));
                    keys.push((format!("{prefix}event-channel-rx"), rx.port().0.to_string()));
                }
                None => keys.push((
                    format!("{prefix}event-channel"),
                    q.tx_channel.port().0.to_string(),
                )),
            }
        };
        if nqueues > 1 {
            keys.push(("multi-queue-num-queues".into(), nqueues.to_string()));
            for (i, q) in self.queues.iter().enumerate() {
                one(&format!("queue-{i}/"), q, &mut keys);
            }
        } else {
            one("", &self.queues[0], &mut keys);
        }
        keys.push(("request-rx-copy".into(), "1".into()));
        keys.push(("feature-rx-notify".into(), "1".into()));
        keys.push(("feature-sg".into(), u8::from(self.options.sg).to_string()));
        keys.push(("feature-gso-tcpv4".into(), "0".into()));
        keys.push(("feature-gso-tcpv6".into(), "0".into()));
        keys.push(("feature-no-csum-offload".into(), "1".into()));
        let mut ep = Endpoint::frontend(platform.store(), &self.dir)?;
        let refs: Vec<(&str, String)> = keys.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        // Straight to Connected with the keys, as Linux's xen-netfront does: Linux's
        // xen-netback ignores Initialised and connects only when the frontend says
        // Connected (found in the Xen lab: it stayed in InitWait).
        ep.switch(XenbusState::Connected, &refs)?;
        ep.wait_peer(timeout, |s| s == XenbusState::Connected)?;
        self.info = Info {
            queues: nqueues,
            sg,
            split_event_channels: split,
            mtu,
            mac,
        };
        // Tell the backend the rx buffers are there.
        for q in &self.queues {
            match &q.rx_channel {
                Some(c) => c.notify()?,
                None => q.tx_channel.notify()?,
            }
            add(&self.counters.notifications, 1);
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

    /// The fragments of a frame of `len` bytes: (offset in page, bytes).
    fn layout(&self, len: usize) -> Vec<(u16, usize)> {
        layout(len, self.options.max_slot_bytes, self.options.tx_offset)
    }

    /// How many fragments [`NetFront::layout`] gives, without building them.
    fn slots_for(&self, len: usize) -> usize {
        slot_count(len, self.options.max_slot_bytes, self.options.tx_offset)
    }

    /// Slots a frame of `len` bytes takes, or why it cannot be sent.
    fn check_frame(&self, len: usize) -> Result<usize> {
        if len == 0 || len > MAX_FRAME {
            return Err(Error::Invalid(format!(
                "{len} bytes (a frame has 1 to {MAX_FRAME})"
            )));
        }
        let n = self.slots_for(len);
        if n > 1 && !self.info.sg {
            return Err(Error::Invalid(format!(
                "{len} bytes need {n} slots, and feature-sg was not negotiated"
            )));
        }
        if n > XEN_NETIF_NR_SLOTS_MIN {
            return Err(Error::Invalid(format!(
                "{len} bytes need {n} slots (at most {XEN_NETIF_NR_SLOTS_MIN})"
            )));
        }
        Ok(n)
    }

    /// Free the tx slots the backend answered.
    fn reap_tx(&mut self, qi: usize) -> Result<()> {
        let backend = self.backend_id;
        let q = &mut self.queues[qi];
        while let Some(r) = q.tx.take_response()? {
            if r.status == NETIF_RSP_NULL {
                // The answer to an extra-info slot; we send none.
                continue;
            }
            let id = usize::from(r.id);
            if id >= q.tx_busy.len() || !q.tx_busy[id] {
                return Err(Error::Backend {
                    backend,
                    what: format!("tx response for id {id}, which is not in flight"),
                });
            }
            q.tx_busy[id] = false;
            q.tx_free.push(r.id);
            if r.status != NETIF_RSP_OKAY {
                add(&self.counters.tx_errors, 1);
            }
        }
        Ok(())
    }

    /// Whether a frame of `len` bytes can be sent now without waiting.
    pub fn can_send(&mut self, len: usize) -> Result<bool> {
        let n = self.check_frame(len)?;
        for qi in 0..self.queues.len() {
            if self.queues[qi].tx_free.len() < n {
                self.reap_tx(qi)?;
            }
        }
        Ok(self.queues.iter().all(|q| q.tx_free.len() >= n))
    }

    /// Put a frame on a tx ring. `Ok(false)`: the ring is full right now (wait
    /// for the backend, then try again).
    pub fn send(&mut self, frame: &[u8]) -> Result<bool> {
        self.check_frame(frame.len())?;
        let qi = self.pick_queue(frame);
        let layout = self.layout(frame.len());
        if self.queues[qi].tx_free.len() < layout.len() {
            self.reap_tx(qi)?;
            if self.queues[qi].tx_free.len() < layout.len() {
                return Ok(false);
            }
        }
        let flags0 = self.tx_flags;
        let q = &mut self.queues[qi];
        let mut pos = 0;
        let last = layout.len() - 1;
        for (k, &(off, n)) in layout.iter().enumerate() {
            let id = q.tx_free.pop().expect("checked above");
            q.tx_busy[usize::from(id)] = true;
            q.tx_pages.region().write(
                usize::from(id) * PAGE + usize::from(off),
                &frame[pos..pos + n],
            )?;
            pos += n;
            let mut flags = if k < last { NETTXF_MORE_DATA } else { 0 };
            if k == 0 {
                flags |= flags0;
            }
            q.tx.push_request(&NetifTxRequest {
                gref: q.tx_pages.refs()[usize::from(id)].0,
                offset: off,
                flags,
                id,
                size: if k == 0 { frame.len() as u16 } else { n as u16 },
            })?;
        }
        if q.tx.push_requests_and_check_notify().is_required() {
            q.tx_channel.notify()?;
            add(&self.counters.notifications, 1);
        }
        q.tx_frames += 1;
        add(&self.counters.tx_packets, 1);
        add(&self.counters.tx_bytes, frame.len() as u64);
        add(&self.counters.tx_slots, layout.len() as u64);
        Ok(true)
    }

    // ------------------------------------------------------------ rx

    /// Take one received frame, if any, into `out` (replacing its contents).
    pub fn recv(&mut self, out: &mut Vec<u8>) -> Result<bool> {
        let n = self.queues.len();
        for k in 0..n {
            let qi = (self.next_rx_queue + k) % n;
            if self.recv_on(qi, out)? {
                self.next_rx_queue = (qi + 1) % n;
                return Ok(true);
            }
        }
        // Nothing came: every 16th time, see whether the backend is still there
        // (at most every 200 ms; reading the clock on every call costs).
        self.idle_recvs = self.idle_recvs.wrapping_add(1);
        if self.idle_recvs % 16 == 0 && self.last_check.elapsed() > Duration::from_millis(200) {
            self.last_check = std::time::Instant::now();
            self.check_backend()?;
        }
        Ok(false)
    }

    fn recv_on(&mut self, qi: usize, out: &mut Vec<u8>) -> Result<bool> {
        let max_slots = XEN_NETIF_NR_SLOTS_MIN + XEN_NETIF_EXTRA_TYPE_MAX as usize;
        let q = &mut self.queues[qi];
        let size = q.rx.size();
        let mut reposted = false;
        let mut result = false;
        loop {
            let idx = q.rx.rsp_cons();
            let Some(r) = q.rx.take_response()? else {
                break;
            };
            let slot = (idx & (size - 1)) as u16;
            add(&self.counters.rx_slots, 1);
            let p = &mut q.partial;
            p.slots += 1;
            let first = !p.started;
            p.started = true;
            if !first && p.extras {
                let e = r.as_extra_info();
                p.extras = e.flags & XEN_NETIF_EXTRA_FLAG_MORE != 0;
            } else {
                p.more = r.flags & NETRXF_MORE_DATA != 0;
                if first && r.flags & NETRXF_EXTRA_INFO != 0 {
                    p.extras = true;
                }
                if r.id != slot {
                    p.bad.get_or_insert(format!(
                        "rx response id {} at ring slot {slot} (ids follow the slots)",
                        r.id
                    ));
                } else if r.status <= 0 {
                    p.bad
                        .get_or_insert(format!("rx response status {}", r.status));
                } else {
                    let (off, len) = (usize::from(r.offset), r.status as usize);
                    if off + len > PAGE {
                        p.bad.get_or_insert(format!(
                            "rx response of {len} bytes at offset {off} runs past its page"
                        ));
                    } else if p.data.len() + len > MAX_FRAME {
                        p.bad
                            .get_or_insert(format!("rx packet longer than {MAX_FRAME} bytes"));
                    } else {
                        let at = p.data.len();
                        p.data.resize(at + len, 0);
                        q.rx_pages
                            .region()
                            .read(usize::from(slot) * PAGE + off, &mut p.data[at..])?;
                    }
                }
            }
            if p.slots > max_slots {
                p.bad
                    .get_or_insert(format!("rx packet over more than {max_slots} slots"));
            }
            let more = p.extras || p.more;
            // Post the buffer again (same slot modulo the ring size: the ring is full).
            let pidx = q.rx.req_prod_pvt();
            let pid = (pidx & (size - 1)) as u16;
            q.rx.push_request(&NetifRxRequest {
                id: pid,
                pad: 0,
                gref: q.rx_pages.refs()[usize::from(pid)].0,
            })?;
            reposted = true;
            q.rx_unpublished += 1;
            let p = &mut q.partial;
            if !more {
                let done = std::mem::take(p);
                match done.bad {
                    Some(why) => {
                        tracing::debug!("dropping a received packet: {why}");
                        add(&self.counters.rx_errors, 1);
                    }
                    None => {
                        q.rx_frames += 1;
                        add(&self.counters.rx_packets, 1);
                        add(&self.counters.rx_bytes, done.data.len() as u64);
                        *out = done.data;
                        result = true;
                        break;
                    }
                }
            }
        }
        // Publish the buffers in batches, and whenever the backend has nothing
        // more for us (it may be waiting for them).
        if reposted && (q.rx_unpublished >= 32 || q.rx.unconsumed_responses()? == 0) {
            Self::publish_rx(q, &self.counters)?;
        }
        Ok(result)
    }

    fn publish_rx(q: &mut PlatformQueue<P>, counters: &Counters) -> Result<()> {
        q.rx_unpublished = 0;
        if q.rx.push_requests_and_check_notify().is_required() {
            match &q.rx_channel {
                Some(c) => c.notify()?,
                None => q.tx_channel.notify()?,
            }
            add(&counters.notifications, 1);
        }
        Ok(())
    }

    // ------------------------------------------------------------ waiting

    /// Sleep until the backend notifies (or `max` passes); returns at once if a
    /// ring already has responses. Reconnects if the backend went away.
    pub fn wait(&mut self, max: Duration) -> Result<()> {
        for q in &mut self.queues {
            if q.rx_unpublished > 0 {
                Self::publish_rx(q, &self.counters)?;
            }
        }
        for qi in 0..self.queues.len() {
            if self.queues[qi].rx.final_check_for_responses()? {
                return Ok(());
            }
            let q = &mut self.queues[qi];
            if q.tx_free.len() < q.tx_busy.len() && q.tx.final_check_for_responses()? {
                return Ok(());
            }
        }
        add(&self.counters.sleeps, 1);
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let mut fds = Vec::new();
        for q in &self.queues {
            fds.push(PollFd::new(q.tx_channel.as_fd(), PollFlags::POLLIN));
            if let Some(c) = &q.rx_channel {
                fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
            }
        }
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
            for q in &self.queues {
                q.tx_channel.take_pending()?;
                if let Some(c) = &q.rx_channel {
                    c.take_pending()?;
                }
            }
        }
        // A dead backend's channels may poll ready for ever: look at its state
        // when idle, and at least every 200 ms.
        if !fired || self.last_check.elapsed() > Duration::from_millis(200) {
            self.last_check = std::time::Instant::now();
            self.check_backend()?;
        }
        Ok(())
    }

    /// If the backend left `Connected`, reconnect.
    pub fn check_backend(&mut self) -> Result<()> {
        let mut changed = false;
        while self.watch.next_event(Some(Duration::ZERO))?.is_some() {
            changed = true;
        }
        if !changed {
            return Ok(());
        }
        let state = xenio_xenbus::handshake::read_state(
            self.platform.store(),
            &format!("{}/state", self.backend_dir),
        )?;
        if state == XenbusState::Connected {
            return Ok(());
        }
        tracing::info!(
            "backend {} went to {state:?}: reconnecting",
            self.backend_dir
        );
        add(&self.counters.reconnects, 1);
        self.handshake()
    }

    /// Tear down: Closing, wait for the backend, Closed.
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

    /// Frames (sent, received) per queue since connecting.
    pub fn queue_frames(&self) -> Vec<(u64, u64)> {
        self.queues
            .iter()
            .map(|q| (q.tx_frames, q.rx_frames))
            .collect()
    }

    /// The grant references of queue `q`'s rx buffers (tests).
    pub fn rx_buffer_refs(&self, q: usize) -> &[GrantRef] {
        self.queues[q].rx_pages.refs()
    }
}

// ---------------------------------------------------------------- smoltcp

/// A received frame, for smoltcp.
pub struct RxToken(Vec<u8>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

/// Room for one frame on the tx ring, for smoltcp.
pub struct TxToken<'a, P: Platform>(&'a mut NetFront<P>);

impl<P: Platform> phy::TxToken for TxToken<'_, P> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = std::mem::take(&mut self.0.scratch);
        buf.clear();
        buf.resize(len, 0);
        let r = f(&mut buf);
        match self.0.send(&buf) {
            Ok(true) => {}
            Ok(false) => add(&self.0.counters.tx_errors, 1),
            Err(e) => {
                tracing::debug!("smoltcp frame not sent: {e}");
                add(&self.0.counters.tx_errors, 1);
            }
        }
        self.0.scratch = buf;
        r
    }
}

impl<P: Platform> phy::Device for NetFront<P> {
    type RxToken<'a>
        = RxToken
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a, P>
    where
        Self: 'a;

    fn receive(
        &mut self,
        _timestamp: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let mut frame = Vec::new();
        match self.recv(&mut frame) {
            Ok(true) => Some((RxToken(frame), TxToken(self))),
            Ok(false) => None,
            Err(e) => {
                tracing::warn!("netfront receive: {e}");
                None
            }
        }
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        let max = self.info.mtu + 14;
        match self.can_send(max) {
            Ok(true) => Some(TxToken(self)),
            _ => None,
        }
    }

    fn capabilities(&self) -> phy::DeviceCapabilities {
        let mut caps = phy::DeviceCapabilities::default();
        caps.medium = phy::Medium::Ethernet;
        caps.max_transmission_unit = self.info.mtu + 14;
        caps.max_burst_size = None;
        caps
    }
}

pub mod stack;

/// The tx fragments of a frame of `len` bytes, at most `max_slot` bytes each,
/// the first at `offset` in its page: (offset in page, bytes).
fn layout(len: usize, max_slot: usize, offset: u16) -> Vec<(u16, usize)> {
    let max = max_slot.clamp(1, PAGE);
    let first_off = usize::from(offset) % PAGE;
    let mut out = Vec::new();
    let first = len.min(max).min(PAGE - first_off);
    out.push((first_off as u16, first));
    let mut left = len - first;
    while left > 0 {
        let n = left.min(max);
        out.push((0, n));
        left -= n;
    }
    out
}

/// `layout(len, max_slot, offset).len()`, computed.
fn slot_count(len: usize, max_slot: usize, offset: u16) -> usize {
    let max = max_slot.clamp(1, PAGE);
    let first_off = usize::from(offset) % PAGE;
    let first = len.min(max).min(PAGE - first_off);
    1 + (len - first).div_ceil(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_count_matches_the_layout() {
        for (max, off) in [
            (4096usize, 0u16),
            (200, 3),
            (256, 100),
            (1, 0),
            (4096, 4095),
            (9000, 7),
        ] {
            for len in [
                1usize, 13, 60, 199, 200, 201, 1514, 4095, 4096, 4097, 9014, 65535,
            ] {
                let l = layout(len, max, off);
                assert_eq!(
                    slot_count(len, max, off),
                    l.len(),
                    "len {len} max {max} off {off}"
                );
                assert_eq!(l.iter().map(|f| f.1).sum::<usize>(), len);
                assert!(
                    l.iter()
                        .all(|&(o, n)| usize::from(o) + n <= PAGE && n <= max.max(1))
                );
            }
        }
    }
}
