/* Unregister waits for kmaps held on other threads, and only for them. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"

#define PAGE 4096ull
#define PHYS (3ull << 40)

static char *base;
static atomic_int held;     /* the holder has its kmap */
static atomic_int released; /* the holder is about to kunmap */
static atomic_int saw_gone; /* the holder saw a watched range gone (ENXIO) while holding */

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* What the holder holds, and the pages whose disappearance shows that an unregister of them
 * has begun. No sleep stands in for that ordering: the holder keeps its kmap until it has
 * seen one of them gone, so the unregister on the other thread is then provably waiting for
 * it (or never returns, and the watchdog fails the test as hung). */
struct hold {
    uint64_t phys;
    uint64_t watch[2];
};

static int gone(uint64_t phys)
{
    errno = 0;
    void *p = kmap_atomic_pfn_t(phys_to_pfn_t(phys, 0));
    if (p) {
        kunmap_atomic_pfn_t(p);
        return 0;
    }
    return errno == ENXIO ? 1 : -1;
}

static void *hold_until_unregister_begins(void *arg)
{
    const struct hold *h = arg;
    volatile uint64_t *p = kmap_atomic_pfn_t(phys_to_pfn_t(h->phys, 0));
    if (!p)
        return (void *)1;
    atomic_store(&held, 1);
    int seen = 0;
    while (!seen) {
        for (int i = 0; i < 2 && !seen; i++)
            if (h->watch[i])
                seen = gone(h->watch[i]);
        if (!seen)
            sched_yield();
    }
    atomic_store(&saw_gone, seen == 1);
    /* Still mapped: the unregister on the main thread is waiting for us. */
    *p = 42;
    atomic_store(&released, 1);
    kunmap_atomic_pfn_t((void *)p);
    return NULL;
}

static void start_holder(pthread_t *t, struct hold *h)
{
    atomic_store(&held, 0);
    atomic_store(&released, 0);
    atomic_store(&saw_gone, 0);
    REQUIRE(pthread_create(t, NULL, hold_until_unregister_begins, h) == 0);
    while (!atomic_load(&held))
        sleep_ms(1);
}

static void *hold_and_exit(void *arg)
{
    uint64_t phys = (uint64_t)(uintptr_t)arg;
    void *p = kmap_atomic_pfn_t(phys_to_pfn_t(phys, 0));
    atomic_store(&held, 1);
    return p; /* exits holding the kmap */
}

static void *kunmap_foreign(void *arg)
{
    /* Another thread's address: this thread holds nothing, so nothing is released. */
    kunmap_atomic_pfn_t(arg);
    return NULL;
}

static void register_one(pfn_device *dev, uint64_t phys, char *at)
{
    pfn_resource r = {phys, phys + PAGE - 1, NULL};
    CHECK_EQ(devm_register_kmap_pfn_range(dev, &r, at), 0);
}

static void unregister_waits_for_other_thread(pfn_device *dev)
{
    register_one(dev, PHYS, base);
    struct hold h = {PHYS, {PHYS, 0}};
    pthread_t t;
    start_holder(&t, &h);
    CHECK_EQ(pfn_unregister_range(dev, PHYS), 0);
    /* It returned only after the holder released its kmap. */
    CHECK_EQ(atomic_load(&released), 1);
    void *ret;
    pthread_join(t, &ret);
    CHECK(ret == NULL);
    CHECK_EQ(atomic_load(&saw_gone), 1);
    CHECK_EQ(*(volatile uint64_t *)base, 42);
}

static void removal_is_immediate_for_new_lookups(pfn_device *dev)
{
    /* While an unregister waits, other lookups of the range already fail. */
    register_one(dev, PHYS + PAGE, base + PAGE);
    register_one(dev, PHYS + 2 * PAGE, base + 2 * PAGE);
    /* The holder holds a different range: unregister still waits (grace periods are global),
     * while the holder sees the unregistered range gone before the wait ends. */
    struct hold h = {PHYS + 2 * PAGE, {PHYS + PAGE, 0}};
    pthread_t t;
    start_holder(&t, &h);
    CHECK_EQ(pfn_unregister_range(dev, PHYS + PAGE), 0);
    CHECK_EQ(atomic_load(&released), 1);
    pthread_join(t, NULL);
    CHECK_EQ(atomic_load(&saw_gone), 1);
    CHECK_NULL_ERRNO(kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + PAGE, 0)), ENXIO);
    CHECK_EQ(pfn_unregister_range(dev, PHYS + 2 * PAGE), 0);
}

static void device_free_waits(void)
{
    pfn_device *dev = pfn_device_new("waited");
    REQUIRE(dev != NULL);
    register_one(dev, PHYS + 8 * PAGE, base);
    register_one(dev, PHYS + 9 * PAGE, base + PAGE);
    /* Whichever range the free removes first, its removal shows the free has begun. */
    struct hold h = {PHYS + 9 * PAGE, {PHYS + 8 * PAGE, PHYS + 9 * PAGE}};
    pthread_t t;
    start_holder(&t, &h);
    CHECK_EQ(pfn_device_free(dev), 0);
    CHECK_EQ(atomic_load(&released), 1);
    CHECK_NULL_ERRNO(kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + 9 * PAGE, 0)), ENXIO);
    pthread_join(t, NULL);
    CHECK_EQ(atomic_load(&saw_gone), 1);
}

static void thread_exit_releases(pfn_device *dev)
{
    register_one(dev, PHYS + 4 * PAGE, base + 4 * PAGE);
    atomic_store(&held, 0);
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, hold_and_exit, (void *)(uintptr_t)(PHYS + 4 * PAGE)) == 0);
    void *p;
    pthread_join(t, &p);
    CHECK(p == base + 4 * PAGE);
    /* Would hang (and the watchdog would fail the test) if the exited thread still held it. */
    CHECK_EQ(pfn_unregister_range(dev, PHYS + 4 * PAGE), 0);
}

static void foreign_kunmap_releases_nothing(pfn_device *dev)
{
    register_one(dev, PHYS + 5 * PAGE, base + 5 * PAGE);
    void *mine = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + 5 * PAGE, 0));
    CHECK(mine == base + 5 * PAGE);
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, kunmap_foreign, mine) == 0);
    pthread_join(t, NULL);
    /* Still held by this thread. */
    CHECK_EQ(pfn_unregister_range(dev, PHYS + 5 * PAGE), -EDEADLK);
    kunmap_atomic_pfn_t(mine);
    CHECK_EQ(pfn_unregister_range(dev, PHYS + 5 * PAGE), 0);
}

int main(void)
{
    check_watchdog("int_threads", 120); /* a wait that never ends fails the test as hung */
    char path[256];
    test_path(path, sizeof path, "int_threads");
    unlink(path);
    pfn_pmem *m = pfn_pmem_map(path, 16 * PAGE, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    base = pfn_pmem_addr(m);
    pfn_device *dev = pfn_device_new("threads");
    REQUIRE(dev != NULL);

    unregister_waits_for_other_thread(dev);
    removal_is_immediate_for_new_lookups(dev);
    device_free_waits();
    thread_exit_releases(dev);
    foreign_kunmap_releases_nothing(dev);

    CHECK_EQ(pfn_device_free(dev), 0);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    unlink(path);
    return check_report("int_threads");
}
