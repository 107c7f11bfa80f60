//! One code path, several places: a small split driver (handshake, a granted
//! ring, an event channel, a granted data page read by grant copy), generic over
//! `Platform`, run with both ends as threads of one process (`InProcess`) and as
//! two processes on the local platform (`LocalPlatform` + the store daemon).

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};
use xenio_ring::{BackRing, FrontRing};
use xenio_xen_sys::blkif::*;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenbus::handshake::{DeviceKind, DevicePaths, Endpoint, create_device, frontend_ready};
use xenio_xenbus::platform::{InProcess, LocalPlatform, Platform};
use xenio_xenbus::*;
use xenio_xenstore::daemon::{Daemon, DaemonConfig};

type R<T = ()> = std::result::Result<T, String>;
const T: Duration = Duration::from_secs(10);
const REQUESTS: u64 = 2000;

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--peer") {
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
        let r = (|| -> R {
            let run = args.get(3).ok_or("no run dir")?;
            let dir = args.get(4).ok_or("no dir")?;
            match args.get(2).map(String::as_str) {
                Some("front") => frontend(&LocalPlatform::connect(run, DomId(1)).map_err(s)?, dir),
                Some("back") => backend(&LocalPlatform::connect(run, DomId(0)).map_err(s)?, dir),
                other => Err(format!("unknown role {other:?}")),
            }
        })();
        return match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("peer: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut failed = 0;
    for (name, f) in [
        ("one_driver_in_one_process", in_process as fn() -> R),
        ("one_driver_in_two_processes", two_processes),
    ] {
        let t = Instant::now();
        match f() {
            Ok(()) => println!("test {name} ... ok ({:.1?})", t.elapsed()),
            Err(e) => {
                println!("test {name} ... FAILED: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn data(i: usize) -> u8 {
    (i as u8).wrapping_mul(7) ^ 0x5a
}

/// The frontend: grant a ring and a data page, publish them, send requests.
fn frontend<P: Platform>(p: &P, dir: &str) -> R {
    let mut ep = Endpoint::frontend(p.store(), dir).map_err(s)?;
    let backend = ep.peer_id();
    ep.switch(XenbusState::Initialising, &[]).map_err(s)?;
    ep.wait_peer(T, |s| s == XenbusState::InitWait).map_err(s)?;
    let grants = p.grants().map_err(s)?;
    let ring_pages = grants.grant(backend, 1, Access::ReadWrite).map_err(s)?;
    let page = grants.grant(backend, 1, Access::ReadOnly).map_err(s)?;
    page.region()
        .write(0, &(0..4096).map(data).collect::<Vec<_>>())
        .map_err(s)?;
    let mut ring =
        FrontRing::<BlkifRequest, BlkifResponse, _>::init(ring_pages.region()).map_err(s)?;
    let ch = p.events().alloc_unbound(backend).map_err(s)?;
    ep.switch(
        XenbusState::Initialised,
        &[
            ("ring-ref", ring_pages.refs()[0].0.to_string()),
            ("event-channel", ch.port().0.to_string()),
            ("data-ref", page.refs()[0].0.to_string()),
        ],
    )
    .map_err(s)?;
    ep.wait_peer(T, |s| s == XenbusState::Connected)
        .map_err(s)?;
    ep.switch(XenbusState::Connected, &[]).map_err(s)?;
    let (mut sent, mut done) = (0u64, 0u64);
    while done < REQUESTS {
        while sent < REQUESTS && !ring.is_full() {
            let mut r = BlkifRequest {
                operation: BLKIF_OP_READ,
                nr_segments: 1,
                id: sent,
                ..Default::default()
            };
            r.seg[0] = BlkifRequestSegment {
                gref: page.refs()[0].0,
                first_sect: (sent % 8) as u8,
                last_sect: 7,
                _pad: [0; 2],
            };
            ring.push_request(&r).map_err(s)?;
            sent += 1;
        }
        if ring.push_requests_and_check_notify().is_required() {
            ch.notify().map_err(s)?;
        }
        let mut any = false;
        while let Some(rsp) = ring.take_response().map_err(s)? {
            if rsp.id != done || rsp.status != BLKIF_RSP_OKAY {
                return Err(format!("response {done}: {rsp:?}"));
            }
            done += 1;
            any = true;
        }
        if !any && !ring.final_check_for_responses().map_err(s)? && !ch.wait(Some(T)).map_err(s)? {
            return Err(format!("no response event after {done} responses"));
        }
    }
    ep.switch(XenbusState::Closing, &[]).map_err(s)?;
    ep.wait_peer(T, |s| {
        matches!(s, XenbusState::Closing | XenbusState::Closed)
    })
    .map_err(s)?;
    ep.switch(XenbusState::Closed, &[]).map_err(s)?;
    Ok(())
}

/// The backend: map the ring, bind the channel, check each request's data page
/// through a grant copy, answer.
fn backend<P: Platform>(p: &P, dir: &str) -> R {
    let mut ep = Endpoint::backend(p.store(), dir).map_err(s)?;
    let fe = ep.peer_id();
    ep.switch(XenbusState::InitWait, &[]).map_err(s)?;
    ep.wait_peer(T, frontend_ready).map_err(s)?;
    let key = |k: &str| -> R<u32> {
        ep.peer_key(k)
            .map_err(s)?
            .ok_or(format!("no {k}"))?
            .parse()
            .map_err(s)
    };
    let (ring_ref, port, data_ref) = (key("ring-ref")?, key("event-channel")?, key("data-ref")?);
    let mapper = p.mapper().map_err(s)?;
    let region = mapper.map(fe, &[GrantRef(ring_ref)]).map_err(s)?;
    // The data page was granted read-only: mapping it writable is refused.
    if mapper.map(fe, &[GrantRef(data_ref)]).is_ok() {
        return Err("a read-only grant was mapped writable".into());
    }
    let mut ring = BackRing::<BlkifRequest, BlkifResponse, _>::attach(&region).map_err(s)?;
    let ch = p.events().bind_interdomain(fe, Port(port)).map_err(s)?;
    ep.switch(XenbusState::Connected, &[]).map_err(s)?;
    let mut served = 0;
    let mut buf = [0u8; 4096];
    while served < REQUESTS {
        let mut any = false;
        while let Some(r) = ring.take_request().map_err(s)? {
            let seg = r.seg[0];
            let off = usize::from(seg.first_sect) * 512;
            let len = (usize::from(seg.last_sect) + 1) * 512 - off;
            let mut ops = [GrantCopy {
                domid: fe,
                gref: GrantRef(seg.gref),
                offset: off as u16,
                local: CopyBuf::FromGrant(&mut buf[..len]),
            }];
            let ok = mapper
                .copy(&mut ops)
                .map_err(s)?
                .pop()
                .ok_or("no copy result")?
                .is_ok()
                && buf[..len]
                    .iter()
                    .enumerate()
                    .all(|(i, b)| *b == data(off + i));
            let status = if ok { BLKIF_RSP_OKAY } else { BLKIF_RSP_ERROR };
            ring.push_response(&BlkifResponse::new(r.id, r.operation, status))
                .map_err(s)?;
            served += 1;
            any = true;
        }
        if any && ring.push_responses_and_check_notify().is_required() {
            ch.notify().map_err(s)?;
        }
        if !any && !ring.final_check_for_requests().map_err(s)? && !ch.wait(Some(T)).map_err(s)? {
            return Err(format!("no request event after {served} requests"));
        }
    }
    ep.wait_peer(T, |s| {
        matches!(s, XenbusState::Closing | XenbusState::Closed)
    })
    .map_err(s)?;
    ep.switch(XenbusState::Closed, &[]).map_err(s)?;
    Ok(())
}

fn in_process() -> R {
    let world = InProcess::new().map_err(s)?;
    let dom0 = world.domain(DomId(0)).map_err(s)?;
    let guest = world.domain(DomId(1)).map_err(s)?;
    let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vbd, 768);
    create_device(dom0.store(), &paths, &[]).map_err(s)?;
    std::thread::scope(|sc| {
        let b = sc.spawn(|| backend(&dom0, &paths.backend));
        let f = sc.spawn(|| frontend(&guest, &paths.frontend));
        f.join().map_err(|_| "frontend panicked".to_string())??;
        b.join().map_err(|_| "backend panicked".to_string())?
    })
}

fn two_processes() -> R {
    let dir = tempfile::tempdir().map_err(s)?;
    let daemon = Daemon::start(DaemonConfig {
        domains: vec![DomId(1)],
        ..DaemonConfig::new(dir.path())
    })
    .map_err(s)?;
    let dom0 = LocalPlatform::connect(dir.path(), DomId(0)).map_err(s)?;
    let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vbd, 768);
    create_device(dom0.store(), &paths, &[]).map_err(s)?;
    let exe = std::env::current_exe().map_err(s)?;
    let spawn = |role: &str, d: &str| {
        Command::new(&exe)
            .args(["--peer", role])
            .arg(dir.path())
            .arg(d)
            .spawn()
            .map_err(s)
    };
    let mut back = spawn("back", &paths.backend)?;
    let mut front = spawn("front", &paths.frontend)?;
    let fs = front.wait().map_err(s)?;
    let bs = back.wait().map_err(s)?;
    drop(daemon);
    if fs.success() && bs.success() {
        Ok(())
    } else {
        Err(format!("frontend {fs}, backend {bs}"))
    }
}
