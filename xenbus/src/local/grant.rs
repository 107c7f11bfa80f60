//! Local grants: a domain's grantable memory is its `pool` file; its `gnttab`
//! file is an array of `grant_entry_v1` saying which domain may map which pool
//! page and how; its `maptrack` file records which processes have each grant
//! mapped. Mapping checks the entry as Xen does (type, domain, read-only), so a
//! ref that was never granted, was granted to another domain, or was revoked is
//! refused, and a read-only grant maps without write permission.

use super::domain::{LocalDomain, alive};
use super::pages::{AtomicFile, PAGE, PageMap, map_over};
use crate::error::{Error, Result};
use crate::grant::{Access, CopyBuf, GrantCopy, GrantMapper, GrantTable, Granted};
use crate::region::{ReadOnlyRegion, Region};
use crate::window::GrantWindow;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use xenio_xen_sys::grant_table::*;
use xenio_xen_sys::{DomId, GrantRef};

/// Entries in a local grant table (32 frames of 512 v1 entries, Xen's default).
pub const NR_GRANT_ENTRIES: u32 = 16384;
/// Entries 0..8 are reserved for the toolstack, as in Xen (`GNTTAB_NR_RESERVED_ENTRIES`).
pub const NR_RESERVED_ENTRIES: u32 = 8;
/// Processes that can have one grant mapped at the same time.
pub const MAPTRACK_SLOTS: usize = 4;
/// The pool grows by this many pages at a time.
const POOL_CHUNK_PAGES: u64 = 256;
/// Largest pool a domain may grow (1 GiB).
const MAX_POOL_PAGES: u64 = 1 << 18;

/// Entry packing of a `grant_entry_v1` read as one little-endian u64.
fn entry(flags: u16, domid: DomId, frame: u32) -> u64 {
    u64::from(flags) | (u64::from(domid.0) << 16) | (u64::from(frame) << 32)
}
fn flags_of(e: u64) -> u16 {
    e as u16
}
fn domid_of(e: u64) -> DomId {
    DomId((e >> 16) as u16)
}
fn frame_of(e: u64) -> u32 {
    (e >> 32) as u32
}

/// A domain's grant table and map track, mapped.
#[derive(Debug)]
struct Tables {
    gnttab: AtomicFile,
    maptrack: AtomicFile,
}

impl Tables {
    fn entry(&self, gref: GrantRef) -> Option<&AtomicU64> {
        self.gnttab.words().get(gref.0 as usize)
    }

    fn slots(&self, gref: GrantRef) -> &[AtomicU64] {
        let i = gref.0 as usize * MAPTRACK_SLOTS;
        self.maptrack
            .words()
            .get(i..i + MAPTRACK_SLOTS)
            .unwrap_or(&[])
    }

    /// Whether a live process has `gref` mapped.
    fn in_use(&self, gref: GrantRef) -> bool {
        self.slots(gref).iter().any(|s| {
            let v = s.load(Ordering::Acquire);
            (v as u32) > 0 && alive((v >> 32) as u32)
        })
    }

    /// Record that process `pid` maps `gref` once more.
    fn track(&self, gref: GrantRef, pid: u32) -> Result<()> {
        let slots = self.slots(gref);
        loop {
            // Our own slot first, then a free or dead one.
            let mine = slots
                .iter()
                .find(|s| (s.load(Ordering::Acquire) >> 32) as u32 == pid);
            let target = mine.or_else(|| {
                slots.iter().find(|s| {
                    let v = s.load(Ordering::Acquire);
                    (v as u32) == 0 || !alive((v >> 32) as u32)
                })
            });
            let Some(slot) = target else {
                return Err(Error::Limit(format!(
                    "grant {gref} is already mapped by {MAPTRACK_SLOTS} live processes"
                )));
            };
            let v = slot.load(Ordering::Acquire);
            let new = if (v >> 32) as u32 == pid {
                v + 1
            } else {
                (u64::from(pid) << 32) | 1
            };
            // AcqRel: pairs with the Acquire loads of the granter's `in_use` check.
            if slot
                .compare_exchange(v, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Ok(());
            }
        }
    }

    /// Drop one pin of `pid`; when no live process holds the grant any more, clear
    /// `GTF_reading`/`GTF_writing` (informational, as Xen keeps them).
    fn release(&self, gref: GrantRef, pid: u32) {
        self.untrack(gref, pid);
        if self.in_use(gref) {
            return;
        }
        if let Some(e) = self.entry(gref) {
            let v = e.load(Ordering::Acquire);
            let bits = u64::from(GTF_READING | GTF_WRITING);
            if v & bits != 0 {
                let _ = e.compare_exchange(v, v & !bits, Ordering::AcqRel, Ordering::Relaxed);
            }
        }
    }

    fn untrack(&self, gref: GrantRef, pid: u32) {
        for slot in self.slots(gref) {
            let mut v = slot.load(Ordering::Acquire);
            while (v >> 32) as u32 == pid && (v as u32) > 0 {
                let new = if (v as u32) == 1 { 0 } else { v - 1 };
                match slot.compare_exchange(v, new, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return,
                    Err(cur) => v = cur,
                }
            }
        }
    }
}

fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

/// Create a file by writing a temporary and renaming it in place, so a backend
/// that still maps the previous incarnation keeps its (old) pages.
fn create_fresh(path: &Path, len: u64) -> Result<File> {
    let tmp = path.with_extension(format!("new-{}", std::process::id()));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
    f.set_len(len)
        .map_err(|e| Error::io(format!("sizing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::io(format!("renaming to {}", path.display()), e))?;
    Ok(f)
}

// ---------------------------------------------------------------- granting side

#[derive(Debug)]
struct Pool {
    file: File,
    pages: u64,
    next_page: u64,
    free_pages: Vec<u64>,
    next_ref: u32,
    free_refs: Vec<u32>,
}

#[derive(Debug)]
struct GranterShared {
    tables: Tables,
    pool: Mutex<Pool>,
    /// The files this incarnation created, with their (device, inode).
    files: Vec<(PathBuf, (u64, u64))>,
}

/// When the grant table and every grant made from it are gone, so are its
/// files (a backend that still maps pages keeps them through its own
/// descriptors and mappings): a run leaves nothing behind in the run directory.
/// Files a later incarnation put in their place are left alone.
impl Drop for GranterShared {
    fn drop(&mut self) {
        for (path, id) in &self.files {
            let ours = std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == *id);
            if ours {
                if let Err(e) = std::fs::remove_file(path) {
                    tracing::debug!("removing {}: {e}", path.display());
                }
            }
        }
    }
}

/// A file's (device, inode), to know it again.
fn file_id(f: &File, path: &Path) -> Result<(u64, u64)> {
    let m = f
        .metadata()
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok((m.dev(), m.ino()))
}

/// Frontend side of local grants: this domain's grant table and pool.
#[derive(Clone, Debug)]
pub struct LocalGrantTable {
    dom: LocalDomain,
    shared: Arc<GranterShared>,
}

impl LocalGrantTable {
    /// Create this domain's grant table, map track and pool (replacing those of an
    /// earlier incarnation; a backend still mapping old pages keeps them).
    pub fn new(dom: &LocalDomain) -> Result<Self> {
        let dir = dom.domain_dir(dom.domid());
        let gnttab = create_fresh(&dir.join("gnttab"), u64::from(NR_GRANT_ENTRIES) * 8)?;
        let maptrack = create_fresh(
            &dir.join("maptrack"),
            u64::from(NR_GRANT_ENTRIES) * 8 * MAPTRACK_SLOTS as u64,
        )?;
        let pool = create_fresh(&dir.join("pool"), 0)?;
        let files = vec![
            (dir.join("gnttab"), file_id(&gnttab, &dir.join("gnttab"))?),
            (
                dir.join("maptrack"),
                file_id(&maptrack, &dir.join("maptrack"))?,
            ),
            (dir.join("pool"), file_id(&pool, &dir.join("pool"))?),
        ];
        let tables = Tables {
            gnttab: AtomicFile::new(&gnttab, "gnttab")?,
            maptrack: AtomicFile::new(&maptrack, "maptrack")?,
        };
        Ok(LocalGrantTable {
            dom: dom.clone(),
            shared: Arc::new(GranterShared {
                tables,
                pool: Mutex::new(Pool {
                    file: pool,
                    pages: 0,
                    next_page: 0,
                    free_pages: Vec::new(),
                    next_ref: NR_RESERVED_ENTRIES,
                    free_refs: Vec::new(),
                }),
                files,
            }),
        })
    }

    /// The raw entry of `gref` (for tests and diagnostics).
    pub fn entry(&self, gref: GrantRef) -> Option<GrantEntryV1> {
        self.shared.tables.entry(gref).map(|e| {
            let v = e.load(Ordering::Acquire);
            GrantEntryV1 {
                flags: flags_of(v),
                domid: domid_of(v).0,
                frame: frame_of(v),
            }
        })
    }
}

impl Pool {
    fn alloc(&mut self, pages: usize) -> Result<(Vec<u64>, Vec<u32>)> {
        let mut frames = Vec::with_capacity(pages);
        while frames.len() < pages {
            if let Some(p) = self.free_pages.pop() {
                frames.push(p);
                continue;
            }
            if self.next_page >= self.pages {
                let grow = (self.pages + POOL_CHUNK_PAGES).min(MAX_POOL_PAGES);
                if grow <= self.pages {
                    self.free_pages.extend(frames);
                    return Err(Error::Limit(format!(
                        "the grant pool is full ({MAX_POOL_PAGES} pages)"
                    )));
                }
                // Growing never invalidates existing mappings; the pool never shrinks.
                self.file
                    .set_len(grow * PAGE as u64)
                    .map_err(|e| Error::io("growing the grant pool", e))?;
                self.pages = grow;
            }
            frames.push(self.next_page);
            self.next_page += 1;
        }
        let mut refs = Vec::with_capacity(pages);
        while refs.len() < pages {
            if let Some(r) = self.free_refs.pop() {
                refs.push(r);
            } else if self.next_ref < NR_GRANT_ENTRIES {
                refs.push(self.next_ref);
                self.next_ref += 1;
            } else {
                self.free_refs.extend(refs);
                self.free_pages.extend(frames);
                return Err(Error::Limit(format!(
                    "the grant table is full ({NR_GRANT_ENTRIES} entries)"
                )));
            }
        }
        frames.sort_unstable();
        Ok((frames, refs))
    }
}

impl GrantTable for LocalGrantTable {
    type Granted = LocalGranted;

    fn grant(&self, to: DomId, pages: usize, access: Access) -> Result<LocalGranted> {
        if pages == 0 {
            return Err(Error::Limit("a grant of zero pages".into()));
        }
        let (frames, refs) = self
            .shared
            .pool
            .lock()
            .map_err(|_| Error::Limit("grant table lock poisoned".into()))?
            .alloc(pages)?;
        let region = {
            let pool = self
                .shared
                .pool
                .lock()
                .map_err(|_| Error::Limit("grant table lock poisoned".into()))?;
            PageMap::new(&pool.file, &frames, true)?.into_region()
        };
        region.fill(0, region.len(), 0)?;
        let flags = GTF_PERMIT_ACCESS
            | if access == Access::ReadOnly {
                GTF_READONLY
            } else {
                0
            };
        for (r, f) in refs.iter().zip(&frames) {
            let frame =
                u32::try_from(*f).map_err(|_| Error::Limit("pool frame beyond 32 bits".into()))?;
            // Release: the zeroed page and the entry's domid/frame are visible before a
            // mapper's Acquire load sees the flags valid (Xen: write frame and domid,
            // wmb, then flags). One 8-byte store carries all three here.
            self.shared
                .tables
                .entry(GrantRef(*r))
                .expect("ref below NR_GRANT_ENTRIES")
                .store(entry(flags, to, frame), Ordering::Release);
        }
        Ok(LocalGranted {
            refs: refs.into_iter().map(GrantRef).collect(),
            frames,
            region: Some(Arc::new(region)),
            shared: self.shared.clone(),
            revoked: false,
            domid: self.dom.domid(),
        })
    }
}

/// Pages granted by a [`LocalGrantTable`].
#[derive(Debug)]
pub struct LocalGranted {
    refs: Vec<GrantRef>,
    frames: Vec<u64>,
    region: Option<Arc<Region>>,
    shared: Arc<GranterShared>,
    revoked: bool,
    domid: DomId,
}

impl Granted for LocalGranted {
    fn refs(&self) -> &[GrantRef] {
        &self.refs
    }

    fn region(&self) -> &Arc<Region> {
        self.region.as_ref().expect("region lives until drop")
    }

    fn revoke(&mut self) -> Result<()> {
        if self.revoked {
            return Ok(());
        }
        let t = &self.shared.tables;
        if let Some(r) = self.refs.iter().find(|r| t.in_use(**r)) {
            return Err(Error::Grant {
                domid: self.domid,
                gref: *r,
                reason: "still mapped by a live process".into(),
            });
        }
        for r in &self.refs {
            let Some(e) = t.entry(*r) else { continue };
            let mut v = e.load(Ordering::Acquire);
            loop {
                if t.in_use(*r) {
                    return Err(Error::Grant {
                        domid: self.domid,
                        gref: *r,
                        reason: "still mapped by a live process".into(),
                    });
                }
                // AcqRel: a mapper that tracked itself and then set GTF_reading makes
                // this CAS fail, and we see its map-track slot on the retry.
                match e.compare_exchange(v, 0, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => break,
                    Err(cur) => v = cur,
                }
            }
        }
        self.revoked = true;
        if let Ok(mut pool) = self.shared.pool.lock() {
            pool.free_refs.extend(self.refs.iter().map(|r| r.0));
            pool.free_pages.extend(&self.frames);
        }
        Ok(())
    }
}

impl Drop for LocalGranted {
    fn drop(&mut self) {
        self.region.take();
        if let Err(e) = self.revoke() {
            // Like Linux's deferred gnttab release: the pages stay granted (and are
            // never reused) while the peer holds them.
            tracing::warn!("leaving grant in place: {e}");
        }
    }
}

// ---------------------------------------------------------------- mapping side

#[derive(Debug)]
struct Peer {
    tables: Tables,
    pool_rw: File,
    pool_ro: File,
    inode: (u64, u64),
    /// The pool's size in pages when last looked at (0: not yet), so that a
    /// grant copy does not `fstat` the pool for every page it copies: a
    /// 64 KiB packet is 17 copies.
    pool_pages: AtomicU64,
}

/// Backend side of local grants: map or copy other domains' grants.
#[derive(Debug)]
pub struct LocalGrantMapper {
    dom: LocalDomain,
    peers: Mutex<HashMap<DomId, Arc<Peer>>>,
    pid: u32,
}

impl LocalGrantMapper {
    /// A mapper acting as `dom`.
    pub fn new(dom: &LocalDomain) -> Self {
        LocalGrantMapper {
            dom: dom.clone(),
            peers: Mutex::new(HashMap::new()),
            pid: std::process::id(),
        }
    }

    fn peer(&self, domid: DomId) -> Result<Arc<Peer>> {
        let dir: PathBuf = self.dom.domain_dir(domid);
        let gnttab = dir.join("gnttab");
        let meta = std::fs::metadata(&gnttab).map_err(|e| {
            Error::io(
                format!(
                    "domain {domid} has no grant table ({}); is it running?",
                    gnttab.display()
                ),
                e,
            )
        })?;
        let inode = (meta.dev(), meta.ino());
        let mut peers = self
            .peers
            .lock()
            .map_err(|_| Error::Limit("mapper lock poisoned".into()))?;
        if let Some(p) = peers.get(&domid).filter(|p| p.inode == inode) {
            return Ok(p.clone());
        }
        let tables = Tables {
            gnttab: AtomicFile::new(&open_rw(&gnttab)?, "gnttab")?,
            maptrack: AtomicFile::new(&open_rw(&dir.join("maptrack"))?, "maptrack")?,
        };
        let pool = dir.join("pool");
        let pool_ro =
            File::open(&pool).map_err(|e| Error::io(format!("opening {}", pool.display()), e))?;
        let p = Arc::new(Peer {
            tables,
            pool_rw: open_rw(&pool)?,
            pool_ro,
            inode,
            pool_pages: AtomicU64::new(0),
        });
        peers.insert(domid, p.clone());
        Ok(p)
    }

    fn refuse(domid: DomId, gref: GrantRef, reason: impl Into<String>) -> Error {
        Error::Grant {
            domid,
            gref,
            reason: reason.into(),
        }
    }

    /// Pin `gref` of `domid` for this process: returns the pool frame.
    /// `fresh`: check the frame against the pool's size now (a mapping of a
    /// page past the end of the file would fault when touched); otherwise a
    /// size looked at before will do while the frame is below it (a copy past
    /// the end of a pool that shrank fails or extends the granter's own file,
    /// and touches nothing of ours).
    fn pin(
        &self,
        peer: &Peer,
        domid: DomId,
        gref: GrantRef,
        writable: bool,
        fresh: bool,
    ) -> Result<u64> {
        let Some(e) = peer.tables.entry(gref) else {
            return Err(Self::refuse(
                domid,
                gref,
                format!("out of range (the table has {NR_GRANT_ENTRIES} entries)"),
            ));
        };
        peer.tables.track(gref, self.pid)?;
        let me = self.dom.domid();
        let mut v = e.load(Ordering::Acquire);
        let frame = loop {
            let flags = flags_of(v);
            let why = if flags & GTF_TYPE_MASK != GTF_PERMIT_ACCESS {
                Some("not granted (never granted, or revoked)".to_string())
            } else if domid_of(v) != me {
                Some(format!(
                    "granted to domain {}, not to domain {me}",
                    domid_of(v)
                ))
            } else if writable && flags & GTF_READONLY != 0 {
                Some("a read-only grant cannot be mapped writable".to_string())
            } else {
                None
            };
            if let Some(why) = why {
                peer.tables.untrack(gref, self.pid);
                return Err(Self::refuse(domid, gref, why));
            }
            let new =
                v | u64::from(GTF_READING) | if writable { u64::from(GTF_WRITING) } else { 0 };
            // AcqRel: pairs with the granter's revoke CAS (see `LocalGranted::revoke`).
            match e.compare_exchange(v, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break frame_of(v),
                Err(cur) => v = cur,
            }
        };
        let mut pages = peer.pool_pages.load(Ordering::Relaxed);
        if fresh || u64::from(frame) >= pages {
            pages = peer
                .pool_ro
                .metadata()
                .map(|m| m.len() / PAGE as u64)
                .unwrap_or(0);
            peer.pool_pages.store(pages, Ordering::Relaxed);
        }
        if u64::from(frame) >= pages {
            self.unpin(peer, gref);
            return Err(Self::refuse(
                domid,
                gref,
                format!("frame {frame} is beyond the pool ({pages} pages)"),
            ));
        }
        Ok(u64::from(frame))
    }

    fn unpin(&self, peer: &Peer, gref: GrantRef) {
        peer.tables.release(gref, self.pid);
    }

    fn pin_all(
        &self,
        peer: &Peer,
        domid: DomId,
        refs: &[GrantRef],
        writable: bool,
    ) -> Result<Vec<u64>> {
        if refs.is_empty() {
            return Err(Error::Limit("mapping zero grants".into()));
        }
        let mut frames = Vec::with_capacity(refs.len());
        for r in refs {
            match self.pin(peer, domid, *r, writable, true) {
                Ok(f) => frames.push(f),
                Err(e) => {
                    for done in &refs[..frames.len()] {
                        self.unpin(peer, *done);
                    }
                    return Err(e);
                }
            }
        }
        Ok(frames)
    }
}

/// The pins of a mapping; released after the mapping is gone (see `rewrap`).
struct Mapped {
    peer: Arc<Peer>,
    refs: Vec<GrantRef>,
    pid: u32,
}

impl Drop for Mapped {
    fn drop(&mut self) {
        for r in &self.refs {
            self.peer.tables.release(*r, self.pid);
        }
    }
}

impl LocalGrantMapper {
    fn map_with(
        &self,
        domid: DomId,
        refs: &[GrantRef],
        writable: bool,
    ) -> Result<(PageMap, Mapped)> {
        let peer = self.peer(domid)?;
        let frames = self.pin_all(&peer, domid, refs, writable)?;
        let file = if writable {
            &peer.pool_rw
        } else {
            &peer.pool_ro
        };
        match PageMap::new(file, &frames, writable) {
            Ok(map) => Ok((
                map,
                Mapped {
                    peer,
                    refs: refs.to_vec(),
                    pid: self.pid,
                },
            )),
            Err(e) => {
                for r in refs {
                    self.unpin(&peer, *r);
                }
                Err(e)
            }
        }
    }
}

impl GrantMapper for LocalGrantMapper {
    fn map(&self, domid: DomId, refs: &[GrantRef]) -> Result<Region> {
        let (map, pins) = self.map_with(domid, refs, true)?;
        Ok(rewrap(map.into_region(), pins))
    }

    /// The pool page over the window's slot (`MAP_FIXED`), with the same
    /// checks and pins as [`map`](Self::map).
    fn map_in(
        &self,
        window: &GrantWindow,
        slot: usize,
        domid: DomId,
        gref: GrantRef,
    ) -> Result<Region> {
        let Some(slot) = window.take(slot) else {
            return self.map(domid, &[gref]);
        };
        let peer = self.peer(domid)?;
        let frame = self.pin(&peer, domid, gref, true, true)?;
        if let Err(e) = map_over(&slot, &peer.pool_rw, frame) {
            self.unpin(&peer, gref);
            return Err(e);
        }
        let ptr = slot.addr();
        let pins = Mapped {
            peer,
            refs: vec![gref],
            pid: self.pid,
        };
        // Dropped in order: the slot (reservation back over the page: unmapped),
        // then the pins.
        let owner = (slot, pins);
        // SAFETY: the slot's page is a read-write shared mapping of a pool page
        // (just made), page aligned, kept until `owner` drops the slot; nothing
        // else in this process refers to it.
        Ok(unsafe { Region::from_raw(ptr, PAGE, Box::new(owner)) })
    }

    fn map_readonly(&self, domid: DomId, refs: &[GrantRef]) -> Result<ReadOnlyRegion> {
        let (map, owner) = self.map_with(domid, refs, false)?;
        let region = map.into_readonly_region();
        Ok(rewrap_ro(region, owner))
    }

    /// Every copy is checked and pinned first; then each run of copies that
    /// go the same way between consecutive bytes of one pool is one
    /// `preadv`/`pwritev` (a packet laid over pool pages in order is one
    /// system call, not one per page), and the pins are dropped.
    fn copy(&self, ops: &mut [GrantCopy<'_>]) -> Result<Vec<Result<()>>> {
        let mut out = Vec::with_capacity(ops.len());
        // Look each granting domain up once per batch (a batch usually has one).
        let mut peers: Vec<(DomId, Arc<Peer>)> = Vec::new();
        // Per copy, once pinned: its peer (index into `peers`) and pool offset.
        let mut at: Vec<Option<(usize, u64)>> = Vec::with_capacity(ops.len());
        for op in ops.iter() {
            let len = copy_len(op);
            if usize::from(op.offset) + len > PAGE {
                out.push(Err(Self::refuse(
                    op.domid,
                    op.gref,
                    format!(
                        "copy of {len} bytes at offset {} crosses the page (GNTST_bad_copy_arg)",
                        op.offset
                    ),
                )));
                at.push(None);
                continue;
            }
            let writable = matches!(op.local, CopyBuf::ToGrant(_));
            let peer = match peers.iter().position(|(d, _)| *d == op.domid) {
                Some(i) => Ok(i),
                None => self.peer(op.domid).map(|p| {
                    peers.push((op.domid, p));
                    peers.len() - 1
                }),
            };
            match peer.and_then(|i| {
                self.pin(&peers[i].1, op.domid, op.gref, writable, false)
                    .map(|frame| (i, frame * PAGE as u64 + u64::from(op.offset)))
            }) {
                Ok(pinned) => {
                    out.push(Ok(()));
                    at.push(Some(pinned));
                }
                Err(e) => {
                    out.push(Err(e));
                    at.push(None);
                }
            }
        }
        let mut i = 0;
        while i < ops.len() {
            let Some((p, start)) = at[i] else {
                i += 1;
                continue;
            };
            let writing = matches!(ops[i].local, CopyBuf::ToGrant(_));
            let mut end = start + copy_len(&ops[i]) as u64;
            let mut j = i + 1;
            while j < ops.len() && j - i < COPY_RUN {
                match at[j] {
                    Some((q, s))
                        if q == p
                            && s == end
                            && writing == matches!(ops[j].local, CopyBuf::ToGrant(_)) =>
                    {
                        end += copy_len(&ops[j]) as u64;
                        j += 1;
                    }
                    _ => break,
                }
            }
            let peer = &peers[p].1;
            let r = if writing {
                write_run(&peer.pool_rw, &ops[i..j], start)
            } else {
                read_run(&peer.pool_ro, &mut ops[i..j], start)
            };
            if let Err(e) = r {
                for (o, op) in out[i..j].iter_mut().zip(&ops[i..j]) {
                    *o = Err(Error::io(
                        format!("grant copy of {} ref {}", op.domid, op.gref),
                        io::Error::new(e.kind(), e.to_string()),
                    ));
                }
            }
            i = j;
        }
        for (op, pinned) in ops.iter().zip(&at) {
            if let Some((p, _)) = pinned {
                self.unpin(&peers[*p].1, op.gref);
            }
        }
        Ok(out)
    }
}

/// Most copies joined into one `preadv`/`pwritev` (a 64 KiB packet is 17).
const COPY_RUN: usize = 64;

fn copy_len(op: &GrantCopy<'_>) -> usize {
    match &op.local {
        CopyBuf::FromGrant(b) => b.len(),
        CopyBuf::ToGrant(b) => b.len(),
    }
}

/// Write the local buffers of `ops` (all `ToGrant`) to `file` from `at` on, in
/// order: one `pwritev`, then what a short write left (rare for a pool file)
/// buffer by buffer.
fn write_run(file: &File, ops: &[GrantCopy<'_>], at: u64) -> io::Result<()> {
    let bufs: Vec<&[u8]> = ops
        .iter()
        .filter_map(|op| match &op.local {
            CopyBuf::ToGrant(b) => Some(&**b),
            CopyBuf::FromGrant(_) => None,
        })
        .collect();
    let iov: Vec<io::IoSlice<'_>> = bufs.iter().map(|b| io::IoSlice::new(b)).collect();
    let off = i64::try_from(at).map_err(io::Error::other)?;
    let done = retry(|| nix::sys::uio::pwritev(file, &iov, off))?;
    let mut pos = 0;
    for b in bufs {
        let skip = done.saturating_sub(pos).min(b.len());
        file.write_all_at(&b[skip..], at + (pos + skip) as u64)?;
        pos += b.len();
    }
    Ok(())
}

/// Fill the local buffers of `ops` (all `FromGrant`) from `file` at `at` on:
/// one `preadv`, then what a short read left buffer by buffer.
fn read_run(file: &File, ops: &mut [GrantCopy<'_>], at: u64) -> io::Result<()> {
    let mut bufs: Vec<&mut [u8]> = ops
        .iter_mut()
        .filter_map(|op| match &mut op.local {
            CopyBuf::FromGrant(b) => Some(&mut **b),
            CopyBuf::ToGrant(_) => None,
        })
        .collect();
    let mut iov: Vec<io::IoSliceMut<'_>> =
        bufs.iter_mut().map(|b| io::IoSliceMut::new(b)).collect();
    let off = i64::try_from(at).map_err(io::Error::other)?;
    let done = retry(|| nix::sys::uio::preadv(file, &mut iov, off))?;
    drop(iov);
    let mut pos = 0;
    for b in bufs {
        let skip = done.saturating_sub(pos).min(b.len());
        let len = b.len();
        file.read_exact_at(&mut b[skip..], at + (pos + skip) as u64)?;
        pos += len;
    }
    Ok(())
}

/// A system call, again while a signal interrupts it.
fn retry(mut call: impl FnMut() -> nix::Result<usize>) -> io::Result<usize> {
    loop {
        match call() {
            Err(nix::errno::Errno::EINTR) => {}
            r => return r.map_err(io::Error::from),
        }
    }
}

/// A region whose owner is the mapping plus its pins.
fn rewrap(region: Region, pins: Mapped) -> Region {
    let (ptr, len) = (
        std::ptr::NonNull::new(region.as_ptr()).expect("mapped"),
        region.len(),
    );
    let owner = (region, pins);
    // SAFETY: `owner` keeps the original region (and so its mapping) alive; the new
    // region covers exactly the same bytes with the same permissions. Dropping the
    // tuple drops the region (unmapping) before the pins (unpinning).
    unsafe { Region::from_raw(ptr, len, Box::new(owner)) }
}

fn rewrap_ro(region: ReadOnlyRegion, pins: Mapped) -> ReadOnlyRegion {
    let (ptr, len) = (
        std::ptr::NonNull::new(region.as_ptr() as *mut u8).expect("mapped"),
        region.len(),
    );
    let owner = (region, pins);
    // SAFETY: as in `rewrap`, read-only.
    unsafe { ReadOnlyRegion::from_raw(ptr, len, Box::new(owner)) }
}
