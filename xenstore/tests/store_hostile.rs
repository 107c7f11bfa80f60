//! Hostile clients over raw sockets: malformed messages get an error reply or a
//! closed connection, never a crash, and the daemon keeps serving everyone else.

mod store_common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};
use store_common::*;
use xenio_xenstore::daemon::Quotas;
use xenio_xenstore::{Store, Tx};

/// A raw protocol connection.
struct Raw(UnixStream);

impl Raw {
    fn connect(p: &Path) -> Raw {
        let s = UnixStream::connect(p).expect("connect");
        s.set_read_timeout(Some(WAIT)).unwrap();
        Raw(s)
    }

    fn send_header(&mut self, ty: u32, req_id: u32, tx_id: u32, len: u32) {
        let mut h = Vec::with_capacity(16);
        for v in [ty, req_id, tx_id, len] {
            h.extend_from_slice(&v.to_ne_bytes());
        }
        self.0.write_all(&h).unwrap();
    }

    fn send(&mut self, ty: u32, req_id: u32, payload: &[u8]) {
        self.send_header(ty, req_id, 0, payload.len() as u32);
        self.0.write_all(payload).unwrap();
    }

    /// The next message: (type, req_id, payload), or None if the daemon closed
    /// the connection.
    fn recv(&mut self) -> Option<(u32, u32, Vec<u8>)> {
        let mut h = [0u8; 16];
        if let Err(e) = self.0.read_exact(&mut h) {
            assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ),
                "reading a reply: {e}"
            );
            return None;
        }
        let f = |i: usize| u32::from_ne_bytes(h[i * 4..i * 4 + 4].try_into().unwrap());
        let mut p = vec![0u8; f(3) as usize];
        self.0.read_exact(&mut p).ok()?;
        Some((f(0), f(1), p))
    }

    /// Send a request and return the error name it got (or "" for success).
    fn ask(&mut self, ty: u32, req_id: u32, payload: &[u8]) -> String {
        self.send(ty, req_id, payload);
        let (t, id, p) = self.recv().expect("a reply, not a closed connection");
        assert_eq!(id, req_id, "the reply echoes req_id");
        if t == 16 {
            String::from_utf8_lossy(p.strip_suffix(&[0]).unwrap_or(&p)).into_owned()
        } else {
            assert_eq!(t, ty, "the reply has the request's type");
            String::new()
        }
    }

    fn assert_closed(&mut self) {
        assert!(self.recv().is_none(), "the daemon closes the connection");
    }
}

/// A healthy client still gets served promptly (the bound is loose for loaded
/// CI machines; a daemon blocked by a hostile client would not answer at all).
fn still_serves(t: &TestDaemon) {
    let c = t.dom0();
    let t0 = Instant::now();
    c.write(Tx::NONE, "/alive", b"yes").unwrap();
    assert_eq!(c.read(Tx::NONE, "/alive").unwrap(), b"yes");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "served in {:?}",
        t0.elapsed()
    );
}

const READ: u32 = 2;
const WRITE: u32 = 11;
const WATCH: u32 = 4;

#[test]
fn malformed_requests_get_error_replies_and_the_connection_goes_on() {
    let t = TestDaemon::start(&[5]);
    let mut r = Raw::connect(&t.socket());
    assert_eq!(r.ask(WRITE, 1, b"/ok\0v"), "");
    // Missing NUL: the path is not terminated.
    assert_eq!(r.ask(READ, 2, b"/ok"), "EINVAL");
    // Two strings where one is expected, an empty payload, an empty path.
    assert_eq!(r.ask(READ, 3, b"/ok\0/ok\0"), "EINVAL");
    assert_eq!(r.ask(READ, 4, b""), "EINVAL");
    assert_eq!(r.ask(READ, 5, b"\0"), "EINVAL");
    // WRITE without any NUL, WATCH without a token.
    assert_eq!(r.ask(WRITE, 6, b"/ok"), "EINVAL");
    assert_eq!(r.ask(WATCH, 7, b"/ok\0"), "EINVAL");
    // Not UTF-8, bad characters.
    assert_eq!(r.ask(READ, 8, b"/\xff\xfe\0"), "EINVAL");
    assert_eq!(r.ask(READ, 9, b"/a b\0"), "EINVAL");
    // Unknown types, the hole at 20, and types only the daemon sends: ENOSYS
    // (what xenstored and oxenstored answer).
    for (i, ty) in [999u32, 20, 23, 15, 16, u32::MAX].into_iter().enumerate() {
        assert_eq!(r.ask(ty, 100 + i as u32, b"/ok\0"), "ENOSYS", "type {ty}");
    }
    // Bad transaction end, unknown transaction.
    assert_eq!(r.ask(7, 20, b"X\0"), "EINVAL");
    r.send_header(READ, 21, 4242, 4);
    r.0.write_all(b"/ok\0").unwrap();
    let (ty, _, p) = r.recv().unwrap();
    assert_eq!((ty, p.as_slice()), (16, &b"ENOENT\0"[..]));
    // A payload of exactly 4096 bytes is fine.
    let mut max = b"/big\0".to_vec();
    max.resize(4096, b'x');
    assert_eq!(r.ask(WRITE, 22, &max), "");
    // Still the same connection, still working.
    assert_eq!(r.ask(READ, 23, b"/ok\0"), "");

    // Domains may not use privileged operations.
    let mut d = Raw::connect(&t.domain_socket(5));
    assert_eq!(
        d.ask(8, 1, &[&b"6\0"[..], b"0\0", b"1\0"].concat()),
        "EACCES"
    );
    assert_eq!(d.ask(0, 2, b"help\0"), "EACCES");
    assert_eq!(r.ask(0, 24, b"help\0"), "");
    assert_eq!(r.ask(0, 25, b"no-such-command\0"), "EINVAL");
    still_serves(&t);
}

#[test]
fn bad_lengths_and_garbage_close_only_that_connection() {
    let t = TestDaemon::start(&[]);
    let mut bystander = Raw::connect(&t.socket());
    assert_eq!(bystander.ask(WRITE, 1, b"/b\0v"), "");

    // A payload above 4096 bytes announced: the connection is closed.
    for len in [4097u32, 65536, u32::MAX] {
        let mut r = Raw::connect(&t.socket());
        r.send_header(READ, 1, 0, len);
        let _ = r.0.write_all(&[b'a'; 100]);
        r.assert_closed();
    }

    // Garbage: whatever it decodes to, the daemon answers or hangs up.
    let mut seed = 0x1234_5678_9abc_def0u64;
    for _ in 0..20 {
        let mut r = Raw::connect(&t.socket());
        let junk: Vec<u8> = (0..2000)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = r.0.write_all(&junk);
        let _ = r.0.shutdown(std::net::Shutdown::Write);
        r.0.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut sink = Vec::new();
        let _ = r.0.read_to_end(&mut sink);
    }

    // Clients that leave in the middle of a header or of a payload.
    for cut in [3usize, 16, 20] {
        let mut r = Raw::connect(&t.socket());
        let mut m = Vec::new();
        for v in [WRITE, 1, 0, 100] {
            m.extend_from_slice(&v.to_ne_bytes());
        }
        m.extend_from_slice(&[b'x'; 100]);
        r.0.write_all(&m[..cut]).unwrap();
        drop(r);
    }

    assert_eq!(bystander.ask(READ, 2, b"/b\0"), "");
    still_serves(&t);
    eventually("the hostile connections are gone", || {
        t.daemon.core().connections() <= 2
    });
}

#[test]
fn a_client_that_never_reads_cannot_grow_the_daemon_or_slow_others() {
    let t = TestDaemon::with_quotas(
        &[],
        Quotas {
            queued_events: 64,
            ..Quotas::default()
        },
    );
    // Watch everything and never read a byte.
    let mut lazy = Raw::connect(&t.socket());
    lazy.send(WATCH, 1, b"/\0lazy\0");
    let writer = t.dom0();
    let t0 = Instant::now();
    let n = 3000;
    for i in 0..n {
        writer
            .write(Tx::NONE, &format!("/flood/{i}"), b"x")
            .unwrap();
    }
    let elapsed = t0.elapsed();
    // Others are not held up by it.
    still_serves(&t);
    assert!(
        elapsed < Duration::from_secs(20),
        "{n} writes took {elapsed:?}"
    );

    // What the lazy client finally reads is bounded by the queue cap plus what
    // the kernel's socket buffer took, far below what was generated.
    lazy.0
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut events = 0;
    let mut buf = vec![];
    let mut chunk = [0u8; 65536];
    loop {
        match lazy.0.read(&mut chunk) {
            Ok(0) => break,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(_) => break,
        }
    }
    let mut rest = &buf[..];
    while rest.len() >= 16 {
        let ty = u32::from_ne_bytes(rest[0..4].try_into().unwrap());
        let len = u32::from_ne_bytes(rest[12..16].try_into().unwrap()) as usize;
        if ty == 15 {
            events += 1;
        }
        rest = &rest[(16 + len).min(rest.len())..];
    }
    assert!(events >= 1, "it got events");
    assert!(
        events < n / 2,
        "{events} events of {n} reached a client that never read"
    );

    // Once it reads, it is served again.
    assert_eq!(lazy.ask(READ, 99, b"/flood/0\0"), "");
}

#[test]
fn many_hostile_connections_at_once() {
    let t = TestDaemon::start(&[]);
    let sock = t.socket();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                for j in 0..20u32 {
                    let mut r = Raw::connect(&sock);
                    match (i + j) % 4 {
                        0 => r.send_header(READ, j, 0, 1 << 20),
                        1 => r.send(999, j, b"junk"),
                        2 => r.send(READ, j, b"/x"),
                        _ => {
                            let _ = r.0.write_all(&[0xff; 7]);
                        }
                    }
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    still_serves(&t);
    eventually("the hostile connections are gone", || {
        t.daemon.core().connections() == 0
    });
}

/// Open `n` connections on `sock` and hold them; how many the daemon
/// serves (answers a request on) before it closes the rest at once.
fn hold(sock: &Path, n: usize) -> (Vec<Raw>, usize) {
    let mut held = Vec::new();
    let mut served = 0;
    for i in 0..n {
        let mut r = Raw::connect(sock);
        // A refused connection may be closed before the request is written.
        let mut req = Vec::new();
        for v in [READ, i as u32, 0, 6] {
            req.extend_from_slice(&v.to_ne_bytes());
        }
        req.extend_from_slice(b"/tool\0");
        if r.0.write_all(&req).is_ok() && r.recv().is_some() {
            served += 1;
            held.push(r);
        }
    }
    (held, served)
}

#[test]
fn one_domain_cannot_take_every_connection() {
    use xenio_xenstore::daemon::{Daemon, DaemonConfig};
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(DaemonConfig {
        domains: vec![xenio_xenstore::DomId(5), xenio_xenstore::DomId(6)],
        max_connections: 40, // 5 of them kept for dom0
        quotas: Quotas {
            connections: 8,
            ..Quotas::default()
        },
        ..DaemonConfig::new(dir.path())
    })
    .unwrap();
    let d5 = daemon.domain_socket_path(xenio_xenstore::DomId(5));
    let d6 = daemon.domain_socket_path(xenio_xenstore::DomId(6));
    // Domain 5 gets its quota and no more; domain 6 and dom0 are still served.
    let (_five, served) = hold(&d5, 20);
    assert_eq!(served, 8, "domain 5 holds its quota of 8 connections");
    let (six, served) = hold(&d6, 3);
    assert_eq!(served, 3);
    let (_dom0, served) = hold(&daemon.socket_path(), 10);
    assert_eq!(served, 10, "dom0 is not limited by the guests' quota");
    drop(six);
    drop(_dom0);
    drop(_five);
    drop(daemon);

    // Guests together stop at the daemon's limit less dom0's share.
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(DaemonConfig {
        domains: vec![xenio_xenstore::DomId(5), xenio_xenstore::DomId(6)],
        max_connections: 40,
        quotas: Quotas {
            connections: 100,
            ..Quotas::default()
        },
        ..DaemonConfig::new(dir.path())
    })
    .unwrap();
    let (_a, a) = hold(&daemon.domain_socket_path(xenio_xenstore::DomId(5)), 30);
    let (_b, b) = hold(&daemon.domain_socket_path(xenio_xenstore::DomId(6)), 30);
    assert_eq!(a + b, 35, "guests hold {a} + {b}");
    let (_c, c) = hold(&daemon.socket_path(), 10);
    assert_eq!(
        c, 5,
        "dom0 gets the share kept for it, up to the daemon's limit"
    );
}
