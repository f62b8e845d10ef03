/* Scatterlists out of memory: every allocation of every table constructor is made to fail in
 * turn (oom.h): each failure is -ENOMEM, leaves the table untouched and keeps nothing (no
 * leak: the arrays made before the failing one are freed). Copies, zeroing, the mapping
 * iterator and iovecs allocate nothing once the thread is set up. Not run under ASan or
 * valgrind (they own malloc). */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include "pfn.h"
#include "check.h"
#include "oom.h"

#define PAGE 4096ull
#define PHYS (0x7b0ull << 32)

/* Calls `call` (returning 0 or -errno, writing *t) with the n-th allocation failing, n = 0, 1,
 * ... until it succeeds; returns how many failed (each must be an injected ENOMEM that left
 * *t as it was, with a pfn_errormsg() naming the call and the memory it lacked). */
static int each_allocation(const char *what, int (*call)(pfn_sg_table *))
{
    int fails = 0;
    for (long n = 0; n < 1000; n++) {
        pfn_sg_table t;
        memset(&t, 0xA5, sizeof t);
        pfn_sg_table before = t;
        oom_fail_at(n);
        int rc = call(&t);
        int hit = oom_injected();
        oom_disarm();
        if (rc == 0) {
            CHECK(pfn_sg_nents(t.sgl) > 0);
            pfn_sg_free_table(&t);
            break;
        }
        fails++;
        if (!hit || rc != -ENOMEM || memcmp(&t, &before, sizeof t) != 0)
            fprintf(stderr, "%s: allocation %ld: rc %d, injected %d\n", what, n, rc, hit);
        CHECK(hit && rc == -ENOMEM && memcmp(&t, &before, sizeof t) == 0);
        char prefix[64]; /* "name: ", how the message starts */
        snprintf(prefix, sizeof prefix, "%.*s: ", (int)strcspn(what, "("), what);
        const char *msg = pfn_errormsg();
        int said = strncmp(msg, prefix, strlen(prefix)) == 0 && strstr(msg, "no memory") != NULL;
        if (!said)
            fprintf(stderr, "%s: allocation %ld: message \"%s\"\n", what, n, msg);
        CHECK(said);
    }
    printf("int_sg_oom: %s failed cleanly at %d allocations\n", what, fails);
    return fails;
}

static char *mem;

static int alloc_600(pfn_sg_table *t) { return pfn_sg_alloc_table(t, 600); }

static int from_pfns(pfn_sg_table *t)
{
    static pfn_t pfns[700];
    for (int i = 0; i < 700; i++)
        pfns[i] = pfn_to_pfn_t((uint64_t)(i * 2)); /* none contiguous: 700 entries */
    return pfn_sg_alloc_table_from_pfns(t, pfns, 700, 0, 700 * PAGE);
}

static int from_buf(pfn_sg_table *t) { return pfn_sg_alloc_table_from_buf(t, mem + 100, 8 * PAGE); }

int main(int argc, char **argv)
{
    (void)argc;
    /* mallinfo2 counts blocks parked in glibc's per-thread cache as in use: run without that
     * cache, so that "nothing kept" below is exact. */
    if (!getenv("PFN_TEST_SG_OOM_NO_TCACHE")) {
        setenv("PFN_TEST_SG_OOM_NO_TCACHE", "1", 1);
        setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0", 1);
        execv("/proc/self/exe", argv);
        REQUIRE(!"execv");
    }
    REQUIRE(pfn_thread_init() == 0);
    mem = (char *)mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(mem != MAP_FAILED);
    pfn_device *dev = pfn_device_new("sg_oom");
    REQUIRE(dev != NULL);
    /* Sixteen one-page ranges, physically out of order: a buffer over them is many entries. */
    for (int i = 0; i < 16; i++) {
        uint64_t phys = PHYS + (uint64_t)((i * 7) % 16) * 2 * PAGE;
        pfn_resource r = {phys, phys + PAGE - 1, NULL};
        REQUIRE(devm_register_kmap_pfn_range(dev, &r, mem + i * PAGE) == 0);
    }
    printf("int_sg_oom: every allocation of each table constructor fails in turn\n");
    /* Once each first, so that what the library and the C library set up once (stdout's
     * buffer too) is not counted below. */
    int (*calls[3])(pfn_sg_table *) = {alloc_600, from_pfns, from_buf};
    for (int i = 0; i < 3; i++) {
        pfn_sg_table t;
        REQUIRE(calls[i](&t) == 0);
        pfn_sg_free_table(&t);
    }
    struct mallinfo2 before = mallinfo2();
    CHECK(each_allocation("pfn_sg_alloc_table(600)", alloc_600) >= 3); /* three arrays */
    CHECK(each_allocation("pfn_sg_alloc_table_from_pfns", from_pfns) >= 2);
    CHECK(each_allocation("pfn_sg_alloc_table_from_buf", from_buf) >= 2);
    struct mallinfo2 after = mallinfo2();
    CHECK_EQ(after.uordblks, before.uordblks); /* nothing kept by the failures */

    /* The data path allocates nothing: with the next allocation armed to fail, all succeed. */
    pfn_sg_table t;
    REQUIRE(pfn_sg_alloc_table_from_buf(&t, mem, 16 * PAGE) == 0);
    static char buf[16 * PAGE];
    struct iovec iov[32];
    uint64_t bytes;
    pfn_sg_miter m;
    oom_fail_at(0);
    CHECK_EQ(pfn_sg_copy_from_buffer(t.sgl, t.nents, buf, sizeof buf), sizeof buf);
    CHECK_EQ(pfn_sg_pcopy_to_buffer(t.sgl, t.nents, buf, sizeof buf, 5), sizeof buf - 5);
    CHECK_EQ(pfn_sg_zero_buffer(t.sgl, t.nents, 100, 3, PFN_SG_PERSIST), 100);
    CHECK_EQ(pfn_sg_miter_start(&m, t.sgl, t.nents, PFN_SG_MITER_FROM_SG), 0);
    int chunks = 0;
    while (pfn_sg_miter_next(&m) == 1)
        chunks++;
    CHECK_EQ(pfn_sg_miter_stop(&m), 0);
    CHECK_EQ(chunks, 16);
    pfn_section s = pfn_read_lock();
    CHECK_EQ(pfn_sg_to_iovec(&s, t.sgl, t.nents, 0, UINT64_MAX, iov, 32, &bytes), 1);
    pfn_read_unlock();
    CHECK(!oom_injected());
    oom_disarm();
    CHECK_EQ(bytes, 16 * PAGE); /* one iovec: the memory is contiguous */
    pfn_sg_free_table(&t);
    CHECK_EQ(pfn_device_free(dev), 0);
    munmap(mem, 16 * PAGE);
    return check_report("int_sg_oom");
}
