/* The pfn_t encoding: every flag, every helper, boundary values, and the version. */
#ifndef _GNU_SOURCE /* g++ defines it */
#define _GNU_SOURCE
#endif
#include <unistd.h>
#include "pfn.h"
#include "check.h"

#define TOP_PFN ((1ull << 52) - 1)

static void constants(void)
{
    CHECK_EQ(PFN_PAGE_SHIFT, 12);
    CHECK_EQ(PFN_PAGE_SIZE, 4096);
    CHECK_EQ(1ull << PFN_PAGE_SHIFT, PFN_PAGE_SIZE);
    CHECK_EQ(PFN_FLAGS_MASK, 0xFFF0000000000000ull);
    CHECK_EQ(PFN_SG_CHAIN, 0x8000000000000000ull);
    CHECK_EQ(PFN_SG_LAST, 0x4000000000000000ull);
    CHECK_EQ(PFN_DEV, 0x2000000000000000ull);
    CHECK_EQ(PFN_MAP, 0x1000000000000000ull);
    CHECK_EQ(PFN_SPECIAL, 0x0800000000000000ull);
    CHECK_EQ(PFN_PMEM_CREATE, 1);
    /* Every flag lies inside the mask. */
    CHECK_EQ((PFN_SG_CHAIN | PFN_SG_LAST | PFN_DEV | PFN_MAP | PFN_SPECIAL) & ~PFN_FLAGS_MASK, 0);
    CHECK_EQ(sizeof(pfn_t), 8);
    CHECK_EQ(sizeof(__pfn_t), 8);
}

static void helpers(void)
{
    const uint64_t flags[] = {0, PFN_SG_CHAIN, PFN_SG_LAST, PFN_DEV, PFN_MAP, PFN_SPECIAL,
                              PFN_DEV | PFN_MAP, PFN_FLAGS_MASK};
    const uint64_t pfns[] = {0, 1, 0x12345, TOP_PFN - 1, TOP_PFN};
    for (size_t f = 0; f < sizeof flags / sizeof flags[0]; f++) {
        for (size_t i = 0; i < sizeof pfns / sizeof pfns[0]; i++) {
            uint64_t fl = flags[f], pfn = pfns[i];
            pfn_t p = __pfn_to_pfn_t(pfn, fl);
            CHECK_EQ(p.val, pfn | fl);
            CHECK_EQ(pfn_t_to_pfn(p), pfn);
            CHECK_EQ(__pfn_t_to_pfn(p), pfn);
            CHECK_EQ(pfn_t_to_phys(p), pfn << 12);
            CHECK_EQ(__pfn_t_to_phys(p), pfn << 12);
            bool has_page = (fl & PFN_MAP) || !(fl & PFN_DEV);
            CHECK_EQ(pfn_t_has_page(p), has_page);
            CHECK_EQ(__pfn_t_has_page(p), has_page);
            CHECK_EQ(pfn_t_devmap(p), (fl & (PFN_DEV | PFN_MAP)) == (PFN_DEV | PFN_MAP));
            CHECK_EQ(pfn_t_special(p), (fl & PFN_SPECIAL) != 0);
            pfn_t q = phys_to_pfn_t((pfn << 12) | 0xabc, fl);
            CHECK_EQ(q.val, p.val);
        }
    }
    /* A flag-less pfn_t equals the raw pfn. */
    CHECK_EQ(pfn_to_pfn_t(0x777).val, 0x777);
    CHECK_EQ(pfn_to_pfn_t(TOP_PFN).val, TOP_PFN);
    /* Bits outside the mask in `flags` are ignored; pfn bits from 52 up are dropped. */
    CHECK_EQ(__pfn_to_pfn_t(5, 0xfff).val, 5);
    CHECK_EQ(__pfn_to_pfn_t(1ull << 52, 0).val, 0);
    CHECK_EQ(pfn_to_pfn_t(~0ull).val, TOP_PFN);
    CHECK_EQ(phys_to_pfn_t(~0ull, 0).val, TOP_PFN);
    CHECK_EQ(pfn_t_to_phys(pfn_to_pfn_t(TOP_PFN)), 0xFFFFFFFFFFFFF000ull);
}

static void version(void)
{
    /* The runtime version compares directly with the header's. */
    char want[64];
    snprintf(want, sizeof want, "%d.%d.%d", PFN_VERSION_MAJOR, PFN_VERSION_MINOR,
             PFN_VERSION_PATCH);
    CHECK(strcmp(pfn_version(), want) == 0);
    CHECK(strcmp(pfn_version(), PFN_VERSION_STRING) == 0);
    CHECK(pfn_version() == pfn_version()); /* static: the same string every time */
}

int main(void)
{
    constants();
    helpers();
    version();
    return check_report("api_encoding");
}
