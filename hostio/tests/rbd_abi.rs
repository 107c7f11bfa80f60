//! The librados and librbd prototypes that `hostio/src/rbd/ffi.rs` declares by
//! hand, checked against the real headers (Debian's librados-dev and
//! librbd-dev): a C file assigns each function to a pointer of the declared
//! type, compiled with `-Werror`. Needs the feature `rbd`.
#![cfg(feature = "rbd")]

mod storage_common;

use std::process::Command;

const CHECK: &str = r#"
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

int (*p_rados_create)(rados_t *, const char *const) = rados_create;
int (*p_rados_conf_read_file)(rados_t, const char *) = rados_conf_read_file;
int (*p_rados_conf_set)(rados_t, const char *, const char *) = rados_conf_set;
int (*p_rados_connect)(rados_t) = rados_connect;
void (*p_rados_shutdown)(rados_t) = rados_shutdown;
int (*p_rados_ioctx_create)(rados_t, const char *, rados_ioctx_t *) = rados_ioctx_create;
void (*p_rados_ioctx_destroy)(rados_ioctx_t) = rados_ioctx_destroy;
void (*p_rados_ioctx_set_namespace)(rados_ioctx_t, const char *) = rados_ioctx_set_namespace;
int (*p_rbd_open)(rados_ioctx_t, const char *, rbd_image_t *, const char *) = rbd_open;
int (*p_rbd_open_read_only)(rados_ioctx_t, const char *, rbd_image_t *, const char *) = rbd_open_read_only;
int (*p_rbd_close)(rbd_image_t) = rbd_close;
int (*p_rbd_get_size)(rbd_image_t, uint64_t *) = rbd_get_size;
int (*p_rbd_aio_create_completion)(void *, rbd_callback_t, rbd_completion_t *) = rbd_aio_create_completion;
ssize_t (*p_rbd_aio_get_return_value)(rbd_completion_t) = rbd_aio_get_return_value;
void (*p_rbd_aio_release)(rbd_completion_t) = rbd_aio_release;
int (*p_rbd_aio_readv)(rbd_image_t, const struct iovec *, int, uint64_t, rbd_completion_t) = rbd_aio_readv;
int (*p_rbd_aio_writev)(rbd_image_t, const struct iovec *, int, uint64_t, rbd_completion_t) = rbd_aio_writev;
int (*p_rbd_aio_flush)(rbd_image_t, rbd_completion_t) = rbd_aio_flush;
int (*p_rbd_aio_discard)(rbd_image_t, uint64_t, uint64_t, rbd_completion_t) = rbd_aio_discard;
int (*p_rbd_aio_write_zeroes)(rbd_image_t, uint64_t, size_t, rbd_completion_t, int, int) = rbd_aio_write_zeroes;
void (*p_cb)(rbd_completion_t, void *);
void check_cb(rbd_callback_t c) { p_cb = c; }
_Static_assert(sizeof(rados_t) == sizeof(void *), "rados_t");
_Static_assert(sizeof(rbd_completion_t) == sizeof(void *), "rbd_completion_t");
"#;

#[test]
fn ffi_declarations_match_librbd_h() {
    if !std::path::Path::new("/usr/include/rbd/librbd.h").exists() {
        eprintln!(
            "SKIPPED: /usr/include/rbd/librbd.h not found (install librbd-dev; .ci/run does)"
        );
        return;
    }
    if storage_common::missing("gcc", "gcc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("check.c");
    std::fs::write(&c, CHECK).unwrap();
    let ffi =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/rbd/ffi.rs")).unwrap();
    for line in ffi.lines() {
        let Some(rest) = line.trim().strip_prefix("pub(crate) fn ") else {
            continue;
        };
        let name = &rest[..rest.find('(').unwrap()];
        assert!(
            CHECK.contains(&format!("= {name};")),
            "{name} is declared in ffi.rs but not checked here"
        );
    }
    let out = Command::new("gcc")
        .args(["-std=gnu11", "-Wall", "-Werror", "-c", "-o"])
        .arg(dir.path().join("check.o"))
        .arg(&c)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
