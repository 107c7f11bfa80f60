//! One domain's view of a platform ([`Platform`]), its three implementations,
//! and choosing between the local platform and real Xen at run time.

mod choice;
pub(crate) mod seam;

#[cfg(feature = "inprocess")]
pub use crate::inprocess::{InProcDomain, InProcess};
pub use crate::local::LocalPlatform;
pub use crate::xen::XenPlatform;
pub use choice::{PlatformChoice, PlatformKind, STOP_SIGNALS, resolve, stop_on_signals};
pub use seam::Platform;
