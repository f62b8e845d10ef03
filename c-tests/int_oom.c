/* Out of memory is ENOMEM, never an abort, and a failed call changes nothing (issue 8, items
 * 3, 7 and 4): every allocation of every call that documents ENOMEM is made to fail in turn
 * (not only the first), through this program's own malloc (oom.h). Also: once a thread is set
 * up, sections and nested kmaps need no allocation at all, so they cannot fail and cannot
 * disturb outer sections; and a signal handler that kmaps while the thread's own set-up runs
 * gets EAGAIN instead of deadlocking. Not run under ASan or valgrind (they own malloc). */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"
#include "oom.h"
#include "threads.h"

#define PAGE 4096ull
#define PHYS (9ull << 40)

static char *base;
static pfn_device *dev;

/* Calls `attempt` with the n-th allocation failing, n = 0, 1, ... until it succeeds; checks
 * that each failure was an injected one reported as ENOMEM. Returns the number of failures. */
#define EACH_ALLOCATION(what, fails, attempt_ok, attempt_enomem)                               \
    do {                                                                                     \
        for (long n_ = 0; n_ < 1000; n_++) {                                                 \
            oom_fail_at(n_);                                                                 \
            int ok_ = (attempt_ok);                                                          \
            int hit_ = oom_injected();                                                       \
            oom_disarm();                                                                    \
            if (ok_)                                                                         \
                break;                                                                       \
            (fails)++;                                                                       \
            if (!hit_ || !(attempt_enomem))                                                  \
                fprintf(stderr, "%s: allocation %ld: failed without ENOMEM\n", what, n_);   \
            CHECK(hit_ && (attempt_enomem));                                                 \
        }                                                                                    \
    } while (0)

static void device_new(void)
{
    int fails = 0;
    pfn_device *d = NULL;
    EACH_ALLOCATION("pfn_device_new", fails, (errno = 0, d = pfn_device_new("d")) != NULL, errno == ENOMEM);
    CHECK(d != NULL);
    CHECK(fails >= 1);
    CHECK_EQ(pfn_device_free(d), 0);
    printf("int_oom: pfn_device_new failed cleanly at %d allocations\n", fails);
}

static void registration(uint64_t phys, uint64_t pages, int must_allocate, const char *what)
{
    int fails = 0, rc = 0;
    uint64_t table = pfn_table_bytes();
    pfn_resource r = {phys, phys + pages * PAGE - 1, NULL};
    int unchanged = 1;
    for (long n = 0; n < 1000; n++) {
        oom_fail_at(n);
        rc = devm_register_kmap_pfn_range(dev, &r, base);
        int hit = oom_injected();
        oom_disarm();
        if (rc == 0)
            break;
        fails++;
        CHECK(hit && rc == -ENOMEM);
        /* Nothing changed: the range is not there, the table is as it was. */
        errno = 0;
        unchanged &= kmap_atomic_pfn_t(phys_to_pfn_t(phys, 0)) == NULL && errno == ENXIO;
        unchanged &= pfn_table_bytes() == table;
    }
    CHECK_EQ(rc, 0);
    CHECK(unchanged);
    CHECK(fails >= must_allocate);
    void *p = kmap_atomic_pfn_t(phys_to_pfn_t(phys + (pages - 1) * PAGE, 0));
    CHECK(p == base + (pages - 1) * PAGE);
    kunmap_atomic_pfn_t(p);
    printf("int_oom: %s failed cleanly at %d allocations\n", what, fails);
}

/* A thread's first kmap, first section and first object-bound section, each on fresh threads
 * so that the set-up happens every time. Every thread stays alive until all of these are done
 * (a thread that exits gives its reader state back for reuse, and the next attempt would then
 * allocate nothing). */
struct first_use {
    long fail_at;
    int kind; /* 0 kmap, 1 read_lock, 2 section_open, 3 kmap interrupted by a signal */
    int ok, enomem, hit, then_ok;
    atomic_int done;
};

static atomic_int first_use_over;
static pthread_t keep[64];
static int nkeep;
static struct first_use uses[64];

static void *first_use_thread(void *arg)
{
    struct first_use *u = arg;
    void *p = NULL;
    errno = 0;
    oom_fail_at(u->fail_at);
    if (u->kind == 0) {
        p = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS, 0));
        u->ok = p != NULL;
        u->enomem = !u->ok && errno == ENOMEM;
    } else if (u->kind == 1) {
        pfn_section s = pfn_read_lock();
        u->ok = s.reader != NULL;
        u->enomem = !u->ok && errno == ENOMEM;
        if (u->ok)
            pfn_read_unlock();
        else
            u->enomem &= pfn_section_close(&s) == -EINVAL; /* a failed section closes nothing */
    } else {
        pfn_section s;
        int rc = pfn_section_open(&s);
        u->ok = rc == 0;
        u->enomem = rc == -ENOMEM;
        if (u->ok)
            u->ok = pfn_section_close(&s) == 0;
    }
    u->hit = oom_injected();
    oom_disarm();
    if (u->kind == 0 && p)
        kunmap_atomic_pfn_t(p);
    /* After a failure the thread works normally. */
    void *q = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS, 0));
    u->then_ok = q == base && kunmap_atomic_pfn_t(q) == 0;
    atomic_store(&u->done, 1);
    while (!atomic_load(&first_use_over))
        usleep(1000);
    return NULL;
}

static struct first_use *start_first_use(long n, int kind, void *(*fn)(void *))
{
    REQUIRE(nkeep < 64);
    struct first_use *u = &uses[nkeep];
    u->fail_at = n;
    u->kind = kind;
    REQUIRE(pthread_create(&keep[nkeep++], NULL, fn, u) == 0);
    while (!atomic_load(&u->done))
        usleep(100);
    return u;
}

static void first_use(int kind, const char *what)
{
    int fails = 0, ok = 0;
    for (long n = 0; n < 20 && !ok; n++) {
        struct first_use *u = start_first_use(n, kind, first_use_thread);
        CHECK(u->then_ok);
        if (u->ok) {
            ok = 1;
            break;
        }
        fails++;
        CHECK(u->hit && u->enomem);
    }
    CHECK(ok);
    CHECK(fails >= 1);
    printf("int_oom: %s failed cleanly at %d allocations\n", what, fails);
}

/* Issue 8 item 3: once set up, nothing a thread does in its read side allocates: with every
 * allocation failing, 40 nested sections and 40 nested kmaps all succeed, and the outer
 * section still holds off an unregister afterwards. */
static atomic_int unreg_done, unreg_tid;
static uint64_t unreg_start;

static void *unregister_range(void *arg)
{
    (void)arg;
    atomic_store(&unreg_tid, self_tid());
    int rc = pfn_unregister_range(dev, unreg_start);
    atomic_store(&unreg_done, rc == 0 ? 1 : 2);
    return NULL;
}

static void no_allocation_after_setup(void)
{
    uint64_t phys = PHYS + (1ull << 30);
    pfn_resource r = {phys, phys + 64 * PAGE - 1, NULL};
    REQUIRE(devm_register_kmap_pfn_range(dev, &r, base) == 0);
    REQUIRE(pfn_thread_init() == 0);
    pfn_section outer = pfn_read_lock();
    CHECK(outer.reader != NULL);
    oom_fail_at(0); /* the next allocation fails: there must be none */
    int ok = 1;
    pfn_section s[40];
    void *k[40];
    for (int i = 0; i < 40; i++) {
        s[i] = pfn_read_lock();
        k[i] = kmap_atomic_pfn_t(phys_to_pfn_t(phys + (uint64_t)i * PAGE, 0));
        ok &= s[i].reader != NULL && k[i] == base + i * PAGE;
    }
    int allocated = oom_injected();
    oom_disarm();
    CHECK(ok);
    CHECK(!allocated);
    /* Released first in first out, sections by handle innermost first. */
    for (int i = 0; i < 40; i++)
        CHECK_EQ(kunmap_atomic_pfn_t(k[i]), 0);
    for (int i = 39; i >= 0; i--)
        CHECK_EQ(pfn_section_close(&s[i]), 0);
    /* The outer section still holds: an unregister waits for it. */
    unreg_start = phys;
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, unregister_range, NULL) == 0);
    while (atomic_load(&unreg_tid) == 0)
        usleep(100);
    CHECK(wait_blocked_or_done(atomic_load(&unreg_tid), &unreg_done));
    CHECK_EQ(atomic_load(&unreg_done), 0);
    pfn_read_unlock();
    pthread_join(t, NULL);
    CHECK_EQ(atomic_load(&unreg_done), 1);
}

/* Issue 8 item 4: a signal handler that kmaps while the thread's own set-up is running (here:
 * inside its first allocation) gets EAGAIN; the interrupted kmap then completes. */
static volatile sig_atomic_t handler_ran, handler_eagain;

static void on_signal(int sig)
{
    (void)sig;
    int saved = errno;
    errno = 0;
    void *p = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS, 0));
    handler_ran = 1;
    handler_eagain = p == NULL && errno == EAGAIN;
    if (p)
        kunmap_atomic_pfn_t(p);
    errno = saved;
}

static void raise_once(void)
{
    oom_on_alloc = NULL;
    raise(SIGUSR1);
}

static void *setup_interrupted(void *arg)
{
    struct first_use *u = arg;
    oom_on_alloc = raise_once;
    void *p = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS, 0));
    oom_on_alloc = NULL;
    u->ok = p == base && kunmap_atomic_pfn_t(p) == 0;
    atomic_store(&u->done, 1);
    while (!atomic_load(&first_use_over))
        usleep(1000);
    return NULL;
}

static void signal_during_setup(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    REQUIRE(sigaction(SIGUSR1, &sa, NULL) == 0);
    struct first_use *u = start_first_use(-1, 3, setup_interrupted);
    CHECK(u->ok);
    CHECK(handler_ran);
    CHECK(handler_eagain);
}

/* The nesting limit is EOVERFLOW, not ENOMEM, for sections and for kmaps on top of them, and
 * whatever fails leaves every outer hold in place (a thread's whole state at the limit still
 * holds off unregistering). Runs on its own thread. */
static void *nesting_limit(void *arg)
{
    (void)arg;
    REQUIRE(pfn_thread_init() == 0);
    long n = 0;
    for (;;) {
        pfn_section s = pfn_read_lock_inline();
        if (!s.reader)
            break;
        if (++n > 20000000)
            break;
    }
    CHECK_EQ(errno, EOVERFLOW);
    CHECK(n > 16000000 && n < 17000000);
    /* kmaps still nest on top until the count itself is full; then EOVERFLOW, and the
     * message says why. */
    long k = 0;
    void *p = NULL;
    while (k < 200000 && (p = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS, 0))) != NULL)
        k++;
    CHECK(p == NULL);
    CHECK_EQ(errno, EOVERFLOW);
    CHECK(strstr(pfn_errormsg(), "16 million") != NULL);
    CHECK_EQ(pfn_unregister_range(dev, PHYS), -EDEADLK); /* everything still held */
    for (long i = 0; i < k; i++)
        kunmap_atomic_pfn_t(base);
    for (long i = 0; i < n; i++)
        pfn_read_unlock();
    void *q = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS, 0));
    CHECK(q == base);
    CHECK_EQ(kunmap_atomic_pfn_t(q), 0);
    return NULL;
}

/* DAX devices (issue 11): pfn_dax_create fails cleanly at each of its allocations; once the
 * device exists, direct_access, reads, writes, zeroes and kill allocate nothing. */
static void dax_calls(void)
{
    int fails = 0;
    pfn_dax *dax = NULL;
    EACH_ALLOCATION("pfn_dax_create", fails, (errno = 0, dax = pfn_dax_create(dev, PHYS)) != NULL,
                    errno == ENOMEM);
    CHECK(dax != NULL);
    CHECK(fails >= 1);
    printf("int_oom: pfn_dax_create failed cleanly at %d allocations\n", fails);
    char buf[3 * PAGE];
    memset(buf, 0x3C, sizeof buf);
    oom_fail_at(0); /* the next allocation fails: there must be none */
    int ok = pfn_dax_write(dax, PAGE - 5, buf, sizeof buf) == (int64_t)sizeof buf;
    ok &= pfn_dax_read(dax, 10, buf, sizeof buf) == (int64_t)sizeof buf;
    ok &= pfn_dax_zero(dax, 0, PAGE) == (int64_t)PAGE;
    pfn_section s = pfn_read_lock();
    void *k = NULL;
    ok &= pfn_dax_direct_access(dax, 1, 4, &k, NULL) == 4 && k == base + PAGE;
    pfn_read_unlock();
    (void)s;
    ok &= pfn_dax_alive(dax) == 1 && pfn_dax_kill(dax) == 0 && pfn_dax_alive(dax) == 0;
    int allocated = oom_injected();
    oom_disarm();
    CHECK(ok);
    CHECK(!allocated);
    CHECK_EQ(pfn_dax_destroy(dax), 0);
}

/* A DAX device over five one-page ranges scattered in the mapping (pfn_dax_create_span):
 * creation fails cleanly at each of its allocations (the list of ranges grows past its first
 * capacity, and the handle); I/O across the ranges, direct_access and kill allocate nothing. */
#define SPAN_PHYS (PHYS + (1ull << 39))
#define SPAN_N 5
static void dax_span_calls(void)
{
    for (uint64_t i = 0; i < SPAN_N; i++) {
        pfn_resource r = {SPAN_PHYS + i * PAGE, SPAN_PHYS + (i + 1) * PAGE - 1, NULL};
        /* Pages 300, 298, ..., 292 of the mapping: physically ascending, virtually descending
         * with holes. */
        REQUIRE(devm_register_kmap_pfn_range(dev, &r, base + (300 - 2 * i) * PAGE) == 0);
    }
    int fails = 0;
    pfn_dax *dax = NULL;
    EACH_ALLOCATION("pfn_dax_create_span", fails,
                    (errno = 0, dax = pfn_dax_create_span(dev, SPAN_PHYS, SPAN_N * PAGE)) != NULL,
                    errno == ENOMEM);
    CHECK(dax != NULL);
    CHECK(fails >= 2);
    printf("int_oom: pfn_dax_create_span (%d ranges) failed cleanly at %d allocations\n",
           SPAN_N, fails);
    char buf[3 * PAGE];
    memset(buf, 0x5A, sizeof buf);
    oom_fail_at(0); /* the next allocation fails: there must be none */
    int ok = pfn_dax_write(dax, PAGE - 5, buf, sizeof buf) == (int64_t)sizeof buf;
    ok &= pfn_dax_read(dax, 10, buf, sizeof buf) == (int64_t)sizeof buf;
    ok &= pfn_dax_zero(dax, PAGE / 2, 3 * PAGE) == (int64_t)(3 * PAGE);
    pfn_section s = pfn_read_lock();
    void *k = NULL;
    ok &= pfn_dax_direct_access(dax, 4, 4, &k, NULL) == 1 && k == base + 292 * PAGE;
    pfn_read_unlock();
    (void)s;
    ok &= pfn_dax_kill(dax) == 0 && pfn_dax_alive(dax) == 0;
    int allocated = oom_injected();
    oom_disarm();
    CHECK(ok);
    CHECK(!allocated);
    CHECK_EQ(pfn_dax_destroy(dax), 0);
    for (uint64_t i = 0; i < SPAN_N; i++)
        CHECK_EQ(pfn_unregister_range(dev, SPAN_PHYS + i * PAGE), 0);
}

int main(void)
{
    alarm(120); /* a deadlock fails the test instead of hanging it */
    char path[256];
    test_path(path, sizeof path, "int_oom");
    unlink(path);
    pfn_pmem *m = pfn_pmem_map(path, 1024 * PAGE, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    base = pfn_pmem_addr(m);

    device_new();
    dev = pfn_device_new("oom");
    REQUIRE(dev != NULL);
    registration(PHYS, 16, 1, "the first registration");
    registration(PHYS + (1ull << 40), 1024, 1, "a registration that grows the table's root");
    registration(PHYS + 64 * PAGE, 8, 0, "a registration beside another");
    /* No thread has exited yet: no reader state is free for reuse. */
    signal_during_setup();
    first_use(0, "a thread's first kmap");
    first_use(1, "a thread's first read section");
    first_use(2, "a thread's first object-bound section");
    atomic_store(&first_use_over, 1);
    for (int i = 0; i < nkeep; i++)
        pthread_join(keep[i], NULL);
    no_allocation_after_setup();
    pthread_t nl;
    REQUIRE(pthread_create(&nl, NULL, nesting_limit, NULL) == 0);
    pthread_join(nl, NULL);

    /* A thread's first pin allocates its counters (a directory, then a chunk): each failure
     * is ENOMEM and leaves nothing held; the pin that finally succeeds is the only one. */
    int fails = 0, rc_ = 0;
    pfn_dev_pagemap *pin = NULL;
    REQUIRE(pfn_thread_init() == 0);
    EACH_ALLOCATION("pfn_pin", fails, (errno = 0, pin = pfn_pin(phys_to_pfn_t(PHYS, 0))) != NULL,
                    errno == ENOMEM);
    CHECK(pin != NULL);
    CHECK(fails >= 1);
    CHECK_EQ(pfn_unpin(pin), 0);
    CHECK_EQ(pfn_unpin(pin), -EINVAL); /* no other pin was counted */
    printf("int_oom: pfn_pin failed cleanly at %d allocations\n", fails);

    /* A registration with a memmap also fills the memmap table: nothing registered until the
     * attempt that succeeds. */
    fails = 0;
    pfn_resource mr = {PHYS + (2ull << 40), PHYS + (2ull << 40) + 300 * PAGE - 1, NULL};
    int unchanged = 1;
    EACH_ALLOCATION("pfn_register_range_memmap", fails,
                    (errno = 0, (rc_ = pfn_register_range_memmap(dev, &mr, base + 400 * PAGE,
                                                                 PFN_MEMMAP_IN_RANGE)) == 0),
                    (unchanged &= pfn_t_to_page(phys_to_pfn_t(mr.start + 2 * PAGE, 0)) == NULL,
                     rc_ == -ENOMEM));
    CHECK(unchanged);
    CHECK(fails >= 1);
    CHECK(pfn_t_to_page(phys_to_pfn_t(mr.start + 2 * PAGE, 0)) == (struct pfn_page *)(base + 400 * PAGE)); /* 2 frames reserved */
    CHECK_EQ(pfn_unregister_range(dev, mr.start), 0);
    printf("int_oom: pfn_register_range_memmap failed cleanly at %d allocations\n", fails);

    /* pfn_pmem_map of an existing file. */
    fails = 0;
    pfn_pmem *m2 = NULL;
    EACH_ALLOCATION("pfn_pmem_map", fails, (errno = 0, m2 = pfn_pmem_map(path, 0, 0)) != NULL, errno == ENOMEM);
    CHECK(m2 != NULL);
    CHECK(fails >= 1);
    CHECK_EQ(pfn_pmem_unmap(m2), 0);
    printf("int_oom: pfn_pmem_map failed cleanly at %d allocations\n", fails);

    dax_calls();
    dax_span_calls();

    CHECK_EQ(pfn_device_free(dev), 0);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    unlink(path);
    return check_report("int_oom");
}
