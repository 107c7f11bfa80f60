//! The frontend end of a ring: produces requests, consumes responses.

use crate::error::RingError;
use crate::notify::Notify;
use crate::shm::SharedMemory;
use crate::sring::{REQ_EVENT, REQ_PROD, RSP_EVENT, RSP_PROD, Sring, crossed};
use crate::sync::{Ordering, fence};
use bytemuck::Pod;
use xenio_xen_sys::ring::RingIdx;

/// The frontend's view of a shared ring (`struct name##_front_ring`): its private
/// request producer and response consumer indices plus the shared region.
///
/// The frontend initialises the ring, writes requests, publishes them with one of
/// the push calls (which say whether to kick the event channel), and consumes
/// responses. It never notifies by itself and never trusts the backend's index:
/// an impossible `rsp_prod` breaks the ring for good ([`RingError::is_broken`]).
///
/// # Examples
///
/// One request out and its response back, with both ends in this process:
///
/// ```
/// use std::sync::Arc;
/// use xenio_ring::{BlkifBackRing, BlkifFrontRing, HeapMemory};
/// use xenio_xen_sys::blkif::{BlkifRequest, BlkifResponse, BLKIF_OP_READ, BLKIF_RSP_OKAY};
///
/// let mem = Arc::new(HeapMemory::pages(0)); // ring page order 0: one page
/// let mut front = BlkifFrontRing::init(mem.clone())?;
/// let mut back = BlkifBackRing::attach(mem)?;
/// assert_eq!(front.size(), 32); // one page of 112-byte blkif entries
///
/// front.push_request(&BlkifRequest { id: 7, operation: BLKIF_OP_READ, ..Default::default() })?;
/// // The backend went idle with req_event = 1, so this push must kick it.
/// assert!(front.push_requests_and_check_notify().is_required());
///
/// let req = back.take_request()?.expect("published");
/// back.push_response(&BlkifResponse::new(req.id, req.operation, BLKIF_RSP_OKAY))?;
/// let _kick = back.push_responses_and_check_notify();
///
/// let rsp = front.take_response()?.expect("answered");
/// assert_eq!((rsp.id, rsp.status), (7, BLKIF_RSP_OKAY));
/// assert!(!front.final_check_for_responses()?); // nothing more: safe to sleep
/// # Ok::<(), xenio_ring::RingError>(())
/// ```
pub struct FrontRing<Req, Rsp, M> {
    sring: Sring<Req, Rsp, M>,
    /// `req_prod_pvt`: requests written, published or not.
    req_prod_pvt: RingIdx,
    /// `rsp_cons`: responses consumed.
    rsp_cons: RingIdx,
    /// The last `req_prod` this side published (the `__old` of the notify check,
    /// kept privately so the peer cannot tamper with it).
    req_prod_published: RingIdx,
    /// Set once the backend wrote an impossible index.
    broken: Option<RingError>,
}

impl<Req: Pod, Rsp: Pod, M: SharedMemory> FrontRing<Req, Rsp, M> {
    /// Initialise the shared ring and attach to it (`XEN_FRONT_RING_INIT`, i.e.
    /// `SHARED_RING_INIT` then `FRONT_RING_INIT`). Only the frontend initialises.
    ///
    /// # Errors
    ///
    /// [`RingError::RegionTooSmall`] if `mem` cannot hold the 64-byte header and
    /// one entry. The ring's size is the largest power of two of entries that fits
    /// (`__RING_SIZE`).
    pub fn init(mem: M) -> Result<Self, RingError> {
        Self::init_at(mem, 0)
    }

    /// Like [`FrontRing::init`], but with every index starting at `idx` instead of 0
    /// (what `SHARED_RING_INIT` followed by `FRONT_RING_ATTACH(r, s, idx, size)`
    /// with matching shared indices gives). Useful to exercise wrap-around.
    ///
    /// # Errors
    ///
    /// As [`FrontRing::init`].
    pub fn init_at(mem: M, idx: RingIdx) -> Result<Self, RingError> {
        let sring = Sring::new(mem)?;
        sring.clear_header_padding();
        // All Relaxed: the backend learns of the ring through the store (or another
        // channel) after this, which orders these writes before its first access.
        sring.store(RSP_PROD, idx, Ordering::Relaxed);
        sring.store(REQ_EVENT, idx.wrapping_add(1), Ordering::Relaxed);
        sring.store(RSP_EVENT, idx.wrapping_add(1), Ordering::Relaxed);
        // Release: a backend in this process that Acquire-loads req_prod sees the
        // header above complete.
        sring.store(REQ_PROD, idx, Ordering::Release);
        Ok(Self::with(sring, idx))
    }

    /// Attach to a ring that is already initialised, with both private indices at
    /// `idx` (`FRONT_RING_ATTACH`). The shared memory is not touched.
    ///
    /// # Errors
    ///
    /// As [`FrontRing::init`].
    pub fn attach(mem: M, idx: RingIdx) -> Result<Self, RingError> {
        Ok(Self::with(Sring::new(mem)?, idx))
    }

    fn with(sring: Sring<Req, Rsp, M>, idx: RingIdx) -> Self {
        FrontRing {
            sring,
            req_prod_pvt: idx,
            rsp_cons: idx,
            req_prod_published: idx,
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

    /// `req_prod_pvt`: requests written so far (published or not).
    pub fn req_prod_pvt(&self) -> RingIdx {
        self.req_prod_pvt
    }

    /// `rsp_cons`: responses consumed so far.
    pub fn rsp_cons(&self) -> RingIdx {
        self.rsp_cons
    }

    /// Requests written whose responses have not been consumed yet.
    #[inline]
    pub fn outstanding(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// `RING_FREE_REQUESTS`: slots free for new requests.
    #[inline]
    pub fn free_requests(&self) -> u32 {
        self.size() - self.outstanding()
    }

    /// `RING_FULL`.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.free_requests() == 0
    }

    /// The error that broke the ring, if the backend broke it.
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

    /// Write a request into the next free slot (`*RING_GET_REQUEST(r, req_prod_pvt++) = req`).
    /// It is not visible to the backend until one of the push calls publishes it.
    ///
    /// # Errors
    ///
    /// [`RingError::Full`] when every slot holds a request whose response was not
    /// consumed yet (`RING_FULL`): consume responses, then try again. The ring's
    /// breaking error once the backend broke it.
    #[inline]
    pub fn push_request(&mut self, req: &Req) -> Result<(), RingError> {
        self.check()?;
        if self.is_full() {
            return Err(RingError::Full { size: self.size() });
        }
        self.sring.write(self.req_prod_pvt, req);
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// Publish written requests without deciding about notification (`RING_PUSH_REQUESTS`).
    #[inline]
    pub fn push_requests(&mut self) {
        // xen_wmb + store: Release pairs with the backend's Acquire load of req_prod
        // in `BackRing::unconsumed_requests`, so it sees the entries before the index.
        self.sring
            .store(REQ_PROD, self.req_prod_pvt, Ordering::Release);
        self.req_prod_published = self.req_prod_pvt;
    }

    /// Publish written requests and say whether the backend must be notified
    /// (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`): only if `req_prod` moved past the
    /// `req_event` the backend set when it last went idle.
    pub fn push_requests_and_check_notify(&mut self) -> Notify {
        let old = self.req_prod_published;
        let new = self.req_prod_pvt;
        self.push_requests();
        // xen_mb: pairs with the fence in `BackRing::final_check_for_requests`
        // between its store of req_event and its re-load of req_prod. Our req_prod
        // store must be globally visible before we load req_event, or both sides can
        // miss each other and a wake-up is lost (see the crate docs).
        fence(Ordering::SeqCst);
        // Relaxed: req_event carries no data; the fence above orders this load.
        let event = self.sring.load(REQ_EVENT, Ordering::Relaxed);
        Notify::from(crossed(old, new, event))
    }

    /// `RING_HAS_UNCONSUMED_RESPONSES`: responses published and not yet consumed.
    ///
    /// # Errors
    ///
    /// [`RingError::ResponseProdOverflow`], which breaks the ring for good, if the
    /// backend claims responses to requests that were never made
    /// (`RING_RESPONSE_PROD_OVERFLOW`) or moved `rsp_prod` backwards.
    #[inline]
    pub fn unconsumed_responses(&mut self) -> Result<u32, RingError> {
        self.check()?;
        // xen_rmb: Acquire pairs with the backend's Release store of rsp_prod in
        // `BackRing::push_responses`, so the responses below it are complete, and the
        // backend has finished reading the request slots it answered.
        let rsp_prod = self.sring.load(RSP_PROD, Ordering::Acquire);
        let available = rsp_prod.wrapping_sub(self.rsp_cons);
        if available > self.outstanding() {
            let e = RingError::ResponseProdOverflow {
                rsp_prod,
                rsp_cons: self.rsp_cons,
                req_prod_pvt: self.req_prod_pvt,
            };
            self.broken = Some(e.clone());
            return Err(e);
        }
        Ok(available)
    }

    /// Consume one response, copied out of the ring (`RING_COPY_RESPONSE`);
    /// `Ok(None)` when none is published.
    ///
    /// # Errors
    ///
    /// As [`FrontRing::unconsumed_responses`].
    #[inline]
    pub fn take_response(&mut self) -> Result<Option<Rsp>, RingError> {
        if self.unconsumed_responses()? == 0 {
            return Ok(None);
        }
        let rsp = self.sring.read(self.rsp_cons);
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Ok(Some(rsp))
    }

    /// Consume every published response, appending copies to `out`; returns how
    /// many (at most the ring size). The producer index is read once.
    ///
    /// # Errors
    ///
    /// As [`FrontRing::unconsumed_responses`]; nothing is consumed then.
    #[inline]
    pub fn take_responses(&mut self, out: &mut Vec<Rsp>) -> Result<usize, RingError> {
        let n = self.unconsumed_responses()? as usize;
        // Each response is copied once, straight into its element of `out`.
        let start = out.len();
        out.resize(start + n, Rsp::zeroed());
        for (i, rsp) in (0..).zip(&mut out[start..]) {
            self.sring.read_into(self.rsp_cons.wrapping_add(i), rsp);
        }
        self.rsp_cons = self.rsp_cons.wrapping_add(n as u32);
        Ok(n)
    }

    /// Consume as many published responses as `out` holds, copying them into its
    /// first elements; returns how many. Like [`FrontRing::take_responses`], but
    /// into a buffer the caller keeps from batch to batch (a ring's size of them
    /// takes every response), so no element is initialised before it is
    /// overwritten.
    ///
    /// # Errors
    ///
    /// As [`FrontRing::unconsumed_responses`]; nothing is consumed then.
    #[inline]
    pub fn take_responses_into(&mut self, out: &mut [Rsp]) -> Result<usize, RingError> {
        let n = (self.unconsumed_responses()? as usize).min(out.len());
        for (i, rsp) in (0..).zip(&mut out[..n]) {
            self.sring.read_into(self.rsp_cons.wrapping_add(i), rsp);
        }
        self.rsp_cons = self.rsp_cons.wrapping_add(n as u32);
        Ok(n)
    }

    /// `RING_FINAL_CHECK_FOR_RESPONSES`: before going idle, ask to be notified of the
    /// next response and check once more. `Ok(false)` means it is safe to sleep
    /// until the event channel fires; `Ok(true)` means there is work.
    ///
    /// # Errors
    ///
    /// As [`FrontRing::unconsumed_responses`].
    pub fn final_check_for_responses(&mut self) -> Result<bool, RingError> {
        if self.unconsumed_responses()? > 0 {
            return Ok(true);
        }
        // Relaxed store: ordered before the re-check by the fence below.
        self.sring
            .store(RSP_EVENT, self.rsp_cons.wrapping_add(1), Ordering::Relaxed);
        // xen_mb: pairs with the fence in `BackRing::push_responses_and_check_notify`
        // between its store of rsp_prod and its load of rsp_event.
        fence(Ordering::SeqCst);
        Ok(self.unconsumed_responses()? > 0)
    }
}

impl<Req, Rsp, M> std::fmt::Debug for FrontRing<Req, Rsp, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontRing")
            .field("req_prod_pvt", &self.req_prod_pvt)
            .field("rsp_cons", &self.rsp_cons)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}
