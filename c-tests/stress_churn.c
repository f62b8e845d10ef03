/* Churn: reader threads kmap random pfns (some nested across ranges, some on threads that exit
 * holding them), check each page's pattern and write to it, while a writer keeps registering
 * fresh memory and unregistering old ranges, munmapping each one the moment its unregister
 * returns. A reader still using a range after its grace period would fault (or see another
 * range's pattern): the test proves the grace period, not just the bookkeeping.
 *
 * It stops on work done, not on wall time: it runs until every reader has checked its minimum
 * of kmaps and the writer has registered and unregistered its minimum of ranges under them
 * (lower minimums with PFN_TEST_QUICK, for valgrind), so a loaded machine gets the same
 * coverage as an idle one, later. Only a hang reaches the cap, and then the test fails saying
 * so. PFN_STRESS_SECONDS keeps it going at least that long (a soak). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"

#define PAGE 4096ull
#define SLOTS 64          /* physical slots the writer cycles through */
#define SLOT_PAGES 16     /* pages per range */
#define PHYS (6ull << 40)
#define READERS 3
#define MAGIC 0x5EED5EED00000000ull
#define HANG_CAP 300      /* seconds; the default run takes a few */
#define BATCH 64          /* a reader publishes its counts every BATCH kmaps */

struct slot {
    char *mem; /* current mapping, or NULL */
    uint64_t gen;
};

static struct slot slots[SLOTS];
static pfn_device *dev;
static atomic_int stop;
static atomic_ullong bad_pattern;

/* The work the run must cover: one entry per kind (new kinds of worker add theirs here). */
enum { W_REGISTERED = READERS, W_UNREGISTERED, W_NESTED, W_EXITS, W_KINDS };
static char reader_what[READERS][48];
static struct check_work work[W_KINDS] = {
    [W_REGISTERED] = {"writer: ranges registered under readers", 0, 0},
    [W_UNREGISTERED] = {"writer: ranges unregistered and unmapped under readers", 0, 0},
    [W_NESTED] = {"readers: nested triples across ranges", 0, 0},
    [W_EXITS] = {"threads exited holding a kmap", 0, 0},
};

static void set_minimums(int quick)
{
    unsigned long long kmaps = quick ? 20000 : 1000000, ranges = quick ? 100 : 3000;
    for (int i = 0; i < READERS; i++) {
        snprintf(reader_what[i], sizeof reader_what[i], "reader %d: kmaps checked", i);
        work[i] = (struct check_work){reader_what[i], kmaps, 0};
    }
    work[W_REGISTERED].want = ranges;
    work[W_UNREGISTERED].want = ranges;
    work[W_NESTED].want = kmaps / 16;
    work[W_EXITS].want = quick ? 2 : 32;
}

static uint64_t phys_of(int s, int page) { return PHYS + ((uint64_t)s * SLOT_PAGES + page) * PAGE; }

/* Each page starts with its physical address ^ MAGIC: a translation to the wrong memory, or
 * to memory reused for another range, cannot pass the check. */
static char *make_range(int s)
{
    char *mem = mmap(NULL, SLOT_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(mem != MAP_FAILED);
    for (int p = 0; p < SLOT_PAGES; p++)
        *(uint64_t *)(mem + p * PAGE) = phys_of(s, p) ^ MAGIC;
    return mem;
}

static uint64_t rnd(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static int check_page(const char *a, uint64_t phys)
{
    return *(const volatile uint64_t *)a == (phys ^ MAGIC);
}

static void *hold_and_exit(void *arg)
{
    uint64_t phys = (uint64_t)(uintptr_t)arg;
    char *a = kmap_atomic_pfn_t(phys_to_pfn_t(phys, 0));
    if (a) {
        if (!check_page(a, phys))
            atomic_fetch_add(&bad_pattern, 1);
        check_work_add(&work[W_EXITS], 1);
    }
    return NULL; /* exits holding it: the exit must release it */
}

static void *reader(void *arg)
{
    struct check_work *mine = &work[(uintptr_t)arg];
    uint64_t x = 0x9E3779B97F4A7C15ull ^ (uintptr_t)arg, n = 0, nested = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        uint64_t r = rnd(&x);
        uint64_t phys = phys_of((int)(r % SLOTS), (int)((r >> 32) % SLOT_PAGES));
        char *a = kmap_atomic_pfn_t(phys_to_pfn_t(phys, PFN_DEV));
        if (!a) {
            if (errno != ENXIO)
                atomic_fetch_add(&bad_pattern, 1);
            continue;
        }
        if (!check_page(a, phys))
            atomic_fetch_add(&bad_pattern, 1);
        ((volatile uint64_t *)a)[1 + (uintptr_t)arg] = r; /* a write through the mapping */
        if ((r & 7) == 0) {
            /* Nested: two more pages of (likely) other ranges, released in mixed order. */
            uint64_t p2 = phys_of((int)(rnd(&x) % SLOTS), 0), p3 = phys_of((int)(rnd(&x) % SLOTS), 1);
            char *b = kmap_atomic_pfn_t(phys_to_pfn_t(p2, 0));
            char *c = kmap_atomic_pfn_t(phys_to_pfn_t(p3, 0));
            if ((b && !check_page(b, p2)) || (c && !check_page(c, p3)))
                atomic_fetch_add(&bad_pattern, 1);
            kunmap_atomic_pfn_t(b);
            if (!check_page(a, phys)) /* still held: still valid */
                atomic_fetch_add(&bad_pattern, 1);
            kunmap_atomic_pfn_t(a);
            kunmap_atomic_pfn_t(c);
            nested++;
        } else {
            kunmap_atomic_pfn_t(a);
        }
        if (++n == BATCH) {
            check_work_add(mine, n);
            check_work_add(&work[W_NESTED], nested);
            n = nested = 0;
        }
    }
    check_work_add(mine, n);
    check_work_add(&work[W_NESTED], nested);
    return NULL;
}

int main(void)
{
    set_minimums(getenv("PFN_TEST_QUICK") != NULL);
    dev = pfn_device_new("churn");
    REQUIRE(dev != NULL);
    for (int s = 0; s < SLOTS; s += 2) {
        slots[s].mem = make_range(s);
        pfn_resource r = {phys_of(s, 0), phys_of(s, SLOT_PAGES) - 1, NULL};
        REQUIRE(devm_register_kmap_pfn_range(dev, &r, slots[s].mem) == 0);
    }
    pthread_t t[READERS];
    for (int i = 0; i < READERS; i++)
        REQUIRE(pthread_create(&t[i], NULL, reader, (void *)(uintptr_t)i) == 0);

    /* The writer churns until every kind of work reached its minimum. */
    struct check_run run;
    check_run_start(&run, "stress_churn", work, W_KINDS, HANG_CAP);
    uint64_t x = 12345, steps = 0, fails = 0;
    while (check_run_more(&run)) {
        int s = (int)(rnd(&x) % SLOTS);
        if (slots[s].mem) {
            fails += pfn_unregister_range(dev, phys_of(s, 0)) != 0;
            /* The grace period is over: unmap at once. A late reader would now fault. */
            fails += munmap(slots[s].mem, SLOT_PAGES * PAGE) != 0;
            slots[s].mem = NULL;
            check_work_add(&work[W_UNREGISTERED], 1);
        } else {
            slots[s].mem = make_range(s);
            pfn_resource r = {phys_of(s, 0), phys_of(s, SLOT_PAGES) - 1, NULL};
            fails += devm_register_kmap_pfn_range(dev, &r, slots[s].mem) != 0;
            check_work_add(&work[W_REGISTERED], 1);
        }
        if ((++steps & 63) == 0) {
            pthread_t e;
            REQUIRE(pthread_create(&e, NULL, hold_and_exit, (void *)(uintptr_t)phys_of(s, 2)) == 0);
            pthread_detach(e);
        }
    }
    double seconds = check_seconds_since(&run.start);

    atomic_store(&stop, 1);
    for (int i = 0; i < READERS; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ(fails, 0);
    CHECK_EQ(atomic_load(&bad_pattern), 0);
    check_run_done(&run);
    /* Teardown with detached exiting threads possibly still around: it waits for them. */
    CHECK_EQ(pfn_device_free(dev), 0);
    for (int s = 0; s < SLOTS; s++)
        if (slots[s].mem)
            munmap(slots[s].mem, SLOT_PAGES * PAGE);
    printf("stress_churn: %.1f s to do the minimum work:\n", seconds);
    check_run_print(&run, stdout);
    return check_report("stress_churn");
}
