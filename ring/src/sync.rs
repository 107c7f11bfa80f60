//! The atomics the ring uses: std's, or loom's when built with `--cfg loom`.

#[cfg(loom)]
pub use loom::sync::atomic::{AtomicU32, fence};
pub use std::sync::atomic::Ordering;
#[cfg(not(loom))]
pub use std::sync::atomic::{AtomicU32, fence};
