/* Page descriptors (memmap) and pins through the ABI: every function, every documented error,
 * descriptor round trips at range edges, a memmap stored inside its range, bad pointers and
 * reference counts. */
#define _GNU_SOURCE
#include <stddef.h>
#include <limits.h>
#include <stdint.h>
#include <sys/mman.h>
#include "pfn.h"
#include "check.h"

#define PAGE 4096ull
#define PHYS (9ull << 40)

static char *map_anon(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p != MAP_FAILED);
    return p;
}

static pfn_t dev_map(uint64_t phys) { return phys_to_pfn_t(phys, PFN_DEV | PFN_MAP); }

/* The failing call left a message. */
static void check_message(void)
{
    const char *m = pfn_errormsg();
    CHECK(m != NULL && m[0] != 0);
}

static void layout(void)
{
    CHECK_EQ(sizeof(struct pfn_page), 16);
    CHECK_EQ(PFN_PAGE_BYTES, 16);
    CHECK_EQ(offsetof(struct pfn_page, refcount), 0);
    CHECK_EQ(offsetof(struct pfn_page, flags), 4);
    CHECK_EQ(offsetof(struct pfn_page, data), 8);
    CHECK_EQ(PFN_PAGE_FLAGS_USER, 0x00ffffffu);
    CHECK_EQ(PFN_MEMMAP_DRAM, 0);
    CHECK_EQ(PFN_MEMMAP_IN_RANGE, 1);
    /* Reserved bytes: 257 frames fit one frame of descriptors beside them, 258 need two. */
    CHECK_EQ(pfn_memmap_reserved_bytes(257 * PAGE, PFN_MEMMAP_IN_RANGE), PAGE);
    CHECK_EQ(pfn_memmap_reserved_bytes(258 * PAGE, PFN_MEMMAP_IN_RANGE), 2 * PAGE);
    CHECK_EQ(pfn_memmap_reserved_bytes(2 * PAGE, PFN_MEMMAP_IN_RANGE), PAGE);
    CHECK_EQ(pfn_memmap_reserved_bytes(600 * PAGE, PFN_MEMMAP_DRAM), 0);
    CHECK_EQ(pfn_memmap_reserved_bytes(PAGE, PFN_MEMMAP_IN_RANGE), -EINVAL);
    check_message();
    CHECK_EQ(pfn_memmap_reserved_bytes(0, PFN_MEMMAP_DRAM), -EINVAL);
    CHECK_EQ(pfn_memmap_reserved_bytes(PAGE + 1, PFN_MEMMAP_DRAM), -EINVAL);
    CHECK_EQ(pfn_memmap_reserved_bytes(PAGE, 2), -EINVAL);
}

/* Descriptors of a range with a DRAM memmap: lookups both ways at both edges, pfn_t flags,
 * bad pointers, reference counts and what they mean to unregister. */
static void dram_memmap(pfn_device *dev)
{
    const uint64_t pages = 8;
    char *base = map_anon(pages * PAGE);
    pfn_resource res = {PHYS, PHYS + pages * PAGE - 1, "dram"};
    CHECK_EQ(pfn_register_range_memmap(dev, &res, base, PFN_MEMMAP_DRAM), 0);

    struct pfn_page *first = pfn_t_to_page(dev_map(PHYS));
    struct pfn_page *last = pfn_t_to_page(dev_map(PHYS + (pages - 1) * PAGE));
    REQUIRE(first != NULL && last != NULL);
    CHECK(last == first + (pages - 1));
    CHECK(__pfn_t_to_page(dev_map(PHYS)) == first);
    /* A flag-less pfn_t has a page too (pfn_t_has_page); a DEV-only one has none. */
    CHECK(pfn_t_to_page(phys_to_pfn_t(PHYS + PAGE, 0)) == first + 1);
    CHECK_NULL_ERRNO(pfn_t_to_page(phys_to_pfn_t(PHYS, PFN_DEV)), EINVAL);
    check_message();
    CHECK_NULL_ERRNO(pfn_t_to_page(phys_to_pfn_t(PHYS, PFN_SG_CHAIN | PFN_MAP)), EINVAL);
    /* Just outside the range on both sides. */
    CHECK_NULL_ERRNO(pfn_t_to_page(dev_map(PHYS - PAGE)), ENXIO);
    check_message();
    CHECK_NULL_ERRNO(pfn_t_to_page(dev_map(PHYS + pages * PAGE)), ENXIO);

    /* The header-inline version agrees everywhere, misses included (with the same errno). */
    for (uint64_t k = 0; k < pages; k++)
        CHECK(pfn_t_to_page_inline(dev_map(PHYS + k * PAGE)) == first + k);
    CHECK(pfn_t_to_page_inline(phys_to_pfn_t(PHYS + PAGE, 0)) == first + 1);
    CHECK_NULL_ERRNO(pfn_t_to_page_inline(phys_to_pfn_t(PHYS, PFN_DEV)), EINVAL);
    CHECK_NULL_ERRNO(pfn_t_to_page_inline(phys_to_pfn_t(PHYS, PFN_SG_CHAIN | PFN_MAP)), EINVAL);
    CHECK_NULL_ERRNO(pfn_t_to_page_inline(dev_map(PHYS - PAGE)), ENXIO);
    CHECK_NULL_ERRNO(pfn_t_to_page_inline(dev_map(PHYS + pages * PAGE)), ENXIO);
    {
        pfn_section sec = pfn_read_lock();
        for (uint64_t k = 0; k < pages; k++)
            CHECK(pfn_section_to_page_inline(&sec, dev_map(PHYS + k * PAGE)) == first + k);
        CHECK(pfn_section_to_page_inline(&sec, phys_to_pfn_t(PHYS, 0)) == first);
        CHECK(pfn_section_to_page_inline(&sec, phys_to_pfn_t(PHYS, PFN_DEV)) == NULL);
        CHECK(pfn_section_to_page_inline(&sec, phys_to_pfn_t(PHYS, PFN_SG_CHAIN | PFN_MAP)) == NULL);
        CHECK(pfn_section_to_page_inline(&sec, dev_map(PHYS - PAGE)) == NULL);
        CHECK(pfn_section_to_page_inline(&sec, dev_map(PHYS + pages * PAGE)) == NULL);
        pfn_read_unlock();
    }

    for (uint64_t k = 0; k < pages; k++) {
        struct pfn_page *p = first + k;
        pfn_t f = pfn_page_to_pfn_t(p);
        CHECK_EQ(f.val, dev_map(PHYS + k * PAGE).val);
        CHECK(pfn_page_address(p) == base + k * PAGE);
        CHECK(pfn_t_to_virt(f) == base + k * PAGE);
        CHECK(pfn_t_to_page(f) == p);
        /* DRAM descriptors start zeroed. */
        CHECK_EQ(p->refcount | p->flags | p->data, 0);
    }
    /* On a thread that holds a kmap (the lookup then uses that hold as its section): alike,
     * misses included. */
    void *held = kmap_atomic_pfn_t(dev_map(PHYS));
    REQUIRE(held != NULL);
    for (uint64_t k = 0; k < pages; k++) {
        CHECK(pfn_t_to_page(dev_map(PHYS + k * PAGE)) == first + k);
        CHECK(pfn_t_to_page_inline(dev_map(PHYS + k * PAGE)) == first + k);
    }
    CHECK_NULL_ERRNO(pfn_t_to_page(dev_map(PHYS + pages * PAGE)), ENXIO);
    CHECK_NULL_ERRNO(pfn_t_to_page_inline(dev_map(PHYS - PAGE)), ENXIO);
    CHECK_EQ(kunmap_atomic_pfn_t(held), 0);

    /* Reverse translation reports the frames with PFN_DEV | PFN_MAP. */
    pfn_t rev = {0};
    CHECK_EQ(pfn_virt_to_pfn_t(base + 3 * PAGE + 5, &rev), 0);
    CHECK_EQ(rev.val, dev_map(PHYS + 3 * PAGE).val);
    CHECK(pfn_t_devmap(rev));

    /* Bad descriptor pointers: refused (value 0 / NULL / -EINVAL), never dereferenced. */
    int on_stack = 0;
    const struct pfn_page *bad[] = {
        NULL,
        (const struct pfn_page *)((char *)first + 8),
        (const struct pfn_page *)((char *)first + 1),
        last + 1,
        first - 1,
        (const struct pfn_page *)&on_stack,
        (const struct pfn_page *)base,
        (const struct pfn_page *)(uintptr_t)0x10,
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        CHECK_EQ(pfn_page_to_pfn_t(bad[i]).val, 0);
        CHECK_EQ(errno, EINVAL);
        CHECK_NULL_ERRNO(pfn_page_address(bad[i]), EINVAL);
        CHECK_EQ(pfn_get_page((struct pfn_page *)bad[i]), -EINVAL);
        CHECK_EQ(pfn_put_page((struct pfn_page *)bad[i]), -EINVAL);
        CHECK_EQ(pfn_page_ref_count(bad[i]), -EINVAL);
    }
    check_message();

    /* The user's fields are the user's. */
    last->flags = PFN_PAGE_FLAGS_USER;
    last->data = 0x1122334455667788ull;
    CHECK_EQ(pfn_page_to_pfn_t(last).val, dev_map(PHYS + (pages - 1) * PAGE).val);

    /* Reference counts, and a referenced descriptor refuses unregister (and device free). */
    CHECK_EQ(pfn_page_ref_count(last), 0);
    CHECK_EQ(pfn_put_page(last), -EINVAL); /* already zero: nothing changes */
    check_message();
    CHECK_EQ(pfn_page_ref_count(last), 0);
    CHECK_EQ(pfn_get_page(last), 1);
    CHECK_EQ(pfn_get_page(last), 2);
    CHECK_EQ(pfn_page_ref_count(last), 2);
    CHECK_EQ(last->refcount, 2);
    CHECK_EQ(pfn_unregister_range(dev, PHYS), -EBUSY);
    check_message();
    CHECK(pfn_t_to_page(dev_map(PHYS)) == first); /* still registered */
    CHECK_EQ(pfn_put_page(last), 1);
    CHECK_EQ(pfn_put_page(last), 0);
    CHECK_EQ(last->data, 0x1122334455667788ull);
    /* At INT_MAX a get is refused and changes nothing (the count set by hand, as only a test
     * may: 2^31 - 1 real references are not taken here). */
    last->refcount = INT_MAX;
    CHECK_EQ(pfn_get_page(last), -EOVERFLOW);
    check_message();
    CHECK_EQ(pfn_page_ref_count(last), INT_MAX);
    CHECK_EQ(pfn_put_page(last), INT_MAX - 1);
    last->refcount = 0;

    /* Range edges: a neighbour right after it, with its own memmap. */
    char *base2 = map_anon(2 * PAGE);
    pfn_resource next = {PHYS + pages * PAGE, PHYS + (pages + 2) * PAGE - 1, "next"};
    CHECK_EQ(pfn_register_range_memmap(dev, &next, base2, PFN_MEMMAP_DRAM), 0);
    struct pfn_page *n0 = pfn_t_to_page(dev_map(PHYS + pages * PAGE));
    REQUIRE(n0 != NULL);
    CHECK(n0 != last + 1);
    CHECK_EQ(pfn_page_to_pfn_t(n0).val, dev_map(PHYS + pages * PAGE).val);
    CHECK_EQ(pfn_page_to_pfn_t(last).val, dev_map(PHYS + (pages - 1) * PAGE).val);
    CHECK(pfn_page_address(n0) == base2);
    CHECK(pfn_page_address(n0 + 1) == base2 + PAGE);
    CHECK_EQ(pfn_page_to_pfn_t(n0 + 2).val, 0);

    uint64_t frames = 0, dram = 0, in_range = 0;
    CHECK_EQ(pfn_memmap_usage(&frames, &dram, &in_range), 0);
    CHECK_EQ(frames, pages + 2);
    CHECK_EQ(dram, 2 * PAGE); /* one page of descriptors per range (16 bytes per frame) */
    CHECK_EQ(in_range, 0);
    CHECK_EQ(pfn_memmap_usage(NULL, NULL, NULL), 0);

    CHECK_EQ(pfn_unregister_range(dev, PHYS), 0);
    CHECK_EQ(pfn_unregister_range(dev, next.start), 0);
    /* Gone: the old descriptors are no descriptors any more. */
    CHECK_NULL_ERRNO(pfn_t_to_page(dev_map(PHYS)), ENXIO);
    errno = 0;
    CHECK_EQ(pfn_page_to_pfn_t(first).val, 0);
    CHECK_EQ(errno, EINVAL);
    CHECK_EQ(pfn_memmap_usage(&frames, &dram, &in_range), 0);
    CHECK_EQ(frames, 0);
    munmap(base, pages * PAGE);
    munmap(base2, 2 * PAGE);
}

/* A memmap at the head of its range (vmem_altmap): reserved frames, persistence of flags and
 * data across registrations, reference counts restarting at zero. */
static void in_range_memmap(pfn_device *dev)
{
    const uint64_t pages = 600;
    const int64_t reserved = pfn_memmap_reserved_bytes(pages * PAGE, PFN_MEMMAP_IN_RANGE);
    CHECK_EQ(reserved, 3 * PAGE);
    char *base = map_anon(pages * PAGE);
    pfn_resource res = {PHYS, PHYS + pages * PAGE - 1, "in-range"};
    CHECK_EQ(pfn_register_range_memmap(dev, &res, base, PFN_MEMMAP_IN_RANGE), 0);

    const uint64_t first_phys = PHYS + (uint64_t)reserved;
    struct pfn_page *first = pfn_t_to_page(dev_map(first_phys));
    CHECK(first == (struct pfn_page *)base);
    struct pfn_page *last = pfn_t_to_page(dev_map(PHYS + (pages - 1) * PAGE));
    CHECK(last == first + (pages - 3 - 1));
    CHECK_EQ(pfn_page_to_pfn_t(first).val, dev_map(first_phys).val);
    CHECK(pfn_page_address(first) == base + reserved);
    CHECK(pfn_page_address(last) == base + (pages - 1) * PAGE);
    CHECK_EQ(pfn_page_to_pfn_t(last + 1).val, 0);

    /* The frames holding the memmap are not translatable, but belong to the range. */
    CHECK_NULL_ERRNO(kmap_atomic_pfn_t(dev_map(PHYS)), ENXIO);
    CHECK_NULL_ERRNO(kmap_atomic_pfn_t(dev_map(first_phys - PAGE)), ENXIO);
    CHECK_NULL_ERRNO(pfn_t_to_page(dev_map(PHYS + PAGE)), ENXIO);
    CHECK_NULL_ERRNO(pfn_t_to_virt(dev_map(PHYS)), ENXIO);
    CHECK_NULL_ERRNO(pfn_t_to_page_inline(dev_map(PHYS + PAGE)), ENXIO);
    CHECK(pfn_t_to_page_inline(dev_map(first_phys)) == first);
    CHECK(pfn_t_to_page_inline(dev_map(PHYS + (pages - 1) * PAGE)) == last);
    void *a = kmap_atomic_pfn_t(dev_map(first_phys));
    CHECK(a == base + reserved);
    if (a)
        CHECK_EQ(kunmap_atomic_pfn_t(a), 0);
    pfn_device *other = pfn_device_new("other");
    REQUIRE(other != NULL);
    char *elsewhere = map_anon(PAGE);
    pfn_resource head = {PHYS, PHYS + PAGE - 1, NULL};
    CHECK_EQ(devm_register_kmap_pfn_range(other, &head, elsewhere), -EBUSY);
    /* Another in-range memmap in the same memory (an alias) would share descriptors. */
    pfn_resource alias = {PHYS + (1ull << 30), PHYS + (1ull << 30) + pages * PAGE - 1, NULL};
    CHECK_EQ(pfn_register_range_memmap(other, &alias, base, PFN_MEMMAP_IN_RANGE), -EBUSY);
    check_message();
    /* ... while a DRAM memmap over the same memory is fine. */
    CHECK_EQ(pfn_register_range_memmap(other, &alias, base, PFN_MEMMAP_DRAM), 0);
    CHECK_EQ(pfn_unregister_range(other, alias.start), 0);

    uint64_t frames = 0, dram = 0, in_range = 0;
    CHECK_EQ(pfn_memmap_usage(&frames, &dram, &in_range), 0);
    CHECK_EQ(frames, pages - 3);
    CHECK_EQ(dram, 0);
    CHECK_EQ(in_range, 3 * PAGE);

    /* Flags and data persist with the range; reference counts restart at zero. */
    last->flags = 0x00abcdefu;
    last->data = 42;
    CHECK_EQ(pfn_unregister_range(dev, first_phys), -ENOENT); /* unregistered by its start */
    CHECK_EQ(pfn_unregister_range(dev, PHYS), 0);
    ((struct pfn_page *)base)[pages - 4].refcount = 7; /* whatever the media held */
    CHECK_EQ(pfn_register_range_memmap(dev, &res, base, PFN_MEMMAP_IN_RANGE), 0);
    last = pfn_t_to_page(dev_map(PHYS + (pages - 1) * PAGE));
    REQUIRE(last != NULL);
    CHECK_EQ(last->flags, 0x00abcdefu);
    CHECK_EQ(last->data, 42);
    CHECK_EQ(pfn_page_ref_count(last), 0);
    /* A referenced descriptor refuses pfn_device_free too; the device stays usable. */
    CHECK_EQ(pfn_get_page(last), 1);
    pfn_device *third = pfn_device_new("third");
    REQUIRE(third != NULL);
    char *small = map_anon(4 * PAGE);
    pfn_resource small_res = {PHYS + (2ull << 30), PHYS + (2ull << 30) + 4 * PAGE - 1, NULL};
    CHECK_EQ(pfn_register_range_memmap(third, &small_res, small, PFN_MEMMAP_IN_RANGE), 0);
    struct pfn_page *sp = pfn_t_to_page(dev_map(small_res.start + PAGE));
    CHECK(sp == (struct pfn_page *)small);
    CHECK_EQ(pfn_get_page(sp), 1);
    CHECK_EQ(pfn_device_free(third), -EBUSY);
    CHECK_EQ(pfn_put_page(sp), 0);
    CHECK_EQ(pfn_device_free(third), 0);
    CHECK_EQ(pfn_put_page(last), 0);
    CHECK_EQ(pfn_unregister_range(dev, PHYS), 0);

    /* Errors of the registration itself. */
    pfn_resource one = {PHYS, PHYS + PAGE - 1, NULL};
    CHECK_EQ(pfn_register_range_memmap(dev, &one, base, PFN_MEMMAP_IN_RANGE), -EINVAL);
    check_message();
    CHECK_EQ(pfn_register_range_memmap(dev, &res, base, 2), -EINVAL);
    CHECK_EQ(pfn_register_range_memmap(dev, NULL, base, PFN_MEMMAP_DRAM), -EINVAL);
    CHECK_EQ(pfn_register_range_memmap(NULL, &res, base, PFN_MEMMAP_DRAM), -EINVAL);
    CHECK_EQ(pfn_register_range_memmap(dev, &res, NULL, PFN_MEMMAP_DRAM), -EINVAL);
    CHECK_EQ(pfn_register_range_memmap(dev, &res, base + 8, PFN_MEMMAP_DRAM), -EINVAL);
    CHECK_NULL_ERRNO(pfn_t_to_page(dev_map(PHYS + PAGE)), ENXIO);
    CHECK_EQ(pfn_device_free(other), 0);
    munmap(elsewhere, PAGE);
    munmap(small, 4 * PAGE);
    munmap(base, pages * PAGE);
}

/* A range without a memmap has no descriptors, but pfn_t_to_virt works for frames with a
 * page. */
static void no_memmap(pfn_device *dev)
{
    char *base = map_anon(2 * PAGE);
    pfn_resource res = {PHYS, PHYS + 2 * PAGE - 1, NULL};
    CHECK_EQ(devm_register_kmap_pfn_range(dev, &res, base), 0);
    CHECK_NULL_ERRNO(pfn_t_to_page(dev_map(PHYS)), ENXIO);
    check_message();
    CHECK_NULL_ERRNO(pfn_t_to_page(phys_to_pfn_t(PHYS, 0)), ENXIO);
    CHECK_NULL_ERRNO(pfn_t_to_page_inline(dev_map(PHYS)), ENXIO);
    CHECK(pfn_t_to_virt(phys_to_pfn_t(PHYS + PAGE, 0)) == base + PAGE);
    CHECK(pfn_t_to_virt(dev_map(PHYS + PAGE)) == base + PAGE);
    CHECK_NULL_ERRNO(pfn_t_to_virt(phys_to_pfn_t(PHYS, PFN_DEV)), EINVAL);
    check_message();
    CHECK_NULL_ERRNO(pfn_t_to_virt(phys_to_pfn_t(PHYS, PFN_SG_CHAIN)), EINVAL);
    CHECK_NULL_ERRNO(pfn_t_to_virt(dev_map(PHYS + 2 * PAGE)), ENXIO);
    CHECK_EQ(pfn_unregister_range(dev, PHYS), 0);
    munmap(base, 2 * PAGE);
}

/* Pins on one thread: errors, the handle, refusals on the pinning thread. Waiting for pins
 * held elsewhere is int_pins. */
static void pins(pfn_device *dev)
{
    char *base = map_anon(4 * PAGE);
    pfn_resource res = {PHYS, PHYS + 4 * PAGE - 1, NULL};
    CHECK_NULL_ERRNO(pfn_pin(dev_map(PHYS)), ENXIO);
    check_message();
    CHECK_EQ(pfn_register_range_memmap(dev, &res, base, PFN_MEMMAP_DRAM), 0);
    CHECK_NULL_ERRNO(pfn_pin(phys_to_pfn_t(PHYS, PFN_SG_CHAIN)), EINVAL);
    CHECK_NULL_ERRNO(pfn_pin(dev_map(PHYS + 4 * PAGE)), ENXIO);

    pfn_dev_pagemap *a = pfn_pin(dev_map(PHYS));
    pfn_dev_pagemap *b = pfn_get_dev_pagemap(phys_to_pfn_t(PHYS + 3 * PAGE, PFN_DEV));
    REQUIRE(a != NULL && b != NULL);
    CHECK(a == b); /* one counter per thread and range */
    /* With a pin held, descriptors and addresses stay valid without a kmap. */
    struct pfn_page *p = pfn_t_to_page(dev_map(PHYS + 2 * PAGE));
    CHECK(p != NULL && pfn_page_address(p) == base + 2 * PAGE);
    CHECK_EQ(pfn_pin_waiters(), 0);
    /* The pinning thread cannot wait for its own pins: EDEADLK, nothing removed. */
    CHECK_EQ(pfn_unregister_range(dev, PHYS), -EDEADLK);
    check_message();
    CHECK(pfn_t_to_page(dev_map(PHYS)) != NULL);
    CHECK_EQ(pfn_unpin(a), 0);
    CHECK_EQ(pfn_unregister_range(dev, PHYS), -EDEADLK); /* one pin left */
    CHECK_EQ(pfn_put_dev_pagemap(b), 0);
    /* Released more often than taken: refused, nothing changes. */
    CHECK_EQ(pfn_unpin(a), -EINVAL);
    check_message();
    CHECK_EQ(pfn_unpin(NULL), 0);
    CHECK_EQ(pfn_put_dev_pagemap(NULL), 0);

    /* A device with a range this thread pinned refuses to be freed, and stays usable. */
    pfn_device *other = pfn_device_new("pinned");
    REQUIRE(other != NULL);
    char *base2 = map_anon(PAGE);
    pfn_resource res2 = {PHYS + (1ull << 30), PHYS + (1ull << 30) + PAGE - 1, NULL};
    CHECK_EQ(devm_register_kmap_pfn_range(other, &res2, base2), 0);
    pfn_dev_pagemap *c = pfn_pin(phys_to_pfn_t(res2.start, 0));
    REQUIRE(c != NULL);
    CHECK(c != a);
    CHECK_EQ(pfn_device_free(other), -EDEADLK);
    CHECK(kmap_atomic_pfn_t(phys_to_pfn_t(res2.start, 0)) == base2);
    CHECK_EQ(kunmap_atomic_pfn_t(base2), 0);
    CHECK_EQ(pfn_unpin(c), 0);
    CHECK_EQ(pfn_device_free(other), 0);

    /* pfn_pin_frame: the pin with the frame's address and descriptor; NULL descriptor for a
     * range without a memmap; nothing written on failure; NULL out-pointers allowed. */
    void *addr = NULL;
    struct pfn_page *page = NULL;
    pfn_dev_pagemap *f = pfn_pin_frame(dev_map(PHYS + 2 * PAGE), &addr, &page);
    REQUIRE(f != NULL);
    CHECK(addr == base + 2 * PAGE);
    CHECK(page == pfn_t_to_page(dev_map(PHYS + 2 * PAGE)));
    CHECK_EQ(pfn_unpin(f), 0);
    CHECK((f = pfn_pin_frame(dev_map(PHYS), NULL, NULL)) != NULL);
    CHECK_EQ(pfn_unpin(f), 0);
    void *untouched = (void *)1;
    struct pfn_page *untouched_page = (struct pfn_page *)1;
    CHECK_NULL_ERRNO(pfn_pin_frame(dev_map(PHYS + 4 * PAGE), &untouched, &untouched_page), ENXIO);
    CHECK_NULL_ERRNO(pfn_pin_frame(phys_to_pfn_t(PHYS, PFN_SG_CHAIN), &untouched, &untouched_page), EINVAL);
    CHECK(untouched == (void *)1 && untouched_page == (struct pfn_page *)1);
    char *base3 = map_anon(PAGE);
    pfn_resource res3 = {PHYS + (2ull << 30), PHYS + (2ull << 30) + PAGE - 1, NULL};
    CHECK_EQ(devm_register_kmap_pfn_range(dev, &res3, base3), 0);
    f = pfn_pin_frame(phys_to_pfn_t(res3.start, 0), &addr, &page);
    REQUIRE(f != NULL);
    CHECK(addr == base3 && page == NULL);
    CHECK_EQ(pfn_unpin(f), 0);
    CHECK_EQ(pfn_unregister_range(dev, res3.start), 0);
    munmap(base3, PAGE);

    /* Unpinned: unregister completes at once, and new pins miss. */
    CHECK_EQ(pfn_unregister_range(dev, PHYS), 0);
    CHECK_NULL_ERRNO(pfn_pin(dev_map(PHYS)), ENXIO);
    munmap(base, 4 * PAGE);
    munmap(base2, PAGE);
}

int main(void)
{
    check_watchdog("api_pages", 120);
    pfn_device *dev = pfn_device_new("pages");
    REQUIRE(dev != NULL);
    layout();
    dram_memmap(dev);
    in_range_memmap(dev);
    no_memmap(dev);
    pins(dev);
    CHECK_EQ(pfn_device_free(dev), 0);
    return check_report("api_pages");
}
