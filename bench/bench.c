/* libpfn benchmark: every contender on the same workload in the same run, printed as ratios.
 *
 * Workload: N ranges of 2 MiB, adjacent in physical space from 1 TiB, all registered at the
 * same 2 MiB pmem mapping (only the translation structure grows with N; the data read stays
 * the same). Each operation: draw a random pfn over all N ranges (xorshift), translate it,
 * read one word through the address, end the access. Every run's checksum of the words read is
 * compared with raw arithmetic's, so a contender that translates wrongly is caught, not timed.
 *
 * usage: bench [--quick] [--verify] [--count CONTENDER N ITERS] [--out DIR] [--pmem DIR] */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pfn.h"
#include "timing.h"
#include "floor.h"
#include "seed.h"
#ifdef HAVE_PMEMOBJ
#include <libpmemobj.h>
#endif
#ifdef HAVE_CALLGRIND
#include <valgrind/callgrind.h>
#else
#define CALLGRIND_TOGGLE_COLLECT
#endif

#define RANGE_SHIFT 21
#define RANGE_BYTES (1ull << RANGE_SHIFT)
#define PAGES_PER_RANGE (RANGE_BYTES >> 12)
#define PHYS_START (1ull << 40)
#define SECTION_BATCH 256/* translations per read section in the section contender */
#define POOLS 4          /* pmemobj pools for the round-robin (cache-miss) contender */
#define MAX_RANGES_LOG2 16

static char *buf;             /* the 2 MiB every range maps */
static pfn_pmem *buf_map;
static const char *pmem_dir = "/dev/shm";
static int quick;

/* ---------------------------------------------------------------- workload */

struct workload {
    unsigned bits; /* log2 of the number of pages over all ranges */
    uint64_t first_pfn;
};

static inline uint64_t next_page(uint64_t *x, unsigned bits)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x >> (64 - bits);
}

#define SEED 0x9E3779B97F4A7C15ull

static uint64_t pattern(uint64_t page) { return page * 0x100000001B3ull ^ 0xABCDEF; }

static void fill_pattern(char *at)
{
    for (uint64_t k = 0; k < PAGES_PER_RANGE; k++)
        *(uint64_t *)(at + (k << 12)) = pattern(k);
}

/* ---------------------------------------------------------------- contenders */

typedef uint64_t (*loop_fn)(const struct workload *w, uint64_t iters);

static uint64_t loop_raw(const struct workload *w, uint64_t iters)
{
    uint64_t x = SEED, sum = 0;
    for (uint64_t i = 0; i < iters; i++) {
        uint64_t pg = next_page(&x, w->bits);
        const uint64_t *a = (const uint64_t *)(buf + ((pg & (PAGES_PER_RANGE - 1)) << 12));
        sum += *a;
    }
    return sum;
}

static uint64_t loop_floor(const struct workload *w, uint64_t iters)
{
    uint64_t x = SEED, sum = 0;
    for (uint64_t i = 0; i < iters; i++) {
        uint64_t pg = next_page(&x, w->bits);
        pfnbench_floor_kmap((pfn_t){w->first_pfn + pg});
        const uint64_t *a = (const uint64_t *)(buf + ((pg & (PAGES_PER_RANGE - 1)) << 12));
        sum += *a;
        pfnbench_floor_kunmap((void *)a);
    }
    return sum;
}

static uint64_t loop_pfn(const struct workload *w, uint64_t iters)
{
    uint64_t x = SEED, sum = 0;
    for (uint64_t i = 0; i < iters; i++) {
        uint64_t pg = next_page(&x, w->bits);
        const uint64_t *a = kmap_atomic_pfn_t((pfn_t){w->first_pfn + pg});
        sum += *a;
        kunmap_atomic_pfn_t((void *)a);
    }
    return sum;
}

static uint64_t loop_section(const struct workload *w, uint64_t iters)
{
    uint64_t x = SEED, sum = 0;
    for (uint64_t i = 0; i < iters; i += SECTION_BATCH) {
        pfn_section s = pfn_read_lock();
        uint64_t n = iters - i < SECTION_BATCH ? iters - i : SECTION_BATCH;
        for (uint64_t j = 0; j < n; j++) {
            uint64_t pg = next_page(&x, w->bits);
            const uint64_t *a = pfn_section_translate_inline(&s, (pfn_t){w->first_pfn + pg});
            sum += *a;
        }
        pfn_read_unlock();
    }
    return sum;
}

/* Reverse translation: an address in the mapping -> its pfn_t (one exported call, a walk of the
 * reverse table inside a brief read section of its own), then the word of that frame. */
static uint64_t loop_reverse(const struct workload *w, uint64_t iters)
{
    uint64_t x = SEED, sum = 0;
    for (uint64_t i = 0; i < iters; i++) {
        uint64_t pg = next_page(&x, w->bits);
        const char *va = buf + ((pg & (PAGES_PER_RANGE - 1)) << 12) + 8;
        pfn_t p;
        if (pfn_virt_to_pfn_t(va, &p) != 0)
            abort();
        uint64_t k = (pfn_t_to_pfn(p) - w->first_pfn) & (PAGES_PER_RANGE - 1);
        sum += *(const uint64_t *)(buf + (k << 12));
    }
    return sum;
}

/* One section per operation, as a read transaction of one lookup: the cost of opening and
 * closing a thread-bound section (header-inline) ... */
static uint64_t loop_section_per_op(const struct workload *w, uint64_t iters)
{
    uint64_t x = SEED, sum = 0;
    for (uint64_t i = 0; i < iters; i++) {
        pfn_section s = pfn_read_lock_inline();
        uint64_t pg = next_page(&x, w->bits);
        const uint64_t *a = pfn_section_translate_inline(&s, (pfn_t){w->first_pfn + pg});
        sum += *a;
        pfn_read_unlock_inline();
    }
    return sum;
}

/* ... and of an object-bound one (pfn_section_open / pfn_section_close, exported calls),
 * which any thread may close. */
static uint64_t loop_object_section(const struct workload *w, uint64_t iters)
{
    uint64_t x = SEED, sum = 0;
    for (uint64_t i = 0; i < iters; i++) {
        pfn_section s;
        if (pfn_section_open(&s) != 0)
            abort();
        uint64_t pg = next_page(&x, w->bits);
        const uint64_t *a = pfn_section_translate_inline(&s, (pfn_t){w->first_pfn + pg});
        sum += *a;
        pfn_section_close(&s);
    }
    return sum;
}

static uint64_t loop_seed(const struct workload *w, uint64_t iters)
{
    uint64_t x = SEED, sum = 0;
    for (uint64_t i = 0; i < iters; i++) {
        uint64_t pg = next_page(&x, w->bits);
        const uint64_t *a = seed_kmap_atomic_pfn_t(w->first_pfn + pg);
        sum += *a;
        seed_kunmap_atomic_pfn_t((void *)a);
    }
    return sum;
}

#ifdef HAVE_PMEMOBJ
static PMEMobjpool *pools[POOLS];
static PMEMoid roots[POOLS];
static int pmemobj_ready;

static uint64_t loop_pmemobj_hit(const struct workload *w, uint64_t iters)
{
    uint64_t x = SEED, sum = 0;
    PMEMoid oid = roots[0];
    uint64_t off0 = oid.off;
    for (uint64_t i = 0; i < iters; i++) {
        uint64_t pg = next_page(&x, w->bits);
        oid.off = off0 + ((pg & (PAGES_PER_RANGE - 1)) << 12);
        sum += *(const uint64_t *)pmemobj_direct(oid);
    }
    return sum;
}

static uint64_t loop_pmemobj_miss(const struct workload *w, uint64_t iters)
{
    uint64_t x = SEED, sum = 0;
    for (uint64_t i = 0; i < iters; i++) {
        uint64_t pg = next_page(&x, w->bits);
        PMEMoid oid = roots[i % POOLS];
        oid.off += (pg & (PAGES_PER_RANGE - 1)) << 12;
        sum += *(const uint64_t *)pmemobj_direct(oid);
    }
    return sum;
}

static void pmemobj_setup(void)
{
    char path[512];
    for (int p = 0; p < POOLS; p++) {
        snprintf(path, sizeof path, "%s/libpfn-bench-pool%d-%ld", pmem_dir, p, (long)getpid());
        unlink(path);
        pools[p] = pmemobj_create(path, "bench", 16 << 20, 0600);
        unlink(path); /* the mapping stays; the file goes when the process ends */
        if (!pools[p]) {
            fprintf(stderr, "bench: pmemobj_create: %s\n", pmemobj_errormsg());
            return;
        }
        /* The root object is the 2 MiB every pmemobj access reads, with the same pattern. */
        roots[p] = pmemobj_root(pools[p], RANGE_BYTES + 4096);
        char *at = pmemobj_direct(roots[p]);
        fill_pattern(at);
    }
    pmemobj_ready = 1;
}
#endif

struct contender {
    const char *name;
    loop_fn loop;
    int available;
};

static struct contender contenders[] = {
    {"raw", loop_raw, 1},
    {"floor", loop_floor, 1},
    {"libpfn", loop_pfn, 1},
    {"libpfn_section", loop_section, 1},
    {"section_per_op", loop_section_per_op, 1},
    {"object_section", loop_object_section, 1},
    {"reverse", loop_reverse, 1},
    {"seed", loop_seed, 0},
#ifdef HAVE_PMEMOBJ
    {"pmemobj_hit", loop_pmemobj_hit, 0},
    {"pmemobj_miss", loop_pmemobj_miss, 0},
#endif
};
#define NCONT (int)(sizeof contenders / sizeof contenders[0])

static struct contender *find_contender(const char *name)
{
    for (int c = 0; c < NCONT; c++)
        if (!strcmp(contenders[c].name, name))
            return &contenders[c];
    return NULL;
}

/* ---------------------------------------------------------------- ranges */

static pfn_device *dev;
static unsigned registered_log2 = 0;
static int registered_any;

/* Registers ranges so that exactly 2^log2 are present, in libpfn and in the seed's list. */
static void set_ranges(unsigned log2)
{
    if (registered_any) {
        pfn_device_free(dev);
        seed_unregister_all();
    }
    dev = pfn_device_new("bench");
    uint64_t n = 1ull << log2;
    for (uint64_t i = 0; i < n; i++) {
        pfn_resource r = {PHYS_START + i * RANGE_BYTES, PHYS_START + (i + 1) * RANGE_BYTES - 1, NULL};
        if (devm_register_kmap_pfn_range(dev, &r, buf) != 0) {
            fprintf(stderr, "bench: register failed\n");
            exit(1);
        }
        if (seed_available()) {
            struct seed_resource *sr = malloc(sizeof *sr);
            sr->start = r.start;
            sr->end = r.end;
            seed_register_kmap_pfn_range(dev, sr, buf);
        }
    }
    registered_log2 = log2;
    registered_any = 1;
}

/* ---------------------------------------------------------------- timing */

static int checksum_failures;

/* Iterations that make one run of `c` last about `target_ms`. */
static uint64_t calibrate(const struct contender *c, const struct workload *w, double target_ms)
{
    uint64_t iters = 1000;
    double t;
    for (;;) {
        double t0 = now_ns();
        c->loop(w, iters);
        t = now_ns() - t0;
        if (t > target_ms * 1e6 / 4 || iters > (1ull << 34))
            break;
        iters *= 4;
    }
    return (uint64_t)(iters * (target_ms * 1e6 / t)) + 1;
}

/* ns per operation of every available contender at one N: the best of `reps` rounds, each
 * round running every contender once in turn, so that a noisy moment hurts one sample of
 * each rather than all samples of one. Every run's checksum must match raw's. */
static void measure_all(const struct workload *w, double target_ms, int reps, double *ns)
{
    uint64_t iters[NCONT];
    for (int c = 0; c < NCONT; c++) {
        ns[c] = contenders[c].available ? 1e30 : -1;
        if (contenders[c].available)
            iters[c] = calibrate(&contenders[c], w, target_ms);
    }
    for (int r = 0; r < reps; r++)
        for (int c = 0; c < NCONT; c++) {
            if (!contenders[c].available)
                continue;
            double t0 = now_ns();
            uint64_t sum = contenders[c].loop(w, iters[c]);
            double per = (now_ns() - t0) / iters[c];
            if (per < ns[c])
                ns[c] = per;
            if (sum != loop_raw(w, iters[c])) {
                fprintf(stderr, "bench: %s read wrong data at N=2^%u\n", contenders[c].name,
                        w->bits - 9);
                checksum_failures++;
            }
        }
}

/* ---------------------------------------------------------------- threads */

struct thread_arg {
    const struct workload *w;
    uint64_t iters;
    atomic_int *go;
    double ns;
};

static void *thread_loop(void *p)
{
    struct thread_arg *a = p;
    while (!atomic_load(a->go))
        ;
    double t0 = now_ns();
    volatile uint64_t sink = loop_pfn(a->w, a->iters);
    (void)sink;
    a->ns = now_ns() - t0;
    return NULL;
}

/* Aggregate throughput of `threads` threads running the exported pair (ops per second). */
static double throughput(const struct workload *w, int threads, uint64_t iters)
{
    pthread_t t[8];
    struct thread_arg a[8];
    atomic_int go = 0;
    for (int i = 0; i < threads; i++) {
        a[i] = (struct thread_arg){w, iters, &go, 0};
        pthread_create(&t[i], NULL, thread_loop, &a[i]);
    }
    double t0 = now_ns();
    atomic_store(&go, 1);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    double wall = now_ns() - t0;
    return threads * iters / (wall / 1e9);
}

/* ---------------------------------------------------------------- unregister under load */

static atomic_int readers_stop;
static atomic_ullong reader_ops;

static void *busy_reader(void *p)
{
    const struct workload *w = p;
    uint64_t x = SEED ^ (uint64_t)(uintptr_t)&x, ops = 0;
    while (!atomic_load_explicit(&readers_stop, memory_order_relaxed)) {
        for (int i = 0; i < 1024; i++) {
            uint64_t pg = next_page(&x, w->bits);
            volatile uint64_t *a = kmap_atomic_pfn_t((pfn_t){w->first_pfn + pg});
            (void)*a;
            kunmap_atomic_pfn_t((void *)a);
        }
        ops += 1024;
    }
    atomic_fetch_add(&reader_ops, ops);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---------------------------------------------------------------- main */

static FILE *csv(const char *dir, const char *name, const char *header)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "bench: %s: %s\n", path, strerror(errno));
        exit(1);
    }
    fprintf(f, "%s\n", header);
    return f;
}

static size_t heap_bytes(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static void setup_buffer(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/libpfn-bench-%ld.pmem", pmem_dir, (long)getpid());
    buf_map = pfn_pmem_map(path, RANGE_BYTES, PFN_PMEM_CREATE);
    unlink(path);
    if (!buf_map) {
        fprintf(stderr, "bench: cannot map %s: %s\n", path, strerror(errno));
        exit(1);
    }
    buf = pfn_pmem_addr(buf_map);
    fill_pattern(buf);
}

static int verify(void)
{
    int passed = 0, failed = 0;
    for (unsigned log2 = 0; log2 <= 6; log2 += 3) {
        set_ranges(log2);
        struct workload w = {log2 + 9, PHYS_START >> 12};
        uint64_t want = loop_raw(&w, 20000);
        for (int c = 0; c < NCONT; c++) {
            if (!contenders[c].available)
                continue;
            uint64_t got = contenders[c].loop(&w, 20000);
            if (got == want)
                passed++;
            else {
                failed++;
                fprintf(stderr, "verify: %s wrong at N=%llu\n", contenders[c].name, 1ull << log2);
            }
        }
        /* And addresses, directly, at both ends of the physical span. */
        uint64_t last = (1ull << (log2 + 9)) - 1;
        uint64_t probes[] = {0, 1, 511, 512 < last ? 512 : last, last};
        for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
            uint64_t pg = probes[i];
            char *raw = buf + ((pg & (PAGES_PER_RANGE - 1)) << 12);
            pfn_t p = pfn_to_pfn_t(w.first_pfn + pg);
            char *k = kmap_atomic_pfn_t(p);
            pfn_section s = pfn_read_lock();
            char *in = pfn_section_translate_inline(&s, p);
            pfn_read_unlock();
            int ok = k == raw && in == raw;
            kunmap_atomic_pfn_t(k);
            if (seed_available()) {
                char *sd = seed_kmap_atomic_pfn_t(w.first_pfn + pg);
                ok &= sd == raw;
                seed_kunmap_atomic_pfn_t(sd);
            }
            ok ? passed++ : failed++;
        }
    }
#ifdef HAVE_PMEMOBJ
    if (pmemobj_ready)
        for (int p = 0; p < POOLS; p++) {
            char *d = pmemobj_direct(roots[p]);
            int ok = d == (char *)pools[p] + roots[p].off && *(uint64_t *)d == pattern(0);
            ok ? passed++ : failed++;
        }
#endif
    printf("bench-verify: %d passed, %d failed\n", passed, failed);
    return failed != 0;
}

int main(int argc, char **argv)
{
    const char *out = "bench/results";
    const char *count_name = NULL;
    unsigned count_log2 = 0;
    uint64_t count_iters = 0;
    int verify_only = 0, list_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--verify"))
            verify_only = 1;
        else if (!strcmp(argv[i], "--list"))
            list_only = 1;
        else if (!strcmp(argv[i], "--out") && i + 1 < argc)
            out = argv[++i];
        else if (!strcmp(argv[i], "--pmem") && i + 1 < argc)
            pmem_dir = argv[++i];
        else if (!strcmp(argv[i], "--count") && i + 3 < argc) {
            count_name = argv[++i];
            count_log2 = (unsigned)atoi(argv[++i]);
            count_iters = strtoull(argv[++i], NULL, 10);
        } else {
            fprintf(stderr, "usage: %s [--quick] [--verify] [--list] [--out DIR] [--pmem DIR] "
                            "[--count CONTENDER LOG2_RANGES ITERS]\n", argv[0]);
            return 2;
        }
    }

    setup_buffer();
    seed_thread_online();
    find_contender("seed")->available = seed_available();
#ifdef HAVE_PMEMOBJ
    pmemobj_setup();
    find_contender("pmemobj_hit")->available = pmemobj_ready;
    find_contender("pmemobj_miss")->available = pmemobj_ready;
#endif

    if (verify_only)
        return verify();
    if (list_only) { /* the contenders this build can run */
        for (int c = 0; c < NCONT; c++)
            if (contenders[c].available)
                printf("%s\n", contenders[c].name);
        return 0;
    }

    if (count_name) { /* one contender's loop, for callgrind's instruction counts */
        struct contender *c = find_contender(count_name);
        if (!c || !c->available) {
            fprintf(stderr, "bench: no contender %s here\n", count_name);
            return 2;
        }
        set_ranges(count_log2);
        struct workload w = {count_log2 + 9, PHYS_START >> 12};
        c->loop(&w, 1000); /* warm: first-use registration is not what we count */
        CALLGRIND_TOGGLE_COLLECT;
        uint64_t sum = c->loop(&w, count_iters);
        CALLGRIND_TOGGLE_COLLECT;
        printf("%s %llu\n", c->name, (unsigned long long)sum);
        return 0;
    }

    if (!seed_available())
        printf("note: liburcu-dev is not installed: the seed contender is skipped "
               "(apt-get install liburcu-dev)\n");
#ifndef HAVE_PMEMOBJ
    printf("note: libpmemobj-dev is not installed: the pmemobj contenders are skipped "
           "(apt-get install libpmemobj-dev)\n");
#endif

    double target = quick ? 5 : 25;
    int reps = quick ? 3 : 7;
    unsigned max_log2 = quick ? 12 : MAX_RANGES_LOG2;
    unsigned logs[] = {0, 2, 4, 6, 8, 12, 16};
    FILE *tcsv = csv(out, "translate.csv", "contender,ranges,ns_per_op,vs_floor,vs_raw");

    printf("\nTranslation + one word read + end of access, ns per operation (best of %d)\n",
           reps);
    {   /* warm up for ~0.3 s: the first ~0.2 s of a run measure slower here (clocks, caches,
         * first-use registration), which would otherwise land on N = 1 */
        set_ranges(0);
        struct workload w = {9, PHYS_START >> 12};
        double t0 = now_ns();
        while (now_ns() - t0 < 3e8)
            for (int c = 0; c < NCONT; c++)
                if (contenders[c].available)
                    contenders[c].loop(&w, 100000);
    }
    printf("%8s", "ranges");
    for (int c = 0; c < NCONT; c++)
        if (contenders[c].available)
            printf(" %14s", contenders[c].name);
    printf(" | %9s %9s %9s %9s\n", "pfn/floor", "seed/pfn", "sect/raw", "obj/thr");

    double pfn_at_1 = 0, pfn_last = 0, worst_vs_floor = 0;
    for (size_t li = 0; li < sizeof logs / sizeof logs[0]; li++) {
        unsigned log2 = logs[li];
        if (log2 > max_log2)
            break;
        set_ranges(log2);
        struct workload w = {log2 + 9, PHYS_START >> 12};
        double ns[NCONT];
        measure_all(&w, target, reps, ns);
        double raw = ns[0], flo = ns[1], pfn = ns[2], sect = ns[3];
        struct contender *seed = find_contender("seed");
        double sd = seed->available ? ns[seed - contenders] : 0;
        if (log2 == 0)
            pfn_at_1 = pfn;
        pfn_last = pfn;
        if (pfn / flo > worst_vs_floor)
            worst_vs_floor = pfn / flo;
        printf("%8llu", 1ull << log2);
        for (int c = 0; c < NCONT; c++)
            if (contenders[c].available)
                printf(" %14.2f", ns[c]);
        double thr = ns[find_contender("section_per_op") - contenders];
        double obj = ns[find_contender("object_section") - contenders];
        printf(" | %9.2f %9.1f %9.2f %9.2f\n", pfn / flo, sd ? sd / pfn : 0, sect / raw, obj / thr);
        for (int c = 0; c < NCONT; c++)
            if (contenders[c].available)
                fprintf(tcsv, "%s,%llu,%.3f,%.3f,%.3f\n", contenders[c].name, 1ull << log2, ns[c],
                        ns[c] / flo, ns[c] / raw);
        fflush(stdout);
    }
    fclose(tcsv);
    printf("libpfn cost at the largest N / at 1 range: %.2f; worst libpfn/floor: %.2f\n",
           pfn_last / pfn_at_1, worst_vs_floor);

    /* ---- threads */
    {
        set_ranges(quick ? 6 : 12);
        struct workload w = {registered_log2 + 9, PHYS_START >> 12};
        /* Short runs, many of them, best of each: the two vCPUs are shared with other guests,
         * and a run during which the host takes one away says nothing about libpfn. */
        uint64_t iters = quick ? 1000000 : 5000000;
        double best1 = 0, best2 = 0;
        for (int r = 0; r < (quick ? 3 : 9); r++) {
            double t1 = throughput(&w, 1, iters), t2 = throughput(&w, 2, iters);
            if (t1 > best1)
                best1 = t1;
            if (t2 > best2)
                best2 = t2;
        }
        printf("\nThreads (exported pair, %llu ranges): 1 thread %.1f Mops/s, 2 threads %.1f "
               "Mops/s aggregate: %.2fx\n",
               1ull << registered_log2, best1 / 1e6, best2 / 1e6, best2 / best1);
        FILE *f = csv(out, "threads.csv", "threads,mops_per_s");
        fprintf(f, "1,%.2f\n2,%.2f\n", best1 / 1e6, best2 / 1e6);
        fclose(f);
    }

    /* ---- registration at scale */
    {
        pfn_device_free(dev);
        seed_unregister_all();
        registered_any = 0;
        unsigned log2 = quick ? 16 : 19; /* 2^19 ranges of 2 MiB = 1 TiB */
        uint64_t n = 1ull << log2;
        pfn_device *big = pfn_device_new("big");
        size_t heap0 = heap_bytes();
        double t0 = now_ns();
        for (uint64_t i = 0; i < n; i++) {
            pfn_resource r = {PHYS_START + i * RANGE_BYTES, PHYS_START + (i + 1) * RANGE_BYTES - 1, NULL};
            if (devm_register_kmap_pfn_range(big, &r, buf)) {
                fprintf(stderr, "bench: register %llu failed\n", (unsigned long long)i);
                return 1;
            }
        }
        double reg_s = (now_ns() - t0) / 1e9;
        size_t bytes = heap_bytes() - heap0;
        uint64_t table = pfn_table_bytes();
        double gib = (double)(n * RANGE_BYTES) / (1ull << 30);
        t0 = now_ns();
        for (uint64_t i = 0; i < n; i++)
            if (pfn_unregister_range(big, PHYS_START + i * RANGE_BYTES)) {
                fprintf(stderr, "bench: unregister failed\n");
                return 1;
            }
        double unreg_s = (now_ns() - t0) / 1e9;
        pfn_device_free(big);
        printf("\nRegistration: %llu ranges of 2 MiB (%.0f GiB): register %.3f s, unregister "
               "(one at a time, each waiting for readers) %.3f s\n",
               (unsigned long long)n, gib, reg_s, unreg_s);
        printf("Translation table for them: %.2f MiB = %.0f bytes per registered GiB = %.5f%% of "
               "the registered bytes\n",
               table / 1048576.0, table / gib, 100.0 * table / (gib * (1ull << 30)));
        printf("All library heap for them (table, range records, indexes): %.1f MiB = %.0f bytes "
               "per registered GiB = %.5f%%\n",
               bytes / 1048576.0, bytes / gib, 100.0 * bytes / (gib * (1ull << 30)));
        FILE *f = csv(out, "registration.csv",
                      "ranges,gib,register_s,unregister_s,table_bytes,heap_bytes,table_bytes_per_gib");
        fprintf(f, "%llu,%.0f,%.4f,%.4f,%llu,%zu,%.1f\n", (unsigned long long)n, gib, reg_s,
                unreg_s, (unsigned long long)table, bytes, table / gib);
        fclose(f);
    }

    /* ---- unregister latency with two busy readers */
    {
        set_ranges(6);
        struct workload w = {registered_log2 + 9, PHYS_START >> 12};
        pthread_t r[2];
        atomic_store(&readers_stop, 0);
        atomic_store(&reader_ops, 0);
        for (int i = 0; i < 2; i++)
            pthread_create(&r[i], NULL, busy_reader, &w);
        int rounds = quick ? 300 : 2000;
        double *lat = malloc(rounds * sizeof *lat);
        uint64_t spare = PHYS_START + (1ull << 40);
        char *spare_base = buf;
        usleep(10000);
        double t0 = now_ns();
        for (int i = 0; i < rounds; i++) {
            /* Unregistering is occasional work, not a third CPU hog: pace it, so that what is
             * measured is the grace period, not the time slices of three busy threads on two
             * CPUs. */
            usleep(200);
            pfn_resource sr = {spare, spare + RANGE_BYTES - 1, NULL};
            devm_register_kmap_pfn_range(dev, &sr, spare_base);
            double a = now_ns();
            pfn_unregister_range(dev, spare);
            lat[i] = (now_ns() - a) / 1e3;
        }
        double wall = (now_ns() - t0) / 1e9;
        atomic_store(&readers_stop, 1);
        for (int i = 0; i < 2; i++)
            pthread_join(r[i], NULL);
        qsort(lat, rounds, sizeof *lat, cmp_double);
        double p50 = lat[rounds / 2], p99 = lat[rounds * 99 / 100], max = lat[rounds - 1];
        printf("\nUnregister latency with 2 busy readers (%d rounds, readers did %.1f M "
               "kmap/kunmap in %.2f s): p50 %.1f us, p99 %.1f us, max %.1f us\n",
               rounds, atomic_load(&reader_ops) / 1e6, wall, p50, p99, max);
        FILE *f = csv(out, "unregister_latency.csv", "rounds,p50_us,p99_us,max_us");
        fprintf(f, "%d,%.2f,%.2f,%.2f\n", rounds, p50, p99, max);
        fclose(f);
        free(lat);
    }

    pfn_device_free(dev);
    seed_unregister_all();
    seed_thread_offline();
    pfn_pmem_unmap(buf_map);
    if (checksum_failures) {
        fprintf(stderr, "bench: %d runs read wrong data\n", checksum_failures);
        return 1;
    }
    return 0;
}
