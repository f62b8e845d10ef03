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
 *  5. a device over four ranges in four separately mapped files (pfn_dax_create_span):
 *     random I/O across the range boundaries against a model and each file; the second range
 *     unregistered while another thread reads the whole span (each read whole, or stopped
 *     exactly where the range begins; stopped there once the unregister returned), then its
 *     bytes fail with ENXIO, the others still serve.
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

/* One random read, write or zero of `len` bytes at `off` on a device of `size` bytes, checked
 * against (and applied to) `model`; returns the mismatches seen (0, 1 or 2). */
static int model_op(pfn_dax *dax, const char *who, int op, uint64_t off, size_t len, uint64_t size,
                    unsigned char *model, unsigned char *out, unsigned char *src)
{
    int mismatches = 0;
    size_t want = off >= size ? 0 : (len < size - off ? len : (size_t)(size - off));
    int kind = (int)(rnd() % 3);
    int64_t n;
    if (kind == 0) {
        n = pfn_dax_read(dax, off, out, len);
        if (n == (int64_t)want && want && memcmp(out, model + off, want) != 0)
            mismatches++;
    } else if (kind == 1) {
        for (size_t i = 0; i < len && i < size; i++)
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
        fprintf(stderr, "%s: op %d kind %d off %#llx len %#zx: %lld, want %#zx\n", who, op, kind,
                (unsigned long long)off, len, (long long)n, want);
        mismatches++;
    }
    return mismatches;
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
        mismatches += model_op(dax, "random_io", op, off, len, POOL, model, out, src);
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

/* ---- 5. a span of four ranges in four separately mapped files ----
 * Physically back to back from SPAN_PHYS, anywhere in virtual memory (each file is its own
 * mapping): random reads, writes and zeroes across the range boundaries against a model, each
 * file checked on its own with pread; then the second range is unregistered: its bytes fail
 * with ENXIO, calls that reach it stop there, the other ranges still serve. */

#define SPAN_PHYS 0x6c00000000ull
#define SPAN_PARTS 4
static const uint64_t span_size[SPAN_PARTS] = {24 * PAGE, 75 * PAGE, PAGE, 91 * PAGE};

struct span_file {
    char path[300];
    pfn_pmem *m;
    int fd;
    uint64_t off; /* the device's byte offset of the file's first byte */
};

static int span_file_equals(const struct span_file *f, const unsigned char *model, uint64_t len)
{
    unsigned char *got = malloc(len);
    REQUIRE(got != NULL);
    int ok = pread(f->fd, got, len, 0) == (ssize_t)len && memcmp(got, model + f->off, len) == 0;
    free(got);
    return ok;
}

/* A reader looping over the whole span while the main thread unregisters its second range:
 * every count is the whole span, or stops inside or at the start of that range (a read in
 * flight may have copied some of its 256 KiB chunks), with the right bytes; once the
 * unregister has returned, every read stops exactly where the range begins. */
struct span_reader {
    pfn_dax *dax;
    const unsigned char *model;
    uint64_t total, cut, cut_end; /* the second range: cut .. cut_end */
    atomic_int started, unregistered, stop;
    int bad, full, short_, after;
};

static void *span_read_loop(void *arg)
{
    struct span_reader *r = arg;
    unsigned char *out = malloc(r->total);
    REQUIRE(out != NULL);
    for (int round = 0;; round++) {
        int after = atomic_load(&r->unregistered);
        int64_t n = pfn_dax_read(r->dax, 0, out, r->total);
        if (n == (int64_t)r->total && !after)
            r->full++;
        else if (n == (int64_t)r->cut)
            r->short_++;
        else if (!after && n > (int64_t)r->cut && n < (int64_t)r->cut_end)
            r->short_++; /* chunks of the range copied before the unregister began */
        else
            r->bad++;
        if (n > 0 && memcmp(out, r->model, (size_t)n) != 0)
            r->bad++;
        if (after)
            r->after++;
        if (round == 0)
            atomic_store(&r->started, 1);
        if (atomic_load(&r->stop))
            break;
    }
    free(out);
    return NULL;
}

static void span_io(int ops)
{
    struct span_file f[SPAN_PARTS];
    pfn_device *sdev = pfn_device_new("int_dax-span");
    REQUIRE(sdev != NULL);
    uint64_t total = 0;
    for (int i = 0; i < SPAN_PARTS; i++) {
        snprintf(f[i].path, sizeof f[i].path, "%s.span%d", path, i);
        unlink(f[i].path);
        f[i].m = pfn_pmem_map(f[i].path, span_size[i], PFN_PMEM_CREATE);
        REQUIRE(f[i].m != NULL);
        f[i].fd = open(f[i].path, O_RDONLY);
        REQUIRE(f[i].fd >= 0);
        f[i].off = total;
        REQUIRE(pfn_pmem_register(sdev, f[i].m, SPAN_PHYS + total) == 0);
        total += span_size[i];
    }
    /* Not one run in virtual memory: at least one boundary is not adjacent. */
    int scattered = 0;
    for (int i = 0; i + 1 < SPAN_PARTS; i++)
        scattered |= (unsigned char *)pfn_pmem_addr(f[i].m) + span_size[i] !=
                     (unsigned char *)pfn_pmem_addr(f[i + 1].m);
    CHECK(scattered);

    pfn_dax *dax = pfn_dax_create_span(sdev, SPAN_PHYS, total);
    REQUIRE(dax != NULL);
    CHECK_EQ(pfn_dax_pages(dax), total / PAGE);
    unsigned char *model = calloc(1, total), *src = malloc(total), *out = malloc(total + 64);
    REQUIRE(model && src && out);
    int mismatches = 0;
    for (int op = 0; op < ops; op++) {
        /* Offsets near the range boundaries, page and chunk edges and the end; lengths up to
         * the whole device. */
        uint64_t off;
        switch (rnd() % 4) {
        case 0: off = f[rnd() % SPAN_PARTS].off + rnd() % 64 - 32; break;
        case 1: off = (rnd() % (total / PAGE)) * PAGE - rnd() % 8; break;
        case 2: off = total - rnd() % (3 * PAGE); break;
        default: off = rnd() % (total + PAGE); break;
        }
        off %= total + 2 * PAGE;
        size_t len = rnd() % 4 == 0 ? (size_t)(rnd() % (total + PAGE))
                                    : (size_t)(rnd() % (3 * PAGE));
        mismatches += model_op(dax, "span_io", op, off, len, total, model, out, src);
    }
    CHECK_EQ(mismatches, 0);
    for (int i = 0; i < SPAN_PARTS; i++) {
        CHECK(span_file_equals(&f[i], model, span_size[i]));
        CHECK(memcmp(pfn_pmem_addr(f[i].m), model + f[i].off, span_size[i]) == 0);
    }
    CHECK_EQ(pfn_dax_read(dax, 0, out, total + 64), total);
    CHECK(memcmp(out, model, total) == 0);
    {
        /* direct_access: each range on its own, at its own file's address. */
        PFN_SECTION_SCOPE(s);
        (void)s;
        for (int i = 0; i < SPAN_PARTS; i++) {
            void *k = NULL;
            CHECK_EQ(pfn_dax_direct_access(dax, f[i].off / PAGE, UINT64_MAX, &k, NULL),
                     span_size[i] / PAGE);
            CHECK(k == pfn_pmem_addr(f[i].m));
        }
    }

    /* The second range goes (as its driver would release one registration) while another
     * thread reads the whole span in a loop. */
    struct span_reader rd = {.dax = dax, .model = model, .total = total, .cut = f[1].off,
                          .cut_end = f[2].off};
    pthread_t reader;
    REQUIRE(pthread_create(&reader, NULL, span_read_loop, &rd) == 0);
    wait_flag(&rd.started);
    CHECK_EQ(pfn_unregister_range(sdev, SPAN_PHYS + f[1].off), 0);
    atomic_store(&rd.unregistered, 1);
    while (rd.after < 3)
        pause_briefly();
    atomic_store(&rd.stop, 1);
    pthread_join(reader, NULL);
    CHECK_EQ(rd.bad, 0);
    CHECK(rd.full >= 1);
    CHECK(rd.after >= 3);
    printf("int_dax: span reads during the unregister: %d whole, %d short\n", rd.full, rd.short_);
    uint64_t lo = f[1].off, hi = f[2].off; /* its bytes */
    CHECK_EQ(pfn_dax_alive(dax), 1);
    CHECK_EQ(pfn_dax_read(dax, 0, out, total), lo);           /* stops where it was */
    CHECK_EQ(pfn_dax_read(dax, lo - 10, out, 100), 10);
    CHECK(memcmp(out, model + lo - 10, 10) == 0);
    CHECK_EQ(pfn_dax_read(dax, lo, out, 1), -ENXIO);
    CHECK_EQ(pfn_dax_read(dax, hi - 1, out, 2), -ENXIO);
    CHECK_EQ(pfn_dax_write(dax, lo + 5, "x", 1), -ENXIO);
    CHECK_EQ(pfn_dax_zero(dax, lo - 3, 10), 3);                /* up to it */
    memset(model + lo - 3, 0, 3);
    CHECK_EQ(pfn_dax_zero(dax, lo, 10), -ENXIO);
    /* The third and fourth ranges, and across their boundary, still work. */
    for (size_t i = 0; i < 2 * PAGE; i++)
        src[i] = (unsigned char)rnd();
    CHECK_EQ(pfn_dax_write(dax, hi, src, 2 * PAGE), 2 * PAGE);
    memcpy(model + hi, src, 2 * PAGE);
    CHECK_EQ(pfn_dax_read(dax, hi, out, total), total - hi);
    CHECK(memcmp(out, model + hi, total - hi) == 0);
    {
        PFN_SECTION_SCOPE(s);
        (void)s;
        void *k = NULL;
        CHECK_EQ(pfn_dax_direct_access(dax, lo / PAGE, 1, &k, NULL), -ENXIO);
        CHECK_EQ(pfn_dax_direct_access(dax, hi / PAGE - 1, 1, &k, NULL), -ENXIO);
        CHECK_EQ(pfn_dax_direct_access(dax, lo / PAGE - 1, 1, &k, NULL), 1);
        CHECK_EQ(pfn_dax_direct_access(dax, hi / PAGE, 1, &k, NULL), 1);
    }
    /* The second file kept what it had; the others hold the model. */
    for (int i = 0; i < SPAN_PARTS; i++)
        CHECK(span_file_equals(&f[i], model, span_size[i]));
    /* A new span over the run now has a gap. */
    CHECK_NULL_ERRNO(pfn_dax_create_span(sdev, SPAN_PHYS, total), EINVAL);

    CHECK_EQ(pfn_dax_destroy(dax), 0);
    CHECK_EQ(pfn_device_free(sdev), 0);
    for (int i = 0; i < SPAN_PARTS; i++) {
        CHECK_EQ(pfn_pmem_unmap(f[i].m), 0);
        close(f[i].fd);
        unlink(f[i].path);
    }
    free(model);
    free(src);
    free(out);
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
    span_io(quick ? 150 : 1500);

    free(pattern);
    CHECK_EQ(pfn_device_free(dev), 0);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    close(fd);
    unlink(path);
    return check_report("int_dax");
}
