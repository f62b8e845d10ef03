/* Register a pmem file, write and read through pfns, persist, remap and read back; kmap_len,
 * nesting, foreign kunmaps, and device teardown of all its ranges. */
#define _GNU_SOURCE
#include <stdint.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"

#define PAGE 4096ull
#define PAGES 64ull
#define PHYS (1ull << 40) /* where the file sits in the library's physical space */

static void write_persist_remap(const char *path)
{
    pfn_pmem *m = pfn_pmem_map(path, PAGES * PAGE, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    CHECK_EQ(pfn_pmem_size(m), PAGES * PAGE);
    char *base = pfn_pmem_addr(m);
    CHECK(base != NULL);
    CHECK_EQ((uintptr_t)base % PAGE, 0);

    pfn_device *dev = pfn_device_new("pmem0");
    REQUIRE(dev != NULL);
    pfn_resource res = {PHYS, PHYS + PAGES * PAGE - 1, "pmem0.0"};
    CHECK_EQ(devm_register_kmap_pfn_range(dev, &res, base), 0);

    /* Each page gets its own pattern through its own pfn. */
    for (uint64_t i = 0; i < PAGES; i++) {
        pfn_t p = phys_to_pfn_t(PHYS + i * PAGE, PFN_DEV);
        uint64_t *word = kmap_atomic_pfn_t(p);
        CHECK(word == (uint64_t *)(base + i * PAGE));
        if (word) {
            word[0] = 0xC0FFEE00ull + i;
            word[PAGE / 8 - 1] = ~(0xC0FFEE00ull + i);
            CHECK_EQ(pfn_pmem_persist(m, word, PAGE), 0);
        }
        kunmap_atomic_pfn_t(word);
    }
    /* Flags never change the translation. */
    void *a = kmap_atomic_pfn_t(__pfn_to_pfn_t((PHYS >> 12) + 3, PFN_MAP | PFN_SPECIAL | PFN_SG_LAST));
    CHECK(a == base + 3 * PAGE);
    kunmap_atomic_pfn_t(a);

    /* The mapping cannot go while a range lies in it. */
    CHECK_EQ(pfn_pmem_unmap(m), -EBUSY);
    CHECK_EQ(pfn_pmem_size(m), PAGES * PAGE);
    CHECK_EQ(pfn_unregister_range(dev, PHYS), 0);
    CHECK_NULL_ERRNO(kmap_atomic_pfn_t(phys_to_pfn_t(PHYS, 0)), ENXIO);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    CHECK_EQ(pfn_device_free(dev), 0);

    /* A new mapping (likely at another address), registered at the same physical base:
     * the stored pfns still lead to the data. */
    m = pfn_pmem_map(path, 0, 0);
    REQUIRE(m != NULL);
    CHECK_EQ(pfn_pmem_size(m), PAGES * PAGE);
    base = pfn_pmem_addr(m);
    dev = pfn_device_new(NULL);
    REQUIRE(dev != NULL);
    res.name = NULL;
    CHECK_EQ(devm_register_kmap_pfn_range(dev, &res, base), 0);
    int intact = 1;
    for (uint64_t i = 0; i < PAGES; i++) {
        uint64_t *word = kmap_atomic_pfn_t(pfn_to_pfn_t((PHYS >> 12) + i));
        CHECK(word != NULL);
        if (word)
            intact &= word[0] == 0xC0FFEE00ull + i && word[PAGE / 8 - 1] == ~(0xC0FFEE00ull + i);
        kunmap_atomic_pfn_t(word);
    }
    CHECK(intact);

    /* kmap_len: bytes to the range's end. */
    uint64_t len = 12345;
    char *p = kmap_atomic_pfn_t_len(phys_to_pfn_t(PHYS + 10 * PAGE, 0), &len);
    CHECK(p == base + 10 * PAGE);
    CHECK_EQ(len, (PAGES - 10) * PAGE);
    kunmap_atomic_pfn_t(p);
    p = kmap_atomic_pfn_t_len(phys_to_pfn_t(PHYS + (PAGES - 1) * PAGE, 0), NULL);
    CHECK(p == base + (PAGES - 1) * PAGE);
    kunmap_atomic_pfn_t(p);
    len = 777;
    CHECK_NULL_ERRNO(kmap_atomic_pfn_t_len(phys_to_pfn_t(PHYS + PAGES * PAGE, 0), &len), ENXIO);
    CHECK_EQ(len, 777);

    CHECK_EQ(pfn_device_free(dev), 0);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
}

/* Several kmaps at once across two ranges of two devices, released in any order. */
static void nesting_and_foreign_kunmap(const char *path)
{
    pfn_pmem *m = pfn_pmem_map(path, 8 * PAGE, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    char *base = pfn_pmem_addr(m);
    pfn_device *d1 = pfn_device_new("d1"), *d2 = pfn_device_new("d2");
    REQUIRE(d1 && d2);
    pfn_resource r1 = {PHYS, PHYS + 4 * PAGE - 1, NULL};
    pfn_resource r2 = {PHYS + 64 * PAGE, PHYS + 68 * PAGE - 1, NULL};
    CHECK_EQ(devm_register_kmap_pfn_range(d1, &r1, base), 0);
    CHECK_EQ(devm_register_kmap_pfn_range(d2, &r2, base + 4 * PAGE), 0);

    char *a = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + PAGE, 0));
    char *b = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + 65 * PAGE, 0));
    char *c = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + PAGE, 0));
    CHECK(a == base + PAGE && c == a);
    CHECK(b == base + 5 * PAGE);

    /* Addresses this thread does not hold release nothing: the unregister below still
     * refuses, because this thread still holds kmaps. */
    kunmap_atomic_pfn_t(NULL);
    kunmap_atomic_pfn_t(base + 7 * PAGE);
    kunmap_atomic_pfn_t((void *)&r1);
    CHECK_EQ(pfn_unregister_range(d1, PHYS), -EDEADLK);

    kunmap_atomic_pfn_t(a);
    CHECK_EQ(pfn_unregister_range(d2, PHYS + 64 * PAGE), -EDEADLK);
    kunmap_atomic_pfn_t(b + 123); /* any address inside the page releases it */
    CHECK_EQ(pfn_device_free(d1), -EDEADLK);
    kunmap_atomic_pfn_t(c);
    /* Released everything: a further kunmap of the same page releases nothing, harmlessly. */
    kunmap_atomic_pfn_t(c);

    CHECK_EQ(pfn_unregister_range(d2, PHYS + 64 * PAGE), 0);
    CHECK_EQ(pfn_device_free(d1), 0);
    CHECK_EQ(pfn_device_free(d2), 0);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
}

/* Freeing a device unregisters every range it owns, and no other device's. */
static void device_teardown(const char *path)
{
    pfn_pmem *m = pfn_pmem_map(path, 32 * PAGE, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    char *base = pfn_pmem_addr(m);
    pfn_device *owner = pfn_device_new("owner"), *other = pfn_device_new("other");
    REQUIRE(owner && other);
    for (uint64_t i = 0; i < 16; i++) {
        pfn_resource r = {PHYS + i * 2 * PAGE, PHYS + i * 2 * PAGE + PAGE - 1, NULL};
        CHECK_EQ(devm_register_kmap_pfn_range(owner, &r, base + i * PAGE), 0);
    }
    pfn_resource keep = {PHYS + 100 * PAGE, PHYS + 101 * PAGE - 1, "keep"};
    CHECK_EQ(devm_register_kmap_pfn_range(other, &keep, base + 20 * PAGE), 0);
    void *k = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + 6 * PAGE, 0));
    CHECK(k == base + 3 * PAGE);
    kunmap_atomic_pfn_t(k);

    CHECK_EQ(pfn_device_free(owner), 0);
    for (uint64_t i = 0; i < 16; i++)
        CHECK_NULL_ERRNO(kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + i * 2 * PAGE, 0)), ENXIO);
    k = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + 100 * PAGE, 0));
    CHECK(k == base + 20 * PAGE);
    kunmap_atomic_pfn_t(k);
    /* The freed ranges' physical space can be registered again. */
    pfn_resource again = {PHYS, PHYS + 32 * PAGE - 1, NULL};
    CHECK_EQ(devm_register_kmap_pfn_range(other, &again, base), 0);
    CHECK_EQ(pfn_pmem_unmap(m), -EBUSY);
    CHECK_EQ(pfn_device_free(other), 0);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
}

int main(void)
{
    char path[256];
    test_path(path, sizeof path, "int_kmap");
    unlink(path);
    write_persist_remap(path);
    nesting_and_foreign_kunmap(path);
    device_teardown(path);
    unlink(path);
    return check_report("int_kmap");
}
