/* Every copy path, forced in turn through the PFN_* variables (this binary runs itself once
 * per setting, since the library reads them once at load), writes exactly the expected bytes
 * and nothing else: pfn_memcpy_persist, pfn_memset_persist and pfn_memmove_persist
 * (overlapping both ways) for every length 0..4200 and every destination and source
 * alignment 0..63 (for each length, all 64 destination alignments, each with a different
 * source alignment, so every length meets every alignment of both); then flagged copies,
 * and a randomized run against libc's memcpy, memmove and memset. Each run checks that the
 * library took the path forced. Under PFN_TEST_QUICK (valgrind) lengths 0..260 and the
 * edges around 512, 1024, 2048, 4096 and 4200, alignments sampled, and paths that are the
 * same on this CPU run once. */
#define _GNU_SOURCE
#include <cpuid.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"
#include "rerun.h"

#define MAXLEN 4200
#define GUARD 64

struct path {
    const char *name;
    const char *env[4];
};

static const struct path paths[] = {
    {"default", {NULL}},
    {"avx2", {"PFN_NO_AVX512=1", NULL}},
    {"sse2", {"PFN_NO_AVX2=1", NULL}},
    {"no-movnt", {"PFN_NO_MOVNT=1", NULL}},
    {"clflushopt", {"PFN_NO_CLWB=1", NULL}},
    {"clflush", {"PFN_NO_CLWB=1", "PFN_NO_CLFLUSHOPT=1", NULL}},
    {"movnt-always", {"PFN_MOVNT_THRESHOLD=0", NULL}},
    {"movnt-always-avx2", {"PFN_MOVNT_THRESHOLD=0", "PFN_NO_AVX512=1", NULL}},
    {"movnt-always-sse2", {"PFN_MOVNT_THRESHOLD=0", "PFN_NO_AVX2=1", NULL}},
    {"movnt-4096", {"PFN_MOVNT_THRESHOLD=4096", NULL}},
    {"movnt-256", {"PFN_MOVNT_THRESHOLD=256", NULL}},
};
#define NPATHS (int)(sizeof paths / sizeof paths[0])

static int quick;

static int path_sets(const struct path *p, const char *name)
{
    for (int i = 0; p->env[i]; i++)
        if (!strncmp(p->env[i], name, strlen(name)) && p->env[i][strlen(name)] == '=')
            return 1;
    return 0;
}

/* What the library must choose for path `p` on this CPU (as CPUID reports it: valgrind's
 * offers neither AVX-512 nor CLWB/CLFLUSHOPT). */
static void expected(const struct path *p, const char **flush, const char **movnt, size_t *threshold)
{
    unsigned a, b, c, d;
    int clwb = 0, clflushopt = 0;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        clflushopt = (b >> 23) & 1;
        clwb = (b >> 24) & 1;
    }
    __builtin_cpu_init();
    *flush = clwb && !path_sets(p, "PFN_NO_CLWB") ? "clwb"
             : clflushopt && !path_sets(p, "PFN_NO_CLFLUSHOPT") ? "clflushopt"
             : "clflush";
    int no512 = path_sets(p, "PFN_NO_AVX512") || path_sets(p, "PFN_NO_AVX2");
    *movnt = path_sets(p, "PFN_NO_MOVNT") ? "none"
             : __builtin_cpu_supports("avx512f") && !no512 ? "avx512f"
             : __builtin_cpu_supports("avx2") && !path_sets(p, "PFN_NO_AVX2") ? "avx2"
             : "sse2";
    unsigned v0, vb, vc, vd;
    int intel = __get_cpuid(0, &v0, &vb, &vc, &vd) && vb == 0x756e6547 && vd == 0x49656e69 &&
                vc == 0x6c65746e; /* GenuineIntel */
    *threshold = intel ? 1024 : 64;
    for (int i = 0; p->env[i]; i++)
        if (!strncmp(p->env[i], "PFN_MOVNT_THRESHOLD=", 20))
            *threshold = strtoull(p->env[i] + 20, NULL, 10);
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* dst is what the library writes; exp is what libc writes doing the same to a copy (kept
 * in the cache), so each check reads dst once and nothing is restored. */
static unsigned char *src, *dst, *exp;
/* A region starts at BASE + (0..63); a move shifts it by up to 127 bytes either way. */
#define BASE 256
#define SPAN ((BASE + 64 + MAXLEN + 128 + GUARD + 63) / 64 * 64)

static int failures;
static void fail(const char *what, size_t len, size_t da, size_t sa)
{
    if (failures++ < 10)
        fprintf(stderr, "  %s wrong: len %zu dst align %zu src align %zu\n", what, len, da, sa);
}

/* dst equals exp on `at .. at + len` and GUARD bytes either side. */
static int window_ok(size_t at, size_t len)
{
    size_t lo = at >= GUARD ? at - GUARD : 0;
    size_t hi = at + len + GUARD < SPAN ? at + len + GUARD : SPAN;
    return memcmp(dst + lo, exp + lo, hi - lo) == 0;
}

/* One length at one pair of alignments: copy, set, and move up or down. */
static void one(size_t len, size_t da, size_t sa, int down)
{
    size_t at = BASE + da;
    memcpy(exp + at, src + BASE + sa, len);
    if (pfn_memcpy_persist(dst + at, src + BASE + sa, len) != dst + at || !window_ok(at, len))
        fail("memcpy_persist", len, da, sa);

    /* Overlapping move within dst by `shift` bytes, up or down. */
    size_t shift = 1 + (len * 13 + da * 5) % 127;
    size_t to = down ? at - shift : at + shift;
    memmove(exp + to, exp + at, len);
    if (pfn_memmove_persist(dst + to, dst + at, len) != dst + to || !window_ok(down ? to : at, len + shift))
        fail(down ? "memmove_persist down" : "memmove_persist up", len, da, shift);

    int c = (int)(len * 7 + da) & 0xff;
    memset(exp + at, c, len);
    if (pfn_memset_persist(dst + at, c | 0x100, len) != dst + at || !window_ok(at, len))
        fail("memset_persist", len, da, sa);
}

static const size_t edges[] = {511, 512, 513, 1023, 1024, 1025, 2047, 2048, 2049,
                               4095, 4096, 4097, 4199, 4200};

static void every_length_and_alignment(int full)
{
    for (size_t len = 0; len <= MAXLEN; len++) {
        int edge = 0;
        for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
            edge |= edges[i] == len;
        if (quick && len > 260 && !edge)
            continue;
        /* All 64 destination alignments, each with its own source alignment (29 is odd, so
         * sa runs over all 64 as da does), moving up for half of them and down for the other
         * half. Not `full`: 16 of them, rotating with the length, so that every 4 lengths
         * meet all 64 (quick: 8). */
        size_t step = full ? 1 : quick ? 8 : 4;
        for (size_t k = 0; k < 64; k += step) {
            size_t da = (k + (full ? 0 : len)) % 64;
            size_t sa = (da * 29 + len * 7) % 64;
            one(len, da, sa, (int)((k / step + len) & 1));
        }
    }
}

/* Every flag combination the ABI accepts, on lengths around the threshold. */
static void flagged(void)
{
    const uint32_t flags[] = {0, PFN_F_MEM_NODRAIN, PFN_F_MEM_NONTEMPORAL, PFN_F_MEM_TEMPORAL,
                              PFN_F_MEM_NOFLUSH, PFN_F_MEM_NODRAIN | PFN_F_MEM_NONTEMPORAL,
                              PFN_F_MEM_NODRAIN | PFN_F_MEM_TEMPORAL,
                              PFN_F_MEM_NOFLUSH | PFN_F_MEM_NONTEMPORAL};
    const size_t lens[] = {0, 1, 63, 64, 65, 255, 256, 257, 1000, 4096, MAXLEN};
    for (size_t f = 0; f < sizeof flags / sizeof flags[0]; f++)
        for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++) {
            size_t len = lens[l], da = (f * 11 + l) % 64, sa = (f * 5 + l * 3) % 64;
            size_t at = BASE + da;
            memcpy(exp + at, src + BASE + sa, len);
            if (pfn_memcpy(dst + at, src + BASE + sa, len, flags[f]) != dst + at || !window_ok(at, len))
                fail("memcpy flagged", len, da, sa);
            memmove(exp + at + 3, exp + at, len);
            if (pfn_memmove(dst + at + 3, dst + at, len, flags[f]) != dst + at + 3 ||
                !window_ok(at, len + 3))
                fail("memmove flagged", len, da, sa);
            memset(exp + at, 0xC3, len);
            if (pfn_memset(dst + at, 0xC3, len, flags[f]) != dst + at || !window_ok(at, len))
                fail("memset flagged", len, da, sa);
        }
    pfn_drain();
}

/* Random operations on a large buffer, each compared with libc doing the same to a copy. */
static void randomized(int full)
{
    const size_t size = quick ? 256 << 10 : 4 << 20;
    unsigned char *a = aligned_alloc(64, size), *b = aligned_alloc(64, size);
    REQUIRE(a && b);
    for (size_t i = 0; i < size; i++)
        a[i] = b[i] = (unsigned char)next();
    int rounds = quick ? 150 : full ? 3000 : 800;
    for (int r = 0; r < rounds; r++) {
        uint64_t x = next();
        /* mostly short, sometimes up to 1 MiB */
        size_t len = x % 4 ? next() % 5000 : next() % (size / 4);
        size_t from = next() % (size - len), to = next() % (size - len);
        if (x % 3 == 0 && len) { /* overlapping on purpose, either way */
            size_t delta = next() % len;
            to = from + delta + len <= size ? from + delta : from - (delta < from ? delta : from);
            if (x % 2 && from >= delta)
                to = from - delta;
        }
        const uint32_t flags[] = {0, PFN_F_MEM_NODRAIN, PFN_F_MEM_NONTEMPORAL, PFN_F_MEM_TEMPORAL,
                                  PFN_F_MEM_NOFLUSH};
        uint32_t f = flags[next() % 5];
        switch ((x >> 8) % 3) {
        case 0:
            memmove(b + to, b + from, len);
            CHECK(pfn_memmove(a + to, a + from, len, f) == a + to);
            break;
        case 1:
            if (to < from + len && from < to + len)
                to = (from + len) % (size - len); /* memcpy's ranges must not overlap */
            if (to < from + len && from < to + len)
                break;
            memcpy(b + to, b + from, len);
            CHECK(pfn_memcpy(a + to, a + from, len, f) == a + to);
            break;
        default:
            memset(b + to, (int)x, len);
            CHECK(pfn_memset(a + to, (int)x, len, f) == a + to);
        }
        /* The bytes around the operation each time, all of them now and then. */
        size_t lo = (to < from ? to : from), hi = (to > from ? to : from) + len;
        lo = lo > 4096 ? lo - 4096 : 0;
        hi = hi + 4096 < size ? hi + 4096 : size;
        if (memcmp(a + lo, b + lo, hi - lo) != 0 || (r % 64 == 63 && memcmp(a, b, size) != 0)) {
            fail("randomized", len, to % 64, from % 64);
            memcpy(a, b, size);
        }
    }
    pfn_drain();
    free(a);
    free(b);
}

/* Bytes in a PAGE mapping of the library: plain stores and msync. */
static void page_mapping(void)
{
    char path[256];
    test_path(path, sizeof path, "int_persist_bytes");
    unlink(path);
    pfn_pmem *m = pfn_pmem_map(path, 4 * PFN_PAGE_SIZE, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    unlink(path);
    unsigned char *base = pfn_pmem_addr(m);
    CHECK_EQ(pfn_pmem_granularity(m), PFN_GRANULARITY_PAGE);
    for (size_t len = 0; len <= (quick ? 200u : 700u); len += quick ? 7 : 1) {
        size_t da = (len * 3) % 64, sa = (len * 29) % 64;
        memset(base, 0xEE, 4 * PFN_PAGE_SIZE);
        CHECK(pfn_memcpy_persist(base + 4000 + da, src + sa, len) == base + 4000 + da);
        CHECK(memcmp(base + 4000 + da, src + sa, len) == 0);
        CHECK(base[3999 + da] == 0xEE && base[4000 + da + len] == 0xEE);
        CHECK(pfn_memset_persist(base + 8000 + da, 0x11, len) == base + 8000 + da);
        CHECK(len == 0 || (base[8000 + da] == 0x11 && base[8000 + da + len - 1] == 0x11));
        CHECK(base[8000 + da + len] == 0xEE);
        CHECK(pfn_memmove_persist(base + 4001 + da, base + 4000 + da, len) == base + 4001 + da);
        CHECK(memcmp(base + 4001 + da, src + sa, len) == 0);
    }
    CHECK_EQ(pfn_persist(base, 4 * PFN_PAGE_SIZE), 0);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
}

static int child(int index)
{
    const struct path *p = &paths[index];
    const char *flush, *movnt;
    size_t threshold;
    expected(p, &flush, &movnt, &threshold);
    CHECK(!strcmp(pfn_flush_method(), flush));
    CHECK(!strcmp(pfn_movnt_method(), movnt));
    CHECK_EQ(pfn_movnt_threshold(), threshold);
    if (strcmp(pfn_flush_method(), flush) || strcmp(pfn_movnt_method(), movnt))
        fprintf(stderr, "  %s: library chose %s/%s, expected %s/%s\n", p->name, pfn_flush_method(),
                pfn_movnt_method(), flush, movnt);

    src = aligned_alloc(64, SPAN);
    dst = aligned_alloc(64, SPAN);
    exp = aligned_alloc(64, SPAN);
    REQUIRE(src && dst && exp);
    for (size_t i = 0; i < SPAN; i++) {
        src[i] = (unsigned char)next();
        exp[i] = dst[i] = (unsigned char)(i * 131 + 7);
    }
    /* The paths real programs take (the default, and non-temporal at every length) meet
     * every alignment at every length; the others every alignment every 4 lengths. */
    int full = !quick && (index == 0 || index == 6);
    every_length_and_alignment(full);
    flagged();
    randomized(full);
    if (index == 0)
        page_mapping();
    CHECK_EQ(failures, 0);
    free(src);
    free(dst);
    free(exp);
    char name[64];
    snprintf(name, sizeof name, "int_persist_bytes[%s: %s/%s]", p->name, flush, movnt);
    return check_report(name);
}

int main(int argc, char **argv)
{
    quick = getenv("PFN_TEST_QUICK") != NULL;
    if (argc == 3 && !strcmp(argv[1], "--path"))
        return child(atoi(argv[2]));
    /* Paths that are the same on this CPU run once under PFN_TEST_QUICK. */
    char seen[NPATHS][64];
    int nseen = 0;
    for (int i = 0; i < NPATHS; i++) {
        const char *flush, *movnt;
        size_t threshold;
        expected(&paths[i], &flush, &movnt, &threshold);
        char key[64];
        snprintf(key, sizeof key, "%s/%s/%zu", flush, movnt, threshold);
        int dup = 0;
        for (int k = 0; k < nseen; k++)
            dup |= !strcmp(seen[k], key);
        if (quick && dup)
            continue;
        snprintf(seen[nseen++], sizeof seen[0], "%s", key);
        char index[16];
        snprintf(index, sizeof index, "%d", i);
        const char *args[] = {"--path", index, NULL};
        int rc = check_rerun(paths[i].env, args);
        CHECK_EQ(rc, 0);
    }
    /* Bad input, in this process. */
    char buf[256];
    errno = 0;
    CHECK(pfn_memcpy_persist(NULL, buf, 1) == NULL && errno == EINVAL);
    CHECK(pfn_memcpy_persist(buf, NULL, 1) == NULL);
    CHECK(pfn_memcpy_persist(NULL, NULL, 0) == NULL); /* returns dst, which is NULL */
    CHECK(pfn_memcpy_persist(buf, NULL, 0) == buf);
    errno = 0;
    CHECK(pfn_memcpy(buf, buf + 1, 8, 1u << 7) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(pfn_memcpy(buf, buf + 1, 8, PFN_F_MEM_TEMPORAL | PFN_F_MEM_NONTEMPORAL) == NULL &&
          errno == EINVAL);
    errno = 0;
    CHECK(pfn_memset(buf, 0, 8, 1u << 3) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(pfn_memmove_persist((void *)(UINTPTR_MAX - 8), buf, 64) == NULL && errno == EINVAL);
    CHECK(pfn_memset_persist((void *)(UINTPTR_MAX - 8), 0, 64) == NULL);
    CHECK(pfn_memset_persist(NULL, 0, 1) == NULL);
    errno = 0;
    CHECK(pfn_memcpy_persist((void *)64, (void *)4096, (size_t)PTRDIFF_MAX + 1) == NULL && errno == EINVAL);
    CHECK(pfn_memset_persist((void *)64, 0, (size_t)PTRDIFF_MAX + 1) == NULL);
    CHECK_EQ(pfn_persist((void *)64, (size_t)PTRDIFF_MAX + 1), -EINVAL);
    /* Moving onto itself changes nothing. */
    memcpy(buf, "abcdefghij", 11);
    CHECK(pfn_memmove_persist(buf, buf, 11) == buf && !memcmp(buf, "abcdefghij", 11));
    CHECK(pfn_memset_persist(buf, 0, 0) == buf);
    CHECK_EQ(pfn_persist(NULL, 0), 0);
    CHECK_EQ(pfn_persist(NULL, 1), -EINVAL);
    CHECK_EQ(pfn_persist(buf, SIZE_MAX), -EINVAL);
    CHECK_EQ(pfn_persist(buf, sizeof buf), 0);
    pfn_flush(NULL, 100);
    pfn_flush(buf, 0);
    pfn_flush(buf, sizeof buf);
    pfn_drain();
    return check_report("int_persist_bytes");
}
