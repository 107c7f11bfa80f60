//! One queue's event loop: the tx ring (frontend -> network) and the rx ring
//! (network -> frontend) of one queue, on one thread.
//!
//! tx: take what the frontend published, assemble packets ([`crate::tx::parse`]
//! on the copies), grant-copy every fragment of the batch in one call into a
//! buffer per packet, finish checksums the frontend left blank, hand the frame
//! to the network, answer every slot. rx: read frames from the network into a
//! bounded queue, and copy each into as many posted rx buffers as it needs (one
//! unless `feature-sg`), answering with the bytes per slot and
//! `NETRXF_more_data` between them. A frame with no buffer to go to waits in the
//! queue; when the queue is full, new frames are dropped and counted.

use crate::error::{Error, Result};
use crate::frames::Frames;
use crate::tx::{self, Parsed, TxLimits, TxPacket};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
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
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_batch: 256,
            rx_queue: 256,
            rx_drain: Duration::from_millis(500),
            poll: Duration::ZERO,
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
    /// Packets the network refused.
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
    /// Pauses after events that brought no work (an event storm, XSA-332:
    /// see [`SpuriousEvents`]).
    pub storm_pauses: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// A one-line summary.
    pub fn summary(&self) -> String {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "tx {} packets / {} bytes / {} slots ({} rejected, {} grant errors, {} network drops); \
             rx {} packets / {} bytes / {} slots ({} dropped without buffers, {} too big, {} grant errors); \
             notifications tx {} rx {}; sleeps {}",
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
    /// Knobs.
    pub config: QueueConfig,
    /// Where to count.
    pub counters: &'a Counters,
    /// Set to stop (checked at least every 100 ms).
    pub stop: &'a AtomicBool,
}

/// State kept between steps.
#[derive(Default)]
pub struct QueueState {
    /// Tx slots taken from the ring that do not yet form a whole packet.
    partial: Vec<NetifTxRequest>,
    /// Frames waiting for rx buffers.
    rx_queue: VecDeque<Vec<u8>>,
    /// When the frontend last took a frame (or the queue was last empty).
    rx_progress: Option<std::time::Instant>,
    /// Scratch for reading frames.
    scratch: Vec<u8>,
}

impl<M: GrantMapper, C: EventChannel, F: Frames> QueueWorker<'_, M, C, F> {
    /// Serve until `stop` (`Ok`) or until the frontend breaks the protocol or the
    /// platform fails (`Err`: disconnect).
    ///
    /// # Errors
    ///
    /// As [`QueueWorker::step`].
    pub fn run(mut self) -> Result<()> {
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
                    self.transmit(std::mem::take(&mut packets))?;
                    for r in tx::responses(&slots, NETIF_RSP_ERROR) {
                        self.rings.tx.push_response(&r)?;
                    }
                }
                Err(f) => return Err(Error::Frontend(format!("tx ring: {f}"))),
            }
        }
        st.partial.drain(..at);
        self.transmit(packets)?;
        self.publish_tx()?;
        Ok(true)
    }

    /// Copy, send and answer `packets` (whole packets, in ring order).
    fn transmit(&mut self, packets: Vec<TxPacket>) -> Result<()> {
        if packets.is_empty() {
            return Ok(());
        }
        let mut bufs: Vec<Vec<u8>> = packets.iter().map(|p| vec![0u8; p.len]).collect();
        let results = {
            let mut ops = Vec::new();
            let mut owners = Vec::new();
            for (pi, (p, buf)) in packets.iter().zip(bufs.iter_mut()).enumerate() {
                let mut rest: &mut [u8] = buf;
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
            let res = self.mapper.copy(&mut ops)?;
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
        for ((p, mut buf), ok) in packets.into_iter().zip(bufs.drain(..)).zip(results) {
            let status = if ok {
                if p.flags & NETTXF_CSUM_BLANK != 0 {
                    crate::csum::complete(&mut buf);
                }
                if self.frames.send(&buf)? {
                    Counters::add(&self.counters.tx_packets, 1);
                    Counters::add(&self.counters.tx_bytes, buf.len() as u64);
                } else {
                    Counters::add(&self.counters.tx_network_drops, 1);
                }
                NETIF_RSP_OKAY
            } else {
                Counters::add(&self.counters.tx_grant_errors, 1);
                NETIF_RSP_ERROR
            };
            for r in p.responses(status) {
                self.rings.tx.push_response(&r)?;
            }
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

    /// Slots a frame of `len` bytes needs, or `None` if the frontend cannot take it.
    fn slots_for(&self, len: usize) -> Option<usize> {
        let n = len.div_ceil(PAGE).max(1);
        if n > 1 && !self.rx_sg || n > XEN_NETIF_NR_SLOTS_MIN {
            None
        } else {
            Some(n)
        }
    }

    /// Whether the queue is full and the frontend took nothing for `rx_drain`.
    fn rx_stalled(&self, st: &QueueState) -> bool {
        st.rx_queue.len() >= self.config.rx_queue.max(1)
            && st
                .rx_progress
                .is_some_and(|t| t.elapsed() >= self.config.rx_drain)
    }

    fn rx_round(&mut self, st: &mut QueueState) -> Result<bool> {
        let mut progress = false;
        if st.rx_queue.is_empty() || st.rx_progress.is_none() {
            st.rx_progress = Some(std::time::Instant::now());
        }
        // Pull frames from the network while there is room to keep them, or
        // drop them while the frontend is stalled.
        if st.scratch.len() < 65536 {
            st.scratch.resize(65536, 0);
        }
        let cap = self.config.rx_queue.max(1);
        let stalled = self.rx_stalled(st);
        for _ in 0..cap {
            if st.rx_queue.len() >= cap && !stalled {
                break;
            }
            let Some(n) = self.frames.recv(&mut st.scratch)? else {
                break;
            };
            progress = true;
            if self.slots_for(n).is_none() {
                Counters::add(&self.counters.rx_dropped_too_big, 1);
            } else if st.rx_queue.len() >= cap {
                Counters::add(&self.counters.rx_dropped_no_buffers, 1);
            } else {
                st.rx_queue.push_back(st.scratch[..n].to_vec());
            }
        }
        // Deliver what fits in the posted buffers, in batches of one grant-copy call.
        let mut delivered = false;
        let mut batch: Vec<(Vec<u8>, Vec<NetifRxRequest>)> = Vec::new();
        while let Some(frame) = st.rx_queue.front() {
            let need = self.slots_for(frame.len()).unwrap_or(1);
            if (self.rings.rx.unconsumed_requests()? as usize) < need {
                break;
            }
            let frame = st.rx_queue.pop_front().expect("front exists");
            let mut reqs = Vec::with_capacity(need);
            for _ in 0..need {
                match self.rings.rx.take_request()? {
                    Some(r) => reqs.push(r),
                    None => return Err(Error::Frontend("rx ring shrank".into())),
                }
            }
            batch.push((frame, reqs));
            if batch.len() >= 64 {
                self.deliver(&batch)?;
                batch.clear();
            }
            delivered = true;
            st.rx_progress = Some(std::time::Instant::now());
        }
        self.deliver(&batch)?;
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

    /// Copy frames into the buffers of their requests (one grant-copy call for
    /// the batch) and answer every request, in order.
    fn deliver(&mut self, batch: &[(Vec<u8>, Vec<NetifRxRequest>)]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut ops: Vec<GrantCopy<'_>> = Vec::new();
        let mut owner = Vec::new();
        for (fi, (frame, reqs)) in batch.iter().enumerate() {
            for (chunk, r) in frame.chunks(PAGE).zip(reqs) {
                ops.push(GrantCopy {
                    domid: self.frontend,
                    gref: GrantRef(r.gref),
                    offset: 0,
                    local: CopyBuf::ToGrant(chunk),
                });
                owner.push(fi);
            }
        }
        let mut ok = vec![true; batch.len()];
        for (r, &fi) in self.mapper.copy(&mut ops)?.iter().zip(&owner) {
            if let Err(e) = r {
                if ok[fi] {
                    tracing::debug!("rx frame: {e}");
                }
                ok[fi] = false;
            }
        }
        drop(ops);
        for ((frame, reqs), ok) in batch.iter().zip(ok) {
            let mut lens = frame.chunks(PAGE).map(<[u8]>::len);
            for (i, r) in reqs.iter().enumerate() {
                let last = i + 1 == reqs.len();
                let len = lens.next().unwrap_or(0);
                let rsp = NetifRxResponse {
                    id: r.id,
                    offset: 0,
                    flags: if last { 0 } else { NETRXF_MORE_DATA },
                    status: if ok { len as i16 } else { NETIF_RSP_ERROR },
                };
                self.rings.rx.push_response(&rsp)?;
            }
            Counters::add(&self.counters.rx_slots, reqs.len() as u64);
            if ok {
                Counters::add(&self.counters.rx_packets, 1);
                Counters::add(&self.counters.rx_bytes, frame.len() as u64);
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
        let frames_fd = self.frames.fd();
        let has_frames_fd = frames_fd.is_some();
        if let Some(fd) = frames_fd.filter(|_| !full || self.rx_stalled(st)) {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        let timeout = if !has_frames_fd {
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
        match poll(&mut fds, timeout) {
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
