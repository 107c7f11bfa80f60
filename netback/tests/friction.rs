//! One test per friction point of issue 14 ("a custom dom0 backend in one
//! screen of code") that applies to a network backend, each written against
//! the API a vendor sees: `Frames` and `Network` in `std::io` terms, served
//! with the `Vif` builder to xenio's netfront, both ends in one process (the
//! in-process platform). Point 4 (a backend as a real program) is
//! `examples.rs`: the echo backend and its client as processes, SIGTERM
//! included.
//!
//! The networks here are written with std and `xenio_netback` alone: no
//! platform error type to name (point 2).

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xenio_netback::{Counters, FrameFailure, Frames, Meta, Network, Outcome, Received, Sent, Vif};
use xenio_netfront::{Error as FrontError, NetFront, Options};
use xenio_xenbus::platform::{InProcDomain, InProcess, Platform};
use xenio_xenbus::{DomId, Store, Tx};

const BACKEND_DIR: &str = "/local/domain/0/backend/vif/1/0";
const FRONTEND_DIR: &str = "/local/domain/1/device/vif/0";
const MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x01];

/// An Ethernet frame of 60 bytes whose byte 14 (the first after the header)
/// is `tag`.
fn frame(tag: u8) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].fill(0xff);
    f[6..12].copy_from_slice(&MAC);
    f[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental ethertype
    f[14] = tag;
    f
}

/// Until `done` holds, letting the frontend take its responses and frames
/// (bounded: a broken backend fails the test instead of hanging it).
fn until(
    nic: &mut NetFront<InProcDomain>,
    what: &str,
    mut done: impl FnMut(&mut NetFront<InProcDomain>) -> bool,
) {
    let t = Instant::now();
    while !done(nic) {
        nic.wait(Duration::from_millis(10)).unwrap();
        assert!(t.elapsed() < Duration::from_secs(20), "never: {what}");
    }
}

/// Serve `network` with `vif` (which creates the device) on domain 0 of an
/// in-process world, connect domain 1's netfront, run `f`, then stop the vif
/// (as SIGTERM would) and return how serving ended.
fn with_vif<N: Network>(
    vif: Vif,
    network: &N,
    f: impl FnOnce(&mut NetFront<InProcDomain>, &Counters),
) -> Outcome {
    let world = InProcess::new().unwrap();
    let dom0 = world.domain(DomId(0)).unwrap();
    let vif = vif.create_device(MAC);
    let (stop, counters) = (vif.stopper(), vif.counters());
    std::thread::scope(|s| {
        let backend = s.spawn(|| vif.serve_on(&dom0, network));
        let guest = Arc::new(world.domain(DomId(1)).unwrap());
        let mut nic = connect(&guest);
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut nic, &counters)));
        stop.store(true, Ordering::Relaxed);
        if run.is_ok() {
            // The frontend answers the backend's Closing when it looks.
            let _ = (0..500).find_map(|_| nic.wait(Duration::from_millis(10)).err());
        }
        let outcome = backend.join().unwrap();
        if let Err(p) = run {
            std::panic::resume_unwind(p);
        }
        outcome.unwrap()
    })
}

/// Domain 1's netfront, once the device is there (`NetFront::connect` does
/// not wait for a device to appear, as `BlkFront::connect` does).
fn connect(guest: &Arc<InProcDomain>) -> NetFront<InProcDomain> {
    for _ in 0..2000 {
        match NetFront::connect(guest.clone(), FRONTEND_DIR, Options::default()) {
            Ok(n) => return n,
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    panic!("the device never appeared");
}

/// Frames in a shared list; `send` answers by the frame's tag.
#[derive(Clone, Default)]
struct Tagged {
    delivered: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Times `send` said busy (typed or `WouldBlock`).
    busy_said: Arc<AtomicU32>,
}

impl Frames for Tagged {
    fn send(&mut self, frame: &[u8], _meta: &Meta) -> io::Result<Sent> {
        match frame[14] {
            // Filtered: a failure of this packet only.
            0xee => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "dropped by rule 3",
            )),
            // Busy twice (typed, then as std's WouldBlock), then taken.
            0xbb if self.busy_said.fetch_add(1, Ordering::Relaxed) == 0 => Ok(Sent::Busy),
            0xbb if self.busy_said.load(Ordering::Relaxed) == 2 => {
                Err(io::ErrorKind::WouldBlock.into())
            }
            _ => {
                self.delivered.lock().unwrap().push(frame.to_vec());
                Ok(Sent::Delivered)
            }
        }
    }
    fn recv(&mut self, _buf: &mut [u8]) -> io::Result<Option<Received>> {
        Ok(None)
    }
}

impl Network for Tagged {
    type Queue = Tagged;
    fn queue(&self, _index: u32, _count: u32) -> io::Result<Tagged> {
        Ok(self.clone())
    }
}

/// Point 2: what each outcome of `Frames::send` means is the API's (the
/// table in `frames`), in std terms. A failed packet is answered with an
/// error (the frontend counts one tx error) and the ring goes on; `Busy` and
/// `WouldBlock` are back-pressure: the packet is offered again, delivered
/// once, in order, and is no error to the frontend.
///
/// Fails on: busy mapped to a failure or a drop (the busy frame never
/// delivered, two frontend errors); an error mapped to busy (the filtered
/// frame offered forever, the last frame never delivered); a failed packet
/// answered OKAY (no frontend error) or taking the ring down with it.
#[test]
fn friction_2_std_errors_and_busy_mean_what_the_table_says() {
    let net = Tagged::default();
    let outcome = with_vif(Vif::new(), &net, |nic, counters| {
        for tag in [1, 0xee, 0xbb, 2] {
            assert!(nic.send(&frame(tag)).unwrap());
        }
        until(nic, "four answers and three frames delivered", |nic| {
            nic.counters().tx_errors.load(Ordering::Relaxed) >= 1
                && net.delivered.lock().unwrap().len() >= 3
        });
        let tags: Vec<u8> = net
            .delivered
            .lock()
            .unwrap()
            .iter()
            .map(|f| f[14])
            .collect();
        assert_eq!(tags, [1, 0xbb, 2], "delivered once each, in ring order");
        assert_eq!(nic.counters().tx_errors.load(Ordering::Relaxed), 1);
        assert_eq!(counters.tx_network_errors.load(Ordering::Relaxed), 1);
        assert_eq!(counters.tx_busy.load(Ordering::Relaxed), 2);
        assert_eq!(counters.tx_packets.load(Ordering::Relaxed), 3);
    });
    assert_eq!(outcome, Outcome::Shutdown);
}

/// A reflector as simply as it can be written: a queue of frames, `send`
/// pushes, `recv` pops, no descriptor to poll, no thread, no future.
#[derive(Clone, Default)]
struct Reflector(Arc<Mutex<VecDeque<Vec<u8>>>>);

impl Frames for Reflector {
    fn send(&mut self, frame: &[u8], _meta: &Meta) -> io::Result<Sent> {
        self.0.lock().unwrap().push_back(frame.to_vec());
        Ok(Sent::Delivered)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        Ok(self.0.lock().unwrap().pop_front().map(|f| {
            buf[..f.len()].copy_from_slice(&f);
            Received {
                len: f.len(),
                meta: Meta::default(),
            }
        }))
    }
}

impl Network for Reflector {
    type Queue = Reflector;
    fn queue(&self, _index: u32, _count: u32) -> io::Result<Reflector> {
        Ok(self.clone())
    }
}

/// Point 3: a synchronous network needs no asynchronous glue. The
/// reflector above (two plain methods, no `ready_fd`) gets every frame the
/// frontend sends back to it, byte for byte and in order, frames of every
/// size up to the MTU.
///
/// Fails on: a queue that only reads the network when a descriptor polls
/// readable (none here: nothing ever comes back); one that reads it only
/// right after a send (frames left behind when the network had nothing at
/// that moment show up as a count short).
#[test]
fn friction_3_a_synchronous_network_needs_no_async_glue() {
    let net = Reflector::default();
    with_vif(Vif::new(), &net, |nic, _| {
        let sent: Vec<Vec<u8>> = (0..40u16)
            .map(|i| {
                let mut f = frame(i as u8);
                f.resize(60 + usize::from(i) * 36, i as u8);
                f
            })
            .collect();
        for f in &sent {
            until(nic, "room on the tx ring", |nic| nic.send(f).unwrap());
        }
        let mut back = Vec::new();
        until(nic, "every frame back", |nic| {
            let mut buf = Vec::new();
            while nic.recv(&mut buf).unwrap() {
                back.push(std::mem::take(&mut buf));
            }
            back.len() >= sent.len()
        });
        assert_eq!(back, sent);
    });
}

/// Point 6: stopping a `Vif` (its stop flag; SIGTERM with
/// `handle_signals`, shown as processes in `examples.rs`) closes the device
/// cleanly: `serve` returns `Shutdown`, the frontend's next look at the
/// backend says the device is closed (`Error::Backend`, at once, not a
/// store timeout), and no store node of the device is left. Both when the
/// frontend is looking as the backend stops (it closes in step) and when it
/// looks only after the device is gone (the backend gave up waiting).
///
/// Fails on: a stop that leaves the backend `Connected` or only stops the
/// queues (the frontend never hears: `never`); one that leaves the
/// directories in the store (the reads below); one that says `Closing` but
/// never `online` 0 (the frontend reconnects instead of failing); a
/// frontend that reads the removed directory's keys (a store `EACCES`, not
/// `Backend`: what netfront did before this test).
#[test]
fn friction_6_a_stopped_vif_leaves_no_nodes_and_the_frontend_knows() {
    for look_later in [false, true] {
        let world = InProcess::new().unwrap();
        let dom0 = world.domain(DomId(0)).unwrap();
        let net = Reflector::default();
        let vif = Vif::new()
            .create_device(MAC)
            .close_timeout(Duration::from_millis(100));
        let stop = vif.stopper();
        std::thread::scope(|s| {
            let backend = s.spawn(|| vif.serve_on(&dom0, &net));
            let guest = Arc::new(world.domain(DomId(1)).unwrap());
            let mut nic = connect(&guest);
            assert!(nic.send(&frame(7)).unwrap());
            until(&mut nic, "the frame reflected", |nic| {
                nic.recv(&mut Vec::new()).unwrap()
            });
            stop.store(true, Ordering::Relaxed);
            let mut backend = Some(backend);
            let mut join = || backend.take().unwrap().join().unwrap().unwrap();
            let outcome = look_later.then(&mut join);
            // The frontend: told, not left waiting.
            let seen = (0..500).find_map(|_| {
                let r = nic
                    .recv(&mut Vec::new())
                    .and_then(|_| nic.wait(Duration::from_millis(10)));
                r.err()
            });
            assert!(
                matches!(&seen, Some(FrontError::Backend { what, .. }) if what.contains("closed the device")),
                "look later {look_later}: {seen:?}"
            );
            let outcome = outcome.unwrap_or_else(join);
            assert_eq!(outcome, Outcome::Shutdown);
        });
        for dir in [BACKEND_DIR, FRONTEND_DIR] {
            assert!(
                dom0.store().read_opt(Tx::NONE, dir).unwrap().is_none(),
                "{dir} is left"
            );
        }
    }
}

/// A network whose `recv` fails once when told to.
#[derive(Clone, Default)]
struct Flaky {
    inner: Tagged,
    fail_recv: Arc<AtomicBool>,
}

impl Frames for Flaky {
    fn send(&mut self, frame: &[u8], meta: &Meta) -> io::Result<Sent> {
        self.inner.send(frame, meta)
    }
    fn recv(&mut self, _buf: &mut [u8]) -> io::Result<Option<Received>> {
        if self.fail_recv.swap(false, Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(libc_enetdown()));
        }
        Ok(None)
    }
}

/// ENETDOWN on Linux.
fn libc_enetdown() -> i32 {
    nix::errno::Errno::ENETDOWN as i32
}

impl Network for Flaky {
    type Queue = Flaky;
    fn queue(&self, _index: u32, _count: u32) -> io::Result<Flaky> {
        Ok(self.clone())
    }
}

/// Point 7: failed frames are reported to the program, not only to
/// `tracing` (silent without a subscriber): `Vif::on_network_error` gets
/// each failure (what, how big, the error's kind, errno and text) on the
/// queue's thread, and the counters count it (`tx_network_errors`,
/// `rx_network_errors`); the handles (stop flag, counters) come from the
/// builder.
///
/// Fails on: failures only logged (the hook sees nothing); a send failure
/// reported without its error (kind, text); a recv failure that takes the
/// frontend down without a word (no `recv` report, no count).
#[test]
fn friction_7_failed_frames_reach_a_callback_and_the_counters() {
    let failures: Arc<Mutex<Vec<FrameFailure>>> = Arc::default();
    let seen = failures.clone();
    let vif = Vif::new().on_network_error(move |f| seen.lock().unwrap().push(f.clone()));
    let net = Flaky::default();
    with_vif(vif, &net, |nic, counters| {
        assert!(nic.send(&frame(0xee)).unwrap());
        until(nic, "the filtered frame reported", |_| {
            !failures.lock().unwrap().is_empty()
        });
        let f = failures.lock().unwrap()[0].clone();
        assert_eq!(
            (f.op, f.len, f.kind),
            ("send", 60, io::ErrorKind::PermissionDenied)
        );
        assert!(f.message.contains("rule 3"), "{f:?}");
        assert!(f.to_string().contains("NETIF_RSP_ERROR"), "{f}");
        assert_eq!(counters.tx_network_errors.load(Ordering::Relaxed), 1);
        // Reading fails: reported, counted, the frontend disconnected.
        net.fail_recv.store(true, Ordering::Relaxed);
        until(nic, "the failed read reported", |_| {
            failures.lock().unwrap().len() >= 2
        });
        let f = failures.lock().unwrap()[1].clone();
        assert_eq!((f.op, f.errno), ("recv", Some(libc_enetdown())), "{f:?}");
        assert_eq!(counters.rx_network_errors.load(Ordering::Relaxed), 1);
    });
}

/// Point 4's half in the library: a backend program's command line is
/// `Vif::args` (the standard options, the platform choice included) plus its
/// own options, handed back; a bad value is an error naming the option.
///
/// Fails on: options swallowed or dropped (the program never sees `--ip`), a
/// standard option left to the program (the device paths below), a bad
/// domain id or a missing value accepted.
#[test]
fn friction_4_a_backend_program_is_args_and_serve() {
    let args = |a: &[&str]| Vif::new().args(a.iter().map(|s| s.to_string()));
    let (vif, own) = args(&[
        "--platform",
        "local",
        "--run-dir",
        "/nonexistent",
        "--frontend",
        "7",
        "--devid",
        "2",
        "--backend-type",
        "xenio",
        "--ip",
        "10.9.8.7",
    ])
    .unwrap();
    assert_eq!(
        own.into_iter().collect::<Vec<_>>(),
        [("--ip".to_string(), "10.9.8.7".to_string())]
    );
    let paths = vif.paths(DomId(0)).unwrap();
    assert_eq!(paths.backend, "/local/domain/0/backend/xenio/7/2");
    assert_eq!(paths.frontend, "/local/domain/7/device/vif/2");
    // --platform local and --run-dir were taken: serving tries that store.
    let e = vif.serve(&Reflector::default()).unwrap_err();
    assert!(e.to_string().contains("/nonexistent"), "{e}");
    for (bad, says) in [
        (&["--frontend", "one"][..], "--frontend"),
        (&["--devid"], "needs a value"),
        (&["--platform", "hyperv"], "--platform"),
        (&["positional"], "expected an option"),
        (&["--backend-type", "a/b"], "backend type"),
    ] {
        let r = args(bad).and_then(|(v, _)| v.paths(DomId(0)).map(|_| ()));
        let e = r.expect_err(&format!("{bad:?} accepted"));
        assert!(e.to_string().contains(says), "{bad:?}: {e}");
    }
}
