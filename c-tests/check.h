/* A minimal test harness for the C tests: each CHECK counts; the report line is
 * "<name>: N passed, N failed" and the exit status is non-zero when anything failed. */
#ifndef PFN_CHECK_H
#define PFN_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>

static int checks_passed;
static int checks_failed;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (cond) {                                                                    \
            checks_passed++;                                                           \
        } else {                                                                       \
            checks_failed++;                                                           \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
        }                                                                              \
    } while (0)

/* Integers compared as unsigned 64-bit, printed in hex on failure. */
#define CHECK_EQ(got, want)                                                            \
    do {                                                                               \
        unsigned long long got_ = (unsigned long long)(got);                           \
        unsigned long long want_ = (unsigned long long)(want);                         \
        if (got_ == want_) {                                                           \
            checks_passed++;                                                           \
        } else {                                                                       \
            checks_failed++;                                                           \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %#llx, want %s == %#llx\n", \
                    __FILE__, __LINE__, #got, got_, #want, want_);                     \
        }                                                                              \
    } while (0)

/* A call that must return NULL and set errno to `want`. */
#define CHECK_NULL_ERRNO(expr, want)                                                   \
    do {                                                                               \
        errno = 0;                                                                     \
        const void *p_ = (const void *)(expr);                                         \
        int e_ = errno;                                                                \
        CHECK(p_ == NULL);                                                             \
        CHECK_EQ(e_, want);                                                            \
    } while (0)

/* Stops the test on an unrecoverable setup failure. */
#define REQUIRE(cond)                                                                  \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s (errno %d)\n", __FILE__,        \
                    __LINE__, #cond, errno);                                           \
            exit(2);                                                                   \
        }                                                                              \
    } while (0)

static inline int check_report(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, checks_passed, checks_failed);
    return checks_failed ? 1 : 0;
}

/* A pmem file path in PFN_TEST_DIR (default /dev/shm), unique to this process. */
static inline const char *test_path(char *buf, size_t len, const char *tag)
{
    const char *dir = getenv("PFN_TEST_DIR");
    if (!dir || !*dir)
        dir = "/dev/shm";
    snprintf(buf, len, "%s/libpfn-%s-%ld.pmem", dir, tag, (long)getpid());
    return buf;
}

/* ---- Hangs fail, with a message that says so.
 *
 * A test that waits (for another thread, a grace period, a child) arms a watchdog: if the test
 * has not finished after the cap, it prints "<name>: HUNG: ..." and exits with status 3. The cap
 * is generous (only a hang reaches it, also under valgrind on a loaded machine);
 * PFN_TEST_HANG_SECONDS overrides it. */

#define CHECK_HUNG_STATUS 3

static char check_hung_msg[256];
static size_t check_hung_len;

/* The cap for this run: PFN_TEST_HANG_SECONDS when set, else `default_seconds`. */
static inline unsigned check_hang_cap(unsigned default_seconds)
{
    const char *env = getenv("PFN_TEST_HANG_SECONDS");
    long v = env ? strtol(env, NULL, 10) : 0;
    return v > 0 ? (unsigned)v : default_seconds;
}

static inline void check_hung_handler(int sig)
{
    (void)sig;
    ssize_t rc = write(2, check_hung_msg, check_hung_len);
    (void)rc;
    _exit(CHECK_HUNG_STATUS);
}

/* Arms (or re-arms, e.g. in a forked child under another name) the watchdog. */
static inline void check_watchdog(const char *name, unsigned default_seconds)
{
    unsigned cap = check_hang_cap(default_seconds);
    int n = snprintf(check_hung_msg, sizeof check_hung_msg,
                     "%s: HUNG: no result after %u s (a wait that never ended; the cap is "
                     "PFN_TEST_HANG_SECONDS)\n", name, cap);
    check_hung_len = n < 0 ? 0 : (size_t)n < sizeof check_hung_msg ? (size_t)n : sizeof check_hung_msg - 1;
    signal(SIGALRM, check_hung_handler);
    alarm(cap);
}

/* ---- Stress tests stop on work done, not on wall time.
 *
 * Each kind of work a stress test must cover has a minimum count; the driving loop runs while
 * check_run_more() says some work is short of its minimum, so a slow (loaded, valgrind) run
 * covers exactly what a fast one does, only later. Past the cap, check_run_more() prints what
 * fell short and exits as hung. Workers count with check_work_add() from any thread (in
 * batches: it is an atomic add). PFN_STRESS_SECONDS, when set, also keeps the run going at
 * least that long (a soak). New kinds of work join by adding an entry to the test's array. */

struct check_work {
    const char *what;        /* e.g. "reader 2: kmaps checked" */
    unsigned long long want; /* the minimum this run must reach */
    unsigned long long done; /* atomic: check_work_add / check_work_count */
};

static inline void check_work_add(struct check_work *w, unsigned long long n)
{
    __atomic_fetch_add(&w->done, n, __ATOMIC_RELAXED);
}

static inline unsigned long long check_work_count(const struct check_work *w)
{
    return __atomic_load_n(&w->done, __ATOMIC_RELAXED);
}

struct check_run {
    const char *name;
    struct check_work *work;
    size_t n;
    struct timespec start;
    double cap;         /* seconds: reaching it means a hang */
    double min_seconds; /* PFN_STRESS_SECONDS, else 0 */
};

static inline double check_seconds_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

static inline void check_run_start(struct check_run *r, const char *name, struct check_work *work,
                                   size_t n, unsigned default_cap)
{
    const char *soak = getenv("PFN_STRESS_SECONDS");
    r->name = name;
    r->work = work;
    r->n = n;
    r->cap = check_hang_cap(default_cap);
    r->min_seconds = soak ? atof(soak) : 0.0;
    clock_gettime(CLOCK_MONOTONIC, &r->start);
}

static inline void check_run_print(const struct check_run *r, FILE *to)
{
    for (size_t i = 0; i < r->n; i++)
        fprintf(to, "  %s: %llu (minimum %llu)\n", r->work[i].what, check_work_count(&r->work[i]),
                r->work[i].want);
}

/* True while some work is short of its minimum (or the soak time is not over). */
static inline bool check_run_more(const struct check_run *r)
{
    bool short_of_work = false;
    for (size_t i = 0; i < r->n && !short_of_work; i++)
        short_of_work = check_work_count(&r->work[i]) < r->work[i].want;
    double t = check_seconds_since(&r->start);
    if (short_of_work && t >= r->cap) {
        fprintf(stderr, "%s: HUNG: the minimum work was not done within %.0f s (the cap is "
                "PFN_TEST_HANG_SECONDS):\n", r->name, r->cap);
        check_run_print(r, stderr);
        fflush(NULL);
        _exit(CHECK_HUNG_STATUS);
    }
    return short_of_work || t < r->min_seconds;
}

/* One CHECK per kind of work: each reached its minimum. */
static inline void check_run_done(const struct check_run *r)
{
    for (size_t i = 0; i < r->n; i++) {
        if (check_work_count(&r->work[i]) >= r->work[i].want) {
            checks_passed++;
        } else {
            checks_failed++;
            fprintf(stderr, "%s: CHECK failed: %s: %llu, minimum %llu\n", r->name, r->work[i].what,
                    check_work_count(&r->work[i]), r->work[i].want);
        }
    }
}

#endif
