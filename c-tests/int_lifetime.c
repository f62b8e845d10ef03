/* The lifetime promise under racing calls (issue 8, items 1, 2, 8 and 12):
 * 1. a range being unregistered still belongs to its device and its mapping until its grace
 *    period ends: a device free of the same device waits for it, an unmap of its mapping is
 *    -EBUSY, a second unregister of the same start returns only after it;
 * 2. a device freed while a thread holding a kmap registers on it: the registration either
 *    fails (-EINVAL) or is unregistered by the free; no range outlives its device;
 * 8. a pfn_pmem_unmap refused with -EBUSY is invisible to other threads using the mapping,
 *    and a concurrent second unmap is refused the same way;
 * 12. releasing many nested kmaps first in, first out is not quadratic.
 * Windows are made deterministic: the waits are held open by a thread that holds a kmap until
 * the test has seen the other calls blocked (threads.h), never by sleeping and hoping. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"
#include "threads.h"

#define PAGE 4096ull
#define PHYS (11ull << 40)

static char *base;
static pfn_pmem *map;

/* A thread that holds a kmap of `phys` until told to release it. */
struct holder {
    uint64_t phys;
    atomic_int holding, release, released;
    pthread_t t;
};

static void *hold(void *arg)
{
    struct holder *h = arg;
    void *p = kmap_atomic_pfn_t(phys_to_pfn_t(h->phys, 0));
    atomic_store(&h->holding, p != NULL ? 1 : -1);
    while (!atomic_load(&h->release))
        usleep(200);
    atomic_store(&h->released, 1);
    kunmap_atomic_pfn_t(p);
    return NULL;
}

static void start_holder(struct holder *h, uint64_t phys)
{
    h->phys = phys;
    atomic_store(&h->holding, 0);
    atomic_store(&h->release, 0);
    atomic_store(&h->released, 0);
    REQUIRE(pthread_create(&h->t, NULL, hold, h) == 0);
    while (atomic_load(&h->holding) == 0)
        usleep(100);
    REQUIRE(atomic_load(&h->holding) == 1);
}

/* A call run on its own thread; records its result, whether the holder had released when it
 * returned, and its thread id (to see it blocked). */
struct call {
    int (*fn)(struct call *);
    pfn_device *dev;
    uint64_t start;
    struct holder *h;
    atomic_int tid, done, rc, after_release;
    pthread_t t;
};

static void *run_call(void *arg)
{
    struct call *c = arg;
    atomic_store(&c->tid, self_tid());
    int rc = c->fn(c);
    atomic_store(&c->after_release, atomic_load(&c->h->released));
    atomic_store(&c->rc, rc);
    atomic_store(&c->done, 1);
    return NULL;
}

static void start_call(struct call *c)
{
    atomic_store(&c->tid, 0);
    atomic_store(&c->done, 0);
    REQUIRE(pthread_create(&c->t, NULL, run_call, c) == 0);
    while (atomic_load(&c->tid) == 0)
        usleep(100);
}

static int do_unregister(struct call *c) { return pfn_unregister_range(c->dev, c->start); }
static int do_free(struct call *c) { return pfn_device_free(c->dev); }

static void register_at(pfn_device *d, uint64_t phys, uint64_t pages, char *at)
{
    pfn_resource r = {phys, phys + pages * PAGE - 1, NULL};
    REQUIRE(devm_register_kmap_pfn_range(d, &r, at) == 0);
}

/* Item 1. */
static void unregister_in_flight_owns_its_range(void)
{
    pfn_device *d = pfn_device_new("item1");
    REQUIRE(d != NULL);
    register_at(d, PHYS, 4, base);
    struct holder h;
    start_holder(&h, PHYS);

    struct call un = {.fn = do_unregister, .dev = d, .start = PHYS, .h = &h};
    start_call(&un);
    /* Unpublished at once: lookups miss it while the unregister waits for the holder. */
    for (;;) {
        void *p = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS, 0));
        if (!p)
            break;
        kunmap_atomic_pfn_t(p);
        usleep(100);
    }
    CHECK(wait_blocked_or_done(atomic_load(&un.tid), &un.done));

    /* Still in the mapping: unmapping it now is refused, and returns at once. */
    CHECK_EQ(pfn_pmem_unmap(map), -EBUSY);
    /* A second unregister of the same start returns only after the first one's grace period. */
    struct call again = {.fn = do_unregister, .dev = d, .start = PHYS, .h = &h};
    start_call(&again);
    CHECK(wait_blocked_or_done(atomic_load(&again.tid), &again.done));
    /* Still the device's: freeing the device waits for it. */
    struct call fr = {.fn = do_free, .dev = d, .h = &h};
    start_call(&fr);
    CHECK(wait_blocked_or_done(atomic_load(&fr.tid), &fr.done));
    /* Its physical space is still taken. */
    pfn_device *other = pfn_device_new("other");
    REQUIRE(other != NULL);
    pfn_resource r = {PHYS, PHYS + PAGE - 1, NULL};
    CHECK_EQ(devm_register_kmap_pfn_range(other, &r, base), -EBUSY);

    atomic_store(&h.release, 1);
    pthread_join(h.t, NULL);
    pthread_join(un.t, NULL);
    pthread_join(fr.t, NULL);
    pthread_join(again.t, NULL);
    CHECK_EQ(atomic_load(&un.rc), 0);
    CHECK_EQ(atomic_load(&un.after_release), 1);
    CHECK_EQ(atomic_load(&fr.rc), 0);
    CHECK_EQ(atomic_load(&fr.after_release), 1);
    /* The range was unregistered by the first call: the second says -ENOENT, after it. */
    CHECK_EQ(atomic_load(&again.rc), -ENOENT);
    CHECK_EQ(atomic_load(&again.after_release), 1);
    /* Now it is all gone: the space is free and the mapping could go. */
    CHECK_EQ(devm_register_kmap_pfn_range(other, &r, base), 0);
    CHECK_EQ(pfn_device_free(other), 0);
}

/* Item 2: a thread holding a kmap registers on a device while another thread frees it. The
 * free unpublishes the device's ranges and then waits for the holder, which registers while
 * the free waits. */
struct reg_while_held {
    pfn_device *dev;
    uint64_t hold_phys, reg_phys;
    atomic_int holding, go, rc, done;
};

static void *hold_and_register(void *arg)
{
    struct reg_while_held *w = arg;
    void *p = kmap_atomic_pfn_t(phys_to_pfn_t(w->hold_phys, 0));
    atomic_store(&w->holding, p != NULL);
    while (!atomic_load(&w->go))
        usleep(100);
    pfn_resource r = {w->reg_phys, w->reg_phys + PAGE - 1, NULL};
    atomic_store(&w->rc, devm_register_kmap_pfn_range(w->dev, &r, base + PAGE));
    atomic_store(&w->done, 1);
    kunmap_atomic_pfn_t(p);
    return NULL;
}

static void no_range_outlives_its_device(void)
{
    pfn_device *d = pfn_device_new("item2");
    REQUIRE(d != NULL);
    register_at(d, PHYS + 64 * PAGE, 1, base);
    struct reg_while_held w = {.dev = d, .hold_phys = PHYS + 64 * PAGE, .reg_phys = PHYS + 65 * PAGE};
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, hold_and_register, &w) == 0);
    while (!atomic_load(&w.holding))
        usleep(100);
    struct holder none;
    memset(&none, 0, sizeof none);
    atomic_store(&none.released, 1);
    struct call fr = {.fn = do_free, .dev = d, .h = &none};
    start_call(&fr);
    /* The free has unpublished the device's range and waits for the holder. */
    for (;;) {
        void *p = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + 64 * PAGE, 0));
        if (!p)
            break;
        kunmap_atomic_pfn_t(p);
        usleep(100);
    }
    atomic_store(&w.go, 1);
    pthread_join(t, NULL);
    pthread_join(fr.t, NULL);
    CHECK_EQ(atomic_load(&fr.rc), 0);
    /* The registration failed, or the free removed it: either way nothing is left. */
    CHECK(atomic_load(&w.rc) == -EINVAL || atomic_load(&w.rc) == 0);
    errno = 0;
    CHECK_NULL_ERRNO(kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + 65 * PAGE, 0)), ENXIO);
    pfn_device *again = pfn_device_new("again");
    REQUIRE(again != NULL);
    pfn_resource r = {PHYS + 64 * PAGE, PHYS + 66 * PAGE - 1, NULL};
    CHECK_EQ(devm_register_kmap_pfn_range(again, &r, base), 0);
    CHECK_EQ(pfn_device_free(again), 0);
    /* And registering on the freed device is refused. */
    CHECK_EQ(devm_register_kmap_pfn_range(d, &r, base), -EINVAL);
}

/* Item 8: while unmaps are refused, users of the mapping see nothing. */
static atomic_int stop_users, user_errors, user_calls;

static void *use_mapping(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_users)) {
        char *a = pfn_pmem_addr(map);
        if (a != base || pfn_pmem_persist(map, base, 64) != 0 || pfn_pmem_size(map) == 0)
            atomic_fetch_add(&user_errors, 1);
        atomic_fetch_add(&user_calls, 1);
    }
    return NULL;
}

static void *unmap_refused(void *arg)
{
    int *wrong = arg;
    for (int i = 0; i < 20000; i++)
        *wrong += pfn_pmem_unmap(map) != -EBUSY;
    return NULL;
}

static void refused_unmap_is_invisible(void)
{
    pfn_device *d = pfn_device_new("item8");
    REQUIRE(d != NULL);
    register_at(d, PHYS + 128 * PAGE, 1, base + 8 * PAGE);
    pthread_t users[2], unmappers[2];
    int wrong[2] = {0, 0};
    for (int i = 0; i < 2; i++)
        REQUIRE(pthread_create(&users[i], NULL, use_mapping, NULL) == 0);
    for (int i = 0; i < 2; i++)
        REQUIRE(pthread_create(&unmappers[i], NULL, unmap_refused, &wrong[i]) == 0);
    for (int i = 0; i < 2; i++)
        pthread_join(unmappers[i], NULL);
    atomic_store(&stop_users, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(users[i], NULL);
    CHECK_EQ(wrong[0] + wrong[1], 0);
    CHECK_EQ(atomic_load(&user_errors), 0);
    CHECK(atomic_load(&user_calls) > 0);
    CHECK_EQ(pfn_device_free(d), 0);
}

/* Item 12: 200,000 nested kmaps released first in, first out, then last in, first out. */
static void fifo_release_is_linear(void)
{
    enum { N = 200000 };
    pfn_device *d = pfn_device_new("item12");
    REQUIRE(d != NULL);
    register_at(d, PHYS + 256 * PAGE, 64, base);
    static void *held[N];
    int ok = 1;
    for (int i = 0; i < N; i++) {
        held[i] = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + (256 + (uint64_t)(i % 64)) * PAGE, 0));
        ok &= held[i] == base + (i % 64) * PAGE;
    }
    CHECK(ok);
    int released = 0;
    for (int i = 0; i < N / 2; i++)
        released += kunmap_atomic_pfn_t(held[i]) == 0;
    for (int i = N - 1; i >= N / 2; i--)
        released += kunmap_atomic_pfn_t(held[i]) == 0;
    CHECK_EQ(released, N);
    CHECK_EQ(kunmap_atomic_pfn_t(held[0]), -EINVAL);
    CHECK_EQ(pfn_device_free(d), 0);
}

int main(void)
{
    /* A quadratic release or a lost wake-up fails the test instead of hanging it. */
    alarm(120);
    char path[256];
    test_path(path, sizeof path, "int_lifetime");
    unlink(path);
    map = pfn_pmem_map(path, 64 * PAGE, PFN_PMEM_CREATE);
    REQUIRE(map != NULL);
    base = pfn_pmem_addr(map);

    unregister_in_flight_owns_its_range();
    no_range_outlives_its_device();
    refused_unmap_is_invisible();
    fifo_release_is_linear();

    CHECK_EQ(pfn_pmem_unmap(map), 0);
    unlink(path);
    return check_report("int_lifetime");
}
