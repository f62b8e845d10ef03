/* libpfn demo: map a pmem file, register it in the physical space, write through pfn_t
 * handles, persist, unmap, map again (at whatever address the kernel picks), re-register at the
 * same physical base and read everything back through the same handles.
 *
 * usage: demo [PMEM_FILE]   (default /dev/shm/libpfn-demo.pmem) */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pfn.h"

#define PAGES 256
#define PHYS_BASE (1ull << 40) /* where the file lives in the library's physical space */

static int fail(const char *what, int err)
{
    fprintf(stderr, "demo: %s: %s\n", what, strerror(err));
    return 1;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "/dev/shm/libpfn-demo.pmem";
    const uint64_t size = PAGES * (uint64_t)PFN_PAGE_SIZE;
    printf("%s, header %s\n", pfn_version(), PFN_VERSION_STRING);

    pfn_pmem *m = pfn_pmem_map(path, size, PFN_PMEM_CREATE);
    if (!m)
        return fail(path, errno);
    pfn_device *dev = pfn_device_new("pmem0");
    if (!dev)
        return fail("pfn_device_new", errno);
    pfn_resource res = {PHYS_BASE, PHYS_BASE + size - 1, "pmem0"};
    int rc = devm_register_kmap_pfn_range(dev, &res, pfn_pmem_addr(m));
    if (rc)
        return fail("register", -rc);
    printf("mapped %s: %" PRIu64 " KiB at %p, registered as phys [%#" PRIx64 ", %#" PRIx64 "]\n",
           path, size / 1024, pfn_pmem_addr(m), res.start, res.end);

    /* Handles that could be stored on media: one per page, flagged as device memory. */
    pfn_t handles[PAGES];
    for (int i = 0; i < PAGES; i++)
        handles[i] = phys_to_pfn_t(PHYS_BASE + (uint64_t)i * PFN_PAGE_SIZE, PFN_DEV);

    for (int i = 0; i < PAGES; i++) {
        char *page = kmap_atomic_pfn_t(handles[i]);
        if (!page)
            return fail("kmap", errno);
        snprintf(page, PFN_PAGE_SIZE, "page %d of %s, pfn %#" PRIx64, i, path,
                 pfn_t_to_pfn(handles[i]));
        rc = pfn_pmem_persist(m, page, PFN_PAGE_SIZE);
        kunmap_atomic_pfn_t(page);
        if (rc)
            return fail("persist", -rc);
    }
    printf("wrote and persisted %d pages through their pfn_t handles\n", PAGES);

    if ((rc = pfn_device_free(dev)) || (rc = pfn_pmem_unmap(m)))
        return fail("teardown", -rc);

    /* A new mapping of the same file, registered at the same physical base. */
    m = pfn_pmem_map(path, 0, 0);
    dev = pfn_device_new("pmem0-again");
    if (!m || !dev)
        return fail("remap", errno);
    if ((rc = devm_register_kmap_pfn_range(dev, &res, pfn_pmem_addr(m))))
        return fail("register again", -rc);
    printf("remapped at %p, registered at the same physical base\n", pfn_pmem_addr(m));

    int good = 0;
    for (int i = 0; i < PAGES; i++) {
        uint64_t len = 0;
        const char *page = kmap_atomic_pfn_t_len(handles[i], &len);
        if (!page)
            return fail("kmap", errno);
        char want[128];
        snprintf(want, sizeof want, "page %d of %s, pfn %#" PRIx64, i, path,
                 pfn_t_to_pfn(handles[i]));
        good += strcmp(page, want) == 0 && len == size - (uint64_t)i * PFN_PAGE_SIZE;
        kunmap_atomic_pfn_t((void *)page);
    }
    const char *first = kmap_atomic_pfn_t(handles[0]);
    printf("verified %d/%d pages; page 0 reads \"%s\"\n", good, PAGES, first ? first : "?");
    kunmap_atomic_pfn_t((void *)first);

    if ((rc = pfn_device_free(dev)) || (rc = pfn_pmem_unmap(m)))
        return fail("teardown", -rc);
    if (good != PAGES) {
        fprintf(stderr, "demo: %d pages did not read back\n", PAGES - good);
        return 1;
    }
    printf("ok\n");
    return 0;
}
