//! Real Xen: the event channel and grant seams over the Linux `/dev/xen` devices.
//!
//! - [`EvtchnDevice`] ([`EventChannels`](crate::EventChannels)) over
//!   `/dev/xen/evtchn`. Every channel owns its own open of the device (one port per
//!   descriptor, as a libxenevtchn handle does), so its descriptor is readable
//!   exactly when that port fired and can sit in a `poll` set or an io_uring.
//! - [`GntallocDevice`] ([`GrantTable`](crate::GrantTable)) over
//!   `/dev/xen/gntalloc`: the frontend grants pages of its own memory.
//! - [`GntdevDevice`] ([`GrantMapper`](crate::GrantMapper)) over
//!   `/dev/xen/gntdev`: the backend maps or copies a peer's grants.
//! - [`available`] says whether this machine can run the Xen platform at all, and
//!   names what is missing.
//!
//! The argument encodings of the ioctls are in [`abi`], built at the offsets of the
//! `xenio-xen-sys` mirrors and compared byte for byte with what a C compiler makes
//! of the kernel's headers (`tests/xen_abi.rs`).
//!
//! Where Xen and the local platform differ (both are documented on the items):
//! [`Granted::revoke`](crate::Granted::revoke) on Xen never fails because the peer
//! still maps a page: the kernel defers the release until the peer unmaps, and the
//! peer keeps access to the page until then. Notifications coalesce in Xen itself
//! (a port that fired is masked until it is unmasked, and further sends only set
//! the pending bit).
//!
//! Everything here assumes 4 KiB pages ([`XEN_PAGE`]), the grant unit of x86.

pub mod abi;
mod device;
mod evtchn;
mod gntalloc;
mod gntdev;
mod platform;

pub use device::{
    EVTCHN_PATH, GNTALLOC_PATH, GNTDEV_PATH, UnmapNotify, XEN_PAGE, available, available_under,
};
pub use evtchn::{EvtchnDevice, XenEventChannel};
pub use gntalloc::{GntallocDevice, XenGranted};
pub use gntdev::{GntdevDevice, GrantRegion};
pub use platform::XenPlatform;
