/* Tens of thousands of ranges of mixed sizes and alignments, all translating correctly. */
#define _GNU_SOURCE
#include <stdint.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"

#define PAGE 4096ull
#define NRANGES 20000
#define FILE_PAGES 4096ull /* 16 MiB shared by every range */

/* Range i: a deterministic size (1..8 pages) and gap, so starts are page- but rarely
 * block-aligned, and bases wrap around the file. */
static uint64_t pages_of(int i) { return 1 + (uint64_t)(i * 7 % 8); }
static uint64_t gap_of(int i) { return (uint64_t)(i % 3); }

int main(void)
{
    char path[256];
    test_path(path, sizeof path, "int_many");
    unlink(path);
    pfn_pmem *m = pfn_pmem_map(path, FILE_PAGES * PAGE, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    char *base = pfn_pmem_addr(m);
    pfn_device *dev = pfn_device_new("many");
    REQUIRE(dev != NULL);

    static uint64_t start[NRANGES], npages[NRANGES], file_page[NRANGES];
    uint64_t phys = 5ull << 40, fp = 0;
    int registered = 0;
    for (int i = 0; i < NRANGES; i++) {
        phys += gap_of(i) * PAGE;
        npages[i] = pages_of(i);
        if (fp + npages[i] > FILE_PAGES)
            fp = 0;
        start[i] = phys;
        file_page[i] = fp;
        pfn_resource r = {phys, phys + npages[i] * PAGE - 1, NULL};
        registered += devm_register_kmap_pfn_range(dev, &r, base + fp * PAGE) == 0;
        phys += npages[i] * PAGE;
        fp += npages[i];
    }
    CHECK_EQ(registered, NRANGES);

    /* The contiguous length runs to the end of the range, or on through the ranges after it
     * while each continues the last both physically (no gap) and in the file (no wrap). */
    static uint64_t run_pages[NRANGES];
    int runs_joined = 0;
    for (int i = NRANGES - 1; i >= 0; i--) {
        int joins = i + 1 < NRANGES && gap_of(i + 1) == 0 && file_page[i + 1] == file_page[i] + npages[i];
        run_pages[i] = npages[i] + (joins ? run_pages[i + 1] : 0);
        runs_joined += joins;
    }
    CHECK(runs_joined > NRANGES / 4);

    /* Every page of every range translates to its own place; the gaps translate to nothing. */
    int right = 0, pages = 0, gaps_empty = 0, gaps = 0;
    for (int i = 0; i < NRANGES; i++) {
        for (uint64_t p = 0; p < npages[i]; p++, pages++) {
            uint64_t len = 0;
            char *a = kmap_atomic_pfn_t_len(phys_to_pfn_t(start[i] + p * PAGE, 0), &len);
            right += a == base + (file_page[i] + p) * PAGE && len == (run_pages[i] - p) * PAGE;
            kunmap_atomic_pfn_t(a);
        }
        if (i + 1 < NRANGES && gap_of(i + 1)) {
            gaps++;
            errno = 0;
            void *a = kmap_atomic_pfn_t(phys_to_pfn_t(start[i] + npages[i] * PAGE, 0));
            gaps_empty += a == NULL && errno == ENXIO;
        }
    }
    CHECK_EQ(right, pages);
    CHECK_EQ(gaps_empty, gaps);
    CHECK(pages > 2 * NRANGES);

    /* Unregister every other range; the rest still translate, the removed ones do not, and
     * no run goes on past a removed range. */
    int removed = 0, still = 0, gone = 0;
    for (int i = 0; i < NRANGES; i += 2)
        removed += pfn_unregister_range(dev, start[i]) == 0;
    for (int i = 0; i < NRANGES; i++) {
        void *a = kmap_atomic_pfn_t(phys_to_pfn_t(start[i], 0));
        if (i % 2)
            still += a == base + file_page[i] * PAGE;
        else
            gone += a == NULL;
        kunmap_atomic_pfn_t(a);
    }
    CHECK_EQ(removed, NRANGES / 2);
    CHECK_EQ(still, NRANGES / 2);
    CHECK_EQ(gone, NRANGES / 2);
    int cut = 0;
    for (int i = 1; i < NRANGES; i += 2) {
        uint64_t len = 0;
        char *a = kmap_atomic_pfn_t_len(phys_to_pfn_t(start[i], 0), &len);
        cut += a != NULL && len == npages[i] * PAGE;
        kunmap_atomic_pfn_t(a);
    }
    CHECK_EQ(cut, NRANGES / 2);

    /* Freeing the device removes the other half. */
    CHECK_EQ(pfn_device_free(dev), 0);
    int none = 0;
    for (int i = 1; i < NRANGES; i += 2)
        none += kmap_atomic_pfn_t(phys_to_pfn_t(start[i], 0)) == NULL;
    CHECK_EQ(none, NRANGES / 2);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    unlink(path);
    return check_report("int_many");
}
