//! The event channel seam: what `/dev/xen/evtchn` offers a driver.

use crate::error::Result;
use std::os::fd::AsFd;
use std::time::Duration;
use xenio_xen_sys::{DomId, Port};

/// One bound event channel: the local end of an interdomain channel.
///
/// Notifications coalesce as Xen's do: several notifications before the owner
/// looks are one pending event. A notification sent while the owner is not waiting
/// stays pending until it waits. The descriptor ([`AsFd`]) is readable while an
/// event is pending, so a channel can sit in a `poll` set or an io_uring.
pub trait EventChannel: AsFd + Send + Sync {
    /// The local port.
    fn port(&self) -> Port;
    /// Send an event to the other end.
    fn notify(&self) -> Result<()>;
    /// Consume a pending event without blocking; `true` if there was one. The
    /// channel is unmasked again afterwards.
    fn take_pending(&self) -> Result<bool>;
    /// Block until an event is pending (consuming it, then unmasking), or until
    /// `timeout` passes (`Ok(false)`). `None` waits forever.
    fn wait(&self, timeout: Option<Duration>) -> Result<bool>;
    /// Unmask the port after the caller consumed an event through the descriptor.
    fn unmask(&self) -> Result<()>;
}

/// Allocating and binding event channels (what `/dev/xen/evtchn` offers).
pub trait EventChannels: Send + Sync {
    /// The channels this provider creates.
    type Channel: EventChannel;
    /// Frontend side: a new port that `remote` may bind to.
    fn alloc_unbound(&self, remote: DomId) -> Result<Self::Channel>;
    /// Backend side: bind to `remote`'s unbound port `remote_port`.
    fn bind_interdomain(&self, remote: DomId, remote_port: Port) -> Result<Self::Channel>;
}
