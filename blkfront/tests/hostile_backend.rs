//! blkfront against a hand-driven hostile backend (raw ring entries, domain 0,
//! on the local platform: the store daemon, grants through the pool file, event
//! channels through FIFOs): responses with ids never issued, duplicates, the
//! wrong operation, status values outside OKAY/ERROR/EOPNOTSUPP, a response
//! producer far ahead, and no response at all. blkfront reports each as an
//! error of this device (`Error::Backend`, `Error::Ring`, `Error::Io`,
//! `Error::Timeout`), never panics or hangs, and completes no request twice;
//! good responses in the same batch as a bad one still complete.

use std::sync::Arc;
use std::time::{Duration, Instant};
use xenio_blkfront::{BlkFront, Done, Error, Op, Options, Token};
use xenio_ring::{BackRing, SharedMemory};
use xenio_xen_sys::blkif::*;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenbus::handshake::{DeviceKind, DevicePaths, Endpoint, create_device, frontend_ready};
use xenio_xenbus::platform::{LocalPlatform, Platform};
use xenio_xenbus::xenstore::daemon::{Daemon, DaemonConfig};
use xenio_xenbus::*;

const T: Duration = Duration::from_secs(10);
const SECTORS: u64 = 2048;

type Chan = <<LocalPlatform as Platform>::Events as EventChannels>::Channel;

struct World {
    _run: tempfile::TempDir,
    _daemon: Daemon,
    dom0: LocalPlatform,
    guest: Arc<LocalPlatform>,
    paths: DevicePaths,
}

fn world() -> World {
    let run = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(DaemonConfig {
        domains: vec![DomId(1)],
        ..DaemonConfig::new(run.path())
    })
    .unwrap();
    let dom0 = LocalPlatform::connect(run.path(), DomId(0)).unwrap();
    let guest = Arc::new(LocalPlatform::connect(run.path(), DomId(1)).unwrap());
    let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vbd, 51712);
    create_device(dom0.store(), &paths, &[]).unwrap();
    World {
        _run: run,
        _daemon: daemon,
        dom0,
        guest,
        paths,
    }
}

/// The hostile backend's end of one connection.
struct Back {
    ring: BackRing<BlkifRequest, BlkifResponse, Region>,
    ch: Chan,
}

impl Back {
    /// Play the backend's handshake: one-page ring, one queue, no indirect
    /// requests, no persistent grants, a 1 MiB disk.
    fn connect(dom0: &LocalPlatform, dir: &str) -> Back {
        let mut ep = Endpoint::backend(dom0.store(), dir).unwrap();
        ep.switch(XenbusState::InitWait, &[]).unwrap();
        ep.wait_peer(T, frontend_ready).unwrap();
        let key = |k: &str| -> u32 { ep.peer_key(k).unwrap().unwrap().trim().parse().unwrap() };
        let (ring_ref, port) = (key("ring-ref"), key("event-channel"));
        let region = dom0
            .mapper()
            .unwrap()
            .map(DomId(1), &[GrantRef(ring_ref)])
            .unwrap();
        let ring = BackRing::attach(region).unwrap();
        let ch = dom0
            .events()
            .bind_interdomain(DomId(1), Port(port))
            .unwrap();
        ep.switch(
            XenbusState::Connected,
            &[
                ("sectors", SECTORS.to_string()),
                ("sector-size", "512".into()),
                ("feature-flush-cache", "1".into()),
            ],
        )
        .unwrap();
        Back { ring, ch }
    }

    /// The next `n` requests the frontend sends.
    fn requests(&mut self, n: usize) -> Vec<BlkifRequest> {
        let mut out = Vec::new();
        let t = Instant::now();
        while out.len() < n {
            match self.ring.take_request().unwrap() {
                Some(r) => out.push(r),
                None => {
                    assert!(t.elapsed() < T, "{} of {n} requests", out.len());
                    if !self.ring.final_check_for_requests().unwrap() {
                        self.ch.wait(Some(Duration::from_millis(20))).unwrap();
                    }
                }
            }
        }
        out
    }

    /// Put responses on the ring, publish them and notify.
    fn answer(&mut self, rsps: &[BlkifResponse]) {
        for r in rsps {
            self.ring.push_response(r).unwrap();
        }
        let _ = self.ring.push_responses_and_check_notify();
        self.ch.notify().unwrap();
    }
}

fn rsp(id: u64, operation: u8, status: i16) -> BlkifResponse {
    BlkifResponse::new(id, operation, status)
}

/// What `poll` gives until `want` completions came (`want` 0: until an error
/// came), at most 2 s: the completions, and every error it returned.
fn gather(f: &mut BlkFront<LocalPlatform>, want: usize) -> (Vec<Done>, Vec<Error>) {
    let (mut done, mut errors) = (Vec::new(), Vec::new());
    let t = Instant::now();
    while (done.len() < want || want == 0 && errors.is_empty())
        && t.elapsed() < Duration::from_secs(2)
    {
        if let Err(e) = f.poll(&mut done, Some(Duration::from_millis(50))) {
            errors.push(e);
        }
    }
    (done, errors)
}

/// Nothing more completes for a while (no request is completed twice).
fn nothing_more(f: &mut BlkFront<LocalPlatform>) {
    let mut more = Vec::new();
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(300) {
        let _ = f.poll(&mut more, Some(Duration::from_millis(50)));
    }
    assert!(more.is_empty(), "completed again: {more:?}");
}

fn opts() -> Options {
    Options {
        max_ring_page_order: 0,
        indirect_segments: 0,
        persistent: false,
        pool_pages: 64,
        timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

fn read(f: &mut BlkFront<LocalPlatform>, sector: u64) -> Token {
    let buf = f.alloc(4096).unwrap();
    f.submit(Op::Read {
        offset: sector * 512,
        buf,
    })
    .unwrap()
}

/// Connect blkfront (domain 1) to the hostile backend; run `body`.
fn scenario(body: impl FnOnce(&mut BlkFront<LocalPlatform>, &mut Back)) {
    let w = world();
    std::thread::scope(|s| {
        let b = s.spawn(|| Back::connect(&w.dom0, &w.paths.backend));
        let mut f = BlkFront::connect(w.guest.clone(), &w.paths.frontend, opts()).unwrap();
        let mut back = b.join().unwrap();
        assert_eq!(f.size(), SECTORS * 512);
        body(&mut f, &mut back);
    });
}

#[test]
fn unknown_duplicate_and_wrong_operation_responses_are_errors_and_complete_nothing_twice() {
    scenario(|f, back| {
        // A backend may put at most one response on the ring per request it
        // took (more breaks the ring, see below): take 12, answer 13 times.
        let tokens: Vec<Token> = (0..12).map(|i| read(f, 8 * i)).collect();
        let reqs = back.requests(12);
        let (ia, ib, ic) = (reqs[0].id, reqs[1].id, reqs[2].id);

        // An id never issued (another queue, a slot past the ring, a stale
        // generation) and a response with the wrong operation.
        for bad in [
            rsp(ia ^ (7 << 32), BLKIF_OP_READ, BLKIF_RSP_OKAY),
            rsp(0xffff, BLKIF_OP_READ, BLKIF_RSP_OKAY),
            rsp(ia ^ (1 << 16), BLKIF_OP_READ, BLKIF_RSP_OKAY),
            rsp(ia, BLKIF_OP_WRITE, BLKIF_RSP_OKAY),
            rsp(ia, BLKIF_OP_DISCARD, BLKIF_RSP_OKAY),
        ] {
            back.answer(&[bad]);
            let (done, errors) = gather(f, 0);
            assert!(done.is_empty(), "{bad:?} completed {done:?}");
            assert!(
                matches!(errors.first(), Some(Error::Backend { .. })),
                "{bad:?}: {errors:?}"
            );
        }
        assert_eq!(f.in_flight(), 12);

        // A bad response in front of two good ones: the error, and the good
        // ones still complete.
        back.answer(&[
            rsp(0xdead_beef, BLKIF_OP_READ, BLKIF_RSP_OKAY),
            rsp(ia, BLKIF_OP_READ, BLKIF_RSP_OKAY),
            rsp(ib, BLKIF_OP_READ, BLKIF_RSP_OKAY),
        ]);
        let (done, errors) = gather(f, 2);
        assert!(
            matches!(errors.first(), Some(Error::Backend { .. })),
            "{errors:?}"
        );
        let mut got: Vec<Token> = done.iter().map(|d| d.token).collect();
        got.sort();
        assert_eq!(got, tokens[..2], "{done:?}");
        assert!(done.iter().all(|d| d.result.is_ok()));

        // Duplicates of answered requests: errors, not second completions,
        // also once their slot holds a new request (the id's generation differs).
        back.answer(&[rsp(ia, BLKIF_OP_READ, BLKIF_RSP_OKAY)]);
        let (again, errors) = gather(f, 0);
        assert!(again.is_empty(), "{again:?}");
        assert!(matches!(errors.first(), Some(Error::Backend { .. })));
        let d = read(f, 8 * 12);
        let new = back.requests(1)[0];
        assert_eq!(
            new.id & 0xffff,
            ib & 0xffff,
            "the new request reuses a slot"
        );
        back.answer(&[
            rsp(ib, BLKIF_OP_READ, BLKIF_RSP_OKAY),
            rsp(ic, BLKIF_OP_READ, BLKIF_RSP_OKAY),
            rsp(ic, BLKIF_OP_READ, BLKIF_RSP_OKAY),
            rsp(new.id, BLKIF_OP_READ, BLKIF_RSP_OKAY),
        ]);
        let (done, errors) = gather(f, 2);
        assert!(!errors.is_empty());
        assert!(errors.iter().all(|e| matches!(e, Error::Backend { .. })));
        let mut got: Vec<Token> = done.iter().map(|d| d.token).collect();
        got.sort();
        assert_eq!(got, vec![tokens[2], d], "{done:?}");
        nothing_more(f);
        // The nine requests the backend spent its responses on stay in flight.
        assert_eq!(f.in_flight(), 9);
    });
}

#[test]
fn status_values_outside_the_protocol_are_io_errors() {
    scenario(|f, back| {
        let statuses = [1i16, 2, -3, i16::MAX, i16::MIN, 0x100];
        let tokens: Vec<Token> = (0..statuses.len()).map(|i| read(f, 8 * i as u64)).collect();
        let reqs = back.requests(statuses.len());
        let rsps: Vec<BlkifResponse> = reqs
            .iter()
            .zip(statuses)
            .map(|(r, st)| rsp(r.id, r.operation, st))
            .collect();
        back.answer(&rsps);
        let (done, errors) = gather(f, statuses.len());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(done.len(), statuses.len());
        for d in &done {
            assert!(
                matches!(d.result, Err(Error::Io(_))),
                "{:?}: a status outside OKAY/ERROR/EOPNOTSUPP must fail the op",
                d
            );
        }
        let mut got: Vec<Token> = done.iter().map(|d| d.token).collect();
        got.sort();
        assert_eq!(got, tokens);
        // The protocol's own values still mean what they say.
        let ok = read(f, 0);
        let unsupported = read(f, 8);
        let reqs = back.requests(2);
        back.answer(&[
            rsp(reqs[0].id, BLKIF_OP_READ, BLKIF_RSP_OKAY),
            rsp(reqs[1].id, BLKIF_OP_READ, BLKIF_RSP_EOPNOTSUPP),
        ]);
        let (done, _) = gather(f, 2);
        for d in &done {
            match d.token {
                t if t == ok => assert!(d.result.is_ok()),
                t if t == unsupported => {
                    assert!(matches!(d.result, Err(Error::NotSupported(_))))
                }
                t => panic!("unexpected completion {t:?}"),
            }
        }
        nothing_more(f);
    });
}

#[test]
fn a_response_producer_far_ahead_breaks_the_ring_for_good() {
    scenario(|f, back| {
        let _ = read(f, 0);
        let req = back.requests(1)[0];
        back.answer(&[rsp(req.id, BLKIF_OP_READ, BLKIF_RSP_OKAY)]);
        let (done, _) = gather(f, 1);
        assert_eq!(done.len(), 1);
        let _ = read(f, 8);
        let _ = back.requests(1);
        // rsp_prod (word 2 of the shared ring) 1000 entries past the requests.
        back.ring.memory().words()[2].store(1002, std::sync::atomic::Ordering::Release);
        back.ch.notify().unwrap();
        for _ in 0..3 {
            let t = Instant::now();
            let mut out = Vec::new();
            let r = f.poll(&mut out, Some(Duration::from_secs(1)));
            assert!(matches!(r, Err(Error::Ring(_))), "{r:?}");
            assert!(out.is_empty());
            assert!(t.elapsed() < Duration::from_secs(2), "poll hung");
        }
        // The blocking calls fail too, and do not hang.
        let t = Instant::now();
        let mut b = [0u8; 512];
        assert!(f.read_at(0, &mut b).is_err());
        assert!(t.elapsed() < Duration::from_secs(5));
    });
}

#[test]
fn a_backend_that_never_answers_is_a_timeout_not_a_hang() {
    scenario(|f, back| {
        let t = Instant::now();
        let mut b = [0u8; 4096];
        let r = f.read_at(0, &mut b);
        assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "gave up after {:?}",
            t.elapsed()
        );
        // The request did reach the backend, which kept it.
        assert_eq!(back.requests(1).len(), 1);
    });
}
