/* The blkif layout of a 32-bit x86 guest ("x86_32-abi"), as the C compiler sees
 * the real io/blkif.h when it compiles for i386. tests/c_layout.rs compiles this
 * file with `-m32 -ffreestanding -S` (no 32-bit C library is needed: nothing is
 * linked or run) and reads the rows out of the assembly: each ROW becomes a line
 * `.ascii "ROW <kind> <name> <value>\n"`, the value put there by the compiler. */
#include <stddef.h>
#include <stdint.h>

#define mb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define wmb() __atomic_thread_fence(__ATOMIC_RELEASE)
#include <xen/io/ring.h>
#include <xen/io/blkif.h>

#ifndef __i386__
#error "compile with -m32"
#endif

#define ROW(kind, name, v) \
    __asm__ volatile(".ascii \"ROW " kind " " name " %c0\\n\"" ::"i"((long)(v)))
#define T(ty) ROW("size", #ty, sizeof(ty)); ROW("align", #ty, _Alignof(ty))
#define F(ty, f) ROW("offset", #ty "." #f, offsetof(ty, f))

void rows(void) {
    T(struct blkif_request);
    F(struct blkif_request, operation); F(struct blkif_request, nr_segments);
    F(struct blkif_request, handle); F(struct blkif_request, id);
    F(struct blkif_request, sector_number); F(struct blkif_request, seg);
    T(struct blkif_request_discard);
    F(struct blkif_request_discard, operation); F(struct blkif_request_discard, flag);
    F(struct blkif_request_discard, handle); F(struct blkif_request_discard, id);
    F(struct blkif_request_discard, sector_number); F(struct blkif_request_discard, nr_sectors);
    T(struct blkif_request_indirect);
    F(struct blkif_request_indirect, operation); F(struct blkif_request_indirect, indirect_op);
    F(struct blkif_request_indirect, nr_segments); F(struct blkif_request_indirect, id);
    F(struct blkif_request_indirect, sector_number); F(struct blkif_request_indirect, handle);
    F(struct blkif_request_indirect, indirect_grefs); F(struct blkif_request_indirect, pad);
    T(struct blkif_response);
    F(struct blkif_response, id); F(struct blkif_response, operation);
    F(struct blkif_response, status);
    T(union blkif_sring_entry);
    T(struct blkif_sring);
    F(struct blkif_sring, ring);
    ROW("const", "BLKIF_RING_SIZE_ONE_PAGE", __CONST_RING_SIZE(blkif, 4096));
}
