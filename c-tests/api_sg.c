/* Scatterlists through the ABI: the layout and constants; every walking helper, the header's
 * inline one against the library's exported twin of the same name on thousands of random
 * lists (valid ones, loops, broken links, links to links) with equal results and errno; and
 * every error of every scatterlist function (tables, copies, zeroing, the mapping iterator,
 * iovecs), with the pfn_errormsg() message of each kind. The data path itself (copies over
 * many ranges against a model, persistence, concurrency) is int_sg.c. */
#ifndef _GNU_SOURCE /* g++ defines it */
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

/* The header's inline helpers under other names, so that the exported twins can be declared
 * with the real ones below. */
#define pfn_sg_is_chain inline_sg_is_chain
#define pfn_sg_is_last inline_sg_is_last
#define pfn_sg_chain_ptr inline_sg_chain_ptr
#define pfn_sg_pfn inline_sg_pfn
#define pfn_sg_phys inline_sg_phys
#define pfn_sg_set_pfn inline_sg_set_pfn
#define pfn_sg_mark_end inline_sg_mark_end
#define pfn_sg_unmark_end inline_sg_unmark_end
#define pfn_sg_init_table inline_sg_init_table
#define pfn_sg_chain inline_sg_chain
#define pfn_sg_next inline_sg_next
#define pfn_sg_nents inline_sg_nents
#define pfn_sg_nents_for_len inline_sg_nents_for_len
#define pfn_sg_last inline_sg_last
#include "pfn.h"
#undef pfn_sg_is_chain
#undef pfn_sg_is_last
#undef pfn_sg_chain_ptr
#undef pfn_sg_pfn
#undef pfn_sg_phys
#undef pfn_sg_set_pfn
#undef pfn_sg_mark_end
#undef pfn_sg_unmark_end
#undef pfn_sg_init_table
#undef pfn_sg_chain
#undef pfn_sg_next
#undef pfn_sg_nents
#undef pfn_sg_nents_for_len
#undef pfn_sg_last
#include "check.h"

#ifdef __cplusplus
extern "C" {
#endif
/* The library's exported twins. */
bool pfn_sg_is_chain(const struct pfn_sg *sg);
bool pfn_sg_is_last(const struct pfn_sg *sg);
struct pfn_sg *pfn_sg_chain_ptr(const struct pfn_sg *sg);
struct pfn_t pfn_sg_pfn(const struct pfn_sg *sg);
uint64_t pfn_sg_phys(const struct pfn_sg *sg);
int pfn_sg_set_pfn(struct pfn_sg *sg, struct pfn_t pfn, uint32_t len, uint32_t offset);
void pfn_sg_mark_end(struct pfn_sg *sg);
void pfn_sg_unmark_end(struct pfn_sg *sg);
void pfn_sg_init_table(struct pfn_sg *sgl, unsigned int nents);
int pfn_sg_chain(struct pfn_sg *prv, unsigned int prv_nents, struct pfn_sg *sgl);
struct pfn_sg *pfn_sg_next(struct pfn_sg *sg);
int pfn_sg_nents(struct pfn_sg *sgl);
int pfn_sg_nents_for_len(struct pfn_sg *sgl, uint64_t len);
struct pfn_sg *pfn_sg_last(struct pfn_sg *sgl, unsigned int nents);
#ifdef __cplusplus
}
#endif

#define PAGE 4096ull
#define TOP_PFN ((1ull << 52) - 1)

/* pfn_errormsg() starts with "<call>: " and holds each fragment (a NULL-terminated list). */
static int says_(int line, const char *call, ...)
{
    const char *m = pfn_errormsg();
    size_t n = strlen(call);
    int ok = strncmp(m, call, n) == 0 && strncmp(m + n, ": ", 2) == 0;
    if (!ok)
        fprintf(stderr, "api_sg.c:%d: message \"%s\" is not from %s\n", line, m, call);
    va_list ap;
    va_start(ap, call);
    for (const char *f; (f = va_arg(ap, const char *)) != NULL;)
        if (strstr(m, f) == NULL) {
            fprintf(stderr, "api_sg.c:%d: message \"%s\" lacks \"%s\"\n", line, m, f);
            ok = 0;
        }
    va_end(ap);
    return ok;
}
#define SAYS(call, ...) CHECK(says_(__LINE__, call, __VA_ARGS__, (const char *)NULL))

/* An address as the messages write it (Rust's {:p}: glibc's %p but "0x0" for NULL); four
 * buffers in turn, so that one SAYS may use several. */
static const char *at(const void *p)
{
    static char text[4][32];
    static int next;
    char *t = text[next++ % 4];
    if (p == NULL)
        snprintf(t, sizeof text[0], "0x0");
    else
        snprintf(t, sizeof text[0], "%p", p);
    return t;
}

static uint64_t rng = 0x5C47;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static struct pfn_t P(uint64_t val)
{
    struct pfn_t p;
    p.val = val;
    return p;
}

static void set_data(struct pfn_sg *sg, uint64_t val, uint32_t off, uint32_t len)
{
    sg->pfn.val = val;
    sg->offset = off;
    sg->length = len;
}

static void set_link(struct pfn_sg *sg, const void *to)
{
    sg->pfn.val = (uint64_t)(uintptr_t)to | PFN_SG_CHAIN;
    sg->offset = 0;
    sg->length = 0;
}

static void layout(void)
{
    CHECK_EQ(sizeof(struct pfn_sg), 16);
    CHECK_EQ(offsetof(struct pfn_sg, pfn), 0);
    CHECK_EQ(offsetof(struct pfn_sg, offset), 8);
    CHECK_EQ(offsetof(struct pfn_sg, length), 12);
    CHECK_EQ(sizeof(pfn_sg_table), sizeof(void *) + 8);
    CHECK_EQ(PFN_SG_PERSIST, 1);
    CHECK_EQ(PFN_SG_MITER_TO_SG, 2);
    CHECK_EQ(PFN_SG_MITER_FROM_SG, 4);
    CHECK_EQ(PFN_SG_CHUNK_ENTRIES, 255);
    /* An array of PFN_SG_CHUNK_ENTRIES plus the library's 16-byte head is one page. */
    CHECK_EQ(PFN_SG_CHUNK_ENTRIES * sizeof(struct pfn_sg) + 16, PAGE);
}

/* ---- inline against exported ------------------------------------------------------------ */

static int agree_failures;
#define AGREE(a, b)                                                                         \
    do {                                                                                    \
        unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b);      \
        if (a_ != b_ && agree_failures++ < 10)                                              \
            fprintf(stderr, "%s:%d: inline %s = %#llx, exported %#llx\n", __FILE__,         \
                    __LINE__, #a, a_, b_);                                                  \
        CHECK(a_ == b_);                                                                    \
    } while (0)

/* Calls a pointer-returning helper both ways, comparing result and errno. */
#define AGREE_PTR(inl, exp)                                                                 \
    do {                                                                                    \
        errno = 12345;                                                                      \
        uintptr_t ri_ = (uintptr_t)(inl);                                                   \
        int ei_ = errno;                                                                    \
        errno = 12345;                                                                      \
        uintptr_t re_ = (uintptr_t)(exp);                                                   \
        int ee_ = errno;                                                                    \
        AGREE(ri_, re_);                                                                    \
        AGREE(ei_, ee_);                                                                    \
    } while (0)

/* A pool of arrays whose every array ends in a link (to an entry of the pool, or NULL, or
 * misaligned) or an end-marked entry, so no walk leaves the pool: lists that end, loop,
 * break, or link to links. */
#define ARRAYS 12
#define MAXLEN 6
static struct pfn_sg pool[ARRAYS][MAXLEN];
static int pool_len[ARRAYS];

static void random_pool(void)
{
    for (int a = 0; a < ARRAYS; a++)
        pool_len[a] = 2 + (int)(rnd() % (MAXLEN - 1));
    for (int a = 0; a < ARRAYS; a++) {
        int n = pool_len[a];
        for (int i = 0; i < n; i++) {
            uint64_t flags = (rnd() & 1) ? PFN_DEV : 0;
            if (rnd() % 8 == 0)
                flags |= PFN_SG_LAST;
            set_data(&pool[a][i], (rnd() % 1000) | flags, (uint32_t)(rnd() % 9000),
                     (uint32_t)(rnd() % 10000));
        }
        /* Some links in the middle too. */
        if (rnd() % 4 == 0) {
            int i = (int)(rnd() % (uint64_t)(n - 1));
            set_link(&pool[a][i], &pool[rnd() % ARRAYS][rnd() % 2]);
        }
        struct pfn_sg *end = &pool[a][n - 1];
        switch (rnd() % 10) {
        case 0:
            end->pfn.val |= PFN_SG_LAST;
            end->pfn.val &= ~PFN_SG_CHAIN;
            break;
        case 1:
            set_link(end, NULL);
            break;
        case 2:
            set_link(end, (const char *)&pool[rnd() % ARRAYS][0] + 4);
            break;
        default: {
            int b = (int)(rnd() % ARRAYS);
            set_link(end, &pool[b][rnd() % (uint64_t)pool_len[b]]);
        }
        }
    }
}

static void agree_on(struct pfn_sg *sg)
{
    AGREE(inline_sg_is_chain(sg), pfn_sg_is_chain(sg));
    AGREE(inline_sg_is_last(sg), pfn_sg_is_last(sg));
    AGREE((uintptr_t)inline_sg_chain_ptr(sg), (uintptr_t)pfn_sg_chain_ptr(sg));
    AGREE(inline_sg_pfn(sg).val, pfn_sg_pfn(sg).val);
    AGREE(inline_sg_phys(sg), pfn_sg_phys(sg));
    AGREE_PTR(inline_sg_next(sg), pfn_sg_next(sg));
    AGREE(inline_sg_nents(sg), pfn_sg_nents(sg));
    uint64_t len = rnd() % 40000;
    AGREE(inline_sg_nents_for_len(sg, len), pfn_sg_nents_for_len(sg, len));
    AGREE(inline_sg_nents_for_len(sg, 0), pfn_sg_nents_for_len(sg, 0));
    unsigned n = (unsigned)(rnd() % 80);
    AGREE_PTR(inline_sg_last(sg, n), pfn_sg_last(sg, n));

    /* The writers, on two copies of the entry. */
    struct pfn_sg a = *sg, b = *sg;
    struct pfn_t p = P((rnd() % 3 == 0 ? TOP_PFN : rnd() % 100) | (rnd() % 4 == 0 ? PFN_SG_CHAIN : 0) |
                       (rnd() % 2 ? PFN_SG_LAST | PFN_DEV : 0));
    uint32_t l = (uint32_t)rnd(), o = (uint32_t)(rnd() % 3 ? rnd() % 8192 : rnd());
    AGREE(inline_sg_set_pfn(&a, p, l, o), pfn_sg_set_pfn(&b, p, l, o));
    AGREE(memcmp(&a, &b, sizeof a), 0);
    inline_sg_mark_end(&a);
    pfn_sg_mark_end(&b);
    AGREE(memcmp(&a, &b, sizeof a), 0);
    inline_sg_unmark_end(&a);
    pfn_sg_unmark_end(&b);
    AGREE(memcmp(&a, &b, sizeof a), 0);
}

static void agreement(void)
{
    int runs = getenv("PFN_TEST_QUICK") ? 300 : 3000;
    int loops = 0, faults = 0, ends = 0, links = 0;
    for (int r = 0; r < runs; r++) {
        random_pool();
        for (int a = 0; a < ARRAYS; a++)
            for (int i = 0; i < pool_len[a]; i++) {
                struct pfn_sg *sg = &pool[a][i];
                agree_on(sg);
                int n = pfn_sg_nents(sg);
                loops += n == -ELOOP;
                faults += n == -EFAULT;
                ends += n > 0;
                links += n == -EINVAL;
            }
    }
    /* The random lists covered every outcome. */
    CHECK(loops > 100);
    CHECK(faults > 100);
    CHECK(ends > 100);
    CHECK(links > 100);
    /* Misplaced pointers, both ways, without a dereference. */
    struct pfn_sg *odd = (struct pfn_sg *)(uintptr_t)0x1003;
    struct pfn_sg *nul = NULL;
    struct pfn_sg *bad[] = {odd, nul};
    for (int k = 0; k < 2; k++) {
        struct pfn_sg *sg = bad[k];
        AGREE(inline_sg_is_chain(sg), pfn_sg_is_chain(sg));
        AGREE(inline_sg_is_last(sg), pfn_sg_is_last(sg));
        AGREE((uintptr_t)inline_sg_chain_ptr(sg), (uintptr_t)pfn_sg_chain_ptr(sg));
        AGREE(inline_sg_pfn(sg).val, 0);
        AGREE(pfn_sg_pfn(sg).val, 0);
        AGREE(pfn_sg_phys(sg), 0);
        AGREE(inline_sg_phys(sg), 0);
        AGREE_PTR(inline_sg_next(sg), pfn_sg_next(sg));
        AGREE(inline_sg_nents(sg), -EINVAL);
        AGREE(pfn_sg_nents(sg), -EINVAL);
        AGREE(pfn_sg_nents_for_len(sg, 5), -EINVAL);
        AGREE(inline_sg_nents_for_len(sg, 5), -EINVAL);
        AGREE_PTR(inline_sg_last(sg, 3), pfn_sg_last(sg, 3));
        AGREE(inline_sg_set_pfn(sg, P(1), 1, 0), -EINVAL);
        AGREE(pfn_sg_set_pfn(sg, P(1), 1, 0), -EINVAL);
        inline_sg_mark_end(sg); /* nothing, no crash */
        pfn_sg_mark_end(sg);
        inline_sg_unmark_end(sg);
        pfn_sg_unmark_end(sg);
        inline_sg_init_table(sg, 4);
        pfn_sg_init_table(sg, 4);
    }
    CHECK_NULL_ERRNO(pfn_sg_next(NULL), EINVAL);
    CHECK_NULL_ERRNO(inline_sg_next(NULL), EINVAL);
}

/* ---- the helpers' contracts, each error -------------------------------------------------- */

static void helpers(void)
{
    struct pfn_sg a[4], b[3], c[2];
    inline_sg_init_table(a, 4);
    pfn_sg_init_table(b, 3);
    CHECK_EQ(a[3].pfn.val, PFN_SG_LAST);
    CHECK_EQ(a[0].pfn.val | a[0].offset | a[0].length, 0);
    CHECK(pfn_sg_is_last(&b[2]) && !pfn_sg_is_last(&b[1]));
    CHECK_EQ(inline_sg_nents(a), 4);
    CHECK_EQ(pfn_sg_nents(b), 3);

    /* set_pfn keeps the end mark, drops the list's flags from pfn, refuses links and
     * overflow (writing nothing). */
    CHECK_EQ(inline_sg_set_pfn(&a[3], P(7 | PFN_DEV | PFN_SG_LAST), 100, 4000), 0);
    CHECK_EQ(a[3].pfn.val, 7 | PFN_DEV | PFN_SG_LAST);
    CHECK_EQ(inline_sg_set_pfn(&a[0], P(9 | PFN_SG_LAST), 100, 4000), 0);
    CHECK_EQ(a[0].pfn.val, 9);
    CHECK_EQ(inline_sg_pfn(&a[3]).val, 7 | PFN_DEV);
    CHECK_EQ(inline_sg_phys(&a[3]), 7 * PAGE + 4000);
    CHECK_EQ(inline_sg_set_pfn(&a[1], P(5 | PFN_SG_CHAIN), 1, 0), -EINVAL);
    CHECK_EQ(pfn_sg_set_pfn(&a[1], P(5 | PFN_SG_CHAIN), 1, 0), -EINVAL);
    SAYS("pfn_sg_set_pfn", "pfn_t 0x8000000000000005", "PFN_SG_CHAIN");
    CHECK_EQ(inline_sg_set_pfn(&a[1], P(TOP_PFN), 4096, 0), 0);     /* ends at 2^64 - 1 */
    CHECK_EQ(inline_sg_set_pfn(&a[1], P(TOP_PFN), 4097, 0), -EOVERFLOW);
    CHECK_EQ(pfn_sg_set_pfn(&a[1], P(TOP_PFN), 1, 4096), -EOVERFLOW);
    SAYS("pfn_sg_set_pfn", "pfn_t 0xfffffffffffff", "offset 0x1000 and length 0x1",
         "passes the end of the 64-bit physical space");
    CHECK_EQ(pfn_sg_set_pfn(&a[1], P(TOP_PFN), 0, 4096), -EOVERFLOW);
    CHECK_EQ(a[1].length, 4096); /* unchanged by the failures */
    CHECK_EQ(pfn_sg_set_pfn(&a[2], P(3), 0xFFFFFFFFu, 0xFFFFFFFFu), 0); /* u32 sums do not wrap */

    /* chain: refuses what would make a broken list. */
    CHECK_EQ(inline_sg_chain(a, 1, b), -EINVAL);
    CHECK_EQ(pfn_sg_chain(a, 0, b), -EINVAL);
    SAYS("pfn_sg_chain", "prv_nents 0 is less than 2");
    CHECK_EQ(pfn_sg_chain(NULL, 4, b), -EINVAL);
    SAYS("pfn_sg_chain", "prv is NULL");
    CHECK_EQ(pfn_sg_chain(a, 4, NULL), -EINVAL);
    SAYS("pfn_sg_chain", "sgl is NULL");
    CHECK_EQ(pfn_sg_chain(a, 4, &a[3]), -EINVAL); /* to itself */
    SAYS("pfn_sg_chain", at(&a[3]), "prv[3], the entry that would become the link");
    CHECK_EQ(pfn_sg_chain(a, 4, (struct pfn_sg *)((char *)b + 4)), -EINVAL);
    SAYS("pfn_sg_chain", at((char *)b + 4), "not 8-aligned");
    CHECK_EQ(inline_sg_chain(a, 4, b), 0);
    CHECK(pfn_sg_is_chain(&a[3]) && !pfn_sg_is_last(&a[3]));
    CHECK(pfn_sg_chain_ptr(&a[3]) == b);
    CHECK(pfn_sg_chain_ptr(&a[2]) == NULL);
    CHECK_EQ(a[3].offset | a[3].length, 0);
    CHECK_EQ(pfn_sg_chain(c, 2, &a[3]), -EINVAL); /* to a link */
    SAYS("pfn_sg_chain", "sgl", at(&a[3]), "is a link entry");
    CHECK_EQ(pfn_sg_set_pfn(&a[3], P(1), 1, 0), -EINVAL); /* a link is not data */
    SAYS("pfn_sg_set_pfn", "sg", at(&a[3]), "is a link entry");
    CHECK_EQ(pfn_sg_pfn(&a[3]).val, 0);
    CHECK_EQ(pfn_sg_phys(&a[3]), 0);
    CHECK_EQ(pfn_sg_nents(a), 6);
    CHECK(pfn_sg_next(&a[2]) == b);
    CHECK(pfn_sg_next(&b[0]) == &b[1]);
    errno = 0;
    CHECK(pfn_sg_next(&b[2]) == NULL && errno == 0); /* the end: errno unchanged */
    CHECK_NULL_ERRNO(pfn_sg_next(&a[3]), EINVAL);    /* a link is not a data entry */
    SAYS("pfn_sg_next", "sg", at(&a[3]), "is a link entry");
    CHECK(pfn_sg_last(a, 100) == &b[2]);
    CHECK(pfn_sg_last(a, 4) == &b[0]);
    CHECK(pfn_sg_last(a, 1) == &a[0]);
    CHECK_NULL_ERRNO(pfn_sg_last(a, 0), EINVAL);
    SAYS("pfn_sg_last", "nents is 0");
    CHECK_NULL_ERRNO(pfn_sg_last(&a[3], 2), EINVAL); /* starts with a link */
    SAYS("pfn_sg_last", "sgl", at(&a[3]), "is a link entry");
    CHECK_EQ(pfn_sg_nents(&a[3]), -EINVAL);
    SAYS("pfn_sg_nents", "sgl", at(&a[3]), "is a link entry");
    CHECK_EQ(pfn_sg_nents((struct pfn_sg *)((char *)a + 4)), -EINVAL);
    SAYS("pfn_sg_nents", "sgl", at((char *)a + 4), "not 8-aligned");
    /* nents_for_len: a[0] 100, a[1] 4096, a[2] 0xFFFFFFFF, b 0 0 0. */
    CHECK_EQ(pfn_sg_nents_for_len(a, 0), 0);
    CHECK_EQ(pfn_sg_nents_for_len(a, 100), 1);
    CHECK_EQ(pfn_sg_nents_for_len(a, 101), 2);
    CHECK_EQ(pfn_sg_nents_for_len(a, 4196 + 0xFFFFFFFFull), 3);
    CHECK_EQ(pfn_sg_nents_for_len(a, 4197 + 0xFFFFFFFFull), -EINVAL); /* longer than the list */
    SAYS("pfn_sg_nents_for_len", "6 data entries hold 0x100001063 bytes",
         "fewer than len 0x100001064");

    /* mark_end turns a link into data; unmark_end clears only the mark. */
    b[1].pfn.val = 5 | PFN_SG_LAST;
    pfn_sg_unmark_end(&b[1]);
    CHECK_EQ(b[1].pfn.val, 5);
    pfn_sg_mark_end(&b[0]);
    CHECK_EQ(pfn_sg_nents(a), 4);
    inline_sg_mark_end(&a[3]);
    CHECK(pfn_sg_is_last(&a[3]) && !pfn_sg_is_chain(&a[3]));
    CHECK_EQ(pfn_sg_nents(a), 4);

    /* The broken links: NULL, misaligned, to itself, to another link, and a loop. */
    pfn_sg_init_table(a, 4);
    set_link(&a[3], NULL);
    CHECK_EQ(pfn_sg_nents(a), -EFAULT);
    SAYS("pfn_sg_nents", "the link at", at(&a[3]), "after data entry 2 at", at(&a[2]),
         "leads to 0x0, which is NULL or not 8-aligned");
    CHECK_NULL_ERRNO(pfn_sg_next(&a[2]), EFAULT);
    SAYS("pfn_sg_next", "after the data entry at", at(&a[2]), "leads to 0x0");
    set_link(&a[3], (char *)b + 4);
    CHECK_EQ(pfn_sg_nents(a), -EFAULT);
    SAYS("pfn_sg_nents", "leads to", at((char *)b + 4), "NULL or not 8-aligned");
    set_link(&a[3], &a[3]);
    CHECK_EQ(pfn_sg_nents(a), -ELOOP);
    SAYS("pfn_sg_nents", "the link at", at(&a[3]), "leads to itself");
    CHECK_NULL_ERRNO(pfn_sg_next(&a[2]), ELOOP);
    SAYS("pfn_sg_next", "leads to itself");
    pfn_sg_init_table(c, 2);
    set_link(&c[1], b);
    set_link(&a[3], &c[1]);
    CHECK_EQ(pfn_sg_nents(a), -EINVAL);
    SAYS("pfn_sg_nents", "leads to", at(&c[1]), "another link entry");
    CHECK_NULL_ERRNO(pfn_sg_next(&a[2]), EINVAL);
    SAYS("pfn_sg_next", "another link entry");
    pfn_sg_init_table(b, 3);
    set_link(&b[2], a); /* a -> b -> a */
    set_link(&a[3], b);
    CHECK_EQ(pfn_sg_nents(a), -ELOOP);
    SAYS("pfn_sg_nents", "the list loops", "leads back to", at(b));
    CHECK_EQ(inline_sg_nents(a), -ELOOP);
    CHECK_EQ(pfn_sg_nents_for_len(a, 1000), -ELOOP);
    SAYS("pfn_sg_nents_for_len", "the list loops");
    CHECK_NULL_ERRNO(pfn_sg_last(a, 1000), ELOOP);
    SAYS("pfn_sg_last", "the list loops");
    CHECK(pfn_sg_last(a, 5) == &b[1]); /* stops before it has to see the loop */

    /* pfn_for_each_sg: bounded by nr over a loop, stops at the end mark, never reads past the
     * nr-th entry (c has no end mark and no more entries). */
    struct pfn_sg *sg;
    unsigned i, seen = 0;
    pfn_for_each_sg(a, sg, 50u, i) seen++;
    CHECK_EQ(seen, 50);
    pfn_sg_init_table(b, 3);
    seen = 0;
    pfn_for_each_sg(a, sg, 50u, i) seen++;
    CHECK_EQ(seen, 6);
    struct pfn_sg d[2];
    set_data(&d[0], 1, 0, 1);
    set_data(&d[1], 2, 0, 1);
    seen = 0;
    pfn_for_each_sg(d, sg, 2u, i) seen++;
    CHECK_EQ(seen, 2);
    set_link(&a[3], NULL);
    errno = 0;
    seen = 0;
    pfn_for_each_sg(a, sg, 50u, i) seen++;
    CHECK_EQ(seen, 3);
    CHECK_EQ(errno, EFAULT);
}

/* ---- tables ------------------------------------------------------------------------------- */

static void tables(void)
{
    pfn_sg_table t, zero;
    memset(&zero, 0, sizeof zero);
    CHECK_EQ(pfn_sg_alloc_table(NULL, 4), -EINVAL);
    SAYS("pfn_sg_alloc_table", "t is NULL");
    t = zero;
    CHECK_EQ(pfn_sg_alloc_table(&t, 0), -EINVAL);
    SAYS("pfn_sg_alloc_table", "nents is 0");
    CHECK(t.sgl == NULL); /* untouched on failure */
    unsigned sizes[] = {1, 2, 254, 255, 256, 508, 509, 510, 1000, 100000};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        unsigned n = sizes[k];
        REQUIRE(pfn_sg_alloc_table(&t, n) == 0);
        CHECK_EQ(t.nents, n);
        CHECK_EQ(t.orig_nents, n);
        CHECK_EQ(pfn_sg_nents(t.sgl), n);
        /* Every data entry zeroed, the last marked, links every PFN_SG_CHUNK_ENTRIES - 1. */
        struct pfn_sg *sg;
        unsigned i, zeroed = 0, hops = 0, expect_hops = n > 255 ? (n - 2) / 254 : 0;
        pfn_for_each_sg(t.sgl, sg, n, i) {
            zeroed += pfn_sg_pfn(sg).val == 0 && sg->length == 0 && sg->offset == 0;
            if (i + 1 < n && pfn_sg_is_chain(sg + 1))
                hops++;
            CHECK_EQ(pfn_sg_set_pfn(sg, pfn_to_pfn_t(i), i, 0), 0);
        }
        CHECK_EQ(zeroed, n);
        CHECK_EQ(hops, expect_hops);
        CHECK(pfn_sg_is_last(pfn_sg_last(t.sgl, n)));
        CHECK_EQ(pfn_sg_last(t.sgl, n)->length, n - 1);
        /* The caller may mark an earlier end, and even break a link: free still finds every
         * array (valgrind and ASan see the leaks otherwise). */
        pfn_sg_mark_end(t.sgl);
        if (n > 300)
            set_link(t.sgl + 254, NULL);
        pfn_sg_free_table(&t);
        CHECK(t.sgl == NULL && t.nents == 0 && t.orig_nents == 0);
        pfn_sg_free_table(&t); /* again: nothing */
    }
    pfn_sg_free_table(NULL);
    t = zero;
    pfn_sg_free_table(&t);
    /* A table whose sgl was moved into the array is not freed through the entry before it
     * (reported under PFN_DEBUG), also when that entry holds small offsets and lengths near
     * the library's own marks; the real one still frees. */
    REQUIRE(pfn_sg_alloc_table(&t, 3) == 0);
    for (uint32_t off = 0; off < 300; off += 7)
        for (uint32_t len = 0x73677400; len < 0x73677500; len++) {
            pfn_sg_table moved = t;
            moved.sgl = t.sgl + 1;
            t.sgl[0].offset = off;
            t.sgl[0].length = len;
            pfn_sg_free_table(&moved);
            CHECK(moved.sgl == t.sgl + 1); /* left alone */
        }
    SAYS("pfn_sg_free_table", "t->sgl", at(t.sgl + 1), "is not a list pfn_sg_alloc_table* made");
    pfn_sg_free_table(&t);
    CHECK(t.sgl == NULL);

    /* From frames: contiguous frames with equal flags share an entry. */
    pfn_t pfns[6] = {pfn_to_pfn_t(10), pfn_to_pfn_t(11), __pfn_to_pfn_t(12, PFN_DEV),
                     __pfn_to_pfn_t(13, PFN_DEV | PFN_SG_LAST), pfn_to_pfn_t(20), pfn_to_pfn_t(21)};
    CHECK_EQ(pfn_sg_alloc_table_from_pfns(&t, pfns, 6, 100, 6 * PAGE - 200), 0);
    CHECK_EQ(t.nents, 3);
    CHECK_EQ(t.sgl[0].pfn.val, 10);
    CHECK_EQ(t.sgl[0].offset, 100);
    CHECK_EQ(t.sgl[0].length, 2 * PAGE - 100);
    CHECK_EQ(t.sgl[1].pfn.val, 12 | PFN_DEV);
    CHECK_EQ(t.sgl[1].length, 2 * PAGE);
    CHECK_EQ(t.sgl[2].pfn.val, 20 | PFN_SG_LAST);
    CHECK_EQ(t.sgl[2].length, 2 * PAGE - 100);
    pfn_sg_free_table(&t);
    CHECK_EQ(pfn_sg_alloc_table_from_pfns(&t, pfns, 2, 0, 1), 0); /* only what is needed */
    CHECK_EQ(t.nents, 1);
    CHECK_EQ(t.sgl[0].length, 1);
    pfn_sg_free_table(&t);
    CHECK_EQ(pfn_sg_alloc_table_from_pfns(NULL, pfns, 6, 0, 1), -EINVAL);
    SAYS("pfn_sg_alloc_table_from_pfns", "t is NULL");
    CHECK_EQ(pfn_sg_alloc_table_from_pfns(&t, NULL, 6, 0, 1), -EINVAL);
    SAYS("pfn_sg_alloc_table_from_pfns", "pfns is NULL");
    CHECK_EQ(pfn_sg_alloc_table_from_pfns(&t, pfns, 6, 0, 0), -EINVAL);
    SAYS("pfn_sg_alloc_table_from_pfns", "size is 0");
    CHECK_EQ(pfn_sg_alloc_table_from_pfns(&t, pfns, 6, 4096, 1), -EINVAL);
    SAYS("pfn_sg_alloc_table_from_pfns", "offset 0x1000 is not inside the first frame");
    CHECK_EQ(pfn_sg_alloc_table_from_pfns(&t, pfns, 2, 1, 2 * PAGE), -EINVAL);
    SAYS("pfn_sg_alloc_table_from_pfns", "offset 0x1 + size 0x2000 needs 3 frames",
         "more than the 2 given");
    /* offset + size past 2^64: more frames than given (not a table of no entries). */
    CHECK_EQ(pfn_sg_alloc_table_from_pfns(&t, pfns, 6, 1, UINT64_MAX), -EINVAL);
    SAYS("pfn_sg_alloc_table_from_pfns", "needs 4503599627370496 frames", "the 6 given");
    CHECK_EQ(pfn_sg_alloc_table_from_pfns(&t, pfns, 6, 4095, UINT64_MAX - 4094), -EINVAL);
    pfn_t chain[1] = {__pfn_to_pfn_t(1, PFN_SG_CHAIN)};
    CHECK_EQ(pfn_sg_alloc_table_from_pfns(&t, chain, 1, 0, 1), -EINVAL);
    SAYS("pfn_sg_alloc_table_from_pfns", "pfns[0] = 0x8000000000000001 has PFN_SG_CHAIN set");
    pfn_t top[1] = {pfn_to_pfn_t(TOP_PFN)};
    CHECK_EQ(pfn_sg_alloc_table_from_pfns(&t, top, 1, 4095, 1), 0);
    CHECK_EQ(pfn_sg_phys(t.sgl), UINT64_MAX);
    pfn_sg_free_table(&t);
    CHECK(t.sgl == NULL);
}

/* ---- copies, iterator and iovecs: every error ------------------------------------------- */

#define PHYS (0x7a0ull << 32)

static void data_errors(void)
{
    char *mem = (char *)mmap(NULL, 8 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(mem != MAP_FAILED);
    pfn_device *dev = pfn_device_new("api_sg");
    REQUIRE(dev != NULL);
    pfn_resource r = {PHYS, PHYS + 4 * PAGE - 1, NULL};
    REQUIRE(devm_register_kmap_pfn_range(dev, &r, mem) == 0);
    char buf[64];
    memset(buf, 'x', sizeof buf);

    struct pfn_sg l[3];
    pfn_sg_init_table(l, 3);
    pfn_sg_set_pfn(&l[0], phys_to_pfn_t(PHYS, PFN_DEV), 8, 0);
    pfn_sg_set_pfn(&l[1], phys_to_pfn_t(PHYS + PAGE, PFN_DEV), 8, 4092); /* crosses a frame */
    pfn_sg_set_pfn(&l[2], phys_to_pfn_t(PHYS + 3 * PAGE, PFN_DEV), 8, 0);
    CHECK_EQ(pfn_sg_copy_from_buffer(l, 3, buf, 24), 24);
    CHECK_EQ(pfn_sg_copy_to_buffer(l, 3, buf, 64), 24);     /* the list is shorter */
    CHECK_EQ(pfn_sg_pcopy_to_buffer(l, 3, buf, 64, 24), 0);  /* skip at the end */
    CHECK_EQ(pfn_sg_pcopy_to_buffer(l, 3, buf, 64, 1000), 0);
    CHECK_EQ(pfn_sg_copy_to_buffer(l, 0, buf, 64), 0);       /* nents 0: empty */
    CHECK_EQ(pfn_sg_copy_to_buffer(NULL, 0, buf, 64), 0);
    CHECK_EQ(pfn_sg_copy_to_buffer(l, 3, buf, 0), 0);

    /* Arguments. */
    CHECK_EQ(pfn_sg_copy_to_buffer(NULL, 3, buf, 8), -EINVAL);
    SAYS("pfn_sg_copy_to_buffer", "sgl is NULL");
    CHECK_EQ(pfn_sg_copy_to_buffer((struct pfn_sg *)(buf + 1), 3, buf, 8), -EINVAL);
    SAYS("pfn_sg_copy_to_buffer", "sgl", at(buf + 1), "is not 8-aligned");
    CHECK_EQ(pfn_sg_copy_to_buffer(l, 3, NULL, 8), -EINVAL);
    SAYS("pfn_sg_copy_to_buffer", "buf is NULL with buflen 0x8");
    CHECK_EQ(pfn_sg_copy_from_buffer(l, 3, NULL, 8), -EINVAL);
    SAYS("pfn_sg_copy_from_buffer", "buf is NULL");
    CHECK_EQ(pfn_sg_copy_from_buffer(l, 3, (void *)(uintptr_t)-8, 16), -EINVAL); /* wraps */
    SAYS("pfn_sg_copy_from_buffer", "buf 0xfffffffffffffff8 + buflen 0x10 wraps");
    CHECK_EQ(pfn_sg_copy_to_buffer(l, 3, buf, (size_t)PTRDIFF_MAX + 1), -EINVAL);
    SAYS("pfn_sg_copy_to_buffer", "buflen 0x8000000000000000 is over PTRDIFF_MAX");
    CHECK_EQ(pfn_sg_zero_buffer(l, 3, (size_t)PTRDIFF_MAX + 1, 0, 0), -EINVAL);
    SAYS("pfn_sg_zero_buffer", "over PTRDIFF_MAX");
    CHECK_EQ(pfn_sg_pcopy_from_buffer(l, 3, buf, 8, 0, 2), -EINVAL); /* unknown flag */
    SAYS("pfn_sg_pcopy_from_buffer", "flags 0x2 has unknown bits");
    CHECK_EQ(pfn_sg_zero_buffer(l, 3, 8, 0, 0x100), -EINVAL);
    SAYS("pfn_sg_zero_buffer", "flags 0x100 has unknown bits");

    /* The list: no end mark within nents (only when more is wanted). */
    pfn_sg_unmark_end(&l[2]);
    CHECK_EQ(pfn_sg_copy_to_buffer(l, 3, buf, 24), 24);
    CHECK_EQ(pfn_sg_copy_to_buffer(l, 3, buf, 25), -EINVAL);
    SAYS("pfn_sg_copy_to_buffer", "data entry 2 at", at(&l[2]), "is the nents-th (nents = 3)",
         "not marked PFN_SG_LAST");
    CHECK_EQ(pfn_sg_copy_to_buffer(l, 2, buf, 17), -EINVAL);
    SAYS("pfn_sg_copy_to_buffer", "data entry 1 at", at(&l[1]), "(nents = 2)");
    CHECK_EQ(pfn_sg_copy_to_buffer(l, 2, buf, 16), 16);
    pfn_sg_mark_end(&l[2]);
    /* A link to NULL, a loop, a link to a link, a list that starts with a link. */
    struct pfn_sg a[2], b[2];
    pfn_sg_init_table(a, 2);
    pfn_sg_set_pfn(&a[0], phys_to_pfn_t(PHYS, 0), 1, 0);
    pfn_sg_init_table(b, 2);
    pfn_sg_set_pfn(&b[0], phys_to_pfn_t(PHYS, 0), 1, 0);
    set_link(&a[1], NULL);
    CHECK_EQ(pfn_sg_copy_to_buffer(a, 100, buf, 8), -EFAULT);
    SAYS("pfn_sg_copy_to_buffer", "the link at", at(&a[1]), "after data entry 0", "leads to 0x0");
    set_link(&a[1], b);
    set_link(&b[1], a);
    CHECK_EQ(pfn_sg_copy_to_buffer(a, 1000000, buf, 64), -ELOOP);
    SAYS("pfn_sg_copy_to_buffer", "the list loops", "an entry already walked");
    CHECK_EQ(pfn_sg_copy_to_buffer(a, 5, buf, 64), -ELOOP);
    CHECK_EQ(pfn_sg_copy_to_buffer(a, 1000000, buf, 3), 3); /* done before the loop shows */
    CHECK_EQ(pfn_sg_zero_buffer(a, UINT32_MAX, 64, 0, 0), -ELOOP);
    SAYS("pfn_sg_zero_buffer", "the list loops");
    set_link(&b[1], &a[1]);
    CHECK_EQ(pfn_sg_copy_to_buffer(a, 100, buf, 8), -EINVAL);
    SAYS("pfn_sg_copy_to_buffer", "the link at", at(&b[1]), "leads to", at(&a[1]),
         "another link entry");
    CHECK_EQ(pfn_sg_copy_to_buffer(&a[1], 100, buf, 8), -EINVAL);
    SAYS("pfn_sg_copy_to_buffer", "sgl", at(&a[1]), "is a link entry");
    /* An entry past the physical space, skipped or not; a frame in no range. */
    struct pfn_sg o[2];
    pfn_sg_init_table(o, 2);
    o[0].pfn.val = TOP_PFN;
    o[0].offset = 4000;
    o[0].length = 200;
    pfn_sg_set_pfn(&o[1], phys_to_pfn_t(PHYS, 0), 8, 0);
    CHECK_EQ(pfn_sg_copy_to_buffer(o, 2, buf, 8), -EOVERFLOW);
    SAYS("pfn_sg_copy_to_buffer", "pfn_t 0xfffffffffffff", "offset 0xfa0 and length 0xc8",
         "passes the end of the 64-bit physical space");
    CHECK_EQ(pfn_sg_pcopy_to_buffer(o, 2, buf, 8, 200), -EOVERFLOW);
    SAYS("pfn_sg_pcopy_to_buffer", "passes the end of the 64-bit physical space");
    pfn_sg_set_pfn(&o[0], phys_to_pfn_t(PHYS + 4 * PAGE, 0), 8, 0);
    CHECK_EQ(pfn_sg_copy_to_buffer(o, 2, buf, 16), -ENXIO);
    SAYS("pfn_sg_copy_to_buffer", "pfn 0x7a000004 (physical 0x7a000004000)",
         "lies in no registered range");
    CHECK_EQ(pfn_sg_pcopy_to_buffer(o, 2, buf, 8, 8), 8); /* skipped frames are not looked up */
    /* A failed write changes nothing: the first entry, in a range, is not written. */
    memset(mem, 0, 16);
    pfn_sg_set_pfn(&o[0], phys_to_pfn_t(PHYS, 0), 8, 0);
    pfn_sg_set_pfn(&o[1], phys_to_pfn_t(PHYS + 5 * PAGE, 0), 8, 0);
    CHECK_EQ(pfn_sg_copy_from_buffer(o, 2, buf, 16), -ENXIO);
    SAYS("pfn_sg_copy_from_buffer", "physical 0x7a000005000", "no registered range");
    CHECK_EQ(pfn_sg_zero_buffer(o, 2, 16, 0, PFN_SG_PERSIST), -ENXIO);
    SAYS("pfn_sg_zero_buffer", "physical 0x7a000005000", "no registered range");
    memset(mem, 'm', 8);
    CHECK_EQ(pfn_sg_zero_buffer(o, 2, 16, 0, 0), -ENXIO);
    CHECK_EQ(mem[0], 'm');
    CHECK_EQ(pfn_sg_copy_from_buffer(o, 2, buf, 8), 8);
    CHECK_EQ(mem[0], 'x');

    /* The mapping iterator. */
    pfn_sg_miter m;
    memset(&m, 0, sizeof m);
    CHECK_EQ(pfn_sg_miter_stop(&m), 0);       /* never started: nothing */
    CHECK_EQ(pfn_sg_miter_next(&m), -EINVAL); /* not started */
    SAYS("pfn_sg_miter_next", "the iterator is not started");
    CHECK_EQ(pfn_sg_miter_skip(&m, 1), -EINVAL);
    SAYS("pfn_sg_miter_skip", "the iterator is not started");
    CHECK_EQ(pfn_sg_miter_start(NULL, l, 3, PFN_SG_MITER_FROM_SG), -EINVAL);
    SAYS("pfn_sg_miter_start", "miter is NULL");
    CHECK_EQ(pfn_sg_miter_start(&m, NULL, 3, PFN_SG_MITER_FROM_SG), -EINVAL);
    SAYS("pfn_sg_miter_start", "sgl is NULL");
    CHECK_EQ(pfn_sg_miter_start(&m, l, 3, 0x40), -EINVAL);
    SAYS("pfn_sg_miter_start", "flags 0x40 has unknown bits");
    CHECK_EQ(pfn_sg_miter_start(&m, l, 3, PFN_SG_PERSIST | PFN_SG_MITER_FROM_SG), -EINVAL);
    SAYS("pfn_sg_miter_start", "flags 0x5", "PFN_SG_PERSIST without PFN_SG_MITER_TO_SG");
    CHECK_EQ(pfn_sg_miter_next(NULL), -EINVAL);
    SAYS("pfn_sg_miter_next", "miter is NULL");
    CHECK_EQ(pfn_sg_miter_skip(NULL, 1), -EINVAL);
    SAYS("pfn_sg_miter_skip", "miter is NULL");
    CHECK_EQ(pfn_sg_miter_stop(NULL), -EINVAL);
    SAYS("pfn_sg_miter_stop", "miter is NULL");
    CHECK_EQ(pfn_sg_miter_start(&m, l, 0, PFN_SG_MITER_FROM_SG), 0);
    CHECK_EQ(pfn_sg_miter_next(&m), 0);
    CHECK_EQ(pfn_sg_miter_stop(&m), 0);
    CHECK_EQ(pfn_sg_miter_start(&m, l, 3, PFN_SG_MITER_TO_SG | PFN_SG_PERSIST), 0);
    CHECK_EQ(pfn_sg_miter_next(&m), 1);
    CHECK(m.addr == mem && m.length == 8 && m.consumed == 8);
    CHECK_EQ(pfn_unregister_range(dev, PHYS), -EDEADLK); /* this thread holds the chunk */
    CHECK_EQ(pfn_sg_miter_next(&m), 1);
    CHECK(m.addr == mem + PAGE + 4092 && m.length == 8); /* one chunk across the frame */
    CHECK_EQ(pfn_sg_miter_next(&m), 1);
    CHECK_EQ(pfn_sg_miter_next(&m), 0);
    CHECK_EQ(pfn_sg_miter_next(&m), 0);
    CHECK_EQ(pfn_sg_miter_stop(&m), 0);
    CHECK_EQ(pfn_sg_miter_stop(&m), 0);
    CHECK_EQ(pfn_sg_miter_next(&m), -EINVAL); /* stopped */
    SAYS("pfn_sg_miter_next", "the iterator is stopped");
    /* Errors stick: the same error from next and skip, nothing mapped. */
    CHECK_EQ(pfn_sg_miter_start(&m, o, 2, PFN_SG_MITER_FROM_SG), 0);
    CHECK_EQ(pfn_sg_miter_next(&m), 1);
    CHECK_EQ(pfn_sg_miter_next(&m), -ENXIO);
    SAYS("pfn_sg_miter_next", "physical 0x7a000005000", "lies in no registered range");
    CHECK(m.addr == NULL && m.length == 0);
    CHECK_EQ(pfn_sg_miter_next(&m), -ENXIO);
    SAYS("pfn_sg_miter_next", "an earlier call ended the iteration with -ENXIO");
    CHECK_EQ(pfn_sg_miter_skip(&m, 1), -ENXIO);
    SAYS("pfn_sg_miter_skip", "an earlier call ended the iteration with -ENXIO");
    CHECK_EQ(pfn_sg_miter_stop(&m), 0);
    CHECK_EQ(pfn_sg_miter_start(&m, a, 100, PFN_SG_MITER_FROM_SG), 0); /* b links to a link */
    CHECK_EQ(pfn_sg_miter_next(&m), 1);
    CHECK_EQ(pfn_sg_miter_next(&m), 1);
    CHECK_EQ(pfn_sg_miter_next(&m), -EINVAL);
    SAYS("pfn_sg_miter_next", "the link at", at(&b[1]), "after the data entry at", at(&b[0]),
         "another link entry");
    CHECK_EQ(pfn_sg_miter_stop(&m), 0);
    set_link(&b[1], a);
    CHECK_EQ(pfn_sg_miter_start(&m, a, 1000000, PFN_SG_MITER_FROM_SG), 0); /* a loop */
    int n = 0, rc;
    while ((rc = pfn_sg_miter_next(&m)) == 1)
        n++;
    CHECK_EQ(rc, -ELOOP);
    SAYS("pfn_sg_miter_next", "the list loops");
    CHECK(n >= 2 && n < 20);
    CHECK_EQ(pfn_sg_miter_stop(&m), 0);
    CHECK_EQ(pfn_sg_miter_start(&m, o, 2, PFN_SG_MITER_FROM_SG), 0);
    CHECK_EQ(pfn_sg_miter_skip(&m, UINT64_MAX), 0);
    CHECK_EQ(pfn_sg_miter_skip(&m, 1), -EOVERFLOW);
    SAYS("pfn_sg_miter_skip", "position 0xffffffffffffffff", "offset 0x1 passes 2^64");
    CHECK_EQ(pfn_sg_miter_stop(&m), 0);
    memset(&m, 0xA5, sizeof m);
    CHECK_EQ(pfn_sg_miter_stop(&m), -EINVAL); /* garbage */
    SAYS("pfn_sg_miter_stop", "not a pfn_sg_miter (state 0xa5a5a5a5)");
    CHECK_EQ(pfn_sg_miter_next(&m), -EINVAL);
    SAYS("pfn_sg_miter_next", "not started (state 0xa5a5a5a5");

    /* iovecs. */
    struct iovec iov[4];
    uint64_t bytes = 77;
    pfn_section s = pfn_read_lock();
    CHECK_EQ(pfn_sg_to_iovec(NULL, l, 3, 0, UINT64_MAX, iov, 4, &bytes), -EINVAL);
    SAYS("pfn_sg_to_iovec", "s is NULL");
    pfn_section closed;
    memset(&closed, 0, sizeof closed);
    CHECK_EQ(pfn_sg_to_iovec(&closed, l, 3, 0, UINT64_MAX, iov, 4, &bytes), -EINVAL);
    SAYS("pfn_sg_to_iovec", "the section *s is not open");
    CHECK_EQ(pfn_sg_to_iovec(&s, l, 3, 0, UINT64_MAX, iov, -1, &bytes), -EINVAL);
    SAYS("pfn_sg_to_iovec", "iovcnt -1 is negative");
    CHECK_EQ(pfn_sg_to_iovec(&s, l, 3, 0, UINT64_MAX, NULL, 4, &bytes), -EINVAL);
    SAYS("pfn_sg_to_iovec", "iov is NULL with iovcnt 4");
    CHECK_EQ(pfn_sg_to_iovec(&s, NULL, 3, 0, UINT64_MAX, iov, 4, &bytes), -EINVAL);
    SAYS("pfn_sg_to_iovec", "sgl is NULL");
    CHECK_EQ(pfn_sg_to_iovec(&s, a, 100, 0, UINT64_MAX, iov, 4, &bytes), -ELOOP);
    SAYS("pfn_sg_to_iovec", "the list loops");
    CHECK_EQ(pfn_sg_to_iovec(&s, o, 2, 0, UINT64_MAX, iov, 4, &bytes), -ENXIO);
    SAYS("pfn_sg_to_iovec", "physical 0x7a000005000", "lies in no registered range");
    CHECK_EQ(bytes, 77); /* not written on error */
    CHECK_EQ(pfn_sg_to_iovec(&s, l, 3, 0, UINT64_MAX, NULL, 0, &bytes), 0);
    CHECK_EQ(bytes, 0);
    CHECK_EQ(pfn_sg_to_iovec(&s, l, 3, 0, UINT64_MAX, iov, 4, &bytes), 3);
    CHECK_EQ(bytes, 24);
    CHECK(iov[0].iov_base == mem && iov[0].iov_len == 8);
    CHECK(iov[1].iov_base == mem + PAGE + 4092 && iov[1].iov_len == 8);
    CHECK(iov[2].iov_base == mem + 3 * PAGE && iov[2].iov_len == 8);
    CHECK_EQ(pfn_sg_to_iovec(&s, l, 3, 4, 10, iov, 4, NULL), 2);
    CHECK(iov[0].iov_base == mem + 4 && iov[0].iov_len == 4);
    CHECK(iov[1].iov_base == mem + PAGE + 4092 && iov[1].iov_len == 6);
    CHECK_EQ(pfn_sg_to_iovec(&s, l, 3, 4, UINT64_MAX, iov, 1, &bytes), 1);
    CHECK_EQ(bytes, 4);
    pfn_read_unlock();

    CHECK_EQ(pfn_device_free(dev), 0);
    munmap(mem, 8 * PAGE);
}

/* ---- from a buffer ------------------------------------------------------------------------ */

static void from_buffer(void)
{
    char *mem = (char *)mmap(NULL, 8 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(mem != MAP_FAILED);
    pfn_device *dev = pfn_device_new("api_sg_buf");
    REQUIRE(dev != NULL);
    /* Pages 0..3 at PHYS; pages 4..5 at PHYS + 4 pages (physically following: one entry);
     * pages 6..7 elsewhere. */
    pfn_resource r1 = {PHYS, PHYS + 4 * PAGE - 1, NULL};
    pfn_resource r2 = {PHYS + 4 * PAGE, PHYS + 6 * PAGE - 1, NULL};
    pfn_resource r3 = {PHYS + 100 * PAGE, PHYS + 102 * PAGE - 1, NULL};
    REQUIRE(devm_register_kmap_pfn_range(dev, &r1, mem) == 0);
    REQUIRE(devm_register_kmap_pfn_range(dev, &r2, mem + 4 * PAGE) == 0);
    REQUIRE(devm_register_kmap_pfn_range(dev, &r3, mem + 6 * PAGE) == 0);
    pfn_sg_table t;
    CHECK_EQ(pfn_sg_alloc_table_from_buf(&t, mem + 10, 8 * PAGE - 20), 0);
    CHECK_EQ(t.nents, 2);
    CHECK_EQ(t.sgl[0].pfn.val, (PHYS >> 12) | PFN_DEV);
    CHECK_EQ(t.sgl[0].offset, 10);
    CHECK_EQ(t.sgl[0].length, 6 * PAGE - 10);
    CHECK_EQ(t.sgl[1].pfn.val, ((PHYS >> 12) + 100) | PFN_DEV | PFN_SG_LAST);
    CHECK_EQ(t.sgl[1].length, 2 * PAGE - 10);
    /* Copying through it is copying the buffer. */
    for (int i = 0; i < 8 * (int)PAGE; i++)
        mem[i] = (char)(i * 7);
    char *out = (char *)malloc(8 * PAGE);
    REQUIRE(out != NULL);
    CHECK_EQ(pfn_sg_copy_to_buffer(t.sgl, t.nents, out, 8 * PAGE), 8 * PAGE - 20);
    CHECK(memcmp(out, mem + 10, 8 * PAGE - 20) == 0);
    pfn_sg_free_table(&t);
    CHECK_EQ(pfn_sg_alloc_table_from_buf(NULL, mem, 1), -EINVAL);
    SAYS("pfn_sg_alloc_table_from_buf", "t is NULL");
    CHECK_EQ(pfn_sg_alloc_table_from_buf(&t, NULL, 1), -EINVAL);
    SAYS("pfn_sg_alloc_table_from_buf", "buf is NULL");
    CHECK_EQ(pfn_sg_alloc_table_from_buf(&t, mem, 0), -EINVAL);
    SAYS("pfn_sg_alloc_table_from_buf", "len is 0");
    CHECK_EQ(pfn_sg_alloc_table_from_buf(&t, (void *)(uintptr_t)-4096, 8192), -EINVAL);
    SAYS("pfn_sg_alloc_table_from_buf", "buf 0xfffffffffffff000 + len 0x2000 wraps");
    CHECK_EQ(pfn_sg_alloc_table_from_buf(&t, out, 1), -ENXIO);
    SAYS("pfn_sg_alloc_table_from_buf", "address", at(out), "lies in no registered range");
    CHECK_EQ(pfn_sg_alloc_table_from_buf(&t, mem + 8 * PAGE - 1, 2), -ENXIO);
    SAYS("pfn_sg_alloc_table_from_buf", "address", at(mem + 8 * PAGE), "no registered range");
    free(out);
    CHECK_EQ(pfn_device_free(dev), 0);
    munmap(mem, 8 * PAGE);
}

int main(void)
{
    layout();
    agreement();
    helpers();
    tables();
    data_errors();
    from_buffer();
    return check_report("api_sg");
}
