//! One crate to depend on for a program built on xenio: a custom backend (a
//! block storage, a network switch) or a frontend, on the local platform or
//! on Xen.
//!
//! ```toml
//! [dependencies]
//! xenio-sdk = { version = "0.1", features = ["blkback"] }   # a block backend
//! ```
//!
//! Each half of each protocol is a feature, so a frontend compiles neither
//! io_uring nor a backend framework:
//!
//! | feature | module | what a program gets |
//! | --- | --- | --- |
//! | `blkback` (default) | `blkback`, `hostio` | the block backend framework: `SyncStorage` / `Storage`, `Server`, `FileStorage` |
//! | `blkfront` (default) | `blkfront` | the block frontend: `BlkFront`, `Options` |
//! | `netback` | `netback`, `hostio` | the network backend framework: `Network` / `Frames`, the `Vif` builder (`Vif::args`, `handle_signals`, `on_network_error`), TAP devices |
//! | `netfront` | `netfront` | the network frontend (smoltcp's `phy::Device`, `Stack`) |
//! | `store` | `store` | the local platform's store daemon, to start one in a program or a test |
//! | `inprocess` | `platform::InProcess` | several domains as threads of one process |
//!
//! Always there: [`platform`] (the platforms and how to pick one at run
//! time), [`xenbus`] (the platform crate: store, grants, event channels,
//! the handshake), [`ring`] and [`xen_sys`] (the shared ring and the ABI).
//!
//! A block backend in a few lines (the storage's logic aside), serving domain
//! 1's `xvda` on the local platform until SIGTERM:
//!
//! ```no_run
//! # #[cfg(feature = "blkback")] {
//! use xenio_sdk::blkback::{Server, storage::{DiskInfo, SyncStorage, Synchronous}};
//! # struct MyDisk;
//! # impl SyncStorage for MyDisk {
//! #     fn info(&self) -> DiskInfo { DiskInfo { sectors: 8, ..Default::default() } }
//! #     fn read_at(&self, _: u64, b: &mut [u8]) -> std::io::Result<()> { b.fill(0); Ok(()) }
//! #     fn write_at(&self, _: u64, _: &[u8]) -> std::io::Result<()> { Ok(()) }
//! # }
//!
//! let server = Server::new().run_dir("/dev/shm/xenio").create_device(true).handle_signals(true);
//! let outcome = server.serve(&Synchronous::new(MyDisk))?;
//! eprintln!("{outcome:?}: {}", server.counters());
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `blkback/examples/` has whole programs (a checksumming backend and a
//! frontend that uses it), and `docs/backend-guide.md` walks through writing
//! one; for a network backend, `netback/examples/` (an echo host and its
//! client) and `docs/network-backend-guide.md`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use xenio_ring as ring;
pub use xenio_xen_sys as xen_sys;
pub use xenio_xenbus as xenbus;

#[cfg(feature = "blkback")]
pub use xenio_blkback as blkback;
#[cfg(feature = "blkfront")]
pub use xenio_blkfront as blkfront;
#[cfg(any(feature = "blkback", feature = "netback"))]
pub use xenio_hostio as hostio;
#[cfg(feature = "netback")]
pub use xenio_netback as netback;
#[cfg(feature = "netfront")]
pub use xenio_netfront as netfront;

/// The local platform's store daemon (`xenio store` as a library): start one
/// for a program or a test that runs its own local platform.
#[cfg(feature = "store")]
pub mod store {
    pub use xenio_xenstore::daemon::{Daemon, DaemonConfig, Quotas};
}

/// The platforms a driver runs on, and how to pick one at run time.
pub mod platform {
    pub use xenio_xenbus::local::default_run_dir;
    #[cfg(feature = "inprocess")]
    pub use xenio_xenbus::platform::{InProcDomain, InProcess};
    pub use xenio_xenbus::platform::{
        LocalPlatform, Platform, PlatformChoice, PlatformKind, XenPlatform, resolve,
    };
    pub use xenio_xenbus::{DomId, Error, Result};
}
