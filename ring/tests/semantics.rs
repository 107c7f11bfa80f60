//! Single-threaded behaviour of the ring over heap memory: sizes, initialisation,
//! full and empty rings, notification suppression, and a peer that writes
//! impossible indices.
#![cfg(not(loom))]

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use xenio_ring::*;
use xenio_xen_sys::blkif::*;

type Mem = Arc<HeapMemory>;

fn pair(order: u32, start: u32) -> (BlkifFrontRing<Mem>, BlkifBackRing<Mem>) {
    let mem = Arc::new(HeapMemory::pages(order));
    let front = FrontRing::init_at(mem.clone(), start).unwrap();
    let back = BackRing::attach(mem).unwrap();
    (front, back)
}

fn req(id: u64) -> BlkifRequest {
    BlkifRequest {
        operation: BLKIF_OP_WRITE,
        id,
        sector_number: id * 8,
        ..Default::default()
    }
}

#[test]
fn ring_sizes_follow_the_formula() {
    for order in 0..=4 {
        let (f, b) = pair(order, 0);
        assert_eq!(f.size(), 32 << order);
        assert_eq!(b.size(), 32 << order);
        let tx = NetifTxFrontRing::init(HeapMemory::pages(order)).unwrap();
        assert_eq!(tx.size(), 256 << order);
        let rx = NetifRxFrontRing::init(HeapMemory::pages(order)).unwrap();
        assert_eq!(rx.size(), 256 << order);
    }
    // A region that is not a whole number of pages still works: 64 + 3 * 112 bytes
    // holds 3 entries, rounded down to 2.
    let f = BlkifFrontRing::init(HeapMemory::new(64 + 3 * 112)).unwrap();
    assert_eq!(f.size(), 2);
    let e = BlkifFrontRing::init(HeapMemory::new(64 + 108)).unwrap_err();
    assert_eq!(
        e,
        RingError::RegionTooSmall {
            region_bytes: 172,
            entry_bytes: 112
        }
    );
}

#[test]
fn init_writes_the_shared_ring_init_header() {
    let mem = Arc::new(HeapMemory::pages(0));
    for w in mem.words()[..16].iter() {
        w.store(0xffff_ffff, Relaxed);
    }
    let _f = BlkifFrontRing::init(mem.clone()).unwrap();
    let words: Vec<u32> = mem.words()[..16].iter().map(|w| w.load(Relaxed)).collect();
    assert_eq!(&words[..4], &[0, 1, 0, 1]); // req_prod, req_event, rsp_prod, rsp_event
    assert!(
        words[4..].iter().all(|&w| w == 0),
        "pvt and __pad are zeroed"
    );
}

#[test]
fn full_ring_refuses_more_requests_and_backend_cannot_over_answer() {
    let (mut f, mut b) = pair(0, u32::MAX - 5);
    for i in 0..32 {
        f.push_request(&req(i)).unwrap();
    }
    assert!(f.is_full());
    assert_eq!(f.push_request(&req(99)), Err(RingError::Full { size: 32 }));
    let _ = f.push_requests_and_check_notify();

    assert_eq!(
        b.push_response(&BlkifResponse::new(0, 0, 0)),
        Err(RingError::NoRequestToAnswer {
            req_cons: u32::MAX - 5
        })
    );
    let mut got = Vec::new();
    assert_eq!(b.take_requests(&mut got).unwrap(), 32);
    assert_eq!(
        got.iter().map(|r| r.id).collect::<Vec<_>>(),
        (0..32).collect::<Vec<_>>()
    );
    assert_eq!(b.take_request().unwrap(), None);
    for r in &got {
        b.push_response(&BlkifResponse::new(r.id, r.operation, BLKIF_RSP_OKAY))
            .unwrap();
    }
    assert!(matches!(
        b.push_response(&BlkifResponse::default()),
        Err(RingError::NoRequestToAnswer { .. })
    ));
    let _ = b.push_responses_and_check_notify();
    let mut rsps = Vec::new();
    assert_eq!(f.take_responses(&mut rsps).unwrap(), 32);
    assert_eq!(f.free_requests(), 32);
    assert!(f.req_prod_pvt() < 100, "indices wrapped past u32::MAX");
}

#[test]
fn notifications_are_suppressed_while_the_peer_is_busy() {
    let (mut f, mut b) = pair(0, 0);
    // The backend starts idle (req_event = 1): the first push notifies.
    f.push_request(&req(1)).unwrap();
    assert_eq!(f.push_requests_and_check_notify(), Notify::Required);
    // The backend has not looked yet: more pushes do not notify again.
    f.push_request(&req(2)).unwrap();
    assert_eq!(f.push_requests_and_check_notify(), Notify::NotRequired);
    // The backend consumes, answers, and checks: no work left, it asks for events.
    let mut v = Vec::new();
    b.take_requests(&mut v).unwrap();
    assert!(!b.final_check_for_requests().unwrap());
    f.push_request(&req(3)).unwrap();
    assert_eq!(f.push_requests_and_check_notify(), Notify::Required);
    // A push with nothing new never notifies.
    assert_eq!(f.push_requests_and_check_notify(), Notify::NotRequired);

    // Responses: the frontend has not asked since init (rsp_event = 1).
    b.push_response(&BlkifResponse::new(1, 1, 0)).unwrap();
    assert_eq!(b.push_responses_and_check_notify(), Notify::Required);
    b.push_response(&BlkifResponse::new(2, 1, 0)).unwrap();
    assert_eq!(b.push_responses_and_check_notify(), Notify::NotRequired);
    assert!(
        f.final_check_for_responses().unwrap(),
        "two responses are waiting"
    );
    let mut r = Vec::new();
    f.take_responses(&mut r).unwrap();
    assert!(!f.final_check_for_responses().unwrap());
    assert_eq!(b.take_request().unwrap().map(|r| r.id), Some(3));
    b.push_response(&BlkifResponse::new(3, 1, 0)).unwrap();
    assert_eq!(b.push_responses_and_check_notify(), Notify::Required);
}

#[test]
fn final_check_finds_work_that_raced_with_going_idle() {
    let (mut f, mut b) = pair(0, 0);
    f.push_request(&req(1)).unwrap();
    f.push_requests();
    // The backend never saw a notification, but its final check finds the request.
    assert!(b.final_check_for_requests().unwrap());
}

#[test]
fn request_producer_far_ahead_breaks_the_ring_for_good() {
    let (mut f, mut b) = pair(0, 0);
    f.push_request(&req(1)).unwrap();
    f.push_requests();
    b.memory().words()[0].store(33, Relaxed); // req_prod 33 > size 32 ahead of rsp_prod_pvt 0
    let e = b.take_request().unwrap_err();
    assert!(e.is_broken(), "{e}");
    assert!(matches!(
        e,
        RingError::RequestProdOverflow {
            req_prod: 33,
            size: 32,
            ..
        }
    ));
    // Sticky: even with the index repaired, the ring stays broken.
    b.memory().words()[0].store(1, Relaxed);
    assert_eq!(b.take_request().unwrap_err(), e);
    assert_eq!(b.final_check_for_requests().unwrap_err(), e);
    assert_eq!(b.push_response(&BlkifResponse::default()).unwrap_err(), e);
    assert_eq!(b.broken(), Some(&e));
}

#[test]
fn request_producer_moving_backwards_breaks_the_ring() {
    let (mut f, mut b) = pair(0, 10);
    for i in 0..4 {
        f.push_request(&req(i)).unwrap();
    }
    f.push_requests();
    let mut v = Vec::new();
    assert_eq!(b.take_requests(&mut v).unwrap(), 4);
    b.memory().words()[0].store(12, Relaxed); // behind req_cons 14
    assert!(b.unconsumed_requests().unwrap_err().is_broken());
}

#[test]
fn response_producer_beyond_requests_made_breaks_the_ring() {
    let (mut f, _b) = pair(0, u32::MAX);
    f.push_request(&req(1)).unwrap();
    f.push_requests();
    f.memory().words()[2].store(u32::MAX.wrapping_add(2), Relaxed); // 2 responses for 1 request
    let e = f.take_response().unwrap_err();
    assert!(
        matches!(
            e,
            RingError::ResponseProdOverflow {
                rsp_cons: u32::MAX,
                req_prod_pvt: 0,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(f.push_request(&req(2)).unwrap_err(), e);
}

#[test]
fn backend_attach_resumes_unanswered_requests_and_rejects_overflow() {
    let (mut f, mut b) = pair(1, 1000);
    for i in 0..5 {
        f.push_request(&req(i)).unwrap();
    }
    let _ = f.push_requests_and_check_notify();
    b.take_request().unwrap();
    b.push_response(&BlkifResponse::new(0, 1, 0)).unwrap();
    b.push_responses();
    b.take_request().unwrap(); // consumed, never answered: a new backend must redo it
    drop(b);
    let mut b2 = BlkifBackRing::attach(f.memory().clone()).unwrap();
    let mut v = Vec::new();
    b2.take_requests(&mut v).unwrap();
    assert_eq!(v.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 2, 3, 4]);

    f.memory().words()[0].store(1000 + 1 + 65, Relaxed); // req_prod a ring + 1 ahead of rsp_prod 1001
    assert!(
        BlkifBackRing::attach(f.memory().clone())
            .unwrap_err()
            .is_broken()
    );
}

/// A backend that died after taking requests 0..4 and answering 0 and 2 (the
/// response for 2 written but not published): its successor, told where the
/// old one's consumer stood, reads only what was never taken and answers from
/// the published `rsp_prod` on, over the unpublished response.
#[test]
fn attach_resumed_continues_after_a_dead_backend() {
    let (mut f, mut b) = pair(0, u32::MAX - 2);
    for i in 0..6 {
        f.push_request(&req(i)).unwrap();
    }
    let _ = f.push_requests_and_check_notify();
    let mut v = Vec::new();
    b.take_requests_up_to(&mut v, 4).unwrap();
    b.push_response(&BlkifResponse::new(0, 1, 0)).unwrap();
    b.push_responses();
    b.push_response(&BlkifResponse::new(2, 1, 0)).unwrap(); // never published
    let req_cons = b.req_cons();
    drop(b);
    let mut b2 = BlkifBackRing::attach_resumed(f.memory().clone(), req_cons).unwrap();
    assert_eq!(b2.req_cons(), req_cons);
    assert_eq!(b2.rsp_prod_pvt(), (u32::MAX - 2).wrapping_add(1));
    assert_eq!(
        b2.pending(),
        3,
        "1, 2 and 3 are the new backend's to answer"
    );
    v.clear();
    b2.take_requests(&mut v).unwrap();
    assert_eq!(v.iter().map(|r| r.id).collect::<Vec<_>>(), vec![4, 5]);
    for id in [3, 1, 2, 5, 4] {
        b2.push_response(&BlkifResponse::new(id, 1, 0)).unwrap();
    }
    let _ = b2.push_responses_and_check_notify();
    let mut got = Vec::new();
    f.take_responses(&mut got).unwrap();
    assert_eq!(
        got.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![0, 3, 1, 2, 5, 4]
    );
    // A consumer index outside rsp_prod..=req_prod is refused.
    let rsp_prod = f.memory().words()[2].load(Relaxed);
    for bad in [rsp_prod.wrapping_sub(1), rsp_prod.wrapping_add(1)] {
        assert!(
            BlkifBackRing::attach_resumed(f.memory().clone(), bad)
                .unwrap_err()
                .is_broken()
        );
    }
}

#[test]
fn entries_are_copied_once_and_later_scribbles_do_not_change_them() {
    let (mut f, mut b) = pair(0, 0);
    f.push_request(&req(42)).unwrap();
    f.push_requests();
    let got = b.take_request().unwrap().unwrap();
    // The frontend rewrites the slot after the backend took it: the copy is unchanged.
    for w in &b.memory().words()[16..16 + 28] {
        w.store(0xdead_beef, Relaxed);
    }
    assert_eq!(got, req(42));
}

#[test]
fn response_padding_written_to_the_ring_is_zero() {
    let (mut f, mut b) = pair(0, 0);
    // Fill the slot with a request full of non-zero bytes first.
    let mut r = req(0);
    r.seg = [BlkifRequestSegment {
        gref: u32::MAX,
        first_sect: 0xff,
        last_sect: 0xff,
        _pad: [0xff; 2],
    }; 11];
    f.push_request(&r).unwrap();
    f.push_requests();
    let r = b.take_request().unwrap().unwrap();
    b.push_response(&BlkifResponse::new(r.id, r.operation, BLKIF_RSP_OKAY))
        .unwrap();
    b.push_responses();
    let slot: Vec<u32> = b.memory().words()[16..20]
        .iter()
        .map(|w| w.load(Relaxed))
        .collect();
    let bytes: Vec<u8> = slot.iter().flat_map(|w| w.to_ne_bytes()).collect();
    assert_eq!(bytes[9], 0);
    assert_eq!(&bytes[12..16], &[0; 4]);
}

#[test]
fn taking_into_a_slice_takes_what_fits_and_wraps() {
    // Indices start just below the wrap, so the batch crosses it.
    let (mut f, mut b) = pair(0, u32::MAX - 2);
    for id in 0..5 {
        f.push_request(&req(id)).unwrap();
    }
    f.push_requests();
    let mut buf = [BlkifRequest::default(); 3];
    assert_eq!(b.take_requests_into(&mut buf).unwrap(), 3);
    assert_eq!(buf, [req(0), req(1), req(2)]);
    assert_eq!(b.take_requests_into(&mut buf).unwrap(), 2);
    assert_eq!(buf[..2], [req(3), req(4)]);
    assert_eq!(buf[2], req(2), "elements beyond the count are left alone");
    assert_eq!(b.take_requests_into(&mut buf).unwrap(), 0);
    assert_eq!(b.take_requests_into(&mut []).unwrap(), 0);
    for id in 0..5 {
        b.push_response(&BlkifResponse::new(id, BLKIF_OP_WRITE, BLKIF_RSP_OKAY))
            .unwrap();
    }
    b.push_responses();
    let mut rsps = [BlkifResponse::default(); 4];
    assert_eq!(f.take_responses_into(&mut rsps).unwrap(), 4);
    assert_eq!(rsps.map(|r| r.id), [0, 1, 2, 3]);
    assert_eq!(f.take_responses_into(&mut rsps).unwrap(), 1);
    assert_eq!(rsps[0].id, 4);
    assert_eq!(f.outstanding(), 0);
}

#[test]
fn taking_into_a_slice_from_a_broken_ring_consumes_nothing() {
    let (mut f, mut b) = pair(0, 0);
    f.push_request(&req(1)).unwrap();
    f.push_requests();
    // The frontend claims far more requests than the ring holds.
    f.memory().words()[0].store(1000, Relaxed);
    let mut buf = [BlkifRequest::default(); 4];
    assert!(b.take_requests_into(&mut buf).unwrap_err().is_broken());
    assert_eq!(b.req_cons(), 0);
    assert_eq!(buf, [BlkifRequest::default(); 4]);
    // A backend that answers more than was asked breaks the frontend's view.
    let (mut f, _b) = pair(0, 0);
    f.memory().words()[2].store(3, Relaxed);
    let mut rsps = [BlkifResponse::default(); 4];
    assert!(f.take_responses_into(&mut rsps).unwrap_err().is_broken());
    assert_eq!(f.rsp_cons(), 0);
}
