/* The C counterpart of ring_cost.rs (see there): the loops of xenio-bench
 * ring's C pair (bench/src/ring/c/ringpair.c), both ends on one thread.
 *   cc -O2 -o /tmp/ring_cost_c bench/examples/ring_cost.c && taskset -c 1 /tmp/ring_cost_c
 * With -DWORD_COPIES (and -fno-strict-aliasing) it keeps the Rust ring's copy
 * discipline instead of ring.h's: each request is built, then copied into its
 * slot as 32-bit words, and copied out as 32-bit words (volatile, as ring.h's
 * copy is), where ring.h builds requests in place and copies whole structs. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>
#include <sys/mman.h>
#define __XEN_INTERFACE_VERSION__ __XEN_LATEST_INTERFACE_VERSION__
#define xen_mb() __sync_synchronize()
#define xen_rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define xen_wmb() __atomic_thread_fence(__ATOMIC_RELEASE)
#include <xen/io/blkif.h>
#define BENCH_VDEV 0x51
#define SECTORS_PER_PAGE 8
static uint8_t operation(uint64_t seq) { return (seq & 1) ? BLKIF_OP_WRITE : BLKIF_OP_READ; }
static uint8_t nr_segments(uint64_t seq) { return (uint8_t)(1 + seq % BLKIF_MAX_SEGMENTS_PER_REQUEST); }
static uint64_t sector_number(uint64_t seq) { return seq * (uint64_t)(BLKIF_MAX_SEGMENTS_PER_REQUEST * SECTORS_PER_PAGE); }
static uint32_t gref(uint64_t seq, unsigned i) { return (uint32_t)seq * 16u + i; }
static void make_request(uint64_t seq, blkif_request_t *req) {
    uint8_t nr = nr_segments(seq);
    memset(req, 0, sizeof(*req));
    req->operation = operation(seq); req->nr_segments = nr; req->handle = BENCH_VDEV;
    req->id = seq; req->sector_number = sector_number(seq);
    for (unsigned i = 0; i < nr; i++) { req->seg[i].gref = gref(seq, i); req->seg[i].first_sect = 0; req->seg[i].last_sect = SECTORS_PER_PAGE - 1; }
}
static int check_request(const blkif_request_t *req, uint64_t seq) {
    uint8_t nr = nr_segments(seq);
    if (req->id != seq || req->operation != operation(seq) || req->handle != BENCH_VDEV ||
        req->sector_number != sector_number(seq) || req->nr_segments != nr) return 0;
    for (unsigned i = 0; i < BLKIF_MAX_SEGMENTS_PER_REQUEST; i++) {
        const struct blkif_request_segment *s = &req->seg[i];
        if (i < nr) { if (s->gref != gref(seq, i) || s->first_sect != 0 || s->last_sect != SECTORS_PER_PAGE - 1) return 0; }
        else if (s->gref || s->first_sect || s->last_sect) return 0;
    }
    return 1;
}
#ifdef WORD_COPIES
#define LABEL "C, 32-bit word copies"
static void copy_out(void *dst, const void *src, size_t n) {
    volatile uint32_t *d = dst; const uint32_t *s = src;
    for (size_t i = 0; i < n / 4; i++) d[i] = s[i];
}
static void copy_in(void *dst, const void *src, size_t n) {
    uint32_t *d = dst; const volatile uint32_t *s = src;
    for (size_t i = 0; i < n / 4; i++) d[i] = s[i];
}
#else
#define LABEL "C io/ring.h"
#endif
static uint64_t now_ns(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return (uint64_t)t.tv_sec * 1000000000u + t.tv_nsec; }
int main(void) {
    void *mem = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    blkif_sring_t *sring = mem; SHARED_RING_INIT(sring);
    blkif_front_ring_t front; FRONT_RING_INIT(&front, sring, 4096);
    blkif_back_ring_t back; BACK_RING_INIT(&back, sring, 4096);
    uint64_t issued = 0, served = 0, completed = 0, errors = 0; double best = 1e9; uint64_t ph[3]={0,0,0};
    uint64_t size = RING_SIZE(&front);
    for (int r = 0; r < 15; r++) {
        uint64_t t = now_ns(), n0 = completed;
        for (int k = 0; k < 20000; k++) {
            uint64_t t0=now_ns();
            for (uint64_t i = 0; i < size; i++) {
#ifdef WORD_COPIES
                blkif_request_t tmp; make_request(issued + i, &tmp);
                copy_out(RING_GET_REQUEST(&front, front.req_prod_pvt), &tmp, sizeof tmp);
#else
                make_request(issued + i, RING_GET_REQUEST(&front, front.req_prod_pvt));
#endif
                front.req_prod_pvt++;
            }
            issued += size; RING_PUSH_REQUESTS(&front); uint64_t t1=now_ns();
            RING_IDX rp = back.sring->req_prod; xen_rmb();
            while (back.req_cons != rp) {
                blkif_request_t req;
#ifdef WORD_COPIES
                copy_in(&req, RING_GET_REQUEST(&back, back.req_cons), sizeof req);
#else
                RING_COPY_REQUEST(&back, back.req_cons, &req);
#endif
                back.req_cons++;
                if (!check_request(&req, served)) errors++;
                blkif_response_t *rsp = RING_GET_RESPONSE(&back, back.rsp_prod_pvt);
                rsp->id = req.id; rsp->operation = req.operation; rsp->status = BLKIF_RSP_OKAY;
                back.rsp_prod_pvt++; served++;
            }
            RING_PUSH_RESPONSES(&back); uint64_t t2=now_ns();
            rp = front.sring->rsp_prod; xen_rmb();
            while (front.rsp_cons != rp) {
                blkif_response_t rsp = *RING_GET_RESPONSE(&front, front.rsp_cons); front.rsp_cons++;
                if (rsp.id != completed || rsp.operation != operation(completed) || rsp.status != BLKIF_RSP_OKAY) errors++;
                completed++;
            }
            uint64_t t3=now_ns(); ph[0]+=t1-t0; ph[1]+=t2-t1; ph[2]+=t3-t2;
        }
        double ns = (double)(now_ns() - t) / (double)(completed - n0);
        if (ns < best) best = ns;
    }
    printf("%s, one thread: %.1f ns/request (best of 15), errors %lu; mean per request: issue %.1f, serve %.1f, harvest %.1f ns\n", LABEL, best, errors, ph[0]/(double)completed, ph[1]/(double)completed, ph[2]/(double)completed);
    return 0;
}
