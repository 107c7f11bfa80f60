//! One test per friction point of issue 14 ("a custom dom0 backend in one
//! screen of code"), each written against the API a vendor sees. Points 1
//! and 4 have their own files: `errors_stay.rs` (a failed merged I/O fails
//! only its own requests) and `examples.rs` (the example programs as
//! processes).
//!
//! The storages here are written with std and `xenio_blkback` alone: no
//! platform error type to name (point 2).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xenio_blkback::storage::{
    Busy, Completion, DiskInfo, Io, IoMem, IoSeg, Storage, StorageQueue, SyncStorage, Synchronous,
};
use xenio_blkback::{Outcome, Server};
use xenio_blkfront::{BlkFront, Error as FrontError, Options};
use xenio_xenbus::platform::{InProcDomain, InProcess, Platform};
use xenio_xenbus::{DomId, Region, Store};

const FRONT_DIR: &str = "/local/domain/1/device/vbd/51712";

/// A memory disk with a configurable answer for flush and discard.
struct Mem {
    data: Mutex<Vec<u8>>,
    flush: fn() -> io::Result<()>,
    discard: fn() -> io::Result<()>,
    fail_reads_at: Option<u64>,
}

impl Mem {
    fn new(size: usize) -> Self {
        Mem {
            data: Mutex::new(vec![0; size]),
            flush: || Ok(()),
            discard: || Ok(()),
            fail_reads_at: None,
        }
    }
}

impl SyncStorage for Mem {
    fn info(&self) -> DiskInfo {
        DiskInfo {
            sectors: self.data.lock().unwrap().len() as u64 / 512,
            flush: true,
            discard: Some(xenio_blkback::storage::DiscardInfo {
                granularity: 4096,
                alignment: 0,
            }),
            ..Default::default()
        }
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.fail_reads_at == Some(offset) {
            return Err(io::Error::other("the disk is on fire"));
        }
        buf.copy_from_slice(&self.data.lock().unwrap()[offset as usize..][..buf.len()]);
        Ok(())
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.data.lock().unwrap()[offset as usize..][..data.len()].copy_from_slice(data);
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        (self.flush)()
    }
    fn discard(&self, _offset: u64, _len: u64) -> io::Result<()> {
        (self.discard)()
    }
}

/// Serve `storage` with `server` (which creates the device) on domain 0 of an
/// in-process world, connect domain 1's blkfront, run `f`, stop.
fn with_device<S: Storage>(
    server: Server,
    storage: &S,
    options: Options,
    f: impl FnOnce(&mut BlkFront<InProcDomain>, &Server, &InProcDomain),
) -> Outcome {
    let world = InProcess::new().unwrap();
    let dom0 = world.domain(DomId(0)).unwrap();
    let server = server.create_device(true);
    let stop = server.stop_flag();
    std::thread::scope(|s| {
        let backend = s.spawn(|| server.serve_on(&dom0, storage));
        let guest = Arc::new(world.domain(DomId(1)).unwrap());
        let mut front = BlkFront::connect(guest, FRONT_DIR, options).unwrap();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            f(&mut front, &server, &dom0)
        }));
        front.close().unwrap();
        stop.store(true, Ordering::Relaxed);
        let outcome = backend.join().unwrap();
        if let Err(p) = run {
            std::panic::resume_unwind(p);
        }
        outcome.unwrap()
    })
}

/// Point 2: what each storage error means is the API's, not the engine's. A
/// storage says "busy" with a typed [`Busy`] (not a platform error) and its
/// requests are submitted again, not failed; `Unsupported` from flush or
/// discard is `EOPNOTSUPP` (the frontend's `NotSupported`), any other error
/// `ERROR` (the frontend's `Io`).
#[test]
fn friction_2_errors_are_std_and_mean_what_the_table_says() {
    /// A queue that holds one operation at a time and says Busy otherwise.
    struct OneAtATime {
        disk: Synchronous<Mem>,
        busy: Arc<AtomicU64>,
    }
    struct OneQueue {
        inner: xenio_blkback::storage::SyncQueue<Mem>,
        held: Option<Completion>,
        busy: Arc<AtomicU64>,
    }
    impl Storage for OneAtATime {
        type Queue = OneQueue;
        fn info(&self) -> DiskInfo {
            self.disk.info()
        }
        fn queue(&self, depth: u32) -> io::Result<OneQueue> {
            Ok(OneQueue {
                inner: self.disk.queue(depth)?,
                held: None,
                busy: self.busy.clone(),
            })
        }
    }
    impl StorageQueue for OneQueue {
        fn submit(&mut self, tag: u64, io: Io) -> io::Result<()> {
            if self.held.is_some() {
                self.busy.fetch_add(1, Ordering::Relaxed);
                return Err(Busy.into());
            }
            self.inner.submit(tag, io)?;
            let mut done = Vec::new();
            self.inner.reap(&mut done)?;
            self.held = done.pop();
            Ok(())
        }
        fn complete(
            &mut self,
            out: &mut Vec<Completion>,
            _wait_for: usize,
            _timeout: Option<Duration>,
        ) -> io::Result<()> {
            out.extend(self.held.take());
            Ok(())
        }
        /// Nothing finishes unless waited for: the queue stays full.
        fn reap(&mut self, _out: &mut Vec<Completion>) -> io::Result<()> {
            Ok(())
        }
    }

    let mut mem = Mem::new(1 << 20);
    mem.flush = || Err(io::ErrorKind::Unsupported.into());
    mem.discard = || Err(io::Error::from_raw_os_error(95)); // EOPNOTSUPP
    mem.fail_reads_at = Some(8192);
    let storage = OneAtATime {
        disk: Synchronous::new(mem),
        busy: Arc::new(AtomicU64::new(0)),
    };
    with_device(Server::new(), &storage, Options::default(), |disk, _, _| {
        // Eight writes in flight at once against a queue of one: all succeed.
        let bufs: Vec<_> = (0..8).map(|_| disk.alloc(4096).unwrap()).collect();
        let mut tokens = Vec::new();
        for (i, buf) in bufs.into_iter().enumerate() {
            disk.buf_write(&buf, 0, &[i as u8; 4096]).unwrap();
            let op = xenio_blkfront::Op::Write {
                offset: i as u64 * 65536,
                buf,
            };
            tokens.push(disk.submit(op).unwrap());
        }
        let mut done = Vec::new();
        while done.len() < tokens.len() {
            disk.poll(&mut done, Some(Duration::from_secs(10))).unwrap();
        }
        for d in done {
            d.result.unwrap();
        }
        assert!(
            matches!(disk.flush(), Err(FrontError::NotSupported(_))),
            "unsupported flush"
        );
        assert!(
            matches!(disk.discard(0, 4096), Err(FrontError::NotSupported(_))),
            "EOPNOTSUPP discard"
        );
        let mut buf = [0u8; 4096];
        assert!(
            matches!(disk.read_at(8192, &mut buf), Err(FrontError::Io(_))),
            "a failed read"
        );
    });
    assert!(
        storage.busy.load(Ordering::Relaxed) > 0,
        "the queue was never busy"
    );
}

/// Point 3: a synchronous storage needs no asynchronous glue (the
/// [`SyncStorage`] above is four methods), and a copy between segment memory
/// and a buffer is one line for read-write and read-only memory alike.
#[test]
fn friction_3_sync_storage_and_one_line_segment_copies() {
    let rw = Arc::new(Region::anonymous(4096).unwrap());
    let seg = IoSeg::new(rw.clone(), 512, 1024);
    seg.write_from(&[7; 1024]).unwrap();
    let mut back = [0u8; 1024];
    seg.read_into(&mut back).unwrap();
    assert_eq!(back, [7; 1024]);
    let ro = Arc::new(Region::anonymous(4096).unwrap().into_read_only());
    let ro_seg = IoSeg::new(IoMem::ReadOnly(ro), 0, 512);
    ro_seg.read_into(&mut [0u8; 512]).unwrap();
    assert_eq!(
        ro_seg.write_from(&[1; 512]).unwrap_err().kind(),
        io::ErrorKind::PermissionDenied,
        "a read into read-only memory"
    );
    // Several segments as one buffer, both ways.
    let segs = [IoSeg::new(rw.clone(), 0, 512), IoSeg::new(rw, 3584, 512)];
    IoSeg::scatter(&segs, &[9; 1024]).unwrap();
    let mut all = [0u8; 1024];
    IoSeg::gather(&segs, &mut all).unwrap();
    assert_eq!(all, [9; 1024]);

    // And the SyncStorage serves real I/O through the adapter.
    let storage = Synchronous::new(Mem::new(1 << 20));
    with_device(Server::new(), &storage, Options::default(), |disk, _, _| {
        disk.write_at(4096, &[5; 8192]).unwrap();
        let mut back = vec![0u8; 8192];
        disk.read_at(4096, &mut back).unwrap();
        assert_eq!(back, vec![5; 8192]);
    });
    assert_eq!(storage.disk().data.lock().unwrap()[4096..12288], [5; 8192]);
}

/// Point 5: `BlkFront::connect` waits (bounded, `Options::device_timeout`)
/// for the device to appear and its backend to start; when it does not, the
/// error names the path and what is missing (not a bare `ENOENT`).
#[test]
fn friction_5_connect_waits_for_the_device_and_names_what_is_missing() {
    let world = InProcess::new().unwrap();
    let guest = Arc::new(world.domain(DomId(1)).unwrap());
    // Nothing there: the error says which key is missing, after the wait.
    let t = Instant::now();
    let quick = Options {
        device_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let err = match BlkFront::connect(guest.clone(), FRONT_DIR, quick) {
        Err(e) => e,
        Ok(_) => panic!("connected to nothing"),
    };
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(
        matches!(&err, FrontError::NotReady { path, .. } if path == &format!("{FRONT_DIR}/backend")),
        "{err}"
    );
    assert!(err.to_string().contains("does not exist"), "{err}");

    // The frontend first, the backend half a second later: connect waits.
    let dom0 = world.domain(DomId(0)).unwrap();
    let storage = Synchronous::new(Mem::new(1 << 20));
    let server = Server::new().create_device(true).once(true);
    std::thread::scope(|s| {
        let front = s.spawn(|| {
            let mut disk = BlkFront::connect(guest.clone(), FRONT_DIR, Options::default())?;
            let mut b = [1u8; 512];
            disk.read_at(0, &mut b)?;
            disk.close()
        });
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(server.serve_on(&dom0, &storage).unwrap(), Outcome::Closed);
        front.join().unwrap().unwrap();
    });
}

/// Point 6: stopping a backend (the stop flag, as SIGTERM sets it) closes
/// the device cleanly: its nodes are removed and the frontend's next I/O
/// fails at once with `Closed`, not after its whole timeout (30 s).
#[test]
fn friction_6_stopping_closes_cleanly_and_the_frontend_knows_at_once() {
    let storage = Synchronous::new(Mem::new(1 << 20));
    let world = InProcess::new().unwrap();
    let dom0 = world.domain(DomId(0)).unwrap();
    let server = Server::new().create_device(true);
    let stop = server.stop_flag();
    std::thread::scope(|s| {
        let backend = s.spawn(|| server.serve_on(&dom0, &storage));
        let guest = Arc::new(world.domain(DomId(1)).unwrap());
        let mut disk = BlkFront::connect(guest, FRONT_DIR, Options::default()).unwrap();
        disk.write_at(0, &[3; 4096]).unwrap();
        stop.store(true, Ordering::Relaxed);
        // The backend stops serving, says Closing and waits for the frontend.
        let state = "/local/domain/0/backend/vbd/1/51712/state";
        while dom0
            .store()
            .read_string(xenio_xenbus::Tx::NONE, state)
            .unwrap()
            != "5"
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let t = Instant::now();
        let mut buf = [0u8; 4096];
        let err = disk.read_at(0, &mut buf).unwrap_err();
        assert!(matches!(err, FrontError::Closed(_)), "{err}");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the frontend waited {:?} to learn the device was gone",
            t.elapsed()
        );
        assert_eq!(backend.join().unwrap().unwrap(), Outcome::Shutdown);
        let store = dom0.store();
        for d in [FRONT_DIR, "/local/domain/0/backend/vbd/1/51712"] {
            assert!(
                store.read_opt(xenio_xenbus::Tx::NONE, d).unwrap().is_none(),
                "{d} left behind"
            );
        }
    });
}

/// Point 7: failed I/O is reported to the program (a counter, the last
/// failure, a callback), not only through `tracing`; the counters and stop
/// flag come from the builder, reachable before and after serving;
/// `DiskInfo` has a `Default`; a local run leaves no pool files behind.
#[test]
fn friction_7_failures_reported_handles_from_the_builder_and_no_files_left() {
    let info = DiskInfo::default();
    assert_eq!(
        (info.sectors, info.sector_size, info.flush),
        (0, 512, false)
    );

    let mut mem = Mem::new(1 << 20);
    mem.fail_reads_at = Some(12288);
    let storage = Synchronous::new(mem);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hook = seen.clone();
    let server = Server::new().on_io_error(move |f| hook.lock().unwrap().push(f.clone()));
    let counters = server.counters();
    assert!(!server.stop_flag().load(Ordering::Relaxed));
    with_device(server, &storage, Options::default(), |disk, _, _| {
        let mut buf = [0u8; 4096];
        disk.read_at(12288, &mut buf).unwrap_err();
        disk.read_at(0, &mut buf).unwrap();
    });
    assert_eq!(counters.io_errors.load(Ordering::Relaxed), 1);
    let last = counters.last_io_error().expect("the failure is kept");
    assert_eq!((last.op, last.offset, last.len), ("read", 12288, 4096));
    assert!(last.message.contains("on fire"), "{last}");
    assert_eq!(seen.lock().unwrap().as_slice(), &[last]);

    // The local platform: a frontend domain's grant table and pool files go
    // with it.
    let run = tempfile::Builder::new()
        .prefix("friction7-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let _store = xenio_sdk::store::Daemon::start(xenio_sdk::store::DaemonConfig {
        domains: vec![DomId(1)],
        ..xenio_sdk::store::DaemonConfig::new(run.path())
    })
    .unwrap();
    let dom0 = xenio_xenbus::LocalPlatform::connect(run.path(), DomId(0)).unwrap();
    let storage = Synchronous::new(Mem::new(1 << 20));
    let server = Server::new().create_device(true).once(true);
    std::thread::scope(|s| {
        let backend = s.spawn(|| server.serve_on(&dom0, &storage));
        let guest = Arc::new(xenio_xenbus::LocalPlatform::connect(run.path(), DomId(1)).unwrap());
        let mut disk = BlkFront::connect(guest, FRONT_DIR, Options::default()).unwrap();
        disk.write_at(0, &[1; 4096]).unwrap();
        assert!(run.path().join("domains/1/pool").exists());
        disk.close().unwrap();
        assert_eq!(backend.join().unwrap().unwrap(), Outcome::Closed);
    });
    for f in ["gnttab", "maptrack", "pool"] {
        let p = run.path().join("domains/1").join(f);
        assert!(!p.exists(), "{} left behind", p.display());
    }
}
