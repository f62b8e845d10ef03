/* DAX devices across threads (issue 11, patch 4's lifetime fix):
 *  1. kill while read sections that used direct_access are open on two other threads: the
 *     device reads dead at once (pfn_dax_alive 0, new direct_access and I/O fail with ENXIO)
 *     while the kill stays blocked; it completes only after both sections closed, and the
 *     holders could use their addresses until then. A second kill racing it waits as well.
 *  2. destroys racing on one handle: exactly one wins.
 *  3. I/O racing a kill: every read returns the whole device, a short count of correct bytes,
 *     or ENXIO; every write's counted bytes are in the file; once the kill has returned, every
 *     call fails.
 *  4. random reads, writes and zeroes across pages and 256 KiB chunks over the whole device,
 *     checked against a model and against the file read with pread.
 * Orderings are flags the threads publish and states the library shows (pfn_dax_alive, a
 * thread asleep in the kill), never sleeps; nothing is timed. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"
#include "threads.h"

#define PAGE 4096ull
#define POOL (1ull << 20) /* 256 pages: four I/O chunks */
#define PHYS 0x6b00000000ull

static char path[256];
static int fd;
static unsigned char *base;
static pfn_device *dev;

static void pause_briefly(void)
{
    struct timespec ts = {0, 50000};
    nanosleep(&ts, NULL);
}

static void wait_flag(atomic_int *f)
{
    while (!atomic_load(f))
        pause_briefly();
}

static int file_equals(uint64_t off, const unsigned char *want, size_t len)
{
    unsigned char *got = malloc(len ? len : 1);
    REQUIRE(got != NULL);
    int ok = pread(fd, got, len, (off_t)off) == (ssize_t)len && memcmp(got, want, len) == 0;
    free(got);
    return ok;
}

/* ---- 1. kill while sections are open ---- */

struct holder {
    pfn_dax *dax;
    uint64_t pgoff;
    atomic_int ready, release, saw_dead;
    long got;
    int read_ok;
};

static void *hold_section(void *arg)
{
    struct holder *h = arg;
    pfn_section s = pfn_read_lock();
    void *kaddr = NULL;
    pfn_t pfn = {0};
    h->got = (long)pfn_dax_direct_access(h->dax, h->pgoff, 2, &kaddr, &pfn);
    atomic_store(&h->ready, 1);
    wait_flag(&h->release);
    /* The kill has begun (the test saw the device dead) and waits for this section: the
     * address is still the file's memory. */
    h->saw_dead = pfn_dax_alive(h->dax) == 0;
    h->read_ok = kaddr != NULL && memcmp(kaddr, base + h->pgoff * PAGE, 2 * PAGE) == 0 &&
                 pfn.val == ((PHYS / PAGE + h->pgoff) | PFN_DEV);
    pfn_section_close(&s);
    return NULL;
}

struct killer {
    pfn_dax *dax;
    atomic_int tid, done;
    int rc;
};

static void *kill_it(void *arg)
{
    struct killer *k = arg;
    atomic_store(&k->tid, self_tid());
    k->rc = pfn_dax_kill(k->dax);
    atomic_store(&k->done, 1);
    return NULL;
}

static void kill_while_sections_open(void)
{
    pfn_dax *dax = pfn_dax_create(dev, PHYS);
    REQUIRE(dax != NULL);
    struct holder h[2] = {{.dax = dax, .pgoff = 3}, {.dax = dax, .pgoff = 100}};
    pthread_t ht[2], kt[2];
    for (int i = 0; i < 2; i++)
        REQUIRE(pthread_create(&ht[i], NULL, hold_section, &h[i]) == 0);
    for (int i = 0; i < 2; i++)
        wait_flag(&h[i].ready);
    CHECK_EQ(h[0].got, 2);
    CHECK_EQ(h[1].got, 2);

    struct killer k[2] = {{.dax = dax}, {.dax = dax}};
    REQUIRE(pthread_create(&kt[0], NULL, kill_it, &k[0]) == 0);
    /* The device reads dead as soon as the kill has begun. */
    while (pfn_dax_alive(dax) != 0)
        pause_briefly();
    /* New accesses fail at once while the kill waits. */
    {
        pfn_section s = pfn_read_lock();
        void *kaddr = (void *)1;
        CHECK_EQ(pfn_dax_direct_access(dax, 0, 1, &kaddr, NULL), -ENXIO);
        CHECK(kaddr == (void *)1);
        pfn_section_close(&s);
    }
    unsigned char b[16];
    CHECK_EQ(pfn_dax_read(dax, 0, b, sizeof b), -ENXIO);
    CHECK_EQ(pfn_dax_write(dax, 0, b, sizeof b), -ENXIO);
    CHECK_EQ(pfn_dax_zero(dax, 0, 16), -ENXIO);
    /* The kill is blocked (asleep, not done) for as long as the sections are open. */
    while (!atomic_load(&k[0].tid))
        pause_briefly();
    CHECK(wait_blocked_or_done(atomic_load(&k[0].tid), &k[0].done) == 1);
    /* A second kill waits as well. */
    REQUIRE(pthread_create(&kt[1], NULL, kill_it, &k[1]) == 0);
    while (!atomic_load(&k[1].tid))
        pause_briefly();
    CHECK(wait_blocked_or_done(atomic_load(&k[1].tid), &k[1].done) == 1);
    /* One section closes: both kills still wait for the other. */
    atomic_store(&h[0].release, 1);
    REQUIRE(pthread_join(ht[0], NULL) == 0);
    CHECK(wait_blocked_or_done(atomic_load(&k[0].tid), &k[0].done) == 1);
    CHECK(!atomic_load(&k[1].done));
    atomic_store(&h[1].release, 1);
    REQUIRE(pthread_join(ht[1], NULL) == 0);
    for (int i = 0; i < 2; i++) {
        REQUIRE(pthread_join(kt[i], NULL) == 0);
        CHECK_EQ(k[i].rc, 0);
        CHECK(h[i].saw_dead);
        CHECK(h[i].read_ok);
    }
    CHECK_EQ(pfn_dax_alive(dax), 0);
    CHECK_EQ(pfn_dax_destroy(dax), 0);
}

/* ---- 2. racing destroys ---- */

struct destroyer {
    pfn_dax *dax;
    atomic_int *go;
    int rc;
};

static void *destroy_it(void *arg)
{
    struct destroyer *d = arg;
    wait_flag(d->go);
    d->rc = pfn_dax_destroy(d->dax);
    return NULL;
}

static void racing_destroys(void)
{
    for (int round = 0; round < 20; round++) {
        pfn_dax *dax = pfn_dax_create(dev, PHYS);
        REQUIRE(dax != NULL);
        atomic_int go = 0;
        struct destroyer d[3];
        pthread_t t[3];
        for (int i = 0; i < 3; i++) {
            d[i] = (struct destroyer){.dax = dax, .go = &go};
            REQUIRE(pthread_create(&t[i], NULL, destroy_it, &d[i]) == 0);
        }
        atomic_store(&go, 1);
        int won = 0, refused = 0;
        for (int i = 0; i < 3; i++) {
            REQUIRE(pthread_join(t[i], NULL) == 0);
            won += d[i].rc == 0;
            refused += d[i].rc == -EINVAL;
        }
        CHECK_EQ(won, 1);
        CHECK_EQ(refused, 2);
        CHECK_EQ(pfn_dax_alive(dax), -EINVAL);
    }
}

/* ---- 3. I/O racing a kill ---- */

static unsigned char *pattern;

struct io_thread {
    pfn_dax *dax;
    int write;
    atomic_int started, kill_returned, stopped;
    long calls, full, shorts, refused, bad, after_kill_ok;
};

static void *io_loop(void *arg)
{
    struct io_thread *t = arg;
    unsigned char *buf = malloc(POOL);
    REQUIRE(buf != NULL);
    for (;;) {
        int after = atomic_load(&t->kill_returned);
        memset(buf, 0, POOL);
        int64_t n = t->write ? pfn_dax_write(t->dax, 0, pattern, POOL)
                             : pfn_dax_read(t->dax, 0, buf, POOL);
        t->calls++;
        if (n == (int64_t)POOL)
            t->full++;
        else if (n > 0 && n < (int64_t)POOL)
            t->shorts++;
        else if (n == -ENXIO)
            t->refused++;
        else
            t->bad++;
        if (!t->write && n > 0 && memcmp(buf, pattern, (size_t)n) != 0)
            t->bad++;
        if (t->write && n > 0 && !file_equals(0, pattern, (size_t)n))
            t->bad++;
        if (after) {
            t->after_kill_ok += n != -ENXIO;
            break;
        }
        if (t->calls == 2)
            atomic_store(&t->started, 1);
    }
    free(buf);
    atomic_store(&t->stopped, 1);
    return NULL;
}

static void io_racing_kill(void)
{
    for (size_t i = 0; i < POOL; i++)
        pattern[i] = (unsigned char)(i * 29 + 3);
    memcpy(base, pattern, POOL);
    pfn_dax *dax = pfn_dax_create(dev, PHYS);
    REQUIRE(dax != NULL);
    struct io_thread t[2] = {{.dax = dax, .write = 0}, {.dax = dax, .write = 1}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        REQUIRE(pthread_create(&th[i], NULL, io_loop, &t[i]) == 0);
    for (int i = 0; i < 2; i++)
        wait_flag(&t[i].started);
    CHECK_EQ(pfn_dax_kill(dax), 0);
    for (int i = 0; i < 2; i++)
        atomic_store(&t[i].kill_returned, 1);
    for (int i = 0; i < 2; i++) {
        REQUIRE(pthread_join(th[i], NULL) == 0);
        CHECK(t[i].calls >= 3);
        CHECK(t[i].full >= 2);
        CHECK_EQ(t[i].bad, 0);
        CHECK_EQ(t[i].after_kill_ok, 0); /* a call that began after the kill returned fails */
        CHECK(t[i].refused >= 1);
    }
    CHECK(file_equals(0, pattern, POOL));
    CHECK_EQ(pfn_dax_destroy(dax), 0);
}

/* ---- 4. random I/O against a model ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void random_io(int ops)
{
    pfn_dax *dax = pfn_dax_create(dev, PHYS);
    REQUIRE(dax != NULL);
    unsigned char *model = malloc(POOL), *src = malloc(POOL), *out = malloc(POOL + 64);
    REQUIRE(model && src && out);
    memcpy(model, base, POOL);
    int mismatches = 0;
    for (int op = 0; op < ops; op++) {
        /* Offsets near page and chunk edges and the device's end, lengths up to 600 KiB. */
        uint64_t off;
        switch (rnd() % 4) {
        case 0: off = (rnd() % 256) * PAGE - rnd() % 8; break;
        case 1: off = (rnd() % 4) * (256 << 10) + rnd() % 64 - 32; break;
        case 2: off = POOL - rnd() % (3 * PAGE); break;
        default: off = rnd() % (POOL + PAGE); break;
        }
        off %= POOL + 2 * PAGE;
        size_t len = rnd() % 8 == 0 ? (size_t)(rnd() % (600 << 10)) : (size_t)(rnd() % (3 * PAGE));
        size_t want = off >= POOL ? 0 : (len < POOL - off ? len : (size_t)(POOL - off));
        int kind = (int)(rnd() % 3);
        int64_t n;
        if (kind == 0) {
            n = pfn_dax_read(dax, off, out, len);
            if (n == (int64_t)want && want && memcmp(out, model + off, want) != 0)
                mismatches++;
        } else if (kind == 1) {
            for (size_t i = 0; i < len && i < POOL; i++)
                src[i] = (unsigned char)rnd();
            n = pfn_dax_write(dax, off, src, len);
            if (want)
                memcpy(model + off, src, want);
        } else {
            n = pfn_dax_zero(dax, off, len);
            if (want)
                memset(model + off, 0, want);
        }
        if (n != (int64_t)want) {
            fprintf(stderr, "random_io: op %d kind %d off %#llx len %#zx: %lld, want %#zx\n", op,
                    kind, (unsigned long long)off, len, (long long)n, want);
            mismatches++;
        }
    }
    CHECK_EQ(mismatches, 0);
    CHECK(memcmp(base, model, POOL) == 0);
    CHECK(file_equals(0, model, POOL));
    CHECK_EQ(pfn_dax_read(dax, 0, out, POOL + 64), POOL);
    CHECK(memcmp(out, model, POOL) == 0);
    free(model);
    free(src);
    free(out);
    CHECK_EQ(pfn_dax_destroy(dax), 0);
}

int main(void)
{
    check_watchdog("int_dax", 300);
    int quick = getenv("PFN_TEST_QUICK") != NULL;
    test_path(path, sizeof path, "int_dax");
    unlink(path);
    pfn_pmem *m = pfn_pmem_map(path, POOL, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    base = pfn_pmem_addr(m);
    fd = open(path, O_RDONLY);
    REQUIRE(fd >= 0);
    dev = pfn_device_new("int_dax");
    REQUIRE(dev != NULL);
    REQUIRE(pfn_pmem_register(dev, m, PHYS) == 0);
    pattern = malloc(POOL);
    REQUIRE(pattern != NULL);

    kill_while_sections_open();
    racing_destroys();
    io_racing_kill();
    random_io(quick ? 150 : 1500);

    free(pattern);
    CHECK_EQ(pfn_device_free(dev), 0);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    close(fd);
    unlink(path);
    return check_report("int_dax");
}
