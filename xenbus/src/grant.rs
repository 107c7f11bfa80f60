//! The grant seams: granting this domain's pages (`/dev/xen/gntalloc`) and
//! mapping or copying another domain's (`/dev/xen/gntdev`).

use crate::error::Result;
use crate::region::{ReadOnlyRegion, Region};
use crate::window::GrantWindow;
use xenio_xen_sys::{DomId, GrantRef};

/// Access a grant gives (or a mapping asks for).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// The peer may only read.
    ReadOnly,
    /// The peer may read and write.
    ReadWrite,
}

/// Pages of this domain's memory granted to another domain. Dropping the value
/// revokes the grants (after the peer unmapped them; see [`Granted::revoke`]).
pub trait Granted: Send + Sync {
    /// One grant reference per page, in order.
    fn refs(&self) -> &[GrantRef];
    /// The pages, contiguous in this process (shared, so a ring can own a handle).
    fn region(&self) -> &std::sync::Arc<Region>;
    /// Revoke every grant now. Fails (and keeps the grants) while the peer still
    /// has a page mapped, as `gnttab_end_foreign_access` does.
    fn revoke(&mut self) -> Result<()>;
}

/// Frontend side: grant pages of this domain's memory (what `/dev/xen/gntalloc`
/// offers).
pub trait GrantTable: Send + Sync {
    /// The granted pages this table hands out.
    type Granted: Granted;
    /// Allocate `pages` fresh zeroed pages and grant them to `to` with `access`.
    fn grant(&self, to: DomId, pages: usize, access: Access) -> Result<Self::Granted>;
}

/// One grant copy (`GNTTABOP_copy`): between a peer's granted page and a local
/// buffer, without mapping the page.
#[derive(Debug)]
pub struct GrantCopy<'a> {
    /// The granting domain.
    pub domid: DomId,
    /// Its grant reference.
    pub gref: GrantRef,
    /// Offset in the granted page; `offset + len` must stay within the 4 KiB page.
    pub offset: u16,
    /// The local side and the direction.
    pub local: CopyBuf<'a>,
}

/// The local side of a [`GrantCopy`].
#[derive(Debug)]
pub enum CopyBuf<'a> {
    /// Copy from the granted page into this buffer.
    FromGrant(&'a mut [u8]),
    /// Copy this buffer into the granted page (needs a read-write grant).
    ToGrant(&'a [u8]),
}

/// Backend side: map or copy another domain's grants (what `/dev/xen/gntdev` offers).
pub trait GrantMapper: Send + Sync {
    /// Map grants of `domid` read-write into one contiguous region, in order.
    /// Refused unless every grant was granted to this domain, read-write, and not revoked.
    fn map(&self, domid: DomId, refs: &[GrantRef]) -> Result<Region>;
    /// Map grants of `domid` read-only (works for read-only and read-write grants).
    fn map_readonly(&self, domid: DomId, refs: &[GrantRef]) -> Result<ReadOnlyRegion>;
    /// Perform grant copies. The result has one entry per copy, in order: each
    /// copy succeeds or fails on its own, as `GNTTABOP_copy` reports per segment.
    fn copy(&self, ops: &mut [GrantCopy<'_>]) -> Result<Vec<Result<()>>>;
    /// Map one grant of `domid` read-write at slot `slot` of `window`, so that
    /// grants in neighbouring slots are neighbours in memory (see
    /// [`GrantWindow`]); dropping the region unmaps it and frees the slot.
    /// Refused as [`map`](Self::map) refuses. When the slot is out of range or
    /// taken, or the platform cannot map into a window (this default), the
    /// grant is mapped on its own, as `map` does: a region all the same, only
    /// not in the window.
    fn map_in(
        &self,
        window: &GrantWindow,
        slot: usize,
        domid: DomId,
        gref: GrantRef,
    ) -> Result<Region> {
        let _ = (window, slot);
        self.map(domid, &[gref])
    }
}
