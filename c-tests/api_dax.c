/* DAX devices (issue 11, patch 4's lifetime fix): every pfn_dax_* function and every error it
 * documents: bad handles (NULL, foreign, stale, destroyed), direct_access only inside a
 * thread-bound section, page offsets at the edges (a frame past the range's end is not the
 * device's, even when the next range continues it), reads and writes across pages with short
 * counts at the end, NULL buffers, length 0, off + len past 2^64, kill, and a range that was
 * unregistered under the device. Data written is checked by reading the file with pread. Runs
 * itself again with every mapping in flush mode (PFN_FORCE_GRANULARITY=cache_line). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/mman.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"
#include "rerun.h"

#define PAGE 4096ull
#define PAGES 8ull
#define POOL (PAGES * PAGE)
#define PHYS (0x5a00000000ull)
#define HALF (POOL / 2)

static char path[256];

/* The file's bytes at `off`, read past the mapping (what the writes left in the page cache). */
static int file_equals(int fd, uint64_t off, const unsigned char *want, size_t len)
{
    unsigned char *got = malloc(len ? len : 1);
    REQUIRE(got != NULL);
    int ok = pread(fd, got, len, (off_t)off) == (ssize_t)len && memcmp(got, want, len) == 0;
    free(got);
    return ok;
}

static int msg_has(const char *s) { return strstr(pfn_errormsg(), s) != NULL; }

/* ---- pfn_dax_create_span: a device over several ranges ----
 * One 8-page file registered in pieces of device `d`, physically back to back from SPAN but
 * scattered in the mapping: A = pages 4-5, B = page 0, C = pages 6-7 (phys SPAN .. SPAN + 5P);
 * nothing at SPAN + 5P (a gap); D = page 1 at SPAN + 6P; another device's E = page 2 at
 * SPAN + 7P. */
#define SPAN (0x5b00000000ull)
static void span_calls(void)
{
    char spath[300];
    snprintf(spath, sizeof spath, "%s.span", path);
    unlink(spath);
    pfn_pmem *m = pfn_pmem_map(spath, POOL, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    unsigned char *base = pfn_pmem_addr(m);
    int fd = open(spath, O_RDONLY);
    REQUIRE(fd >= 0);
    pfn_device *d = pfn_device_new("span"), *e = pfn_device_new("span-other");
    REQUIRE(d != NULL && e != NULL);
    pfn_resource ra = {SPAN, SPAN + 2 * PAGE - 1, "A"};
    pfn_resource rb = {SPAN + 2 * PAGE, SPAN + 3 * PAGE - 1, "B"};
    pfn_resource rc = {SPAN + 3 * PAGE, SPAN + 5 * PAGE - 1, "C"};
    pfn_resource rd = {SPAN + 6 * PAGE, SPAN + 7 * PAGE - 1, "D"};
    pfn_resource re = {SPAN + 7 * PAGE, SPAN + 8 * PAGE - 1, "E"};
    REQUIRE(devm_register_kmap_pfn_range(d, &ra, base + 4 * PAGE) == 0);
    REQUIRE(devm_register_kmap_pfn_range(d, &rb, base) == 0);
    REQUIRE(devm_register_kmap_pfn_range(d, &rc, base + 6 * PAGE) == 0);
    REQUIRE(devm_register_kmap_pfn_range(d, &rd, base + PAGE) == 0);
    REQUIRE(devm_register_kmap_pfn_range(e, &re, base + 2 * PAGE) == 0);

    /* Errors. */
    CHECK_NULL_ERRNO(pfn_dax_create_span(NULL, SPAN, PAGE), EINVAL);
    CHECK(msg_has("pfn_dax_create_span"));
    CHECK_NULL_ERRNO(pfn_dax_create_span((pfn_device *)m, SPAN, PAGE), EINVAL);
    CHECK_NULL_ERRNO(pfn_dax_create_span(d, SPAN, 0), EINVAL); /* size 0 */
    CHECK(msg_has("multiple of the page size"));
    CHECK_NULL_ERRNO(pfn_dax_create_span(d, SPAN, 2 * PAGE + 1), EINVAL); /* unaligned size */
    CHECK(msg_has("multiple of the page size"));
    CHECK_NULL_ERRNO(pfn_dax_create_span(d, SPAN, 100), EINVAL);
    CHECK_NULL_ERRNO(pfn_dax_create_span(d, SPAN, UINT64_MAX - PAGE + 1), EINVAL); /* overflow */
    CHECK(msg_has("passes 2^64"));
    CHECK_NULL_ERRNO(pfn_dax_create_span(d, SPAN + PAGE, 4 * PAGE), ENOENT); /* inside A */
    CHECK(msg_has("no registered range"));
    CHECK_NULL_ERRNO(pfn_dax_create_span(d, SPAN + 1, 2 * PAGE), ENOENT);
    CHECK_NULL_ERRNO(pfn_dax_create_span(d, SPAN + 5 * PAGE, PAGE), ENOENT); /* the gap */
    CHECK_NULL_ERRNO(pfn_dax_create_span(e, SPAN, 5 * PAGE), ENOENT); /* not e's range */
    CHECK_NULL_ERRNO(pfn_dax_create_span(d, SPAN, 4 * PAGE), EINVAL); /* ends inside C */
    CHECK(msg_has("ends inside the range 0x5b00003000"));
    CHECK_NULL_ERRNO(pfn_dax_create_span(d, SPAN, 6 * PAGE), EINVAL); /* runs into the gap */
    CHECK(msg_has("gap at 0x5b00005000") && msg_has("no range is registered there"));
    CHECK_NULL_ERRNO(pfn_dax_create_span(d, SPAN, 8 * PAGE), EINVAL);
    CHECK_NULL_ERRNO(pfn_dax_create_span(d, SPAN + 6 * PAGE, 2 * PAGE), EINVAL); /* D + e's E */
    CHECK(msg_has("at 0x5b00007000") && msg_has("of another device"));

    /* A span of one range is pfn_dax_create's device. */
    pfn_dax *one = pfn_dax_create_span(d, SPAN + 6 * PAGE, PAGE);
    REQUIRE(one != NULL);
    CHECK_EQ(pfn_dax_pages(one), 1);
    CHECK_EQ(pfn_dax_destroy(one), 0);

    pfn_dax *dax = pfn_dax_create_span(d, SPAN, 5 * PAGE);
    REQUIRE(dax != NULL);
    CHECK_EQ(pfn_dax_pages(dax), 5);
    CHECK_EQ(pfn_dax_alive(dax), 1);
    {
        PFN_SECTION_SCOPE(s);
        (void)s;
        void *k = NULL;
        pfn_t p = {0};
        /* Contiguous up to the end of the range holding pgoff, with that range's address. */
        CHECK_EQ(pfn_dax_direct_access(dax, 0, 10, &k, &p), 2);
        CHECK(k == base + 4 * PAGE);
        CHECK_EQ(pfn_dax_direct_access(dax, 1, 10, &k, &p), 1);
        CHECK(k == base + 5 * PAGE);
        CHECK_EQ(pfn_dax_direct_access(dax, 2, 10, &k, &p), 1);
        CHECK(k == base);
        CHECK_EQ(p.val, (SPAN / PAGE + 2) | PFN_DEV);
        CHECK_EQ(pfn_dax_direct_access(dax, 3, 10, &k, &p), 2);
        CHECK(k == base + 6 * PAGE);
        CHECK_EQ(pfn_dax_direct_access(dax, 4, 10, &k, &p), 1);
        CHECK(k == base + 7 * PAGE);
        CHECK_EQ(p.val, (SPAN / PAGE + 4) | PFN_DEV);
        CHECK_EQ(pfn_dax_direct_access(dax, 5, 1, &k, &p), -ERANGE);
    }
    /* The device's bytes live at these file offsets: A, B, C in turn. */
    const uint64_t file_of[5] = {4 * PAGE, 5 * PAGE, 0, 6 * PAGE, 7 * PAGE};
    size_t size = 5 * PAGE;
    unsigned char *data = malloc(size), *out = malloc(size);
    REQUIRE(data && out);
    for (size_t i = 0; i < size; i++)
        data[i] = (unsigned char)(i * 29 + 3);
    CHECK_EQ(pfn_dax_write(dax, 0, data, size), size);
    for (int pg = 0; pg < 5; pg++)
        CHECK(file_equals(fd, file_of[pg], data + pg * PAGE, PAGE));
    memset(out, 0, size);
    CHECK_EQ(pfn_dax_read(dax, 0, out, size), size);
    CHECK(memcmp(out, data, size) == 0);
    /* Across A|B and B|C in one call each, and both at once. */
    CHECK_EQ(pfn_dax_write(dax, 2 * PAGE - 3, "ABCDEFGH", 8), 8);
    CHECK(file_equals(fd, 6 * PAGE - 3, (const unsigned char *)"ABC", 3));
    CHECK(file_equals(fd, 0, (const unsigned char *)"DEFGH", 5));
    CHECK(file_equals(fd, 6 * PAGE, data + 3 * PAGE, 1)); /* C: untouched */
    CHECK_EQ(pfn_dax_read(dax, 2 * PAGE - 3, out, 8), 8);
    CHECK(memcmp(out, "ABCDEFGH", 8) == 0);
    CHECK_EQ(pfn_dax_zero(dax, 2 * PAGE - 1, PAGE + 2), PAGE + 2);
    CHECK(file_equals(fd, 6 * PAGE - 1, (const unsigned char *)"\0", 1));
    CHECK(file_equals(fd, 6 * PAGE - 2, (const unsigned char *)"B", 1));
    {
        static const unsigned char zeros[PAGE];
        CHECK(file_equals(fd, 0, zeros, PAGE)); /* all of B */
    }
    CHECK(file_equals(fd, 6 * PAGE, (const unsigned char *)"\0", 1));
    CHECK(file_equals(fd, 6 * PAGE + 1, data + 3 * PAGE + 1, 1));
    /* Short at the end; 0 after. */
    CHECK_EQ(pfn_dax_read(dax, size - 5, out, 100), 5);
    CHECK(memcmp(out, data + size - 5, 5) == 0);
    CHECK_EQ(pfn_dax_write(dax, size, "q", 1), 0);

    /* B (the middle range) unregistered: its pages fail, A's and C's still serve. */
    CHECK_EQ(pfn_unregister_range(d, SPAN + 2 * PAGE), 0);
    CHECK_EQ(pfn_dax_alive(dax), 1);
    CHECK_EQ(pfn_dax_read(dax, 0, out, size), 2 * PAGE); /* stops where B was */
    CHECK_EQ(pfn_dax_read(dax, 2 * PAGE, out, 1), -ENXIO);
    CHECK(msg_has("range at 0x5b00002000 is no longer registered"));
    CHECK_EQ(pfn_dax_write(dax, 2 * PAGE + 7, "z", 1), -ENXIO);
    CHECK_EQ(pfn_dax_zero(dax, 2 * PAGE, 1), -ENXIO);
    CHECK_EQ(pfn_dax_write(dax, 3 * PAGE + 1, "after", 5), 5);
    CHECK(file_equals(fd, 6 * PAGE + 1, (const unsigned char *)"after", 5));
    {
        PFN_SECTION_SCOPE(s);
        (void)s;
        void *k = NULL;
        CHECK_EQ(pfn_dax_direct_access(dax, 2, 1, &k, NULL), -ENXIO);
        CHECK_EQ(pfn_dax_direct_access(dax, 3, 1, &k, NULL), 1);
    }
    /* Registered again at another address: another registration, still refused. */
    REQUIRE(devm_register_kmap_pfn_range(d, &rb, base + 3 * PAGE) == 0);
    CHECK_EQ(pfn_dax_read(dax, 2 * PAGE, out, 1), -ENXIO);
    /* A new span sees the new registration. */
    pfn_dax *again = pfn_dax_create_span(d, SPAN, 5 * PAGE);
    REQUIRE(again != NULL);
    CHECK_EQ(pfn_dax_write(again, 2 * PAGE, "new", 3), 3);
    CHECK(file_equals(fd, 3 * PAGE, (const unsigned char *)"new", 3));

    CHECK_EQ(pfn_dax_destroy(again), 0);
    CHECK_EQ(pfn_dax_destroy(dax), 0);
    CHECK_EQ(pfn_device_free(e), 0);
    CHECK_EQ(pfn_device_free(d), 0);
    free(data);
    free(out);
    close(fd);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    unlink(spath);
}

/* ---- ranges with page descriptors ----
 * A DRAM memmap: direct_access reports PFN_DEV | PFN_MAP, and the pfn_t it returns finds the
 * descriptor of the page at kaddr. An in-range memmap: its reserved head is not part of the
 * device (the pmem driver's data offset): page offset 0 is the first data frame. */
#define MM (0x5c00000000ull)
static void memmap_calls(void)
{
    pfn_device *d = pfn_device_new("dax-memmap");
    REQUIRE(d != NULL);
    unsigned char *mem = mmap(NULL, 2 * POOL, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(mem != MAP_FAILED);
    pfn_resource dram = {MM, MM + POOL - 1, "dram"}, in = {MM + POOL, MM + 2 * POOL - 1, "in"};
    REQUIRE(pfn_register_range_memmap(d, &dram, mem, PFN_MEMMAP_DRAM) == 0);
    REQUIRE(pfn_register_range_memmap(d, &in, mem + POOL, PFN_MEMMAP_IN_RANGE) == 0);
    int64_t reserved = pfn_memmap_reserved_bytes(POOL, PFN_MEMMAP_IN_RANGE);
    REQUIRE(reserved > 0 && (uint64_t)reserved < POOL);

    pfn_dax *a = pfn_dax_create(d, MM);
    REQUIRE(a != NULL);
    void *kaddr = NULL;
    pfn_t pfn = {0};
    {
        PFN_SECTION_SCOPE(s);
        (void)s;
        CHECK_EQ(pfn_dax_direct_access(a, 3, 1, &kaddr, &pfn), 1);
        CHECK(kaddr == mem + 3 * PAGE);
        CHECK_EQ(pfn.val, (MM / PAGE + 3) | PFN_DEV | PFN_MAP);
        CHECK(pfn_t_has_page(pfn));
        struct pfn_page *pg = pfn_t_to_page(pfn);
        CHECK(pg != NULL);
        CHECK(pfn_page_address(pg) == kaddr);
    }
    CHECK_EQ(pfn_dax_destroy(a), 0);

    pfn_dax *b = pfn_dax_create(d, MM + POOL);
    REQUIRE(b != NULL);
    CHECK_EQ(pfn_dax_pages(b), (int64_t)((POOL - (uint64_t)reserved) / PAGE));
    {
        PFN_SECTION_SCOPE(s);
        (void)s;
        CHECK_EQ(pfn_dax_direct_access(b, 0, 100, &kaddr, &pfn), pfn_dax_pages(b));
        CHECK(kaddr == mem + POOL + reserved);
        CHECK_EQ(pfn.val, ((MM + POOL + (uint64_t)reserved) / PAGE) | PFN_DEV | PFN_MAP);
        CHECK(pfn_page_address(pfn_t_to_page(pfn)) == kaddr);
    }
    /* I/O at offset 0 lands after the descriptors, which stay intact. */
    unsigned char head[64];
    memcpy(head, mem + POOL, sizeof head);
    CHECK_EQ(pfn_dax_write(b, 0, "data", 4), 4);
    CHECK(memcmp(mem + POOL + reserved, "data", 4) == 0);
    CHECK(memcmp(mem + POOL, head, sizeof head) == 0);
    CHECK_EQ(pfn_dax_destroy(b), 0);
    /* A span over both: the second range's descriptors would be a hole in it. */
    CHECK_NULL_ERRNO(pfn_dax_create_span(d, MM, 2 * POOL), EINVAL);
    CHECK(msg_has("page descriptors"));
    /* Starting with the in-range one: its data frames only. */
    pfn_dax *c = pfn_dax_create_span(d, MM + POOL, POOL);
    REQUIRE(c != NULL);
    CHECK_EQ(pfn_dax_pages(c), (int64_t)((POOL - (uint64_t)reserved) / PAGE));
    CHECK_EQ(pfn_dax_destroy(c), 0);

    CHECK_EQ(pfn_device_free(d), 0);
    munmap(mem, 2 * POOL);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "default";
    test_path(path, sizeof path, "api_dax");
    unlink(path);

    pfn_pmem *m = pfn_pmem_map(path, POOL, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    unsigned char *base = pfn_pmem_addr(m);
    CHECK_EQ(pfn_pmem_granularity(m),
             strcmp(mode, "default") == 0 ? PFN_GRANULARITY_PAGE : PFN_GRANULARITY_CACHE_LINE);
    int fd = open(path, O_RDONLY);
    REQUIRE(fd >= 0);
    pfn_device *dev = pfn_device_new("dax");
    REQUIRE(dev != NULL);
    /* Two ranges back to back in physical and virtual space: one run of 8 pages. The DAX
     * device wraps the first one only. */
    pfn_resource lo = {PHYS, PHYS + HALF - 1, "lo"}, hi = {PHYS + HALF, PHYS + POOL - 1, "hi"};
    REQUIRE(devm_register_kmap_pfn_range(dev, &lo, base) == 0);
    REQUIRE(devm_register_kmap_pfn_range(dev, &hi, base + HALF) == 0);

    /* ---- create ---- */
    CHECK_NULL_ERRNO(pfn_dax_create(NULL, PHYS), EINVAL);
    CHECK(msg_has("pfn_dax_create"));
    CHECK_NULL_ERRNO(pfn_dax_create((pfn_device *)m, PHYS), EINVAL); /* foreign handle */
    CHECK_NULL_ERRNO(pfn_dax_create(dev, PHYS + PAGE), ENOENT);      /* inside, not a start */
    CHECK(msg_has("no registered range"));
    CHECK_NULL_ERRNO(pfn_dax_create(dev, PHYS + 1), ENOENT);
    CHECK_NULL_ERRNO(pfn_dax_create(dev, 0x1000), ENOENT);
    pfn_device *other = pfn_device_new("other");
    REQUIRE(other != NULL);
    CHECK_NULL_ERRNO(pfn_dax_create(other, PHYS), ENOENT); /* another device's range */
    pfn_dax *dax = pfn_dax_create(dev, PHYS);
    REQUIRE(dax != NULL);
    pfn_dax *dax_hi = pfn_dax_create(dev, PHYS + HALF);
    REQUIRE(dax_hi != NULL);
    CHECK(dax != dax_hi);
    CHECK_EQ(pfn_dax_pages(dax), HALF / PAGE);
    CHECK_EQ(pfn_dax_alive(dax), 1);

    /* ---- bad handles everywhere ---- */
    pfn_dax *bad[] = {NULL, (pfn_dax *)(uintptr_t)0x1237, (pfn_dax *)dev, (pfn_dax *)m};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char b[8];
        void *k = NULL;
        pfn_t p = {0};
        CHECK_EQ(pfn_dax_alive(bad[i]), -EINVAL);
        CHECK(msg_has("not a live DAX device"));
        CHECK_EQ(pfn_dax_pages(bad[i]), -EINVAL);
        CHECK_EQ(pfn_dax_kill(bad[i]), -EINVAL);
        CHECK_EQ(pfn_dax_read(bad[i], 0, b, sizeof b), -EINVAL);
        CHECK_EQ(pfn_dax_write(bad[i], 0, b, sizeof b), -EINVAL);
        CHECK_EQ(pfn_dax_zero(bad[i], 0, 8), -EINVAL);
        pfn_section s = pfn_read_lock();
        CHECK_EQ(pfn_dax_direct_access(bad[i], 0, 1, &k, &p), -EINVAL);
        pfn_read_unlock();
        CHECK(k == NULL && p.val == 0);
        if (bad[i] != NULL)
            CHECK_EQ(pfn_dax_destroy(bad[i]), -EINVAL);
        (void)s;
    }
    CHECK_EQ(pfn_dax_destroy(NULL), 0);

    /* ---- direct_access ---- */
    void *kaddr = (void *)1;
    pfn_t pfn = {7};
    CHECK_EQ(pfn_dax_direct_access(dax, 0, 1, &kaddr, &pfn), -EINVAL); /* no section */
    CHECK(msg_has("pfn_dax_direct_access") && msg_has("read section"));
    CHECK(kaddr == (void *)1 && pfn.val == 7);
    {
        pfn_section os;
        REQUIRE(pfn_section_open(&os) == 0);
        /* An object-bound section is not the thread's: refused. */
        CHECK_EQ(pfn_dax_direct_access(dax, 0, 1, &kaddr, &pfn), -EINVAL);
        CHECK_EQ(pfn_section_close(&os), 0);
        /* Nor is a kmap. */
        void *km = kmap_atomic_pfn_t(pfn_to_pfn_t(PHYS / PAGE));
        REQUIRE(km != NULL);
        CHECK_EQ(pfn_dax_direct_access(dax, 0, 1, &kaddr, &pfn), -EINVAL);
        CHECK_EQ(kunmap_atomic_pfn_t(km), 0);
    }
    {
        PFN_SECTION_SCOPE(s);
        (void)s;
        CHECK_EQ(pfn_dax_direct_access(dax, 0, 1, &kaddr, &pfn), 1);
        CHECK(kaddr == base);
        CHECK_EQ(pfn.val, (PHYS / PAGE) | PFN_DEV);
        CHECK(pfn_t_devmap(pfn) == 0); /* registered without page descriptors: no PFN_MAP */
        /* All four pages from 0; at most nr_pages; the last page alone: the next range
         * continues it in memory but is not this device's. */
        CHECK_EQ(pfn_dax_direct_access(dax, 0, 1000, &kaddr, &pfn), HALF / PAGE);
        CHECK_EQ(pfn_dax_direct_access(dax, 1, 2, &kaddr, &pfn), 2);
        CHECK(kaddr == base + PAGE);
        CHECK_EQ(pfn_dax_direct_access(dax, HALF / PAGE - 1, 8, &kaddr, &pfn), 1);
        CHECK(kaddr == base + HALF - PAGE);
        CHECK_EQ(pfn.val, (PHYS / PAGE + HALF / PAGE - 1) | PFN_DEV);
        CHECK_EQ(pfn_dax_direct_access(dax, 2, UINT64_MAX, NULL, NULL), 2);
        /* nr_pages 0: 0, and the outputs are still filled. */
        kaddr = NULL;
        CHECK_EQ(pfn_dax_direct_access(dax, 3, 0, &kaddr, &pfn), 0);
        CHECK(kaddr == base + 3 * PAGE);
        /* Past the end: -ERANGE, outputs untouched. */
        kaddr = (void *)1;
        CHECK_EQ(pfn_dax_direct_access(dax, HALF / PAGE, 1, &kaddr, &pfn), -ERANGE);
        CHECK(msg_has("beyond"));
        CHECK_EQ(pfn_dax_direct_access(dax, UINT64_MAX, 1, &kaddr, &pfn), -ERANGE);
        CHECK(kaddr == (void *)1);
        /* The other device starts where this one ends. */
        CHECK_EQ(pfn_dax_direct_access(dax_hi, 0, 100, &kaddr, &pfn), HALF / PAGE);
        CHECK(kaddr == base + HALF);
        /* The address is usable: a store through it reaches the file. */
        CHECK_EQ(pfn_dax_direct_access(dax, 2, 1, &kaddr, &pfn), 1);
        memcpy((char *)kaddr + 10, "direct", 6);
        /* Waiting calls refuse inside the section. */
        CHECK_EQ(pfn_dax_kill(dax), -EDEADLK);
        CHECK_EQ(pfn_dax_destroy(dax), -EDEADLK);
        CHECK_EQ(pfn_dax_alive(dax), 1);
    }
    CHECK_EQ(pfn_pmem_persist(m, base + 2 * PAGE, PAGE), 0);
    CHECK(file_equals(fd, 2 * PAGE + 10, (const unsigned char *)"direct", 6));

    /* ---- read / write / zero ---- */
    size_t size = HALF;
    unsigned char *data = malloc(POOL), *out = malloc(POOL);
    REQUIRE(data && out);
    for (size_t i = 0; i < POOL; i++)
        data[i] = (unsigned char)(i * 131 + 7);
    CHECK_EQ(pfn_dax_write(dax, 0, data, size), size); /* the whole device */
    CHECK(file_equals(fd, 0, data, size));
    CHECK(memcmp(base, data, size) == 0);
    memset(out, 0, POOL);
    CHECK_EQ(pfn_dax_read(dax, 0, out, size), size);
    CHECK(memcmp(out, data, size) == 0);
    /* Across page boundaries, at odd offsets. */
    CHECK_EQ(pfn_dax_write(dax, PAGE - 3, "ABCDEFGHIJ", 10), 10);
    CHECK(file_equals(fd, PAGE - 3, (const unsigned char *)"ABCDEFGHIJ", 10));
    CHECK(file_equals(fd, PAGE - 4, data + PAGE - 4, 1));
    CHECK(file_equals(fd, PAGE + 7, data + PAGE + 7, 1));
    CHECK_EQ(pfn_dax_read(dax, PAGE - 3, out, 10), 10);
    CHECK(memcmp(out, "ABCDEFGHIJ", 10) == 0);
    CHECK_EQ(pfn_dax_read(dax, 1, out, 3 * PAGE), 3 * PAGE);
    CHECK(memcmp(out + PAGE - 4, "ABCDEFGHIJ", 10) == 0);
    /* Short at the end: never into the next range (which continues it in memory). */
    memset(out, 0, 100);
    CHECK_EQ(pfn_dax_read(dax, size - 5, out, 100), 5);
    CHECK(memcmp(out, data + size - 5, 5) == 0);
    CHECK_EQ(pfn_dax_write(dax, size - 3, "xyzw", 4), 3);
    CHECK(file_equals(fd, size - 3, (const unsigned char *)"xyz", 3));
    CHECK(file_equals(fd, size, (const unsigned char *)"\0", 1)); /* the next range's: untouched */
    CHECK_EQ(pfn_dax_zero(dax, size - 2, 10), 2);
    CHECK(file_equals(fd, size - 2, (const unsigned char *)"\0\0", 2));
    CHECK(file_equals(fd, size - 3, (const unsigned char *)"x", 1));
    /* At and after the end, and length 0: 0. */
    CHECK_EQ(pfn_dax_read(dax, size, out, 1), 0);
    CHECK_EQ(pfn_dax_write(dax, size, "q", 1), 0);
    CHECK_EQ(pfn_dax_zero(dax, size, 1), 0);
    CHECK_EQ(pfn_dax_read(dax, size + 12345, out, 1), 0);
    CHECK_EQ(pfn_dax_read(dax, 0, out, 0), 0);
    CHECK_EQ(pfn_dax_write(dax, 0, "q", 0), 0);
    CHECK_EQ(pfn_dax_zero(dax, 0, 0), 0);
    /* NULL buffers: refused unless the length is 0. */
    CHECK_EQ(pfn_dax_read(dax, 0, NULL, 1), -EINVAL);
    CHECK(msg_has("pfn_dax_read") && msg_has("buf is NULL"));
    CHECK_EQ(pfn_dax_write(dax, 0, NULL, 1), -EINVAL);
    CHECK(msg_has("pfn_dax_write"));
    CHECK_EQ(pfn_dax_read(dax, 0, NULL, 0), 0);
    CHECK_EQ(pfn_dax_write(dax, 0, NULL, 0), 0);
    /* off + len past 2^64. */
    CHECK_EQ(pfn_dax_read(dax, UINT64_MAX - 3, out, 10), -EOVERFLOW);
    CHECK(msg_has("reaches 2^64"));
    CHECK_EQ(pfn_dax_write(dax, UINT64_MAX, "ab", 2), -EOVERFLOW);
    CHECK_EQ(pfn_dax_zero(dax, 1, UINT64_MAX), -EOVERFLOW);
    CHECK_EQ(pfn_dax_read(dax, UINT64_MAX, out, 1), -EOVERFLOW); /* reaches 2^64 */
    CHECK_EQ(pfn_dax_read(dax, UINT64_MAX - 1, out, 1), 0);      /* the last byte: past the end */
    /* Zeroing across pages. */
    CHECK_EQ(pfn_dax_zero(dax, PAGE - 100, 300), 300);
    {
        unsigned char zeros[300] = {0};
        CHECK(file_equals(fd, PAGE - 100, zeros, 300));
        CHECK(file_equals(fd, PAGE - 101, data + PAGE - 101, 1));
    }
    /* Reads and writes from a thread that holds a section (nested sections). */
    {
        pfn_section s = pfn_read_lock();
        CHECK_EQ(pfn_dax_write(dax, 5, "nested", 6), 6);
        CHECK_EQ(pfn_dax_read(dax, 5, out, 6), 6);
        CHECK(memcmp(out, "nested", 6) == 0);
        CHECK_EQ(pfn_section_close(&s), 0);
    }
    /* A buffer inside the device itself (overlapping copies). */
    CHECK_EQ(pfn_dax_write(dax, 100, base + 5, 6), 6);
    CHECK(file_equals(fd, 100, (const unsigned char *)"nested", 6));

    /* ---- kill ---- */
    CHECK_EQ(pfn_dax_kill(dax), 0);
    CHECK_EQ(pfn_dax_alive(dax), 0);
    CHECK_EQ(pfn_dax_pages(dax), HALF / PAGE);
    {
        PFN_SECTION_SCOPE(s);
        (void)s;
        CHECK_EQ(pfn_dax_direct_access(dax, 0, 1, &kaddr, &pfn), -ENXIO);
        CHECK(msg_has("killed"));
        CHECK_EQ(pfn_dax_direct_access(dax_hi, 0, 1, &kaddr, &pfn), 1); /* the other lives */
    }
    CHECK_EQ(pfn_dax_read(dax, 0, out, 1), -ENXIO);
    CHECK_EQ(pfn_dax_write(dax, 0, "z", 1), -ENXIO);
    CHECK_EQ(pfn_dax_zero(dax, 0, 1), -ENXIO);
    CHECK_EQ(pfn_dax_read(dax, 0, out, 0), -ENXIO);
    CHECK_EQ(pfn_dax_kill(dax), 0); /* again: waits and returns 0 */
    CHECK_EQ(pfn_dax_destroy(dax), 0);
    CHECK_EQ(pfn_dax_destroy(dax), -EINVAL); /* double destroy */
    CHECK_EQ(pfn_dax_alive(dax), -EINVAL);
    /* A new device does not revive the old handle. */
    pfn_dax *again = pfn_dax_create(dev, PHYS);
    REQUIRE(again != NULL);
    CHECK(again != dax);
    CHECK_EQ(pfn_dax_alive(dax), -EINVAL);
    CHECK_EQ(pfn_dax_alive(again), 1);
    /* Destroy of a live device kills it. */
    CHECK_EQ(pfn_dax_destroy(again), 0);

    /* ---- the range goes away under a live device ---- */
    CHECK_EQ(pfn_dax_alive(dax_hi), 1);
    CHECK_EQ(pfn_unregister_range(dev, PHYS + HALF), 0);
    CHECK_EQ(pfn_dax_alive(dax_hi), 1); /* not killed: its accesses fail */
    {
        PFN_SECTION_SCOPE(s);
        (void)s;
        CHECK_EQ(pfn_dax_direct_access(dax_hi, 0, 1, &kaddr, &pfn), -ENXIO);
        CHECK(msg_has("no longer registered"));
    }
    CHECK_EQ(pfn_dax_read(dax_hi, 0, out, 1), -ENXIO);
    CHECK_EQ(pfn_dax_write(dax_hi, 0, "z", 1), -ENXIO);
    CHECK(file_equals(fd, HALF, (const unsigned char *)"\0", 1));
    /* Registered again elsewhere in memory: another registration, still refused. */
    REQUIRE(devm_register_kmap_pfn_range(other, &hi, base) == 0);
    CHECK_EQ(pfn_dax_read(dax_hi, 0, out, 1), -ENXIO);
    CHECK_EQ(pfn_dax_destroy(dax_hi), 0);
    CHECK_EQ(pfn_device_free(other), 0);
    /* A freed device's handle is refused by create. */
    CHECK_EQ(pfn_device_free(dev), 0);
    CHECK_NULL_ERRNO(pfn_dax_create(dev, PHYS), EINVAL);

    free(data);
    free(out);
    close(fd);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    unlink(path);

    span_calls();
    memmap_calls();

    if (strcmp(mode, "default") == 0) {
        /* Once more with every mapping in flush mode: writes use flushing stores. */
        const char *set[] = {"PFN_FORCE_GRANULARITY=cache_line", NULL};
        const char *args[] = {"flush", NULL};
        CHECK_EQ(check_rerun(set, args), 0);
    }
    return check_report(strcmp(mode, "default") == 0 ? "api_dax" : "api_dax (flush mode)");
}
