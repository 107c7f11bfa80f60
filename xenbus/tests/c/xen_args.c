/* Fills the /dev/xen ioctl arguments that xenio builds byte by byte
 * (xenbus/src/xen/abi.rs) the way a C program does, through the kernel's own
 * headers (linux-libc-dev's xen/gntdev.h and xen/gntalloc.h, with Xen's
 * xen/grant_table.h for GNTCOPY_* and GNTST_*), and prints each as
 * "<name> <hex bytes>". tests/xen_abi.rs builds the same values in Rust and
 * compares the bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <xen/xen.h>
#include <xen/grant_table.h>
#include <xen/gntdev.h>
#include <xen/gntalloc.h>

static void dump(const char *name, const void *p, size_t n) {
    const unsigned char *b = p;
    printf("%s ", name);
    for (size_t i = 0; i < n; i++)
        printf("%02x", b[i]);
    printf("\n");
}

/* Room for any argument below, 8-byte aligned like the structs. */
static uint64_t buf[64];

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

int main(void) {
    /* IOCTL_GNTDEV_MAP_GRANT_REF, count = 3 (refs[] extends past the struct). */
    {
        memset(buf, 0, sizeof(buf));
        struct ioctl_gntdev_map_grant_ref *m = (void *)buf;
        struct ioctl_gntdev_grant_ref *refs =
            (void *)((char *)buf + offsetof(struct ioctl_gntdev_map_grant_ref, refs));
        const uint32_t r[3] = {0x1234, 0x5678, 0x9abc};
        m->count = 3;
        for (int i = 0; i < 3; i++) {
            refs[i].domid = 7;
            refs[i].ref = r[i];
        }
        size_t n = max_size(sizeof(*m), offsetof(struct ioctl_gntdev_map_grant_ref, refs) +
                                            3 * sizeof(struct ioctl_gntdev_grant_ref));
        dump("map_grant_ref", buf, n);
        /* As the kernel returns it: index filled in. */
        m->index = 0x3000;
        dump("map_grant_ref_out", buf, n);
    }

    /* IOCTL_GNTALLOC_ALLOC_GREF, count = 3, writable and read-only. */
    {
        size_t n = max_size(sizeof(struct ioctl_gntalloc_alloc_gref),
                            offsetof(struct ioctl_gntalloc_alloc_gref, gref_ids) +
                                3 * sizeof(uint32_t));
        struct ioctl_gntalloc_alloc_gref *a = (void *)buf;
        uint32_t *ids = (void *)((char *)buf + offsetof(struct ioctl_gntalloc_alloc_gref, gref_ids));

        memset(buf, 0, sizeof(buf));
        a->domid = 5;
        a->flags = GNTALLOC_FLAG_WRITABLE;
        a->count = 3;
        dump("alloc_gref_rw", buf, n);
        /* As the kernel returns it: index and the grant references. */
        a->index = 0x123456789000ULL;
        ids[0] = 11;
        ids[1] = 22;
        ids[2] = 33;
        dump("alloc_gref_out", buf, n);

        memset(buf, 0, sizeof(buf));
        a->domid = 0x7ff0 - 1;
        a->flags = 0;
        a->count = 3;
        dump("alloc_gref_ro", buf, n);
    }

    /* IOCTL_GNTDEV_GRANT_COPY: one segment each way, then the header. */
    {
        struct gntdev_grant_copy_segment seg[2];
        memset(seg, 0, sizeof(seg));
        seg[0].source.foreign.ref = 0x1234;
        seg[0].source.foreign.offset = 100;
        seg[0].source.foreign.domid = 7;
        seg[0].dest.virt = (void *)(uintptr_t)0x7f0011223344ULL;
        seg[0].len = 512;
        seg[0].flags = GNTCOPY_source_gref;
        seg[1].source.virt = (void *)(uintptr_t)0x7f0055667788ULL;
        seg[1].dest.foreign.ref = 0x4321;
        seg[1].dest.foreign.offset = 3584;
        seg[1].dest.foreign.domid = 9;
        seg[1].len = 512;
        seg[1].flags = GNTCOPY_dest_gref;
        dump("grant_copy_segments", seg, sizeof(seg));
        /* As the kernel returns them: per-segment status. */
        seg[0].status = GNTST_permission_denied;
        seg[1].status = GNTST_bad_gntref;
        dump("grant_copy_segments_out", seg, sizeof(seg));

        struct ioctl_gntdev_grant_copy c;
        memset(&c, 0, sizeof(c));
        c.count = 2;
        c.segments = (void *)(uintptr_t)0x7f00aabbcc00ULL;
        dump("grant_copy", &c, sizeof(c));
    }

    /* SET_UNMAP_NOTIFY: clear byte 17 of the second page and send on port 42;
     * and send only. */
    {
        struct ioctl_gntdev_unmap_notify d;
        memset(&d, 0, sizeof(d));
        d.index = 0x5000 + 4096 + 17;
        d.action = UNMAP_NOTIFY_CLEAR_BYTE | UNMAP_NOTIFY_SEND_EVENT;
        d.event_channel_port = 42;
        dump("gntdev_unmap_notify", &d, sizeof(d));
        memset(&d, 0, sizeof(d));
        d.index = 0x5000;
        d.action = UNMAP_NOTIFY_SEND_EVENT;
        d.event_channel_port = 42;
        dump("gntdev_unmap_notify_event", &d, sizeof(d));

        struct ioctl_gntalloc_unmap_notify a;
        memset(&a, 0, sizeof(a));
        a.index = 0x5000 + 4096 + 17;
        a.action = UNMAP_NOTIFY_CLEAR_BYTE | UNMAP_NOTIFY_SEND_EVENT;
        a.event_channel_port = 42;
        dump("gntalloc_unmap_notify", &a, sizeof(a));
        memset(&a, 0, sizeof(a));
        a.index = 0x5000 + 3;
        a.action = UNMAP_NOTIFY_CLEAR_BYTE;
        dump("gntalloc_unmap_notify_byte", &a, sizeof(a));
    }
    return 0;
}
