/* The C ring.h pair of `xenio-bench ring`: the same two workloads as the xenio
 * ring's polling configurations, written only with Xen's own macros
 * (xen/io/ring.h through xen/io/blkif.h), so that the xenio ring can be set
 * against the C code of the same layout in the same run.
 *
 *   ringpair WORKLOAD ORDER WARMUP_MS DURATION_MS CORE_A CORE_B
 *
 * WORKLOAD is `latency` (one request outstanding) or `throughput` (the
 * frontend refills every free slot and publishes once per batch; the backend
 * takes every request available, answers each and publishes once). The
 * frontend runs on CORE_A, a forked backend on CORE_B, over a shared anonymous
 * mapping; both spin (`pause`), neither notifies. Request contents and checks
 * are bench/src/ring/content.rs's (keep the two in step): id = sequence number,
 * operation, handle, sector and segments derived from it; the backend copies
 * every request once (RING_COPY_REQUEST) and checks every field, the frontend
 * checks every response's id, operation and status. Prints one line:
 *
 *   ops OPS ns NS served SERVED errors ERRORS
 *
 * (ops and ns of the timed window; requests the backend served in all; entries
 * found wrong by either side) and exits 0, or prints a reason and exits 1. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The barrier mapping of xenio's ring (see its lib.rs): xen_mb a full fence,
 * xen_rmb/xen_wmb acquire/release fences (compiler barriers on x86). */
#define __XEN_INTERFACE_VERSION__ __XEN_LATEST_INTERFACE_VERSION__
#define xen_mb() __sync_synchronize()
#define xen_rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define xen_wmb() __atomic_thread_fence(__ATOMIC_RELEASE)
#include <xen/io/blkif.h>

#define BENCH_VDEV 0x51
#define SECTORS_PER_PAGE 8

/* The control block, after the ring in the same mapping. */
struct control {
    volatile uint32_t stop;
    volatile uint32_t errors;
    volatile uint64_t served;
};

static void die(const char *what) {
    fprintf(stderr, "ringpair: %s\n", what);
    exit(1);
}

static void pin(int core) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(core, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0)
        die("sched_setaffinity");
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static uint8_t operation(uint64_t seq) { return (seq & 1) ? BLKIF_OP_WRITE : BLKIF_OP_READ; }
static uint8_t nr_segments(uint64_t seq) {
    return (uint8_t)(1 + seq % BLKIF_MAX_SEGMENTS_PER_REQUEST);
}
static uint64_t sector_number(uint64_t seq) {
    return seq * (uint64_t)(BLKIF_MAX_SEGMENTS_PER_REQUEST * SECTORS_PER_PAGE);
}
static uint32_t gref(uint64_t seq, unsigned i) { return (uint32_t)seq * 16u + i; }

/* Request `seq`, written into its slot. */
static void make_request(uint64_t seq, blkif_request_t *req) {
    uint8_t nr = nr_segments(seq);
    memset(req, 0, sizeof(*req));
    req->operation = operation(seq);
    req->nr_segments = nr;
    req->handle = BENCH_VDEV;
    req->id = seq;
    req->sector_number = sector_number(seq);
    for (unsigned i = 0; i < nr; i++) {
        req->seg[i].gref = gref(seq, i);
        req->seg[i].first_sect = 0;
        req->seg[i].last_sect = SECTORS_PER_PAGE - 1;
    }
}

static int check_request(const blkif_request_t *req, uint64_t seq) {
    uint8_t nr = nr_segments(seq);
    if (req->id != seq || req->operation != operation(seq) || req->handle != BENCH_VDEV ||
        req->sector_number != sector_number(seq) || req->nr_segments != nr)
        return 0;
    for (unsigned i = 0; i < BLKIF_MAX_SEGMENTS_PER_REQUEST; i++) {
        const struct blkif_request_segment *s = &req->seg[i];
        if (i < nr) {
            if (s->gref != gref(seq, i) || s->first_sect != 0 ||
                s->last_sect != SECTORS_PER_PAGE - 1)
                return 0;
        } else if (s->gref || s->first_sect || s->last_sect) {
            return 0;
        }
    }
    return 1;
}

static void backend(blkif_sring_t *sring, size_t bytes, struct control *c) {
    blkif_back_ring_t back;
    BACK_RING_INIT(&back, sring, bytes);
    uint64_t seq = 0;
    uint32_t errors = 0;
    for (;;) {
        RING_IDX rp = back.sring->req_prod;
        xen_rmb();
        if (back.req_cons == rp) {
            if (c->stop) {
                break;
            }
            __builtin_ia32_pause();
            continue;
        }
        while (back.req_cons != rp) {
            blkif_request_t req;
            RING_COPY_REQUEST(&back, back.req_cons, &req);
            back.req_cons++;
            if (!check_request(&req, seq))
                errors++;
            blkif_response_t *rsp = RING_GET_RESPONSE(&back, back.rsp_prod_pvt);
            rsp->id = req.id;
            rsp->operation = req.operation;
            rsp->status = BLKIF_RSP_OKAY;
            back.rsp_prod_pvt++;
            seq++;
        }
        RING_PUSH_RESPONSES(&back);
    }
    c->served = seq;
    c->errors += errors;
}

int main(int argc, char **argv) {
    if (argc != 7)
        die("usage: ringpair latency|throughput ORDER WARMUP_MS DURATION_MS CORE_A CORE_B");
    int throughput = strcmp(argv[1], "throughput") == 0;
    if (!throughput && strcmp(argv[1], "latency") != 0)
        die("the workload is latency or throughput");
    unsigned order = (unsigned)atoi(argv[2]);
    uint64_t warmup = strtoull(argv[3], NULL, 10) * 1000000u;
    uint64_t duration = strtoull(argv[4], NULL, 10) * 1000000u;
    int core_a = atoi(argv[5]), core_b = atoi(argv[6]);
    size_t bytes = (size_t)4096 << order;
    void *mem = mmap(NULL, bytes + 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        die("mmap");
    blkif_sring_t *sring = mem;
    struct control *c = (struct control *)((char *)mem + bytes);
    SHARED_RING_INIT(sring);
    blkif_front_ring_t front;
    FRONT_RING_INIT(&front, sring, bytes);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        pin(core_b);
        backend(sring, bytes, c);
        _exit(0);
    }
    pin(core_a);
    uint64_t issued = 0, completed = 0, errors = 0;
    uint64_t size = RING_SIZE(&front);
    uint64_t cap = throughput ? size : 1;
    uint64_t start = now_ns(), t0 = 0, c0 = 0, limit = UINT64_MAX;
    int in_window = 0;
    for (;;) {
        uint64_t room = cap - (issued - completed);
        if (limit != UINT64_MAX && room > limit - issued)
            room = limit - issued;
        if (room > 0) {
            for (uint64_t i = 0; i < room; i++) {
                make_request(issued + i, RING_GET_REQUEST(&front, front.req_prod_pvt));
                front.req_prod_pvt++;
            }
            issued += room;
            RING_PUSH_REQUESTS(&front);
        }
        RING_IDX rp = front.sring->rsp_prod;
        xen_rmb();
        if (front.rsp_cons == rp) {
            if (issued == completed && issued >= limit)
                break;
            __builtin_ia32_pause();
            continue;
        }
        while (front.rsp_cons != rp) {
            blkif_response_t rsp = *RING_GET_RESPONSE(&front, front.rsp_cons);
            front.rsp_cons++;
            if (rsp.id != completed || rsp.operation != operation(completed) ||
                rsp.status != BLKIF_RSP_OKAY)
                errors++;
            completed++;
        }
        uint64_t t = now_ns();
        if (!in_window && t - start >= warmup) {
            in_window = 1;
            t0 = t;
            c0 = completed;
        } else if (in_window && limit == UINT64_MAX && t - t0 >= duration) {
            limit = issued;
        }
    }
    uint64_t ns = now_ns() - t0;
    c->stop = 1;
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("the backend failed");
    if (c->served != issued)
        die("the backend served a different number of requests");
    printf("ops %" PRIu64 " ns %" PRIu64 " served %" PRIu64 " errors %" PRIu64 "\n",
           completed - c0, ns, (uint64_t)c->served, errors + c->errors);
    return 0;
}
