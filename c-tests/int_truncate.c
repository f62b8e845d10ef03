/* Another process truncates a registered pmem file: the library reports it as an error
 * (persist -EFAULT, backed size, map -EINVAL) instead of letting its own calls crash.
 * make test runs it in msync mode (tmpfs) and in flush mode (PFN_FORCE_GRANULARITY). */
#define _GNU_SOURCE
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"

#define PAGE 4096ull
#define PHYS (4ull << 40)

int main(void)
{
    char path[256];
    test_path(path, sizeof path, "int_truncate");
    unlink(path);
    pfn_pmem *m = pfn_pmem_map(path, 16 * PAGE, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    char *base = pfn_pmem_addr(m);
    pfn_device *dev = pfn_device_new("shrinking");
    pfn_resource r = {PHYS, PHYS + 16 * PAGE - 1, NULL};
    REQUIRE(devm_register_kmap_pfn_range(dev, &r, base) == 0);
    char *p = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + 10 * PAGE, 0));
    REQUIRE(p != NULL);
    p[0] = 'x';
    kunmap_atomic_pfn_t(p);
    CHECK_EQ(pfn_pmem_persist(m, base, 16 * PAGE), 0);
    CHECK_EQ(pfn_pmem_backed_size(m), 16 * PAGE);

    /* Another process cuts the file to 4 pages. */
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0)
        _exit(truncate(path, 4 * PAGE) == 0 ? 0 : 1);
    int status;
    REQUIRE(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* Persist asks the kernel nothing; pfn_pmem_backed_size does, and tells persist. */
    CHECK_EQ(pfn_pmem_backed_size(m), 4 * PAGE);
    CHECK_EQ(pfn_pmem_size(m), 16 * PAGE);
    CHECK_EQ(pfn_pmem_persist(m, base + 10 * PAGE, 8), -EFAULT);
    CHECK_EQ(pfn_pmem_persist(m, base, 16 * PAGE), -EFAULT);
    CHECK_EQ(pfn_pmem_persist(m, base + 3 * PAGE, PAGE), 0); /* what is left still persists */
    /* Mapping it again at the old size is refused; at its size, or with CREATE, it works. */
    CHECK_NULL_ERRNO(pfn_pmem_map(path, 16 * PAGE, 0), EINVAL);
    pfn_pmem *small = pfn_pmem_map(path, 0, 0);
    CHECK(small != NULL);
    CHECK_EQ(pfn_pmem_size(small), 4 * PAGE);
    CHECK_EQ(pfn_pmem_unmap(small), 0);

    /* Cut again, to 2 pages. Until pfn_pmem_backed_size looks, persist goes by the 4 pages
     * it last saw: in msync mode that is harmless (msync touches nothing) and returns 0; in
     * flush mode a flush of page 3 would raise SIGBUS, as a store would, so it is not tried. */
    REQUIRE(truncate(path, 2 * PAGE) == 0);
    if (pfn_pmem_granularity(m) == PFN_GRANULARITY_PAGE)
        CHECK_EQ(pfn_pmem_persist(m, base + 3 * PAGE, 8), 0);
    CHECK_EQ(pfn_pmem_backed_size(m), 2 * PAGE);
    CHECK_EQ(pfn_pmem_persist(m, base + 3 * PAGE, 8), -EFAULT);
    CHECK_EQ(pfn_pmem_persist(m, base + PAGE, 8), 0);

    CHECK_EQ(pfn_device_free(dev), 0);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    unlink(path);
    return check_report("int_truncate");
}
