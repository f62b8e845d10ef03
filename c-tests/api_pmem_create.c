/* A failed pfn_pmem_map(..., PFN_PMEM_CREATE) leaves nothing behind: a file it created is
 * removed, a file that existed before is never removed, keeps its bytes, and gets its length
 * back if the call extended it (issue 8, item 9). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"

#define PAGE 4096ull

static char path[256];

static int exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

static long long size_of(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? (long long)st.st_size : -1;
}

/* A call that must fail, with errno `want` (or, when `alt` is not 0, that one). */
static void refused(uint64_t offset, uint64_t size, int want, int alt)
{
    errno = 0;
    pfn_pmem *m = pfn_pmem_map_range(path, offset, size, PFN_PMEM_CREATE);
    int e = errno;
    CHECK(m == NULL);
    CHECK(e == want || (alt && e == alt));
    if (m)
        pfn_pmem_unmap(m);
}

int main(void)
{
    test_path(path, sizeof path, "api_pmem_create");
    unlink(path);

    /* New file, refused before anything is made: a size that is no page multiple. */
    refused(0, 100, EINVAL, 0);
    CHECK(!exists(path));
    /* Refused after the file was made: size 0 of an empty new file; more than the file
     * system holds (ENOSPC on tmpfs, EFBIG where files cannot grow so far); an end beyond
     * the largest file offset. */
    refused(0, 0, EINVAL, 0);
    CHECK(!exists(path));
    refused(0, 1ull << 50, ENOSPC, EFBIG);
    CHECK(!exists(path));
    refused(1ull << 62, 1ull << 62, EINVAL, 0);
    CHECK(!exists(path));
    refused(1ull << 49, 1ull << 49, ENOSPC, EFBIG);
    CHECK(!exists(path));

    /* An existing file with data: never removed, bytes and length kept. */
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    REQUIRE(fd >= 0);
    char data[3 * PAGE];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (char)(i * 7);
    REQUIRE(write(fd, data, sizeof data) == (ssize_t)sizeof data);
    refused(0, 1ull << 50, ENOSPC, EFBIG);
    CHECK(exists(path));
    CHECK_EQ(size_of(path), sizeof data);
    char back[3 * PAGE];
    CHECK(pread(fd, back, sizeof back, 0) == (ssize_t)sizeof back && !memcmp(back, data, sizeof data));
    /* An existing empty file refused at size 0 stays, empty. */
    REQUIRE(ftruncate(fd, 0) == 0);
    refused(0, 0, EINVAL, 0);
    CHECK(exists(path));
    CHECK_EQ(size_of(path), 0);
    close(fd);

    /* Success still creates and extends, and an existing file is mapped in place. */
    unlink(path);
    pfn_pmem *m = pfn_pmem_map(path, 2 * PAGE, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    CHECK_EQ(size_of(path), 2 * PAGE);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    m = pfn_pmem_map(path, 4 * PAGE, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    CHECK_EQ(size_of(path), 4 * PAGE);
    CHECK_EQ(pfn_pmem_unmap(m), 0);

    /* A dangling symbolic link is not followed to create its target. */
    unlink(path);
    char target[300];
    snprintf(target, sizeof target, "%s.target", path);
    unlink(target);
    REQUIRE(symlink(target, path) == 0);
    CHECK_NULL_ERRNO(pfn_pmem_map(path, PAGE, PFN_PMEM_CREATE), ENOENT);
    CHECK(!exists(target));
    CHECK(exists(path)); /* the link itself is not ours to remove */
    unlink(path);
    return check_report("api_pmem_create");
}
