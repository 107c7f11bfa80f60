//! The part of librados' and librbd's C API the RBD queue uses, declared by
//! hand against Debian 12's headers (Ceph 16.2.15 Pacific: `rados/librados.h`,
//! `rbd/librbd.h`, librbd 1.16.0, packages librados-dev and librbd-dev); each
//! declaration quotes the C prototype it mirrors. Linked dynamically (`-lrbd
//! -lrados`). `tests/rbd_abi.rs` compiles a C program against the real headers
//! that checks every prototype here.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_void};

/// `typedef void *rados_t;`
pub(crate) type rados_t = *mut c_void;
/// `typedef void *rados_ioctx_t;`
pub(crate) type rados_ioctx_t = *mut c_void;
/// `typedef void *rbd_image_t;`
pub(crate) type rbd_image_t = *mut c_void;
/// `typedef void *rbd_completion_t;`
pub(crate) type rbd_completion_t = *mut c_void;
/// `typedef void (*rbd_callback_t)(rbd_completion_t cb, void *arg);`
pub(crate) type rbd_callback_t =
    Option<unsafe extern "C" fn(cb: rbd_completion_t, arg: *mut c_void)>;

#[link(name = "rados")]
unsafe extern "C" {
    /// `CEPH_RADOS_API int rados_create(rados_t *cluster, const char * const id);`
    pub(crate) fn rados_create(cluster: *mut rados_t, id: *const c_char) -> c_int;
    /// `CEPH_RADOS_API int rados_conf_read_file(rados_t cluster, const char *path);`
    pub(crate) fn rados_conf_read_file(cluster: rados_t, path: *const c_char) -> c_int;
    /// `CEPH_RADOS_API int rados_conf_set(rados_t cluster, const char *option, const char *value);`
    pub(crate) fn rados_conf_set(
        cluster: rados_t,
        option: *const c_char,
        value: *const c_char,
    ) -> c_int;
    /// `CEPH_RADOS_API int rados_connect(rados_t cluster);`
    pub(crate) fn rados_connect(cluster: rados_t) -> c_int;
    /// `CEPH_RADOS_API void rados_shutdown(rados_t cluster);`
    pub(crate) fn rados_shutdown(cluster: rados_t);
    /// `CEPH_RADOS_API int rados_ioctx_create(rados_t cluster, const char *pool_name, rados_ioctx_t *ioctx);`
    pub(crate) fn rados_ioctx_create(
        cluster: rados_t,
        pool_name: *const c_char,
        ioctx: *mut rados_ioctx_t,
    ) -> c_int;
    /// `CEPH_RADOS_API void rados_ioctx_destroy(rados_ioctx_t io);`
    pub(crate) fn rados_ioctx_destroy(io: rados_ioctx_t);
    /// `CEPH_RADOS_API void rados_ioctx_set_namespace(rados_ioctx_t io, const char *nspace);`
    pub(crate) fn rados_ioctx_set_namespace(io: rados_ioctx_t, nspace: *const c_char);
}

#[link(name = "rbd")]
unsafe extern "C" {
    /// `CEPH_RBD_API int rbd_open(rados_ioctx_t io, const char *name, rbd_image_t *image, const char *snap_name);`
    pub(crate) fn rbd_open(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap_name: *const c_char,
    ) -> c_int;
    /// `CEPH_RBD_API int rbd_open_read_only(rados_ioctx_t io, const char *name, rbd_image_t *image, const char *snap_name);`
    pub(crate) fn rbd_open_read_only(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap_name: *const c_char,
    ) -> c_int;
    /// `CEPH_RBD_API int rbd_close(rbd_image_t image);`
    pub(crate) fn rbd_close(image: rbd_image_t) -> c_int;
    /// `CEPH_RBD_API int rbd_get_size(rbd_image_t image, uint64_t *size);`
    pub(crate) fn rbd_get_size(image: rbd_image_t, size: *mut u64) -> c_int;
    /// `CEPH_RBD_API int rbd_aio_create_completion(void *cb_arg, rbd_callback_t complete_cb, rbd_completion_t *c);`
    pub(crate) fn rbd_aio_create_completion(
        cb_arg: *mut c_void,
        complete_cb: rbd_callback_t,
        c: *mut rbd_completion_t,
    ) -> c_int;
    /// `CEPH_RBD_API ssize_t rbd_aio_get_return_value(rbd_completion_t c);`
    pub(crate) fn rbd_aio_get_return_value(c: rbd_completion_t) -> isize;
    /// `CEPH_RBD_API void rbd_aio_release(rbd_completion_t c);`
    pub(crate) fn rbd_aio_release(c: rbd_completion_t);
    /// `CEPH_RBD_API int rbd_aio_readv(rbd_image_t image, const struct iovec *iov, int iovcnt, uint64_t off, rbd_completion_t c);`
    pub(crate) fn rbd_aio_readv(
        image: rbd_image_t,
        iov: *const libc::iovec,
        iovcnt: c_int,
        off: u64,
        c: rbd_completion_t,
    ) -> c_int;
    /// `CEPH_RBD_API int rbd_aio_writev(rbd_image_t image, const struct iovec *iov, int iovcnt, uint64_t off, rbd_completion_t c);`
    pub(crate) fn rbd_aio_writev(
        image: rbd_image_t,
        iov: *const libc::iovec,
        iovcnt: c_int,
        off: u64,
        c: rbd_completion_t,
    ) -> c_int;
    /// `CEPH_RBD_API int rbd_aio_flush(rbd_image_t image, rbd_completion_t c);`
    pub(crate) fn rbd_aio_flush(image: rbd_image_t, c: rbd_completion_t) -> c_int;
    /// `CEPH_RBD_API int rbd_aio_discard(rbd_image_t image, uint64_t off, uint64_t len, rbd_completion_t c);`
    pub(crate) fn rbd_aio_discard(
        image: rbd_image_t,
        off: u64,
        len: u64,
        c: rbd_completion_t,
    ) -> c_int;
    /// `CEPH_RBD_API int rbd_aio_write_zeroes(rbd_image_t image, uint64_t off, size_t len, rbd_completion_t c, int zero_flags, int op_flags);`
    pub(crate) fn rbd_aio_write_zeroes(
        image: rbd_image_t,
        off: u64,
        len: usize,
        c: rbd_completion_t,
        zero_flags: c_int,
        op_flags: c_int,
    ) -> c_int;
}
