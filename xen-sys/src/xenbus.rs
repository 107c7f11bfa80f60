//! Device states of `xen/io/xenbus.h` (`enum xenbus_state`), as written to the
//! `state` key of a device's store directory.

use std::fmt;
use std::str::FromStr;

/// `enum xenbus_state`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum XenbusState {
    /// `XenbusStateUnknown`.
    Unknown = 0,
    /// `XenbusStateInitialising`.
    Initialising = 1,
    /// `XenbusStateInitWait`: early initialisation done, waiting for the peer or hotplug.
    InitWait = 2,
    /// `XenbusStateInitialised`: waiting for a connection from the peer.
    Initialised = 3,
    /// `XenbusStateConnected`.
    Connected = 4,
    /// `XenbusStateClosing`: closing because of an error or an unplug.
    Closing = 5,
    /// `XenbusStateClosed`.
    Closed = 6,
    /// `XenbusStateReconfiguring`.
    Reconfiguring = 7,
    /// `XenbusStateReconfigured`.
    Reconfigured = 8,
}

/// A `state` value that is not a `XenbusState`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadXenbusState(pub String);

impl fmt::Display for BadXenbusState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not a XenbusState: {:?} (expected a number 0..=8)",
            self.0
        )
    }
}

impl std::error::Error for BadXenbusState {}

impl XenbusState {
    /// Every state, in numeric order.
    pub const ALL: [XenbusState; 9] = [
        XenbusState::Unknown,
        XenbusState::Initialising,
        XenbusState::InitWait,
        XenbusState::Initialised,
        XenbusState::Connected,
        XenbusState::Closing,
        XenbusState::Closed,
        XenbusState::Reconfiguring,
        XenbusState::Reconfigured,
    ];
}

impl TryFrom<u32> for XenbusState {
    type Error = BadXenbusState;
    fn try_from(v: u32) -> Result<Self, Self::Error> {
        XenbusState::ALL
            .get(v as usize)
            .copied()
            .ok_or_else(|| BadXenbusState(v.to_string()))
    }
}

impl FromStr for XenbusState {
    type Err = BadXenbusState;
    /// Parses the decimal form a store holds (surrounding whitespace allowed).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        t.parse::<u32>()
            .ok()
            .and_then(|v| XenbusState::try_from(v).ok())
            .ok_or_else(|| BadXenbusState(s.to_string()))
    }
}

impl fmt::Display for XenbusState {
    /// The decimal form written to the store.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", *self as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_values() {
        for s in XenbusState::ALL {
            assert_eq!(s.to_string().parse::<XenbusState>(), Ok(s));
        }
        assert_eq!(" 4\n".parse::<XenbusState>(), Ok(XenbusState::Connected));
        assert!("9".parse::<XenbusState>().is_err());
        assert!("-1".parse::<XenbusState>().is_err());
        assert!("".parse::<XenbusState>().is_err());
        assert!(XenbusState::try_from(u32::MAX).is_err());
    }
}
