//! One queue of the interface: a tx ring, an rx ring, and their event channel
//! (one, or one each with `feature-split-event-channels`).

use crate::counters::{Counters, add};
use crate::error::Result;
use crate::front::rx::{RxRing, Taken};
use crate::front::tx::TxRing;
use crate::packet::PacketMeta;
use xenio_ring::FrontRing;
use xenio_xen_sys::DomId;
use xenio_xen_sys::netif::NetifExtraGso;
use xenio_xenbus::platform::Platform;
use xenio_xenbus::{Access, EventChannel, EventChannels, GrantTable, Granted};

/// One queue's rings and channels.
pub(crate) struct Queue<G: Granted, C: EventChannel> {
    pub(crate) tx: TxRing<G>,
    pub(crate) rx: RxRing<G>,
    tx_channel: C,
    rx_channel: Option<C>,
}

/// The queue type of platform `P`.
pub(crate) type PlatformQueue<P> = Queue<
    <<P as Platform>::Grants as GrantTable>::Granted,
    <<P as Platform>::Events as EventChannels>::Channel,
>;

impl<G: Granted, C: EventChannel> Queue<G, C> {
    /// Granted to `backend`, in this order: the tx ring's page, the rx ring's,
    /// one read-only page per tx slot, one read-write page per rx slot; then
    /// the event channel(s), two if `split`.
    pub(crate) fn new(
        grants: &impl GrantTable<Granted = G>,
        events: &impl EventChannels<Channel = C>,
        backend: DomId,
        split: bool,
    ) -> Result<Self> {
        let tx_ring_grant = grants.grant(backend, 1, Access::ReadWrite)?;
        let rx_ring_grant = grants.grant(backend, 1, Access::ReadWrite)?;
        let tx = FrontRing::init(tx_ring_grant.region().clone())?;
        let rx = FrontRing::init(rx_ring_grant.region().clone())?;
        let (ts, rs) = (tx.size() as usize, rx.size() as usize);
        let tx_pages = grants.grant(backend, ts, Access::ReadOnly)?;
        let rx_pages = grants.grant(backend, rs, Access::ReadWrite)?;
        let tx_channel = events.alloc_unbound(backend)?;
        let rx_channel = if split {
            Some(events.alloc_unbound(backend)?)
        } else {
            None
        };
        Ok(Queue {
            tx: TxRing::new(tx_ring_grant, tx, tx_pages),
            rx: RxRing::new(rx_ring_grant, rx, rx_pages),
            tx_channel,
            rx_channel,
        })
    }

    /// For a new backend with the same geometry: fresh rings in the same
    /// pages, new event channel(s). Frames in flight are lost, as on a link.
    pub(crate) fn reset(
        &mut self,
        events: &impl EventChannels<Channel = C>,
        backend: DomId,
        split: bool,
    ) -> Result<()> {
        self.tx.reset()?;
        self.rx.reset()?;
        self.tx_channel = events.alloc_unbound(backend)?;
        self.rx_channel = if split {
            Some(events.alloc_unbound(backend)?)
        } else {
            None
        };
        Ok(())
    }

    /// The tx channel (the only one unless split).
    pub(crate) fn tx_channel(&self) -> &C {
        &self.tx_channel
    }

    /// The rx channel, when split.
    pub(crate) fn rx_channel(&self) -> Option<&C> {
        self.rx_channel.as_ref()
    }

    /// Every channel of the queue: tx, then rx if split.
    pub(crate) fn channels(&self) -> impl Iterator<Item = &C> {
        std::iter::once(&self.tx_channel).chain(&self.rx_channel)
    }

    /// Tell the backend about rx buffers (on the rx channel if split).
    pub(crate) fn notify_rx(&self, counters: &Counters) -> Result<()> {
        match &self.rx_channel {
            Some(c) => c.notify()?,
            None => self.tx_channel.notify()?,
        }
        add(&counters.notifications, 1);
        Ok(())
    }

    /// Put a frame on the tx ring (see [`TxRing::push`]) and notify if the
    /// backend asked.
    pub(crate) fn send(
        &mut self,
        frame: &[u8],
        layout: &[(u16, usize)],
        flags0: u16,
        gso: Option<NetifExtraGso>,
        counters: &Counters,
    ) -> Result<()> {
        if self.tx.push(frame, layout, flags0, gso)? {
            self.tx_channel.notify()?;
            add(&counters.notifications, 1);
        }
        self.tx.frames += 1;
        Ok(())
    }

    /// Take one received frame, if any, into `out` ([`RxRing::take`]),
    /// publishing the buffers posted again when it is time.
    pub(crate) fn recv(
        &mut self,
        out: &mut Vec<u8>,
        counters: &Counters,
    ) -> Result<Option<PacketMeta>> {
        let Taken {
            frame,
            publish,
            meta,
        } = self.rx.take(out, counters)?;
        if publish {
            self.publish_rx(counters)?;
        }
        Ok(frame.then_some(meta))
    }

    /// Publish the rx buffers posted again, notifying if the backend asked.
    pub(crate) fn publish_rx(&mut self, counters: &Counters) -> Result<()> {
        if self.rx.publish() {
            self.notify_rx(counters)?;
        }
        Ok(())
    }

    /// Arm both rings' events before sleeping (the tx ring only with frames in
    /// flight): whether something came meanwhile. Tx responses are taken here
    /// (their slots freed): one that is only looked at would make every
    /// later check say "something came", and a caller that waits would spin.
    pub(crate) fn final_check(&mut self, backend: DomId, counters: &Counters) -> Result<bool> {
        if self.rx.final_check()? {
            return Ok(true);
        }
        if !self.tx.in_flight() {
            return Ok(false);
        }
        let free = self.tx.free_slots();
        self.tx.reap(backend, counters)?;
        if self.tx.free_slots() > free {
            return Ok(true);
        }
        if self.tx.in_flight() && self.tx.final_check()? {
            self.tx.reap(backend, counters)?;
            return Ok(true);
        }
        Ok(false)
    }
}
