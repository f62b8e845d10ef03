/* DAX devices: direct_access, and the I/O path against plain memcpy of the same bytes at the
 * same addresses, in one run.
 *
 * One 2 MiB /dev/shm mapping registered as one range, wrapped by one DAX device (512 pages).
 * direct_access of 1 page and of 512 pages inside one open read section, against
 * pfn_section_translate_len of the same frame in the same section (the translation call it
 * wraps: what a caller without the DAX layer would pay). pfn_dax_read / pfn_dax_write of
 * 4 KiB (walking the device page by page) and of 1 MiB (its two halves in turn), against
 * memcpy between the same buffer and the same device addresses; writes also against memcpy +
 * pfn_persist, since a DAX write is durable when it returns. The mapping's granularity decides
 * how writes persist: PAGE (tmpfs: msync) by default, flushes with
 * PFN_FORCE_GRANULARITY=cache_line (make bench-dax runs both). Rounds alternate the sides;
 * each figure is the median of the rounds; ratio = reference time / DAX time (goal for 1 MiB
 * against memcpy: at least 0.9).
 *
 * A second 2 MiB mapping registered as four 512 KiB ranges, physically back to back but out
 * of order in the mapping (pieces 2, 0, 3, 1), wrapped by one DAX device over the four
 * (pfn_dax_create_span): read / write of 1 MiB across a range boundary (offsets 0, 512 KiB,
 * 1 MiB in turn) against memcpy of the same bytes at the same four addresses, piece by piece.
 *
 * usage: dax [--quick] [--verify] [--out DIR] */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pfn.h"
#include "timing.h"

#define PAGE 4096ull
#define MIB (1ull << 20)
#define DEV_BYTES (2 * MIB)
#define PHYS (0x300ull << 30)

static char *base;
static pfn_dax *dax;
/* The span: four pieces of SPAN_PIECE bytes; piece k of the device is at span_base +
 * span_perm[k] * SPAN_PIECE. */
#define SPAN_PHYS (0x310ull << 30)
#define SPAN_PIECE (512ull << 10)
static const unsigned span_perm[4] = {2, 0, 3, 1};
static char *span_base;
static pfn_dax *span;
static pfn_pmem *map;
static unsigned char *buf;
static int quick;

static void die(const char *what)
{
    fprintf(stderr, "dax bench: %s failed: %s\n", what, pfn_errormsg());
    exit(1);
}

/* One side of a measurement: `iters` operations starting at step `i`. */
typedef void (*op_fn)(size_t len, unsigned i);

static unsigned steps(size_t len) { return (unsigned)(DEV_BYTES / len); }
static size_t at(size_t len, unsigned i) { return (size_t)(i % steps(len)) * len; }

static void dax_read(size_t len, unsigned i)
{
    if (pfn_dax_read(dax, at(len, i), buf, len) != (int64_t)len)
        die("pfn_dax_read");
}
static void memcpy_read(size_t len, unsigned i) { memcpy(buf, base + at(len, i), len); }
static void dax_write(size_t len, unsigned i)
{
    if (pfn_dax_write(dax, at(len, i), buf, len) != (int64_t)len)
        die("pfn_dax_write");
}
static void memcpy_write(size_t len, unsigned i) { memcpy(base + at(len, i), buf, len); }
static void memcpy_persist_write(size_t len, unsigned i)
{
    memcpy(base + at(len, i), buf, len);
    if (pfn_persist(base + at(len, i), len) != 0)
        die("pfn_persist");
}

/* 1 MiB steps over the span: offsets 0, 512 KiB, 1 MiB (each crosses a range boundary). */
static size_t span_at(size_t len, unsigned i) { return (size_t)(i % 3) * (DEV_BYTES - len) / 2; }
static char *span_addr(size_t off) { return span_base + span_perm[off / SPAN_PIECE] * SPAN_PIECE + off % SPAN_PIECE; }
static void span_read(size_t len, unsigned i)
{
    if (pfn_dax_read(span, span_at(len, i), buf, len) != (int64_t)len)
        die("pfn_dax_read (span)");
}
static void span_write(size_t len, unsigned i)
{
    if (pfn_dax_write(span, span_at(len, i), buf, len) != (int64_t)len)
        die("pfn_dax_write (span)");
}
/* The same bytes by memcpy, piece by piece (optionally made durable with pfn_persist). */
static void span_memcpy(size_t len, unsigned i, int write, int persist)
{
    size_t off = span_at(len, i), done = 0;
    while (done < len) {
        size_t n = SPAN_PIECE - (off + done) % SPAN_PIECE;
        if (n > len - done)
            n = len - done;
        char *a = span_addr(off + done);
        if (write) {
            memcpy(a, buf + done, n);
            if (persist && pfn_persist(a, n) != 0)
                die("pfn_persist");
        } else {
            memcpy(buf + done, a, n);
        }
        done += n;
    }
}
static void span_memcpy_read(size_t len, unsigned i) { span_memcpy(len, i, 0, 0); }
static void span_memcpy_write(size_t len, unsigned i) { span_memcpy(len, i, 1, 0); }
static void span_memcpy_persist_write(size_t len, unsigned i) { span_memcpy(len, i, 1, 1); }

/* Maps and registers the span's mapping, and creates the span. Called after the one-range
 * rows: while the one range is the only one registered, translation takes the single-run
 * fast path, which the four ranges end (they would slow the one-range figures by ~5 ns). */
static pfn_pmem *span_map;
static void span_setup(pfn_device *dev)
{
    char path[256];
    const char *dir = getenv("PFN_TEST_DIR");
    snprintf(path, sizeof path, "%s/libpfn-bench-dax-span-%ld.pmem", dir && *dir ? dir : "/dev/shm", (long)getpid());
    span_map = pfn_pmem_map(path, DEV_BYTES, PFN_PMEM_CREATE);
    if (!span_map) {
        perror(path);
        exit(1);
    }
    unlink(path);
    span_base = pfn_pmem_addr(span_map);
    memset(span_base, 0x5A, DEV_BYTES);
    for (unsigned k = 0; k < 4; k++) {
        pfn_resource r = {SPAN_PHYS + k * SPAN_PIECE, SPAN_PHYS + (k + 1) * SPAN_PIECE - 1, "span"};
        if (devm_register_kmap_pfn_range(dev, &r, span_base + span_perm[k] * SPAN_PIECE) != 0)
            die("span registration");
    }
    span = pfn_dax_create_span(dev, SPAN_PHYS, DEV_BYTES);
    if (!span)
        die("pfn_dax_create_span");
}

static volatile uint64_t sink;
static void direct_access_n(size_t pages, unsigned i)
{
    void *k;
    pfn_t p;
    int64_t n = pfn_dax_direct_access(dax, i % 2 ? 0 : 512 - pages, pages, &k, &p);
    sink += (uint64_t)n + (uintptr_t)k;
}
static pfn_section *open_section;
static void translate_len(size_t pages, unsigned i)
{
    uint64_t len;
    void *k = pfn_section_translate_len(open_section, pfn_to_pfn_t(PHYS / PAGE + (i % 2 ? 0 : 512 - pages)), &len);
    sink += len + (uintptr_t)k;
}

/* Median ns per operation of each side over interleaved rounds. */
static void measure(op_fn a, op_fn b, size_t len, int rounds, unsigned iters, double *a_ns, double *b_ns)
{
    double *ta = malloc(sizeof(double) * (size_t)rounds), *tb = malloc(sizeof(double) * (size_t)rounds);
    if (!ta || !tb)
        exit(1);
    for (int r = 0; r < rounds; r++)
        for (int side = 0; side < 2; side++) {
            int first = (side + r) % 2 == 0;
            op_fn f = first ? a : b;
            double t0 = now_ns();
            for (unsigned i = 0; i < iters; i++)
                f(len, i);
            (first ? ta : tb)[r] = (now_ns() - t0) / iters;
        }
    *a_ns = median(ta, rounds);
    *b_ns = median(tb, rounds);
    free(ta);
    free(tb);
}

static int verify(void)
{
    int passed = 0, failed = 0;
#define V(cond)                                                                      \
    do {                                                                             \
        if (cond)                                                                    \
            passed++;                                                                \
        else {                                                                       \
            failed++;                                                                \
            fprintf(stderr, "dax-verify: %s:%d: %s\n", __FILE__, __LINE__, #cond);   \
        }                                                                            \
    } while (0)
    unsigned char *want = malloc(MIB);
    if (!want)
        return 1;
    for (size_t len = PAGE; len <= MIB; len *= 256) {
        for (unsigned i = 0; i < 3; i++) {
            for (size_t j = 0; j < len; j++)
                buf[j] = (unsigned char)(j * 13 + i + len);
            memcpy(want, buf, len);
            dax_write(len, i);
            V(memcmp(base + at(len, i), want, len) == 0);
            memset(buf, 0, len);
            dax_read(len, i);
            V(memcmp(buf, want, len) == 0);
        }
    }
    pfn_section s = pfn_read_lock();
    void *k;
    pfn_t p;
    V(pfn_dax_direct_access(dax, 0, 512, &k, &p) == 512 && k == base && p.val == ((PHYS / PAGE) | PFN_DEV));
    V(pfn_dax_direct_access(dax, 511, 1, &k, &p) == 1 && k == base + 511 * PAGE);
    uint64_t len;
    V(pfn_section_translate_len(&s, pfn_to_pfn_t(PHYS / PAGE), &len) == base && len == DEV_BYTES);
    pfn_read_unlock();
    /* The span: 1 MiB at each step lands piece by piece at the scrambled addresses. */
    for (unsigned i = 0; i < 3; i++) {
        for (size_t j = 0; j < MIB; j++)
            buf[j] = (unsigned char)(j * 7 + i);
        memcpy(want, buf, MIB);
        span_write(MIB, i);
        int same = 1;
        for (size_t j = 0; j < MIB; j += 4096 - 1)
            same &= *span_addr(span_at(MIB, i) + j) == (char)want[j];
        V(same);
        memset(buf, 0, MIB);
        span_read(MIB, i);
        V(memcmp(buf, want, MIB) == 0);
        memset(buf, 0, MIB);
        span_memcpy_read(MIB, i);
        V(memcmp(buf, want, MIB) == 0);
    }
    V(pfn_dax_pages(span) == 512);
    s = pfn_read_lock();
    V(pfn_dax_direct_access(span, 0, 512, &k, &p) == 128 && k == span_base + 2 * SPAN_PIECE);
    V(pfn_dax_direct_access(span, 128, 512, &k, &p) == 128 && k == span_base);
    pfn_read_unlock();
    free(want);
    printf("dax-verify: %d passed, %d failed\n", passed, failed);
    return failed != 0;
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
    snprintf(path, sizeof path, "%s/libpfn-bench-dax-%ld.pmem", dir && *dir ? dir : "/dev/shm", (long)getpid());
    map = pfn_pmem_map(path, DEV_BYTES, PFN_PMEM_CREATE);
    if (!map) {
        perror(path);
        return 1;
    }
    unlink(path);
    base = pfn_pmem_addr(map);
    memset(base, 0x5A, DEV_BYTES);
    pfn_device *dev = pfn_device_new("bench-dax");
    if (!dev || pfn_pmem_register(dev, map, PHYS) != 0)
        die("registration");
    dax = pfn_dax_create(dev, PHYS);
    if (!dax)
        die("pfn_dax_create");
    buf = aligned_alloc(4096, MIB);
    if (!buf)
        return 1;
    memset(buf, 3, MIB);

    int rc = 0;
    if (verify_only) {
        span_setup(dev);
        rc = verify();
    } else {
        static const char *gran[] = {"byte", "cache_line", "page"};
        int g = pfn_pmem_granularity(map);
        const char *mode = g >= 0 && g <= 2 ? gran[g] : "?";
        int rounds = quick ? 7 : 15;
        FILE *csv = NULL;
        if (out_dir) {
            char p[512];
            snprintf(p, sizeof p, "%s/dax-%s.csv", out_dir, mode);
            csv = fopen(p, "w");
            if (!csv) {
                perror(p);
                return 1;
            }
            fprintf(csv, "operation,dax_ns,reference,reference_ns,ratio\n");
        }
        printf("DAX devices of 2 MiB on /dev/shm (one range; four ranges), granularity %s; median of %d interleaved rounds;\n"
               "ratio = reference time / DAX time\n\n", mode, rounds);
        printf("%-28s %12s  %-28s %12s %7s\n", "operation", "DAX ns", "reference", "ref ns", "ratio");
        double warm_until = now_ns() + (quick ? 1e8 : 3e8);
        while (now_ns() < warm_until) {
            dax_read(MIB, 0);
            memcpy_read(MIB, 1);
            dax_write(MIB, 0);
            memcpy_write(MIB, 1);
        }
        struct row {
            const char *name;
            op_fn dax_op;
            const char *ref_name;
            op_fn ref_op;
            size_t len;
            unsigned iters;
        } rows[] = {
            {"direct_access 1 page", direct_access_n, "section_translate_len", translate_len, 1, 200000},
            {"direct_access 512 pages", direct_access_n, "section_translate_len", translate_len, 512, 200000},
            {"read 4 KiB", dax_read, "memcpy", memcpy_read, PAGE, 20000},
            {"read 1 MiB", dax_read, "memcpy", memcpy_read, MIB, 200},
            {"write 4 KiB", dax_write, "memcpy", memcpy_write, PAGE, 20000},
            {"write 4 KiB", dax_write, "memcpy + pfn_persist", memcpy_persist_write, PAGE, 20000},
            {"write 1 MiB", dax_write, "memcpy", memcpy_write, MIB, 200},
            {"write 1 MiB", dax_write, "memcpy + pfn_persist", memcpy_persist_write, MIB, 200},
            {"span(4) read 1 MiB", span_read, "memcpy per range", span_memcpy_read, MIB, 200},
            {"span(4) write 1 MiB", span_write, "memcpy per range", span_memcpy_write, MIB, 200},
            {"span(4) write 1 MiB", span_write, "memcpy + persist per range", span_memcpy_persist_write, MIB, 200},
        };
        for (size_t r = 0; r < sizeof rows / sizeof *rows; r++) {
            unsigned iters = quick ? rows[r].iters / 4 : rows[r].iters;
            if (!span && (rows[r].dax_op == span_read || rows[r].dax_op == span_write)) {
                span_setup(dev);
                for (int w = 0; w < 20; w++) {
                    span_read(MIB, (unsigned)w);
                    span_memcpy_read(MIB, (unsigned)w);
                    span_write(MIB, (unsigned)w);
                    span_memcpy_write(MIB, (unsigned)w);
                }
            }
            double d, ref;
            int in_section = rows[r].dax_op == direct_access_n;
            pfn_section s;
            if (in_section) {
                s = pfn_read_lock();
                open_section = &s;
            }
            measure(rows[r].dax_op, rows[r].ref_op, rows[r].len, rounds, iters, &d, &ref);
            if (in_section)
                pfn_read_unlock();
            printf("%-28s %12.1f  %-28s %12.1f %7.2f\n", rows[r].name, d, rows[r].ref_name, ref, ref / d);
            if (csv)
                fprintf(csv, "%s,%.1f,%s,%.1f,%.3f\n", rows[r].name, d, rows[r].ref_name, ref, ref / d);
        }
        if (csv)
            fclose(csv);
    }
    if (pfn_dax_destroy(dax) != 0 || pfn_dax_destroy(span) != 0 || pfn_device_free(dev) != 0 ||
        pfn_pmem_unmap(map) != 0 || (span_map && pfn_pmem_unmap(span_map) != 0))
        die("teardown");
    free(buf);
    return rc;
}
