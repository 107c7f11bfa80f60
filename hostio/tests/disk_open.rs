//! Opening files and block devices: O_DIRECT where possible, the page cache with a
//! clear reason where not, geometry and discard support, clear refusals.

mod disk_common;

use disk_common::*;
use std::sync::Arc;
use xenio_hostio::disk::{BlockFile, Direct, DiskOpen, DiskQueue, DiskQueueOptions, IoMode};

fn open(path: &std::path::Path, direct: Direct) -> xenio_hostio::Result<BlockFile> {
    BlockFile::open(
        path,
        DiskOpen {
            readonly: false,
            direct,
        },
    )
}

#[test]
fn file_on_a_disk_filesystem_gets_o_direct() {
    let dir = disk_dir();
    let fs = fs_type(dir.path());
    assert_ne!(
        fs, "tmpfs",
        "CARGO_TARGET_TMPDIR must be on a disk filesystem"
    );
    let path = make_file(dir.path(), "a.img", (4 << 20) + 100);
    for direct in [Direct::Auto, Direct::On] {
        let f = open(&path, direct).unwrap();
        assert!(f.direct(), "{fs}: {direct:?} should get O_DIRECT");
        assert_eq!(f.fallback_reason(), None);
        assert!(!f.is_block_device());
        assert_eq!(f.size_bytes(), (4 << 20) + 100);
        assert_eq!(f.sectors(), 8192, "sectors round down");
        let l = f.logical_sector_size();
        assert!(
            l.is_power_of_two() && (512..=4096).contains(&l),
            "logical {l}"
        );
        let p = f.physical_sector_size();
        assert!(p.is_power_of_two() && p >= l, "physical {p}");
        let d = f.discard().expect("ext4 punches holes");
        assert!(d.granularity >= 512 && d.granularity.is_power_of_two());
        assert_eq!(d.alignment, 0);
        assert_eq!(f.discard_unsupported_reason(), None);
    }
    let f = open(&path, Direct::Off).unwrap();
    assert!(!f.direct());
    assert_eq!(f.fallback_reason(), None, "Off is a choice, not a fallback");
    assert_eq!(f.logical_sector_size(), 512);
}

#[test]
fn tmpfs_falls_back_to_the_page_cache_with_a_reason() {
    let dir = shm_dir();
    assert_eq!(fs_type(dir.path()), "tmpfs");
    let path = make_file(dir.path(), "shm.img", 1 << 20);
    let f = open(&path, Direct::Auto).unwrap();
    assert!(!f.direct());
    let why = f
        .fallback_reason()
        .expect("a reason for not using O_DIRECT");
    eprintln!("tmpfs, Direct::Auto: {why}");
    assert!(why.contains(&path.display().to_string()), "{why}");
    assert!(why.contains("page cache"), "{why}");
    assert!(why.contains("tmpfs"), "{why}");
    assert_eq!(f.logical_sector_size(), 512);
    assert!(f.discard().is_some(), "tmpfs punches holes");

    // Linux >= 6.6 accepts O_DIRECT on tmpfs (copying through the page cache);
    // older kernels refuse it with EINVAL. Direct::On does what the kernel does.
    match open(&path, Direct::On) {
        Ok(f) => {
            eprintln!("tmpfs, Direct::On: this kernel accepts O_DIRECT on tmpfs");
            assert!(f.direct());
            assert_eq!(f.fallback_reason(), None);
        }
        Err(e) => {
            let msg = e.to_string();
            eprintln!("tmpfs, Direct::On: {msg}");
            assert!(msg.contains("O_DIRECT") && msg.contains("EINVAL"), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
    }
}

#[test]
fn a_filesystem_refusing_o_direct_falls_back_or_fails_clearly() {
    let Some(ramfs) = RamfsMount::new() else {
        return;
    };
    let path = make_file(ramfs.dir.path(), "ram.img", 1 << 20);
    let shown = path.display().to_string();

    let e = open(&path, Direct::On).expect_err("ramfs refuses O_DIRECT");
    let msg = e.to_string();
    eprintln!("ramfs, Direct::On: {msg}");
    assert!(msg.contains(&shown), "{msg}");
    assert!(msg.contains("O_DIRECT refused by the filesystem"), "{msg}");
    assert!(msg.contains("EINVAL") && msg.contains("ramfs"), "{msg}");

    let f = open(&path, Direct::Auto).unwrap();
    assert!(!f.direct());
    let why = f.fallback_reason().unwrap();
    eprintln!("ramfs, Direct::Auto: {why}");
    assert_eq!(
        why,
        format!(
            "O_DIRECT refused by the filesystem of {shown} (ramfs, EINVAL): using the page cache"
        )
    );

    // ramfs has no hole punching either: no discard, and the reason says why.
    assert_eq!(f.discard(), None);
    let why = f.discard_unsupported_reason().unwrap();
    assert!(
        why.contains("FALLOC_FL_PUNCH_HOLE") && why.contains("ramfs"),
        "{why}"
    );

    // And I/O works through the page cache.
    let mut e = DiskQueue::new(Arc::new(f), 8).unwrap();
    assert!(random_io_verify(&mut e, 7, 16) >= 1);
}

#[test]
fn bad_paths_are_refused_naming_the_path() {
    let dir = disk_dir();
    let missing = dir.path().join("missing.img");
    let msg = open(&missing, Direct::Auto).unwrap_err().to_string();
    assert!(
        msg.contains("missing.img") && msg.contains("No such file"),
        "{msg}"
    );

    let msg = open(dir.path(), Direct::Auto).unwrap_err().to_string();
    assert!(
        msg.contains("not a regular file or a block device"),
        "{msg}"
    );

    // A FIFO would block an open; it is refused before opening.
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let msg = open(&fifo, Direct::Auto).unwrap_err().to_string();
    assert!(
        msg.contains("fifo") && msg.contains("not a regular file or a block device"),
        "{msg}"
    );

    let msg = open(std::path::Path::new("/dev/null"), Direct::Off)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("/dev/null"), "{msg}");
}

#[test]
fn read_only_disks() {
    let dir = disk_dir();
    let path = make_file(dir.path(), "ro.img", 1 << 20);
    let f = BlockFile::open(
        &path,
        DiskOpen {
            readonly: true,
            direct: Direct::Auto,
        },
    )
    .unwrap();
    assert!(f.is_readonly());
    assert_eq!(f.discard(), None);
    assert_eq!(
        f.discard_unsupported_reason(),
        Some("the disk is opened read-only")
    );

    // A read-only file cannot be opened read-write (as root, only with chattr +i
    // or a read-only mount; check the permission path when not root).
    if !is_root() {
        let mut perm = std::fs::metadata(&path).unwrap().permissions();
        perm.set_readonly(true);
        std::fs::set_permissions(&path, perm).unwrap();
        let msg = open(&path, Direct::Auto).unwrap_err().to_string();
        assert!(msg.contains("opening read-write"), "{msg}");
    }
}

#[test]
fn engine_depth_and_modes() {
    let dir = disk_dir();
    let path = make_file(dir.path(), "d.img", 1 << 20);
    let f = Arc::new(open(&path, Direct::Auto).unwrap());
    for bad in [0, 32769] {
        let msg = DiskQueue::new(f.clone(), bad).unwrap_err().to_string();
        assert!(msg.contains("depth"), "{msg}");
    }
    let e = DiskQueue::new(f.clone(), 64).unwrap();
    assert_eq!(e.depth(), 64);
    assert_eq!(e.in_flight(), 0);
    assert!(e.completion_fd().is_none());
    // This machine has io_uring; say so if it does not.
    if let IoMode::Sync { reason } = e.mode() {
        panic!("io_uring unavailable here: {reason}");
    }
    let e = DiskQueue::with_options(
        f,
        &DiskQueueOptions {
            depth: 5,
            force_sync: true,
            completion_fd: true,
            ..DiskQueueOptions::default()
        },
    )
    .unwrap();
    match e.mode() {
        IoMode::Sync { reason } => assert!(reason.contains("force_sync"), "{reason}"),
        m => panic!("{m:?}"),
    }
    assert!(e.completion_fd().is_some());
    assert_eq!(DiskQueueOptions::default().depth, 64);
}

#[test]
fn engines_are_send() {
    fn send<T: Send>() {}
    send::<DiskQueue>();
    send::<BlockFile>();
    fn sync<T: Sync>() {}
    sync::<BlockFile>();
}
