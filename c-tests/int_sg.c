/* Scatterlists over many ranges of one pmem file, checked byte for byte against a model:
 * random chained lists (random array sizes, entries crossing frames and ranges, offsets past
 * their frame, empty entries, entries that overlap) over ranges that continue each other
 * physically and virtually (one run), ranges that are physically adjacent but not virtually,
 * and scattered ranges; copies both ways with random skips and lengths, zeroing, durable
 * writes, the mapping iterator (whole and partly consumed chunks, reading and writing), and
 * iovecs (fed to writev/preadv). A frame in no range fails the call, and a failed write
 * changes nothing. Then the rule for extents across ranges: one chunk spans a run; an
 * unregister of the run's second range waits for the holder of that chunk.
 *
 * Run again with every mapping in flush mode (make test: c/flush/int_sg). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/uio.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"
#include "threads.h"

#define PAGE 4096ull
#define FILE_PAGES 64
#define FILE_BYTES (FILE_PAGES * PAGE)
#define PA (0x10ull << 36) /* a run: six ranges back to back in both spaces, file pages 0..15 */
#define PB (0x20ull << 36) /* four ranges back to back physically, not in memory: 16..31 */
#define PC (0x30ull << 36) /* eight scattered ranges of two pages: 32..47 */
#define PD (0x40ull << 36) /* never registered */
#define GIB (1ull << 30)

static char *base;        /* the mapping */
static unsigned char model[FILE_BYTES];
static pfn_device *dev;
static const int a_pages[6] = {3, 1, 4, 2, 5, 1};
static const int b_perm[4] = {2, 0, 3, 1};

static uint64_t rng = 0x1234567;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* ---- the model: physical byte -> file offset (-1: in no range) ------------------------- */

struct region {
    uint64_t phys, bytes;
};
static const struct region regions[] = {
    {PA, 16 * PAGE}, {PB, 16 * PAGE},
    {PC + 0 * GIB, 2 * PAGE}, {PC + 1 * GIB, 2 * PAGE}, {PC + 2 * GIB, 2 * PAGE}, {PC + 3 * GIB, 2 * PAGE},
    {PC + 4 * GIB, 2 * PAGE}, {PC + 5 * GIB, 2 * PAGE}, {PC + 6 * GIB, 2 * PAGE}, {PC + 7 * GIB, 2 * PAGE},
};
#define NREGIONS (sizeof regions / sizeof regions[0])

static int64_t file_offset(uint64_t phys)
{
    if (phys >= PA && phys < PA + 16 * PAGE)
        return (int64_t)(phys - PA);
    if (phys >= PB && phys < PB + 16 * PAGE) {
        uint64_t idx = (phys - PB) / PAGE;
        return (int64_t)((16 + 4 * (uint64_t)b_perm[idx / 4] + idx % 4) * PAGE + phys % PAGE);
    }
    for (int i = 0; i < 8; i++)
        if (phys >= PC + i * GIB && phys < PC + i * GIB + 2 * PAGE)
            return (int64_t)((32 + 2 * (uint64_t)i) * PAGE + (phys - PC - i * GIB));
    return -1;
}

static void register_all(void)
{
    uint64_t phys = PA;
    int fp = 0;
    for (int i = 0; i < 6; i++) {
        pfn_resource r = {phys, phys + a_pages[i] * PAGE - 1, NULL};
        REQUIRE(devm_register_kmap_pfn_range(dev, &r, base + fp * PAGE) == 0);
        phys += a_pages[i] * PAGE;
        fp += a_pages[i];
    }
    for (int k = 0; k < 4; k++) {
        pfn_resource r = {PB + 4 * k * PAGE, PB + (4 * k + 4) * PAGE - 1, NULL};
        REQUIRE(devm_register_kmap_pfn_range(dev, &r, base + (16 + 4 * b_perm[k]) * PAGE) == 0);
    }
    for (int i = 0; i < 8; i++) {
        pfn_resource r = {PC + i * GIB, PC + i * GIB + 2 * PAGE - 1, NULL};
        REQUIRE(devm_register_kmap_pfn_range(dev, &r, base + (32 + 2 * i) * PAGE) == 0);
    }
}

/* ---- random lists ----------------------------------------------------------------------- */

#define MAXE 48     /* entries of a random list */
#define LONG 700    /* entries of a long list (more pieces than a write keeps: it walks twice) */
#define POOL 256
struct spec {
    uint64_t phys; /* first byte */
    uint32_t len;
    int bad;       /* in no range */
};
struct list {
    struct pfn_sg pool[POOL]; /* arrays carved from here */
    struct pfn_sg *sgl;
    int n;
    struct spec e[LONG];
    uint64_t total;
};

static void random_list(struct list *l, int allow_bad)
{
    l->n = 1 + (int)(rnd() % MAXE);
    l->total = 0;
    for (int i = 0; i < l->n; i++) {
        struct spec *s = &l->e[i];
        if (allow_bad && rnd() % 40 == 0) {
            s->phys = PD + rnd() % (8 * PAGE);
            s->len = 1 + (uint32_t)(rnd() % 5000);
            s->bad = 1;
        } else {
            const struct region *r = &regions[rnd() % NREGIONS];
            uint64_t off = rnd() % r->bytes;
            uint64_t room = r->bytes - off, max = 3 * PAGE + 100;
            s->phys = r->phys + off;
            s->len = rnd() % 10 == 0 ? 0 : (uint32_t)(rnd() % ((room < max ? room : max) + 1));
            s->bad = 0;
        }
        l->total += s->len;
    }
    /* Arrays of 2..9 entries (the last of each but the last a link). */
    int used = 0, i = 0;
    struct pfn_sg *prev = NULL;
    int prev_n = 0;
    while (i < l->n) {
        int left = l->n - i, cap = 2 + (int)(rnd() % 8);
        int data = left <= cap ? left : cap - 1;
        int n = left <= cap ? left + (int)(rnd() % 2) : cap; /* sometimes an unused spare */
        struct pfn_sg *arr = &l->pool[used + (int)(rnd() % 3)]; /* gaps between arrays */
        used += n + 3;
        REQUIRE(used <= POOL);
        pfn_sg_init_table(arr, (unsigned)n);
        for (int k = 0; k < data; k++, i++) {
            /* The pfn up to two frames before the first byte: offsets pass their frame. */
            uint64_t back = (rnd() % 3) * PAGE;
            if (back > l->e[i].phys)
                back = 0;
            uint64_t start = l->e[i].phys - back;
            uint64_t flags = rnd() % 2 ? PFN_DEV : 0;
            REQUIRE(pfn_sg_set_pfn(&arr[k], phys_to_pfn_t(start, flags), l->e[i].len,
                                   (uint32_t)(back + start % PAGE)) == 0);
        }
        if (i == l->n && data < n)
            pfn_sg_mark_end(&arr[data - 1]);
        if (prev)
            REQUIRE(pfn_sg_chain(prev, (unsigned)prev_n, arr) == 0);
        else
            l->sgl = arr;
        prev = arr;
        prev_n = n;
    }
}

/* The list's bytes in order, as file offsets (-1: in no range), and their entries: computed
 * once a list. */
#define STREAM (MAXE * (3 * PAGE + 200))
static int64_t stream_off[STREAM];
static int stream_entry[STREAM];

static void model_stream(const struct list *l)
{
    uint64_t pos = 0;
    for (int i = 0; i < l->n; i++)
        for (uint32_t k = 0; k < l->e[i].len; k++, pos++) {
            stream_off[pos] = l->e[i].bad ? -1 : file_offset(l->e[i].phys + k);
            stream_entry[pos] = i;
        }
}

static int64_t stream_at(const struct list *l, uint64_t pos, int *entry)
{
    (void)l;
    *entry = stream_entry[pos];
    return stream_off[pos];
}

/* A list of LONG short entries in a table (its own arrays and links), one of them in no
 * range when `bad` (near the end, past the pieces a write keeps from its check). */
static void long_list(struct list *l, pfn_sg_table *t, int bad)
{
    REQUIRE(pfn_sg_alloc_table(t, LONG) == 0);
    l->n = LONG;
    l->total = 0;
    l->sgl = t->sgl;
    struct pfn_sg *sg;
    unsigned i;
    pfn_for_each_sg(t->sgl, sg, (unsigned)LONG, i) {
        struct spec *s = &l->e[i];
        const struct region *r = &regions[rnd() % NREGIONS];
        s->phys = bad && i == LONG - 20 ? PD : r->phys + rnd() % (r->bytes - 600);
        s->len = 1 + (uint32_t)(rnd() % 600);
        s->bad = bad && i == LONG - 20;
        l->total += s->len;
        REQUIRE(pfn_sg_set_pfn(sg, phys_to_pfn_t(s->phys, 0), s->len, (uint32_t)(s->phys % PAGE)) == 0);
    }
}

/* Whether the bytes skip .. skip + n touch an entry in no range. */
static int touches_bad(const struct list *l, uint64_t skip, uint64_t n)
{
    uint64_t pos = 0;
    for (int i = 0; i < l->n; i++) {
        uint64_t a = pos, b = pos + l->e[i].len;
        if (l->e[i].bad && a < skip + n && skip < b)
            return 1;
        pos = b;
    }
    return 0;
}

/* Virtually contiguous pieces of the stream: split at entries and where memory jumps. With
 * `merge`, entries that continue each other in memory join (iovecs). */
static int pieces(const struct list *l, uint64_t skip, uint64_t n, int merge)
{
    int count = 0, prev_entry = -1;
    int64_t prev = -2;
    for (uint64_t p = skip; p < skip + n; p++) {
        int entry;
        int64_t at = stream_at(l, p, &entry);
        if (at != prev + 1 || (!merge && entry != prev_entry))
            count++;
        prev = at;
        prev_entry = entry;
    }
    return count;
}

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

static int image_matches(void)
{
    return memcmp(base, model, FILE_BYTES) == 0;
}

/* ---- the randomized checks ------------------------------------------------------------- */

static unsigned char buf[STREAM], data[STREAM];

static void check_copies(struct list *l, int *bad_seen)
{
    uint64_t skip = rnd() % (l->total + 10), want = rnd() % (l->total + 10);
    uint64_t n = l->total > skip ? min_u64(want, l->total - skip) : 0;
    int fails = touches_bad(l, skip, n);
    *bad_seen += fails;

    /* Out of the list. */
    memset(buf, 0xEE, sizeof buf);
    ptrdiff_t got = pfn_sg_pcopy_to_buffer(l->sgl, (unsigned)l->n, buf, want, skip);
    if (fails) {
        CHECK_EQ(got, -ENXIO);
    } else {
        CHECK_EQ(got, n);
        int ok = 1;
        for (uint64_t p = 0; p < n && ok; p++) {
            int e;
            ok = buf[p] == model[stream_at(l, skip + p, &e)];
        }
        CHECK(ok);
        CHECK_EQ(buf[n], 0xEE); /* nothing past it */
    }

    /* Into the list (sometimes durable): in list order, later entries win where they
     * overlap. A failed one changes nothing. */
    for (uint64_t p = 0; p < want; p++)
        data[p] = (unsigned char)rnd();
    unsigned flags = rnd() % 2 ? PFN_SG_PERSIST : 0;
    if (rnd() % 4 == 0)
        got = pfn_sg_zero_buffer(l->sgl, (unsigned)l->n, want, skip, flags), memset(data, 0, want);
    else
        got = pfn_sg_pcopy_from_buffer(l->sgl, (unsigned)l->n, data, want, skip, flags);
    if (fails) {
        CHECK_EQ(got, -ENXIO);
    } else {
        CHECK_EQ(got, n);
        for (uint64_t p = 0; p < n; p++) {
            int e;
            model[stream_at(l, skip + p, &e)] = data[p];
        }
    }
    CHECK(image_matches());
}

static void check_miter(struct list *l)
{
    int fails = touches_bad(l, 0, l->total), writing = rnd() % 2, partly = rnd() % 2;
    unsigned flags = writing ? PFN_SG_MITER_TO_SG | (rnd() % 2 ? PFN_SG_PERSIST : 0) : PFN_SG_MITER_FROM_SG;
    pfn_sg_miter m;
    REQUIRE(pfn_sg_miter_start(&m, l->sgl, (unsigned)l->n, flags) == 0);
    uint64_t pos = 0;
    int chunks = 0, rc, ok = 1;
    while ((rc = pfn_sg_miter_next(&m)) == 1) {
        chunks++;
        size_t use = partly ? (size_t)(rnd() % (m.length + 1)) : m.length;
        for (size_t k = 0; k < use && ok; k++) {
            int e;
            int64_t at = stream_at(l, pos + k, &e);
            ok = at >= 0 && (char *)m.addr + k == base + at; /* the chunk is the model's bytes */
            if (ok && writing)
                ((unsigned char *)m.addr)[k] = model[at] = (unsigned char)rnd();
        }
        m.consumed = use;
        pos += use;
    }
    CHECK(ok);
    CHECK_EQ(pfn_sg_miter_stop(&m), 0);
    if (fails) {
        CHECK_EQ(rc, -ENXIO);
    } else {
        CHECK_EQ(rc, 0);
        CHECK_EQ(pos, l->total);
        /* Whole chunks: one per virtually contiguous piece of an entry, not one per frame
         * or range. */
        if (!partly)
            CHECK_EQ(chunks, pieces(l, 0, l->total, 0));
    }
    CHECK(image_matches());
}

static void check_iovecs(struct list *l, int fd)
{
    uint64_t skip = rnd() % (l->total + 10);
    int fails = touches_bad(l, skip, l->total > skip ? l->total - skip : 0);
    static struct iovec iov[2 * LONG];
    uint64_t bytes;
    PFN_SECTION_SCOPE(s);
    int n = pfn_sg_to_iovec(&s, l->sgl, (unsigned)l->n, skip, UINT64_MAX, iov, 2 * LONG, &bytes);
    if (fails) {
        CHECK_EQ(n, -ENXIO);
        return;
    }
    uint64_t want = l->total > skip ? l->total - skip : 0;
    CHECK_EQ(bytes, want);
    CHECK_EQ(n, pieces(l, skip, want, 1)); /* maximal merging */
    uint64_t pos = skip;
    int ok = 1;
    for (int i = 0; i < n && ok; i++) {
        ok = iov[i].iov_len > 0 && (i == 0 || (char *)iov[i - 1].iov_base + iov[i - 1].iov_len != iov[i].iov_base);
        for (size_t k = 0; k < iov[i].iov_len && ok; k++) {
            int e;
            ok = (char *)iov[i].iov_base + k == base + stream_at(l, pos + k, &e);
        }
        pos += iov[i].iov_len;
    }
    CHECK(ok);
    /* Few iovecs at a time, continuing with skip + bytes: the same bytes. */
    uint64_t at = skip, total = 0;
    int calls = 0, rc;
    struct iovec small[3];
    while ((rc = pfn_sg_to_iovec(&s, l->sgl, (unsigned)l->n, at, UINT64_MAX, small, 1 + (int)(rnd() % 3), &bytes)) > 0) {
        at += bytes;
        total += bytes;
        calls++;
        REQUIRE(calls < 10000);
    }
    CHECK_EQ(rc, 0);
    CHECK_EQ(total, want);
    /* The iovecs feed writev and preadv directly. */
    if (n > 0 && n <= IOV_MAX) {
        REQUIRE(ftruncate(fd, 0) == 0);
        CHECK_EQ(pwritev(fd, iov, n, 0), (ssize_t)want);
        unsigned char *back = buf;
        CHECK_EQ(pread(fd, back, want, 0), (ssize_t)want);
        int same = 1;
        for (uint64_t p = 0; p < want && same; p++) {
            int e;
            same = back[p] == model[stream_at(l, skip + p, &e)];
        }
        CHECK(same);
        /* And back in: new bytes read straight into the list's memory. */
        for (uint64_t p = 0; p < want; p++)
            data[p] = (unsigned char)rnd();
        REQUIRE(pwrite(fd, data, want, 0) == (ssize_t)want);
        CHECK_EQ(preadv(fd, iov, n, 0), (ssize_t)want);
        for (uint64_t p = 0; p < want; p++) {
            int e;
            model[stream_at(l, skip + p, &e)] = data[p];
        }
        CHECK(image_matches());
    }
}

static void long_lists(int fd)
{
    static struct list l;
    for (int bad = 0; bad < 2; bad++) {
        pfn_sg_table t;
        long_list(&l, &t, bad);
        model_stream(&l);
        CHECK_EQ(pfn_sg_nents(l.sgl), LONG);
        int dummy = 0;
        for (int k = 0; k < 20; k++) {
            check_copies(&l, &dummy);
            check_miter(&l);
            check_iovecs(&l, fd);
        }
        /* The whole list, written: past REPLAY pieces the write walks the list again. */
        for (uint64_t p = 0; p < l.total; p++)
            data[p] = (unsigned char)rnd();
        ptrdiff_t got = pfn_sg_copy_from_buffer(l.sgl, LONG, data, l.total);
        if (bad) {
            CHECK_EQ(got, -ENXIO); /* found by the check: nothing written */
        } else {
            CHECK_EQ(got, l.total);
            for (uint64_t p = 0; p < l.total; p++) {
                int e;
                model[stream_at(&l, p, &e)] = data[p];
            }
        }
        CHECK(image_matches());
        pfn_sg_free_table(&t);
    }
}

/* ---- hostile use: an iterator driven from the wrong thread, a buffer inside the list -------- */

struct miter_arg {
    pfn_sg_miter *m;
    int next_rc, stop_rc;
    char next_msg[256], stop_msg[256]; /* their pfn_errormsg() */
};

static void *foreign_next(void *arg)
{
    struct miter_arg *a = (struct miter_arg *)arg;
    a->next_rc = pfn_sg_miter_next(a->m);
    snprintf(a->next_msg, sizeof a->next_msg, "%s", pfn_errormsg());
    a->stop_rc = pfn_sg_miter_stop(a->m);
    snprintf(a->stop_msg, sizeof a->stop_msg, "%s", pfn_errormsg());
    return NULL;
}

static void hostile(void)
{
    /* Another thread cannot end this thread's chunk (it is this thread's kmap): -EINVAL, and
     * the chunk stays mapped and usable here until this thread moves on. */
    struct pfn_sg sg[2];
    pfn_sg_init_table(sg, 2);
    REQUIRE(pfn_sg_set_pfn(&sg[0], phys_to_pfn_t(PB, 0), 100, 0) == 0);
    REQUIRE(pfn_sg_set_pfn(&sg[1], phys_to_pfn_t(PC, 0), 100, 0) == 0);
    pfn_sg_miter m;
    REQUIRE(pfn_sg_miter_start(&m, sg, 2, PFN_SG_MITER_FROM_SG) == 0);
    CHECK_EQ(pfn_sg_miter_next(&m), 1);
    struct miter_arg a = {&m, 0, 0, "", ""};
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, foreign_next, &a) == 0);
    pthread_join(t, NULL);
    CHECK_EQ(a.next_rc, -EINVAL);
    CHECK_EQ(a.stop_rc, -EINVAL);
    CHECK(strncmp(a.next_msg, "pfn_sg_miter_next: ", 19) == 0 &&
          strstr(a.next_msg, "holds no kmap of the iterator's chunk") != NULL);
    CHECK(strncmp(a.stop_msg, "pfn_sg_miter_stop: ", 19) == 0 &&
          strstr(a.stop_msg, "holds no kmap of the iterator's chunk") != NULL);
    CHECK(m.addr == base + (16 + 4 * b_perm[0]) * PAGE && m.length == 100);
    CHECK_EQ(pfn_sg_miter_next(&m), 1);
    CHECK(m.addr == base + 32 * PAGE);
    CHECK_EQ(pfn_sg_miter_stop(&m), 0);

    /* A buffer inside the list's own bytes: each piece is copied as memmove would. */
    pfn_sg_init_table(sg, 1);
    REQUIRE(pfn_sg_set_pfn(&sg[0], phys_to_pfn_t(PA, 0), 3000, 1000) == 0);
    unsigned char want[3000];
    memcpy(want, model + 1000, sizeof want);
    CHECK_EQ(pfn_sg_copy_to_buffer(sg, 1, base + 1500, sizeof want), sizeof want);
    memcpy(model + 1500, want, sizeof want);
    CHECK(image_matches());
    memcpy(want, model + 700, sizeof want);
    CHECK_EQ(pfn_sg_copy_from_buffer(sg, 1, base + 700, sizeof want), sizeof want);
    memcpy(model + 1000, want, sizeof want);
    CHECK(image_matches());
}

/* ---- extents across ranges: one chunk, and an unregister that waits for it ---------------- */

struct unreg {
    uint64_t start;
    int rc;
    int tid;
    atomic_int done;
};

static void *unregister_thread(void *arg)
{
    struct unreg *u = (struct unreg *)arg;
    __atomic_store_n(&u->tid, self_tid(), __ATOMIC_SEQ_CST);
    u->rc = pfn_unregister_range(dev, u->start);
    atomic_store(&u->done, 1);
    return NULL;
}

static void across_ranges(void)
{
    /* One entry over the run's first three ranges (3 + 1 + 4 pages), from inside the first. */
    struct pfn_sg sg[1];
    pfn_sg_init_table(sg, 1);
    REQUIRE(pfn_sg_set_pfn(&sg[0], phys_to_pfn_t(PA, PFN_DEV), (uint32_t)(7 * PAGE), 100) == 0);
    pfn_sg_miter m;
    REQUIRE(pfn_sg_miter_start(&m, sg, 1, PFN_SG_MITER_FROM_SG) == 0);
    CHECK_EQ(pfn_sg_miter_next(&m), 1);
    CHECK(m.addr == base + 100 && m.length == 7 * PAGE); /* one translation for three ranges */
    /* Another thread unregisters the second range (the 1-page one at PA + 3 pages): it waits
     * until this thread moves off the chunk (grace periods are global: it waits for every
     * reader, so also for one whose chunk only reaches into that range). */
    struct unreg u;
    memset(&u, 0, sizeof u);
    u.tid = 0;
    u.start = PA + 3 * PAGE;
    atomic_store(&u.done, 0);
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, unregister_thread, &u) == 0);
    while (__atomic_load_n(&u.tid, __ATOMIC_SEQ_CST) == 0 && !atomic_load(&u.done))
        sched_yield();
    CHECK(wait_blocked_or_done(u.tid, &u.done) == 1);
    CHECK(!atomic_load(&u.done));
    /* Still valid, all of it, also the part in the range being removed. */
    CHECK(memcmp(m.addr, model + 100, m.length) == 0);
    CHECK_EQ(pfn_sg_miter_next(&m), 0);
    pthread_join(t, NULL);
    CHECK(atomic_load(&u.done));
    CHECK_EQ(u.rc, 0);
    CHECK_EQ(pfn_sg_miter_stop(&m), 0);
    /* Without it, the run ends at the first range and the list cannot be copied. */
    CHECK_EQ(pfn_sg_copy_to_buffer(sg, 1, buf, 7 * PAGE), -ENXIO);
    REQUIRE(pfn_sg_miter_start(&m, sg, 1, PFN_SG_MITER_FROM_SG) == 0);
    CHECK_EQ(pfn_sg_miter_next(&m), 1);
    CHECK(m.addr == base + 100 && m.length == 3 * PAGE - 100);
    CHECK_EQ(pfn_sg_miter_next(&m), -ENXIO);
    CHECK_EQ(pfn_sg_miter_stop(&m), 0);
    /* Registered again back to back: one run, one chunk again. */
    pfn_resource r = {PA + 3 * PAGE, PA + 4 * PAGE - 1, NULL};
    REQUIRE(devm_register_kmap_pfn_range(dev, &r, base + 3 * PAGE) == 0);
    REQUIRE(pfn_sg_miter_start(&m, sg, 1, PFN_SG_MITER_FROM_SG) == 0);
    CHECK_EQ(pfn_sg_miter_next(&m), 1);
    CHECK_EQ(m.length, 7 * PAGE);
    CHECK_EQ(pfn_sg_miter_stop(&m), 0);
    /* The same bytes physically adjacent but not in memory (the B ranges): one chunk per
     * range, and a table built from the buffer of a run is one entry. */
    pfn_sg_set_pfn(&sg[0], phys_to_pfn_t(PB, 0), (uint32_t)(8 * PAGE), 0);
    REQUIRE(pfn_sg_miter_start(&m, sg, 1, PFN_SG_MITER_FROM_SG) == 0);
    int chunks = 0;
    while (pfn_sg_miter_next(&m) == 1) {
        CHECK_EQ(m.length, 4 * PAGE);
        chunks++;
    }
    CHECK_EQ(chunks, 2);
    CHECK_EQ(pfn_sg_miter_stop(&m), 0);
    pfn_sg_table tab;
    REQUIRE(pfn_sg_alloc_table_from_buf(&tab, base + 5, 16 * PAGE - 10) == 0);
    CHECK_EQ(tab.nents, 1);
    CHECK_EQ(pfn_sg_copy_to_buffer(tab.sgl, tab.nents, buf, sizeof buf), 16 * PAGE - 10);
    CHECK(memcmp(buf, model + 5, 16 * PAGE - 10) == 0);
    pfn_sg_free_table(&tab);
    REQUIRE(pfn_sg_alloc_table_from_buf(&tab, base + 16 * PAGE, 16 * PAGE) == 0);
    CHECK_EQ(tab.nents, 4); /* the B ranges: physically out of order in memory */
    CHECK_EQ(pfn_sg_copy_to_buffer(tab.sgl, tab.nents, buf, sizeof buf), 16 * PAGE);
    CHECK(memcmp(buf, model + 16 * PAGE, 16 * PAGE) == 0);
    pfn_sg_free_table(&tab);
}

int main(void)
{
    int quick = getenv("PFN_TEST_QUICK") != NULL;
    check_watchdog("int_sg", 300);
    char path[256], iopath[256];
    test_path(path, sizeof path, "int_sg");
    test_path(iopath, sizeof iopath, "int_sg_io");
    unlink(path);
    pfn_pmem *pm = pfn_pmem_map(path, FILE_BYTES, PFN_PMEM_CREATE);
    REQUIRE(pm != NULL);
    base = (char *)pfn_pmem_addr(pm);
    for (uint64_t i = 0; i < FILE_BYTES; i++)
        base[i] = (char)(model[i] = (unsigned char)rnd());
    dev = pfn_device_new("int_sg");
    REQUIRE(dev != NULL);
    register_all();
    int fd = open(iopath, O_RDWR | O_CREAT | O_TRUNC, 0600);
    REQUIRE(fd >= 0);

    static struct list l;
    int rounds = quick ? 100 : 1500, bad_seen = 0;
    for (int r = 0; r < rounds; r++) {
        random_list(&l, 1);
        model_stream(&l);
        int nents = pfn_sg_nents(l.sgl);
        CHECK_EQ(nents, l.n);
        check_copies(&l, &bad_seen);
        check_miter(&l);
        check_iovecs(&l, fd);
    }
    CHECK(bad_seen > 0); /* the failing cases were met */

    long_lists(fd);
    hostile();
    across_ranges();
    CHECK(image_matches());
    close(fd);
    unlink(iopath);
    CHECK_EQ(pfn_device_free(dev), 0);
    CHECK_EQ(pfn_pmem_unmap(pm), 0);
    unlink(path);
    return check_report("int_sg");
}
