/* pfn_errormsg (issue 13): every failing call leaves a message naming the call, the condition
 * and the values; a successful call leaves it as it was; each thread has its own. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"

#define PAGE 4096ull
#define PHYS (23ull << 40)

/* The message holds every one of the fragments (NULL-terminated list). */
static int says(const char *where, const char *const *fragments)
{
    const char *m = pfn_errormsg();
    for (const char *const *f = fragments; *f; f++)
        if (!strstr(m, *f)) {
            fprintf(stderr, "%s: message \"%s\" lacks \"%s\"\n", where, m, *f);
            return 0;
        }
    return 1;
}
#define SAYS(...) CHECK(says(#__VA_ARGS__, (const char *const[]){__VA_ARGS__, NULL}))

static void *other_thread_fails(void *arg)
{
    (void)arg;
    CHECK_NULL_ERRNO(kmap_atomic_pfn_t(pfn_to_pfn_t(1)), ENXIO);
    return NULL;
}

/* A thread that was never set up: the persistence calls do not set it up, and their message
 * still reaches pfn_errormsg on that thread. */
static void *fresh_thread(void *arg)
{
    (void)arg;
    int rc = pfn_persist(NULL, 1);
    int ok = rc == -EINVAL && strstr(pfn_errormsg(), "pfn_persist") != NULL;
    return ok ? (void *)1 : NULL;
}

int main(void)
{
    char path[256];
    test_path(path, sizeof path, "api_errmsg");
    unlink(path);
    CHECK(pfn_errormsg() != NULL);
    pthread_t ft;
    void *fresh_ok = NULL;
    REQUIRE(pthread_create(&ft, NULL, fresh_thread, NULL) == 0);
    REQUIRE(pthread_join(ft, &fresh_ok) == 0);
    CHECK(fresh_ok != NULL);
    pfn_pmem *m = pfn_pmem_map(path, 16 * PAGE, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    char *base = pfn_pmem_addr(m);
    pfn_device *dev = pfn_device_new("errmsg");
    REQUIRE(dev != NULL);

    /* The classic off-by-one: .end = start + size instead of start + size - 1. */
    pfn_resource off_by_one = {PHYS, PHYS + 4 * PAGE, NULL};
    CHECK_EQ(devm_register_kmap_pfn_range(dev, &off_by_one, base), -EINVAL);
    SAYS("devm_register_kmap_pfn_range", "end + 1", "0x170000004001", "not page-aligned");
    pfn_resource unaligned = {PHYS + 1, PHYS + 4 * PAGE - 1, NULL};
    CHECK_EQ(devm_register_kmap_pfn_range(dev, &unaligned, base), -EINVAL);
    SAYS("start 0x170000000001", "not page-aligned");
    pfn_resource ok = {PHYS, PHYS + 4 * PAGE - 1, NULL};
    CHECK_EQ(devm_register_kmap_pfn_range(dev, &ok, base + 8), -EINVAL);
    SAYS("base", "not page-aligned");
    CHECK_EQ(devm_register_kmap_pfn_range(dev, NULL, base), -EINVAL);
    SAYS("res is NULL");
    CHECK_EQ(devm_register_kmap_pfn_range(dev, &ok, NULL), -EINVAL);
    SAYS("base is NULL");
    CHECK_EQ(devm_register_kmap_pfn_range(dev, &ok, base), 0);
    /* A success leaves the last message. */
    SAYS("base is NULL");
    pfn_device *other = pfn_device_new("other");
    REQUIRE(other != NULL);
    pfn_resource overlap = {PHYS + 2 * PAGE, PHYS + 8 * PAGE - 1, NULL};
    CHECK_EQ(devm_register_kmap_pfn_range(other, &overlap, base), -EBUSY);
    SAYS("overlaps", "registered range", "0x170000000000");
    CHECK_EQ(pfn_unregister_range(other, PHYS), -ENOENT);
    SAYS("pfn_unregister_range", "no range at 0x170000000000");
    CHECK_EQ(pfn_device_free((pfn_device *)&ok), -EINVAL);
    SAYS("pfn_device_free", "not a live device");

    CHECK_NULL_ERRNO(kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + 64 * PAGE, 0)), ENXIO);
    SAYS("kmap_atomic_pfn_t", "lies in no registered range", "0x170000040000");
    CHECK_NULL_ERRNO(kmap_atomic_pfn_t(phys_to_pfn_t(PHYS, PFN_SG_CHAIN)), EINVAL);
    SAYS("PFN_SG_CHAIN");
    void *held = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS, 0));
    CHECK(held == base);
    CHECK_EQ(pfn_unregister_range(dev, PHYS), -EDEADLK);
    SAYS("holds 1 kmap(s)", "would wait for itself");
    CHECK_EQ(pfn_pmem_unmap(m), -EDEADLK);
    CHECK_EQ(kunmap_atomic_pfn_t(held), 0);
    CHECK_EQ(kunmap_atomic_pfn_t(held), -EINVAL);
    SAYS("kunmap_atomic_pfn_t", "holds no kmap");
    CHECK_EQ(pfn_pmem_unmap(m), -EBUSY);
    SAYS("pfn_pmem_unmap", "lies in the mapping", "unregister it first");
    CHECK_EQ(pfn_pmem_persist(m, base + 15 * PAGE, 2 * PAGE), -EINVAL);
    SAYS("pfn_pmem_persist", "not inside the mapping");
    CHECK_NULL_ERRNO(pfn_pmem_map(path, 100, 0), EINVAL);
    SAYS("pfn_pmem_map", "size 0x64", "multiple of the page size");
    CHECK_NULL_ERRNO(pfn_pmem_map(path, 64 * PAGE, 0), EINVAL);
    SAYS("shorter than offset + size");
    CHECK_NULL_ERRNO(pfn_pmem_map("/", 0, 0), EISDIR);
    SAYS("directory");
    CHECK_NULL_ERRNO(pfn_pmem_map("/dev/null", 0, 0), EINVAL);
    SAYS("not a device-DAX device");
    CHECK_NULL_ERRNO(pfn_pmem_map("/nonexistent-dir/x", PAGE, 0), ENOENT);
    SAYS("pfn_pmem_map", "No such file");

    pfn_t out;
    CHECK_EQ(pfn_virt_to_pfn_t(path, &out), -ENXIO);
    SAYS("pfn_virt_to_pfn_t", "lies in no registered range");
    pfn_section s;
    s.reader = NULL;
    CHECK_EQ(pfn_section_close(&s), -EINVAL);
    SAYS("pfn_section_close", "not open");
    CHECK_NULL_ERRNO(pfn_memcpy_persist(NULL, base, 8), EINVAL);
    SAYS("pfn_memcpy_persist", "dst");

    /* Another thread's failure does not touch this thread's message. */
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, other_thread_fails, NULL) == 0);
    pthread_join(t, NULL);
    SAYS("pfn_memcpy_persist", "dst");

    CHECK_EQ(pfn_device_free(other), 0);
    CHECK_EQ(pfn_device_free(dev), 0);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    unlink(path);
    return check_report("api_errmsg");
}
