//! xenio's store daemon: the xenstore protocol (`xen/io/xs_wire.h`,
//! `docs/misc/xenstore.txt`) on Unix sockets, for the local platform where no
//! Xen (and so no xenstored) runs. Debian's xenstore-utils, xenstore-rs and
//! [`crate::Client`] all talk to it.
//!
//! Layout under the run directory (`docs/local-platform.md`, section "Store"):
//!
//! ```text
//! RUN/xenstored/socket            dom0's socket (privileged)
//! RUN/xenstored/domain/<domid>    domain <domid>'s socket, from INTRODUCE to RELEASE
//! RUN/xenstored/lock              held (flock) by the running daemon
//! ```
//!
//! Every connection acts as the domain of the socket it came through. The
//! behaviour follows C xenstored (`tools/xenstored/`): permissions (the owner
//! and dom0 get everything, the ACL the rest), node creation inheriting the
//! parent's permissions, watches that fire for changes at or below the watched path and
//! once on registration, `@introduceDomain`/`@releaseDomain`, transactions that
//! fail with `EAGAIN` when a node they touched changed, quotas on unprivileged
//! domains, and error replies by name.
//!
//! [`StoreCore`] is the store without sockets; [`Daemon`] serves it.
//!
//! ```no_run
//! use xenio_xenstore::daemon::{Daemon, DaemonConfig};
//! use xenio_xenstore::{Client, DomId, Store, Tx};
//!
//! let daemon = Daemon::start(DaemonConfig {
//!     domains: vec![DomId(1)],
//!     ..DaemonConfig::new("/tmp/xenio-example")
//! })?;
//! let dom0 = Client::connect(daemon.socket_path())?;
//! dom0.write(Tx::NONE, "/local/domain/1/name", b"guest")?;
//! let guest = Client::connect(daemon.domain_socket_path(DomId(1)))?;
//! assert_eq!(guest.read_string(Tx::NONE, "name")?, "guest");
//! # Ok::<(), xenio_xenstore::Error>(())
//! ```

mod path;
mod queue;
mod quotas;
mod requests;
mod server;
mod tree;

pub use self::queue::Popped;
pub use self::quotas::Quotas;
pub use self::requests::{Connection, DomainHooks, StoreCore};
pub use self::server::{Daemon, DaemonConfig, serve_stream};
