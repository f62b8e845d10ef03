/* Free-space registration (pfn_register_free, issue 14 item 3): the start it picks is aligned,
 * below 2^56 and free; racing threads that register free space, register at chosen starts in
 * the same part of the space, and unregister (so holes open and are reused meanwhile) never
 * end up with overlapping ranges, and every range translates to its own memory. Errors leave
 * `*start` unwritten. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "pfn.h"
#include "check.h"

#define PAGE 4096ull
#define TOP (1ull << 56)
#define THREADS 6
#define ROUNDS 150
#define REGION_PAGES 256

struct range {
    uint64_t start, size;
    char *base;
    bool live;
};

static pfn_device *dev;
static char *region;
static struct range ranges[THREADS][ROUNDS];
static struct check_work work[] = {
    {"free-space registrations", THREADS / 2 * ROUNDS, 0},
    {"registrations at chosen starts tried", THREADS / 2 * ROUNDS, 0},
};

static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void *worker(void *arg)
{
    long id = (long)arg;
    uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(id + 1);
    for (int i = 0; i < ROUNDS; i++) {
        struct range *r = &ranges[id][i];
        uint64_t pages = 1 + next_rand(&seed) % 16;
        r->size = pages * PAGE;
        r->base = region + (next_rand(&seed) % (REGION_PAGES - pages + 1)) * PAGE;
        if (id % 2 == 0) {
            uint64_t start = 1; /* must stay as is unless the call succeeds */
            int rc = pfn_register_free(dev, r->size, 0, r->base, &start);
            REQUIRE(rc == 0);
            r->start = start;
            r->live = true;
            check_work_add(&work[0], 1);
        } else {
            /* A chosen start where the free-space search is working: near the top. */
            r->start = TOP - (1 + next_rand(&seed) % 2048) * 16 * PAGE;
            pfn_resource res = {r->start, r->start + r->size - 1, "chosen"};
            int rc = devm_register_kmap_pfn_range(dev, &res, r->base);
            REQUIRE(rc == 0 || rc == -EBUSY);
            r->live = rc == 0;
            check_work_add(&work[1], 1);
        }
        /* Every third range goes again, opening a hole the others may fill at once. */
        if (r->live && next_rand(&seed) % 3 == 0) {
            REQUIRE(pfn_unregister_range(dev, r->start) == 0);
            r->live = false;
        }
    }
    return NULL;
}

static int by_start(const void *a, const void *b)
{
    const struct range *x = *(const struct range *const *)a, *y = *(const struct range *const *)b;
    return (x->start > y->start) - (x->start < y->start);
}

static void errors(void)
{
    uint64_t start = 77;
    CHECK_EQ(pfn_register_free(dev, 0, 0, region, &start), -EINVAL);
    CHECK_EQ(pfn_register_free(dev, 100, 0, region, &start), -EINVAL);
    CHECK_EQ(pfn_register_free(dev, PAGE, 3 * PAGE, region, &start), -EINVAL);
    CHECK_EQ(pfn_register_free(dev, PAGE, 0, region + 1, &start), -EINVAL);
    CHECK_EQ(pfn_register_free(dev, PAGE, 0, NULL, &start), -EINVAL);
    CHECK_EQ(pfn_register_free(dev, PAGE, 0, region, NULL), -EINVAL);
    CHECK_EQ(pfn_register_free(NULL, PAGE, 0, region, &start), -EINVAL);
    /* Larger than the whole space byte handles reach: nothing fits. */
    CHECK_EQ(pfn_register_free(dev, TOP, 0, region, &start), -ENOSPC);
    CHECK(strstr(pfn_errormsg(), "no free physical range") != NULL);
    CHECK_EQ(start, 77);

    /* Alignment: asked, or (0) the largest power of two not above the size, at most 1 GiB. */
    CHECK_EQ(pfn_register_free(dev, 3 * PAGE, 0, region, &start), 0);
    CHECK_EQ(start % (2 * PAGE), 0);
    CHECK(start + 3 * PAGE <= TOP && start != 0);
    CHECK_EQ(pfn_unregister_range(dev, start), 0);
    CHECK_EQ(pfn_register_free(dev, PAGE, 1ull << 30, region, &start), 0);
    CHECK_EQ(start % (1ull << 30), 0);
    void *a = kmap_atomic_pfn_t(phys_to_pfn_t(start, PFN_DEV));
    CHECK(a == region);
    CHECK_EQ(kunmap_atomic_pfn_t(a), 0);
    CHECK_EQ(pfn_unregister_range(dev, start), 0);
}

int main(void)
{
    check_watchdog("int_free_space", 600);
    region = mmap(NULL, REGION_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(region != MAP_FAILED);
    dev = pfn_device_new("free");
    REQUIRE(dev != NULL);
    errors();

    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++)
        REQUIRE(pthread_create(&t[i], NULL, worker, (void *)i) == 0);
    for (int i = 0; i < THREADS; i++)
        REQUIRE(pthread_join(t[i], NULL) == 0);
    CHECK(check_work_count(&work[0]) == THREADS / 2 * ROUNDS);
    CHECK(check_work_count(&work[1]) == THREADS / 2 * ROUNDS);

    /* The live ranges: pairwise disjoint, below 2^56, each translating to its own memory. */
    struct range *live[THREADS * ROUNDS];
    size_t n = 0, chosen = 0;
    for (int i = 0; i < THREADS; i++)
        for (int j = 0; j < ROUNDS; j++)
            if (ranges[i][j].live) {
                live[n++] = &ranges[i][j];
                chosen += i % 2;
            }
    CHECK(n > THREADS * ROUNDS / 3);
    CHECK(chosen > 0);
    qsort(live, n, sizeof live[0], by_start);
    size_t overlaps = 0, wrong = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && live[i - 1]->start + live[i - 1]->size > live[i]->start)
            overlaps++;
        if (live[i]->start + live[i]->size > TOP || live[i]->start % PAGE)
            wrong++;
        char *first = kmap_atomic_pfn_t(phys_to_pfn_t(live[i]->start, PFN_DEV));
        char *last = kmap_atomic_pfn_t(phys_to_pfn_t(live[i]->start + live[i]->size - PAGE, PFN_DEV));
        if (first != live[i]->base || last != live[i]->base + live[i]->size - PAGE)
            wrong++;
        if (first)
            kunmap_atomic_pfn_t(first);
        if (last)
            kunmap_atomic_pfn_t(last);
    }
    CHECK_EQ(overlaps, 0);
    CHECK_EQ(wrong, 0);
    CHECK_EQ(pfn_device_free(dev), 0);
    munmap(region, REGION_PAGES * PAGE);
    return check_report("int_free_space");
}
