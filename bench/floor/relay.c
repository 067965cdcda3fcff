/*
 * floor-relay: the shape's floor, a column of `make bench` (bench/bench.py, bench/README.md).
 *
 * What it is: the leanest TCP relay we can write in tcp-router's exact shape, so that every
 * benchmark run shows, beside tcp-router and the peers, what that shape costs at the least:
 * a blocking, thread-per-connection forwarder with two copy threads per connection. It is a
 * measuring stick, not a product: one listener on 127.0.0.1, one upstream given as an IPv4
 * literal, no configuration, no timeouts, no routing, no graceful stop (SIGTERM ends it).
 *
 *     floor-relay [--log] [--sched batch|inherit] LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT
 *
 * The shape, and why each choice:
 *
 * - The main thread blocks in accept(2). tcp-router polls its listeners first (it has several);
 *   with one listener a blocking accept is the least a connection can cost there.
 * - A pool of threads reused newest-first (LIFO): the thread that went idle last is the one
 *   whose stack, task struct and cache lines are still warm. Each idle thread waits on a futex
 *   word of its own, so a hand-off wakes exactly that thread (one FUTEX_WAKE, no thundering
 *   herd, no shared channel); the idle stack is guarded by one mutex, uncontended in practice
 *   and then never a system call.
 * - Two blocking copy threads per connection, one per direction. The main thread claims both
 *   threads of a connection at accept: it wakes the first with the client socket, and hands it
 *   the second, still parked. The first connects upstream (so a slow upstream never holds up
 *   accept), then wakes the second with the pair and copies client -> upstream itself; the
 *   second copies upstream -> client. Three threads are crossed per connection, as in
 *   tcp-router. The main thread creates any thread the pool lacks, so pthread_create's deep
 *   frames (and glibc's calloc of the new thread's TLS vector) run on the main thread's stack
 *   and heap, never on a copy thread's.
 * - End of stream from A: shutdown(B, SHUT_WR) (half-close), and the other direction goes on.
 *   A reset or error: both sockets are reset at once with connect(AF_UNSPEC), which sends the
 *   RST now and wakes the thread blocked on the other socket (what SO_LINGER 0 + close(2)
 *   would do, without closing a descriptor another thread is blocked on: that thread's fd could
 *   be reused by the next accept). SO_LINGER {1, 0} is set too, so the final close of a reset
 *   socket never lingers. A read of 0 bytes on a socket that has no peer any more (getpeername
 *   says ENOTCONN) before any half-close is the reset the writing thread took (Linux hands a
 *   received RST to one system call), and is passed on as a reset, as tcp-router does.
 *   When both directions have ended, the one that ends second closes both sockets.
 * - 64 KiB thread stacks (pthread_attr_setstacksize): the copy loop is shallow, and only
 *   touched pages cost memory; the size bounds the address space (and VMA cost), not RSS.
 * - One 16 KiB buffer per thread, never touched while the connection is idle. An idle
 *   connection still carried a request and its answer (the bench's idle case sends PING and
 *   waits for +PONG before it measures), so "never touched" must hold after small messages
 *   too: reads go first into a landing area on the copy thread's stack, in the stack page its
 *   frames already touch (the bytes between the frame and the bottom of that page, less a
 *   reserve for the system-call wrappers called below it). Only a read that fills the landing
 *   area (bulk) switches the thread to its 16 KiB buffer, mmap'd then and kept for the
 *   thread's life (reused by every later connection on that thread). So an idle thread
 *   touches its top stack page(s) (glibc's thread block, static TLS, start_thread's frame and
 *   ours) and nothing else: no buffer page, no heap (no malloc on a copy thread at all, so no
 *   glibc arena or tcache is ever attached to one). Per-connection state sits in an array
 *   indexed by the client's descriptor, allocated once (calloc, touched lazily).
 * - TCP_NODELAY on both sockets: set once on the listener (Linux copies it to every accepted
 *   socket, as tcp-router relies on) and on each upstream socket. No keepalive (tcp-router sets
 *   it once per upstream socket: three system calls this does not make).
 * - SCHED_BATCH by default, as tcp-router's default `--scheduler batch`: without it the
 *   comparison would measure the scheduling policy, not the shape. `--sched inherit` leaves it.
 * - No logging per connection by default. `--log` writes one line per connection to stderr
 *   when it closes, in tcp-router's format (`closed #N client=... listener=... upstream=...
 *   sent=... received=... duration=...`), formatted by hand into a stack buffer and written
 *   with one write(2), so it can be compared with tcp-router at `--log-level info` and `off`.
 *
 * Build: cc -O2 -pthread -o floor-relay relay.c (bench.py does this into its work directory).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define STACK_SIZE (64 * 1024)
#define BIG_BUFFER (16 * 1024)
#define PAGE 4096
/* Stack kept free below the landing area for the wrappers the copy loop calls (recv, send,
 * shutdown, getpeername, connect, close, the futex wait, the mutex): glibc's need well under
 * 256 bytes; 512 leaves a margin. With --log, 512 more for log_line's frame. */
#define CALL_RESERVE 512
/* The landing area is never smaller than this; if the frame leaves less room in its page, the
 * area reaches into the next page down (one more page per thread, and the figure shows it). */
#define MIN_LANDING 256

struct worker {
    _Atomic uint32_t state; /* futex word: 0 = parked (or about to), 1 = has a job */
    int kind;               /* JOB_CLIENT or JOB_COPY */
    int client;             /* the connection's client socket (its index in conns[]) */
    int upstream;
    struct worker *peer;    /* JOB_CLIENT: the parked thread that will copy the other way */
    struct worker *next;    /* in the idle stack */
    char *big;              /* the 16 KiB buffer, mapped on first bulk read */
};

enum { JOB_CLIENT = 1, JOB_COPY = 2 };

struct conn {
    _Atomic int ended;       /* directions ended; the one that makes it 2 closes the sockets */
    _Atomic int stopped;     /* a reset or error has reset both sockets */
    _Atomic int half_closed; /* one direction has passed on an end of stream */
    int upstream;
    /* for --log only */
    uint64_t id;
    uint64_t bytes[2];       /* client->upstream, upstream->client */
    int end[2];
    int first;               /* the direction that ended first */
    struct timespec started;
    struct sockaddr_in peer;
};

enum { END_EOF = 0, END_RESET = 1, END_ERROR = 2 };

static struct conn *conns;
static size_t max_conns;
static struct worker *idle_top;
static pthread_mutex_t idle_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_attr_t thread_attr;
static struct sockaddr_in upstream_addr, listen_addr;
static int log_lines;
static uint64_t next_id;

static void futex_wait(_Atomic uint32_t *word, uint32_t value)
{
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void *worker_main(void *arg);

/* The most recently idle worker, or a new one (parked, state 0); NULL if none can be made.
 * Called by the main thread only, so thread creation never runs on a copy thread. */
static struct worker *claim_worker(void)
{
    pthread_mutex_lock(&idle_lock);
    struct worker *w = idle_top;
    if (w)
        idle_top = w->next;
    pthread_mutex_unlock(&idle_lock);
    if (w)
        return w;
    w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    pthread_t t;
    if (pthread_create(&t, &thread_attr, worker_main, w) != 0) {
        free(w);
        return NULL;
    }
    return w;
}

static void park(struct worker *w)
{
    pthread_mutex_lock(&idle_lock);
    w->next = idle_top;
    idle_top = w;
    pthread_mutex_unlock(&idle_lock);
}

static void hand_off(struct worker *w)
{
    atomic_store_explicit(&w->state, 1, memory_order_release);
    futex_wake(&w->state);
}

/* Resets a socket now (RST to its peer) and wakes any thread blocked on it. */
static void reset_socket(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    struct sockaddr sa = {.sa_family = AF_UNSPEC};
    connect(fd, &sa, sizeof sa);
}

/* ---- the log line (--log only), formatted by hand: no printf frames on a copy thread ---- */

static char *put_str(char *p, const char *s)
{
    while (*s)
        *p++ = *s++;
    return p;
}

static char *put_u64(char *p, uint64_t v, int min_digits)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v || n < min_digits);
    while (n)
        *p++ = tmp[--n];
    return p;
}

static char *put_addr(char *p, const struct sockaddr_in *a)
{
    uint32_t ip = ntohl(a->sin_addr.s_addr);
    for (int i = 3; i >= 0; i--) {
        p = put_u64(p, (ip >> (8 * i)) & 0xff, 1);
        *p++ = i ? '.' : ':';
    }
    return put_u64(p, ntohs(a->sin_port), 1);
}

static const char *end_name(int end)
{
    return end == END_EOF ? "eof" : end == END_RESET ? "reset" : "error";
}

static void log_line(const struct conn *c)
{
    char line[320];
    char *p = line;
    struct timespec now, wall;
    clock_gettime(CLOCK_MONOTONIC, &now);
    clock_gettime(CLOCK_REALTIME, &wall);
    /* RFC 3339 UTC timestamp, civil date from days since the epoch (Howard Hinnant's). */
    int64_t secs = wall.tv_sec, days = secs / 86400, sod = secs % 86400;
    int64_t z = days + 719468, era = z / 146097, doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = yoe + era * 400 + (m <= 2);
    p = put_u64(p, (uint64_t)y, 4);
    *p++ = '-';
    p = put_u64(p, (uint64_t)m, 2);
    *p++ = '-';
    p = put_u64(p, (uint64_t)d, 2);
    *p++ = 'T';
    p = put_u64(p, (uint64_t)(sod / 3600), 2);
    *p++ = ':';
    p = put_u64(p, (uint64_t)(sod / 60 % 60), 2);
    *p++ = ':';
    p = put_u64(p, (uint64_t)(sod % 60), 2);
    p = put_str(p, "Z [INFO] closed #");
    p = put_u64(p, c->id, 1);
    p = put_str(p, " client=");
    p = put_addr(p, &c->peer);
    p = put_str(p, " listener=");
    p = put_addr(p, &listen_addr);
    p = put_str(p, " upstream=");
    p = put_addr(p, &upstream_addr);
    p = put_str(p, " sent=");
    p = put_u64(p, c->bytes[0], 1);
    p = put_str(p, " received=");
    p = put_u64(p, c->bytes[1], 1);
    int64_t us = (now.tv_sec - c->started.tv_sec) * 1000000 + (now.tv_nsec - c->started.tv_nsec) / 1000;
    uint64_t ms = (uint64_t)(us + 500) / 1000;
    p = put_str(p, " duration=");
    p = put_u64(p, ms / 1000, 1);
    *p++ = '.';
    p = put_u64(p, ms % 1000, 3);
    p = put_str(p, "s first=");
    p = put_str(p, c->first == 0 ? "client" : "upstream");
    p = put_str(p, " client_to_upstream=");
    p = put_str(p, end_name(c->end[0]));
    p = put_str(p, " upstream_to_client=");
    p = put_str(p, end_name(c->end[1]));
    *p++ = '\n';
    ssize_t r = write(2, line, (size_t)(p - line));
    (void)r;
}

/* ---- the copy loop ---- */

static int send_all(int fd, const char *buf, size_t n)
{
    while (n) {
        ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One direction, src -> dst, until it ends; then the half-close or reset rules. The second
 * direction to end closes both sockets. `dir` 0 is client -> upstream. Never inlined into its
 * caller, so the landing area is sized from this frame's own position. */
static __attribute__((noinline)) void copy(struct worker *w, struct conn *c, int src, int dst, int dir)
{
    /* The landing area: the rest of the stack page this frame already touches. */
    uintptr_t here = (uintptr_t)__builtin_frame_address(0);
    size_t room = here % PAGE;
    size_t reserve = CALL_RESERVE + 128 + (log_lines ? 512 : 0); /* 128: this frame's own */
    size_t land = room > reserve + MIN_LANDING ? room - reserve : MIN_LANDING;
    char *buf = __builtin_alloca(land);
    size_t cap = land;
    uint64_t bytes = 0;
    int end = END_EOF;

    for (;;) {
        ssize_t n = recv(src, buf, cap, 0);
        if (n > 0) {
            if (send_all(dst, buf, (size_t)n) < 0) {
                end = (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN) ? END_RESET : END_ERROR;
                break;
            }
            bytes += (uint64_t)n;
            if ((size_t)n == cap && cap < BIG_BUFFER) {
                /* The landing area filled: bulk. From now on the thread's 16 KiB buffer. */
                if (!w->big) {
                    void *m = mmap(NULL, BIG_BUFFER, PROT_READ | PROT_WRITE,
                                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                    if (m != MAP_FAILED)
                        w->big = m;
                }
                if (w->big) {
                    buf = w->big;
                    cap = BIG_BUFFER;
                }
            }
            continue;
        }
        if (n == 0) {
            struct sockaddr_in sa;
            socklen_t len = sizeof sa;
            if (!atomic_load(&c->half_closed) && getpeername(src, (struct sockaddr *)&sa, &len) < 0 &&
                errno == ENOTCONN)
                end = END_RESET; /* the reset the other thread's write took */
            break;
        }
        if (errno == EINTR)
            continue;
        end = (errno == ECONNRESET || errno == EPIPE || errno == ENOTCONN) ? END_RESET : END_ERROR;
        break;
    }

    if (atomic_load(&c->stopped)) {
        /* the other direction failed and reset both sockets: nothing to pass on */
    } else if (end == END_EOF) {
        atomic_store(&c->half_closed, 1);
        shutdown(dst, SHUT_WR);
    } else {
        int expected = 0;
        if (atomic_compare_exchange_strong(&c->stopped, &expected, 1)) {
            reset_socket(dst);
            reset_socket(src);
        }
    }
    if (log_lines) {
        c->bytes[dir] = bytes;
        c->end[dir] = end;
    }
    if (atomic_fetch_add(&c->ended, 1) == 1) {
        if (log_lines) {
            c->first = 1 - dir; /* this one ended second */
            log_line(c);
        }
        close(c->upstream);
        close(w->client);
    }
}

/* The first thread of a connection: connect upstream, wake the second, copy client -> upstream. */
static void serve_client(struct worker *w)
{
    struct conn *c = &conns[w->client];
    struct worker *peer = w->peer;
    int up = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (up < 0 || (setsockopt(up, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one),
                   connect(up, (struct sockaddr *)&upstream_addr, sizeof upstream_addr)) < 0) {
        if (up >= 0)
            close(up);
        reset_socket(w->client);
        close(w->client);
        park(peer); /* still parked (state 0): back to the idle stack, never woken */
        return;
    }
    c->upstream = up;
    peer->kind = JOB_COPY;
    peer->client = w->client;
    peer->upstream = up;
    hand_off(peer);
    copy(w, c, w->client, up, 0);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (;;) {
        while (atomic_load_explicit(&w->state, memory_order_acquire) == 0)
            futex_wait(&w->state, 0);
        if (w->kind == JOB_CLIENT)
            serve_client(w);
        else
            copy(w, &conns[w->client], w->upstream, w->client, 1);
        atomic_store_explicit(&w->state, 0, memory_order_relaxed);
        park(w);
    }
    return NULL;
}

static int parse_port(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    return (*s && !*end && v > 0 && v < 65536) ? (int)v : -1;
}

static void usage(void)
{
    fprintf(stderr, "usage: floor-relay [--log] [--sched batch|inherit] LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT\n"
                    "  listens on 127.0.0.1:LISTEN_PORT; UPSTREAM_HOST is an IPv4 address\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int batch = 1, i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1] == '-'; i++) {
        if (!strcmp(argv[i], "--log"))
            log_lines = 1;
        else if (!strcmp(argv[i], "--sched") && i + 1 < argc) {
            i++;
            if (!strcmp(argv[i], "batch"))
                batch = 1;
            else if (!strcmp(argv[i], "inherit"))
                batch = 0;
            else
                usage();
        } else
            usage();
    }
    if (argc - i != 3)
        usage();
    int lport = parse_port(argv[i]), uport = parse_port(argv[i + 2]);
    listen_addr.sin_family = upstream_addr.sin_family = AF_INET;
    if (lport < 0 || uport < 0 || inet_pton(AF_INET, argv[i + 1], &upstream_addr.sin_addr) != 1)
        usage();
    listen_addr.sin_port = htons((uint16_t)lport);
    listen_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    upstream_addr.sin_port = htons((uint16_t)uport);

    signal(SIGPIPE, SIG_IGN);
    if (batch) {
        struct sched_param sp = {0};
        if (sched_setscheduler(0, SCHED_BATCH, &sp) != 0)
            perror("floor-relay: SCHED_BATCH (going on without)");
    }
    struct rlimit rl;
    max_conns = (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) ? rl.rlim_cur : 65536;
    if (max_conns > (1u << 22))
        max_conns = 1u << 22;
    conns = calloc(max_conns, sizeof *conns);
    if (!conns) {
        perror("floor-relay: calloc");
        return 1;
    }
    pthread_attr_init(&thread_attr);
    pthread_attr_setstacksize(&thread_attr, STACK_SIZE);
    pthread_attr_setdetachstate(&thread_attr, PTHREAD_CREATE_DETACHED);

    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (ls < 0 || setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        setsockopt(ls, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ||
        bind(ls, (struct sockaddr *)&listen_addr, sizeof listen_addr) < 0 || listen(ls, 4096) < 0) {
        perror("floor-relay: listen");
        return 1;
    }

    for (;;) {
        struct sockaddr_in peer;
        socklen_t plen = sizeof peer;
        int fd = accept4(ls, log_lines ? (struct sockaddr *)&peer : NULL, log_lines ? &plen : NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                usleep(10000); /* out of descriptors or memory: let connections close */
            continue;
        }
        if ((size_t)fd >= max_conns) {
            reset_socket(fd);
            close(fd);
            continue;
        }
        struct worker *a = claim_worker();
        struct worker *b = a ? claim_worker() : NULL;
        if (!b) {
            if (a)
                park(a);
            reset_socket(fd);
            close(fd);
            continue;
        }
        struct conn *c = &conns[fd];
        atomic_store_explicit(&c->ended, 0, memory_order_relaxed);
        atomic_store_explicit(&c->stopped, 0, memory_order_relaxed);
        atomic_store_explicit(&c->half_closed, 0, memory_order_relaxed);
        if (log_lines) {
            c->id = ++next_id;
            c->peer = peer;
            clock_gettime(CLOCK_MONOTONIC, &c->started);
        }
        a->kind = JOB_CLIENT;
        a->client = fd;
        a->peer = b;
        hand_off(a);
    }
}
