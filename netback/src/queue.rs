//! One queue's event loop: the tx ring (frontend -> network) and the rx ring
//! (network -> frontend) of one queue, on one thread.
//!
//! tx: take what the frontend published, assemble packets ([`crate::tx::parse`]
//! on the copies), grant-copy every fragment of the batch in one call into one
//! buffer kept across batches, check the offloads each packet asks for
//! ([`crate::offload::tx_meta`]: checksums the network cannot leave undone are
//! finished here), hand each packet and its [`Meta`] to the network, answer
//! every slot, and notify once per batch. A network that says
//! [`Sent::Busy`] keeps the rest of the batch waiting, in order, and no new
//! requests are taken until it moves.
//!
//! rx: read packets from the network into pooled 64 KiB buffers, decide how
//! the frontend gets each ([`crate::offload::rx_plan`]: whole with
//! `NETRXF_csum_blank`/`data_validated` and a GSO extra when it takes them,
//! else with the checksum finished or cut into frames here), queue them
//! (bounded), and copy each into as many posted rx buffers as it needs (one
//! unless `feature-sg`; one more for the GSO extra, in the slot after the
//! first, as Linux's netback lays them), answering with the bytes per slot and
//! `NETRXF_more_data` between them. A packet with no buffer to go to waits in
//! the queue; when the queue is full, new ones are dropped and counted.

use crate::error::{Error, Result};
use crate::frames::Frames;
use crate::offload::{self, RxPlan};
use crate::packet::{Meta, Offloads, Received, Sent};
use crate::report::{FrameErrorHook, FrameFailure};
use crate::rxbuf::{RX_BUF, RxBuf};
use crate::tx::{self, Parsed, TxLimits, TxPacket};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use xenio_ring::BackRing;
use xenio_xen_sys::DomId;
use xenio_xen_sys::netif::*;
use xenio_xenbus::{
    CopyBuf, EventChannel, GrantCopy, GrantMapper, GrantRef, Region, SpuriousEvents,
};

use tx::PAGE;

/// Per-queue knobs.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// Most tx slots taken from the ring in one batch.
    pub max_batch: usize,
    /// Frames from the network waiting for rx buffers, at most. While the queue
    /// is full the network is not read (its own queue holds frames back)...
    pub rx_queue: usize,
    /// ...until the frontend has taken nothing for this long: then frames are
    /// read and dropped (counted) until it posts buffers again (Linux netback's
    /// `rx_drain_timeout`).
    pub rx_drain: Duration,
    /// Spin this long looking at the rings before sleeping.
    pub poll: Duration,
    /// Called for every failed [`Frames`] call (besides the counters and
    /// `tracing`): see [`FrameFailure`].
    pub on_network_error: Option<FrameErrorHook>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_batch: 256,
            rx_queue: 256,
            rx_drain: Duration::from_millis(500),
            poll: Duration::ZERO,
            on_network_error: None,
        }
    }
}

/// Counters of one device, shared by its queues.
#[derive(Debug, Default)]
pub struct Counters {
    /// Packets sent by the frontend and handed to the network.
    pub tx_packets: AtomicU64,
    /// Their bytes.
    pub tx_bytes: AtomicU64,
    /// Tx slots (requests) consumed.
    pub tx_slots: AtomicU64,
    /// Packets dropped at validation (answered with errors).
    pub tx_rejected: AtomicU64,
    /// Packets whose grants could not be copied (bad grant references).
    pub tx_grant_errors: AtomicU64,
    /// Packets the network dropped ([`Sent::Dropped`]).
    pub tx_network_drops: AtomicU64,
    /// Frames delivered to the frontend.
    pub rx_packets: AtomicU64,
    /// Their bytes.
    pub rx_bytes: AtomicU64,
    /// Rx slots (posted buffers) used.
    pub rx_slots: AtomicU64,
    /// Frames dropped because the frontend posted no buffers in time (queue full).
    pub rx_dropped_no_buffers: AtomicU64,
    /// Frames dropped because the frontend cannot take them (too big for one
    /// page without `feature-sg`, or for the slots a packet may use).
    pub rx_dropped_too_big: AtomicU64,
    /// Frames whose copy into the frontend's buffers failed (bad grant).
    pub rx_grant_errors: AtomicU64,
    /// Notifications sent on tx channels.
    pub tx_notifications: AtomicU64,
    /// Notifications sent on rx channels (the same channel when not split).
    pub rx_notifications: AtomicU64,
    /// Times a queue slept.
    pub sleeps: AtomicU64,
    /// Large (GSO) packets from the frontend handed to the network (also in
    /// `tx_packets`).
    pub tx_gso_packets: AtomicU64,
    /// Times the network said [`Sent::Busy`].
    pub tx_busy: AtomicU64,
    /// Packets the network failed (answered with errors).
    pub tx_network_errors: AtomicU64,
    /// Times reading from the network failed (each disconnected the frontend).
    pub rx_network_errors: AtomicU64,
    /// Large (GSO) packets given to the frontend whole, with a GSO extra (also
    /// in `rx_packets`).
    pub rx_gso_packets: AtomicU64,
    /// Large packets cut into frames here because the frontend cannot take
    /// them whole.
    pub rx_segmented: AtomicU64,
    /// Pauses after events that brought no work (an event storm, XSA-332:
    /// see [`SpuriousEvents`]).
    pub storm_pauses: AtomicU64,
    /// Where the queue threads' time went, in nanoseconds of wall-clock time
    /// (a queue thread that is busy spends it on its CPU): reading frames
    /// from the network ([`Frames::recv`]).
    pub ns_rx_read: AtomicU64,
    /// Grant copies into the frontend's rx buffers.
    pub ns_rx_copy: AtomicU64,
    /// Grant copies out of the frontend's tx buffers.
    pub ns_tx_copy: AtomicU64,
    /// Handing frames to the network ([`Frames::send`]).
    pub ns_tx_send: AtomicU64,
    /// Sleeping on the event channels and the network.
    pub ns_sleep: AtomicU64,
    /// How the network's packets were read and written, as the last queue
    /// to stop found it ([`Frames::io_mode`]).
    pub network_io: Mutex<Option<String>>,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Add the time since `t` to a time counter.
    fn add_since(c: &AtomicU64, t: Instant) {
        Self::add(c, u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }

    /// A one-line summary.
    pub fn summary(&self) -> String {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "tx {} packets / {} bytes / {} slots ({} rejected, {} grant errors, {} network drops); \
             rx {} packets / {} bytes / {} slots ({} dropped without buffers, {} too big, {} grant errors); \
             notifications tx {} rx {}; sleeps {}; gso tx {} rx {} ({} cut here); tx busy {}, network errors tx {} rx {}; storm pauses {}; \
             ms in network reads {} rx copies {} tx copies {} network writes {} sleeping {}{}",
            n(&self.tx_packets),
            n(&self.tx_bytes),
            n(&self.tx_slots),
            n(&self.tx_rejected),
            n(&self.tx_grant_errors),
            n(&self.tx_network_drops),
            n(&self.rx_packets),
            n(&self.rx_bytes),
            n(&self.rx_slots),
            n(&self.rx_dropped_no_buffers),
            n(&self.rx_dropped_too_big),
            n(&self.rx_grant_errors),
            n(&self.tx_notifications),
            n(&self.rx_notifications),
            n(&self.sleeps),
            n(&self.tx_gso_packets),
            n(&self.rx_gso_packets),
            n(&self.rx_segmented),
            n(&self.tx_busy),
            n(&self.tx_network_errors),
            n(&self.rx_network_errors),
            n(&self.storm_pauses),
            n(&self.ns_rx_read) / 1_000_000,
            n(&self.ns_rx_copy) / 1_000_000,
            n(&self.ns_tx_copy) / 1_000_000,
            n(&self.ns_tx_send) / 1_000_000,
            n(&self.ns_sleep) / 1_000_000,
            match self.network_io.lock().ok().and_then(|m| m.clone()) {
                Some(m) => format!("; network I/O: {m}"),
                None => String::new(),
            }
        )
    }
}

/// The rings and channels of one queue, mapped and bound.
pub struct QueueRings<C: EventChannel> {
    /// The tx ring.
    pub tx: BackRing<NetifTxRequest, NetifTxResponse, Region>,
    /// The rx ring.
    pub rx: BackRing<NetifRxRequest, NetifRxResponse, Region>,
    /// The tx channel (the only one unless split).
    pub tx_channel: C,
    /// The rx channel when the frontend split them.
    pub rx_channel: Option<C>,
}

/// One queue being served. Public so that custom set-ups and the fuzz target
/// can drive rings directly.
pub struct QueueWorker<'a, M: GrantMapper, C: EventChannel, F: Frames> {
    /// Rings and channels.
    pub rings: QueueRings<C>,
    /// How to reach the frontend's grants.
    pub mapper: &'a M,
    /// The frontend's domain.
    pub frontend: DomId,
    /// Where frames go and come from.
    pub frames: F,
    /// What tx packets may be.
    pub limits: TxLimits,
    /// Whether rx frames may span several buffers (`feature-sg`).
    pub rx_sg: bool,
    /// The offloads the frontend takes on rx (its `feature-gso-*` and
    /// checksum keys); the rest is done here.
    pub rx_offloads: Offloads,
    /// Knobs.
    pub config: QueueConfig,
    /// Where to count.
    pub counters: &'a Counters,
    /// Set to stop (checked at least every 100 ms).
    pub stop: &'a AtomicBool,
}

/// A packet from the network waiting for rx buffers.
struct RxItem {
    /// Its bytes (the start of a pooled buffer).
    buf: RxBuf,
    len: usize,
    /// `NETRXF_*` for its first slot.
    flags: u16,
    /// The GSO extra that follows the first slot.
    gso: Option<NetifExtraGso>,
}

/// Rx slots a packet of `len` bytes takes: its pages, and one for the GSO
/// extra (whether the frontend can take it is [`QueueWorker::slots_for`]'s
/// question).
fn slots_of(len: usize, gso: bool) -> usize {
    len.div_ceil(PAGE).max(1) + usize::from(gso)
}

/// What becomes of a tx packet of a batch: sent (from this offset of the
/// batch's bytes, with these offloads), or answered with this status.
type Planned = std::result::Result<(usize, Meta), i16>;

/// A packet the network said [`Sent::Busy`] to, kept in ring order.
struct Held {
    bytes: Vec<u8>,
    meta: Meta,
    packet: TxPacket,
}

/// State kept between steps. The buffers live across batches: no packet
/// allocates on the way through.
#[derive(Default)]
pub struct QueueState {
    /// Tx slots taken from the ring that do not yet form a whole packet.
    partial: Vec<NetifTxRequest>,
    /// The bytes of one tx batch, packet after packet.
    tx_arena: Vec<u8>,
    /// Tx packets waiting for a busy network, in ring order.
    tx_held: VecDeque<Held>,
    /// Packets waiting for rx buffers.
    rx_queue: VecDeque<RxItem>,
    /// Rx buffers not in use.
    rx_spare: Vec<RxBuf>,
    /// The packets of one rx delivery and their requests.
    rx_batch: Vec<RxItem>,
    rx_reqs: Vec<NetifRxRequest>,
    /// Where software segmentation builds a segment.
    seg: Vec<u8>,
    /// When the frontend last took a frame (or the queue was last empty).
    rx_progress: Option<std::time::Instant>,
    /// What the network said of one tx batch.
    tx_sent: Vec<std::io::Result<Sent>>,
    /// The packets of one network read, before they are planned.
    rx_got: Vec<(RxBuf, Received)>,
    /// Rx slots the last packet read took (a guess for the next ones).
    rx_slots_hint: usize,
}

impl<M: GrantMapper, C: EventChannel, F: Frames> QueueWorker<'_, M, C, F> {
    /// Serve until `stop` (`Ok`) or until the frontend breaks the protocol or the
    /// platform fails (`Err`: disconnect).
    ///
    /// # Errors
    ///
    /// As [`QueueWorker::step`].
    pub fn run(mut self) -> Result<()> {
        let r = self.serve();
        if let (Some(m), Ok(mut slot)) = (self.frames.io_mode(), self.counters.network_io.lock()) {
            *slot = Some(m);
        }
        r
    }

    fn serve(&mut self) -> Result<()> {
        let mut st = QueueState::default();
        let mut storm = SpuriousEvents::new();
        while !self.stop.load(Ordering::Relaxed) {
            if self.step(&mut st)? {
                storm.work();
                continue;
            }
            // Events that brought no work: pause before looking again.
            let pause = storm.before_wait();
            if !pause.is_zero() {
                Counters::add(&self.counters.storm_pauses, 1);
                std::thread::sleep(pause);
            }
            if self.idle(&st)? {
                storm.woken();
            }
        }
        Ok(())
    }

    /// One round of work on both rings without sleeping; `true` if anything
    /// happened.
    ///
    /// # Errors
    ///
    /// [`Error::Frontend`] when the frontend breaks the protocol (a tx packet
    /// it cannot have meant, an rx ring that shrank), [`Error::Ring`] when it
    /// broke a ring, [`Error::Platform`] when an event channel or a grant copy
    /// fails, [`Error::Network`] or [`Error::Host`] when the network side fails. A bad tx packet
    /// is not an error: it is answered with `NETIF_RSP_ERROR` and dropped.
    pub fn step(&mut self, st: &mut QueueState) -> Result<bool> {
        let a = self.tx_round(st)?;
        let b = self.rx_round(st)?;
        Ok(a || b)
    }

    // ------------------------------------------------------------------ tx

    fn tx_round(&mut self, st: &mut QueueState) -> Result<bool> {
        if !st.tx_held.is_empty() {
            let before = st.tx_held.len();
            self.flush_held(st)?;
            let moved = st.tx_held.len() < before;
            if moved {
                self.publish_tx()?;
            }
            if !st.tx_held.is_empty() {
                // Still busy: take nothing new (back-pressure).
                return Ok(moved);
            }
        }
        let before = st.partial.len();
        let n = self
            .rings
            .tx
            .take_requests_up_to(&mut st.partial, self.config.max_batch)?;
        if n == 0 {
            return Ok(false);
        }
        debug_assert!(st.partial.len() == before + n);
        Counters::add(&self.counters.tx_slots, n as u64);
        let mut packets: Vec<TxPacket> = Vec::new();
        let mut at = 0;
        loop {
            match tx::parse(&st.partial[at..], &self.limits) {
                Ok(Parsed::NeedMore) => break,
                Ok(Parsed::Packet { used, packet }) => {
                    at += used;
                    packets.push(packet);
                }
                Ok(Parsed::Dropped { used, slots, why }) => {
                    at += used;
                    tracing::debug!("dropping a tx packet: {why}");
                    Counters::add(&self.counters.tx_rejected, 1);
                    // Answer in ring order: first the packets before this one.
                    self.transmit(std::mem::take(&mut packets), st)?;
                    for r in tx::responses(&slots, NETIF_RSP_ERROR) {
                        self.rings.tx.push_response(&r)?;
                    }
                }
                Err(f) => return Err(Error::Frontend(format!("tx ring: {f}"))),
            }
        }
        st.partial.drain(..at);
        self.transmit(packets, st)?;
        self.publish_tx()?;
        Ok(true)
    }

    /// Copy `packets` (whole packets, in ring order) out of the frontend's
    /// pages in one grant-copy call, check their offloads, send and answer
    /// them.
    fn transmit(&mut self, packets: Vec<TxPacket>, st: &mut QueueState) -> Result<()> {
        if packets.is_empty() {
            return Ok(());
        }
        let total: usize = packets.iter().map(|p| p.len).sum();
        let mut arena = std::mem::take(&mut st.tx_arena);
        if arena.len() < total {
            arena.resize(total, 0);
        }
        let results = {
            let mut ops = Vec::new();
            let mut owners = Vec::new();
            let mut rest: &mut [u8] = &mut arena[..total];
            for (pi, p) in packets.iter().enumerate() {
                for f in &p.frags {
                    let (head, tail) = rest.split_at_mut(usize::from(f.len));
                    rest = tail;
                    if head.is_empty() {
                        continue;
                    }
                    ops.push(GrantCopy {
                        domid: self.frontend,
                        gref: f.gref,
                        offset: f.offset,
                        local: CopyBuf::FromGrant(head),
                    });
                    owners.push(pi);
                }
            }
            let t = Instant::now();
            let res = self.mapper.copy(&mut ops);
            Counters::add_since(&self.counters.ns_tx_copy, t);
            let res = res?;
            let mut ok = vec![true; packets.len()];
            for (r, &pi) in res.iter().zip(&owners) {
                if let Err(e) = r {
                    if ok[pi] {
                        tracing::debug!("tx packet: {e}");
                    }
                    ok[pi] = false;
                }
            }
            ok
        };
        // Check each packet's offloads, then hand the good ones to the
        // network in one call, then answer all of them in ring order.
        let mut plan: Vec<(TxPacket, Planned)> = Vec::with_capacity(packets.len());
        let mut pos = 0;
        for (p, ok) in packets.into_iter().zip(results) {
            let at = pos;
            pos += p.len;
            if !ok {
                Counters::add(&self.counters.tx_grant_errors, 1);
                plan.push((p, Err(NETIF_RSP_ERROR)));
                continue;
            }
            match offload::tx_meta(
                &mut arena[at..at + p.len],
                p.flags,
                p.gso,
                self.limits.offloads,
                self.limits.max_frame,
            ) {
                Ok(m) => plan.push((p, Ok((at, m)))),
                Err(why) => {
                    tracing::debug!("dropping a tx packet: {why}");
                    Counters::add(&self.counters.tx_rejected, 1);
                    plan.push((p, Err(NETIF_RSP_ERROR)));
                }
            }
        }
        let mut sent = std::mem::take(&mut st.tx_sent);
        sent.clear();
        if st.tx_held.is_empty() {
            let frames: Vec<(&[u8], Meta)> = plan
                .iter()
                .filter_map(|(p, r)| {
                    r.as_ref()
                        .ok()
                        .map(|(at, m)| (&arena[*at..*at + p.len], *m))
                })
                .collect();
            if !frames.is_empty() {
                let t = Instant::now();
                self.frames.send_many(&frames, &mut sent);
                Counters::add_since(&self.counters.ns_tx_send, t);
            }
        }
        let mut sent_iter = sent.drain(..);
        for (p, r) in plan {
            let (at, meta) = match r {
                Err(status) => {
                    self.answer(&p, status)?;
                    continue;
                }
                Ok(x) => x,
            };
            let bytes = &arena[at..at + p.len];
            let status = match sent_iter.next() {
                Some(res) if st.tx_held.is_empty() => self.sent_status(res, bytes.len(), &meta),
                _ => None,
            };
            match status {
                Some(status) => self.answer(&p, status)?,
                None => st.tx_held.push_back(Held {
                    bytes: bytes.to_vec(),
                    meta,
                    packet: p,
                }),
            }
        }
        drop(sent_iter);
        st.tx_sent = sent;
        st.tx_arena = arena;
        Ok(())
    }

    /// Offer one packet to the network and answer it; `false` if the network
    /// is busy (nothing answered).
    fn send_one(&mut self, bytes: &[u8], meta: &Meta, p: &TxPacket) -> Result<bool> {
        let t = Instant::now();
        let sent = self.frames.send(bytes, meta);
        Counters::add_since(&self.counters.ns_tx_send, t);
        match self.sent_status(sent, bytes.len(), meta) {
            Some(status) => {
                self.answer(p, status)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Count what the network said of a packet of `len` bytes: the status
    /// to answer with, or `None` if the network is busy (not answered).
    fn sent_status(&self, sent: std::io::Result<Sent>, len: usize, meta: &Meta) -> Option<i16> {
        Some(match sent {
            Ok(Sent::Delivered) => {
                Counters::add(&self.counters.tx_packets, 1);
                Counters::add(&self.counters.tx_bytes, len as u64);
                if meta.gso.is_some() {
                    Counters::add(&self.counters.tx_gso_packets, 1);
                }
                NETIF_RSP_OKAY
            }
            Ok(Sent::Dropped) => {
                Counters::add(&self.counters.tx_network_drops, 1);
                NETIF_RSP_OKAY
            }
            Ok(Sent::Busy) => {
                Counters::add(&self.counters.tx_busy, 1);
                return None;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                Counters::add(&self.counters.tx_busy, 1);
                return None;
            }
            Err(e) => {
                tracing::debug!("the network failed a tx packet: {e}");
                Counters::add(&self.counters.tx_network_errors, 1);
                self.report(FrameFailure::new("send", len, &e));
                NETIF_RSP_ERROR
            }
        })
    }

    /// Hand a failure to the hook, if there is one.
    fn report(&self, failure: FrameFailure) {
        if let Some(hook) = &self.config.on_network_error {
            (hook.0)(&failure);
        }
    }

    /// Offer the held packets again, in order, until the network is busy.
    fn flush_held(&mut self, st: &mut QueueState) -> Result<()> {
        while let Some(h) = st.tx_held.pop_front() {
            if !self.send_one(&h.bytes, &h.meta, &h.packet)? {
                st.tx_held.push_front(h);
                break;
            }
        }
        Ok(())
    }

    fn answer(&mut self, p: &TxPacket, status: i16) -> Result<()> {
        for r in p.responses(status) {
            self.rings.tx.push_response(&r)?;
        }
        Ok(())
    }

    fn publish_tx(&mut self) -> Result<()> {
        if self
            .rings
            .tx
            .push_responses_and_check_notify()
            .is_required()
        {
            self.rings.tx_channel.notify()?;
            Counters::add(&self.counters.tx_notifications, 1);
        }
        Ok(())
    }

    // ------------------------------------------------------------------ rx

    /// Slots a packet of `len` bytes needs (one more with a GSO extra), or
    /// `None` if the frontend cannot take it.
    fn slots_for(&self, len: usize, gso: bool) -> Option<usize> {
        let n = len.div_ceil(PAGE).max(1);
        if n > 1 && !self.rx_sg || n > XEN_NETIF_NR_SLOTS_MIN {
            None
        } else {
            Some(slots_of(len, gso))
        }
    }

    /// Whether the queue is full and the frontend took nothing for `rx_drain`.
    fn rx_stalled(&self, st: &QueueState) -> bool {
        st.rx_queue.len() >= self.config.rx_queue.max(1)
            && st
                .rx_progress
                .is_some_and(|t| t.elapsed() >= self.config.rx_drain)
    }

    /// Queue a packet for the frontend (or count why not); its buffer goes
    /// back to the spares when it is not kept.
    fn queue_rx(&self, st: &mut QueueState, item: RxItem, cap: usize) {
        if self.slots_for(item.len, item.gso.is_some()).is_none() {
            Counters::add(&self.counters.rx_dropped_too_big, 1);
            st.rx_spare.push(item.buf);
        } else if st.rx_queue.len() >= cap {
            Counters::add(&self.counters.rx_dropped_no_buffers, 1);
            st.rx_spare.push(item.buf);
        } else {
            st.rx_queue.push_back(item);
        }
    }

    /// Decide how the frontend gets a packet read from the network, and
    /// queue it (or its segments).
    fn plan_rx(&self, st: &mut QueueState, mut buf: RxBuf, got: Received, cap: usize) {
        let len = got.len.min(RX_BUF);
        match offload::rx_plan(&mut buf.bytes_mut()[..len], &got.meta, self.rx_offloads) {
            RxPlan::Whole { flags, gso } => {
                let item = RxItem {
                    buf,
                    len,
                    flags,
                    gso,
                };
                self.queue_rx(st, item, cap);
            }
            RxPlan::Segment { headers, mss } => {
                Counters::add(&self.counters.rx_segmented, 1);
                let mut seg = std::mem::take(&mut st.seg);
                let mut segs = Vec::new();
                offload::segment(&buf.bytes()[..len], &headers, mss, &mut seg, |s| {
                    let mut b = st.rx_spare.pop().unwrap_or_default();
                    b.bytes_mut()[..s.len()].copy_from_slice(s);
                    segs.push(RxItem {
                        buf: b,
                        len: s.len(),
                        flags: NETRXF_DATA_VALIDATED,
                        gso: None,
                    });
                });
                st.seg = seg;
                st.rx_spare.push(buf);
                // The segments of one packet stay together (the queue
                // may run over its cap by one packet's worth).
                for item in segs {
                    self.queue_rx(st, item, cap + RX_BUF / 64);
                }
            }
        }
    }

    fn rx_round(&mut self, st: &mut QueueState) -> Result<bool> {
        let mut progress = false;
        if st.rx_queue.is_empty() || st.rx_progress.is_none() {
            st.rx_progress = Some(std::time::Instant::now());
        }
        // Pull packets from the network while there is room to keep them, or
        // drop them while the frontend is stalled.
        let cap = self.config.rx_queue.max(1);
        let stalled = self.rx_stalled(st);
        // While the frontend has buffers posted, read no more than they take
        // before delivering: it gets work as soon as it can, instead of after
        // a whole queue's worth of reads. With none posted, the queue fills
        // up to its cap (the network's packets wait here, not dropped there).
        let queued: usize = st
            .rx_queue
            .iter()
            .map(|i| self.slots_for(i.len, i.gso.is_some()).unwrap_or(1))
            .sum();
        // (A broken rx ring shows when a packet is delivered, as before.)
        let room = self
            .rings
            .rx
            .unconsumed_requests()
            .map_or(0, |r| r as usize);
        let free = if stalled {
            cap
        } else {
            cap.saturating_sub(st.rx_queue.len())
        };
        let blocked = free == 0 || (room > 0 && queued >= room);
        if !blocked {
            // As many packets as the posted slots take (by the size of the
            // last one), or up to the cap with none posted.
            let want = if room == 0 {
                free
            } else {
                (room - queued)
                    .div_ceil(st.rx_slots_hint.max(1))
                    .clamp(1, free)
            };
            let mut got = std::mem::take(&mut st.rx_got);
            let mut spare = std::mem::take(&mut st.rx_spare);
            let (mut q, mut n) = (queued, st.rx_queue.len());
            let mut last = st.rx_slots_hint;
            let t = Instant::now();
            let read = self.frames.recv_many(want, &mut spare, &mut |buf, rcv| {
                last = slots_of(rcv.len, rcv.meta.gso.is_some());
                q += last;
                n += 1;
                got.push((buf, rcv));
                !(room > 0 && q >= room) && (stalled || n < cap)
            });
            Counters::add_since(&self.counters.ns_rx_read, t);
            st.rx_slots_hint = last;
            st.rx_spare = spare;
            if let Err(e) = read {
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    st.rx_spare.extend(got.drain(..).map(|(b, _)| b));
                    st.rx_got = got;
                    Counters::add(&self.counters.rx_network_errors, 1);
                    self.report(FrameFailure::new("recv", 0, &e));
                    return Err(Error::Network(format!("receiving: {e}")));
                }
            }
            for (buf, got) in got.drain(..) {
                progress = true;
                self.plan_rx(st, buf, got, cap);
            }
            st.rx_got = got;
        }
        // Deliver what fits in the posted buffers, in batches of one grant-copy call.
        let mut delivered = false;
        let mut batch = std::mem::take(&mut st.rx_batch);
        let mut reqs = std::mem::take(&mut st.rx_reqs);
        while let Some(item) = st.rx_queue.front() {
            let need = self.slots_for(item.len, item.gso.is_some()).unwrap_or(1);
            if (self.rings.rx.unconsumed_requests()? as usize) < need {
                break;
            }
            let item = st.rx_queue.pop_front().expect("front exists");
            for _ in 0..need {
                match self.rings.rx.take_request()? {
                    Some(r) => reqs.push(r),
                    None => return Err(Error::Frontend("rx ring shrank".into())),
                }
            }
            batch.push(item);
            if batch.len() >= 64 {
                self.deliver(&batch, &reqs)?;
                st.rx_spare.extend(batch.drain(..).map(|i| i.buf));
                reqs.clear();
            }
            delivered = true;
            st.rx_progress = Some(std::time::Instant::now());
        }
        self.deliver(&batch, &reqs)?;
        st.rx_spare.extend(batch.drain(..).map(|i| i.buf));
        reqs.clear();
        st.rx_batch = batch;
        st.rx_reqs = reqs;
        if delivered {
            progress = true;
            if self
                .rings
                .rx
                .push_responses_and_check_notify()
                .is_required()
            {
                match &self.rings.rx_channel {
                    Some(c) => c.notify()?,
                    None => self.rings.tx_channel.notify()?,
                }
                Counters::add(&self.counters.rx_notifications, 1);
            }
        }
        Ok(progress)
    }

    /// Copy packets into the buffers of their requests (`reqs`, packet after
    /// packet: the first data slot, the GSO extra's slot if any, the other
    /// data slots) in one grant-copy call, and answer every request, in order.
    fn deliver(&mut self, batch: &[RxItem], reqs: &[NetifRxRequest]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut ops: Vec<GrantCopy<'_>> = Vec::new();
        let mut owner = Vec::new();
        let mut at = 0;
        for (fi, item) in batch.iter().enumerate() {
            let extra = usize::from(item.gso.is_some());
            for (j, chunk) in item.buf.bytes()[..item.len].chunks(PAGE).enumerate() {
                let r = reqs[at + j + if j > 0 { extra } else { 0 }];
                ops.push(GrantCopy {
                    domid: self.frontend,
                    gref: GrantRef(r.gref),
                    offset: 0,
                    local: CopyBuf::ToGrant(chunk),
                });
                owner.push(fi);
            }
            at += item.len.div_ceil(PAGE).max(1) + extra;
        }
        let mut ok = vec![true; batch.len()];
        let t = Instant::now();
        let copied = self.mapper.copy(&mut ops);
        Counters::add_since(&self.counters.ns_rx_copy, t);
        for (r, &fi) in copied?.iter().zip(&owner) {
            if let Err(e) = r {
                if ok[fi] {
                    tracing::debug!("rx frame: {e}");
                }
                ok[fi] = false;
            }
        }
        drop(ops);
        let mut at = 0;
        for (item, ok) in batch.iter().zip(ok) {
            let data = item.len.div_ceil(PAGE).max(1);
            let n = data + usize::from(item.gso.is_some());
            let mut lens = item.buf.bytes()[..item.len].chunks(PAGE).map(<[u8]>::len);
            let mut d = 0;
            for (k, r) in reqs[at..at + n].iter().enumerate() {
                if k == 1 {
                    if let Some(g) = item.gso {
                        let e = NetifExtraInfo {
                            type_: XEN_NETIF_EXTRA_TYPE_GSO,
                            flags: 0,
                            u: NetifExtraInfoU { gso: g },
                        };
                        self.rings.rx.push_response(&NetifRxResponse::from(e))?;
                        continue;
                    }
                }
                d += 1;
                let len = lens.next().unwrap_or(0);
                let mut flags = if d < data { NETRXF_MORE_DATA } else { 0 };
                if d == 1 {
                    flags |= item.flags;
                    if item.gso.is_some() {
                        flags |= NETRXF_EXTRA_INFO;
                    }
                }
                let rsp = NetifRxResponse {
                    id: r.id,
                    offset: 0,
                    flags,
                    status: if ok { len as i16 } else { NETIF_RSP_ERROR },
                };
                self.rings.rx.push_response(&rsp)?;
            }
            at += n;
            Counters::add(&self.counters.rx_slots, n as u64);
            if ok {
                Counters::add(&self.counters.rx_packets, 1);
                Counters::add(&self.counters.rx_bytes, item.len as u64);
                if item.gso.is_some() {
                    Counters::add(&self.counters.rx_gso_packets, 1);
                }
            } else {
                Counters::add(&self.counters.rx_grant_errors, 1);
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------ idle

    /// Sleep until a ring or the network has something; whether an event
    /// channel fired.
    fn idle(&mut self, st: &QueueState) -> Result<bool> {
        if !self.config.poll.is_zero()
            && xenio_ring::spin::spin_for(self.config.poll, || {
                Ok::<_, Error>(
                    self.rings.tx.unconsumed_requests()? > 0
                        || (!st.rx_queue.is_empty() && self.rings.rx.unconsumed_requests()? > 0),
                )
            })?
        {
            return Ok(false);
        }
        // Ask to be told of new tx requests, and of rx buffers if frames wait.
        if self.rings.tx.final_check_for_requests()? {
            return Ok(false);
        }
        if !st.rx_queue.is_empty() && self.rings.rx.final_check_for_requests()? {
            return Ok(false);
        }
        Counters::add(&self.counters.sleeps, 1);
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds = vec![PollFd::new(
            self.rings.tx_channel.as_fd(),
            PollFlags::POLLIN,
        )];
        if let Some(c) = &self.rings.rx_channel {
            fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
        }
        // Look at the network only when its frames can be taken (or dropped).
        let full = st.rx_queue.len() >= self.config.rx_queue.max(1);
        let frames_fd = self.frames.ready_fd();
        let has_frames_fd = frames_fd.is_some();
        let take = !full || self.rx_stalled(st);
        if let Some(fd) = frames_fd.filter(|_| take) {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        // Reads the network completed on its own (a TAP's io_uring).
        if let Some(fd) = self.frames.completion_fd().filter(|_| take) {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        let timeout = if !has_frames_fd || !st.tx_held.is_empty() {
            PollTimeout::from(1u8)
        } else if full {
            // Wake up when the stall timeout would start dropping.
            let left = st.rx_progress.map_or(Duration::ZERO, |t| {
                self.config.rx_drain.saturating_sub(t.elapsed())
            });
            PollTimeout::from(left.as_millis().clamp(1, 100) as u8)
        } else {
            PollTimeout::from(100u8)
        };
        let t = Instant::now();
        let polled = poll(&mut fds, timeout);
        Counters::add_since(&self.counters.ns_sleep, t);
        match polled {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::Network(format!("poll: {e}"))),
        }
        let fired: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut event = false;
        if fired[0] {
            event |= self.rings.tx_channel.take_pending()?;
        }
        if let Some(c) = &self.rings.rx_channel {
            if fired[1] {
                event |= c.take_pending()?;
            }
        }
        Ok(event)
    }
}
