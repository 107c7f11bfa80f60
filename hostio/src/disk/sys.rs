//! The few Linux calls the disk layer makes that have no safe wrapper in `nix`:
//! block-device ioctls (`linux/fs.h`), `statx`, and vectored I/O on raw `iovec`s
//! pointing into shared memory (which must never be turned into Rust references).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

// `linux/fs.h`: `#define BLKSSZGET _IO(0x12,104)`; the argument is an `int *`.
nix::ioctl_read_bad!(
    ioctl_blksszget,
    nix::request_code_none!(0x12, 104),
    libc::c_int
);
// `#define BLKPBSZGET _IO(0x12,123)`; the argument is an `unsigned int *`.
nix::ioctl_read_bad!(
    ioctl_blkpbszget,
    nix::request_code_none!(0x12, 123),
    libc::c_uint
);
// `#define BLKGETSIZE64 _IOR(0x12,114,size_t)`; the argument is a `u64 *` although
// the number encodes `sizeof(size_t)`.
nix::ioctl_read_bad!(
    ioctl_blkgetsize64,
    nix::request_code_read!(0x12, 114, std::mem::size_of::<libc::size_t>()),
    u64
);
// `#define BLKDISCARD _IO(0x12,119)`; the argument is a `uint64_t range[2]`
// (start, length) in bytes.
nix::ioctl_write_ptr_bad!(
    ioctl_blkdiscard,
    nix::request_code_none!(0x12, 119),
    [u64; 2]
);

/// `BLKSSZGET`: the logical block size of a block device.
pub(crate) fn blksszget(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut v: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one `int` through the pointer, which points at `v`,
    // alive for the call; the descriptor is borrowed, so open.
    unsafe { ioctl_blksszget(fd.as_raw_fd(), &mut v) }?;
    u32::try_from(v).map_err(|_| io::Error::other(format!("BLKSSZGET returned {v}")))
}

/// `BLKPBSZGET`: the physical block size of a block device.
pub(crate) fn blkpbszget(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut v: libc::c_uint = 0;
    // SAFETY: BLKPBSZGET writes one `unsigned int` through the pointer, which points
    // at `v`, alive for the call; the descriptor is borrowed, so open.
    unsafe { ioctl_blkpbszget(fd.as_raw_fd(), &mut v) }?;
    Ok(v)
}

/// `BLKGETSIZE64`: the size of a block device in bytes.
pub(crate) fn blkgetsize64(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut v: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one `u64` through the pointer, which points at
    // `v`, alive for the call; the descriptor is borrowed, so open.
    unsafe { ioctl_blkgetsize64(fd.as_raw_fd(), &mut v) }?;
    Ok(v)
}

/// `BLKDISCARD` of `len` bytes at `offset` (both multiples of the logical block size).
pub(crate) fn blkdiscard(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    let range = [offset, len];
    // SAFETY: BLKDISCARD reads two `u64` through the pointer, which points at
    // `range`, alive for the call; the descriptor is borrowed, so open.
    unsafe { ioctl_blkdiscard(fd.as_raw_fd(), &range) }?;
    Ok(())
}

/// What `statx(STATX_DIOALIGN)` says about O_DIRECT on a file (Linux >= 6.1).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DioAlign {
    /// Required alignment of the memory buffers (0: unknown or no O_DIRECT).
    pub mem: u32,
    /// Required alignment of file offsets and lengths (0: unknown or no O_DIRECT).
    pub offset: u32,
}

/// `statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN)`. `None` when the kernel does not
/// report the alignment.
pub(crate) fn dio_align(fd: BorrowedFd<'_>) -> Option<DioAlign> {
    // SAFETY: `statx` is plain old data (integers only); all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let empty = c"";
    // SAFETY: `empty` is a NUL-terminated string and `stx` a writable `struct statx`,
    // both alive for the call; the descriptor is borrowed, so open.
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return None;
    }
    Some(DioAlign {
        mem: stx.stx_dio_mem_align,
        offset: stx.stx_dio_offset_align,
    })
}

/// `preadv(2)` into raw `iovec`s.
///
/// # Safety
/// Every `iovec` must describe memory that is valid for writes for its whole
/// length during the call, and not accessed through Rust references meanwhile.
pub(crate) unsafe fn preadv(
    fd: BorrowedFd<'_>,
    iov: &[libc::iovec],
    offset: u64,
) -> io::Result<usize> {
    let offset = to_off(offset)?;
    let cnt = libc::c_int::try_from(iov.len()).map_err(|_| einval("too many iovecs"))?;
    // SAFETY: the caller guarantees the buffers are writable; `iov` itself is a
    // valid array of `cnt` iovecs for the call; the descriptor is borrowed, so open.
    let n = unsafe { libc::preadv(fd.as_raw_fd(), iov.as_ptr(), cnt, offset) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `pwritev(2)` from raw `iovec`s.
///
/// # Safety
/// Every `iovec` must describe memory that is valid for reads for its whole
/// length during the call.
pub(crate) unsafe fn pwritev(
    fd: BorrowedFd<'_>,
    iov: &[libc::iovec],
    offset: u64,
) -> io::Result<usize> {
    let offset = to_off(offset)?;
    let cnt = libc::c_int::try_from(iov.len()).map_err(|_| einval("too many iovecs"))?;
    // SAFETY: the caller guarantees the buffers are readable; `iov` itself is a
    // valid array of `cnt` iovecs for the call; the descriptor is borrowed, so open.
    let n = unsafe { libc::pwritev(fd.as_raw_fd(), iov.as_ptr(), cnt, offset) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`.
pub(crate) fn punch_hole(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    use nix::fcntl::FallocateFlags as F;
    nix::fcntl::fallocate(
        fd,
        F::FALLOC_FL_PUNCH_HOLE | F::FALLOC_FL_KEEP_SIZE,
        to_off(offset)?,
        to_off(len)?,
    )
    .map_err(io::Error::from)
}

fn to_off(v: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(v).map_err(|_| einval("offset does not fit off_t"))
}

fn einval(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}
