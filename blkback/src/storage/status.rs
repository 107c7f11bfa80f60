//! From a storage operation's outcome to the blkif status the frontend sees:
//! the [table](super#what-the-frontend-sees) of the storage module, as code.

use crate::reorder::IoKind;
use std::io;
use xenio_hostio::disk::OpError;
use xenio_xen_sys::blkif::{BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY};

/// The status a request gets when an operation of `kind` it is part of ended
/// with `result`: `OKAY` for `Ok`, `EOPNOTSUPP` for an unsupported flush or
/// discard, `ERROR` for everything else.
///
/// ```
/// use std::io;
/// use xenio_blkback::reorder::IoKind;
/// use xenio_blkback::storage::blkif_status;
/// use xenio_xen_sys::blkif::*;
///
/// let unsupported = || Err(io::Error::from(io::ErrorKind::Unsupported));
/// assert_eq!(blkif_status(IoKind::Read, &Ok(4096)), BLKIF_RSP_OKAY);
/// assert_eq!(blkif_status(IoKind::Flush, &unsupported()), BLKIF_RSP_EOPNOTSUPP);
/// assert_eq!(blkif_status(IoKind::Discard { secure: false }, &unsupported()), BLKIF_RSP_EOPNOTSUPP);
/// assert_eq!(blkif_status(IoKind::Write, &unsupported()), BLKIF_RSP_ERROR);
/// assert_eq!(blkif_status(IoKind::Read, &Err(io::Error::other("bad sector"))), BLKIF_RSP_ERROR);
/// assert_eq!(
///     blkif_status(IoKind::Flush, &Err(io::Error::from_raw_os_error(95))), // EOPNOTSUPP
///     BLKIF_RSP_EOPNOTSUPP
/// );
/// ```
pub fn blkif_status(kind: IoKind, result: &io::Result<usize>) -> i16 {
    match result {
        Ok(_) => BLKIF_RSP_OKAY,
        Err(e) if is_unsupported(e) && matches!(kind, IoKind::Flush | IoKind::Discard { .. }) => {
            BLKIF_RSP_EOPNOTSUPP
        }
        Err(_) => BLKIF_RSP_ERROR,
    }
}

/// Kind `Unsupported`, or the OS error `EOPNOTSUPP` (also inside an
/// [`OpError`], as io_uring's queue reports it).
fn is_unsupported(e: &io::Error) -> bool {
    let errno = e.raw_os_error().or_else(|| {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<OpError>())
            .and_then(|op| op.source.raw_os_error())
    });
    e.kind() == io::ErrorKind::Unsupported || errno == Some(nix::libc::EOPNOTSUPP)
}
