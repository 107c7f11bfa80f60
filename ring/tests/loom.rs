//! Exhaustive interleavings (loom) of push / notify decision / final check.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p xenio-ring --test loom --release`.
//! The event channel is modelled as a counter the producer bumps when the ring
//! says `Notify::Required`. A consumer goes to sleep only when its final check finds
//! nothing and no notification is pending. The property: when both threads are
//! done, every item was consumed or a notification is pending that would wake the
//! consumer. A lost wake-up is the state where neither holds. Loom also checks the
//! consumer reads complete entries (Release/Acquire on the producer index).
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU32, Ordering::SeqCst};
use xenio_ring::{BackRing, FrontRing, HeapMemory};

type Mem = Arc<HeapMemory>;
type Entry = [u32; 1];

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(f);
}

/// 4 one-word entries after the 64-byte header.
fn ring_memory() -> Mem {
    Arc::new(HeapMemory::new(64 + 4 * 4))
}

#[test]
fn no_lost_wakeup_for_requests() {
    model(|| {
        let mem = ring_memory();
        let mut front = FrontRing::<Entry, Entry, Mem>::init(mem.clone()).unwrap();
        let mut back = BackRing::<Entry, Entry, Mem>::attach(mem).unwrap();
        let doorbell = Arc::new(AtomicU32::new(0));
        let bell = doorbell.clone();

        let producer = loom::thread::spawn(move || {
            for id in 1..=2u32 {
                front.push_request(&[id * 100]).unwrap();
                if front.push_requests_and_check_notify().is_required() {
                    bell.fetch_add(1, SeqCst);
                }
            }
        });

        // The backend: drain, final check, sleep only if no notification is pending.
        let mut seen = Vec::new();
        loop {
            while let Some(r) = back.take_request().unwrap() {
                seen.push(r[0]);
            }
            if back.final_check_for_requests().unwrap() {
                continue;
            }
            if doorbell.swap(0, SeqCst) > 0 {
                continue; // woken
            }
            break; // asleep
        }
        producer.join().unwrap();
        // Entries were read complete and in order.
        assert!(
            seen.iter()
                .enumerate()
                .all(|(i, &v)| v == (i as u32 + 1) * 100),
            "{seen:?}"
        );
        let pending = doorbell.load(SeqCst) > 0;
        assert!(
            seen.len() == 2 || pending,
            "lost wake-up: consumed {seen:?}, no notification pending"
        );
    });
}

#[test]
fn no_lost_wakeup_for_responses() {
    model(|| {
        let mem = ring_memory();
        let mut front = FrontRing::<Entry, Entry, Mem>::init(mem.clone()).unwrap();
        let mut back = BackRing::<Entry, Entry, Mem>::attach(mem).unwrap();
        // Two requests already published and taken by the backend.
        front.push_request(&[1]).unwrap();
        front.push_request(&[2]).unwrap();
        front.push_requests();
        let mut taken = Vec::new();
        back.take_requests(&mut taken).unwrap();
        let doorbell = Arc::new(AtomicU32::new(0));
        let bell = doorbell.clone();

        let responder = loom::thread::spawn(move || {
            for r in taken {
                back.push_response(&[r[0] + 10]).unwrap();
                if back.push_responses_and_check_notify().is_required() {
                    bell.fetch_add(1, SeqCst);
                }
            }
        });

        let mut seen = Vec::new();
        loop {
            while let Some(r) = front.take_response().unwrap() {
                seen.push(r[0]);
            }
            if front.final_check_for_responses().unwrap() {
                continue;
            }
            if doorbell.swap(0, SeqCst) > 0 {
                continue;
            }
            break;
        }
        responder.join().unwrap();
        assert!(
            seen.iter().enumerate().all(|(i, &v)| v == i as u32 + 11),
            "{seen:?}"
        );
        let pending = doorbell.load(SeqCst) > 0;
        assert!(
            seen.len() == 2 || pending,
            "lost wake-up: consumed {seen:?}, no notification pending"
        );
    });
}

#[test]
fn slots_are_reused_only_after_the_backend_read_them() {
    // A ring of 2 entries: the frontend refills a slot as soon as it sees the
    // response; the backend must have finished copying the old request first.
    model(|| {
        let mem = Arc::new(HeapMemory::new(64 + 2 * 4));
        let mut front = FrontRing::<Entry, Entry, Mem>::init(mem.clone()).unwrap();
        let mut back = BackRing::<Entry, Entry, Mem>::attach(mem).unwrap();
        let server = loom::thread::spawn(move || {
            let mut got = Vec::new();
            while got.len() < 3 {
                match back.take_request().unwrap() {
                    Some(r) => {
                        got.push(r[0]);
                        back.push_response(&r).unwrap();
                        back.push_responses();
                    }
                    None => loom::thread::yield_now(),
                }
            }
            got
        });
        let mut sent = 0u32;
        let mut done = 0;
        while done < 3 {
            if sent < 3 && !front.is_full() {
                sent += 1;
                front.push_request(&[sent]).unwrap();
                front.push_requests();
            }
            match front.take_response().unwrap() {
                Some(r) => {
                    done += 1;
                    assert_eq!(r[0], done);
                }
                None => loom::thread::yield_now(),
            }
        }
        assert_eq!(server.join().unwrap(), vec![1, 2, 3]);
    });
}
