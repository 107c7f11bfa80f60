//! The local platform: each domain is a process on one Linux host, no Xen needed.
//!
//! Everything lives under a run directory (see [`default_run_dir`]):
//!
//! ```text
//! RUN/xenstored/socket              the store daemon, as dom0
//! RUN/xenstored/domain/<domid>      the store daemon, as <domid>
//! RUN/domains/<domid>/gnttab        grant table: 16384 grant_entry_v1 (128 KiB)
//! RUN/domains/<domid>/maptrack      who has each grant mapped: 4 x u64 per entry
//! RUN/domains/<domid>/pool          the domain's grantable memory, 4 KiB pages
//! RUN/domains/<domid>/evtchn/<port>       a FIFO: the port's pending events
//! RUN/domains/<domid>/evtchn/<port>.info  the port's state (text)
//! ```
//!
//! `docs/local-platform.md` specifies each file precisely (a C frontend can be
//! written from it). This module implements the grant and event channel seams.

mod domain;
mod evtchn;
mod grant;
mod pages;
mod platform;

pub use domain::{LocalDomain, default_run_dir};
pub use evtchn::{LocalChannel, LocalEventChannels};
pub use grant::{
    LocalGrantMapper, LocalGrantTable, LocalGranted, MAPTRACK_SLOTS, NR_GRANT_ENTRIES,
    NR_RESERVED_ENTRIES,
};
pub use pages::PAGE;
pub use platform::LocalPlatform;
