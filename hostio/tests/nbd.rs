//! The NBD queue against real servers started by tests/servers/*.sh: qemu-nbd,
//! nbdkit (file plugin, error and delay filters, bad sectors) and Debian's
//! nbd-server, over Unix sockets and TCP; verified data, exactly the failed
//! requests failing, pipelining, a server SIGKILLed and restarted under a write
//! stream with every acknowledged write checked, a server that stays away or
//! hangs failing requests with EIO after the timeout, and bad URIs and servers
//! that send garbage giving clear errors.
#![cfg(feature = "nbd")]

mod storage_common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage_common::*;
use xenio_hostio::Error;
use xenio_hostio::disk::{Completion, Io, IoSeg};
use xenio_hostio::nbd::{NbdExport, NbdOptions, NbdQueue};
use xenio_xenbus::Region;

const MIB: usize = 1 << 20;

fn tools() -> bool {
    !(missing("qemu-nbd", "qemu-utils")
        || missing("nbdkit", "nbdkit")
        || missing("nbd-server", "nbd-server")
        || missing("nbdinfo", "libnbd-bin"))
}

fn opts() -> NbdOptions {
    NbdOptions {
        depth: 64,
        connect_timeout: Duration::from_secs(5),
        reconnect_timeout: Duration::from_secs(20),
        reconnect_delay: Duration::from_millis(50),
        io_timeout: Some(Duration::from_secs(20)),
        discard_zeroes: true,
    }
}

fn page(len: usize) -> Arc<Region> {
    Arc::new(Region::anonymous(len).unwrap())
}

fn wait_all(q: &mut NbdQueue, n: usize, limit: Duration) -> Vec<Completion> {
    let mut out = Vec::new();
    let t = Instant::now();
    while out.len() < n {
        assert!(
            t.elapsed() < limit,
            "{} of {n} completions after {limit:?}",
            out.len()
        );
        let want = n - out.len();
        q.complete(&mut out, want, Some(Duration::from_millis(500)))
            .unwrap();
    }
    out
}

/// The same random script through each server, checked against a model and
/// then against the served file itself; a second queue (multi-conn) sees the
/// same data.
#[test]
fn verified_io_against_qemu_nbd_nbdkit_and_nbd_server() {
    if !tools() {
        return;
    }
    let data_dir = disk_dir();
    let mut initial = vec![0u8; 16 * MIB];
    Rng(21).fill(&mut initial);
    let cases: [(&str, &[&str]); 5] = [
        ("qemu-nbd.sh", &["--unix"]),
        ("qemu-nbd.sh", &["--tcp", "auto"]),
        ("nbdkit.sh", &["--tcp", "auto"]),
        ("nbd-server.sh", &["--unix"]),
        ("nbd-server.sh", &["--tcp", "auto"]),
    ];
    for (i, (name, args)) in cases.iter().enumerate() {
        let img = write_file(data_dir.path(), &format!("img{i}.raw"), &initial);
        let img_s = img.to_str().unwrap().to_string();
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--image", &img_s]);
        let srv = Server::start(name, &a);
        let export = NbdExport::connect(&srv.uri, &opts()).unwrap();
        let f = export.features();
        eprintln!("{name} {args:?}: {} {f:?}", srv.uri);
        assert_eq!(f.size, initial.len() as u64);
        let mut q = export.queue().unwrap();
        let mut model = initial.clone();
        let t = script(
            &mut q,
            &mut model,
            100 + i as u64,
            120,
            32,
            f.zero || f.trim,
        );
        assert!(t.writes > 200 && t.reads > 200, "{t:?}");
        // A FUA write and WRITE_ZEROES without trimming.
        let p = page(8192);
        p.fill(0, 8192, 0x5a).unwrap();
        q.submit_write_fua(1, 8192, vec![IoSeg::new(p.clone(), 0, 8192)])
            .unwrap();
        let c = wait_all(&mut q, 1, Duration::from_secs(20));
        c[0].result.as_ref().unwrap();
        model[8192..16384].fill(0x5a);
        if f.zero {
            q.submit_write_zeroes(2, 65536, 4096, false).unwrap();
            wait_all(&mut q, 1, Duration::from_secs(20))[0]
                .result
                .as_ref()
                .unwrap();
            model[65536..69632].fill(0);
        }
        q.submit(3, Io::Flush).unwrap();
        wait_all(&mut q, 1, Duration::from_secs(20))[0]
            .result
            .as_ref()
            .unwrap();
        // A second queue, on its own connection where multi-conn allows it.
        match export.queue() {
            Ok(mut q2) => {
                assert!(f.multi_conn);
                let mut m2 = model.clone();
                script(&mut q2, &mut m2, 7, 10, 8, false);
                let mut m1 = m2.clone();
                script(&mut q, &mut m1, 8, 10, 8, false);
                model = m1;
            }
            Err(Error::Unsupported(m)) => {
                assert!(!f.multi_conn && m.contains("multi-conn"), "{m}");
            }
            Err(e) => panic!("{e}"),
        }
        drop(q);
        drop(srv);
        let served = std::fs::read(&img).unwrap();
        assert!(
            served == model,
            "{name} {args:?}: the served file differs from the model"
        );
    }
}

/// nbdkit with bad sectors 8..=15: exactly the requests touching them fail
/// with EIO, the others in the same batch succeed, and the queue keeps serving.
/// With the error filter switched on, every request fails; off, none.
#[test]
fn nbdkit_error_filter_fails_exactly_the_failed_requests() {
    if !tools() {
        return;
    }
    let srv = Server::start(
        "nbdkit.sh",
        &["--unix", "--size", "4M", "--error-range", "8-15"],
    );
    let export = NbdExport::connect(&srv.uri, &opts()).unwrap();
    let mut q = export.queue().unwrap();
    let p = page(65536);
    // (offset, len, write, touches sectors 8..=15)
    let reqs = [
        (0u64, 4096usize, false, false),
        (4096, 512, false, true),
        (0, 8192, true, true),
        (8192, 4096, false, false),
        (7 * 512, 1024, false, true),
        (16 * 512, 4096, true, false),
        (1 << 20, 65536, false, false),
        (15 * 512, 512, true, true),
        (0, 4096, true, false),
    ];
    for round in 0..3 {
        for (i, &(off, len, write, _)) in reqs.iter().enumerate() {
            let segs = vec![IoSeg::new(p.clone(), 0, len)];
            let io = if write {
                Io::Write { offset: off, segs }
            } else {
                Io::Read { offset: off, segs }
            };
            q.submit(i as u64, io).unwrap();
        }
        let out = wait_all(&mut q, reqs.len(), Duration::from_secs(30));
        for c in &out {
            let bad = reqs[c.tag as usize].3;
            assert_eq!(
                c.errno().is_some(),
                bad,
                "round {round}, request {}: {:?}",
                c.tag,
                c.result
            );
            if bad {
                assert_eq!(c.errno(), Some(libc::EIO), "{:?}", c.result);
                let msg = c.result.as_ref().unwrap_err().to_string();
                assert!(msg.contains(&srv.uri) && msg.contains("at offset"), "{msg}");
            }
        }
    }
    assert_eq!(
        q.reconnects(),
        0,
        "errors must not look like a dead connection"
    );
    drop(q);
    drop(srv);

    let srv = Server::start(
        "nbdkit.sh",
        &[
            "--unix",
            "--size",
            "4M",
            "--error-rate",
            "100%",
            "--error-switch",
        ],
    );
    let export = NbdExport::connect(&srv.uri, &opts()).unwrap();
    let mut q = export.queue().unwrap();
    for (inject, round) in [(true, 0), (false, 1), (true, 2)] {
        srv.verb(if inject { "inject" } else { "heal" });
        for i in 0..16u64 {
            let segs = vec![IoSeg::new(p.clone(), 0, 4096)];
            let io = if i % 2 == 0 {
                Io::Read {
                    offset: i * 4096,
                    segs,
                }
            } else {
                Io::Write {
                    offset: i * 4096,
                    segs,
                }
            };
            q.submit(i, io).unwrap();
        }
        let out = wait_all(&mut q, 16, Duration::from_secs(30));
        let failed = out.iter().filter(|c| c.errno() == Some(libc::EIO)).count();
        assert_eq!(failed, if inject { 16 } else { 0 }, "round {round}");
    }
}

/// nbdkit's delay filter (200 ms per read): 16 reads in flight at once finish
/// in far less than 16 x 200 ms (pipelined, not one at a time).
#[test]
fn nbdkit_delay_filter_shows_pipelining() {
    if !tools() {
        return;
    }
    let srv = Server::start(
        "nbdkit.sh",
        &["--unix", "--size", "4M", "--delay-read", "200ms"],
    );
    let export = NbdExport::connect(&srv.uri, &opts()).unwrap();
    let mut q = export.queue().unwrap();
    let p = page(16 * 4096);
    let t = Instant::now();
    for i in 0..16u64 {
        q.submit(
            i,
            Io::Read {
                offset: i * 4096,
                segs: vec![IoSeg::new(p.clone(), i as usize * 4096, 4096)],
            },
        )
        .unwrap();
    }
    q.flush_submissions().unwrap();
    let out = wait_all(&mut q, 16, Duration::from_secs(30));
    let took = t.elapsed();
    assert!(out.iter().all(|c| c.result.is_ok()));
    eprintln!("16 reads with 200 ms delay each: {took:?}");
    assert!(
        took >= Duration::from_millis(190),
        "{took:?}: the delay filter did not delay"
    );
    assert!(
        took < Duration::from_millis(1600),
        "{took:?}: not pipelined"
    );
}

/// A write stream at QD16 with unique data per write; the server is SIGKILLed
/// and restarted in the middle; then every acknowledged write is checked in
/// the served file. Against qemu-nbd (Unix) and nbdkit (TCP).
#[test]
fn server_killed_and_restarted_under_writes_loses_nothing_acknowledged() {
    if !tools() {
        return;
    }
    for (script, args) in [
        ("qemu-nbd.sh", &["--unix"][..]),
        ("nbdkit.sh", &["--tcp", "auto"][..]),
    ] {
        let dir = disk_dir();
        let img = write_file(dir.path(), "kill.raw", &vec![0u8; 8 * MIB]);
        let img_s = img.to_str().unwrap().to_string();
        let mut a = args.to_vec();
        a.extend(["--image", &img_s]);
        let srv = Server::start(script, &a);
        let export = NbdExport::connect(&srv.uri, &opts()).unwrap();
        let mut q = export.queue().unwrap();
        let blocks = (8 * MIB / 4096) as u64;
        let mut rng = Rng(99);
        let mut acked: HashMap<u64, u64> = HashMap::new(); // block -> stamp
        let mut inflight: HashMap<u64, (u64, u64, Arc<Region>)> = HashMap::new(); // tag -> (block, stamp, page)
        let mut busy_blocks = std::collections::HashSet::new();
        let mut stamp = 0u64;
        let mut out = Vec::new();
        let start = Instant::now();
        let (mut killed, mut restarted) = (false, false);
        let (mut acks, mut acks_before_kill) = (0u64, 0u64);
        while start.elapsed() < Duration::from_secs(4) || !restarted {
            let el = start.elapsed();
            if !killed && el > Duration::from_millis(800) {
                srv.verb("kill");
                killed = true;
                acks_before_kill = acks;
            }
            if killed && !restarted && el > Duration::from_millis(1800) {
                srv.verb("restart");
                restarted = true;
            }
            while inflight.len() < 16 {
                let block = rng.range(0, blocks - 1);
                if !busy_blocks.insert(block) {
                    continue;
                }
                stamp += 1;
                let p = page(4096);
                let mut d = vec![0u8; 4096];
                for (j, c) in d.chunks_mut(8).enumerate() {
                    c.copy_from_slice(&(stamp ^ (block << 32) ^ j as u64).to_le_bytes());
                }
                p.write(0, &d).unwrap();
                q.submit(
                    stamp,
                    Io::Write {
                        offset: block * 4096,
                        segs: vec![IoSeg::new(p.clone(), 0, 4096)],
                    },
                )
                .unwrap();
                inflight.insert(stamp, (block, stamp, p));
            }
            q.flush_submissions().unwrap();
            out.clear();
            q.complete(&mut out, 1, Some(Duration::from_millis(100)))
                .unwrap();
            for c in &out {
                if let Err(e) = &c.result {
                    panic!("{script}: write failed across the restart: {e}");
                }
                let (block, st, _) = inflight.remove(&c.tag).unwrap();
                busy_blocks.remove(&block);
                acked.insert(block, st);
                acks += 1;
            }
        }
        // Drain the rest.
        while !inflight.is_empty() {
            out.clear();
            q.complete(&mut out, inflight.len(), Some(Duration::from_secs(20)))
                .unwrap();
            for c in &out {
                c.result.as_ref().unwrap();
                let (block, st, _) = inflight.remove(&c.tag).unwrap();
                acked.insert(block, st);
                acks += 1;
            }
        }
        eprintln!(
            "{script}: {acks} writes acknowledged ({acks_before_kill} before the kill) to {} blocks, {} reconnects",
            acked.len(),
            q.reconnects()
        );
        assert!(q.reconnects() >= 1, "never reconnected");
        assert!(acks > acks_before_kill + 16 && acks_before_kill > 0);
        drop(q);
        drop(srv);
        let file = std::fs::read(&img).unwrap();
        for (&block, &st) in &acked {
            let b = &file[block as usize * 4096..][..8];
            let want = st ^ (block << 32);
            assert_eq!(
                u64::from_le_bytes(b.try_into().unwrap()),
                want,
                "{script}: block {block} lost its acknowledged write"
            );
        }
    }
}

/// The server is killed and stays away: waiting operations fail with EIO once
/// `reconnect_timeout` has passed (not before, and the completion descriptor
/// wakes a poller for it), new ones fail at once, and when the server comes
/// back the queue serves again.
#[test]
fn server_that_stays_away_fails_requests_after_the_timeout() {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    if !tools() {
        return;
    }
    let srv = Server::start("qemu-nbd.sh", &["--unix", "--size", "4M"]);
    let o = NbdOptions {
        reconnect_timeout: Duration::from_millis(1500),
        ..opts()
    };
    let export = NbdExport::connect(&srv.uri, &o).unwrap();
    let mut q = export.queue().unwrap();
    let p = page(4096);
    srv.verb("kill");
    let t = Instant::now();
    for i in 0..4u64 {
        q.submit(
            i,
            Io::Read {
                offset: i * 4096,
                segs: vec![IoSeg::new(p.clone(), 0, 4096)],
            },
        )
        .unwrap();
    }
    q.flush_submissions().unwrap();
    // An event loop: poll the completion descriptor, reap when it wakes.
    let mut out = Vec::new();
    while out.len() < 4 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "hung: {} of 4",
            out.len()
        );
        let mut fds = [PollFd::new(q.completion_fd().unwrap(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(5000u16)).unwrap();
        q.rearm_completion_fd();
        q.reap_ready(&mut out).unwrap();
    }
    let took = t.elapsed();
    eprintln!(
        "EIO after {took:?}: {}",
        out[0].result.as_ref().unwrap_err()
    );
    assert!(
        took >= Duration::from_millis(1400),
        "failed too early: {took:?}"
    );
    for c in &out {
        assert_eq!(c.errno(), Some(libc::EIO));
        assert!(
            c.result
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("unreachable")
        );
    }
    // Past the timeout: at once.
    let t = Instant::now();
    q.submit(
        9,
        Io::Read {
            offset: 0,
            segs: vec![IoSeg::new(p.clone(), 0, 4096)],
        },
    )
    .unwrap();
    let out = wait_all(&mut q, 1, Duration::from_secs(5));
    assert_eq!(out[0].errno(), Some(libc::EIO));
    assert!(t.elapsed() < Duration::from_millis(500));
    // The server comes back: attempts go on, and the queue serves again.
    srv.verb("restart");
    let t = Instant::now();
    loop {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "never reconnected: {}",
            q.last_error()
        );
        q.submit(
            10,
            Io::Read {
                offset: 0,
                segs: vec![IoSeg::new(p.clone(), 0, 4096)],
            },
        )
        .unwrap();
        let out = wait_all(&mut q, 1, Duration::from_secs(10));
        if out[0].result.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(q.reconnects() >= 1);
}

/// A server that stops answering (SIGSTOP): `io_timeout` declares the
/// connection dead, reconnection attempts time out, and the operations fail
/// with EIO after `reconnect_timeout`: bounded, never a hang.
#[test]
fn hung_server_fails_requests_after_the_timeouts() {
    if !tools() {
        return;
    }
    let srv = Server::start("qemu-nbd.sh", &["--unix", "--size", "4M"]);
    let o = NbdOptions {
        connect_timeout: Duration::from_millis(300),
        reconnect_timeout: Duration::from_millis(1000),
        io_timeout: Some(Duration::from_millis(400)),
        ..opts()
    };
    let export = NbdExport::connect(&srv.uri, &o).unwrap();
    let mut q = export.queue().unwrap();
    let p = page(4096);
    let pid = nix::unistd::Pid::from_raw(srv.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let t = Instant::now();
    for i in 0..4u64 {
        q.submit(
            i,
            Io::Write {
                offset: i * 4096,
                segs: vec![IoSeg::new(p.clone(), 0, 4096)],
            },
        )
        .unwrap();
    }
    let out = wait_all(&mut q, 4, Duration::from_secs(10));
    let took = t.elapsed();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    eprintln!("hung server: EIO after {took:?} ({})", q.last_error());
    assert!(out.iter().all(|c| c.errno() == Some(libc::EIO)));
    assert!(took < Duration::from_secs(4), "{took:?}");
}

/// Malformed URIs, nothing listening, and fake servers that send garbage,
/// stay silent, or close in the middle of a reply: clear errors, bounded time.
#[test]
fn bad_uris_and_broken_servers_give_clear_errors() {
    for bad in [
        "",
        "disk.img",
        "http://host/x",
        "nbd:///x",
        "nbd+unix:///x",
        "nbd://h/\0x",
    ] {
        match NbdExport::connect(bad, &opts()) {
            Err(Error::BadValue { what, .. }) => assert!(what.contains("nbd://"), "{what}"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    if missing("nbdinfo", "libnbd-bin") {
        return;
    }
    let o = NbdOptions {
        connect_timeout: Duration::from_millis(500),
        ..opts()
    };
    // Nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let uri = format!("nbd://127.0.0.1:{port}/x");
    let t = Instant::now();
    let e = NbdExport::connect(&uri, &o).unwrap_err().to_string();
    assert!(e.contains(&uri), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2));
    let e = NbdExport::connect("nbd+unix:///x?socket=/nonexistent/sock", &o)
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/sock"), "{e}");

    // Fake servers: garbage at once; silence; a good handshake then garbage
    // or half a reply.
    for mode in [Fake::Garbage, Fake::Silent, Fake::HalfReply, Fake::BadReply] {
        let (uri, _h) = fake_server(mode);
        let t = Instant::now();
        match mode {
            Fake::Garbage | Fake::Silent => {
                let e = NbdExport::connect(&uri, &o).unwrap_err().to_string();
                eprintln!("{mode:?}: {e}");
                assert!(e.contains(&uri), "{e}");
                assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
            }
            Fake::HalfReply | Fake::BadReply => {
                let o = NbdOptions {
                    reconnect_timeout: Duration::from_millis(800),
                    ..o.clone()
                };
                let export = NbdExport::connect(&uri, &o).unwrap();
                let mut q = export.queue().unwrap();
                let p = page(4096);
                q.submit(
                    1,
                    Io::Read {
                        offset: 0,
                        segs: vec![IoSeg::new(p, 0, 4096)],
                    },
                )
                .unwrap();
                let out = wait_all(&mut q, 1, Duration::from_secs(10));
                eprintln!("{mode:?}: {:?} ({})", out[0].result, q.last_error());
                assert_eq!(out[0].errno(), Some(libc::EIO));
                assert!(t.elapsed() < Duration::from_secs(5));
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fake {
    Garbage,
    Silent,
    HalfReply,
    BadReply,
}

/// A fake NBD server on 127.0.0.1: fixed newstyle, answers NBD_OPT_GO for a
/// 1 MiB export (and refuses every other option), then misbehaves on the
/// first request. Serves connections until the test ends.
fn fake_server(mode: Fake) -> (String, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = fake_session(&mut s, mode);
                std::thread::sleep(Duration::from_millis(50));
            });
        }
    });
    (format!("nbd://127.0.0.1:{port}/x"), h)
}

fn fake_session(s: &mut std::net::TcpStream, mode: Fake) -> std::io::Result<()> {
    match mode {
        Fake::Garbage => {
            return s.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\nnot an NBD server at all");
        }
        Fake::Silent => {
            std::thread::sleep(Duration::from_secs(3));
            return Ok(());
        }
        _ => {}
    }
    s.write_all(b"NBDMAGIC")?;
    s.write_all(&0x4948_4156_454F_5054u64.to_be_bytes())?; // IHAVEOPT
    s.write_all(&3u16.to_be_bytes())?; // FIXED_NEWSTYLE | NO_ZEROES
    let mut flags = [0u8; 4];
    s.read_exact(&mut flags)?;
    let reply = |s: &mut std::net::TcpStream, opt: u32, typ: u32, data: &[u8]| {
        let mut m = Vec::new();
        m.extend(0x0003_e889_0455_65a9u64.to_be_bytes());
        m.extend(opt.to_be_bytes());
        m.extend(typ.to_be_bytes());
        m.extend((data.len() as u32).to_be_bytes());
        m.extend(data);
        s.write_all(&m)
    };
    loop {
        let mut h = [0u8; 16];
        s.read_exact(&mut h)?;
        let opt = u32::from_be_bytes(h[8..12].try_into().unwrap());
        let len = u32::from_be_bytes(h[12..16].try_into().unwrap()) as usize;
        let mut data = vec![0u8; len];
        s.read_exact(&mut data)?;
        if opt == 7 {
            // NBD_OPT_GO: NBD_REP_INFO(NBD_INFO_EXPORT: size, flags), NBD_REP_ACK.
            let mut info = Vec::new();
            info.extend(0u16.to_be_bytes());
            info.extend((MIB as u64).to_be_bytes());
            info.extend(1u16.to_be_bytes()); // HAS_FLAGS
            reply(s, opt, 3, &info)?;
            reply(s, opt, 1, &[])?;
            break;
        }
        reply(s, opt, 0x8000_0001, &[])?; // NBD_REP_ERR_UNSUP
    }
    let mut req = [0u8; 28];
    s.read_exact(&mut req)?;
    let cookie = &req[8..16];
    match mode {
        Fake::HalfReply => {
            // A simple reply header, then 100 of the 4096 data bytes, then close.
            let mut m = Vec::new();
            m.extend(0x6744_6698u32.to_be_bytes());
            m.extend(0u32.to_be_bytes());
            m.extend(cookie);
            m.extend([0u8; 100]);
            s.write_all(&m)
        }
        _ => s.write_all(&[0xde; 64]),
    }
}

/// What the server does not offer: a read-only export refuses writes at
/// submission; without FUA a FUA write is a write then a flush; without FLUSH
/// a flush succeeds at once; without TRIM a discard is WRITE_ZEROES.
#[test]
fn features_the_server_lacks() {
    if !tools() {
        return;
    }
    let p = page(4096);
    p.fill(0, 4096, 0x77).unwrap();
    let srv = Server::start("qemu-nbd.sh", &["--unix", "--size", "4M", "--readonly"]);
    let export = NbdExport::connect(&srv.uri, &opts()).unwrap();
    assert!(export.features().read_only);
    let mut q = export.queue().unwrap();
    let e = q
        .submit(
            1,
            Io::Write {
                offset: 0,
                segs: vec![IoSeg::new(p.clone(), 0, 4096)],
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    assert!(
        q.submit(
            1,
            Io::Discard {
                offset: 0,
                len: 4096
            }
        )
        .is_err()
    );
    let r = page(4096);
    q.submit(
        2,
        Io::Read {
            offset: 0,
            segs: vec![IoSeg::new(r, 0, 4096)],
        },
    )
    .unwrap();
    wait_all(&mut q, 1, Duration::from_secs(10))[0]
        .result
        .as_ref()
        .unwrap();
    drop((q, export, srv));

    let dir = disk_dir();
    let img = write_file(dir.path(), "nf.raw", &vec![1u8; 4 * MIB]);
    let img_s = img.to_str().unwrap().to_string();
    for (args, fua, flush, trim) in [
        (
            vec!["--unix", "--no-fua", "--image", &img_s],
            false,
            true,
            true,
        ),
        (
            vec![
                "--unix",
                "--no-fua",
                "--no-flush",
                "--no-trim",
                "--image",
                &img_s,
            ],
            false,
            false,
            false,
        ),
    ] {
        let srv = Server::start("nbd-server.sh", &args);
        let export = NbdExport::connect(
            &srv.uri,
            &NbdOptions {
                discard_zeroes: false,
                ..opts()
            },
        )
        .unwrap();
        let f = export.features();
        assert_eq!((f.fua, f.flush, f.trim), (fua, flush, trim), "{args:?}");
        let mut q = export.queue().unwrap();
        q.submit_write_fua(1, 8192, vec![IoSeg::new(p.clone(), 0, 4096)])
            .unwrap();
        q.submit(2, Io::Flush).unwrap();
        q.submit(
            3,
            Io::Discard {
                offset: 65536,
                len: 65536,
            },
        )
        .unwrap();
        for c in wait_all(&mut q, 3, Duration::from_secs(10)) {
            match (c.tag, &c.result) {
                (3, Err(_)) if !f.trim && !f.zero => assert_eq!(c.errno(), Some(libc::EOPNOTSUPP)),
                (_, r) => {
                    r.as_ref().unwrap();
                }
            }
        }
        drop((q, export, srv));
        let data = std::fs::read(&img).unwrap();
        assert!(
            data[8192..12288].iter().all(|&b| b == 0x77),
            "{args:?}: the FUA write is missing"
        );
    }
}
