//! Interop proof: `tests/c/cfront.c`, a blkif frontend written in C from
//! `docs/local-platform.md` with only Xen's public headers and libc (its own
//! xenstore wire client, grant table, pool and event channel FIFOs), acts as
//! domain 1 against `xenio blkback` (domain 0) and the store daemon. It writes,
//! reads back and verifies; this test then checks the image file holds exactly
//! what the C program says it wrote, and that the backend exited cleanly.

mod common;

use common::cfront::*;
use std::process::Command;
use std::time::{Duration, Instant};
use xenio_xenbus::DomId;
use xenio_xenstore::daemon::{Daemon, DaemonConfig};

/// 16384 sectors.
const DISK: u64 = 8 << 20;
const DEVID: &str = "51712";

/// Run the C frontend against `xenio blkback <backend_args>`; it must choose
/// ring order `order`. With `qcow2`, the disk is a qcow2 overlay (made by
/// qemu-img) over a qcow2 base holding the initial pattern, and what the C
/// program wrote is checked in the overlay (converted to raw by qemu-img),
/// which `qemu-img check` must find clean.
fn interop(tag: &str, backend_args: &[&str], order: u32, qcow2: bool) {
    let t0 = Instant::now();
    let bin = compiled();
    let dir = tempfile::Builder::new()
        .prefix(&format!("cfront-{tag}-"))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let run = dir.path().join("run");
    let _daemon = Daemon::start(DaemonConfig {
        domains: vec![DomId(1)],
        ..DaemonConfig::new(&run)
    })
    .unwrap();
    let image = dir.path().join("disk.img");
    let initial: Vec<u8> = (0..DISK).map(|o| pat(o, 0)).collect();
    std::fs::write(&image, &initial).unwrap();
    let overlay = dir.path().join("overlay.qcow2");
    let qemu_img = |args: &[&std::ffi::OsStr]| {
        let out = Command::new("qemu-img").args(args).output().unwrap();
        assert!(out.status.success(), "qemu-img {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let disk = if qcow2 {
        let base = dir.path().join("base.qcow2");
        qemu_img(&[
            os("convert"),
            os("-f"),
            os("raw"),
            os("-O"),
            os("qcow2"),
            image.as_os_str(),
            base.as_os_str(),
        ]);
        qemu_img(&[
            os("create"),
            os("-f"),
            os("qcow2"),
            os("-b"),
            os("base.qcow2"),
            os("-F"),
            os("qcow2"),
            overlay.as_os_str(),
        ]);
        format!(
            "format=qcow2,vdev=xvda,access=rw,target={}",
            overlay.display()
        )
    } else {
        format!("format=raw,vdev=xvda,access=rw,target={}", image.display())
    };

    // The frontend starts first: it must find the device by watching for it.
    let mut front = Proc::spawn(
        "cfront",
        Command::new(bin).arg(&run).args(["1", DEVID]),
        dir.path(),
    );
    // Start the backend (which creates the device) once the frontend watches.
    let t = Instant::now();
    while !std::fs::read_to_string(&front.stdout)
        .unwrap()
        .contains("cfront: watching")
    {
        if t.elapsed() > Duration::from_secs(10) || front.exited() {
            let _ = front.wait(Duration::ZERO);
            panic!(
                "the C frontend did not get to its watch:\n{}",
                front.output()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut back = Proc::spawn(
        "blkback",
        Command::new(env!("CARGO_BIN_EXE_xenio"))
            .arg("blkback")
            .args(["--platform", "local", "--frontend", "1", "--once"])
            .arg("--create-device")
            .args(backend_args)
            .arg("--run-dir")
            .arg(&run)
            .arg("--disk")
            .arg(&disk),
        dir.path(),
    );

    let fs = front.wait(Duration::from_secs(60));
    let report = |f: &Proc, b: &Proc| format!("{}\n{}", f.output(), b.output());
    match fs {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("the C frontend failed ({s}):\n{}", report(&front, &back)),
        Err(e) => panic!("{e}:\n{}", report(&front, &back)),
    }
    match back.wait(Duration::from_secs(20)) {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("blkback exited with {s}:\n{}", report(&front, &back)),
        Err(e) => panic!("{e}:\n{}", report(&front, &back)),
    }
    let out = std::fs::read_to_string(&front.stdout).unwrap();
    let back_err = std::fs::read_to_string(&back.stderr).unwrap();
    assert!(
        out.lines().any(|l| l.starts_with("cfront: OK")),
        "the C frontend did not report success:\n{}",
        report(&front, &back)
    );
    assert!(
        out.contains(&format!("using order {order}\n")),
        "the C frontend did not use ring order {order}:\n{out}"
    );
    assert!(
        back_err.contains("blkback: Closed"),
        "blkback did not end with the frontend closing:\n{}",
        report(&front, &back)
    );

    // The image holds the initial pattern, overwritten by each write the C
    // program reported, in order, and nothing else.
    let mut expected = initial;
    let mut writes = 0;
    for l in out.lines().filter_map(|l| l.strip_prefix("write ")) {
        let v: Vec<u64> = l
            .split(' ')
            .map(|x| x.parse().expect("write line: numbers"))
            .collect();
        let [sector, sectors, seed] = v[..] else {
            panic!("malformed write line {l:?}");
        };
        let (start, end) = (sector * 512, (sector + sectors) * 512);
        assert!(end <= DISK, "write line beyond the disk: {l:?}");
        for o in start..end {
            expected[o as usize] = pat(o, seed as u32);
        }
        writes += 1;
    }
    assert!(writes >= 17, "only {writes} writes reported:\n{out}");
    if qcow2 {
        let check = qemu_img(&[os("check"), overlay.as_os_str()]);
        assert!(
            check.contains("No errors were found"),
            "qemu-img check: {check}"
        );
        qemu_img(&[
            os("convert"),
            os("-f"),
            os("qcow2"),
            os("-O"),
            os("raw"),
            overlay.as_os_str(),
            image.as_os_str(),
        ]);
    }
    let file = std::fs::read(&image).unwrap();
    assert_eq!(file.len(), expected.len(), "the image changed size");
    if let Some(o) = file.iter().zip(&expected).position(|(a, b)| a != b) {
        panic!(
            "the image differs from what the C frontend wrote, first at byte {o} (sector {}): {:#x}, expected {:#x}",
            o / 512,
            file[o],
            expected[o]
        );
    }
    eprint!("{out}");
    eprintln!(
        "{}",
        back_err
            .lines()
            .find(|l| l.starts_with("blkback:"))
            .unwrap_or("")
    );
    eprintln!(
        "image verified: {writes} writes; whole test {:?}",
        t0.elapsed()
    );
}

/// Defaults: grants mapped (zero copy), requests merged; the C frontend takes a
/// two-page ring (`ring-page-order` 1, `ring-ref0`/`ring-ref1`).
#[test]
fn c_frontend_drives_blkback_two_page_ring_grant_map() {
    interop("map", &[], 1, false);
}

/// The same over a qcow2 overlay and its base (format=qcow2).
#[test]
fn c_frontend_drives_blkback_over_a_qcow2_chain() {
    interop("qcow2", &[], 1, true);
}

/// A one-page ring (`ring-ref`), grant copy, no reordering, one queue.
#[test]
fn c_frontend_drives_blkback_one_page_ring_grant_copy() {
    interop(
        "copy",
        &[
            "--max-ring-page-order",
            "0",
            "--grant-mode",
            "copy",
            "--reorder",
            "off",
            "--max-queues",
            "1",
        ],
        0,
        false,
    );
}
