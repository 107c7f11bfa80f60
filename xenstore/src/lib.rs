//! xenstore for xenio: the wire protocol of `xen/io/xs_wire.h` with typed errors,
//! a client for any store (xenio's local daemon, the real xenstored's socket, or
//! a domain's `/dev/xen/xenbus`), and, behind the `daemon` feature, xenio's own
//! store daemon for hosts without Xen.
//!
//! Drivers program against the [`Store`] trait; [`Client`] implements it over one
//! connection that any number of threads share. Errors the store answers with
//! are typed ([`XsError`], through [`Error::errno`]), so callers match
//! `ENOENT` or `EAGAIN` without comparing strings.
//!
//! ```no_run
//! use std::time::Duration;
//! use xenio_xenstore::{Client, Store, Tx, Watch};
//!
//! let xs = Client::connect_default()?;
//! xs.write(Tx::NONE, "/local/domain/0/data/example", b"1")?;
//! let mut w = xs.watch("/local/domain/0/data", "tok")?;
//! // Every watch fires once on registration.
//! let first = w.next_event(Some(Duration::from_secs(5)))?;
//! assert!(first.is_some());
//! match xs.read_opt(Tx::NONE, "/local/domain/0/data/missing")? {
//!     None => println!("not there"),
//!     Some(v) => println!("{v}"),
//! }
//! # Ok::<(), xenio_xenstore::Error>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod client;
#[cfg(feature = "daemon")]
pub mod daemon;
mod error;
mod store;
pub mod wire;

pub use client::{
    Client, ClientWatch, DEFAULT_TIMEOUT, WATCH_QUEUE, XENBUS_DEVICE, XENSTORED_SOCKET,
};
pub use error::{Error, Result};
pub use store::{Perm, PermAccess, Store, Tx, Watch, WatchEvent};
pub use wire::XsError;
pub use xenio_xen_sys::DomId;
