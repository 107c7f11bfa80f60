//! blkfront <-> rings <-> blkback <-> a real file, both ends as threads of one
//! process (the in-process platform): a quick end-to-end check of every
//! operation with data verification.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use xenio_blkback::storage::FileStorage;
use xenio_blkback::{BackendConfig, Counters, GrantMode, QueueConfig, serve};
use xenio_blkfront::{BlkFront, Options};
use xenio_hostio::disk::Direct;
use xenio_xenbus::DomId;
use xenio_xenbus::handshake::{DeviceKind, DevicePaths, create_device};
use xenio_xenbus::platform::{InProcess, Platform};

fn image(len: u64) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let p = dir.join(format!("e2e-{}-{}.img", std::process::id(), rand_u64()));
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(len).unwrap();
    p
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    h.finish()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn run(mode: GrantMode, queues: u32, order: u32, indirect: u32) {
    let path = image(32 << 20);
    let world = InProcess::new().unwrap();
    let dom0 = world.domain(DomId(0)).unwrap();
    let guest = Arc::new(world.domain(DomId(1)).unwrap());
    let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vbd, 51712);
    create_device(dom0.store(), &paths, &[]).unwrap();
    let storage = FileStorage::open(&path, false, Direct::Auto).unwrap();
    let config = BackendConfig {
        max_queues: 4,
        once: true,
        queue: QueueConfig {
            grant_mode: mode,
            ..Default::default()
        },
        ..Default::default()
    };
    let counters = Counters::default();
    let shutdown = AtomicBool::new(false);
    std::thread::scope(|s| {
        let b = s.spawn(|| {
            serve(
                &dom0,
                &paths.backend,
                &storage,
                &config,
                &counters,
                &shutdown,
            )
        });
        let opts = Options {
            queues,
            max_ring_page_order: order,
            indirect_segments: indirect,
            ..Default::default()
        };
        let mut f = BlkFront::connect(guest.clone(), &paths.frontend, opts).unwrap();
        let info = f.info().clone();
        assert_eq!(info.sectors, (32 << 20) / 512);
        assert_eq!(info.queues, queues);
        assert_eq!(info.ring_page_order, order);
        let size = f.size();
        let mut shadow = vec![0u8; size as usize];
        let mut rng = Rng(0x1234 + order as u64);
        for i in 0..300u64 {
            let len = ((rng.next() % 64 + 1) * 512) as usize * if i % 10 == 0 { 16 } else { 1 };
            let off = (rng.next() % ((size - len as u64) / 512)) * 512;
            if rng.next() % 2 == 0 {
                let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                f.write_at(off, &data).unwrap();
                shadow[off as usize..off as usize + len].copy_from_slice(&data);
            } else {
                let mut got = vec![0u8; len];
                f.read_at(off, &mut got).unwrap();
                assert!(
                    got == shadow[off as usize..off as usize + len],
                    "read {len} at {off} differs"
                );
            }
        }
        f.flush().unwrap();
        if info.discard.is_some() {
            f.discard(1 << 20, 1 << 20).unwrap();
            shadow[1 << 20..2 << 20].fill(0);
        }
        let mut all = vec![0u8; size as usize];
        f.read_at(0, &mut all).unwrap();
        assert!(all == shadow, "final image differs");
        f.close().unwrap();
        b.join().unwrap().unwrap();
    });
    assert_eq!(
        counters
            .missed_wakeups
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "a queue slept 100 ms with work ready"
    );
    // The file itself holds what was written.
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(on_disk.len() as u64, 32 << 20);
    std::fs::remove_file(&path).unwrap();
    eprintln!(
        "{mode:?} queues={queues} order={order} indirect={indirect}: reqs {:?} merged {:?} pgrant hits {:?}",
        counters.requests, counters.merged, counters.pgrant_hits
    );
}

/// Event-driven on both sides (no spinning anywhere), one request at a time:
/// every cycle sleeps on the event channel and on the storage's completions,
/// so a lost wake-up (the backend sleeping through a request or a completion)
/// would show as a sleep that lasted its 100 ms cap with work ready, which
/// the backend counts (`Counters::missed_wakeups`). The backend sleeps in
/// `poll(2)` (the default) ...
#[test]
fn event_driven_cycles_miss_no_wake_up() {
    event_driven_cycles(false);
}

/// ... and in the storage's io_uring (`QueueConfig::sleep_in_storage`).
#[test]
fn event_driven_cycles_miss_no_wake_up_sleeping_in_the_ring_either() {
    event_driven_cycles(true);
}

fn event_driven_cycles(sleep_in_storage: bool) {
    use std::sync::atomic::Ordering::Relaxed;
    use xenio_blkfront::Wait;
    let path = image(8 << 20);
    let world = InProcess::new().unwrap();
    let dom0 = world.domain(DomId(0)).unwrap();
    let guest = Arc::new(world.domain(DomId(1)).unwrap());
    let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vbd, 51712);
    create_device(dom0.store(), &paths, &[]).unwrap();
    let storage = FileStorage::open(&path, false, Direct::Auto).unwrap();
    let event_driven = Wait::Fixed(std::time::Duration::ZERO);
    let config = BackendConfig {
        max_queues: 1,
        once: true,
        queue: QueueConfig {
            wait: event_driven,
            sleep_in_storage,
            ..Default::default()
        },
        ..Default::default()
    };
    let counters = Counters::default();
    let shutdown = AtomicBool::new(false);
    const CYCLES: u64 = 5000;
    std::thread::scope(|s| {
        let b = s.spawn(|| {
            serve(
                &dom0,
                &paths.backend,
                &storage,
                &config,
                &counters,
                &shutdown,
            )
        });
        let opts = Options {
            wait: event_driven,
            ..Default::default()
        };
        let mut f = BlkFront::connect(guest.clone(), &paths.frontend, opts).unwrap();
        let mut rng = Rng(0x5eed);
        let mut buf = vec![0u8; 4096];
        for i in 0..CYCLES {
            let off = (rng.next() % ((8 << 20) / 4096)) * 4096;
            if i % 2 == 0 {
                buf.fill(i as u8);
                f.write_at(off, &buf).unwrap();
            } else {
                f.read_at(off, &mut buf).unwrap();
            }
        }
        f.close().unwrap();
        b.join().unwrap().unwrap();
    });
    std::fs::remove_file(&path).unwrap();
    eprintln!("{counters}");
    assert!(counters.requests.load(Relaxed) >= CYCLES);
    assert!(
        counters.sleeps.load(Relaxed) > 0,
        "the backend never slept: nothing was tested"
    );
    assert_eq!(counters.missed_wakeups.load(Relaxed), 0, "{counters}");
}

#[test]
fn map_one_queue_order0_no_indirect() {
    run(GrantMode::Map, 1, 0, 0);
}

#[test]
fn map_four_queues_order4_indirect() {
    run(GrantMode::Map, 4, 4, 256);
}

#[test]
fn copy_two_queues_order2_indirect() {
    run(GrantMode::Copy, 2, 2, 64);
}

/// One indirect request of 4096 segments (16 MiB): more than readv takes in one
/// go, so the queue worker must split it, and the data must still land in order.
#[test]
fn a_4096_segment_indirect_request() {
    one_4096_segment_request(128);
}

/// The same request through a storage queue two operations deep: its four
/// 1024-segment operations cannot all be in flight, so the queue worker reaps the
/// first ones while the request's I/O is still being submitted (those
/// completions must count, or the request is never answered).
#[test]
fn a_4096_segment_request_through_a_two_deep_storage_queue() {
    one_4096_segment_request(2);
}

fn one_4096_segment_request(io_depth: u32) {
    let path = image(32 << 20);
    let world = InProcess::new().unwrap();
    let dom0 = world.domain(DomId(0)).unwrap();
    let guest = Arc::new(world.domain(DomId(1)).unwrap());
    let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vbd, 51712);
    create_device(dom0.store(), &paths, &[]).unwrap();
    let storage = FileStorage::open(&path, false, Direct::Auto).unwrap();
    let config = BackendConfig {
        once: true,
        max_indirect_segments: 4096,
        queue: QueueConfig {
            io_depth,
            ..Default::default()
        },
        ..Default::default()
    };
    let counters = Counters::default();
    let shutdown = AtomicBool::new(false);
    std::thread::scope(|s| {
        let b = s.spawn(|| {
            serve(
                &dom0,
                &paths.backend,
                &storage,
                &config,
                &counters,
                &shutdown,
            )
        });
        let opts = Options {
            indirect_segments: 4096,
            pool_pages: 8192,
            ..Default::default()
        };
        let mut f = BlkFront::connect(guest.clone(), &paths.frontend, opts).unwrap();
        assert_eq!(f.info().max_segments, 4096);
        let len = 16 << 20;
        let data: Vec<u8> = (0..len).map(|i| (i / 4096) as u8 ^ (i as u8)).collect();
        let buf = f.alloc(len).unwrap();
        f.buf_write(&buf, 0, &data).unwrap();
        let t = f
            .submit(xenio_blkfront::Op::Write {
                offset: 4 << 20,
                buf,
            })
            .unwrap();
        let mut done = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while done.is_empty() {
            if std::time::Instant::now() >= deadline {
                // Stop the backend too, so the test fails instead of hanging.
                shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
                panic!("io_depth {io_depth}: the 16 MiB write was never answered");
            }
            f.poll(&mut done, Some(std::time::Duration::from_secs(1)))
                .unwrap();
        }
        assert_eq!(done[0].token, t);
        done[0].result.as_ref().unwrap();
        f.free(done.pop().unwrap().buf.unwrap());
        let mut back = vec![0u8; len];
        f.read_at(4 << 20, &mut back).unwrap();
        assert!(back == data, "16 MiB indirect write read back differently");
        f.close().unwrap();
        b.join().unwrap().unwrap();
    });
    let file = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(
        file[4 << 20..20 << 20]
            == (0..16 << 20)
                .map(|i| (i / 4096) as u8 ^ (i as u8))
                .collect::<Vec<u8>>()[..]
    );
}

/// More I/Os in one batch than the storage queue holds (depth 4, 64 requests in
/// flight): the queue worker must wait for room, never fail a request; whether it
/// hands the kernel one operation per system call, 4, or the whole batch (and
/// answers completions between chunks).
#[test]
fn batches_larger_than_the_storage_queue() {
    for submit_chunk in [0, 1, 4] {
        batches_larger_than_the_storage_queue_in_chunks(submit_chunk);
    }
}

fn batches_larger_than_the_storage_queue_in_chunks(submit_chunk: usize) {
    let path = image(8 << 20);
    let world = InProcess::new().unwrap();
    let dom0 = world.domain(DomId(0)).unwrap();
    let guest = Arc::new(world.domain(DomId(1)).unwrap());
    let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vbd, 51712);
    create_device(dom0.store(), &paths, &[]).unwrap();
    let storage = FileStorage::open(&path, false, Direct::Auto).unwrap();
    let config = BackendConfig {
        once: true,
        queue: QueueConfig {
            io_depth: 4,
            submit_chunk,
            reorder: xenio_blkback::reorder::ReorderMode::Off,
            ..Default::default()
        },
        ..Default::default()
    };
    let counters = Counters::default();
    let shutdown = AtomicBool::new(false);
    std::thread::scope(|s| {
        let b = s.spawn(|| {
            serve(
                &dom0,
                &paths.backend,
                &storage,
                &config,
                &counters,
                &shutdown,
            )
        });
        let mut f = BlkFront::connect(guest.clone(), &paths.frontend, Options::default()).unwrap();
        for round in 0..4u8 {
            let mut tokens = Vec::new();
            for k in 0..64u64 {
                let buf = f.alloc(4096).unwrap();
                f.buf_write(&buf, 0, &[round ^ k as u8; 4096]).unwrap();
                tokens.push(
                    f.submit(xenio_blkfront::Op::Write {
                        offset: k * 8192,
                        buf,
                    })
                    .unwrap(),
                );
            }
            let mut done = Vec::new();
            while done.len() < tokens.len() {
                f.poll(&mut done, Some(std::time::Duration::from_secs(10)))
                    .unwrap();
            }
            for d in done {
                d.result.unwrap();
                f.free(d.buf.unwrap());
            }
            for k in 0..64u64 {
                let mut b = vec![0u8; 4096];
                f.read_at(k * 8192, &mut b).unwrap();
                assert!(
                    b.iter().all(|&x| x == round ^ k as u8),
                    "chunk {submit_chunk} round {round} block {k}"
                );
            }
        }
        f.close().unwrap();
        b.join().unwrap().unwrap();
    });
    std::fs::remove_file(&path).unwrap();
}
