//! qcow2 images made by qemu-img, served through `Qcow2Queue`: a random
//! write/read/discard script replayed on a raw image gives identical data
//! (`qemu-img compare`), `qemu-img check` is clean afterwards, backing files are
//! never written, and odd images and requests give clear errors.

mod disk_common;
mod storage_common;

use std::sync::Arc;
use std::time::Duration;
use storage_common::*;
use xenio_hostio::Error;
use xenio_hostio::disk::{Direct, Io, IoSeg};
use xenio_hostio::qcow2::{ImageFormat, Qcow2Image, Qcow2Open, Qcow2Queue, Qcow2QueueOptions};
use xenio_xenbus::Region;

const MIB: usize = 1 << 20;

fn rw() -> Qcow2Open {
    Qcow2Open {
        readonly: false,
        direct: Direct::Auto,
    }
}

fn queue(path: &std::path::Path, depth: u32) -> Qcow2Queue {
    let image = Arc::new(Qcow2Image::open(path, &rw()).unwrap());
    Qcow2Queue::new(image, &Qcow2QueueOptions { depth, threads: 0 }).unwrap()
}

/// Random data with a zeroed stretch in the middle.
fn base_data(size: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; size];
    Rng(seed).fill(&mut data);
    data[size / 4..size / 2].fill(0);
    data
}

/// After a script: `qemu-img check` clean, and the image identical to the model.
fn check_and_compare(dir: &std::path::Path, image: &std::path::Path, model: &[u8]) {
    let out = qemu_img(&["check", image.to_str().unwrap()]);
    assert!(
        out.contains("No errors were found"),
        "qemu-img check: {out}"
    );
    let replay = write_file(dir, "replay.raw", model);
    let out = qemu_img(&[
        "compare",
        "-F",
        "raw",
        image.to_str().unwrap(),
        replay.to_str().unwrap(),
    ]);
    assert!(
        out.contains("Images are identical"),
        "qemu-img compare: {out}"
    );
}

fn digest(path: &std::path::Path) -> u64 {
    let data = std::fs::read(path).unwrap();
    data.chunks(8).fold(0xcbf2_9ce4_8422_2325u64, |h, c| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        (h ^ u64::from_le_bytes(w)).wrapping_mul(0x100_0000_01b3)
    })
}

/// An overlay over a qcow2 base, and a three-level chain (4 KiB clusters) over
/// a raw base: the script's result equals the same script on a raw copy.
#[test]
fn backing_chains_match_a_raw_replay() {
    if missing("qemu-img", "qemu-utils") {
        return;
    }
    let dir = disk_dir();
    let d = dir.path();
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    let base = base_data(32 * MIB, 11);
    write_file(d, "base.raw", &base);
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        &p("base.raw"),
        &p("base.qcow2"),
    ]);
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        &p("top.qcow2"),
    ]);
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4096",
        "-b",
        "base.raw",
        "-F",
        "raw",
        &p("mid.qcow2"),
    ]);
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "mid.qcow2",
        "-F",
        "qcow2",
        &p("top3.qcow2"),
    ]);
    let before = (
        digest(&d.join("base.raw")),
        digest(&d.join("base.qcow2")),
        digest(&d.join("mid.qcow2")),
    );

    for (top, seed) in [("top.qcow2", 1), ("top3.qcow2", 2)] {
        let path = d.join(top);
        let mut model = base.clone();
        let mut q = queue(&path, 32);
        assert!(
            q.image().description().contains("backing file"),
            "{}",
            q.image().description()
        );
        let t = script(&mut q, &mut model, seed, 250, 32, true);
        eprintln!("{top}: {t:?}, {} on the direct path", q.direct_ios());
        assert!(q.direct_ios() > 100);
        assert!(
            t.writes > 500 && t.reads > 500 && t.discards > 50 && t.flushes > 50,
            "{t:?}"
        );
        drop(q);
        check_and_compare(d, &path, &model);
    }
    let after = (
        digest(&d.join("base.raw")),
        digest(&d.join("base.qcow2")),
        digest(&d.join("mid.qcow2")),
    );
    assert_eq!(before, after, "a backing file was written");
}

/// Images without a backing file: the default (version 3) and a version 2
/// image (`compat=0.10`), where discards write zeros instead.
#[test]
fn images_without_backing_and_version_2() {
    if missing("qemu-img", "qemu-utils") {
        return;
    }
    let dir = disk_dir();
    let d = dir.path();
    for (name, opts, frees) in [
        ("v3.qcow2", "compat=1.1", true),
        ("v2.qcow2", "compat=0.10", false),
    ] {
        let path = d.join(name);
        qemu_img(&[
            "create",
            "-f",
            "qcow2",
            "-o",
            opts,
            path.to_str().unwrap(),
            "16M",
        ]);
        let mut model = vec![0u8; 16 * MIB];
        let mut q = queue(&path, 16);
        let t = script(&mut q, &mut model, 3, 150, 16, true);
        assert!(t.discards > 10, "{t:?}");
        assert_eq!(q.image().discards_free_space(), frees, "{name}");
        // write_zeroes beside a write, both in flight at once.
        let p = Arc::new(Region::anonymous(8192).unwrap());
        p.fill(0, 8192, 0x3c).unwrap();
        q.submit_write_zeroes(1, 3 * 65536 + 512, 2 * 65536)
            .unwrap();
        q.submit(
            2,
            Io::Write {
                offset: MIB as u64,
                segs: vec![IoSeg::new(p, 0, 8192)],
            },
        )
        .unwrap();
        let mut out = Vec::new();
        q.complete(&mut out, 2, Some(Duration::from_secs(30)))
            .unwrap();
        assert!(out.iter().all(|c| c.result.is_ok()), "{out:?}");
        model[3 * 65536 + 512..5 * 65536 + 512].fill(0);
        model[MIB..MIB + 8192].fill(0x3c);
        drop(q);
        check_and_compare(d, &path, &model);
    }
}

fn open_err(path: &std::path::Path) -> String {
    match Qcow2Image::open(path, &rw()) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e.to_string(),
    }
}

/// Not qcow2, truncated, empty, missing, a missing backing file, VHD and VHDX:
/// an error naming the file and what is wrong, never a panic.
#[test]
fn odd_images_give_clear_errors() {
    if missing("qemu-img", "qemu-utils") {
        return;
    }
    let dir = disk_dir();
    let d = dir.path();
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();

    let raw = write_file(d, "random.raw", &base_data(MIB, 5));
    let e = open_err(&raw);
    assert!(e.contains("random.raw") && e.contains("qcow2"), "{e}");

    let empty = write_file(d, "empty.qcow2", &[]);
    assert!(open_err(&empty).contains("empty.qcow2"));
    assert!(open_err(&d.join("absent.qcow2")).contains("absent.qcow2"));

    qemu_img(&["create", "-f", "qcow2", &p("whole.qcow2"), "8M"]);
    let whole = std::fs::read(d.join("whole.qcow2")).unwrap();
    for cut in [4, 72] {
        let t = write_file(d, "cut.qcow2", &whole[..cut]);
        let e = open_err(&t);
        assert!(e.contains("cut.qcow2"), "cut at {cut}: {e}");
    }
    // A whole header whose tables are cut off: either open refuses it, or I/O
    // completes (an error or data), never a panic or a hang.
    for cut in [200, 1000, 70_000] {
        let t = write_file(d, "cut.qcow2", &whole[..cut]);
        let Ok(image) = Qcow2Image::open(&t, &rw()) else {
            continue;
        };
        let mut q = Qcow2Queue::new(Arc::new(image), &Qcow2QueueOptions::default()).unwrap();
        let page = Arc::new(Region::anonymous(4096).unwrap());
        for (tag, io) in [
            Io::Read {
                offset: 0,
                segs: vec![IoSeg::new(page.clone(), 0, 4096)],
            },
            Io::Write {
                offset: 65536,
                segs: vec![IoSeg::new(page.clone(), 0, 4096)],
            },
            Io::Discard {
                offset: 0,
                len: 131072,
            },
            Io::Flush,
        ]
        .into_iter()
        .enumerate()
        {
            q.submit(tag as u64, io).unwrap();
        }
        let mut out = Vec::new();
        q.complete(&mut out, 4, Some(Duration::from_secs(30)))
            .unwrap();
        assert_eq!(out.len(), 4, "cut at {cut}: hung");
        for c in &out {
            if let Err(e) = &c.result {
                assert!(e.to_string().contains("cut.qcow2"), "{e}");
            }
        }
    }
    // A header whose L1 table and refcount table point far past the end.
    let mut bad = whole.clone();
    bad[40..48].copy_from_slice(&u64::MAX.to_be_bytes()); // l1_table_offset
    let e = open_err(&write_file(d, "bad-l1.qcow2", &bad));
    assert!(e.contains("bad-l1.qcow2"), "{e}");

    write_file(d, "gone.raw", &[0u8; 4096]);
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "gone.raw",
        "-F",
        "raw",
        &p("orphan.qcow2"),
    ]);
    std::fs::remove_file(d.join("gone.raw")).unwrap();
    let e = open_err(&d.join("orphan.qcow2"));
    assert!(e.contains("orphan.qcow2") && e.contains("gone.raw"), "{e}");

    for (fmt, name) in [("vpc", "disk.vhd"), ("vhdx", "disk.vhdx")] {
        qemu_img(&["create", "-f", fmt, &p(name), "8M"]);
        match Qcow2Image::open(d.join(name), &rw()) {
            Err(Error::Unsupported(m)) => assert!(m.contains("qemu-img convert"), "{m}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    qemu_img(&[
        "create",
        "-f",
        "vpc",
        "-o",
        "subformat=fixed",
        &p("fixed.vhd"),
        "8M",
    ]);
    assert!(matches!(
        Qcow2Image::open(d.join("fixed.vhd"), &rw()),
        Err(Error::Unsupported(_))
    ));

    for f in ["vhd", "VHDX", "vpc"] {
        match f.parse::<ImageFormat>() {
            Err(Error::Unsupported(m)) => assert!(m.contains("qemu-img convert"), "{m}"),
            other => panic!("{f}: {other:?}"),
        }
    }
    assert_eq!("qcow2".parse::<ImageFormat>().unwrap(), ImageFormat::Qcow2);
    assert_eq!("raw".parse::<ImageFormat>().unwrap(), ImageFormat::Raw);
    assert!(matches!(
        "vmdk".parse::<ImageFormat>(),
        Err(Error::BadValue { .. })
    ));
}

/// Requests outside the disk, unaligned, into read-only memory, writes to a
/// read-only image, more than the depth: refused at submission, clearly.
#[test]
fn bad_requests_are_refused_at_submission() {
    if missing("qemu-img", "qemu-utils") {
        return;
    }
    let dir = disk_dir();
    let path = dir.path().join("v.qcow2");
    qemu_img(&["create", "-f", "qcow2", path.to_str().unwrap(), "1M"]);
    let mut q = queue(&path, 2);
    let page = Arc::new(Region::anonymous(4096).unwrap());
    let seg = |len| vec![IoSeg::new(page.clone(), 0, len)];
    let err = |q: &mut Qcow2Queue, io| q.submit(1, io).unwrap_err().to_string();
    assert!(
        err(
            &mut q,
            Io::Read {
                offset: MIB as u64,
                segs: seg(512)
            }
        )
        .contains("past the end")
    );
    assert!(
        err(
            &mut q,
            Io::Read {
                offset: 100,
                segs: seg(512)
            }
        )
        .contains("multiple of 512")
    );
    assert!(
        err(
            &mut q,
            Io::Read {
                offset: 0,
                segs: seg(100)
            }
        )
        .contains("512")
    );
    assert!(
        err(
            &mut q,
            Io::Read {
                offset: 0,
                segs: vec![]
            }
        )
        .contains("segments")
    );
    assert!(err(&mut q, Io::Discard { offset: 0, len: 0 }).contains("discard"));
    let ro = Arc::new(Region::anonymous(4096).unwrap().into_read_only());
    let e = err(
        &mut q,
        Io::Read {
            offset: 0,
            segs: vec![IoSeg::new(ro, 0, 512)],
        },
    );
    assert!(
        e.contains("read-only memory") && e.contains("v.qcow2: read of"),
        "{e}"
    );
    q.submit(1, Io::Flush).unwrap();
    q.submit(2, Io::Flush).unwrap();
    assert!(matches!(q.submit(3, Io::Flush), Err(Error::Limit(_))));
    let mut out = Vec::new();
    q.complete(&mut out, 2, Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(out.len(), 2);
    drop(q);

    let image = Arc::new(
        Qcow2Image::open(
            &path,
            &Qcow2Open {
                readonly: true,
                direct: Direct::Auto,
            },
        )
        .unwrap(),
    );
    let mut q = Qcow2Queue::new(image, &Qcow2QueueOptions::default()).unwrap();
    assert!(
        err(
            &mut q,
            Io::Write {
                offset: 0,
                segs: seg(512)
            }
        )
        .contains("read-only")
    );
    assert!(
        err(
            &mut q,
            Io::Discard {
                offset: 0,
                len: 512
            }
        )
        .contains("read-only")
    );
    q.submit(
        1,
        Io::Read {
            offset: 0,
            segs: seg(4096),
        },
    )
    .unwrap();
    q.complete(&mut out, 1, Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(*out.last().unwrap().result.as_ref().unwrap(), 4096);
}

/// The completion eventfd becomes readable when an operation finishes;
/// `reap_ready` hands it back; `rearm_completion_fd` clears the eventfd.
#[test]
fn completion_fd_signals_and_reap_ready_collects() {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    if missing("qemu-img", "qemu-utils") {
        return;
    }
    let dir = disk_dir();
    let path = dir.path().join("e.qcow2");
    qemu_img(&["create", "-f", "qcow2", path.to_str().unwrap(), "1M"]);
    let mut q = queue(&path, 4);
    let readable = |q: &Qcow2Queue, ms: u16| {
        let mut fds = [PollFd::new(q.completion_fd().unwrap(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(ms)).unwrap() == 1
    };
    assert!(!readable(&q, 0));
    assert!(q.has_direct_path());
    let page = Arc::new(Region::anonymous(4096).unwrap());
    let seg = || vec![IoSeg::new(page.clone(), 0, 4096)];
    let mut out = Vec::new();
    // A read of an unallocated cluster: zeros at once, and signalled.
    q.submit(
        8,
        Io::Read {
            offset: 0,
            segs: seg(),
        },
    )
    .unwrap();
    assert!(readable(&q, 0));
    q.reap_ready(&mut out).unwrap();
    assert_eq!((out.len(), out[0].tag), (1, 8));
    q.rearm_completion_fd();
    // An allocating write goes to a worker: nothing before flush_submissions.
    q.submit(
        9,
        Io::Write {
            offset: 0,
            segs: seg(),
        },
    )
    .unwrap();
    out.clear();
    q.reap_ready(&mut out).unwrap();
    assert!(
        out.is_empty(),
        "nothing reaches a worker before flush_submissions"
    );
    q.flush_submissions().unwrap();
    assert!(readable(&q, 10_000), "no completion signalled");
    q.reap_ready(&mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].tag, 9);
    assert!(readable(&q, 0), "reap_ready leaves the eventfd");
    q.rearm_completion_fd();
    assert!(!readable(&q, 0));
    // A read of the allocated cluster takes the direct path (io_uring).
    let before = q.direct_ios();
    q.submit(
        10,
        Io::Read {
            offset: 0,
            segs: seg(),
        },
    )
    .unwrap();
    q.flush_submissions().unwrap();
    assert!(readable(&q, 10_000), "no completion signalled");
    out.clear();
    q.reap_ready(&mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(q.direct_ios(), before + 1);
    assert_eq!(q.in_flight(), 0);
}

/// On ramfs (no O_DIRECT) `Direct::Auto` falls back to the page cache, says
/// so, and serves the same data; `Direct::On` refuses.
#[test]
fn without_o_direct_auto_falls_back_to_the_page_cache() {
    if missing("qemu-img", "qemu-utils") {
        return;
    }
    let Some(mount) = disk_common::RamfsMount::new() else {
        return;
    };
    let dir = &mount.dir;
    let path = dir.path().join("ram.qcow2");
    qemu_img(&["create", "-f", "qcow2", path.to_str().unwrap(), "4M"]);
    let image = Qcow2Image::open(&path, &rw()).unwrap();
    assert!(!image.direct());
    assert!(
        image.description().contains("page cache"),
        "{}",
        image.description()
    );
    let mut q = Qcow2Queue::new(Arc::new(image), &Qcow2QueueOptions::default()).unwrap();
    let mut model = vec![0u8; 4 * MIB];
    script(&mut q, &mut model, 9, 20, 8, true);
    drop(q);
    let on = Qcow2Open {
        readonly: false,
        direct: Direct::On,
    };
    assert!(Qcow2Image::open(&path, &on).is_err());
    check_and_compare(dir.path(), &path, &model);
}
