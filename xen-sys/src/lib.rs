//! Exact layouts of Xen's public I/O headers and of the Linux `/dev/xen` ioctls.
//!
//! This crate holds ABI only: `#[repr(C)]` types that mirror the C headers byte for
//! byte, constants, and the ioctl request codes. Every type names the header it
//! mirrors and carries compile-time size and offset asserts; `tests/c_layout.rs`
//! additionally compiles a C program against the real headers (Debian's libxen-dev
//! and linux-libc-dev) and compares every size, alignment, offset and constant.
//!
//! Where C leaves implicit padding inside a struct, the Rust mirror names it
//! (`_pad*` fields). That makes every type [`bytemuck::Pod`]: it can be copied out of
//! shared memory whatever a peer wrote there, and a value written into shared memory
//! never leaks uninitialised bytes (the bug class of XSA-216).
#![deny(missing_docs)]

pub mod blkif;
pub mod blkif_x86_32;
pub mod grant_table;
pub mod ioctl;
pub mod netif;
pub mod protocols;
pub mod ring;
pub mod types;
pub mod xenbus;
pub mod xs_wire;

pub use types::{DomId, GrantRef, Port};
