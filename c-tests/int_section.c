/* Read sections: the header-inline translation, the exported one and kmap agree on every
 * frame; a section holds off unregister like a kmap does. */
#ifndef _GNU_SOURCE /* g++ defines it */
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"

#define PAGE 4096ull

static void *exit_in_section(void *arg)
{
    (void)arg;
    pfn_section s = pfn_read_lock();
    return (void *)s.root; /* exits with the section open */
}

int main(void)
{
    check_watchdog("int_section", 120); /* an unregister that never returns fails as hung */
    char path[256];
    test_path(path, sizeof path, "int_section");
    unlink(path);
    pfn_pmem *m = pfn_pmem_map(path, 1024 * PAGE, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    char *base = (char *)pfn_pmem_addr(m);
    pfn_device *dev = pfn_device_new("section");
    REQUIRE(dev != NULL);

    /* Ranges of many shapes: a 2 MiB-aligned block, an unaligned run, single pages, and one
     * high in the space (so the root is tall). */
    struct { uint64_t start, pages, file_page; } r[] = {
        {1ull << 30, 512, 0},
        {(1ull << 30) + 600 * PAGE, 300, 512},
        {(1ull << 30) + 599 * PAGE, 1, 900},
        {(9ull << 40) + 3 * PAGE, 7, 901},
        {0xFFFFFFFFFFFFF000ull, 1, 1000},
    };
    const int nr = sizeof r / sizeof r[0];
    for (int i = 0; i < nr; i++) {
        pfn_resource res = {r[i].start, r[i].start + r[i].pages * PAGE - 1, NULL};
        CHECK_EQ(devm_register_kmap_pfn_range(dev, &res, base + r[i].file_page * PAGE), 0);
    }

    pfn_section s = pfn_read_lock();
    CHECK(s.root != 0);
    int agree = 0, probes = 0, right = 0, inside = 0;
    for (int i = 0; i < nr; i++) {
        /* Every page of the range, and the pages just outside it. */
        for (int64_t k = -2; k < (int64_t)r[i].pages + 2; k++) {
            uint64_t phys = r[i].start + (uint64_t)k * PAGE;
            pfn_t p = phys_to_pfn_t(phys, PFN_DEV);
            void *in = pfn_section_translate_inline(&s, p);
            void *ex = pfn_section_translate(&s, p);
            void *km = kmap_atomic_pfn_t(p);
            kunmap_atomic_pfn_t(km);
            probes++;
            agree += in == ex && ex == km;
            if (k >= 0 && k < (int64_t)r[i].pages) {
                inside++;
                right += in == base + (r[i].file_page + (uint64_t)k) * PAGE;
            }
        }
    }
    CHECK_EQ(agree, probes);
    CHECK_EQ(right, inside);
    CHECK(pfn_section_translate_inline(&s, phys_to_pfn_t(1ull << 30, PFN_SG_CHAIN)) == NULL);
    CHECK_NULL_ERRNO(pfn_section_translate(&s, phys_to_pfn_t(1ull << 30, PFN_SG_CHAIN)), EINVAL);
    CHECK_NULL_ERRNO(pfn_section_translate(&s, phys_to_pfn_t(2ull << 30, 0)), ENXIO);
    CHECK_NULL_ERRNO(pfn_section_translate(NULL, phys_to_pfn_t(1ull << 30, 0)), EINVAL);
    /* These ranges form several runs: the section caches none, and translating writes nothing
     * to it. */
    CHECK_EQ(s.cache_pages, 0);
    pfn_section before = s;
    CHECK(pfn_section_translate_inline(&s, phys_to_pfn_t((1ull << 30) + 5 * PAGE, 0)) == base + 5 * PAGE);
    CHECK(memcmp(&before, &s, sizeof s) == 0);
    CHECK(pfn_section_translate_inline(&s, phys_to_pfn_t((1ull << 30) + 7 * PAGE, PFN_SG_CHAIN)) == NULL);
    CHECK(pfn_section_translate_inline(&s, phys_to_pfn_t((1ull << 30) - PAGE, 0)) == NULL);
    /* Lengths: the inline and exported versions agree, to the end of each range. */
    int lengths_agree = 0, lengths = 0;
    for (int i = 0; i < nr; i++)
        for (uint64_t k = 0; k < r[i].pages; k += 1 + r[i].pages / 7) {
            uint64_t li = 1, le = 2;
            pfn_t p = phys_to_pfn_t(r[i].start + k * PAGE, 0);
            void *ai = pfn_section_translate_len_inline(&s, p, &li);
            void *ae = pfn_section_translate_len(&s, p, &le);
            lengths++;
            lengths_agree += ai == ae && li == le && li == (r[i].pages - k) * PAGE;
        }
    CHECK_EQ(lengths_agree, lengths);

    /* A section holds like a kmap: no unregister from inside it. Sections nest. */
    CHECK_EQ(pfn_unregister_range(dev, 1ull << 30), -EDEADLK);
    pfn_section inner = pfn_read_lock();
    CHECK(pfn_section_translate_inline(&inner, phys_to_pfn_t(1ull << 30, 0)) == base);
    pfn_read_unlock();
    CHECK_EQ(pfn_unregister_range(dev, 1ull << 30), -EDEADLK);
    /* kunmap never closes a section. */
    kunmap_atomic_pfn_t(base);
    kunmap_atomic_pfn_t(NULL);
    CHECK_EQ(pfn_unregister_range(dev, 1ull << 30), -EDEADLK);
    pfn_read_unlock();
    CHECK_EQ(pfn_unregister_range(dev, 1ull << 30), 0);
    /* An extra unlock does nothing. */
    pfn_read_unlock();

    /* One pool, however split into ranges that continue each other, is one run: a section
     * opened then starts with the whole run cached (one comparison per translation). */
    CHECK_EQ(pfn_unregister_range(dev, (1ull << 30) + 599 * PAGE), 0);
    CHECK_EQ(pfn_unregister_range(dev, (9ull << 40) + 3 * PAGE), 0);
    CHECK_EQ(pfn_unregister_range(dev, 0xFFFFFFFFFFFFF000ull), 0);
    uint64_t pool = 5ull << 30;
    for (int i = 0; i < 4; i++) {
        pfn_resource res = {pool + (uint64_t)i * 100 * PAGE, pool + (uint64_t)(i + 1) * 100 * PAGE - 1, NULL};
        CHECK_EQ(devm_register_kmap_pfn_range(dev, &res, base + (uint64_t)i * 100 * PAGE), 0);
    }
    /* (The range left from above makes two runs.) */
    pfn_section two = pfn_read_lock_inline();
    CHECK_EQ(two.cache_pages, 0);
    pfn_read_unlock_inline();
    CHECK_EQ(pfn_unregister_range(dev, (1ull << 30) + 600 * PAGE), 0);
    pfn_section one = pfn_read_lock_inline();
    pfn_section one_exported = pfn_read_lock();
    CHECK_EQ(one.cache_pfn, pool >> 12);
    CHECK_EQ(one.cache_pages, 400);
    CHECK(one.cache_addr == (uintptr_t)base);
    CHECK(memcmp(&one.cache_pfn, &one_exported.cache_pfn, 3 * sizeof(uint64_t)) == 0);
    uint64_t len = 0;
    CHECK(pfn_section_translate_len_inline(&one, phys_to_pfn_t(pool + 150 * PAGE, 0), &len) == base + 150 * PAGE);
    CHECK_EQ(len, 250 * PAGE);
    CHECK(pfn_section_translate_inline(&one, phys_to_pfn_t(pool + 400 * PAGE, 0)) == NULL);
    pfn_read_unlock();
    pfn_read_unlock_inline();
    for (int i = 0; i < 4; i++)
        CHECK_EQ(pfn_unregister_range(dev, pool + (uint64_t)i * 100 * PAGE), 0);

    /* An empty section (nothing registered in it) translates nothing. */
    pfn_section none = {0};
    CHECK(pfn_section_translate_inline(&none, phys_to_pfn_t(1ull << 30, 0)) == NULL);

    /* A thread that exits inside a section closes it: unregister does not hang. */
    pfn_resource again = {1ull << 30, (1ull << 30) + PAGE - 1, NULL};
    CHECK_EQ(devm_register_kmap_pfn_range(dev, &again, base), 0);
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, exit_in_section, NULL) == 0);
    void *root;
    pthread_join(t, &root);
    CHECK(root != NULL);
    CHECK_EQ(pfn_unregister_range(dev, 1ull << 30), 0);

    CHECK_EQ(pfn_device_free(dev), 0);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    unlink(path);
    return check_report("int_section");
}
