/* Every documented error, each from the call that must produce it, and the state unchanged. */
#define _GNU_SOURCE
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>
#include <fcntl.h>
#include "pfn.h"
#include "check.h"

#define PAGE 4096ull
#define PHYS (7ull << 40)

static char path[256];

static void range_errors(pfn_device *dev, char *base)
{
    pfn_resource ok = {PHYS, PHYS + 4 * PAGE - 1, "ok"};

    /* -EINVAL: NULL arguments that may not be NULL, and a pointer that is not a device. */
    CHECK_EQ(devm_register_kmap_pfn_range(NULL, &ok, base), -EINVAL);
    CHECK_EQ(devm_register_kmap_pfn_range(dev, NULL, base), -EINVAL);
    CHECK_EQ(devm_register_kmap_pfn_range(dev, &ok, NULL), -EINVAL);
    CHECK_EQ(devm_register_kmap_pfn_range((pfn_device *)&ok, &ok, base), -EINVAL);
    /* -EINVAL: misaligned start, end + 1 or base; end < start; base + size wrapping. */
    pfn_resource bad_start = {PHYS + 1, PHYS + 4 * PAGE - 1, NULL};
    pfn_resource bad_end = {PHYS, PHYS + 4 * PAGE, NULL};
    pfn_resource reversed = {PHYS + 4 * PAGE, PHYS + PAGE - 1, NULL};
    CHECK_EQ(devm_register_kmap_pfn_range(dev, &bad_start, base), -EINVAL);
    CHECK_EQ(devm_register_kmap_pfn_range(dev, &bad_end, base), -EINVAL);
    CHECK_EQ(devm_register_kmap_pfn_range(dev, &reversed, base), -EINVAL);
    CHECK_EQ(devm_register_kmap_pfn_range(dev, &ok, base + 8), -EINVAL);
    CHECK_EQ(devm_register_kmap_pfn_range(dev, &ok, (void *)(uintptr_t)(UINTPTR_MAX - PAGE + 1)), -EINVAL);
    /* None of those registered anything. */
    CHECK_NULL_ERRNO(kmap_atomic_pfn_t(phys_to_pfn_t(PHYS, 0)), ENXIO);

    CHECK_EQ(devm_register_kmap_pfn_range(dev, &ok, base), 0);
    /* -EBUSY: any overlap, with this device or another; identical, inside, straddling. */
    pfn_device *other = pfn_device_new("other");
    REQUIRE(other != NULL);
    pfn_resource inside = {PHYS + PAGE, PHYS + 2 * PAGE - 1, NULL};
    pfn_resource straddle = {PHYS - PAGE, PHYS + PAGE - 1, NULL};
    pfn_resource tail = {PHYS + 3 * PAGE, PHYS + 9 * PAGE - 1, NULL};
    CHECK_EQ(devm_register_kmap_pfn_range(dev, &ok, base), -EBUSY);
    CHECK_EQ(devm_register_kmap_pfn_range(other, &inside, base), -EBUSY);
    CHECK_EQ(devm_register_kmap_pfn_range(other, &straddle, base), -EBUSY);
    CHECK_EQ(devm_register_kmap_pfn_range(other, &tail, base), -EBUSY);
    /* Adjacent on both sides is fine. */
    pfn_resource before = {PHYS - PAGE, PHYS - 1, NULL};
    pfn_resource after = {PHYS + 4 * PAGE, PHYS + 5 * PAGE - 1, NULL};
    CHECK_EQ(devm_register_kmap_pfn_range(other, &before, base), 0);
    CHECK_EQ(devm_register_kmap_pfn_range(other, &after, base), 0);

    /* -ENOENT: a start this device did not register (another device's, inside, unknown). */
    CHECK_EQ(pfn_unregister_range(other, PHYS), -ENOENT);
    CHECK_EQ(pfn_unregister_range(dev, PHYS + PAGE), -ENOENT);
    CHECK_EQ(pfn_unregister_range(dev, PHYS - PAGE), -ENOENT);
    CHECK_EQ(pfn_unregister_range(dev, 123), -ENOENT);
    CHECK_EQ(pfn_unregister_range(NULL, PHYS), -EINVAL);

    /* kmap errors: ENXIO outside every range, EINVAL for PFN_SG_CHAIN (even inside one). */
    CHECK_NULL_ERRNO(kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + 5 * PAGE, 0)), ENXIO);
    CHECK_NULL_ERRNO(kmap_atomic_pfn_t(phys_to_pfn_t(PHYS, PFN_SG_CHAIN)), EINVAL);
    CHECK_NULL_ERRNO(kmap_atomic_pfn_t_len(phys_to_pfn_t(PHYS, PFN_SG_CHAIN), NULL), EINVAL);
    CHECK_NULL_ERRNO(kmap_atomic_pfn_t(pfn_to_pfn_t((1ull << 52) - 1)), ENXIO);
    /* Every flag but SG_CHAIN translates; beyond-52-bit values can only carry flags. */
    const uint64_t flags[] = {PFN_SG_LAST, PFN_DEV, PFN_MAP, PFN_SPECIAL, PFN_FLAGS_MASK & ~PFN_SG_CHAIN};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        pfn_t p = {((PHYS >> 12) + 2) | flags[i]};
        void *a = kmap_atomic_pfn_t(p);
        CHECK(a == base + 2 * PAGE);
        kunmap_atomic_pfn_t(a);
    }
    pfn_t beyond = {(PHYS >> 12) | PFN_FLAGS_MASK};
    CHECK_NULL_ERRNO(kmap_atomic_pfn_t(beyond), EINVAL);
    /* Registering the same physical range twice through one device, and reversed overflowing
     * ends: refused without changing anything. */
    pfn_resource top_wrap = {0xFFFFFFFFFFFFF000ull, 0x0FFFull, NULL};
    CHECK_EQ(devm_register_kmap_pfn_range(dev, &top_wrap, base), -EINVAL);

    /* -EDEADLK: unregister or device free while this thread holds a kmap; nothing removed. */
    void *held = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS, 0));
    CHECK(held == base);
    CHECK_EQ(pfn_unregister_range(dev, PHYS), -EDEADLK);
    CHECK_EQ(pfn_unregister_range(other, PHYS - PAGE), -EDEADLK);
    CHECK_EQ(pfn_device_free(dev), -EDEADLK);
    void *again = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + PAGE, 0));
    CHECK(again == base + PAGE);
    kunmap_atomic_pfn_t(again);
    kunmap_atomic_pfn_t(held);

    /* After the holder let go, both work; twice is -ENOENT. */
    CHECK_EQ(pfn_unregister_range(dev, PHYS), 0);
    CHECK_EQ(pfn_unregister_range(dev, PHYS), -ENOENT);
    CHECK_EQ(pfn_device_free(other), 0);
    /* A freed device is no longer a device: -EINVAL, not a crash. */
    CHECK_EQ(pfn_device_free(other), -EINVAL);
    CHECK_EQ(pfn_unregister_range(other, PHYS), -EINVAL);
    CHECK_EQ(devm_register_kmap_pfn_range(other, &ok, base), -EINVAL);
    CHECK_EQ(pfn_device_free(NULL), 0);
}

static void top_of_address_space(pfn_device *dev, char *base)
{
    /* The last frame of the 64-bit physical space is a valid range: end = 2^64 - 1. */
    pfn_resource top = {0xFFFFFFFFFFFFF000ull, 0xFFFFFFFFFFFFFFFFull, "top"};
    CHECK_EQ(devm_register_kmap_pfn_range(dev, &top, base), 0);
    void *p = kmap_atomic_pfn_t(pfn_to_pfn_t((1ull << 52) - 1));
    CHECK(p == base);
    kunmap_atomic_pfn_t(p);
    CHECK_EQ(pfn_unregister_range(dev, 0xFFFFFFFFFFFFF000ull), 0);
}

static void pmem_errors(void)
{
    unlink(path);
    /* -ENOENT without PFN_PMEM_CREATE. */
    CHECK_NULL_ERRNO(pfn_pmem_map(path, 4 * PAGE, 0), ENOENT);
    /* EINVAL: NULL path, unknown flag, size not a page multiple. */
    CHECK_NULL_ERRNO(pfn_pmem_map(NULL, 4 * PAGE, PFN_PMEM_CREATE), EINVAL);
    CHECK_NULL_ERRNO(pfn_pmem_map(path, 4 * PAGE, 0x80), EINVAL);
    CHECK_NULL_ERRNO(pfn_pmem_map(path, 100, PFN_PMEM_CREATE), EINVAL);
    CHECK_NULL_ERRNO(pfn_pmem_map(path, 0, PFN_PMEM_CREATE), EINVAL); /* new file, size 0 */
    /* A directory. */
    CHECK_NULL_ERRNO(pfn_pmem_map("/", 0, 0), EISDIR);
    /* A file whose size is not a page multiple, and one shorter than asked for. */
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, "abc", 3) == 3);
    close(fd);
    CHECK_NULL_ERRNO(pfn_pmem_map(path, 0, 0), EINVAL);
    CHECK_NULL_ERRNO(pfn_pmem_map(path, 4 * PAGE, 0), EINVAL);
    /* A zero-length file: nothing to map at size 0. */
    REQUIRE(truncate(path, 0) == 0);
    CHECK_NULL_ERRNO(pfn_pmem_map(path, 0, 0), EINVAL);
    CHECK_NULL_ERRNO(pfn_pmem_map(path, 0, PFN_PMEM_CREATE), EINVAL);
    /* A path that is not a file at all, and one whose directory does not exist. */
    CHECK_NULL_ERRNO(pfn_pmem_map("/dev/null", 0, 0), EINVAL);
    CHECK_NULL_ERRNO(pfn_pmem_map("/nonexistent-dir/x.pmem", PAGE, PFN_PMEM_CREATE), ENOENT);

    pfn_pmem *m = pfn_pmem_map(path, 4 * PAGE, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    char *a = pfn_pmem_addr(m);
    /* persist: -EINVAL outside the mapping, NULL address or mapping. */
    CHECK_EQ(pfn_pmem_persist(m, a, 4 * PAGE), 0);
    CHECK_EQ(pfn_pmem_persist(m, a + 100, 0), 0);
    CHECK_EQ(pfn_pmem_persist(m, a + 4 * PAGE - 1, 2), -EINVAL);
    CHECK_EQ(pfn_pmem_persist(m, a - 1, 1), -EINVAL);
    CHECK_EQ(pfn_pmem_persist(m, a + 4 * PAGE, 1), -EINVAL);
    CHECK_EQ(pfn_pmem_persist(m, a, SIZE_MAX), -EINVAL);
    CHECK_EQ(pfn_pmem_persist(m, NULL, 1), -EINVAL);
    CHECK_EQ(pfn_pmem_persist(NULL, a, 1), -EINVAL);
    CHECK_NULL_ERRNO(pfn_pmem_addr(NULL), EINVAL);
    CHECK_NULL_ERRNO(pfn_pmem_addr((pfn_pmem *)&m), EINVAL);
    CHECK_EQ(pfn_pmem_unmap((pfn_pmem *)&m), -EINVAL);
    errno = 0;
    CHECK_EQ(pfn_pmem_size(NULL), 0);
    CHECK_EQ(errno, EINVAL);
    errno = 0;
    CHECK_EQ(pfn_pmem_backed_size(NULL), 0);
    CHECK_EQ(errno, EINVAL);
    CHECK_EQ(pfn_pmem_backed_size(m), 4 * PAGE);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    /* Unmapped twice: -EINVAL; NULL: no-op. */
    CHECK_EQ(pfn_pmem_unmap(m), -EINVAL);
    CHECK_EQ(pfn_pmem_persist(m, a, 1), -EINVAL);
    errno = 0;
    CHECK_EQ(pfn_pmem_backed_size(m), 0);
    CHECK_EQ(errno, EINVAL);
    CHECK_EQ(pfn_pmem_unmap(NULL), 0);
    unlink(path);
}

/* Handles are never reused: a freed device or unmapped mapping stays invalid however many are
 * created after it, so a double free never frees a newer object (issue 13). */
static void stale_handles(void)
{
    pfn_device *old = pfn_device_new("old");
    REQUIRE(old != NULL);
    CHECK_EQ(pfn_device_free(old), 0);
    pfn_device *fresh[64];
    for (int i = 0; i < 64; i++) {
        fresh[i] = pfn_device_new("fresh");
        REQUIRE(fresh[i] != NULL);
        CHECK(fresh[i] != old);
    }
    CHECK_EQ(pfn_device_free(old), -EINVAL);
    for (int i = 0; i < 64; i++)
        CHECK_EQ(pfn_device_free(fresh[i]), 0); /* each still alive, freed once */

    pfn_pmem *m = pfn_pmem_map(path, PAGE, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    pfn_pmem *n = pfn_pmem_map(path, PAGE, 0);
    REQUIRE(n != NULL);
    CHECK(n != m);
    CHECK_EQ(pfn_pmem_unmap(m), -EINVAL);
    CHECK(pfn_pmem_addr(n) != NULL);
    CHECK_EQ(pfn_pmem_unmap(n), 0);
    unlink(path);
}

int main(void)
{
    test_path(path, sizeof path, "api_errors");
    unlink(path);
    pfn_pmem *m = pfn_pmem_map(path, 16 * PAGE, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    pfn_device *dev = pfn_device_new("errors");
    REQUIRE(dev != NULL);
    char *base = pfn_pmem_addr(m);

    /* kunmap with nothing mapped, and of garbage, is harmless. */
    kunmap_atomic_pfn_t(NULL);
    kunmap_atomic_pfn_t(base);
    kunmap_atomic_pfn_t((void *)1);

    range_errors(dev, base);
    top_of_address_space(dev, base);
    CHECK_EQ(pfn_device_free(dev), 0);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    pmem_errors();
    stale_handles();
    return check_report("api_errors");
}
