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

/* The library also exports every helper the header has inline (for other languages and for
 * taking their address): reach those symbols by name and compare them with the inlines. */
#ifdef __cplusplus
extern "C" {
#endif
pfn_t x_pfn_to_pfn_t_2(uint64_t, uint64_t) __asm__("__pfn_to_pfn_t");
pfn_t x_pfn_to_pfn_t(uint64_t) __asm__("pfn_to_pfn_t");
pfn_t x_phys_to_pfn_t(uint64_t, uint64_t) __asm__("phys_to_pfn_t");
uint64_t x_pfn_t_to_pfn(pfn_t) __asm__("pfn_t_to_pfn");
uint64_t x_pfn_t_to_phys(pfn_t) __asm__("pfn_t_to_phys");
bool x_pfn_t_has_page(pfn_t) __asm__("pfn_t_has_page");
bool x_pfn_t_devmap(pfn_t) __asm__("pfn_t_devmap");
bool x_pfn_t_special(pfn_t) __asm__("pfn_t_special");
bool x__pfn_t_has_page(pfn_t) __asm__("__pfn_t_has_page");
uint64_t x__pfn_t_to_pfn(pfn_t) __asm__("__pfn_t_to_pfn");
uint64_t x__pfn_t_to_phys(pfn_t) __asm__("__pfn_t_to_phys");
#ifdef __cplusplus
}
#endif

static void exported_twins(void)
{
    const uint64_t vals[] = {0, 1, 0x12345, TOP_PFN, 1ull << 52, ~0ull, 0xdeadbeefcafef00dull,
                             PFN_DEV | 7, PFN_DEV | PFN_MAP | 9, PFN_SG_CHAIN | PFN_SPECIAL};
    const uint64_t flags[] = {0, PFN_DEV, PFN_DEV | PFN_MAP, PFN_FLAGS_MASK, 0xfff, ~0ull};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        pfn_t p = {vals[i]};
        CHECK_EQ(x_pfn_t_to_pfn(p), pfn_t_to_pfn(p));
        CHECK_EQ(x_pfn_t_to_phys(p), pfn_t_to_phys(p));
        CHECK_EQ(x_pfn_t_has_page(p), pfn_t_has_page(p));
        CHECK_EQ(x_pfn_t_devmap(p), pfn_t_devmap(p));
        CHECK_EQ(x_pfn_t_special(p), pfn_t_special(p));
        CHECK_EQ(x__pfn_t_has_page(p), __pfn_t_has_page(p));
        CHECK_EQ(x__pfn_t_to_pfn(p), __pfn_t_to_pfn(p));
        CHECK_EQ(x__pfn_t_to_phys(p), __pfn_t_to_phys(p));
        CHECK_EQ(x_pfn_to_pfn_t(vals[i]).val, pfn_to_pfn_t(vals[i]).val);
        for (size_t f = 0; f < sizeof flags / sizeof flags[0]; f++) {
            CHECK_EQ(x_pfn_to_pfn_t_2(vals[i], flags[f]).val, __pfn_to_pfn_t(vals[i], flags[f]).val);
            CHECK_EQ(x_phys_to_pfn_t(vals[i], flags[f]).val, phys_to_pfn_t(vals[i], flags[f]).val);
        }
    }
}

/* Byte handles: the header's helpers, by their documented meaning. */
static void byte_handles(void)
{
    CHECK(pfn_phys_is_null(pfn_phys_null()));
    CHECK_EQ(pfn_phys_null().val, 0);
    pfn_phys_t h = pfn_phys_make(0x123456789abcull, PFN_DEV | PFN_MAP);
    CHECK_EQ(pfn_phys_addr(h), 0x123456789abcull);
    CHECK_EQ(pfn_phys_flags(h), PFN_DEV | PFN_MAP);
    CHECK(!pfn_phys_is_null(h));
    /* Address bits beyond 2^56 and flag bits below 56 are dropped. */
    CHECK_EQ(pfn_phys_make(~0ull, 0).val, (1ull << 56) - 1);
    CHECK_EQ(pfn_phys_make(5, 0xfff).val, 5);
    CHECK_EQ(pfn_phys_add(h, 0x10).val, pfn_phys_make(0x123456789accull, PFN_DEV | PFN_MAP).val);
    /* Adding wraps inside the address bits, never into the flags. */
    CHECK_EQ(pfn_phys_add(pfn_phys_make((1ull << 56) - 1, PFN_DEV), 1).val, PFN_DEV);
    pfn_t p = pfn_phys_to_pfn_t(h);
    CHECK_EQ(pfn_t_to_phys(p), 0x123456789000ull);
    CHECK_EQ(p.val & PFN_FLAGS_MASK, PFN_DEV | PFN_MAP);
    CHECK_EQ(pfn_t_to_pfn_phys(p, 0xabc).val, h.val);
    pfn_phys_t slot = pfn_phys_null();
    pfn_phys_store(&slot, h);
    CHECK_EQ(pfn_phys_load(&slot).val, h.val);
    CHECK_EQ(sizeof(pfn_phys_t), 8);
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
    exported_twins();
    byte_handles();
    version();
    return check_report("api_encoding");
}
