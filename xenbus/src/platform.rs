//! Choosing where to run: the local platform or real Xen, at run time.

use crate::{Error, Result};
use std::str::FromStr;

/// Which platform implementation to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformKind {
    /// Processes on one host, no Xen (the default).
    Local,
    /// Real Xen: `/dev/xen/*` and xenstored.
    Xen,
}

/// What the user asked for: a platform, or detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PlatformChoice {
    /// Xen if this host is a Xen domain with the devices, else local.
    #[default]
    Auto,
    /// This platform, or an error naming what is missing.
    Exactly(PlatformKind),
}

impl FromStr for PlatformChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(PlatformChoice::Auto),
            "local" => Ok(PlatformChoice::Exactly(PlatformKind::Local)),
            "xen" => Ok(PlatformChoice::Exactly(PlatformKind::Xen)),
            other => Err(Error::BadValue {
                what: "platform (auto, local or xen)".into(),
                value: other.into(),
            }),
        }
    }
}

/// Resolve a choice on this host.
pub fn resolve(choice: PlatformChoice) -> Result<PlatformKind> {
    match choice {
        PlatformChoice::Exactly(PlatformKind::Local) => Ok(PlatformKind::Local),
        PlatformChoice::Exactly(PlatformKind::Xen) => {
            crate::xen::available().map(|()| PlatformKind::Xen)
        }
        PlatformChoice::Auto => Ok(if crate::xen::available().is_ok() {
            PlatformKind::Xen
        } else {
            PlatformKind::Local
        }),
    }
}

// ---------------------------------------------------------------- one domain's view

#[cfg(feature = "inprocess")]
pub use crate::inprocess::{InProcDomain, InProcess};
pub use crate::local::LocalPlatform;
pub use crate::xen::XenPlatform;

use crate::{DomId, EventChannels, GrantMapper, GrantTable, Store};
use std::sync::OnceLock;

/// Everything a driver needs, as one domain: its id, the store, event channels,
/// and grants in both directions. Drivers are generic over this trait, so the same
/// code runs in one process, on the local platform and on Xen.
pub trait Platform: Send + Sync {
    /// The store client.
    type Store: Store;
    /// Event channel allocation and binding.
    type Events: EventChannels;
    /// Granting this domain's pages (frontends).
    type Grants: GrantTable;
    /// Mapping and copying other domains' grants (backends).
    type Mapper: GrantMapper;
    /// This domain's id.
    fn domid(&self) -> DomId;
    /// The store, as this domain.
    fn store(&self) -> &Self::Store;
    /// Event channels, as this domain.
    fn events(&self) -> &Self::Events;
    /// The grant table (opened on first use: only frontends need it).
    fn grants(&self) -> Result<&Self::Grants>;
    /// The grant mapper (opened on first use: only backends need it).
    fn mapper(&self) -> Result<&Self::Mapper>;
}

pub(crate) fn once<T>(cell: &OnceLock<T>, init: impl FnOnce() -> Result<T>) -> Result<&T> {
    if let Some(v) = cell.get() {
        return Ok(v);
    }
    let v = init()?;
    Ok(cell.get_or_init(|| v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_choices_and_rejects_others() {
        assert_eq!(
            "auto".parse::<PlatformChoice>().unwrap(),
            PlatformChoice::Auto
        );
        assert_eq!(
            "xen".parse::<PlatformChoice>().unwrap(),
            PlatformChoice::Exactly(PlatformKind::Xen)
        );
        let e = "kvm".parse::<PlatformChoice>().unwrap_err().to_string();
        assert!(e.contains("auto, local or xen") && e.contains("kvm"), "{e}");
    }

    #[test]
    fn this_machine_resolves_auto_to_local_and_refuses_xen() {
        if let Err(why) = crate::xen::available() {
            assert_eq!(resolve(PlatformChoice::Auto).unwrap(), PlatformKind::Local);
            let e = resolve(PlatformChoice::Exactly(PlatformKind::Xen)).unwrap_err();
            assert_eq!(e.to_string(), why.to_string());
        }
    }
}
