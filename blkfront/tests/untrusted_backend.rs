//! XSA-403 on the frontend side: the toolstack's `trusted` key. blkfront's data
//! pool is granted to the backend for the whole connection; a backend may map
//! any of its pages at any time, as the "spy" here does (domain 0's grant
//! mapper, beside xenio's blkback serving a real file on the local platform).
//! With `trusted` absent the backend reads whatever freed buffers held, as
//! with Linux's persistent grants. With `trusted` = `0` blkfront offers no
//! persistent grants and zeroes a buffer when it is freed: after a write and a
//! read through the blocking calls, the whole pool reads as zeros. A buffer in
//! use stays readable (that is the grant's purpose).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use xenio_blkback::{BackendConfig, Counters, FileStorage, Outcome, serve};
use xenio_blkfront::{BlkFront, Options};
use xenio_hostio::disk::Direct;
use xenio_xenbus::handshake::{DeviceKind, DevicePaths, create_device};
use xenio_xenbus::platform::{LocalPlatform, Platform};
use xenio_xenbus::xenstore::daemon::{Daemon, DaemonConfig};
use xenio_xenbus::*;

const POOL: usize = 64;

/// What the backend's domain can read of the frontend's pool pages now.
fn spy(dom0: &LocalPlatform, refs: &[GrantRef]) -> Vec<u8> {
    let m = dom0.mapper().unwrap().map_readonly(DomId(1), refs).unwrap();
    let mut all = vec![0u8; refs.len() * 4096];
    m.read(0, &mut all).unwrap();
    all
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Connect with `trusted` (None: no key), write and read back a secret through
/// the blocking calls, then run `check` with the frontend and the spy's view.
fn scenario(
    trusted: Option<&str>,
    check: impl FnOnce(&mut BlkFront<LocalPlatform>, &dyn Fn(&[GrantRef]) -> Vec<u8>, &str),
) {
    let run = tempfile::tempdir().unwrap();
    let _daemon = Daemon::start(DaemonConfig {
        domains: vec![DomId(1)],
        ..DaemonConfig::new(run.path())
    })
    .unwrap();
    let dom0 = LocalPlatform::connect(run.path(), DomId(0)).unwrap();
    let guest = Arc::new(LocalPlatform::connect(run.path(), DomId(1)).unwrap());
    let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vbd, 51712);
    create_device(dom0.store(), &paths, &[]).unwrap();
    if let Some(t) = trusted {
        // The toolstack's key, in the frontend's directory.
        dom0.store()
            .write(
                Tx::NONE,
                &format!("{}/trusted", paths.frontend),
                t.as_bytes(),
            )
            .unwrap();
    }
    let image = run.path().join("disk.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let storage = FileStorage::open(&image, false, Direct::Auto).unwrap();
    let config = BackendConfig {
        once: true,
        ..Default::default()
    };
    let (counters, shutdown) = (Counters::default(), AtomicBool::new(false));
    std::thread::scope(|s| {
        let backend = s.spawn(|| {
            serve(
                &dom0,
                &paths.backend,
                &storage,
                &config,
                &counters,
                &shutdown,
            )
        });
        // A failed check must not leave `serve` waiting for a frontend that
        // never closes: stop it, then fail.
        let front = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let opts = Options {
                pool_pages: POOL,
                ..Default::default()
            };
            let mut f = BlkFront::connect(guest.clone(), &paths.frontend, opts).unwrap();
            let secret: Vec<u8> = b"XSA-403 secret "
                .iter()
                .cycle()
                .take(3 * 4096)
                .copied()
                .collect();
            f.write_at(64 << 10, &secret).unwrap();
            let mut back = vec![0u8; secret.len()];
            f.read_at(64 << 10, &mut back).unwrap();
            assert!(back == secret, "the data came back");
            let persistent = guest
                .store()
                .read_string(Tx::NONE, &format!("{}/feature-persistent", paths.frontend))
                .unwrap();
            let look = |refs: &[GrantRef]| spy(&dom0, refs);
            check(&mut f, &look, &persistent);
            f.close().unwrap();
        }));
        if let Err(panic) = front {
            shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = backend.join();
            std::panic::resume_unwind(panic);
        }
        assert_eq!(backend.join().unwrap().unwrap(), Outcome::Closed);
    });
}

#[test]
fn a_trusted_backend_gets_persistent_grants_and_reads_freed_buffers() {
    scenario(None, |f, look, persistent| {
        assert!(f.backend_trusted());
        assert_eq!(persistent, "1");
        let pool = look(f.pool_refs());
        assert!(
            count(&pool, b"XSA-403 secret ") > 0,
            "with a trusted backend freed buffers keep their bytes (nothing to show otherwise)"
        );
    });
}

#[test]
fn an_untrusted_backend_gets_no_persistent_grants_and_reads_zeros_in_freed_buffers() {
    for value in ["0", "no"] {
        scenario(Some(value), |f, look, persistent| {
            assert!(!f.backend_trusted(), "trusted = {value:?}");
            assert_eq!(
                persistent, "0",
                "feature-persistent with trusted = {value:?}"
            );
            let pool = look(f.pool_refs());
            assert!(
                pool.iter().all(|&b| b == 0),
                "trusted = {value:?}: {} bytes of freed buffers are readable by the backend",
                pool.iter().filter(|&&b| b != 0).count()
            );
            // What stays exposed: a buffer in use, until it is freed.
            let buf = f.alloc(4096).unwrap();
            f.buf_write(&buf, 0, b"in use").unwrap();
            assert_eq!(count(&look(f.pool_refs()), b"in use"), 1);
            f.free(buf);
            assert!(look(f.pool_refs()).iter().all(|&b| b == 0));
        });
    }
}

#[test]
fn trusted_one_is_trusted() {
    scenario(Some("1"), |f, _, persistent| {
        assert!(f.backend_trusted());
        assert_eq!(persistent, "1");
    });
}
