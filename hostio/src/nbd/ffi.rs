//! The part of libnbd's C API the NBD queue uses, declared by hand against
//! Debian 12's `libnbd.h` (libnbd 1.14.2, package libnbd-dev); each declaration
//! quotes the C prototype it mirrors. Linked dynamically (`-lnbd`, LGPL-2.1+).
//! `tests/nbd_abi.rs` compiles a C program against the real header that checks
//! every prototype and constant here.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_uint, c_void};

/// `struct nbd_handle` (opaque).
#[repr(C)]
pub(crate) struct nbd_handle {
    _private: [u8; 0],
}

/// ```c
/// typedef struct {
///   int (*callback) (void *user_data, int *error);
///   void *user_data;
///   void (*free) (void *user_data);
/// } nbd_completion_callback;
/// ```
#[repr(C)]
pub(crate) struct nbd_completion_callback {
    pub callback: Option<unsafe extern "C" fn(user_data: *mut c_void, error: *mut c_int) -> c_int>,
    pub user_data: *mut c_void,
    pub free: Option<unsafe extern "C" fn(user_data: *mut c_void)>,
}

/// `#define LIBNBD_CMD_FLAG_FUA 0x01U`
pub(crate) const LIBNBD_CMD_FLAG_FUA: u32 = 0x01;
/// `#define LIBNBD_CMD_FLAG_NO_HOLE 0x02U`
pub(crate) const LIBNBD_CMD_FLAG_NO_HOLE: u32 = 0x02;
/// `#define LIBNBD_AIO_DIRECTION_READ 1`
pub(crate) const LIBNBD_AIO_DIRECTION_READ: c_uint = 1;
/// `#define LIBNBD_AIO_DIRECTION_WRITE 2`
pub(crate) const LIBNBD_AIO_DIRECTION_WRITE: c_uint = 2;
/// `#define LIBNBD_SIZE_MINIMUM 0`
pub(crate) const LIBNBD_SIZE_MINIMUM: c_int = 0;

#[link(name = "nbd")]
unsafe extern "C" {
    /// `extern struct nbd_handle *nbd_create (void);`
    pub(crate) fn nbd_create() -> *mut nbd_handle;
    /// `extern void nbd_close (struct nbd_handle *h); /* h can be NULL */`
    pub(crate) fn nbd_close(h: *mut nbd_handle);
    /// `extern const char *nbd_get_error (void);`
    pub(crate) fn nbd_get_error() -> *const c_char;
    /// `extern int nbd_get_errno (void);`
    pub(crate) fn nbd_get_errno() -> c_int;
    /// `extern int nbd_supports_uri (struct nbd_handle *h);`
    pub(crate) fn nbd_supports_uri(h: *mut nbd_handle) -> c_int;
    /// `extern int nbd_set_pread_initialize (struct nbd_handle *h, bool request);`
    pub(crate) fn nbd_set_pread_initialize(h: *mut nbd_handle, request: bool) -> c_int;
    /// `extern int nbd_aio_connect_uri (struct nbd_handle *h, const char *uri);`
    pub(crate) fn nbd_aio_connect_uri(h: *mut nbd_handle, uri: *const c_char) -> c_int;
    /// `extern int nbd_is_read_only (struct nbd_handle *h);`
    pub(crate) fn nbd_is_read_only(h: *mut nbd_handle) -> c_int;
    /// `extern int nbd_can_flush (struct nbd_handle *h);`
    pub(crate) fn nbd_can_flush(h: *mut nbd_handle) -> c_int;
    /// `extern int nbd_can_fua (struct nbd_handle *h);`
    pub(crate) fn nbd_can_fua(h: *mut nbd_handle) -> c_int;
    /// `extern int nbd_can_trim (struct nbd_handle *h);`
    pub(crate) fn nbd_can_trim(h: *mut nbd_handle) -> c_int;
    /// `extern int nbd_can_zero (struct nbd_handle *h);`
    pub(crate) fn nbd_can_zero(h: *mut nbd_handle) -> c_int;
    /// `extern int nbd_can_multi_conn (struct nbd_handle *h);`
    pub(crate) fn nbd_can_multi_conn(h: *mut nbd_handle) -> c_int;
    /// `extern int64_t nbd_get_size (struct nbd_handle *h);`
    pub(crate) fn nbd_get_size(h: *mut nbd_handle) -> i64;
    /// `extern int64_t nbd_get_block_size (struct nbd_handle *h, int size_type);`
    pub(crate) fn nbd_get_block_size(h: *mut nbd_handle, size_type: c_int) -> i64;
    /// ```c
    /// extern int64_t nbd_aio_pread (struct nbd_handle *h, void *buf, size_t count,
    ///                               uint64_t offset,
    ///                               nbd_completion_callback completion_callback,
    ///                               uint32_t flags);
    /// ```
    pub(crate) fn nbd_aio_pread(
        h: *mut nbd_handle,
        buf: *mut c_void,
        count: usize,
        offset: u64,
        completion_callback: nbd_completion_callback,
        flags: u32,
    ) -> i64;
    /// ```c
    /// extern int64_t nbd_aio_pwrite (struct nbd_handle *h, const void *buf,
    ///                                size_t count, uint64_t offset,
    ///                                nbd_completion_callback completion_callback,
    ///                                uint32_t flags);
    /// ```
    pub(crate) fn nbd_aio_pwrite(
        h: *mut nbd_handle,
        buf: *const c_void,
        count: usize,
        offset: u64,
        completion_callback: nbd_completion_callback,
        flags: u32,
    ) -> i64;
    /// ```c
    /// extern int64_t nbd_aio_flush (struct nbd_handle *h,
    ///                               nbd_completion_callback completion_callback,
    ///                               uint32_t flags);
    /// ```
    pub(crate) fn nbd_aio_flush(
        h: *mut nbd_handle,
        completion_callback: nbd_completion_callback,
        flags: u32,
    ) -> i64;
    /// ```c
    /// extern int64_t nbd_aio_trim (struct nbd_handle *h, uint64_t count,
    ///                              uint64_t offset,
    ///                              nbd_completion_callback completion_callback,
    ///                              uint32_t flags);
    /// ```
    pub(crate) fn nbd_aio_trim(
        h: *mut nbd_handle,
        count: u64,
        offset: u64,
        completion_callback: nbd_completion_callback,
        flags: u32,
    ) -> i64;
    /// ```c
    /// extern int64_t nbd_aio_zero (struct nbd_handle *h, uint64_t count,
    ///                              uint64_t offset,
    ///                              nbd_completion_callback completion_callback,
    ///                              uint32_t flags);
    /// ```
    pub(crate) fn nbd_aio_zero(
        h: *mut nbd_handle,
        count: u64,
        offset: u64,
        completion_callback: nbd_completion_callback,
        flags: u32,
    ) -> i64;
    /// `extern int nbd_aio_get_fd (struct nbd_handle *h);`
    pub(crate) fn nbd_aio_get_fd(h: *mut nbd_handle) -> c_int;
    /// `extern unsigned nbd_aio_get_direction (struct nbd_handle *h);`
    pub(crate) fn nbd_aio_get_direction(h: *mut nbd_handle) -> c_uint;
    /// `extern int nbd_aio_notify_read (struct nbd_handle *h);`
    pub(crate) fn nbd_aio_notify_read(h: *mut nbd_handle) -> c_int;
    /// `extern int nbd_aio_notify_write (struct nbd_handle *h);`
    pub(crate) fn nbd_aio_notify_write(h: *mut nbd_handle) -> c_int;
    /// `extern int nbd_aio_is_connecting (struct nbd_handle *h);`
    pub(crate) fn nbd_aio_is_connecting(h: *mut nbd_handle) -> c_int;
    /// `extern int nbd_aio_is_ready (struct nbd_handle *h);`
    pub(crate) fn nbd_aio_is_ready(h: *mut nbd_handle) -> c_int;
    /// `extern int nbd_aio_is_processing (struct nbd_handle *h);`
    pub(crate) fn nbd_aio_is_processing(h: *mut nbd_handle) -> c_int;
    /// `extern int nbd_aio_is_dead (struct nbd_handle *h);`
    pub(crate) fn nbd_aio_is_dead(h: *mut nbd_handle) -> c_int;
    /// `extern int nbd_aio_is_closed (struct nbd_handle *h);`
    pub(crate) fn nbd_aio_is_closed(h: *mut nbd_handle) -> c_int;
}
