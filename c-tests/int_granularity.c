/* How a mapping persists, and device DAX without a DAX device.
 *
 * tmpfs refuses MAP_SYNC, so its files are PFN_GRANULARITY_PAGE unless PFN_FORCE_GRANULARITY
 * says otherwise (each value forced in a new run of this binary; an unknown value makes every
 * map fail with EINVAL). Device DAX is tested against a fake sysfs tree (PFN_SYSFS_ROOT) that
 * describes /dev/zero (1:5) as a device-DAX instance of 8 MiB with 2 MiB alignment in an
 * NVDIMM region: mapping /dev/zero then takes the device path (size and alignment from sysfs,
 * nothing extended), and the region's persistence_domain decides CACHE_LINE or BYTE. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"
#include "rerun.h"

#define PAGE 4096ull
#define MIB (1ull << 20)

static char path[256];

static void write_file(const char *root, const char *rel, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    FILE *f = fopen(p, "w");
    REQUIRE(f != NULL);
    fputs(text, f);
    fclose(f);
}

static void make_dirs(const char *root, const char *rel)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    for (char *s = p + strlen(root) + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            mkdir(p, 0755);
            *s = '/';
        }
    mkdir(p, 0755);
}

static void link_at(const char *root, const char *target, const char *rel)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    REQUIRE(symlink(target, p) == 0);
}

/* A tree shaped like sysfs: dev/char/MAJ:MIN links into devices/.../region0/..., whose
 * subsystem links name the class. */
static void fake_sysfs(const char *root)
{
    make_dirs(root, "class/dax");
    make_dirs(root, "class/mem");
    make_dirs(root, "dev/char");
    make_dirs(root, "devices/ndbus0/region0/dax0.0/dax/dax0.0");
    make_dirs(root, "devices/virtual/mem/null");
    link_at(root, "../../../../../../class/dax", "devices/ndbus0/region0/dax0.0/dax/dax0.0/subsystem");
    write_file(root, "devices/ndbus0/region0/dax0.0/dax/dax0.0/size", "8388608\n");
    write_file(root, "devices/ndbus0/region0/dax0.0/dax/dax0.0/align", "2097152\n");
    write_file(root, "devices/ndbus0/region0/persistence_domain", "memory_controller\n");
    link_at(root, "../../devices/ndbus0/region0/dax0.0/dax/dax0.0", "dev/char/1:5");
    link_at(root, "../../../../class/mem", "devices/virtual/mem/null/subsystem");
    link_at(root, "../../devices/virtual/mem/null", "dev/char/1:3");
}

static int remove_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

/* In a run with PFN_SYSFS_ROOT set to the fake tree. */
static int device_dax(const char *root)
{
    struct stat st;
    REQUIRE(stat("/dev/zero", &st) == 0 && major(st.st_rdev) == 1 && minor(st.st_rdev) == 5);

    /* Size 0: the whole device, as sysfs says. */
    pfn_pmem *m = pfn_pmem_map("/dev/zero", 0, 0);
    REQUIRE(m != NULL);
    CHECK_EQ(pfn_pmem_size(m), 8 * MIB);
    CHECK_EQ(pfn_pmem_backed_size(m), 8 * MIB);
    CHECK_EQ(pfn_pmem_granularity(m), PFN_GRANULARITY_CACHE_LINE);
    char *a = pfn_pmem_addr(m);
    memset(a + 3 * MIB, 0x5A, 4096);
    CHECK_EQ(pfn_pmem_persist(m, a + 3 * MIB, 4096), 0);
    CHECK_EQ(pfn_persist(a + 3 * MIB, 4096), 0);
    CHECK(pfn_memcpy_persist(a, "device", 7) == a && !memcmp(a, "device", 7));
    CHECK_EQ(pfn_pmem_persist(m, a + 8 * MIB - 1, 2), -EINVAL);
    CHECK_EQ(pfn_pmem_unmap(m), 0);

    /* Pieces on the device's 2 MiB alignment; PFN_PMEM_CREATE neither extends nor fails. */
    m = pfn_pmem_map_range("/dev/zero", 2 * MIB, 4 * MIB, PFN_PMEM_CREATE);
    CHECK(m != NULL);
    CHECK_EQ(pfn_pmem_size(m), 4 * MIB);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    m = pfn_pmem_map_range("/dev/zero", 6 * MIB, 0, 0);
    CHECK(m != NULL);
    CHECK_EQ(pfn_pmem_size(m), 2 * MIB);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    /* EINVAL: an offset or a size off the alignment, beyond the device, or past its end. */
    CHECK_NULL_ERRNO(pfn_pmem_map_range("/dev/zero", PAGE, 2 * MIB, 0), EINVAL);
    CHECK_NULL_ERRNO(pfn_pmem_map("/dev/zero", MIB, 0), EINVAL);
    CHECK_NULL_ERRNO(pfn_pmem_map("/dev/zero", 10 * MIB, PFN_PMEM_CREATE), EINVAL);
    CHECK_NULL_ERRNO(pfn_pmem_map_range("/dev/zero", 6 * MIB, 4 * MIB, 0), EINVAL);
    CHECK_NULL_ERRNO(pfn_pmem_map_range("/dev/zero", 8 * MIB, 0, 0), EINVAL);
    CHECK_NULL_ERRNO(pfn_pmem_map_range("/dev/zero", UINT64_MAX - 2 * MIB + 1, 2 * MIB, 0), EINVAL);
    /* A character device of another class, and one sysfs does not know. */
    CHECK_NULL_ERRNO(pfn_pmem_map("/dev/null", 0, 0), EINVAL);
    CHECK_NULL_ERRNO(pfn_pmem_map("/dev/full", 0, 0), EINVAL);

    /* eADR: the region says the CPU caches are in the persistence domain. */
    write_file(root, "devices/ndbus0/region0/persistence_domain", "cpu_cache\n");
    m = pfn_pmem_map("/dev/zero", 2 * MIB, 0);
    REQUIRE(m != NULL);
    CHECK_EQ(pfn_pmem_granularity(m), PFN_GRANULARITY_BYTE);
    a = pfn_pmem_addr(m);
    a[100] = 1;
    CHECK_EQ(pfn_pmem_persist(m, a + 100, 1), 0);
    CHECK_EQ(pfn_pmem_unmap(m), 0);

    /* A sysfs entry without a size is refused, not guessed. */
    char p[512];
    snprintf(p, sizeof p, "%s/devices/ndbus0/region0/dax0.0/dax/dax0.0/size", root);
    REQUIRE(unlink(p) == 0);
    CHECK_NULL_ERRNO(pfn_pmem_map("/dev/zero", 0, 0), EINVAL);

    /* Regular files are unaffected by the fake tree (tmpfs refuses MAP_SYNC). */
    m = pfn_pmem_map(path, 4 * PAGE, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    CHECK_EQ(pfn_pmem_granularity(m), PFN_GRANULARITY_PAGE);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    unlink(path);
    return check_report("int_granularity[device DAX, fake sysfs]");
}

/* In a run with PFN_FORCE_GRANULARITY set to `value`. */
static int forced(const char *value)
{
    int want = !strcmp(value, "page") ? PFN_GRANULARITY_PAGE
               : !strcmp(value, "cache_line") ? PFN_GRANULARITY_CACHE_LINE
               : !strcmp(value, "byte") ? PFN_GRANULARITY_BYTE
               : -1;
    unlink(path);
    pfn_pmem *m = pfn_pmem_map(path, 4 * PAGE, PFN_PMEM_CREATE);
    if (want < 0) {
        CHECK(m == NULL && errno == EINVAL);
        CHECK(access(path, F_OK) != 0); /* and the failed create left nothing */
    } else {
        REQUIRE(m != NULL);
        CHECK_EQ(pfn_pmem_granularity(m), want);
        char *a = pfn_pmem_addr(m);
        memset(a, 7, 4 * PAGE);
        CHECK_EQ(pfn_pmem_persist(m, a + 10, 100), 0);
        CHECK_EQ(pfn_persist(a + 10, 100), 0);
        CHECK(pfn_memset_persist(a, 9, 4 * PAGE) == a && a[4 * PAGE - 1] == 9);
        CHECK_EQ(pfn_pmem_unmap(m), 0);
    }
    unlink(path);
    char name[64];
    snprintf(name, sizeof name, "int_granularity[PFN_FORCE_GRANULARITY=%s]", value);
    return check_report(name);
}

int main(int argc, char **argv)
{
    test_path(path, sizeof path, "int_granularity");
    if (argc == 3 && !strcmp(argv[1], "--dax"))
        return device_dax(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "--forced"))
        return forced(argv[2]);

    /* tmpfs: PAGE, unforced. */
    unlink(path);
    pfn_pmem *m = pfn_pmem_map(path, 4 * PAGE, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    CHECK_EQ(pfn_pmem_granularity(m), PFN_GRANULARITY_PAGE);
    CHECK_EQ(pfn_pmem_granularity(NULL), -EINVAL);
    CHECK_EQ(pfn_pmem_granularity((pfn_pmem *)&m), -EINVAL);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    CHECK_EQ(pfn_pmem_granularity(m), -EINVAL);
    unlink(path);
    /* A file mapped from an offset. */
    m = pfn_pmem_map_range(path, 2 * PAGE, PAGE, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    struct stat st;
    CHECK(stat(path, &st) == 0 && st.st_size == 3 * PAGE);
    CHECK_EQ(pfn_pmem_size(m), PAGE);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    CHECK_NULL_ERRNO(pfn_pmem_map_range(path, 100, PAGE, 0), EINVAL);
    CHECK_NULL_ERRNO(pfn_pmem_map_range(path, 3 * PAGE, 0, 0), EINVAL);
    CHECK_NULL_ERRNO(pfn_pmem_map_range(path, UINT64_MAX & ~(PAGE - 1), PAGE, PFN_PMEM_CREATE), EINVAL);
    m = pfn_pmem_map_range(path, PAGE, 0, 0);
    CHECK(m != NULL && pfn_pmem_size(m) == 2 * PAGE);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    unlink(path);

    const char *values[] = {"page", "cache_line", "byte", "bogus"};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char set[64];
        snprintf(set, sizeof set, "PFN_FORCE_GRANULARITY=%s", values[i]);
        const char *env[] = {set, NULL};
        const char *args[] = {"--forced", values[i], NULL};
        CHECK_EQ(check_rerun(env, args), 0);
    }

    char root[] = "/tmp/libpfn-sysfs-XXXXXX";
    REQUIRE(mkdtemp(root) != NULL);
    fake_sysfs(root);
    char set[600];
    snprintf(set, sizeof set, "PFN_SYSFS_ROOT=%s", root);
    const char *env[] = {set, NULL};
    const char *args[] = {"--dax", root, NULL};
    CHECK_EQ(check_rerun(env, args), 0);
    nftw(root, remove_one, 16, FTW_DEPTH | FTW_PHYS);
    CHECK(access(root, F_OK) != 0);
    return check_report("int_granularity");
}
