/* Issue 8 item 2, the narrow window: a thread that holds a kmap registers a range on a device
 * (that has no ranges yet) while another thread frees the device. The free is made to run in
 * the middle of the registration, deterministically: the registration's own allocation (this
 * is the process's first registration, so it allocates) starts the free on another thread and
 * waits until that free has finished or is blocked. Whatever the interleaving, no range may
 * outlive its device: afterwards the range does not translate and its space is free. Not run
 * under ASan or valgrind (oom.h owns malloc). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"
#include "oom.h"
#include "threads.h"

#define PAGE 4096ull
#define PHYS (13ull << 40)

static char *base;
static pfn_device *dev;
static atomic_int free_tid, free_done, free_rc;

static void *free_device(void *arg)
{
    (void)arg;
    atomic_store(&free_tid, self_tid());
    atomic_store(&free_rc, pfn_device_free(dev));
    atomic_store(&free_done, 1);
    return NULL;
}

static pthread_t freer;
static atomic_int hooked;

/* Runs inside the registration's allocation. */
static void start_free_meanwhile(void)
{
    oom_on_alloc = NULL;
    atomic_store(&hooked, 1);
    REQUIRE(pthread_create(&freer, NULL, free_device, NULL) == 0);
    while (atomic_load(&free_tid) == 0)
        usleep(100);
    wait_blocked_or_done(atomic_load(&free_tid), &free_done);
}

int main(void)
{
    alarm(60);
    char path[256];
    test_path(path, sizeof path, "int_free_race");
    unlink(path);
    pfn_pmem *m = pfn_pmem_map(path, 16 * PAGE, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    base = pfn_pmem_addr(m);
    dev = pfn_device_new("raced");
    REQUIRE(dev != NULL);
    /* This thread holds a kmap of another device's range: registering is allowed then, and an
     * unregister from here would be refused (so no cleanup can happen on this thread). */
    pfn_device *held_dev = pfn_device_new("held");
    REQUIRE(held_dev != NULL);
    pfn_resource hr = {PHYS, PHYS + PAGE - 1, NULL};
    REQUIRE(devm_register_kmap_pfn_range(held_dev, &hr, base) == 0);
    void *held = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS, 0));
    CHECK(held == base);

    /* Another 2 MiB block: the table needs a new node, so the registration allocates. */
    pfn_resource r = {PHYS + (4ull << 20), PHYS + (4ull << 20) + PAGE - 1, NULL};
    oom_on_alloc = start_free_meanwhile;
    int rc = devm_register_kmap_pfn_range(dev, &r, base);
    oom_on_alloc = NULL;
    CHECK(atomic_load(&hooked)); /* the registration allocated, and the free ran inside it */
    /* The free waits for every reader, this thread too: let go before waiting for it. */
    CHECK_EQ(kunmap_atomic_pfn_t(held), 0);
    pthread_join(freer, NULL);
    CHECK_EQ(atomic_load(&free_rc), 0);
    CHECK(rc == 0 || rc == -EINVAL);
    /* Nothing outlives the device: the range does not translate and its space is free. */
    CHECK_NULL_ERRNO(kmap_atomic_pfn_t(phys_to_pfn_t(r.start, 0)), ENXIO);
    CHECK_EQ(devm_register_kmap_pfn_range(held_dev, &r, base), 0);
    CHECK_EQ(pfn_device_free(held_dev), 0);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    unlink(path);
    printf("int_free_race: the registration %s\n", rc == 0 ? "completed first and the free removed it"
                                                          : "came after the free and was refused");
    return check_report("int_free_race");
}
