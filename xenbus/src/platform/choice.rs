//! Choosing where to run: the local platform or real Xen, at run time.

use crate::error::{Error, Result};
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
