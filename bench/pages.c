/* Page descriptors and pins, against their baselines in the same run.
 *
 * Descriptor lookup: pfn_t_to_page (exported) over 4096 random frames of 16 ranges of 1 MiB
 * (each with a DRAM memmap, at scattered physical addresses), against the ABI floor (an
 * exported function in its own shared library that does nothing: the cost of any call into a
 * .so, bench/floor.c) and raw arithmetic (the descriptor computed from a known memmap base,
 * as the kernel's vmemmap + pfn: a lower bound no lookup reaches); and the header's
 * pfn_t_to_page_inline (a read section per lookup unless the thread holds one) and
 * pfn_section_to_page_inline (lookups in one open section) against raw arithmetic. Goals:
 * exported <= 1.3x the floor, inline <= 2x raw. pfn_t_to_page is measured twice: with nothing
 * held (it then opens a read section per lookup) and with a kmap held by the thread, as the
 * descriptor's lifetime rule has callers do (it then needs none).
 *
 * Pins: pfn_pin + pfn_unpin of a frame, against kmap_atomic_pfn_t + kunmap_atomic_pfn_t of the
 * same frames, on 1 thread and on 2 threads at once, both pinning frames of the same range.
 * Goals: pin+unpin <= 2x kmap+kunmap; 2 threads >= 1.8x the throughput of 1. The 2-thread
 * figures need both CPUs free: with another process busy they fall to about 1.0x for kmap (the
 * control) and pin alike.
 *
 * Each figure is the median of the rounds, in ns per operation (per pair for kmap and pin;
 * per thread for the 2-thread runs).
 *
 * usage: pages [--quick] [--verify] [--out DIR] */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "floor.h"
#include "pfn.h"
#include "timing.h"

#define PAGE 4096ull
#define MIB (1ull << 20)
#define RANGES 16
#define FRAMES 4096

static char *base;
static uint64_t range_phys[RANGES];
static pfn_t frames[FRAMES];
/* Raw arithmetic's inputs: each frame's range index and page within it. */
static struct pfn_page *memmap_of[RANGES];
static uint32_t frame_range[FRAMES], frame_page[FRAMES];
static volatile uintptr_t sink;
static long iters;
static int rounds;

static uint64_t rng = 0x9A6E5;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

enum op { RAW, FLOOR, TO_PAGE, TO_PAGE_HELD, TO_PAGE_INLINE, SECTION_INLINE, KMAP, PIN, OPS };
static const char *op_name[OPS] = {"raw arithmetic", "ABI floor", "pfn_t_to_page",
                                   "pfn_t_to_page, kmap held", "pfn_t_to_page_inline",
                                   "pfn_section_to_page_inline", "kmap+kunmap", "pin+unpin"};

/* `iters` operations of kind `op` over the frames from `first`; ns per operation. Pins and
 * kmaps use the frames of range 0 only (`same_range`), so that two threads share one. */
static double run(enum op op, int same_range)
{
    uintptr_t acc = 0;
    /* The section-bound lookup runs in one read section for the whole loop. */
    pfn_section sec;
    memset(&sec, 0, sizeof sec);
    void *held = NULL;
    if (op == TO_PAGE_HELD)
        held = kmap_atomic_pfn_t(frames[0]); /* the caller holds a range, as the rule asks */
    else if (op == SECTION_INLINE)
        sec = pfn_read_lock();
    double t0 = now_ns();
    for (long i = 0; i < iters; i++) {
        unsigned k = (unsigned)i & (FRAMES - 1);
        pfn_t f = same_range ? phys_to_pfn_t(range_phys[0] + (k & 255) * PAGE, PFN_DEV | PFN_MAP)
                             : frames[k];
        switch (op) {
        case RAW:
            acc += (uintptr_t)(memmap_of[frame_range[k]] + frame_page[k]);
            break;
        case FLOOR:
            acc += (uintptr_t)pfnbench_floor_kmap(f);
            break;
        case TO_PAGE:
        case TO_PAGE_HELD:
            acc += (uintptr_t)pfn_t_to_page(f);
            break;
        case TO_PAGE_INLINE:
            acc += (uintptr_t)pfn_t_to_page_inline(f);
            break;
        case SECTION_INLINE:
            acc += (uintptr_t)pfn_section_to_page_inline(&sec, f);
            break;
        case KMAP: {
            void *a = kmap_atomic_pfn_t(f);
            acc += (uintptr_t)a;
            kunmap_atomic_pfn_t(a);
            break;
        }
        case PIN: {
            pfn_dev_pagemap *p = pfn_pin(f);
            acc += (uintptr_t)p;
            pfn_unpin(p);
            break;
        }
        default:
            break;
        }
    }
    double t = now_ns() - t0;
    if (held)
        kunmap_atomic_pfn_t(held);
    else if (op == SECTION_INLINE)
        pfn_read_unlock();
    sink += acc;
    return t / (double)iters;
}

struct job {
    enum op op;
    pthread_barrier_t *start;
    double ns;
};

static void *thread_main(void *arg)
{
    struct job *j = arg;
    pfn_thread_init();
    run(j->op, 1); /* warm: the thread's first pin sets up its counters */
    pthread_barrier_wait(j->start);
    j->ns = run(j->op, 1);
    return NULL;
}

/* ns per operation per thread with `n` threads running `op` at once. */
static double run_threads(enum op op, int n)
{
    pthread_barrier_t b;
    pthread_barrier_init(&b, NULL, (unsigned)n);
    pthread_t t[2];
    struct job j[2];
    for (int i = 0; i < n; i++) {
        j[i] = (struct job){op, &b, 0};
        pthread_create(&t[i], NULL, thread_main, &j[i]);
    }
    double worst = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        if (j[i].ns > worst)
            worst = j[i].ns;
    }
    pthread_barrier_destroy(&b);
    return worst;
}

static int verify(void)
{
    int failed = 0, passed = 0;
    pfn_section sec = pfn_read_lock();
    for (int k = 0; k < FRAMES; k++) {
        struct pfn_page *p = pfn_t_to_page(frames[k]);
        if (p == memmap_of[frame_range[k]] + frame_page[k] && pfn_page_to_pfn_t(p).val == frames[k].val &&
            pfn_t_to_page_inline(frames[k]) == p && pfn_section_to_page_inline(&sec, frames[k]) == p)
            passed++;
        else
            failed++;
    }
    pfn_read_unlock();
    for (int k = 0; k < FRAMES; k++) {
        pfn_dev_pagemap *pin = pfn_pin(frames[k]);
        if (pin && pfn_unpin(pin) == 0)
            passed++;
        else
            failed++;
    }
    iters = 1 << 12;
    for (int op = 0; op < OPS; op++)
        if (run((enum op)op, op >= KMAP) > 0)
            passed++;
    if (run_threads(PIN, 2) > 0 && run_threads(KMAP, 2) > 0)
        passed++;
    printf("pages-verify: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

int main(int argc, char **argv)
{
    int quick = 0, verify_only = 0;
    const char *out_dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--verify"))
            verify_only = 1;
        else if (!strcmp(argv[i], "--out") && i + 1 < argc)
            out_dir = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--quick] [--verify] [--out DIR]\n", argv[0]);
            return 2;
        }
    }
    base = mmap(NULL, RANGES * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    pfn_device *dev = pfn_device_new("bench-pages");
    for (int r = 0; r < RANGES; r++) {
        range_phys[r] = (3ull << 40) + (uint64_t)r * 37 * MIB;
        pfn_resource res = {range_phys[r], range_phys[r] + MIB - 1, NULL};
        if (!dev || pfn_register_range_memmap(dev, &res, base + r * MIB, PFN_MEMMAP_DRAM) != 0) {
            fprintf(stderr, "pages: registration failed: %s\n", pfn_errormsg());
            return 1;
        }
        memmap_of[r] = pfn_t_to_page(phys_to_pfn_t(range_phys[r], PFN_DEV | PFN_MAP));
    }
    for (int k = 0; k < FRAMES; k++) {
        frame_range[k] = (uint32_t)(rnd() % RANGES);
        frame_page[k] = (uint32_t)(rnd() % (MIB / PAGE));
        frames[k] = phys_to_pfn_t(range_phys[frame_range[k]] + frame_page[k] * PAGE, PFN_DEV | PFN_MAP);
    }
    pfn_thread_init();
    if (verify_only) {
        int rc = verify();
        pfn_device_free(dev);
        return rc;
    }

    iters = quick ? 1 << 18 : 1 << 21;
    rounds = quick ? 5 : 15;
    double v[OPS][32], v2[2][32];
    for (int r = 0; r < rounds; r++) {
        for (int op = 0; op < OPS; op++)
            v[op][r] = run((enum op)op, op >= KMAP);
        v2[0][r] = run_threads(KMAP, 2);
        v2[1][r] = run_threads(PIN, 2);
    }
    double m[OPS];
    for (int op = 0; op < OPS; op++)
        m[op] = median(v[op], rounds);
    double kmap2 = median(v2[0], rounds), pin2 = median(v2[1], rounds);
    /* Thread scaling: 2 threads' throughput over 1 thread's (2.0 is perfect). */
    double kmap_scale = 2 * m[KMAP] / kmap2, pin_scale = 2 * m[PIN] / pin2;

    printf("pages: %ld operations per round, median of %d rounds (ns per operation)\n", iters, rounds);
    for (int op = 0; op < OPS; op++)
        printf("  %-27s %7.2f ns\n", op_name[op], m[op]);
    printf("  pfn_t_to_page / ABI floor:      %.2fx (goal <= 1.3)\n", m[TO_PAGE] / m[FLOOR]);
    printf("  pfn_t_to_page, kmap held / ABI floor: %.2fx (goal <= 1.3)\n", m[TO_PAGE_HELD] / m[FLOOR]);
    printf("  pfn_t_to_page / raw arithmetic: %.2fx\n", m[TO_PAGE] / m[RAW]);
    printf("  pfn_t_to_page_inline / raw:     %.2fx (goal <= 2)\n", m[TO_PAGE_INLINE] / m[RAW]);
    printf("  pfn_section_to_page_inline / raw: %.2fx (goal <= 2)\n", m[SECTION_INLINE] / m[RAW]);
    printf("  pin+unpin / kmap+kunmap:        %.2fx (goal <= 2)\n", m[PIN] / m[KMAP]);
    printf("  2 threads, same range: kmap+kunmap %.2f ns, pin+unpin %.2f ns per thread\n", kmap2, pin2);
    printf("  2-thread scaling: kmap %.2fx, pin %.2fx (goal >= 1.8)\n", kmap_scale, pin_scale);
    uint64_t frames_n = 0, dram = 0, in_range = 0;
    pfn_memmap_usage(&frames_n, &dram, &in_range);
    printf("  memmap: %llu frames, %llu bytes: %.1f bytes per frame\n", (unsigned long long)frames_n,
           (unsigned long long)(dram + in_range), frames_n ? (double)(dram + in_range) / (double)frames_n : 0.0);

    if (out_dir) {
        char p[512];
        snprintf(p, sizeof p, "%s/pages.csv", out_dir);
        FILE *csv = fopen(p, "w");
        if (csv) {
            fprintf(csv, "measure,ns,ratio,baseline\n");
            fprintf(csv, "raw arithmetic,%.3f,,\n", m[RAW]);
            fprintf(csv, "ABI floor,%.3f,,\n", m[FLOOR]);
            fprintf(csv, "pfn_t_to_page,%.3f,%.3f,ABI floor\n", m[TO_PAGE], m[TO_PAGE] / m[FLOOR]);
            fprintf(csv, "pfn_t_to_page kmap held,%.3f,%.3f,ABI floor\n", m[TO_PAGE_HELD],
                    m[TO_PAGE_HELD] / m[FLOOR]);
            fprintf(csv, "pfn_t_to_page_inline,%.3f,%.3f,raw arithmetic\n", m[TO_PAGE_INLINE],
                    m[TO_PAGE_INLINE] / m[RAW]);
            fprintf(csv, "pfn_section_to_page_inline,%.3f,%.3f,raw arithmetic\n", m[SECTION_INLINE],
                    m[SECTION_INLINE] / m[RAW]);
            fprintf(csv, "kmap+kunmap,%.3f,,\n", m[KMAP]);
            fprintf(csv, "pin+unpin,%.3f,%.3f,kmap+kunmap\n", m[PIN], m[PIN] / m[KMAP]);
            fprintf(csv, "kmap+kunmap 2 threads,%.3f,%.3f,scaling\n", kmap2, kmap_scale);
            fprintf(csv, "pin+unpin 2 threads,%.3f,%.3f,scaling\n", pin2, pin_scale);
            fclose(csv);
        }
    }
    pfn_device_free(dev);
    return 0;
}
