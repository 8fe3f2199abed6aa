/*
 * loadgen.c: the C load client of `netpoll bench` (our own code).
 *
 * The same measurement as netpoll/bench/client.py's `pingpong` and `connect`
 * modes, with the same JSON result fields and the same semantics, in C, so
 * that the client costs a fraction of what the Python client costs per
 * message and the fast servers are measured instead of the client:
 *
 *   pingpong  C connections (TCP_NODELAY), each sending `size` bytes and
 *             waiting for the whole echo before sending again; counts
 *             messages and samples each message's round trip;
 *   connect   W workers looping connect + one `size`-byte echo + close;
 *             counts cycles, latency is the whole cycle.
 *
 * One thread, one level-triggered epoll set, non-blocking sockets.  Every
 * loop is bounded by a deadline (and counts by MAX_MESSAGES), so it always
 * stops by itself.  CPU readings: its own from CLOCK_PROCESS_CPUTIME_ID and
 * getrusage, the server's from /proc/<pid>/stat, the machine's busy time from
 * /proc/stat, as client.py reads them.
 *
 * Usage: loadgen key=value ...  (mode host port conns size seconds warmup
 * setup_timeout server_pid cpu; server_pid 0 and cpu -1 mean none).  Prints
 * one JSON object on stdout: the result, or {"error": "..."} with status 1.
 *
 * Built by netpoll/bench/loadgen.py with the system C compiler; Linux only
 * (epoll, /proc, sched_setaffinity).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define RESERVOIR (1 << 17)         /* latency samples kept at most */
#define MAX_MESSAGES 500000000L     /* hard cap on counted messages */
#define OPEN_PARALLEL 256           /* connects in flight while opening */
#define MAX_EVENTS 1024
#define MAX_ERRKINDS 32

/* ---- the spec ---------------------------------------------------------- */

static struct {
    const char *mode;
    const char *host;
    int port;
    long conns;
    long size;
    double seconds, warmup, setup_timeout;
    long server_pid; /* 0: none */
    int cpu;         /* -1: no pinning */
} spec = {NULL, "127.0.0.1", 0, 1, 64, 2.0, 0.3, 30.0, 0, -1};

static int pinned; /* sched_setaffinity succeeded */

/* Print {"error": msg} and exit 1 (the client.py contract). */
static void die(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fputs("{\"error\": \"", stdout);
    for (const char *p = msg; *p; p++) {
        if (*p == '"' || *p == '\\')
            putchar('\\');
        putchar((unsigned char)*p < 0x20 ? ' ' : *p);
    }
    fputs("\"}\n", stdout);
    fflush(stdout);
    exit(1);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double num_arg(const char *key, const char *text) {
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end)
        die("loadgen: %s=%s is not a number", key, text);
    return v;
}

static void parse_args(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq)
            die("loadgen: argument %s is not key=value", argv[i]);
        *eq = '\0';
        const char *k = argv[i], *v = eq + 1;
        if (!strcmp(k, "mode"))
            spec.mode = v;
        else if (!strcmp(k, "host"))
            spec.host = v;
        else if (!strcmp(k, "port"))
            spec.port = (int)num_arg(k, v);
        else if (!strcmp(k, "conns"))
            spec.conns = (long)num_arg(k, v);
        else if (!strcmp(k, "size"))
            spec.size = (long)num_arg(k, v);
        else if (!strcmp(k, "seconds"))
            spec.seconds = num_arg(k, v);
        else if (!strcmp(k, "warmup"))
            spec.warmup = num_arg(k, v);
        else if (!strcmp(k, "setup_timeout"))
            spec.setup_timeout = num_arg(k, v);
        else if (!strcmp(k, "server_pid"))
            spec.server_pid = (long)num_arg(k, v);
        else if (!strcmp(k, "cpu"))
            spec.cpu = (int)num_arg(k, v);
        else
            die("loadgen: unknown argument %s", k);
    }
    if (!spec.mode || (strcmp(spec.mode, "pingpong") && strcmp(spec.mode, "connect")))
        die("loadgen: mode must be pingpong or connect");
    if (spec.port <= 0 || spec.port > 65535)
        die("loadgen: port %d out of range", spec.port);
    if (spec.conns <= 0 || spec.conns > 10000000)
        die("loadgen: conns %ld out of range", spec.conns);
    if (spec.size <= 0 || spec.size > (1L << 30))
        die("loadgen: size %ld out of range", spec.size);
}

/* ---- latency samples: every stride-th kept, halved when full ----------- */

static double *samples;
static long nsamples, stride = 1, skip;

static void sample_add(double v) {
    if (++skip < stride)
        return;
    skip = 0;
    samples[nsamples++] = v;
    if (nsamples >= RESERVOIR) {
        for (long i = 0; 2 * i < nsamples; i++)
            samples[i] = samples[2 * i];
        nsamples = (nsamples + 1) / 2;
        stride *= 2;
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* data[round(p / 100 * last)], rounding half to even as Python's round(). */
static double percentile(double p) {
    long last = nsamples - 1;
    double x = p / 100.0 * (double)last;
    long fl = (long)x;
    double frac = x - (double)fl;
    long idx = frac > 0.5 ? fl + 1 : frac < 0.5 ? fl : fl + (fl & 1);
    return samples[idx > last ? last : idx];
}

/* ---- CPU readings (client.py's _Window) -------------------------------- */

static double proc_cpu_seconds(long pid) {
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    /* The command name may hold spaces and ')': fields after the last ')'. */
    char *p = strrchr(text, ')');
    if (!p)
        return -1;
    unsigned long long ut, st;
    if (sscanf(p + 2, "%*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* user+nice+system+irq+softirq+steal of all CPUs, seconds; -1 if unknown. */
static double busy_seconds(void) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    unsigned long long v[8];
    int got = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                     &v[3], &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (got != 8)
        return -1;
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

static double process_cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct snap {
    double t, cpu, user, sys, busy, scpu;
};

static void snapshot(struct snap *s, int at_end) {
    struct rusage ru;
    if (at_end)
        s->t = now();
    s->busy = busy_seconds();
    s->cpu = process_cpu();
    getrusage(RUSAGE_SELF, &ru);
    s->user = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6;
    s->sys = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
    s->scpu = spec.server_pid > 0 ? proc_cpu_seconds(spec.server_pid) : -1;
    if (!at_end)
        s->t = now();
}

static void json_num(const char *key, double v, int valid) {
    if (valid)
        printf("\"%s\": %.17g, ", key, v);
    else
        printf("\"%s\": null, ", key);
}

/* The window's report, count, rate, percentiles; `extra` closes the object. */
static void report(const struct snap *a, const struct snap *b, long count, const char *unit,
                   const char *extra) {
    double wall = b->t - a->t;
    if (wall < 1e-9)
        wall = 1e-9;
    /* Server CPU comes in 10 ms clock ticks: too coarse below half a second. */
    int long_enough = wall >= 0.5;
    int have_server = long_enough && a->scpu >= 0 && b->scpu >= 0;
    int have_busy = long_enough && a->busy >= 0 && b->busy >= 0;
    double server = 100.0 * (b->scpu - a->scpu) / wall;
    double client = 100.0 * (b->cpu - a->cpu) / wall;
    double other = 100.0 * (b->busy - a->busy) / wall - server - client;
    putchar('{');
    json_num("wall", wall, 1);
    json_num("other_cpu_pct", other > 0 ? other : 0.0, have_server && have_busy);
    json_num("client_cpu_pct", client, 1);
    json_num("client_user_pct", 100.0 * (b->user - a->user) / wall, 1);
    json_num("client_sys_pct", 100.0 * (b->sys - a->sys) / wall, 1);
    json_num("server_cpu_pct", server, have_server);
    printf("\"count\": %ld, ", count);
    json_num("rate", (double)count / wall, 1);
    printf("\"unit\": \"%s\", ", unit);
    if (nsamples)
        qsort(samples, (size_t)nsamples, sizeof *samples, cmp_double);
    json_num("p50", nsamples ? percentile(50) : 0, nsamples > 0);
    json_num("p99", nsamples ? percentile(99) : 0, nsamples > 0);
    printf("\"samples\": %ld, %s, \"client_pinned\": %s}\n", nsamples, extra,
           spec.cpu >= 0 && pinned ? "true" : "false");
}

/* ---- sockets ----------------------------------------------------------- */

static struct sockaddr_in addr;
static int ep = -1;
static char *msg, *buf;
static long bufsize;

/* Per-fd state, indexed by fd and grown on demand. */
struct conn {
    int live;
    int phase;       /* 0: connecting, 1: echo sent (waiting for it) */
    long got;        /* echo bytes received so far */
    long unsent;     /* pingpong: bytes of the message still to send */
    double t;        /* send time (pingpong) or cycle start (connect) */
};
static struct conn *conns;
static long nconns;

static struct conn *conn_at(int fd) {
    if (fd >= nconns) {
        long n = nconns ? nconns : 1024;
        while (n <= fd)
            n *= 2;
        struct conn *c = realloc(conns, (size_t)n * sizeof *c);
        if (!c)
            die("loadgen: out of memory");
        memset(c + nconns, 0, (size_t)(n - nconns) * sizeof *c);
        conns = c;
        nconns = n;
    }
    return &conns[fd];
}

static void ep_ctl(int op, int fd, unsigned events) {
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(ep, op, fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
}

/* Start a non-blocking connect; the fd, or -errno when it failed at once. */
static int start_connect(int nodelay) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (nodelay) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS &&
        errno != EWOULDBLOCK) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

static int sock_error(int fd) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return errno;
    return err;
}

/* Open spec.conns connections, each after one echo of min(size, 4096) B.
 * At most OPEN_PARALLEL in progress (the listen backlog never overflows). */
/* recv into buf: the byte count, or 0 when nothing is there yet; an error,
 * or EOF (which neither mode expects here), ends the run. */
static ssize_t recv_some(int fd, const char *during) {
    ssize_t k = recv(fd, buf, (size_t)bufsize, 0);
    if (k < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return 0;
        die("recv: %s", strerror(errno));
    }
    if (k == 0)
        die("server closed a connection %s", during);
    return k;
}

static int *open_connections(long count, double deadline) {
    int *done = malloc((size_t)count * sizeof *done);
    struct epoll_event evs[MAX_EVENTS];
    long echo = spec.size < 4096 ? spec.size : 4096;
    long ndone = 0, started = 0, pending = 0;
    if (!done)
        die("loadgen: out of memory");
    while (ndone < count) {
        while (started < count && pending < OPEN_PARALLEL) {
            int fd = start_connect(1);
            if (fd < 0)
                die("connect %s:%d: %s", spec.host, spec.port, strerror(-fd));
            struct conn *c = conn_at(fd);
            memset(c, 0, sizeof *c);
            c->live = 1;
            ep_ctl(EPOLL_CTL_ADD, fd, EPOLLOUT);
            started++;
            pending++;
        }
        if (now() > deadline)
            die("timed out opening connections (%ld of %ld open)", ndone, count);
        int n = epoll_wait(ep, evs, MAX_EVENTS, 100);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            struct conn *c = &conns[fd];
            if (c->phase == 0) {
                int err = sock_error(fd);
                if (err)
                    die("connect: %s", strerror(err));
                if (send(fd, msg, (size_t)echo, MSG_NOSIGNAL) < 0 && errno != EAGAIN)
                    die("send: %s", strerror(errno));
                c->phase = 1;
                ep_ctl(EPOLL_CTL_MOD, fd, EPOLLIN);
                continue;
            }
            ssize_t k = recv_some(fd, "while opening");
            if (k == 0)
                continue;
            c->got += k;
            if (c->got >= echo) {
                ep_ctl(EPOLL_CTL_DEL, fd, 0);
                c->got = 0;
                done[ndone++] = fd;
                pending--;
            }
        }
    }
    return done;
}

/* Send what is left of conn fd's message; -1 on a socket error. */
static int send_rest(int fd, struct conn *c) {
    ssize_t k = send(fd, msg + (spec.size - c->unsent), (size_t)c->unsent, MSG_NOSIGNAL);
    if (k < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    c->unsent -= k;
    return 0;
}

/* The warm-up, then the measured window: both modes step it once per poll. */
struct window {
    int measuring;
    double phase_end, end;
    struct snap a, b;
};

static void window_start(struct window *w) {
    memset(w, 0, sizeof *w);
    w->phase_end = now() + spec.warmup;
    w->end = w->phase_end + spec.seconds;
}

/* One epoll_wait of at most 50 ms: the number of events, or -1 once the
 * measured window is over (its end snapshot taken).  Entering the window
 * resets the count and the latency samples. */
static int window_wait(struct window *w, struct epoll_event *evs, long *count) {
    int n = epoll_wait(ep, evs, MAX_EVENTS, 50);
    if (n < 0) {
        if (errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        n = 0;
    }
    if (now() >= w->phase_end) {
        if (w->measuring) {
            snapshot(&w->b, 1);
            return -1;
        }
        w->measuring = 1;
        *count = 0;
        nsamples = 0;
        stride = 1;
        skip = 0;
        snapshot(&w->a, 0);
        w->phase_end = w->end;
    }
    return n;
}

static void run_pingpong(void) {
    int *fds = open_connections(spec.conns, now() + spec.setup_timeout);
    struct epoll_event evs[MAX_EVENTS];
    struct window w;
    long count = 0, short_sends = 0;
    for (long i = 0; i < spec.conns; i++)
        ep_ctl(EPOLL_CTL_ADD, fds[i], EPOLLIN);
    window_start(&w);
    for (long i = 0; i < spec.conns; i++) {
        struct conn *c = &conns[fds[i]];
        c->t = now();
        c->unsent = spec.size;
        if (send_rest(fds[i], c) < 0)
            die("send: %s", strerror(errno));
        if (c->unsent)
            ep_ctl(EPOLL_CTL_MOD, fds[i], EPOLLIN | EPOLLOUT);
    }
    for (;;) {
        int n = window_wait(&w, evs, &count);
        if (n < 0)
            break;
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            unsigned ev = evs[i].events;
            struct conn *c = &conns[fd];
            if (ev & EPOLLOUT) { /* rare: the rest of a message that did not fit */
                if (send_rest(fd, c) < 0)
                    die("send: %s", strerror(errno));
                if (!c->unsent)
                    ep_ctl(EPOLL_CTL_MOD, fd, EPOLLIN);
                if (!(ev & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                    continue;
            }
            ssize_t k = recv_some(fd, "during ping-pong");
            if (k == 0)
                continue;
            c->got += k;
            if (c->got < spec.size)
                continue;
            c->got = 0;
            double t2 = now();
            if (w.measuring) {
                count++;
                sample_add(t2 - c->t);
            }
            c->t = t2;
            c->unsent = spec.size;
            if (send_rest(fd, c) < 0)
                die("send: %s", strerror(errno));
            if (c->unsent) { /* never for small messages; stay correct for big ones */
                short_sends++;
                ep_ctl(EPOLL_CTL_MOD, fd, EPOLLIN | EPOLLOUT);
            }
        }
        if (count >= MAX_MESSAGES) {
            snapshot(&w.b, 1);
            break;
        }
    }
    for (long i = 0; i < spec.conns; i++)
        close(fds[i]);
    free(fds);
    char extra[64];
    snprintf(extra, sizeof extra, "\"short_sends\": %ld", short_sends);
    report(&w.a, &w.b, count, "msg/s", extra);
}

/* Connection errors by name, as client.py's errors dict (errno names). */
static struct {
    char name[24];
    long n;
} errkinds[MAX_ERRKINDS];
static int nerrkinds;
static long nerrors;

static const char *errno_name(int err) {
    switch (err) {
    case ECONNREFUSED: return "ECONNREFUSED";
    case ECONNRESET: return "ECONNRESET";
    case ECONNABORTED: return "ECONNABORTED";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    case EADDRINUSE: return "EADDRINUSE";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case ENOBUFS: return "ENOBUFS";
    case EPIPE: return "EPIPE";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case ENETUNREACH: return "ENETUNREACH";
    default: return NULL;
    }
}

static void count_error(const char *name, int err) {
    char numbuf[24];
    if (!name) {
        name = errno_name(err);
        if (!name) {
            snprintf(numbuf, sizeof numbuf, "%d", err);
            name = numbuf;
        }
    }
    nerrors++;
    for (int i = 0; i < nerrkinds; i++)
        if (!strcmp(errkinds[i].name, name)) {
            errkinds[i].n++;
            return;
        }
    if (nerrkinds < MAX_ERRKINDS) {
        snprintf(errkinds[nerrkinds].name, sizeof errkinds[0].name, "%s", name);
        errkinds[nerrkinds++].n = 1;
    }
}

static void errors_json(char *out, size_t len) {
    size_t used = (size_t)snprintf(out, len, "{");
    for (int i = 0; i < nerrkinds && used < len; i++)
        used += (size_t)snprintf(out + used, len - used, "%s\"%s\": %ld", i ? ", " : "",
                                 errkinds[i].name, errkinds[i].n);
    if (used < len)
        snprintf(out + used, len - used, "}");
}

static long nlive;

static void conn_drop(int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    conns[fd].live = 0;
    nlive--;
}

/* One worker's next cycle; 0 if the connect failed at once. */
static int start_one(void) {
    double t = now();
    int fd = start_connect(0);
    if (fd < 0) {
        count_error(NULL, -fd);
        return 0;
    }
    struct conn *c = conn_at(fd);
    memset(c, 0, sizeof *c);
    c->live = 1;
    c->t = t;
    nlive++;
    ep_ctl(EPOLL_CTL_ADD, fd, EPOLLOUT);
    return 1;
}

static void run_connect(void) {
    struct epoll_event evs[MAX_EVENTS];
    struct window w;
    long count = 0;
    window_start(&w);
    char errs[1024];
    for (long i = 0; i < spec.conns; i++)
        start_one();
    for (;;) {
        int n = window_wait(&w, evs, &count);
        if (n < 0)
            break;
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            struct conn *c = &conns[fd];
            if (!c->live)
                continue;
            if (c->phase == 0) {
                int err = sock_error(fd);
                if (err) {
                    conn_drop(fd);
                    count_error(NULL, err);
                    continue;
                }
                send(fd, msg, (size_t)spec.size, MSG_NOSIGNAL); /* as client.py: unchecked */
                c->phase = 1;
                ep_ctl(EPOLL_CTL_MOD, fd, EPOLLIN);
                continue;
            }
            ssize_t k = recv(fd, buf, (size_t)bufsize, 0);
            if (k < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    continue;
                int err = errno;
                conn_drop(fd);
                count_error(errno_name(err) ? NULL : "recv", err);
                continue;
            }
            if (k == 0) {
                conn_drop(fd);
                count_error("EOF", 0);
                continue;
            }
            c->got += k;
            if (c->got < spec.size)
                continue;
            double t0 = c->t;
            conn_drop(fd);
            if (w.measuring) {
                count++;
                sample_add(now() - t0);
            }
        }
        while (nlive < spec.conns && count < MAX_MESSAGES) {
            if (!start_one()) { /* connect failed at once: do not spin */
                usleep(1000);
                break;
            }
        }
        if (nerrors > 1000 + count) {
            errors_json(errs, sizeof errs);
            die("too many connection errors: %s", errs);
        }
    }
    for (long fd = 0; fd < nconns; fd++)
        if (conns[fd].live)
            close((int)fd);
    char extra[1100];
    errors_json(errs, sizeof errs);
    snprintf(extra, sizeof extra, "\"errors\": %s", errs);
    report(&w.a, &w.b, count, "conn/s", extra);
}

int main(int argc, char **argv) {
    signal(SIGINT, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    parse_args(argc, argv);
    /* The soft open-file limit up to the hard one (10k+ connections). */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (spec.cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(spec.cpu, &set);
        pinned = sched_setaffinity(0, sizeof set, &set) == 0;
    }
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)spec.port);
    if (inet_pton(AF_INET, spec.host, &addr.sin_addr) != 1)
        die("loadgen: host %s is not an IPv4 address", spec.host);
    bufsize = spec.size > 65536 ? spec.size : 65536;
    msg = malloc((size_t)spec.size);
    buf = malloc((size_t)bufsize);
    samples = malloc(RESERVOIR * sizeof *samples);
    if (!msg || !buf || !samples)
        die("loadgen: out of memory");
    memset(msg, 'x', (size_t)spec.size);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1: %s", strerror(errno));
    if (!strcmp(spec.mode, "pingpong"))
        run_pingpong();
    else
        run_connect();
    fflush(stdout);
    return 0;
}
