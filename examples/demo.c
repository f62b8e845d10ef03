/* libpfn demo: map a pmem file, register it in the physical space, write through pfn_t
 * handles, persist, unmap, map again (at whatever address the kernel picks), re-register at the
 * same physical base and read everything back through the same handles.
 *
 * usage: demo [--keep] [PMEM_FILE]
 *
 * Without PMEM_FILE it uses /dev/shm/libpfn-demo-<uid>.pmem (one per user; $TMPDIR or /tmp
 * where there is no /dev/shm). It creates the
 * file, or reuses one that an earlier `demo --keep` left (recognized by the magic in its first
 * page); any other existing file is refused untouched. A file the demo created is removed at
 * the end unless --keep is given. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "pfn.h"

#define PAGES 256              /* page 0 is the pool's header, pages 1.. hold the data */
#define PHYS_BASE (1ull << 40) /* where the file lives in the library's physical space */
#define MAGIC "libpfn demo pool, format 1\n"

static const char *path;
static int created; /* this run created the file: remove it on the way out unless --keep */
static int keep;

static void remove_created(void)
{
    if (created && !keep)
        unlink(path);
}

static int fail(const char *what, int err)
{
    fprintf(stderr, "demo: %s: %s\n", what, strerror(err));
    remove_created();
    return 1;
}

static int refuse(const char *why)
{
    fprintf(stderr,
            "demo: %s %s; refusing to touch it. Give the demo a path of its own, e.g.\n"
            "      make demo PMEM_FILE=/dev/shm/my-demo.pmem   (or ./build/demo /dev/shm/my-demo.pmem)\n",
            path, why);
    return 1;
}

/* Opens the pool: a new file (created exclusively, so nothing that appeared meanwhile is
 * overwritten) or a demo pool kept from an earlier run. Returns NULL after printing why. */
static pfn_pmem *open_pool(uint64_t size)
{
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        close(fd);
        created = 1;
        pfn_pmem *m = pfn_pmem_map(path, size, PFN_PMEM_CREATE);
        if (!m) {
            fail(path, errno);
            return NULL;
        }
        memcpy(pfn_pmem_addr(m), MAGIC, sizeof MAGIC);
        int rc = pfn_pmem_persist(m, pfn_pmem_addr(m), sizeof MAGIC);
        if (rc) {
            fail("persist", -rc);
            pfn_pmem_unmap(m);
            return NULL;
        }
        printf("created %s\n", path);
        return m;
    }
    if (errno != EEXIST) {
        fail(path, errno);
        return NULL;
    }
    struct stat st;
    if (lstat(path, &st) != 0) {
        fail(path, errno);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        refuse("exists and is not a regular file");
        return NULL;
    }
    if (st.st_uid != geteuid()) {
        refuse("exists and belongs to another user");
        return NULL;
    }
    if ((uint64_t)st.st_size != size) {
        refuse("exists and is not a demo pool (wrong size)");
        return NULL;
    }
    pfn_pmem *m = pfn_pmem_map(path, 0, 0); /* the file as it is: never extended */
    if (!m) {
        fail(path, errno);
        return NULL;
    }
    if (memcmp(pfn_pmem_addr(m), MAGIC, sizeof MAGIC) != 0) {
        pfn_pmem_unmap(m);
        refuse("exists and is not a demo pool (no demo magic in its first page)");
        return NULL;
    }
    printf("reusing the demo pool %s kept by an earlier run\n", path);
    return m;
}

int main(int argc, char **argv)
{
    int arg = 1;
    if (arg < argc && !strcmp(argv[arg], "--keep")) {
        keep = 1;
        arg++;
    }
    if (argc - arg > 1 || (arg < argc && argv[arg][0] == '-')) {
        fprintf(stderr, "usage: demo [--keep] [PMEM_FILE]\n");
        return 2;
    }
    /* tmpfs stands in for pmem; where there is no /dev/shm, $TMPDIR or /tmp. */
    struct stat st;
    const char *dir = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : getenv("TMPDIR");
    char default_path[512];
    snprintf(default_path, sizeof default_path, "%s/libpfn-demo-%ld.pmem", dir && *dir ? dir : "/tmp",
             (long)getuid());
    path = arg < argc ? argv[arg] : default_path;
    const uint64_t size = PAGES * (uint64_t)PFN_PAGE_SIZE;
    printf("libpfn %s (header %s)\n", pfn_version(), PFN_VERSION_STRING);

    pfn_pmem *m = open_pool(size);
    if (!m)
        return 1;
    pfn_device *dev = pfn_device_new("pmem0");
    if (!dev)
        return fail("pfn_device_new", errno);
    pfn_resource res = {PHYS_BASE, PHYS_BASE + size - 1, "pmem0"};
    int rc = devm_register_kmap_pfn_range(dev, &res, pfn_pmem_addr(m));
    if (rc)
        return fail("register", -rc);
    printf("mapped %s: %" PRIu64 " KiB at %p, registered as phys [%#" PRIx64 ", %#" PRIx64 "]\n",
           path, size / 1024, pfn_pmem_addr(m), res.start, res.end);

    /* Handles that could be stored on media: one per data page, flagged as device memory. */
    pfn_t handles[PAGES];
    for (int i = 1; i < PAGES; i++)
        handles[i] = phys_to_pfn_t(PHYS_BASE + (uint64_t)i * PFN_PAGE_SIZE, PFN_DEV);

    for (int i = 1; i < PAGES; i++) {
        char *page = kmap_atomic_pfn_t(handles[i]);
        if (!page)
            return fail("kmap", errno);
        snprintf(page, PFN_PAGE_SIZE, "page %d, pfn %#" PRIx64, i, pfn_t_to_pfn(handles[i]));
        rc = pfn_pmem_persist(m, page, PFN_PAGE_SIZE);
        kunmap_atomic_pfn_t(page);
        if (rc)
            return fail("persist", -rc);
    }
    printf("wrote and persisted %d pages through their pfn_t handles\n", PAGES - 1);

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
    for (int i = 1; i < PAGES; i++) {
        uint64_t len = 0;
        const char *page = kmap_atomic_pfn_t_len(handles[i], &len);
        if (!page)
            return fail("kmap", errno);
        char want[128];
        snprintf(want, sizeof want, "page %d, pfn %#" PRIx64, i, pfn_t_to_pfn(handles[i]));
        good += strcmp(page, want) == 0 && len == size - (uint64_t)i * PFN_PAGE_SIZE;
        kunmap_atomic_pfn_t((void *)page);
    }
    const char *first = kmap_atomic_pfn_t(handles[1]);
    printf("verified %d/%d pages; page 1 reads \"%s\"\n", good, PAGES - 1, first ? first : "?");
    kunmap_atomic_pfn_t((void *)first);

    if ((rc = pfn_device_free(dev)) || (rc = pfn_pmem_unmap(m)))
        return fail("teardown", -rc);
    if (good != PAGES - 1) {
        fprintf(stderr, "demo: %d pages did not read back\n", PAGES - 1 - good);
        remove_created();
        return 1;
    }
    if (created && !keep)
        printf("removed %s (keep it with: make demo KEEP=1, or demo --keep)\n", path);
    else
        printf("kept %s\n", path);
    remove_created();
    printf("ok\n");
    return 0;
}
