/* Scatterlist copies against plain memcpy of the same bytes at the same addresses, in one run.
 *
 * One 16 MiB /dev/shm mapping registered as 16 ranges of 1 MiB at scattered physical
 * addresses (no two continue each other, so every range is its own run). Two lists of 1 MiB:
 * 256 entries of 4 KiB on distinct random pages of random ranges (a table from
 * pfn_sg_alloc_table: two arrays, one link), and 16 entries of 64 KiB (one per range, at a
 * random 4 KiB-aligned offset). Each is copied out (pfn_sg_copy_to_buffer) and in
 * (pfn_sg_copy_from_buffer); the baseline is a loop of memcpy over the same (address, length)
 * pairs, translated once beforehand. Rounds alternate the two sides; each figure is the
 * median of the rounds; the ratio is memcpy's time / the list's (goal: at least 0.9).
 *
 * Building iovecs: pfn_sg_to_iovec of the 256-entry list inside a read section, against a
 * hand-written loop over the same entries with the header's pfn_section_translate_inline
 * (what a caller would write without the library's call).
 *
 * usage: sg [--quick] [--verify] [--out DIR] */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "pfn.h"
#include "timing.h"

#define PAGE 4096ull
#define MIB (1ull << 20)
#define RANGES 16
#define BYTES MIB

static char *base;
static uint64_t range_phys[RANGES];
static unsigned char *out_buf, *in_buf;
static int quick;

static uint64_t rng = 0x5CA77E4;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* A list and the same bytes as plain (address, length) pairs. */
struct workload {
    const char *name;
    pfn_sg_table t;
    int n;
    char *addr[256];
    size_t len[256];
};

static void build(struct workload *w, const char *name, int entries, size_t entry_bytes)
{
    w->name = name;
    w->n = entries;
    if (pfn_sg_alloc_table(&w->t, (unsigned)entries) != 0) {
        perror("pfn_sg_alloc_table");
        exit(1);
    }
    static unsigned char used[RANGES][MIB / PAGE];
    memset(used, 0, sizeof used);
    struct pfn_sg *sg;
    unsigned i;
    pfn_for_each_sg(w->t.sgl, sg, (unsigned)entries, i) {
        int r;
        uint64_t page;
        if (entry_bytes == PAGE) {
            do {
                r = (int)(rnd() % RANGES);
                page = rnd() % (MIB / PAGE);
            } while (used[r][page]);
            used[r][page] = 1;
        } else {
            r = (int)i; /* one per range */
            page = rnd() % ((MIB - entry_bytes) / PAGE + 1);
        }
        uint64_t phys = range_phys[r] + page * PAGE;
        if (pfn_sg_set_pfn(sg, phys_to_pfn_t(phys, PFN_DEV), (uint32_t)entry_bytes, 0) != 0) {
            fprintf(stderr, "pfn_sg_set_pfn failed\n");
            exit(1);
        }
        w->addr[i] = base + (size_t)r * MIB + page * PAGE;
        w->len[i] = entry_bytes;
    }
}

static void memcpy_out(const struct workload *w)
{
    size_t off = 0;
    for (int i = 0; i < w->n; i++) {
        memcpy(out_buf + off, w->addr[i], w->len[i]);
        off += w->len[i];
    }
}

static void memcpy_in(const struct workload *w)
{
    size_t off = 0;
    for (int i = 0; i < w->n; i++) {
        memcpy(w->addr[i], in_buf + off, w->len[i]);
        off += w->len[i];
    }
}

static int sg_out(const struct workload *w)
{
    return pfn_sg_copy_to_buffer(w->t.sgl, w->t.nents, out_buf, BYTES) == (ptrdiff_t)BYTES;
}

static int sg_in(const struct workload *w)
{
    return pfn_sg_copy_from_buffer(w->t.sgl, w->t.nents, in_buf, BYTES) == (ptrdiff_t)BYTES;
}

/* iovecs for the 256-entry list: the library's call, and a loop with the inline walk and
 * translation (no merging: the entries are scattered). */
static struct iovec iov[256];

static int iov_lib(const struct workload *w, pfn_section *s)
{
    uint64_t bytes;
    return pfn_sg_to_iovec(s, w->t.sgl, w->t.nents, 0, UINT64_MAX, iov, 256, &bytes);
}

static int iov_inline(const struct workload *w, pfn_section *s)
{
    struct pfn_sg *sg;
    unsigned i;
    int n = 0;
    pfn_for_each_sg(w->t.sgl, sg, w->t.nents, i) {
        char *a = (char *)pfn_section_translate_inline(s, pfn_sg_pfn(sg));
        if (a == NULL)
            return -1;
        iov[n].iov_base = a + sg->offset;
        iov[n].iov_len = sg->length;
        n++;
    }
    return n;
}

static int verify(struct workload *w4k, struct workload *w64k)
{
    int passed = 0, failed = 0;
    struct workload *ws[2] = {w4k, w64k};
    for (int k = 0; k < 2; k++) {
        struct workload *w = ws[k];
        unsigned char *want = malloc(BYTES);
        if (!want)
            return 1;
        memcpy_out(w);
        memcpy(want, out_buf, BYTES);
        memset(out_buf, 0, BYTES);
        int ok = sg_out(w) && memcmp(want, out_buf, BYTES) == 0;
        /* In: new bytes through the list, read back with memcpy. */
        for (size_t j = 0; j < BYTES; j++)
            in_buf[j] = (unsigned char)rnd();
        ok = ok && sg_in(w);
        memcpy_out(w);
        ok = ok && memcmp(in_buf, out_buf, BYTES) == 0;
        ok ? passed++ : failed++;
        if (!ok)
            fprintf(stderr, "sg-verify: %s copies differ from memcpy's\n", w->name);
        free(want);
    }
    pfn_section s = pfn_read_lock();
    int a = iov_lib(w4k, &s);
    struct iovec lib[256];
    memcpy(lib, iov, sizeof lib);
    int b = iov_inline(w4k, &s);
    pfn_read_unlock();
    int same = a == 256 && b == 256 && memcmp(lib, iov, sizeof lib) == 0;
    for (int i = 0; same && i < 256; i++)
        same = lib[i].iov_base == w4k->addr[i] && lib[i].iov_len == PAGE;
    same ? passed++ : failed++;
    if (!same)
        fprintf(stderr, "sg-verify: iovecs differ (%d, %d)\n", a, b);
    printf("sg-verify: %d passed, %d failed\n", passed, failed);
    return failed != 0;
}

/* Median ns per call of each side, over interleaved rounds of `iters` calls. */
enum { OUT, IN };
static void time_copies(struct workload *w, int dir, int rounds, int iters, double *lib_ns, double *ref_ns)
{
    double *a = malloc(sizeof(double) * (size_t)rounds), *b = malloc(sizeof(double) * (size_t)rounds);
    if (!a || !b)
        exit(1);
    for (int r = 0; r < rounds; r++) {
        for (int side = 0; side < 2; side++) {
            int lib = (side + r) % 2 == 0; /* alternate which goes first */
            double t0 = now_ns();
            for (int i = 0; i < iters; i++) {
                if (lib) {
                    if (!(dir == OUT ? sg_out(w) : sg_in(w))) {
                        fprintf(stderr, "copy failed\n");
                        exit(1);
                    }
                } else {
                    dir == OUT ? memcpy_out(w) : memcpy_in(w);
                }
            }
            double t = (now_ns() - t0) / iters;
            (lib ? a : b)[r] = t;
        }
    }
    *lib_ns = median(a, rounds);
    *ref_ns = median(b, rounds);
    free(a);
    free(b);
}

static void time_iovecs(struct workload *w, int rounds, int iters, double *lib_ns, double *ref_ns)
{
    double *a = malloc(sizeof(double) * (size_t)rounds), *b = malloc(sizeof(double) * (size_t)rounds);
    if (!a || !b)
        exit(1);
    pfn_section s = pfn_read_lock();
    for (int r = 0; r < rounds; r++) {
        for (int side = 0; side < 2; side++) {
            int lib = (side + r) % 2 == 0;
            double t0 = now_ns();
            for (int i = 0; i < iters; i++)
                if ((lib ? iov_lib(w, &s) : iov_inline(w, &s)) != 256)
                    exit(1);
            (lib ? a : b)[r] = (now_ns() - t0) / iters;
        }
    }
    pfn_read_unlock();
    *lib_ns = median(a, rounds);
    *ref_ns = median(b, rounds);
    free(a);
    free(b);
}

int main(int argc, char **argv)
{
    const char *out_dir = NULL;
    int verify_only = 0;
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
    char path[256];
    const char *dir = getenv("PFN_TEST_DIR");
    snprintf(path, sizeof path, "%s/libpfn-bench-sg-%ld.pmem", dir && *dir ? dir : "/dev/shm", (long)getpid());
    pfn_pmem *m = pfn_pmem_map(path, RANGES * MIB, PFN_PMEM_CREATE);
    if (!m) {
        perror(path);
        return 1;
    }
    unlink(path);
    base = pfn_pmem_addr(m);
    memset(base, 0x5A, RANGES * MIB);
    pfn_device *dev = pfn_device_new("bench-sg");
    for (int r = 0; r < RANGES; r++) {
        /* Scattered in physical space: range r at (r * 7 % 16) GiB. */
        range_phys[r] = (0x100ull << 30) + (uint64_t)(r * 7 % RANGES) * (1ull << 30);
        pfn_resource res = {range_phys[r], range_phys[r] + MIB - 1, NULL};
        if (devm_register_kmap_pfn_range(dev, &res, base + (size_t)r * MIB) != 0) {
            fprintf(stderr, "register failed\n");
            return 1;
        }
    }
    out_buf = aligned_alloc(4096, BYTES);
    in_buf = aligned_alloc(4096, BYTES);
    if (!out_buf || !in_buf)
        return 1;
    memset(out_buf, 1, BYTES);
    memset(in_buf, 2, BYTES);
    static struct workload w4k, w64k;
    build(&w4k, "256 x 4 KiB", 256, PAGE);
    build(&w64k, "16 x 64 KiB", 16, 64 * 1024);

    int rc = 0;
    if (verify_only) {
        rc = verify(&w4k, &w64k);
    } else {
        int rounds = quick ? 7 : 15, iters = quick ? 100 : 300;
        FILE *csv = NULL;
        if (out_dir) {
            char p[512];
            snprintf(p, sizeof p, "%s/sg.csv", out_dir);
            csv = fopen(p, "w");
            if (!csv) {
                perror(p);
                return 1;
            }
            fprintf(csv, "workload,direction,sg_ns,baseline_ns,ratio\n");
        }
        printf("1 MiB through a scatterlist against memcpy of the same bytes at the same addresses;\n"
               "median of %d interleaved rounds of %d copies, us per MiB; ratio = memcpy time / list time\n\n",
               rounds, iters);
        printf("%-14s %-4s %10s %10s %8s\n", "list", "dir", "list", "memcpy", "ratio");
        struct workload *ws[2] = {&w4k, &w64k};
        const char *dirs[2] = {"out", "in"};
        /* Warm-up: every path once for a while before anything is timed (the first tenths
         * of a second of a run were seen slower for whichever side ran first). */
        double warm_until = now_ns() + (quick ? 1e8 : 3e8);
        while (now_ns() < warm_until)
            for (int k = 0; k < 2; k++) {
                sg_out(ws[k]);
                memcpy_out(ws[k]);
                sg_in(ws[k]);
                memcpy_in(ws[k]);
            }
        for (int k = 0; k < 2; k++)
            for (int d = 0; d < 2; d++) {
                double lib, ref;
                time_copies(ws[k], d, rounds, iters, &lib, &ref);
                printf("%-14s %-4s %10.2f %10.2f %8.3f\n", ws[k]->name, dirs[d], lib / 1e3, ref / 1e3, ref / lib);
                if (csv)
                    fprintf(csv, "%s,%s,%.1f,%.1f,%.4f\n", ws[k]->name, dirs[d], lib, ref, ref / lib);
            }
        double lib, ref;
        time_iovecs(&w4k, rounds, iters * 20, &lib, &ref);
        printf("\npfn_sg_to_iovec of the 256-entry list: %.0f ns (%.2f ns an entry); the inline walk and\n"
               "translation by hand: %.0f ns (%.2f ns an entry); ratio hand / library %.3f\n",
               lib, lib / 256, ref, ref / 256, ref / lib);
        if (csv) {
            fprintf(csv, "256 x 4 KiB,iovec,%.1f,%.1f,%.4f\n", lib, ref, ref / lib);
            fclose(csv);
        }
    }
    pfn_sg_free_table(&w4k.t);
    pfn_sg_free_table(&w64k.t);
    pfn_device_free(dev);
    pfn_pmem_unmap(m);
    free(out_buf);
    free(in_buf);
    return rc;
}
