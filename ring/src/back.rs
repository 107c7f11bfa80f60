//! The backend end of a ring: consumes requests, produces responses.

use crate::error::RingError;
use crate::notify::Notify;
use crate::shm::SharedMemory;
use crate::sring::{REQ_EVENT, REQ_PROD, RSP_EVENT, RSP_PROD, Sring, crossed};
use crate::sync::{Ordering, fence};
use bytemuck::Pod;
use xenio_xen_sys::ring::RingIdx;

/// The backend's view of a shared ring (`struct name##_back_ring`): its private
/// response producer and request consumer indices plus the shared region.
///
/// The backend attaches to a ring the frontend initialised, copies requests out
/// (once: validate the copy, never the shared slot), answers each in the slot of a
/// consumed request, and publishes responses with one of the push calls (which say
/// whether to kick the event channel). A frontend that writes an impossible
/// `req_prod` breaks the ring for good ([`RingError::is_broken`]): disconnect it.
///
/// # Examples
///
/// The event loop of a backend thread, without the event channel (`kick` and
/// `sleep` stand for it):
///
/// ```
/// use std::sync::Arc;
/// use xenio_ring::{BlkifBackRing, BlkifFrontRing, HeapMemory, RingError};
/// use xenio_xen_sys::blkif::{BlkifRequest, BlkifResponse, BLKIF_RSP_OKAY};
///
/// let mem = Arc::new(HeapMemory::pages(1)); // ring page order 1: 64 slots
/// let mut front = BlkifFrontRing::init(mem.clone())?;
/// for id in 0..3 {
///     front.push_request(&BlkifRequest { id, ..Default::default() })?;
/// }
/// let _ = front.push_requests_and_check_notify();
///
/// let mut back = BlkifBackRing::attach(mem)?;
/// let mut batch = Vec::new();
/// let mut kicks = 0;
/// loop {
///     batch.clear();
///     back.take_requests(&mut batch)?; // every published request, copied once
///     for r in &batch {
///         back.push_response(&BlkifResponse::new(r.id, r.operation, BLKIF_RSP_OKAY))?;
///     }
///     if back.push_responses_and_check_notify().is_required() {
///         kicks += 1; // kick(): notify the frontend's event channel
///     }
///     if !back.final_check_for_requests()? {
///         break; // sleep(): wait for the event channel, then loop again
///     }
/// }
/// assert_eq!((back.req_cons(), kicks), (3, 1));
/// # Ok::<(), RingError>(())
/// ```
pub struct BackRing<Req, Rsp, M> {
    sring: Sring<Req, Rsp, M>,
    /// `rsp_prod_pvt`: responses written, published or not.
    rsp_prod_pvt: RingIdx,
    /// `req_cons`: requests consumed.
    req_cons: RingIdx,
    /// The last `rsp_prod` this side published (the `__old` of the notify check).
    rsp_prod_published: RingIdx,
    /// Set once the frontend wrote an impossible index.
    broken: Option<RingError>,
}

impl<Req: Pod, Rsp: Pod, M: SharedMemory> BackRing<Req, Rsp, M> {
    /// Attach to a ring the frontend initialised, resuming where its shared indices
    /// stand: both private indices start at the shared `rsp_prod`, so requests the
    /// frontend published but nobody answered are served (what Linux blkback does
    /// with `BACK_RING_ATTACH(.., rsp_prod, ..)`).
    ///
    /// # Errors
    ///
    /// [`RingError::RegionTooSmall`] if `mem` cannot hold the header and one entry;
    /// [`RingError::RequestProdOverflow`] if `req_prod` is more than a ring ahead
    /// of `rsp_prod` (a frontend that set the ring up wrong, or a hostile one).
    pub fn attach(mem: M) -> Result<Self, RingError> {
        let sring = Sring::new(mem)?;
        // Acquire: pairs with the frontend's Release stores of req_prod.
        let req_prod = sring.load(REQ_PROD, Ordering::Acquire);
        let rsp_prod = sring.load(RSP_PROD, Ordering::Relaxed);
        if req_prod.wrapping_sub(rsp_prod) > sring.size() {
            return Err(RingError::RequestProdOverflow {
                req_prod,
                req_cons: rsp_prod,
                rsp_prod_pvt: rsp_prod,
                size: sring.size(),
            });
        }
        Ok(Self::with(sring, rsp_prod))
    }

    /// Attach to a ring another backend served until it stopped (a backend
    /// process that was killed, say), given that backend's request consumer
    /// index `req_cons` (which it recorded somewhere that outlived it): the
    /// requests before `req_cons` were taken by it, those from `req_cons` on are
    /// still to be read. Responses go on from the shared `rsp_prod`: whatever the
    /// old backend wrote into slots beyond it was never published. Requests it
    /// took and never answered are the caller's to serve again.
    ///
    /// # Errors
    ///
    /// [`RingError::RegionTooSmall`] as for [`BackRing::attach`];
    /// [`RingError::RequestProdOverflow`] if `req_prod` is more than a ring ahead
    /// of `rsp_prod`, or `req_cons` is not between `rsp_prod` and `req_prod`.
    pub fn attach_resumed(mem: M, req_cons: RingIdx) -> Result<Self, RingError> {
        let sring = Sring::new(mem)?;
        // Acquire: pairs with the frontend's Release stores of req_prod.
        let req_prod = sring.load(REQ_PROD, Ordering::Acquire);
        // Relaxed: only this side writes rsp_prod, and no one is writing it now.
        let rsp_prod = sring.load(RSP_PROD, Ordering::Relaxed);
        let published = req_prod.wrapping_sub(rsp_prod);
        if published > sring.size() || req_cons.wrapping_sub(rsp_prod) > published {
            return Err(RingError::RequestProdOverflow {
                req_prod,
                req_cons,
                rsp_prod_pvt: rsp_prod,
                size: sring.size(),
            });
        }
        let mut ring = Self::with(sring, rsp_prod);
        ring.req_cons = req_cons;
        Ok(ring)
    }

    /// Attach with both private indices at `idx` (`BACK_RING_ATTACH`;
    /// `BACK_RING_INIT` is `idx = 0`). The shared memory is not touched.
    ///
    /// # Errors
    ///
    /// [`RingError::RegionTooSmall`] if `mem` cannot hold the header and one entry.
    pub fn attach_at(mem: M, idx: RingIdx) -> Result<Self, RingError> {
        Ok(Self::with(Sring::new(mem)?, idx))
    }

    fn with(sring: Sring<Req, Rsp, M>, idx: RingIdx) -> Self {
        BackRing {
            sring,
            rsp_prod_pvt: idx,
            req_cons: idx,
            rsp_prod_published: idx,
            broken: None,
        }
    }

    /// `RING_SIZE`: entries in the ring.
    pub fn size(&self) -> u32 {
        self.sring.size()
    }

    /// The shared region.
    pub fn memory(&self) -> &M {
        self.sring.memory()
    }

    /// `req_cons`: requests consumed so far.
    pub fn req_cons(&self) -> RingIdx {
        self.req_cons
    }

    /// `rsp_prod_pvt`: responses written so far (published or not).
    pub fn rsp_prod_pvt(&self) -> RingIdx {
        self.rsp_prod_pvt
    }

    /// Requests consumed that still await a response.
    #[inline]
    pub fn pending(&self) -> u32 {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt)
    }

    /// The error that broke the ring, if the frontend broke it.
    pub fn broken(&self) -> Option<&RingError> {
        self.broken.as_ref()
    }

    #[inline]
    fn check(&self) -> Result<(), RingError> {
        match &self.broken {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// `RING_HAS_UNCONSUMED_REQUESTS`: requests published and not yet consumed.
    ///
    /// Within the window checked below, the count never exceeds the slots not
    /// holding unanswered requests, which is the `min` of the C macro.
    ///
    /// # Errors
    ///
    /// [`RingError::RequestProdOverflow`], which breaks the ring for good, if
    /// `req_prod` claims more requests than the ring holds
    /// (`RING_REQUEST_PROD_OVERFLOW`) or moved backwards.
    #[inline]
    pub fn unconsumed_requests(&mut self) -> Result<u32, RingError> {
        self.check()?;
        // xen_rmb: Acquire pairs with the frontend's Release store of req_prod in
        // `FrontRing::push_requests`, so the requests below it are complete.
        let req_prod = self.sring.load(REQ_PROD, Ordering::Acquire);
        let ahead = req_prod.wrapping_sub(self.rsp_prod_pvt);
        if ahead > self.size() || ahead < self.pending() {
            let e = RingError::RequestProdOverflow {
                req_prod,
                req_cons: self.req_cons,
                rsp_prod_pvt: self.rsp_prod_pvt,
                size: self.size(),
            };
            self.broken = Some(e.clone());
            return Err(e);
        }
        Ok(req_prod.wrapping_sub(self.req_cons))
    }

    /// Consume one request, copied out of the ring once (`RING_COPY_REQUEST`):
    /// validate the copy, never the shared slot. `Ok(None)` when none is published.
    ///
    /// # Errors
    ///
    /// As [`BackRing::unconsumed_requests`].
    #[inline]
    pub fn take_request(&mut self) -> Result<Option<Req>, RingError> {
        if self.unconsumed_requests()? == 0 {
            return Ok(None);
        }
        Ok(Some(self.consume_one()))
    }

    #[inline]
    fn consume_one(&mut self) -> Req {
        let req = self.sring.read(self.req_cons);
        self.req_cons = self.req_cons.wrapping_add(1);
        req
    }

    /// Consume every published request, appending copies to `out`; returns how
    /// many (at most the ring size). The producer index is read once.
    ///
    /// # Errors
    ///
    /// As [`BackRing::unconsumed_requests`]; nothing is consumed then.
    #[inline]
    pub fn take_requests(&mut self, out: &mut Vec<Req>) -> Result<usize, RingError> {
        self.take_requests_up_to(out, usize::MAX)
    }

    /// Like [`BackRing::take_requests`], but at most `max` of them (to bound the work
    /// one busy frontend can make a backend do in one go).
    ///
    /// # Errors
    ///
    /// As [`BackRing::unconsumed_requests`]; nothing is consumed then.
    #[inline]
    pub fn take_requests_up_to(
        &mut self,
        out: &mut Vec<Req>,
        max: usize,
    ) -> Result<usize, RingError> {
        let n = (self.unconsumed_requests()? as usize).min(max);
        // Each request is copied once, straight into its element of `out`.
        let start = out.len();
        out.resize(start + n, Req::zeroed());
        for (i, req) in (0..).zip(&mut out[start..]) {
            self.sring.read_into(self.req_cons.wrapping_add(i), req);
        }
        self.req_cons = self.req_cons.wrapping_add(n as u32);
        Ok(n)
    }

    /// Consume as many published requests as `out` holds, copying them into its
    /// first elements; returns how many. Like [`BackRing::take_requests_up_to`]
    /// with `max = out.len()`, but into a buffer the caller keeps from batch to
    /// batch, so no element is initialised before it is overwritten.
    ///
    /// # Errors
    ///
    /// As [`BackRing::unconsumed_requests`]; nothing is consumed then.
    #[inline]
    pub fn take_requests_into(&mut self, out: &mut [Req]) -> Result<usize, RingError> {
        let n = (self.unconsumed_requests()? as usize).min(out.len());
        for (i, req) in (0..).zip(&mut out[..n]) {
            self.sring.read_into(self.req_cons.wrapping_add(i), req);
        }
        self.req_cons = self.req_cons.wrapping_add(n as u32);
        Ok(n)
    }

    /// Write a response for a consumed request into its slot
    /// (`*RING_GET_RESPONSE(r, rsp_prod_pvt++) = rsp`). Not visible to the frontend
    /// until one of the push calls publishes it.
    ///
    /// # Errors
    ///
    /// [`RingError::NoRequestToAnswer`] when every consumed request already has a
    /// response (a response needs the slot of a consumed request); the ring's
    /// breaking error once the frontend broke it.
    #[inline]
    pub fn push_response(&mut self, rsp: &Rsp) -> Result<(), RingError> {
        self.check()?;
        if self.pending() == 0 {
            return Err(RingError::NoRequestToAnswer {
                req_cons: self.req_cons,
            });
        }
        self.sring.write(self.rsp_prod_pvt, rsp);
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// Publish written responses without deciding about notification (`RING_PUSH_RESPONSES`).
    #[inline]
    pub fn push_responses(&mut self) {
        // xen_wmb + store: Release pairs with the frontend's Acquire load of rsp_prod
        // in `FrontRing::unconsumed_responses`: it sees the responses before the index,
        // and our reads of the answered request slots are done before it reuses them.
        self.sring
            .store(RSP_PROD, self.rsp_prod_pvt, Ordering::Release);
        self.rsp_prod_published = self.rsp_prod_pvt;
    }

    /// Publish written responses and say whether the frontend must be notified
    /// (`RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`).
    pub fn push_responses_and_check_notify(&mut self) -> Notify {
        let old = self.rsp_prod_published;
        let new = self.rsp_prod_pvt;
        self.push_responses();
        // xen_mb: pairs with the fence in `FrontRing::final_check_for_responses`
        // between its store of rsp_event and its re-load of rsp_prod.
        fence(Ordering::SeqCst);
        // Relaxed: rsp_event carries no data; the fence above orders this load.
        let event = self.sring.load(RSP_EVENT, Ordering::Relaxed);
        Notify::from(crossed(old, new, event))
    }

    /// `RING_FINAL_CHECK_FOR_REQUESTS`: before going idle, ask to be notified of the
    /// next request and check once more. `Ok(false)` means it is safe to sleep until
    /// the event channel fires; `Ok(true)` means there is work.
    ///
    /// # Errors
    ///
    /// As [`BackRing::unconsumed_requests`].
    pub fn final_check_for_requests(&mut self) -> Result<bool, RingError> {
        if self.unconsumed_requests()? > 0 {
            return Ok(true);
        }
        // Relaxed store: ordered before the re-check by the fence below.
        self.sring
            .store(REQ_EVENT, self.req_cons.wrapping_add(1), Ordering::Relaxed);
        // xen_mb: pairs with the fence in `FrontRing::push_requests_and_check_notify`
        // between its store of req_prod and its load of req_event.
        fence(Ordering::SeqCst);
        Ok(self.unconsumed_requests()? > 0)
    }
}

impl<Req, Rsp, M> std::fmt::Debug for BackRing<Req, Rsp, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackRing")
            .field("req_cons", &self.req_cons)
            .field("rsp_prod_pvt", &self.rsp_prod_pvt)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}
