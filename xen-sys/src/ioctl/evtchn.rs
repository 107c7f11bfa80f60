//! `/dev/xen/evtchn` (`xen/evtchn.h`): bind, notify and unbind event channels.
//! `read()` on the device returns fired ports (each then masked) as `u32`s and
//! `write()` of ports unmasks them; the descriptor is pollable.

use super::ioc_none;
use nix::sys::ioctl::ioctl_num_type;
use std::mem::size_of;

/// `struct ioctl_evtchn_bind_virq`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoctlEvtchnBindVirq {
    /// The VIRQ to bind.
    pub virq: u32,
}

/// `struct ioctl_evtchn_bind_interdomain` (backend side of a channel).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoctlEvtchnBindInterdomain {
    /// The peer domain.
    pub remote_domain: u32,
    /// The peer's unbound port.
    pub remote_port: u32,
}

/// `struct ioctl_evtchn_bind_unbound_port` (frontend side of a channel).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoctlEvtchnBindUnboundPort {
    /// The domain allowed to bind to the new port.
    pub remote_domain: u32,
}

/// `struct ioctl_evtchn_unbind`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoctlEvtchnUnbind {
    /// Local port to unbind.
    pub port: u32,
}

/// `struct ioctl_evtchn_notify`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoctlEvtchnNotify {
    /// Local port to send an event through.
    pub port: u32,
}

/// `struct ioctl_evtchn_restrict_domid`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoctlEvtchnRestrictDomid {
    /// The only domain this handle may bind to.
    pub domid: u16,
}

const _: () = assert!(size_of::<IoctlEvtchnBindInterdomain>() == 8);
const _: () = assert!(size_of::<IoctlEvtchnRestrictDomid>() == 2);

/// `IOCTL_EVTCHN_BIND_VIRQ`.
pub const IOCTL_EVTCHN_BIND_VIRQ: ioctl_num_type =
    ioc_none(b'E', 0, size_of::<IoctlEvtchnBindVirq>());
/// `IOCTL_EVTCHN_BIND_INTERDOMAIN`.
pub const IOCTL_EVTCHN_BIND_INTERDOMAIN: ioctl_num_type =
    ioc_none(b'E', 1, size_of::<IoctlEvtchnBindInterdomain>());
/// `IOCTL_EVTCHN_BIND_UNBOUND_PORT`.
pub const IOCTL_EVTCHN_BIND_UNBOUND_PORT: ioctl_num_type =
    ioc_none(b'E', 2, size_of::<IoctlEvtchnBindUnboundPort>());
/// `IOCTL_EVTCHN_UNBIND`.
pub const IOCTL_EVTCHN_UNBIND: ioctl_num_type = ioc_none(b'E', 3, size_of::<IoctlEvtchnUnbind>());
/// `IOCTL_EVTCHN_NOTIFY`.
pub const IOCTL_EVTCHN_NOTIFY: ioctl_num_type = ioc_none(b'E', 4, size_of::<IoctlEvtchnNotify>());
/// `IOCTL_EVTCHN_RESET`.
pub const IOCTL_EVTCHN_RESET: ioctl_num_type = ioc_none(b'E', 5, 0);
/// `IOCTL_EVTCHN_RESTRICT_DOMID`.
pub const IOCTL_EVTCHN_RESTRICT_DOMID: ioctl_num_type =
    ioc_none(b'E', 6, size_of::<IoctlEvtchnRestrictDomid>());

nix::ioctl_write_ptr_bad!(
    /// `IOCTL_EVTCHN_BIND_VIRQ`; returns the local port.
    evtchn_bind_virq,
    IOCTL_EVTCHN_BIND_VIRQ,
    IoctlEvtchnBindVirq
);
nix::ioctl_write_ptr_bad!(
    /// `IOCTL_EVTCHN_BIND_INTERDOMAIN`; returns the local port.
    evtchn_bind_interdomain,
    IOCTL_EVTCHN_BIND_INTERDOMAIN,
    IoctlEvtchnBindInterdomain
);
nix::ioctl_write_ptr_bad!(
    /// `IOCTL_EVTCHN_BIND_UNBOUND_PORT`; returns the local port.
    evtchn_bind_unbound_port,
    IOCTL_EVTCHN_BIND_UNBOUND_PORT,
    IoctlEvtchnBindUnboundPort
);
nix::ioctl_write_ptr_bad!(
    /// `IOCTL_EVTCHN_UNBIND`.
    evtchn_unbind,
    IOCTL_EVTCHN_UNBIND,
    IoctlEvtchnUnbind
);
nix::ioctl_write_ptr_bad!(
    /// `IOCTL_EVTCHN_NOTIFY`.
    evtchn_notify,
    IOCTL_EVTCHN_NOTIFY,
    IoctlEvtchnNotify
);
nix::ioctl_none_bad!(
    /// `IOCTL_EVTCHN_RESET`: unbind every port of this handle.
    evtchn_reset,
    IOCTL_EVTCHN_RESET
);
nix::ioctl_write_ptr_bad!(
    /// `IOCTL_EVTCHN_RESTRICT_DOMID`.
    evtchn_restrict_domid,
    IOCTL_EVTCHN_RESTRICT_DOMID,
    IoctlEvtchnRestrictDomid
);
