//! One domain's view of a platform ([`Platform`]), its three implementations,
//! choosing between the local platform and real Xen at run time, and stopping on
//! signals.

mod choice;
pub(crate) mod seam;
mod signals;

#[cfg(feature = "inprocess")]
pub use crate::inprocess::{InProcDomain, InProcess};
pub use crate::local::LocalPlatform;
pub use crate::xen::XenPlatform;
pub use choice::{PlatformChoice, PlatformKind, resolve};
pub use seam::Platform;
pub use signals::{STOP_SIGNALS, stop_on_signals};
