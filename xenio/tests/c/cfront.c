/* cfront: a blkif frontend in C, written from docs/local-platform.md with
 * nothing but Xen's public headers and libc (no libxenstore, no xenio code).
 *
 *   cfront RUN_DIR [DOMID [DEVID]]          (defaults: domain 1, device 51712)
 *
 * It acts as domain DOMID on the local platform: creates its grant table, map
 * track and pool, speaks the xenstore wire protocol on
 * RUN/xenstored/domain/DOMID, does the XenbusState handshake with the backend
 * named in /local/domain/DOMID/device/vbd/DEVID, then drives the shared ring
 * with io/ring.h's macros: multi-segment writes (sub-page segments included),
 * read-back and verification of the whole disk, a cache flush, a read-only
 * grant as the source of a write, and requests the backend must refuse
 * (a segment with last_sect 8, sectors past the end, and more), then closes.
 *
 * Data: the byte at disk offset `o` written by a request with seed `s` is
 * pat(o, s); bytes never written hold pat(o, 0) (the test fills the image so).
 * Each successful write is printed as "write <sector> <sectors> <seed>" so the
 * caller can rebuild the expected image. Exit status 0 only if every check
 * passed. Every wait is bounded. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* io/ring.h leaves the memory barriers to its includer: with the default
 * __XEN_INTERFACE_VERSION__ (0) its xen_mb/xen_rmb/xen_wmb are mb/rmb/wmb. */
#define mb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define wmb() __atomic_thread_fence(__ATOMIC_RELEASE)

#include <xen/xen.h>
#include <xen/grant_table.h>
#include <xen/io/ring.h>
#include <xen/io/blkif.h>
#include <xen/io/protocols.h>
#include <xen/io/xenbus.h>
#include <xen/io/xs_wire.h>

#define PAGE 4096
#define NR_GRANT_ENTRIES 16384
#define MAPTRACK_SLOTS 4
#define MAX_PORTS 4096
#define STEP_MS 15000 /* the longest any single wait may take */

_Static_assert(sizeof(grant_entry_v1_t) == 8, "grant_entry_v1 is 8 bytes");
_Static_assert(sizeof(struct xsd_sockmsg) == 16, "xsd_sockmsg is 16 bytes");
_Static_assert(sizeof(blkif_request_t) == 112, "x86_64 blkif_request");

static const char *run_dir;
static unsigned my_domid = 1;
static unsigned devid = 51712;

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fprintf(stderr, "cfront: FAILED: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("cfront: ");
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
}

static int64_t now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int left_ms(int64_t deadline) {
    int64_t l = deadline - now_ms();
    return l < 0 ? 0 : (int)l;
}

static void path_of(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void path_of(char *out, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(out, n, fmt, ap);
    va_end(ap);
    if (w < 0 || (size_t)w >= n)
        fail("path too long");
}

static int pid_alive(uint32_t pid) {
    return pid != 0 && !(kill((pid_t)pid, 0) != 0 && errno == ESRCH);
}

/* ------------------------------------------------------------------ pattern */

/* The byte at disk offset `off` of a write with seed `seed` (murmur3 fmix64). */
static uint8_t pat(uint64_t off, uint32_t seed) {
    uint64_t x = off + ((uint64_t)seed << 40);
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return (uint8_t)x;
}

/* Writes that succeeded, in order: what each disk sector should hold. */
#define MAX_WRITTEN 256
static struct { uint64_t sector, sectors; uint32_t seed; } written[MAX_WRITTEN];
static int nwritten;

static uint32_t seed_of_sector(uint64_t sector) {
    for (int i = nwritten - 1; i >= 0; i--)
        if (sector >= written[i].sector && sector < written[i].sector + written[i].sectors)
            return written[i].seed;
    return 0;
}

/* ------------------------------------------------------------------ files */

static void mkdir_p(const char *path) {
    char tmp[PATH_MAX];
    path_of(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            fail("mkdir %s: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        fail("mkdir %s: %s", tmp, strerror(errno));
}

/* "A process that starts as a domain creates the three files fresh, by writing
 * <name>.new-<pid> and renaming it over <name>." */
static int create_fresh(const char *name, off_t len) {
    char path[PATH_MAX], tmp[PATH_MAX];
    path_of(path, sizeof path, "%s/domains/%u/%s", run_dir, my_domid, name);
    path_of(tmp, sizeof tmp, "%s.new-%d", path, (int)getpid());
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        fail("creating %s: %s", tmp, strerror(errno));
    if (ftruncate(fd, len) != 0)
        fail("sizing %s: %s", tmp, strerror(errno));
    if (rename(tmp, path) != 0)
        fail("renaming %s: %s", tmp, strerror(errno));
    return fd;
}

static void *map_file(int fd, size_t len) {
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        fail("mmap: %s", strerror(errno));
    return p;
}

/* ------------------------------------------------------------------ grants */

static grant_entry_v1_t *gnttab;  /* RUN/domains/F/gnttab */
static uint64_t *maptrack;        /* RUN/domains/F/maptrack: 4 slots per ref */
static int pool_fd;
static uint64_t pool_pages;       /* current size of the pool file, in pages */
static uint8_t *pool;             /* the pool, mapped (POOL_PAGES) */

/* Pool frames (4 KiB pages) and grant references this frontend uses. */
#define RING_FRAME 0               /* 1 << order ring pages */
#define RING_REF 8                 /* refs 0..7 are reserved */
#define BATCH 16                   /* requests in flight at once */
#define DATA_FRAME 2
#define DATA_REF 10
#define DATA_PAGES (BATCH * BLKIF_MAX_SEGMENTS_PER_REQUEST)
#define RO_FRAME (DATA_FRAME + DATA_PAGES)
#define RO_REF (DATA_REF + DATA_PAGES)
#define UNGRANTED_REF (RO_REF + 1) /* a reference never granted */
#define POOL_PAGES (RO_FRAME + 1)

static void pool_ensure(uint64_t pages) {
    /* "make sure the pool file is at least (f+1)*4096 bytes (ftruncate up, never down)" */
    if (pages <= pool_pages)
        return;
    if (ftruncate(pool_fd, (off_t)(pages * PAGE)) != 0)
        fail("growing the pool: %s", strerror(errno));
    pool_pages = pages;
}

static uint8_t *frame_ptr(uint32_t frame) {
    if (frame >= POOL_PAGES)
        fail("frame %u outside the mapped pool", frame);
    return pool + (size_t)frame * PAGE;
}

/* gnttab_grant_foreign_access: the page's contents first, then the entry, its
 * flags last with release ordering. */
static void grant(uint32_t ref, uint32_t frame, domid_t to, int readonly) {
    pool_ensure((uint64_t)frame + 1);
    gnttab[ref].frame = frame;
    gnttab[ref].domid = to;
    __atomic_store_n(&gnttab[ref].flags,
                     (uint16_t)(GTF_permit_access | (readonly ? GTF_readonly : 0)),
                     __ATOMIC_RELEASE);
}

/* Whether a live process has `ref` mapped (per its maptrack slots). */
static int grant_in_use(uint32_t ref) {
    for (int s = 0; s < MAPTRACK_SLOTS; s++) {
        uint64_t v = __atomic_load_n(&maptrack[ref * MAPTRACK_SLOTS + s], __ATOMIC_ACQUIRE);
        if ((uint32_t)v > 0 && pid_alive((uint32_t)(v >> 32)))
            return 1;
    }
    return 0;
}

/* gnttab_end_foreign_access: refused while mapped; else CAS the entry to 0. */
static int end_foreign_access(uint32_t ref) {
    uint64_t *e = (uint64_t *)&gnttab[ref];
    uint64_t v = __atomic_load_n(e, __ATOMIC_ACQUIRE);
    for (;;) {
        if (grant_in_use(ref))
            return -1;
        if (__atomic_compare_exchange_n(e, &v, 0, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            return 0;
    }
}

/* ------------------------------------------------------------------ event channels */

static int evt_fd = -1;        /* our port's FIFO, O_RDWR */
static unsigned evt_port;
static int peer_fd = -1;       /* the peer's FIFO once bound, O_WRONLY */
static unsigned long notifies, wakeups;

struct port_info { int bound; unsigned remote, rport, owner; };

static int read_info(unsigned domid, unsigned port, struct port_info *pi) {
    char path[PATH_MAX], buf[128];
    path_of(path, sizeof path, "%s/domains/%u/evtchn/%u.info", run_dir, domid, port);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    memset(pi, 0, sizeof *pi);
    if (sscanf(buf, "interdomain %u %u %u", &pi->remote, &pi->rport, &pi->owner) == 3) {
        pi->bound = 1;
        return 0;
    }
    if (sscanf(buf, "unbound %u %u", &pi->remote, &pi->owner) == 2)
        return 0;
    return -1;
}

static void write_info(unsigned port, const char *text) {
    char path[PATH_MAX], tmp[PATH_MAX];
    path_of(path, sizeof path, "%s/domains/%u/evtchn/%u.info", run_dir, my_domid, port);
    path_of(tmp, sizeof tmp, "%s/domains/%u/evtchn/%u.tmp-%d", run_dir, my_domid, port,
            (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        fail("creating %s: %s", tmp, strerror(errno));
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len)
        fail("writing %s: %s", tmp, strerror(errno));
    close(fd);
    if (rename(tmp, path) != 0)
        fail("renaming to %s: %s", path, strerror(errno));
}

/* EVTCHNOP_alloc_unbound(remote): the lowest port whose FIFO we can create. */
static void alloc_unbound(unsigned remote) {
    char path[PATH_MAX], text[64];
    for (unsigned p = 1; p < MAX_PORTS; p++) {
        path_of(path, sizeof path, "%s/domains/%u/evtchn/%u", run_dir, my_domid, p);
        if (mkfifo(path, 0660) != 0) {
            struct port_info pi;
            if (errno != EEXIST)
                fail("mkfifo %s: %s", path, strerror(errno));
            /* Taken, unless its owner is dead. */
            if (read_info(my_domid, p, &pi) != 0 || pid_alive(pi.owner))
                continue;
            unlink(path);
            if (mkfifo(path, 0660) != 0)
                continue;
        }
        evt_fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if (evt_fd < 0)
            fail("opening %s: %s", path, strerror(errno));
        snprintf(text, sizeof text, "unbound %u %d\n", remote, (int)getpid());
        write_info(p, text);
        evt_port = p;
        return;
    }
    fail("no free event channel port");
}

/* Notify: one byte into the peer's FIFO, found through our own .info. */
static void notify(void) {
    if (peer_fd < 0) {
        struct port_info pi;
        if (read_info(my_domid, evt_port, &pi) != 0)
            fail("reading our port's info");
        if (!pi.bound)
            return; /* unbound: the send is dropped, as on Xen */
        char path[PATH_MAX];
        path_of(path, sizeof path, "%s/domains/%u/evtchn/%u", run_dir, pi.remote, pi.rport);
        peer_fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (peer_fd < 0)
            fail("opening the peer's FIFO %s: %s", path, strerror(errno));
        say("event channel: port %u is bound to domain %u port %u", evt_port, pi.remote,
            pi.rport);
    }
    notifies++;
    if (write(peer_fd, "\1", 1) == 1 || errno == EAGAIN)
        return; /* sent, or one is already pending: notifications coalesce */
    if (errno == EPIPE) {
        close(peer_fd); /* the peer closed its port: dropped */
        peer_fd = -1;
        return;
    }
    fail("notifying: %s", strerror(errno));
}

/* Wait on our port: poll the FIFO, then drain it. 1 if an event came. */
static int wait_event(int timeout_ms) {
    struct pollfd p = {.fd = evt_fd, .events = POLLIN};
    int r = poll(&p, 1, timeout_ms);
    if (r < 0 && errno != EINTR)
        fail("poll: %s", strerror(errno));
    char buf[64];
    int any = 0;
    for (;;) {
        ssize_t n = read(evt_fd, buf, sizeof buf);
        if (n > 0) {
            any = 1;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        break; /* EAGAIN: drained */
    }
    wakeups += any;
    return any;
}

/* ------------------------------------------------------------------ xenstore */

static int xs_fd = -1;
static uint32_t xs_next_req = 1;

struct xs_msg {
    struct xsd_sockmsg h;
    char body[XENSTORE_PAYLOAD_MAX + 1]; /* NUL added after the payload */
};

/* Watch events that arrived while we waited for a reply. */
#define MAX_QUEUED 64
static struct xs_msg queued[MAX_QUEUED];
static int nqueued;

/* Read exactly n bytes by the deadline; 0 bytes by then is a timeout (-1). */
static int read_exact(int fd, void *buf, size_t n, int64_t deadline) {
    size_t got = 0;
    while (got < n) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, left_ms(deadline));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            fail("poll on the store socket: %s", strerror(errno));
        if (r == 0) {
            if (got == 0)
                return -1;
            fail("the store stopped in the middle of a message");
        }
        ssize_t k = read(fd, (char *)buf + got, n - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            fail("the store closed the connection (%s)", k < 0 ? strerror(errno) : "EOF");
        got += (size_t)k;
    }
    return 0;
}

static int xs_read_msg(struct xs_msg *m, int64_t deadline) {
    if (read_exact(xs_fd, &m->h, sizeof m->h, deadline) != 0)
        return -1;
    if (m->h.len > XENSTORE_PAYLOAD_MAX)
        fail("the store announced %u bytes", m->h.len);
    if (read_exact(xs_fd, m->body, m->h.len, now_ms() + STEP_MS) != 0)
        fail("the store sent a header without its payload");
    m->body[m->h.len] = 0;
    return 0;
}

static void write_all(int fd, const void *buf, size_t n) {
    while (n > 0) {
        ssize_t k = write(fd, buf, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            fail("writing to the store: %s", strerror(errno));
        buf = (const char *)buf + k;
        n -= (size_t)k;
    }
}

/* One request, its reply in `out` (NUL-terminated, length in *outlen).
 * Returns 0, or -1 with the XS_ERROR name in `err`. */
static int xs_req(uint32_t type, uint32_t tx, const void *payload, size_t len, char *out,
                  size_t outsz, size_t *outlen, char err[16]) {
    static struct xs_msg m;
    if (len > XENSTORE_PAYLOAD_MAX)
        fail("request payload too long");
    struct xsd_sockmsg h = {.type = type, .req_id = xs_next_req++, .tx_id = tx,
                            .len = (uint32_t)len};
    char buf[sizeof h + XENSTORE_PAYLOAD_MAX];
    memcpy(buf, &h, sizeof h);
    memcpy(buf + sizeof h, payload, len);
    write_all(xs_fd, buf, sizeof h + len);
    int64_t deadline = now_ms() + STEP_MS;
    for (;;) {
        if (xs_read_msg(&m, deadline) != 0)
            fail("no reply from the store to request type %u", type);
        if (m.h.type == XS_WATCH_EVENT) {
            if (nqueued == MAX_QUEUED)
                fail("too many watch events queued");
            queued[nqueued++] = m;
            continue;
        }
        if (m.h.req_id != h.req_id)
            fail("reply with req_id %u, expected %u", m.h.req_id, h.req_id);
        if (m.h.type == XS_ERROR) {
            size_t l = strnlen(m.body, 15);
            memcpy(err, m.body, l);
            err[l] = 0;
            return -1;
        }
        if (m.h.type != type)
            fail("reply of type %u to request type %u", m.h.type, type);
        if (m.h.len + 1 > outsz)
            fail("reply too long");
        memcpy(out, m.body, m.h.len + 1);
        if (outlen)
            *outlen = m.h.len;
        return 0;
    }
}

/* payload = "<a>\0<b>" with b NUL-terminated or not */
static size_t two(char *buf, size_t sz, const char *a, const char *b, int nul_b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la + 1 + lb + 1 > sz)
        fail("payload too long");
    memcpy(buf, a, la + 1);
    memcpy(buf + la + 1, b, lb + 1);
    return la + 1 + lb + (nul_b ? 1 : 0);
}

/* XS_READ: 0 and the value, or -1 with the error (e.g. ENOENT). */
static int xs_read(uint32_t tx, const char *path, char *val, size_t sz, char err[16]) {
    return xs_req(XS_READ, tx, path, strlen(path) + 1, val, sz, NULL, err);
}

static void xs_write(uint32_t tx, const char *path, const char *val) {
    char buf[XENSTORE_PAYLOAD_MAX], reply[16], err[16];
    size_t n = two(buf, sizeof buf, path, val, 0); /* values carry no NUL */
    if (xs_req(XS_WRITE, tx, buf, n, reply, sizeof reply, NULL, err) != 0)
        fail("writing %s: %s", path, err);
}

static void xs_watch(uint32_t type, const char *path, const char *token) {
    char buf[XENSTORE_PAYLOAD_MAX], reply[16], err[16];
    size_t n = two(buf, sizeof buf, path, token, 1);
    if (xs_req(type, 0, buf, n, reply, sizeof reply, NULL, err) != 0)
        fail("%s %s: %s", type == XS_WATCH ? "watching" : "unwatching", path, err);
}

/* The next watch event (path and token), or -1 at the deadline. */
static int xs_event(int64_t deadline, char *path, size_t psz, char *token, size_t tsz) {
    static struct xs_msg m;
    if (nqueued > 0) {
        m = queued[0];
        memmove(&queued[0], &queued[1], sizeof queued[0] * (size_t)(nqueued - 1));
        nqueued--;
    } else if (xs_read_msg(&m, deadline) != 0) {
        return -1;
    }
    if (m.h.type != XS_WATCH_EVENT)
        fail("unexpected message of type %u from the store", m.h.type);
    if (m.h.req_id != 0 || m.h.tx_id != 0)
        fail("a watch event with req_id %u tx_id %u", m.h.req_id, m.h.tx_id);
    /* payload: <path>\0<token>\0 */
    size_t lp = strnlen(m.body, m.h.len);
    if (lp >= m.h.len)
        fail("malformed watch event");
    if (lp >= psz || strlen(m.body + lp + 1) >= tsz)
        fail("watch event too long");
    memcpy(path, m.body, lp + 1);
    strcpy(token, m.body + lp + 1);
    return 0;
}

static void xs_connect(void) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int w = snprintf(a.sun_path, sizeof a.sun_path, "%s/xenstored/domain/%u", run_dir, my_domid);
    if (w < 0 || (size_t)w >= sizeof a.sun_path)
        fail("socket path too long for sockaddr_un");
    /* Bounded retries: the daemon may still be introducing us. */
    for (int i = 0;; i++) {
        xs_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (xs_fd < 0)
            fail("socket: %s", strerror(errno));
        if (connect(xs_fd, (struct sockaddr *)&a, sizeof a) == 0)
            break;
        if (i == 100)
            fail("connecting to %s: %s", a.sun_path, strerror(errno));
        close(xs_fd);
        usleep(50000);
    }
    say("connected to %s", a.sun_path);
}

/* A state node: Unknown (0) if missing or empty. Once the backend removes its
 * directory, its state node is EACCES to us, not ENOENT: the nearest remaining
 * ancestor is dom0's and we may not look there. Linux's
 * xenbus_read_driver_state takes any failed read as Unknown. */
static int read_state(const char *path) {
    char val[32], err[16];
    if (xs_read(0, path, val, sizeof val, err) != 0) {
        if (strcmp(err, "ENOENT") == 0 || strcmp(err, "EACCES") == 0)
            return XenbusStateUnknown;
        fail("reading %s: %s", path, err);
    }
    return val[0] ? atoi(val) : XenbusStateUnknown;
}

/* Wait (watch events are only hints to read again) until the state at `path`
 * is one of the states in `mask`. */
static int wait_state(const char *path, unsigned mask, const char *what) {
    int64_t deadline = now_ms() + STEP_MS;
    char ep[XENSTORE_ABS_PATH_MAX + 1], tok[64];
    for (;;) {
        int s = read_state(path);
        if (mask & (1u << s))
            return s;
        if (xs_event(deadline, ep, sizeof ep, tok, sizeof tok) != 0)
            fail("timed out waiting for %s (%s is %d)", what, path, s);
    }
}

static uint64_t read_u64(const char *path, int required, uint64_t dflt) {
    char val[64], err[16];
    if (xs_read(0, path, val, sizeof val, err) != 0) {
        if (!required && strcmp(err, "ENOENT") == 0)
            return dflt;
        fail("reading %s: %s", path, err);
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(val, &end, 10);
    if (errno || end == val || *end)
        fail("%s = \"%s\" is not a number", path, val);
    return v;
}

/* ------------------------------------------------------------------ the ring */

static blkif_sring_t *sring;
static blkif_front_ring_t front;
static uint64_t disk_sectors;
static uint64_t next_id = 0xc0ffee0000000000ULL; /* ids use all 64 bits */

struct seg { uint32_t ref; uint32_t frame; uint8_t first, last; };

/* One request and what its response must be. */
struct io {
    uint8_t op;
    uint8_t nseg;       /* what goes in nr_segments */
    uint64_t sector;
    struct seg seg[BLKIF_MAX_SEGMENTS_PER_REQUEST];
    uint32_t seed;      /* writes: the data's seed */
    int expect;         /* BLKIF_RSP_OKAY / BLKIF_RSP_ERROR, or EXPECT_REFUSED */
    const char *what;
    /* filled in */
    uint64_t id;
    int done;
    int16_t status;
};
#define EXPECT_REFUSED 100 /* ERROR or EOPNOTSUPP */

static uint64_t io_sectors(const struct io *io) {
    uint64_t n = 0;
    for (int k = 0; k < io->nseg && k < BLKIF_MAX_SEGMENTS_PER_REQUEST; k++)
        n += (uint64_t)(io->seg[k].last - io->seg[k].first + 1);
    return n;
}

/* Give slot `slot` of the batch data pages: segment k uses page slot*11+k. */
static void assign_pages(struct io *io, int slot) {
    for (int k = 0; k < BLKIF_MAX_SEGMENTS_PER_REQUEST; k++) {
        if (io->seg[k].ref)
            continue; /* chosen by the caller */
        io->seg[k].ref = DATA_REF + slot * BLKIF_MAX_SEGMENTS_PER_REQUEST + k;
        io->seg[k].frame = DATA_FRAME + slot * BLKIF_MAX_SEGMENTS_PER_REQUEST + k;
    }
}

#define FILL_OUTSIDE 0xee /* bytes of a data page outside its segment */
#define FILL_READ 0xcc    /* a read's page before the read */

static void prepare_data(struct io *io) {
    uint64_t off = io->sector * 512;
    for (int k = 0; k < io->nseg && k < BLKIF_MAX_SEGMENTS_PER_REQUEST; k++) {
        struct seg *s = &io->seg[k];
        if (s->frame >= POOL_PAGES || s->first > s->last || s->last > 7)
            continue; /* a deliberately broken segment: its page is left alone */
        uint8_t *p = frame_ptr(s->frame);
        if (s->ref == RO_REF) { /* filled by the caller */
            off += (s->last - s->first + 1u) * 512u;
            continue;
        }
        if (io->op == BLKIF_OP_WRITE) {
            memset(p, FILL_OUTSIDE, PAGE);
            for (size_t b = s->first * 512u; b < (s->last + 1u) * 512u; b++)
                p[b] = pat(off++, io->seed);
        } else if (io->op == BLKIF_OP_READ) {
            memset(p, FILL_READ, PAGE);
        }
    }
}

/* After a successful read: each segment holds the disk's expected bytes, and
 * nothing outside the segments was touched. */
static void verify_read(const struct io *io) {
    uint64_t sector = io->sector;
    for (int k = 0; k < io->nseg; k++) {
        const struct seg *s = &io->seg[k];
        const uint8_t *p = frame_ptr(s->frame);
        for (unsigned b = 0; b < PAGE; b++) {
            unsigned sect = b / 512;
            if (sect < s->first || sect > s->last) {
                if (p[b] != FILL_READ)
                    fail("%s: byte %u of segment %d outside [%u,%u] was overwritten", io->what,
                         b, k, s->first, s->last);
                continue;
            }
            uint64_t disk_sector = sector + (sect - s->first);
            uint64_t off = disk_sector * 512 + b % 512;
            uint8_t want = pat(off, seed_of_sector(disk_sector));
            if (p[b] != want)
                fail("%s: disk byte %" PRIu64 " reads %#x, expected %#x (seed %u)", io->what,
                     off, p[b], want, seed_of_sector(disk_sector));
        }
        sector += (uint64_t)(s->last - s->first + 1);
    }
}

static void check_response(const blkif_response_t *r, struct io *ios, int n) {
    for (int i = 0; i < n; i++) {
        struct io *io = &ios[i];
        if (io->id != r->id)
            continue;
        if (io->done)
            fail("a second response for id %#" PRIx64, r->id);
        if (r->operation != io->op)
            fail("%s: response operation %u, request was %u", io->what, r->operation, io->op);
        io->done = 1;
        io->status = r->status;
        int ok = io->expect == EXPECT_REFUSED
                     ? (r->status == BLKIF_RSP_ERROR || r->status == BLKIF_RSP_EOPNOTSUPP)
                     : r->status == io->expect;
        if (!ok)
            fail("%s: status %d, expected %d", io->what, r->status, io->expect);
        return;
    }
    fail("a response for unknown id %#" PRIx64, r->id);
}

/* Put the requests on the ring in one push, then collect every response. */
static void run_batch(struct io *ios, int n) {
    if (n > BATCH)
        fail("batch too large");
    for (int i = 0; i < n; i++) {
        struct io *io = &ios[i];
        assign_pages(io, i);
        prepare_data(io);
        if (RING_FULL(&front))
            fail("ring full");
        blkif_request_t *req = RING_GET_REQUEST(&front, front.req_prod_pvt);
        memset(req, 0, sizeof *req);
        req->operation = io->op;
        req->nr_segments = io->nseg;
        req->handle = (blkif_vdev_t)devid;
        io->id = next_id++;
        io->done = 0;
        req->id = io->id;
        req->sector_number = io->sector;
        for (int k = 0; k < io->nseg && k < BLKIF_MAX_SEGMENTS_PER_REQUEST; k++) {
            req->seg[k].gref = io->seg[k].ref;
            req->seg[k].first_sect = io->seg[k].first;
            req->seg[k].last_sect = io->seg[k].last;
        }
        front.req_prod_pvt++;
    }
    int do_notify;
    RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&front, do_notify);
    if (do_notify)
        notify();

    int got = 0;
    int64_t deadline = now_ms() + STEP_MS;
    while (got < n) {
        RING_IDX rp = sring->rsp_prod;
        xen_rmb(); /* see the responses before using them */
        if ((RING_IDX)(rp - front.rsp_cons) > RING_SIZE(&front))
            fail("the backend's rsp_prod %u is beyond the ring", rp);
        for (RING_IDX i = front.rsp_cons; i != rp; i++) {
            blkif_response_t r = *RING_GET_RESPONSE(&front, i);
            check_response(&r, ios, n);
            got++;
        }
        front.rsp_cons = rp;
        if (got >= n)
            break;
        int more;
        RING_FINAL_CHECK_FOR_RESPONSES(&front, more);
        if (!more && !wait_event(left_ms(deadline)) && left_ms(deadline) == 0)
            fail("timed out waiting for responses (%d of %d)", got, n);
    }
    if (got != n)
        fail("%d responses for %d requests", got, n);
    for (int i = 0; i < n; i++) {
        struct io *io = &ios[i];
        if (io->status != BLKIF_RSP_OKAY)
            continue;
        if (io->op == BLKIF_OP_WRITE) {
            if (nwritten == MAX_WRITTEN)
                fail("too many writes");
            written[nwritten].sector = io->sector;
            written[nwritten].sectors = io_sectors(io);
            written[nwritten].seed = io->seed;
            nwritten++;
            printf("write %" PRIu64 " %" PRIu64 " %u\n", io->sector, io_sectors(io), io->seed);
        } else if (io->op == BLKIF_OP_READ) {
            verify_read(io);
        }
    }
}

static struct io full_io(uint8_t op, uint64_t sector, int nseg, uint32_t seed, const char *what) {
    struct io io;
    memset(&io, 0, sizeof io);
    io.op = op;
    io.sector = sector;
    io.nseg = (uint8_t)nseg;
    io.seed = seed;
    io.expect = BLKIF_RSP_OKAY;
    io.what = what;
    for (int k = 0; k < nseg; k++) {
        io.seg[k].first = 0;
        io.seg[k].last = 7;
    }
    return io;
}

/* Read the whole disk back in 11-page requests, 16 at a time, and verify it. */
static void verify_disk(const char *why) {
    struct io ios[BATCH];
    uint64_t sector = 0;
    int requests = 0;
    while (sector < disk_sectors) {
        int n = 0;
        while (n < BATCH && sector < disk_sectors) {
            uint64_t left = disk_sectors - sector;
            int nseg = left >= 88 ? 11 : (int)((left + 7) / 8);
            ios[n] = full_io(BLKIF_OP_READ, sector, nseg, 0, why);
            if (left < 88 && left % 8) /* a short tail: the last segment is partial */
                ios[n].seg[nseg - 1].last = (uint8_t)(left % 8 - 1);
            sector += io_sectors(&ios[n]);
            n++;
        }
        run_batch(ios, n);
        requests += n;
    }
    say("%s: read all %" PRIu64 " sectors back in %d requests, all as expected", why,
        disk_sectors, requests);
}

/* ------------------------------------------------------------------ main */

static uint32_t lcg_state = 12345;
static uint32_t lcg(void) {
    lcg_state = lcg_state * 1103515245u + 12345u;
    return lcg_state >> 16;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: cfront RUN_DIR [DOMID [DEVID]]\n");
        return 2;
    }
    run_dir = argv[1];
    if (argc > 2)
        my_domid = (unsigned)atoi(argv[2]);
    if (argc > 3)
        devid = (unsigned)atoi(argv[3]);
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
    alarm(120);                       /* a last resort: every wait is bounded anyway */
    /* A write to the FIFO of a peer that closed its port fails with EPIPE, and
     * raises SIGPIPE first. */
    signal(SIGPIPE, SIG_IGN);

    /* 1. Act as domain F: its directory, grant table, map track and pool. */
    char path[PATH_MAX];
    path_of(path, sizeof path, "%s/domains/%u/evtchn", run_dir, my_domid);
    mkdir_p(path);
    int gfd = create_fresh("gnttab", (off_t)NR_GRANT_ENTRIES * sizeof(grant_entry_v1_t));
    int mfd = create_fresh("maptrack", (off_t)NR_GRANT_ENTRIES * MAPTRACK_SLOTS * 8);
    pool_fd = create_fresh("pool", 0);
    gnttab = map_file(gfd, NR_GRANT_ENTRIES * sizeof(grant_entry_v1_t));
    maptrack = map_file(mfd, (size_t)NR_GRANT_ENTRIES * MAPTRACK_SLOTS * 8);
    pool_ensure(POOL_PAGES);
    pool = map_file(pool_fd, (size_t)POOL_PAGES * PAGE);
    say("domain %u: gnttab, maptrack and a pool of %d pages under %s/domains/%u", my_domid,
        POOL_PAGES, run_dir, my_domid);

    /* 2. The store; find the device (watching for it), then the backend. */
    xs_connect();
    char fe[256], be[256], key[512], val[512], err[16];
    path_of(fe, sizeof fe, "/local/domain/%u/device/vbd/%u", my_domid, devid);
    /* A watch may be set on a node that does not exist yet: its creation fires it. */
    xs_watch(XS_WATCH, fe, "device");
    say("watching %s", fe);
    {
        int64_t deadline = now_ms() + STEP_MS;
        char ep[XENSTORE_ABS_PATH_MAX + 1], tok[64];
        int events = 0;
        for (;;) {
            path_of(key, sizeof key, "%s/backend-id", fe);
            if (xs_read(0, key, val, sizeof val, err) == 0)
                break;
            if (strcmp(err, "ENOENT") != 0)
                fail("reading %s: %s", key, err);
            if (xs_event(deadline, ep, sizeof ep, tok, sizeof tok) != 0)
                fail("timed out waiting for %s", fe);
            if (strcmp(tok, "device") != 0)
                fail("a watch event with token %s", tok);
            events++;
        }
        say("the device is there (after %d watch event(s))", events);
    }
    xs_watch(XS_UNWATCH, fe, "device");
    unsigned be_id = (unsigned)read_u64(key, 1, 0);
    path_of(key, sizeof key, "%s/backend", fe);
    if (xs_read(0, key, be, sizeof be, err) != 0)
        fail("reading %s: %s", key, err);
    say("device %s: backend %s (domain %u)", fe, be, be_id);

    char be_state[300], fe_state[300];
    path_of(be_state, sizeof be_state, "%s/state", be);
    path_of(fe_state, sizeof fe_state, "%s/state", fe);
    xs_watch(XS_WATCH, be_state, "backend-state");
    wait_state(be_state, 1u << XenbusStateInitWait, "the backend's InitWait");
    path_of(key, sizeof key, "%s/max-ring-page-order", be);
    unsigned max_order = (unsigned)read_u64(key, 0, 0);
    unsigned order = max_order >= 1 ? 1 : 0;
    say("backend is InitWait; max-ring-page-order %u, using order %u", max_order, order);

    /* 3. The ring: grant 1 << order pages, initialise it; an unbound port. */
    memset(frame_ptr(RING_FRAME), 0, (size_t)PAGE << order);
    sring = (blkif_sring_t *)frame_ptr(RING_FRAME);
    SHARED_RING_INIT(sring);
    FRONT_RING_INIT(&front, sring, (size_t)PAGE << order);
    for (unsigned i = 0; i < (1u << order); i++)
        grant(RING_REF + i, RING_FRAME + i, (domid_t)be_id, 0);
    for (int i = 0; i < DATA_PAGES; i++)
        grant(DATA_REF + i, DATA_FRAME + i, (domid_t)be_id, 0);
    alloc_unbound(be_id);
    say("ring: %u page(s), %u entries; event channel port %u", 1u << order,
        RING_SIZE(&front), evt_port);

    /* 4. Publish the ring, the port and the protocol, then Initialised, in one
     * transaction (run again if it conflicts). */
    for (int attempt = 0;; attempt++) {
        char id[32];
        if (xs_req(XS_TRANSACTION_START, 0, "", 1, id, sizeof id, NULL, err) != 0)
            fail("starting a transaction: %s", err);
        uint32_t tx = (uint32_t)strtoul(id, NULL, 10);
        if (order == 0) {
            path_of(key, sizeof key, "%s/ring-ref", fe);
            snprintf(val, sizeof val, "%u", RING_REF);
            xs_write(tx, key, val);
        } else {
            path_of(key, sizeof key, "%s/ring-page-order", fe);
            snprintf(val, sizeof val, "%u", order);
            xs_write(tx, key, val);
            for (unsigned i = 0; i < (1u << order); i++) {
                path_of(key, sizeof key, "%s/ring-ref%u", fe, i);
                snprintf(val, sizeof val, "%u", RING_REF + i);
                xs_write(tx, key, val);
            }
        }
        path_of(key, sizeof key, "%s/event-channel", fe);
        snprintf(val, sizeof val, "%u", evt_port);
        xs_write(tx, key, val);
        path_of(key, sizeof key, "%s/protocol", fe);
        xs_write(tx, key, XEN_IO_PROTO_ABI_X86_64);
        snprintf(val, sizeof val, "%d", XenbusStateInitialised);
        xs_write(tx, fe_state, val);
        char reply[16];
        if (xs_req(XS_TRANSACTION_END, tx, "T", 2, reply, sizeof reply, NULL, err) == 0)
            break;
        if (strcmp(err, "EAGAIN") != 0 || attempt == 10)
            fail("committing the transaction: %s", err);
    }
    say("published ring-ref(s), event-channel, protocol; state Initialised");

    /* 5. Connected. */
    int s = wait_state(be_state,
                       1u << XenbusStateConnected | 1u << XenbusStateClosing |
                           1u << XenbusStateClosed,
                       "the backend's Connected");
    if (s != XenbusStateConnected)
        fail("the backend went to state %d instead of Connected", s);
    path_of(key, sizeof key, "%s/sectors", be);
    disk_sectors = read_u64(key, 1, 0);
    path_of(key, sizeof key, "%s/sector-size", be);
    uint64_t sector_size = read_u64(key, 1, 0);
    path_of(key, sizeof key, "%s/info", be);
    uint64_t info = read_u64(key, 0, 0);
    path_of(key, sizeof key, "%s/feature-flush-cache", be);
    uint64_t flush = read_u64(key, 0, 0);
    snprintf(val, sizeof val, "%d", XenbusStateConnected);
    xs_write(0, fe_state, val);
    say("connected: %" PRIu64 " sectors of %" PRIu64 " bytes, info %" PRIu64
        ", feature-flush-cache %" PRIu64,
        disk_sectors, sector_size, info, flush);
    if (disk_sectors < 8192)
        fail("the disk is too small for this test (%" PRIu64 " sectors)", disk_sectors);
    if (info & VDISK_READONLY)
        fail("the disk is read-only");

    /* 6. I/O. First a read of data nobody wrote (the initial image). */
    {
        struct io r = full_io(BLKIF_OP_READ, 5000, 11, 0, "initial read");
        run_batch(&r, 1);
        say("read 88 sectors of the initial image: as expected");
    }

    /* Writes: 16 in one push, full and sub-page segments, up to 11 each. */
    {
        struct io w[BATCH];
        int n = 0;
        uint32_t seed = 1;
        w[n++] = full_io(BLKIF_OP_WRITE, 0, 11, seed++, "write 11 full pages at 0");
        {
            static const uint8_t fl[11][2] = {{0, 7}, {3, 7}, {0, 0}, {7, 7}, {2, 5}, {0, 7},
                                              {1, 1}, {4, 6}, {0, 3}, {5, 7}, {0, 7}};
            struct io io = full_io(BLKIF_OP_WRITE, 200, 11, seed++, "write 11 sub-page segments");
            for (int k = 0; k < 11; k++) {
                io.seg[k].first = fl[k][0];
                io.seg[k].last = fl[k][1];
            }
            w[n++] = io;
        }
        {
            static const uint8_t fl[5][2] = {{1, 7}, {0, 7}, {0, 2}, {3, 3}, {6, 7}};
            struct io io = full_io(BLKIF_OP_WRITE, 777, 5, seed++, "write at an odd sector");
            for (int k = 0; k < 5; k++) {
                io.seg[k].first = fl[k][0];
                io.seg[k].last = fl[k][1];
            }
            w[n++] = io;
        }
        w[n++] = full_io(BLKIF_OP_WRITE, disk_sectors - 8, 1, seed++, "write the last page");
        for (int i = 0; n < BATCH; i++) {
            int nseg = 1 + i % 11;
            struct io io = full_io(BLKIF_OP_WRITE, 1000 + (uint64_t)i * 150, nseg, seed++,
                                   "write generated segments");
            for (int k = 0; k < nseg; k++) {
                uint8_t a = (uint8_t)(lcg() % 8), b = (uint8_t)(lcg() % 8);
                io.seg[k].first = a < b ? a : b;
                io.seg[k].last = a < b ? b : a;
            }
            w[n++] = io;
        }
        run_batch(w, n);
        uint64_t total = 0;
        for (int i = 0; i < n; i++)
            total += io_sectors(&w[i]);
        say("wrote %d requests (%" PRIu64 " sectors, 1..11 segments, sub-page ones included)",
            n, total);

        /* Read them back with the same segment layouts. */
        for (int i = 0; i < n; i++) {
            w[i].op = BLKIF_OP_READ;
            w[i].what = "read back with the write's layout";
            for (int k = 0; k < BLKIF_MAX_SEGMENTS_PER_REQUEST; k++)
                w[i].seg[k].ref = 0;
        }
        run_batch(w, n);
        say("read the %d writes back with their own segment layouts: as written", n);
    }

    /* A cache flush (no segments). */
    if (flush) {
        struct io f;
        memset(&f, 0, sizeof f);
        f.op = BLKIF_OP_FLUSH_DISKCACHE;
        f.sector = 0;
        f.expect = BLKIF_RSP_OKAY;
        f.what = "flush";
        run_batch(&f, 1);
        say("BLKIF_OP_FLUSH_DISKCACHE: okay");
    } else {
        fail("the backend does not offer feature-flush-cache");
    }

    /* A read-only grant as the source of a write (fine), and as the target of
     * a read (refused: the backend cannot map it writable; the page is kept). */
    {
        uint8_t *ro = frame_ptr(RO_FRAME);
        const uint32_t seed = 100;
        for (unsigned b = 0; b < PAGE; b++)
            ro[b] = pat(3000 * 512 + b, seed);
        grant(RO_REF, RO_FRAME, (domid_t)be_id, 1);
        struct io io[2];
        io[0] = full_io(BLKIF_OP_WRITE, 3000, 2, seed, "write from a read-only grant");
        io[0].seg[0].ref = RO_REF;
        io[0].seg[0].frame = RO_FRAME;
        io[0].seg[1].first = 2; /* and a writable page, sectors 2..5 */
        io[0].seg[1].last = 5;
        io[1] = full_io(BLKIF_OP_READ, 6000, 1, 0, "read into a read-only grant");
        io[1].seg[0].ref = RO_REF;
        io[1].seg[0].frame = RO_FRAME;
        io[1].expect = BLKIF_RSP_ERROR;
        run_batch(io, 2);
        for (unsigned b = 0; b < PAGE; b++)
            if (ro[b] != pat(3000 * 512 + b, seed))
                fail("the read-only granted page changed at byte %u", b);
        say("write from a read-only grant: okay; read into it: BLKIF_RSP_ERROR, page intact");
    }

    /* Requests the backend must refuse, each answered, the ring still working. */
    {
        struct io bad[8];
        int n = 0;
        bad[n] = full_io(BLKIF_OP_WRITE, 4000, 2, 200, "segment with last_sect 8");
        bad[n].seg[1].last = 8;
        bad[n++].expect = BLKIF_RSP_ERROR;
        bad[n] = full_io(BLKIF_OP_WRITE, disk_sectors - 4, 1, 201, "write across the end");
        bad[n++].expect = BLKIF_RSP_ERROR;
        bad[n] = full_io(BLKIF_OP_READ, disk_sectors, 1, 0, "read past the end");
        bad[n++].expect = BLKIF_RSP_ERROR;
        bad[n] = full_io(BLKIF_OP_WRITE, 4100, 1, 202, "segment with first_sect > last_sect");
        bad[n].seg[0].first = 5;
        bad[n].seg[0].last = 2;
        bad[n++].expect = BLKIF_RSP_ERROR;
        bad[n] = full_io(BLKIF_OP_READ, 4200, 1, 0, "read into a never-granted ref");
        bad[n].seg[0].ref = UNGRANTED_REF;
        bad[n].seg[0].frame = POOL_PAGES; /* no page: nothing to check */
        bad[n++].expect = BLKIF_RSP_ERROR;
        bad[n] = full_io(BLKIF_OP_WRITE, 4300, 0, 203, "write with no segment");
        bad[n++].expect = BLKIF_RSP_ERROR;
        bad[n] = full_io(BLKIF_OP_WRITE, 4400, 11, 204, "write with 12 segments");
        bad[n].nseg = 12;
        bad[n++].expect = BLKIF_RSP_ERROR;
        bad[n] = full_io(42, 4500, 1, 0, "unknown operation 42");
        bad[n++].expect = EXPECT_REFUSED;
        run_batch(bad, n);
        say("%d invalid requests (last_sect 8, past the end, ...): each refused", n);
    }

    /* Everything on the disk is what was written, nothing more. */
    verify_disk("full read-back");

    /* 7. Close: Closing, wait for the backend, Closed. */
    snprintf(val, sizeof val, "%d", XenbusStateClosing);
    xs_write(0, fe_state, val);
    wait_state(be_state, 1u << XenbusStateClosing | 1u << XenbusStateClosed,
               "the backend's Closing");
    snprintf(val, sizeof val, "%d", XenbusStateClosed);
    xs_write(0, fe_state, val);
    wait_state(be_state, 1u << XenbusStateClosed | 1u << XenbusStateUnknown,
               "the backend's Closed");
    say("closed (state 5 then 6; the backend is Closed)");

    /* The backend unmapped everything and closed its port: our port is unbound
     * again, and every grant can be revoked. */
    {
        struct port_info pi;
        if (read_info(my_domid, evt_port, &pi) != 0)
            fail("reading our port's info");
        if (pi.bound || pi.remote != be_id || pi.owner != (unsigned)getpid())
            fail("after the backend closed, port %u is not 'unbound %u %d'", evt_port, be_id,
                 (int)getpid());
        int revoked = 0;
        for (uint32_t r = RING_REF; r <= RO_REF; r++) {
            if (r >= RING_REF + (1u << order) && r < DATA_REF)
                continue;
            if (end_foreign_access(r) != 0)
                fail("grant %u is still mapped after the backend closed", r);
            revoked++;
        }
        char p[PATH_MAX];
        path_of(p, sizeof p, "%s/domains/%u/evtchn/%u", run_dir, my_domid, evt_port);
        unlink(p);
        path_of(p, sizeof p, "%s/domains/%u/evtchn/%u.info", run_dir, my_domid, evt_port);
        unlink(p);
        say("port %u unbound again and closed; %d grants revoked", evt_port, revoked);
    }
    say("OK: %d writes verified; %lu notifications sent, %lu wake-ups", nwritten, notifies,
        wakeups);
    return 0;
}
