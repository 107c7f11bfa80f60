//! The network benchmark's result type: its errors are messages (they end the
//! run as `xenio-bench net: error: ...`).

/// A result whose error is a message.
pub type R<T> = Result<T, String>;
