/* The C end of tests/c_differential.rs: a frontend or a backend of a blkif ring
 * written only with Xen's own macros (xen/io/ring.h through xen/io/blkif.h),
 * over a ring file shared with the Rust test process (MAP_SHARED).
 *
 *   ringpeer sizes
 *       __CONST_RING_SIZE and RING_SIZE for blkif, netif_tx, netif_rx, orders 0..8.
 *   ringpeer stream-front PATH ORDER START COUNT KICK_FD WAIT_FD
 *   ringpeer stream-back  PATH ORDER COUNT KICK_FD WAIT_FD
 *       Stream COUNT requests, event-driven: kick the peer on KICK_FD (an eventfd)
 *       when the macro says so, sleep in poll() on WAIT_FD when the final check
 *       finds no work. Prints "ready" once attached, then one "stats ..." line.
 *   ringpeer step-front PATH ORDER START
 *   ringpeer step-back  PATH ORDER
 *       Execute one command per stdin line, answer one line on stdout; exit at
 *       the end of stdin.
 *
 * The request contents, the status of each response and the batching policies
 * are the same functions as in c_differential.rs: keep the two in step. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

/* ring.h takes its barriers from the includer at interface versions >= 3.2.8:
 * xen_mb is a full (store-load) fence, xen_rmb/xen_wmb acquire/release fences,
 * the mapping xenio's Rust ring uses. All three are also compiler barriers, which
 * is what makes the macros' plain loads of the shared indices re-read memory. */
#define __XEN_INTERFACE_VERSION__ __XEN_LATEST_INTERFACE_VERSION__
#define xen_mb() __sync_synchronize()
#define xen_rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define xen_wmb() __atomic_thread_fence(__ATOMIC_RELEASE)
#include <xen/io/blkif.h>
#include <xen/io/netif.h>

#define WAIT_TIMEOUT_MS 5000
#define ID_BASE UINT64_C(0xa5a5000000000000)

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ringpeer: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* ---- Deterministic contents (mirrored in c_differential.rs) ---- */

/* splitmix64's finaliser. */
static uint64_t mix(uint64_t x) {
    x += UINT64_C(0x9e3779b97f4a7c15);
    x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

static void make_request(uint64_t seq, blkif_request_t *req) {
    uint64_t h = mix(seq);
    memset(req, 0, sizeof(*req));
    req->operation = (uint8_t)(h % 4);
    req->nr_segments = (uint8_t)(1 + (h >> 8) % BLKIF_MAX_SEGMENTS_PER_REQUEST);
    req->handle = (uint16_t)(h >> 16);
    req->id = ID_BASE + seq;
    req->sector_number = mix(h);
    for (unsigned i = 0; i < req->nr_segments; i++) {
        uint64_t s = mix(seq * 16 + i + 1);
        uint8_t first = (uint8_t)((s >> 32) % 8);
        req->seg[i].gref = (uint32_t)s;
        req->seg[i].first_sect = first;
        req->seg[i].last_sect = (uint8_t)(first + (s >> 40) % (8 - first));
    }
}

/* Every field (padding excepted) of the request numbered seq? */
static int request_ok(uint64_t seq, const blkif_request_t *got) {
    blkif_request_t want;
    make_request(seq, &want);
    if (got->operation != want.operation || got->nr_segments != want.nr_segments ||
        got->handle != want.handle || got->id != want.id ||
        got->sector_number != want.sector_number)
        return 0;
    for (unsigned i = 0; i < BLKIF_MAX_SEGMENTS_PER_REQUEST; i++)
        if (got->seg[i].gref != want.seg[i].gref ||
            got->seg[i].first_sect != want.seg[i].first_sect ||
            got->seg[i].last_sect != want.seg[i].last_sect)
            return 0;
    return 1;
}

static int16_t status_of(uint64_t id) { return (int16_t)(mix(id ^ 0x5717) >> 48); }

static void make_response(const blkif_request_t *req, blkif_response_t *rsp) {
    memset(rsp, 0, sizeof(*rsp));
    rsp->id = req->id;
    rsp->operation = req->operation;
    rsp->status = status_of(req->id);
}

static int response_ok(uint64_t seq, const blkif_response_t *got) {
    blkif_request_t req;
    make_request(seq, &req);
    return got->id == req.id && got->operation == req.operation &&
           got->status == status_of(req.id);
}

/* Streaming policies: the frontend alternates between keeping the ring full,
 * one request at a time, and random depths and batches; the backend between
 * taking everything, one at a time and small batches, and publishes responses
 * in chunks. */
static unsigned front_limit(uint64_t seq, unsigned size) {
    switch ((seq / 1000) % 3) {
    case 0: return size;
    case 1: return 1;
    default: return 1 + (unsigned)(mix(seq ^ 0x11) % size);
    }
}
static unsigned front_batch(uint64_t seq, unsigned size) {
    switch ((seq / 1000) % 3) {
    case 0: return size;
    case 1: return 1;
    default: return 1 + (unsigned)(mix(seq ^ 0x22) % size);
    }
}
static unsigned back_max(uint64_t served, unsigned size) {
    switch ((served / 777) % 3) {
    case 0: return size;
    case 1: return 1;
    default: return 1 + (unsigned)(mix(served ^ 0x33) % 7);
    }
}
static unsigned back_chunk(uint64_t served) { return 1 + (unsigned)(mix(served ^ 0x44) % 5); }

/* ---- Setup ---- */

static uint64_t num(const char *s) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *s == '\0' || *end != '\0')
        die("not a number: %s", s);
    return v;
}

static blkif_sring_t *map_ring(const char *path, unsigned order, size_t *bytes) {
    if (order > 8)
        die("ring order %u is out of range", order);
    *bytes = (size_t)4096 << order;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        die("cannot open %s", path);
    struct stat st;
    if (fstat(fd, &st) < 0 || (size_t)st.st_size < *bytes)
        die("ring file %s is too small", path);
    void *p = mmap(NULL, *bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        die("cannot mmap %s", path);
    close(fd);
    return p;
}

/* SHARED_RING_INIT, then every index at start: the C equivalent of the Rust
 * FrontRing::init_at. */
static void front_init(blkif_front_ring_t *r, blkif_sring_t *s, size_t bytes, RING_IDX start) {
    SHARED_RING_INIT(s);
    s->req_prod = s->rsp_prod = start;
    s->req_event = s->rsp_event = start + 1;
    FRONT_RING_ATTACH(r, s, start, bytes);
    xen_mb();
}

/* What Linux blkback does: resume at the shared rsp_prod. */
static void back_attach(blkif_back_ring_t *r, blkif_sring_t *s, size_t bytes) {
    BACK_RING_ATTACH(r, s, s->rsp_prod, bytes);
}

static void ready(void) {
    printf("ready\n");
    fflush(stdout);
}

/* ---- sizes ---- */

static int sizes(void) {
    for (unsigned order = 0; order <= 8; order++) {
        size_t bytes = (size_t)4096 << order;
        void *mem = aligned_alloc(4096, bytes);
        if (!mem)
            die("out of memory");
        blkif_front_ring_t b;
        netif_tx_front_ring_t t;
        netif_rx_front_ring_t x;
        XEN_FRONT_RING_INIT(&b, (blkif_sring_t *)mem, bytes);
        printf("blkif %u %u %u\n", order, (unsigned)__CONST_RING_SIZE(blkif, bytes),
               (unsigned)RING_SIZE(&b));
        XEN_FRONT_RING_INIT(&t, (netif_tx_sring_t *)mem, bytes);
        printf("netif_tx %u %u %u\n", order, (unsigned)__CONST_RING_SIZE(netif_tx, bytes),
               (unsigned)RING_SIZE(&t));
        XEN_FRONT_RING_INIT(&x, (netif_rx_sring_t *)mem, bytes);
        printf("netif_rx %u %u %u\n", order, (unsigned)__CONST_RING_SIZE(netif_rx, bytes),
               (unsigned)RING_SIZE(&x));
        free(mem);
    }
    return 0;
}

/* ---- streaming ---- */

struct stats {
    uint64_t requests, responses, notifies, received, wakeups, fulls, errors;
};

static void kick(int fd, struct stats *st) {
    uint64_t one = 1;
    if (write(fd, &one, sizeof(one)) != sizeof(one))
        die("eventfd write failed");
    st->notifies++;
}

/* Sleep until the peer kicks; a timeout means a lost wake-up (or a dead peer). */
static void wait_kick(int fd, struct stats *st, const char *who) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    for (;;) {
        int n = poll(&p, 1, WAIT_TIMEOUT_MS);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("poll failed (%s)", who);
        if (n == 0) {
            fprintf(stderr,
                    "ringpeer %s: no notification in %d ms with no work "
                    "(requests %" PRIu64 ", responses %" PRIu64 ")\n",
                    who, WAIT_TIMEOUT_MS, st->requests, st->responses);
            exit(2);
        }
        uint64_t v;
        ssize_t got = read(fd, &v, sizeof(v));
        if (got == sizeof(v)) {
            st->received += v;
            st->wakeups++;
            return;
        }
        if (got < 0 && errno == EAGAIN)
            continue;
        die("eventfd read failed (%s)", who);
    }
}

static void print_stats(const struct stats *st) {
    printf("stats requests=%" PRIu64 " responses=%" PRIu64 " notifies=%" PRIu64
           " received=%" PRIu64 " wakeups=%" PRIu64 " fulls=%" PRIu64 " errors=%" PRIu64 "\n",
           st->requests, st->responses, st->notifies, st->received, st->wakeups, st->fulls,
           st->errors);
    fflush(stdout);
}

static int stream_front(blkif_front_ring_t *r, uint64_t count, int kick_fd, int wait_fd) {
    struct stats st = {0};
    unsigned size = RING_SIZE(r);
    while (st.responses < count) {
        unsigned pushed = 0;
        unsigned limit = front_limit(st.requests, size), batch = front_batch(st.requests, size);
        while (st.requests < count && pushed < batch &&
               (RING_IDX)(r->req_prod_pvt - r->rsp_cons) < limit && !RING_FULL(r)) {
            blkif_request_t req;
            make_request(st.requests, &req);
            *RING_GET_REQUEST(r, r->req_prod_pvt) = req;
            r->req_prod_pvt++;
            st.requests++;
            pushed++;
        }
        if (pushed && RING_FULL(r))
            st.fulls++;
        if (pushed) {
            int notify;
            RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(r, notify);
            if (notify)
                kick(kick_fd, &st);
        }

        unsigned consumed = 0;
        RING_IDX rp = r->sring->rsp_prod;
        xen_rmb(); /* the responses up to rp, after rp */
        if (RING_RESPONSE_PROD_OVERFLOW(r, rp))
            die("backend broke the ring (RING_RESPONSE_PROD_OVERFLOW)");
        while (r->rsp_cons != rp) {
            blkif_response_t rsp = *RING_GET_RESPONSE(r, r->rsp_cons);
            r->rsp_cons++;
            if (!response_ok(st.responses, &rsp)) {
                if (st.errors++ < 5)
                    fprintf(stderr, "front: bad response #%" PRIu64 " id %" PRIx64 "\n",
                            st.responses, rsp.id);
            }
            st.responses++;
            consumed++;
        }
        if (pushed || consumed)
            continue;

        int more;
        RING_FINAL_CHECK_FOR_RESPONSES(r, more);
        if (!more)
            wait_kick(wait_fd, &st, "stream-front");
    }
    print_stats(&st);
    return 0;
}

static int stream_back(blkif_back_ring_t *r, uint64_t count, int kick_fd, int wait_fd) {
    struct stats st = {0};
    unsigned size = RING_SIZE(r);
    while (st.requests < count) {
        unsigned max = back_max(st.requests, size), chunk = back_chunk(st.requests);
        unsigned took = 0;
        int notify;
        RING_IDX rp = r->sring->req_prod;
        xen_rmb(); /* the requests up to rp, after rp */
        if (RING_REQUEST_PROD_OVERFLOW(r, rp))
            die("frontend broke the ring (RING_REQUEST_PROD_OVERFLOW)");
        while (r->req_cons != rp && took < max && !RING_REQUEST_CONS_OVERFLOW(r, r->req_cons)) {
            blkif_request_t req;
            blkif_response_t rsp;
            RING_COPY_REQUEST(r, r->req_cons, &req);
            r->req_cons++;
            if (!request_ok(st.requests, &req)) {
                if (st.errors++ < 5)
                    fprintf(stderr, "back: bad request #%" PRIu64 " id %" PRIx64 "\n",
                            st.requests, req.id);
            }
            make_response(&req, &rsp);
            *RING_GET_RESPONSE(r, r->rsp_prod_pvt) = rsp;
            r->rsp_prod_pvt++;
            st.requests++;
            st.responses++;
            took++;
            if (took % chunk == 0) {
                RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(r, notify);
                if (notify)
                    kick(kick_fd, &st);
            }
        }
        if (took % chunk != 0) {
            RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(r, notify);
            if (notify)
                kick(kick_fd, &st);
        }
        if (took)
            continue;

        int more;
        RING_FINAL_CHECK_FOR_REQUESTS(r, more);
        if (!more)
            wait_kick(wait_fd, &st, "stream-back");
    }
    print_stats(&st);
    return 0;
}

/* ---- lockstep ---- */

/* Each command prints one line; the same lines come out of the Rust sides of
 * c_differential.rs, so the logs of all pairings can be compared verbatim. */
static int step_front(blkif_front_ring_t *r) {
    uint64_t next = 0, done = 0;
    char line[256];
    unsigned arg;
    ready();
    while (fgets(line, sizeof(line), stdin)) {
        if (sscanf(line, "write %u", &arg) == 1) {
            unsigned n = 0;
            uint64_t first = next;
            while (n < arg && !RING_FULL(r)) {
                blkif_request_t req;
                make_request(next++, &req);
                *RING_GET_REQUEST(r, r->req_prod_pvt) = req;
                r->req_prod_pvt++;
                n++;
            }
            printf("F write n=%u first=%" PRIu64 " full=%d", n, first, RING_FULL(r) ? 1 : 0);
        } else if (strcmp(line, "push\n") == 0) {
            int notify;
            RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(r, notify);
            printf("F push notify=%d", notify ? 1 : 0);
        } else if (strcmp(line, "pushonly\n") == 0) {
            RING_PUSH_REQUESTS(r);
            printf("F pushonly");
        } else if (sscanf(line, "take %u", &arg) == 1) {
            unsigned avail = RING_HAS_UNCONSUMED_RESPONSES(r), n = 0;
            uint64_t first = done, bad = 0;
            RING_IDX rp = r->sring->rsp_prod;
            xen_rmb();
            if (RING_RESPONSE_PROD_OVERFLOW(r, rp)) {
                printf("F take error: RING_RESPONSE_PROD_OVERFLOW");
            } else {
                while (r->rsp_cons != rp && n < arg) {
                    blkif_response_t rsp = *RING_GET_RESPONSE(r, r->rsp_cons);
                    r->rsp_cons++;
                    bad += !response_ok(done++, &rsp);
                    n++;
                }
                printf("F take avail=%u n=%u first=%" PRIu64 " bad=%" PRIu64, avail, n, first, bad);
            }
        } else if (strcmp(line, "final\n") == 0) {
            int more;
            RING_FINAL_CHECK_FOR_RESPONSES(r, more);
            printf("F final work=%d", more ? 1 : 0);
        } else {
            printf("F unknown command");
        }
        printf(" | pvt=%u cons=%u\n", r->req_prod_pvt, r->rsp_cons);
        fflush(stdout);
    }
    return 0;
}

static int step_back(blkif_back_ring_t *r) {
    uint64_t taken = 0, answered = 0;
    unsigned size = RING_SIZE(r);
    /* The id and operation of each consumed request not answered yet, by seq % size. */
    uint64_t *ids = calloc(size, sizeof(*ids));
    uint8_t *ops = calloc(size, sizeof(*ops));
    char line[256];
    unsigned arg;
    if (!ids || !ops)
        die("out of memory");
    ready();
    while (fgets(line, sizeof(line), stdin)) {
        if (sscanf(line, "take %u", &arg) == 1) {
            unsigned avail = RING_HAS_UNCONSUMED_REQUESTS(r), n = 0;
            uint64_t first = taken, bad = 0;
            RING_IDX rp = r->sring->req_prod;
            xen_rmb();
            /* Linux blkback's loop (__do_block_io_op). */
            if (RING_REQUEST_PROD_OVERFLOW(r, rp)) {
                printf("B take error: RING_REQUEST_PROD_OVERFLOW");
            } else {
                while (r->req_cons != rp && n < arg && !RING_REQUEST_CONS_OVERFLOW(r, r->req_cons)) {
                    blkif_request_t req;
                    RING_COPY_REQUEST(r, r->req_cons, &req);
                    r->req_cons++;
                    bad += !request_ok(taken, &req);
                    ids[taken % size] = req.id;
                    ops[taken % size] = req.operation;
                    taken++;
                    n++;
                }
                printf("B take avail=%u n=%u first=%" PRIu64 " bad=%" PRIu64, avail, n, first, bad);
            }
        } else if (sscanf(line, "write %u", &arg) == 1) {
            unsigned n = 0;
            uint64_t first = answered;
            while (n < arg && r->rsp_prod_pvt != r->req_cons) {
                blkif_response_t rsp;
                memset(&rsp, 0, sizeof(rsp));
                rsp.id = ids[answered % size];
                rsp.operation = ops[answered % size];
                rsp.status = status_of(rsp.id);
                *RING_GET_RESPONSE(r, r->rsp_prod_pvt) = rsp;
                r->rsp_prod_pvt++;
                answered++;
                n++;
            }
            printf("B write n=%u first=%" PRIu64, n, first);
        } else if (strcmp(line, "push\n") == 0) {
            int notify;
            RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(r, notify);
            printf("B push notify=%d", notify ? 1 : 0);
        } else if (strcmp(line, "pushonly\n") == 0) {
            RING_PUSH_RESPONSES(r);
            printf("B pushonly");
        } else if (strcmp(line, "final\n") == 0) {
            int more;
            RING_FINAL_CHECK_FOR_REQUESTS(r, more);
            printf("B final work=%d", more ? 1 : 0);
        } else {
            printf("B unknown command");
        }
        printf(" | pvt=%u cons=%u\n", r->rsp_prod_pvt, r->req_cons);
        fflush(stdout);
    }
    free(ids);
    free(ops);
    return 0;
}

int main(int argc, char **argv) {
    /* Never outlive the test process. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);

    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "sizes") == 0 && argc == 2)
        return sizes();
    if (argc >= 4) {
        size_t bytes;
        blkif_sring_t *s = map_ring(argv[2], (unsigned)num(argv[3]), &bytes);
        if (strcmp(mode, "stream-front") == 0 && argc == 8) {
            blkif_front_ring_t r;
            front_init(&r, s, bytes, (RING_IDX)num(argv[4]));
            ready();
            return stream_front(&r, num(argv[5]), (int)num(argv[6]), (int)num(argv[7]));
        }
        if (strcmp(mode, "stream-back") == 0 && argc == 7) {
            blkif_back_ring_t r;
            back_attach(&r, s, bytes);
            ready();
            return stream_back(&r, num(argv[4]), (int)num(argv[5]), (int)num(argv[6]));
        }
        if (strcmp(mode, "step-front") == 0 && argc == 5) {
            blkif_front_ring_t r;
            front_init(&r, s, bytes, (RING_IDX)num(argv[4]));
            return step_front(&r);
        }
        if (strcmp(mode, "step-back") == 0 && argc == 4) {
            blkif_back_ring_t r;
            back_attach(&r, s, bytes);
            return step_back(&r);
        }
    }
    die("usage: ringpeer sizes | stream-front PATH ORDER START COUNT KICK_FD WAIT_FD | "
        "stream-back PATH ORDER COUNT KICK_FD WAIT_FD | step-front PATH ORDER START | "
        "step-back PATH ORDER (got %s)", mode);
}
