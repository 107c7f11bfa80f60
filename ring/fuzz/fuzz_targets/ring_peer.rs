//! The peer wrote anything at all: random interleavings of honest ring
//! operations on both ends with arbitrary writes into the shared memory. Every
//! call must return (no panic, no endless loop), bounded by the ring size, and
//! a broken ring must stay broken.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use xenio_ring::{BlkifBackRing, BlkifFrontRing, HeapMemory, RingError, SharedMemory};
use xenio_xen_sys::blkif::{BlkifRequest, BlkifResponse};

fn check(e: &RingError, size: u32) {
    match e {
        RingError::Full { size: s } => assert_eq!(*s, size),
        RingError::NoRequestToAnswer { .. } => {}
        e if e.is_broken() => {}
        e => panic!("unexpected error {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&order, mut data)) = data.split_first() else { return };
    let order = u32::from(order % 3);
    let mem = Arc::new(HeapMemory::pages(order));
    let start = u32::MAX - 40;
    let mut front = BlkifFrontRing::init_at(mem.clone(), start).unwrap();
    let Ok(mut back) = BlkifBackRing::attach(mem.clone()) else { return };
    let size = front.size();
    let words = mem.words();
    let mut reqs = Vec::new();
    let mut rsps = Vec::new();
    let mut id = 0u64;
    while let Some((&op, rest)) = data.split_first() {
        data = rest;
        let arg = data.first().copied().unwrap_or(0);
        match op % 9 {
            // Hostile write: a word index and value from the input.
            0 | 1 => {
                if data.len() < 6 {
                    return;
                }
                let at = u16::from_le_bytes([data[0], data[1]]) as usize % words.len();
                let v = u32::from_le_bytes([data[2], data[3], data[4], data[5]]);
                // Bias towards the four indices of the header.
                let at = if op % 9 == 0 { at % 4 } else { at };
                words[at].store(v, Relaxed);
                data = &data[6..];
            }
            2 => {
                for _ in 0..arg % 40 {
                    match front.push_request(&BlkifRequest { id, ..Default::default() }) {
                        Ok(()) => id += 1,
                        Err(e) => {
                            check(&e, size);
                            break;
                        }
                    }
                }
                let _ = front.push_requests_and_check_notify();
            }
            3 => {
                reqs.clear();
                match back.take_requests_up_to(&mut reqs, arg as usize) {
                    Ok(n) => assert!(n <= size as usize && n == reqs.len()),
                    Err(e) => check(&e, size),
                }
            }
            4 => {
                for r in reqs.drain(..) {
                    if let Err(e) = back.push_response(&BlkifResponse::new(r.id, r.operation, 0)) {
                        check(&e, size);
                        break;
                    }
                }
                let _ = back.push_responses_and_check_notify();
            }
            5 => match back.final_check_for_requests() {
                Ok(_) => {}
                Err(e) => check(&e, size),
            },
            6 => {
                rsps.clear();
                match front.take_responses(&mut rsps) {
                    Ok(n) => assert!(n <= size as usize),
                    Err(e) => check(&e, size),
                }
            }
            7 => match front.final_check_for_responses() {
                Ok(_) => {}
                Err(e) => check(&e, size),
            },
            _ => {
                if let Ok(b) = BlkifBackRing::attach(mem.clone()) {
                    back = b;
                }
            }
        }
        assert!(front.outstanding() <= size);
        assert!(back.pending() <= size);
        if let Some(e) = back.broken().cloned() {
            assert_eq!(back.unconsumed_requests(), Err(e));
        }
        if let Some(e) = front.broken().cloned() {
            assert_eq!(front.unconsumed_responses(), Err(e));
        }
    }
});
