//! The libnbd prototypes and constants that `hostio/src/nbd/ffi.rs` declares by
//! hand, checked against the real `libnbd.h` (Debian's libnbd-dev): a C file
//! assigns each function to a pointer of the declared type and asserts each
//! constant and the callback structure's layout, compiled with `-Werror`, so
//! a prototype that differs from the header fails to compile.
#![cfg(feature = "nbd")]

mod storage_common;

use std::process::Command;

const CHECK: &str = r#"
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <libnbd.h>

struct nbd_handle *(*p_create)(void) = nbd_create;
void (*p_close)(struct nbd_handle *) = nbd_close;
const char *(*p_get_error)(void) = nbd_get_error;
int (*p_get_errno)(void) = nbd_get_errno;
int (*p_supports_uri)(struct nbd_handle *) = nbd_supports_uri;
int (*p_set_pread_initialize)(struct nbd_handle *, bool) = nbd_set_pread_initialize;
int (*p_aio_connect_uri)(struct nbd_handle *, const char *) = nbd_aio_connect_uri;
int (*p_is_read_only)(struct nbd_handle *) = nbd_is_read_only;
int (*p_can_flush)(struct nbd_handle *) = nbd_can_flush;
int (*p_can_fua)(struct nbd_handle *) = nbd_can_fua;
int (*p_can_trim)(struct nbd_handle *) = nbd_can_trim;
int (*p_can_zero)(struct nbd_handle *) = nbd_can_zero;
int (*p_can_multi_conn)(struct nbd_handle *) = nbd_can_multi_conn;
int64_t (*p_get_size)(struct nbd_handle *) = nbd_get_size;
int64_t (*p_get_block_size)(struct nbd_handle *, int) = nbd_get_block_size;
int64_t (*p_aio_pread)(struct nbd_handle *, void *, size_t, uint64_t, nbd_completion_callback, uint32_t) = nbd_aio_pread;
int64_t (*p_aio_pwrite)(struct nbd_handle *, const void *, size_t, uint64_t, nbd_completion_callback, uint32_t) = nbd_aio_pwrite;
int64_t (*p_aio_flush)(struct nbd_handle *, nbd_completion_callback, uint32_t) = nbd_aio_flush;
int64_t (*p_aio_trim)(struct nbd_handle *, uint64_t, uint64_t, nbd_completion_callback, uint32_t) = nbd_aio_trim;
int64_t (*p_aio_zero)(struct nbd_handle *, uint64_t, uint64_t, nbd_completion_callback, uint32_t) = nbd_aio_zero;
int (*p_aio_get_fd)(struct nbd_handle *) = nbd_aio_get_fd;
unsigned (*p_aio_get_direction)(struct nbd_handle *) = nbd_aio_get_direction;
int (*p_aio_notify_read)(struct nbd_handle *) = nbd_aio_notify_read;
int (*p_aio_notify_write)(struct nbd_handle *) = nbd_aio_notify_write;
int (*p_aio_is_connecting)(struct nbd_handle *) = nbd_aio_is_connecting;
int (*p_aio_is_ready)(struct nbd_handle *) = nbd_aio_is_ready;
int (*p_aio_is_processing)(struct nbd_handle *) = nbd_aio_is_processing;
int (*p_aio_is_dead)(struct nbd_handle *) = nbd_aio_is_dead;
int (*p_aio_is_closed)(struct nbd_handle *) = nbd_aio_is_closed;

_Static_assert(LIBNBD_CMD_FLAG_FUA == 0x01, "FUA");
_Static_assert(LIBNBD_CMD_FLAG_NO_HOLE == 0x02, "NO_HOLE");
_Static_assert(LIBNBD_AIO_DIRECTION_READ == 1, "READ");
_Static_assert(LIBNBD_AIO_DIRECTION_WRITE == 2, "WRITE");
_Static_assert(LIBNBD_SIZE_MINIMUM == 0, "SIZE_MINIMUM");
_Static_assert(sizeof(nbd_completion_callback) == 3 * sizeof(void *), "callback size");
_Static_assert(offsetof(nbd_completion_callback, callback) == 0, "callback");
_Static_assert(offsetof(nbd_completion_callback, user_data) == sizeof(void *), "user_data");
_Static_assert(offsetof(nbd_completion_callback, free) == 2 * sizeof(void *), "free");
int (*p_cb)(void *, int *);
void (*p_free)(void *);
void check_cb(nbd_completion_callback c) { p_cb = c.callback; p_free = c.free; }
"#;

#[test]
fn ffi_declarations_match_libnbd_h() {
    if !std::path::Path::new("/usr/include/libnbd.h").exists() {
        eprintln!("SKIPPED: /usr/include/libnbd.h not found (install libnbd-dev; .ci/run does)");
        return;
    }
    if storage_common::missing("gcc", "gcc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("check.c");
    std::fs::write(&c, CHECK).unwrap();
    // Every declaration in ffi.rs has its line here: keep the two in step.
    let ffi =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/nbd/ffi.rs")).unwrap();
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
        .args(["-std=c11", "-Wall", "-Werror", "-c", "-o"])
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
