//! Newtypes for the identifiers Xen hands around (`domid_t`, `grant_ref_t`,
//! `evtchn_port_t` in `xen/xen.h`, `xen/grant_table.h`, `xen/event_channel.h`).

use std::fmt;

/// A domain id (`domid_t`, `xen/xen.h`). Domain 0 is the control domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct DomId(pub u16);

impl DomId {
    /// The control domain.
    pub const DOM0: DomId = DomId(0);
    /// `DOMID_FIRST_RESERVED`: ids from here on are not real domains.
    pub const FIRST_RESERVED: DomId = DomId(0x7ff0);
    /// `DOMID_SELF`.
    pub const SELF: DomId = DomId(0x7ff0);
    /// `DOMID_INVALID`.
    pub const INVALID: DomId = DomId(0x7ff4);

    /// Whether this id can name a real domain (below `DOMID_FIRST_RESERVED`).
    pub const fn is_real(self) -> bool {
        self.0 < Self::FIRST_RESERVED.0
    }
}

impl fmt::Display for DomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A grant reference (`grant_ref_t`, `xen/grant_table.h`): an index into the
/// granting domain's grant table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct GrantRef(pub u32);

impl fmt::Display for GrantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An event channel port (`evtchn_port_t`, `xen/event_channel.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct Port(pub u32);

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
