//! The daemon's `outstanding` bound (xenstored's quota of the same name): a
//! client that pipelines requests and never reads the replies makes the daemon
//! stop reading its connection once `outstanding` replies wait, so the
//! client's own socket fills and its writes block. The daemon's memory stays
//! bounded, everyone else is served, and the client gets every reply, in
//! order, once it reads again.

mod store_common;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use store_common::*;
use xenio_xenstore::{DomId, Perm, PermAccess, Store, Tx};

const READ: u32 = 2;
/// The value read again and again: each reply is this big.
const VALUE: usize = 4000;
/// Requests the client tries to send. Were the daemon to read them all, their
/// replies would take 20,000 x 4 KB = 80 MB.
const TRY: u32 = 20_000;
/// Requests per `write` (one READ is 16 + 5 bytes).
const PER_WRITE: u32 = 64;

fn request(req_id: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(21);
    for v in [READ, req_id, 0, 5] {
        m.extend_from_slice(&v.to_ne_bytes());
    }
    m.extend_from_slice(b"/big\0");
    m
}

/// This process's resident memory (the daemon runs in it), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

#[test]
fn a_client_that_pipelines_without_reading_is_no_longer_read() {
    let t = TestDaemon::start(&[5]);
    let dom0 = t.dom0();
    dom0.write(Tx::NONE, "/big", &[b'v'; VALUE]).unwrap();
    dom0.set_perms(
        Tx::NONE,
        "/big",
        &[Perm {
            domid: DomId(0),
            access: PermAccess::Read,
        }],
    )
    .unwrap();
    let outstanding = t.daemon.core().quotas().outstanding;
    let before = rss_kib();

    // Domain 5 pipelines READs of /big without reading a single reply.
    let mut hostile = UnixStream::connect(t.domain_socket(5)).unwrap();
    hostile.set_nonblocking(true).unwrap();
    let mut sent = 0u32; // requests wholly written
    let mut pending: Vec<u8> = Vec::new(); // bytes of a batch not yet written
    let mut stuck_since: Option<Instant> = None;
    while sent < TRY {
        if pending.is_empty() {
            let n = PER_WRITE.min(TRY - sent);
            pending = (1..=n).flat_map(|k| request(sent + k)).collect();
        }
        match hostile.write(&pending) {
            Ok(n) => {
                pending.drain(..n);
                if pending.is_empty() {
                    sent += PER_WRITE.min(TRY - sent);
                }
                stuck_since = None;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                // Blocked: give the daemon a second to read more, if it would.
                let since = *stuck_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(1) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("writing requests: {e}"),
        }
    }
    let grown = rss_kib().saturating_sub(before);
    eprintln!(
        "the client got {sent} of {TRY} requests out before its writes blocked for 1 s; \
         the process grew by {grown} KiB"
    );
    assert!(
        sent < TRY / 2,
        "the daemon kept reading a client that reads no replies: {sent} of {TRY} requests accepted"
    );
    assert!(
        grown < 16 * 1024,
        "the daemon grew by {grown} KiB for a client that reads nothing"
    );

    // Everybody else is served meanwhile, dom0 and another connection of domain 5.
    let t0 = Instant::now();
    dom0.write(Tx::NONE, "/alive", b"yes").unwrap();
    let guest = t.domain(5);
    assert_eq!(guest.read(Tx::NONE, "/big").unwrap().len(), VALUE);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "others waited {:?}",
        t0.elapsed()
    );

    // The client reads again: one reply per request it got out, in order (the
    // rest of a half-written batch is finished first, so the stream stays whole).
    hostile.set_nonblocking(false).unwrap();
    hostile
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    if !pending.is_empty() {
        sent += PER_WRITE.min(TRY - sent);
    }
    let total = sent + 1; // and one more request after all that
    let reader = {
        let mut r = hostile.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut ids = Vec::new();
            while (ids.len() as u32) < total {
                let mut h = [0u8; 16];
                if r.read_exact(&mut h).is_err() {
                    break;
                }
                let f = |i: usize| u32::from_ne_bytes(h[i * 4..i * 4 + 4].try_into().unwrap());
                let mut p = vec![0u8; f(3) as usize];
                r.read_exact(&mut p).unwrap();
                assert_eq!((f(0), p.len()), (READ, VALUE), "reply to request {}", f(1));
                ids.push(f(1));
            }
            ids
        })
    };
    hostile.write_all(&pending).unwrap();
    // The connection still works after all that.
    hostile.write_all(&request(total)).unwrap();
    let ids = reader.join().unwrap();
    assert_eq!(ids.len() as u32, total, "one reply per request");
    assert!(
        ids.iter().zip(1..).all(|(&id, want)| id == want),
        "replies in request order"
    );
    assert!(
        outstanding > 0 && outstanding < 100,
        "outstanding is {outstanding}"
    );
}
