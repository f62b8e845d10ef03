/* Pool labels (issue 9 item 5): a new pool is labeled and registered at a random free start,
 * every later run registers it at the same start so stored handles still resolve; anything
 * that is not a label is refused untouched; failing calls leave the label bytes as found. */
#define _GNU_SOURCE
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"

#define PAGE 4096ull
#define POOL (8 * PAGE)

static char path[256], path2[256];

struct node {
    pfn_phys_t next;
    uint64_t value;
};

int main(void)
{
    test_path(path, sizeof path, "api_label");
    test_path(path2, sizeof path2, "api_label2");
    unlink(path);
    unlink(path2);
    CHECK_EQ(PFN_LABEL_SIZE, 64);

    pfn_pmem *m = pfn_pmem_map(path, POOL, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    uint64_t phys = 0, again = 0;
    CHECK_EQ(pfn_pmem_label_get(m, &phys), -ENODATA);
    CHECK(strstr(pfn_errormsg(), "blank") != NULL);

    /* First run: labeled and registered at a random aligned start; links stored as handles. */
    pfn_device *dev = pfn_device_new("label");
    REQUIRE(dev != NULL);
    CHECK_EQ(pfn_pmem_register_labeled(dev, m, &phys), 0);
    CHECK(phys >= (1ull << 40) && phys + POOL <= (1ull << 55));
    CHECK_EQ(phys % (2ull << 20), 0);
    CHECK_EQ(pfn_pmem_label_get(m, &again), 0);
    CHECK_EQ(again, phys);
    pfn_phys_t h = pfn_phys_make(phys + PAGE + 8, PFN_DEV);
    char *base = pfn_pmem_addr(m);
    struct node *a = (struct node *)(base + PAGE + 8), *b = (struct node *)(base + 3 * PAGE);
    a->value = 11;
    pfn_phys_store(&a->next, pfn_phys_make(phys + 3 * PAGE, PFN_DEV));
    b->value = 22;
    b->next = pfn_phys_null();
    CHECK_EQ(pfn_pmem_persist(m, base, POOL), 0);
    pfn_phys_t from_addr;
    CHECK_EQ(pfn_virt_to_phys(base + PAGE + 8, &from_addr), 0);
    CHECK_EQ(from_addr.val, h.val);
    /* Registering the labeled pool a second time overlaps itself: -EBUSY, label unchanged. */
    pfn_device *dev2 = pfn_device_new("label2");
    REQUIRE(dev2 != NULL);
    CHECK_EQ(pfn_pmem_register_labeled(dev2, m, &again), -EBUSY);
    CHECK_EQ(pfn_pmem_label_get(m, &again), 0);
    CHECK_EQ(again, phys);
    CHECK_EQ(pfn_device_free(dev), 0);
    CHECK_EQ(pfn_pmem_unmap(m), 0);

    /* Second run: mapped elsewhere maybe, registered at the same start, the links resolve. */
    m = pfn_pmem_map(path, 0, 0);
    REQUIRE(m != NULL);
    dev = pfn_device_new("label");
    REQUIRE(dev != NULL);
    again = 0;
    CHECK_EQ(pfn_pmem_register_labeled(dev, m, &again), 0);
    CHECK_EQ(again, phys);
    uint64_t sum = 0;
    for (pfn_phys_t at = h; !pfn_phys_is_null(at);) {
        struct node *n = kmap_atomic_pfn_phys(at);
        REQUIRE(n != NULL);
        sum += n->value;
        at = pfn_phys_load(&n->next);
        CHECK_EQ(kunmap_atomic_pfn_t(n), 0);
    }
    CHECK_EQ(sum, 33);
    CHECK_EQ(pfn_unregister_range(dev, phys), 0);

    /* A damaged label is refused, untouched; set rewrites it; a moved label is followed. */
    base = pfn_pmem_addr(m);
    base[20] ^= 1;
    char label[64];
    memcpy(label, base, sizeof label);
    CHECK_EQ(pfn_pmem_label_get(m, &again), -EILSEQ);
    CHECK(strstr(pfn_errormsg(), "checksum") != NULL);
    CHECK_EQ(pfn_pmem_register_labeled(dev, m, &again), -EILSEQ);
    CHECK(memcmp(base, label, sizeof label) == 0);
    CHECK_EQ(pfn_pmem_label_set(m, 5ull << 44), 0);
    CHECK_EQ(pfn_pmem_register_labeled(dev, m, &again), 0);
    CHECK_EQ(again, 5ull << 44);
    void *p = kmap_atomic_pfn_phys(pfn_phys_make((5ull << 44) + 3 * PAGE, PFN_DEV));
    CHECK(p == base + 3 * PAGE);
    CHECK_EQ(kunmap_atomic_pfn_t(p), 0);
    CHECK_EQ(pfn_unregister_range(dev, 5ull << 44), 0);

    /* Not blank and not a label (another format's data): refused, nothing written. */
    memset(base, 0, 64);
    memcpy(base, "SOMEDATA", 8);
    CHECK_EQ(pfn_pmem_register_labeled(dev, m, &again), -EILSEQ);
    CHECK(strstr(pfn_errormsg(), "not a labeled pool") != NULL);
    CHECK(memcmp(base, "SOMEDATA", 8) == 0);
    for (int i = 8; i < 64; i++)
        CHECK_EQ(base[i], 0);

    /* A dead device is refused before anything is written (the core's own test covers a new
     * pool that every candidate start refuses: it is left blank). */
    memset(base, 0, 64);
    pfn_device *dead = pfn_device_new("dead");
    REQUIRE(dead != NULL);
    CHECK_EQ(pfn_device_free(dead), 0);
    CHECK_EQ(pfn_pmem_register_labeled(dead, m, &again), -EINVAL);
    for (int i = 0; i < 64; i++)
        CHECK_EQ(base[i], 0);

    /* Bad arguments. */
    CHECK_EQ(pfn_pmem_label_get(m, NULL), -EINVAL);
    CHECK_EQ(pfn_pmem_label_get(NULL, &again), -EINVAL);
    CHECK_EQ(pfn_pmem_label_set(m, 5), -EINVAL);
    CHECK_EQ(pfn_pmem_label_set(m, UINT64_MAX & ~(PAGE - 1)), -EINVAL);
    CHECK_EQ(pfn_pmem_label_set(NULL, 0), -EINVAL);
    CHECK_EQ(pfn_pmem_register_labeled(dev, m, NULL), -EINVAL);
    CHECK_EQ(pfn_pmem_register_labeled(dev, NULL, &again), -EINVAL);
    for (int i = 0; i < 64; i++)
        CHECK_EQ(base[i], 0);

    /* Truncated under the label: -EFAULT, no SIGBUS. */
    REQUIRE(truncate(path, 0) == 0);
    CHECK_EQ(pfn_pmem_label_get(m, &again), -EFAULT);
    CHECK_EQ(pfn_pmem_register_labeled(dev, m, &again), -EFAULT);
    CHECK_EQ(pfn_device_free(dev), 0);
    CHECK_EQ(pfn_device_free(dev2), 0);
    CHECK_EQ(pfn_pmem_unmap(m), 0);

    /* Two new pools get different starts. */
    pfn_pmem *m1 = pfn_pmem_map(path, POOL, PFN_PMEM_CREATE);
    pfn_pmem *m2 = pfn_pmem_map(path2, POOL, PFN_PMEM_CREATE);
    REQUIRE(m1 && m2);
    dev = pfn_device_new("two");
    REQUIRE(dev != NULL);
    uint64_t s1, s2;
    CHECK_EQ(pfn_pmem_register_labeled(dev, m1, &s1), 0);
    CHECK_EQ(pfn_pmem_register_labeled(dev, m2, &s2), 0);
    CHECK(s1 != s2);
    CHECK_EQ(pfn_device_free(dev), 0);
    CHECK_EQ(pfn_pmem_unmap(m1), 0);
    CHECK_EQ(pfn_pmem_unmap(m2), 0);
    unlink(path);
    unlink(path2);
    return check_report("api_label");
}
