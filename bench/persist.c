/* libpfn's persistence primitives against libpmem's, in one run, on one /dev/shm mapping.
 *
 * Both sides flush: the mapping is made by pfn_pmem_map with PFN_FORCE_GRANULARITY=cache_line
 * (this program runs itself again with it set), and libpmem's pmem_memcpy_persist,
 * pmem_memset_persist and pmem_persist flush whatever pmem_is_pmem says (PMEM_IS_PMEM_FORCE=1
 * is set too). Each side works in its own half of the mapping, walking through 16 MiB so that
 * the lines it writes are not the ones it just flushed. Rounds alternate the two sides; each
 * figure is the median of the rounds, and each ratio compares figures of the same run.
 *
 * The msync comparison needs mappings in PAGE mode, which a process with the force variable
 * cannot make: a helper process without it (this program again, --msync-helper) times its
 * rounds when asked, between the flush-mode rounds of this one, on tmpfs (--pmem) and on a
 * disk file system (--disk, default the working directory).
 *
 * usage: persist [--quick] [--verify] [--out DIR] [--pmem DIR] [--disk DIR]
 *                [--count OP SIDE BYTES ITERS] */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pfn.h"
#include "timing.h"
#ifdef HAVE_PMEM
#include <libpmem.h>
#endif
#ifdef HAVE_CALLGRIND
#include <valgrind/callgrind.h>
#else
#define CALLGRIND_TOGGLE_COLLECT
#endif

#define MIB ((size_t)1 << 20)
#define HALF (32 * MIB)    /* each side's part of the mapping */
#define WINDOW (16 * MIB)  /* the bytes each side walks through */
#define MAXLEN (2 * MIB)

static char *map_base;
static pfn_pmem *map;
static char *src;
static const char *pmem_dir = "/dev/shm";
static int quick;

/* ---------------------------------------------------------------- operations */

enum side { PFN, PMEM };
static const char *side_name[] = {"libpfn", "libpmem"};

enum op { MEMCPY, PERSIST_LINE, PERSIST_PAGE, MEMSET, PMEM_PERSIST, MEMCPY_NT, MEMCPY_T };
static const char *op_name[] = {"memcpy_persist", "persist_dirty", "persist_dirty",
                                "memset_persist", "pfn_pmem_persist", "memcpy_nontemporal",
                                "memcpy_temporal"};

static int have_pmem(void)
{
#ifdef HAVE_PMEM
    return 1;
#else
    return 0;
#endif
}

/* `iters` operations of `len` bytes (nothing is read back: a flushed line is a cache miss
 * that would be timed too). */
static void run(enum op op, enum side side, size_t len, uint64_t iters)
{
    char *base = map_base + (side == PFN ? 0 : HALF);
    size_t step = len < 64 ? 64 : len;
    size_t slots = WINDOW / step;
    for (uint64_t i = 0; i < iters; i++) {
        char *dst = base + (i % slots) * step;
        switch (op) {
        case MEMCPY:
            if (side == PFN)
                pfn_memcpy_persist(dst, src + (i & 63), len);
#ifdef HAVE_PMEM
            else
                pmem_memcpy_persist(dst, src + (i & 63), len);
#endif
            break;
        case MEMSET:
            if (side == PFN)
                pfn_memset_persist(dst, (int)i, len);
#ifdef HAVE_PMEM
            else
                pmem_memset_persist(dst, (int)i, len);
#endif
            break;
        case PERSIST_LINE:
        case PERSIST_PAGE:
            /* Dirty the bytes with plain stores, then persist them. */
            for (size_t k = 0; k < len; k += 8)
                *(volatile uint64_t *)(dst + k) = i + k;
            if (side == PFN)
                pfn_persist(dst, len);
#ifdef HAVE_PMEM
            else
                pmem_persist(dst, len);
#endif
            break;
        case PMEM_PERSIST:
            for (size_t k = 0; k < len; k += 8)
                *(volatile uint64_t *)(dst + k) = i + k;
            pfn_pmem_persist(map, dst, len);
            break;
        case MEMCPY_NT: /* libpfn only: the two ways the threshold chooses between */
            pfn_memcpy(dst, src + (i & 63), len, PFN_F_MEM_NONTEMPORAL);
            break;
        case MEMCPY_T:
            pfn_memcpy(dst, src + (i & 63), len, PFN_F_MEM_TEMPORAL);
            break;
        }
    }
}

/* Iterations that make one round last about `ms`. */
static uint64_t calibrate(enum op op, enum side side, size_t len, double ms)
{
    uint64_t iters = 4;
    for (;;) {
        double t0 = now_ns();
        run(op, side, len, iters);
        double t = now_ns() - t0;
        if (t > ms * 1e6 / 4 || iters > (1ull << 30))
            return (uint64_t)(iters * (ms * 1e6 / t)) + 1;
        iters *= 4;
    }
}


/* ---------------------------------------------------------------- the msync helper */

/* This program's path (valgrind fakes it as the program's, not its own). */
static const char *self_path(void)
{
    static char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return "/proc/self/exe";
    self[n] = 0;
    return self;
}

static int helper_in = -1, helper_out = -1;
static pid_t helper_pid;

struct request {
    size_t len;
    uint64_t iters;
    int disk; /* 0: the mapping on --pmem's tmpfs, 1: the one on --disk's file system */
};

static const char *disk_dir = ".";

/* In the helper: two PAGE mappings, tmpfs (where msync writes nothing back: there is no
 * backing store) and a disk file system (where it writes the page to the device); each request
 * is one timed round of pfn_pmem_persist on one of them. */
static int msync_helper(void)
{
    pfn_pmem *maps[2];
    const char *dirs[2] = {pmem_dir, disk_dir};
    int granularity = PFN_GRANULARITY_PAGE;
    for (int k = 0; k < 2; k++) {
        char path[512];
        snprintf(path, sizeof path, "%s/libpfn-bench-persist-page-%ld", dirs[k], (long)getpid());
        maps[k] = pfn_pmem_map(path, WINDOW, PFN_PMEM_CREATE);
        unlink(path);
        if (!maps[k] || pfn_pmem_granularity(maps[k]) != PFN_GRANULARITY_PAGE)
            granularity = -1;
    }
    if (write(1, &granularity, sizeof granularity) != sizeof granularity || granularity < 0)
        return 1;
    struct request rq;
    while (read(0, &rq, sizeof rq) == sizeof rq) {
        pfn_pmem *m = maps[rq.disk != 0];
        char *base = pfn_pmem_addr(m);
        size_t slots = WINDOW / (rq.len < 64 ? 64 : rq.len);
        double t0 = now_ns();
        int bad = 0;
        for (uint64_t i = 0; i < rq.iters; i++) {
            char *dst = base + (i % slots) * (rq.len < 64 ? 64 : rq.len);
            for (size_t k = 0; k < rq.len; k += 8)
                *(volatile uint64_t *)(dst + k) = i + k;
            bad |= pfn_pmem_persist(m, dst, rq.len);
        }
        double ns = bad ? -1 : (now_ns() - t0) / rq.iters;
        if (write(1, &ns, sizeof ns) != sizeof ns)
            return 1;
    }
    pfn_pmem_unmap(maps[0]);
    pfn_pmem_unmap(maps[1]);
    return 0;
}

static int start_helper(char **argv)
{
    int to[2], from[2];
    if (pipe(to) || pipe(from))
        return 0;
    fflush(stdout);
    helper_pid = fork();
    if (helper_pid == 0) {
        dup2(to[0], 0);
        dup2(from[1], 1);
        close(to[1]);
        close(from[0]);
        unsetenv("PFN_FORCE_GRANULARITY");
        char *args[] = {argv[0], "--msync-helper", "--pmem", (char *)pmem_dir,
                        "--disk", (char *)disk_dir, NULL};
        execv(self_path(), args);
        _exit(127);
    }
    close(to[0]);
    close(from[1]);
    helper_in = to[1];
    helper_out = from[0];
    int granularity;
    return read(helper_out, &granularity, sizeof granularity) == sizeof granularity &&
           granularity == PFN_GRANULARITY_PAGE;
}

static double helper_round(size_t len, uint64_t iters, int disk)
{
    struct request rq = {len, iters, disk};
    double ns;
    if (write(helper_in, &rq, sizeof rq) != sizeof rq || read(helper_out, &ns, sizeof ns) != sizeof ns)
        return -1;
    return ns;
}

static void stop_helper(void)
{
    if (helper_in >= 0) {
        close(helper_in);
        close(helper_out);
        waitpid(helper_pid, NULL, 0);
    }
}

/* ---------------------------------------------------------------- checks */

/* Every operation of both sides writes what it should. */
static int verify(void)
{
    int passed = 0, failed = 0;
    const size_t lens[] = {0, 1, 64, 100, 256, 4096, 4097, 65536, MAXLEN};
    for (int side = PFN; side <= (have_pmem() ? PMEM : PFN); side++)
        for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
            size_t len = lens[i];
            char *dst = map_base + (side == PFN ? 0 : HALF) + 5 + i;
            memset(dst, 0, len + 64);
            if (side == PFN)
                pfn_memcpy_persist(dst, src + 3, len);
#ifdef HAVE_PMEM
            else
                pmem_memcpy_persist(dst, src + 3, len);
#endif
            int ok = memcmp(dst, src + 3, len) == 0 && dst[len] == 0;
            if (side == PFN)
                pfn_memset_persist(dst, 0x5A, len);
#ifdef HAVE_PMEM
            else
                pmem_memset_persist(dst, 0x5A, len);
#endif
            for (size_t k = 0; k < len; k++)
                ok &= dst[k] == 0x5A;
            ok &= dst[len] == 0;
            ok ? passed++ : failed++;
            if (!ok)
                fprintf(stderr, "verify: %s wrong at %zu bytes\n", side_name[side], len);
        }
    /* The timed loops themselves leave the last bytes they wrote. */
    for (int side = PFN; side <= (have_pmem() ? PMEM : PFN); side++) {
        char *last = map_base + (side == PFN ? 0 : HALF) + 2 * 4096;
        run(MEMCPY, side, 4096, 3);
        int ok = memcmp(last, src + 2, 4096) == 0;
        run(MEMSET, side, 4096, 3);
        for (size_t k = 0; k < 4096; k++)
            ok &= last[k] == 2;
        run(PERSIST_PAGE, side, 4096, 3);
        ok &= *(uint64_t *)(last + 8) == 2 + 8;
        ok ? passed++ : failed++;
    }
    int ok = pfn_pmem_persist(map, map_base, 64) == 0 && pfn_pmem_granularity(map) == PFN_GRANULARITY_CACHE_LINE;
    ok ? passed++ : failed++;
    printf("persist-verify: %d passed, %d failed\n", passed, failed);
    return failed != 0;
}

/* ---------------------------------------------------------------- main */

static FILE *csv(const char *dir, const char *name, const char *header)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "persist: %s: %s\n", path, strerror(errno));
        exit(1);
    }
    fprintf(f, "%s\n", header);
    return f;
}

static const char *size_name(size_t len, char *buf)
{
    if (len >= MIB)
        sprintf(buf, "%zu MiB", len / MIB);
    else if (len >= 1024)
        sprintf(buf, "%zu KiB", len / 1024);
    else
        sprintf(buf, "%zu B", len);
    return buf;
}

int main(int argc, char **argv)
{
    const char *out = "bench/results";
    const char *count_op = NULL, *count_side = NULL;
    size_t count_len = 0;
    uint64_t count_iters = 0;
    int verify_only = 0, helper = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--verify"))
            verify_only = 1;
        else if (!strcmp(argv[i], "--msync-helper"))
            helper = 1;
        else if (!strcmp(argv[i], "--out") && i + 1 < argc)
            out = argv[++i];
        else if (!strcmp(argv[i], "--pmem") && i + 1 < argc)
            pmem_dir = argv[++i];
        else if (!strcmp(argv[i], "--disk") && i + 1 < argc)
            disk_dir = argv[++i];
        else if (!strcmp(argv[i], "--count") && i + 4 < argc) {
            count_op = argv[++i];
            count_side = argv[++i];
            count_len = strtoull(argv[++i], NULL, 10);
            count_iters = strtoull(argv[++i], NULL, 10);
        } else {
            fprintf(stderr, "usage: %s [--quick] [--verify] [--out DIR] [--pmem DIR] [--disk DIR] "
                            "[--count memcpy|memset|persist pfn|pmem BYTES ITERS]\n", argv[0]);
            return 2;
        }
    }
    if (helper)
        return msync_helper();
    /* Both sides in flushing mode: the library reads PFN_FORCE_GRANULARITY at load, so set it
     * and start again. */
    const char *forced = getenv("PFN_FORCE_GRANULARITY");
    if (!forced || strcmp(forced, "cache_line") != 0) {
        setenv("PFN_FORCE_GRANULARITY", "cache_line", 1);
        setenv("PMEM_IS_PMEM_FORCE", "1", 1);
        execv(self_path(), argv);
        perror("persist: execv");
        return 1;
    }

    char path[512];
    snprintf(path, sizeof path, "%s/libpfn-bench-persist-%ld", pmem_dir, (long)getpid());
    map = pfn_pmem_map(path, 2 * HALF, PFN_PMEM_CREATE);
    unlink(path);
    if (!map) {
        fprintf(stderr, "persist: cannot map %s: %s\n", path, strerror(errno));
        return 1;
    }
    map_base = pfn_pmem_addr(map);
    src = aligned_alloc(64, MAXLEN + 128);
    for (size_t i = 0; i < MAXLEN + 128; i++)
        src[i] = (char)(i * 7 + i / 4096);
    memset(map_base, 1, 2 * HALF); /* fault every page in before timing */

    if (verify_only)
        return verify();
    if (count_op) { /* one side's loop, for callgrind's instruction counts */
        enum op op = !strcmp(count_op, "memcpy") ? MEMCPY : !strcmp(count_op, "memset") ? MEMSET : PERSIST_LINE;
        enum side side = !strcmp(count_side, "pmem") ? PMEM : PFN;
        if (side == PMEM && !have_pmem())
            return 2;
        run(op, side, count_len, 1000);
        CALLGRIND_TOGGLE_COLLECT;
        run(op, side, count_len, count_iters);
        CALLGRIND_TOGGLE_COLLECT;
        printf("%s %s %zu x %llu\n", count_op, count_side, count_len, (unsigned long long)count_iters);
        return 0;
    }

    int rounds = quick ? 5 : 11;
    double target = quick ? 4 : 15;
    printf("libpfn: flush %s, non-temporal %s from %zu bytes; mapping granularity %s\n",
           pfn_flush_method(), pfn_movnt_method(), pfn_movnt_threshold(),
           pfn_pmem_granularity(map) == PFN_GRANULARITY_CACHE_LINE ? "CACHE_LINE" : "?");
    if (!have_pmem())
        printf("note: libpmem-dev is not installed: libpfn is measured alone "
               "(apt-get install libpmem-dev)\n");

    /* ---- libpfn against libpmem */
    struct {
        enum op op;
        size_t len;
    } cases[] = {{MEMCPY, 64},        {MEMCPY, 256},       {MEMCPY, 4096},     {MEMCPY, 65536},
                 {MEMCPY, MAXLEN},    {PERSIST_LINE, 64},  {PERSIST_PAGE, 4096},
                 {MEMSET, 4096},      {MEMSET, MAXLEN}};
    int ncases = sizeof cases / sizeof cases[0];
    FILE *f = csv(out, "persist.csv", "op,bytes,libpfn_ns,libpmem_ns,libpmem_over_libpfn");
    printf("\nMedian of %d interleaved rounds, ns per operation (ratio > 1: libpfn faster)\n", rounds);
    printf("%-16s %8s %12s %12s %9s %10s\n", "operation", "size", "libpfn", "libpmem", "ratio",
           "libpfn GB/s");
    char sz[32];
    for (int c = 0; c < ncases; c++) {
        enum op op = cases[c].op;
        size_t len = cases[c].len;
        int sides = have_pmem() ? 2 : 1;
        uint64_t iters[2];
        double ns[2][32], med[2];
        for (int s = 0; s < sides; s++)
            iters[s] = calibrate(op, s, len, target);
        for (int r = 0; r < rounds; r++)
            for (int s = 0; s < sides; s++) {
                int who = (r & 1) ? sides - 1 - s : s; /* alternate who goes first */
                double t0 = now_ns();
                run(op, who, len, iters[who]);
                ns[who][r] = (now_ns() - t0) / iters[who];
            }
        for (int s = 0; s < sides; s++)
            med[s] = median(ns[s], rounds);
        double ratio = sides == 2 ? med[PMEM] / med[PFN] : 0;
        printf("%-16s %8s %12.1f %12.1f %9.2f %10.2f\n", op_name[op], size_name(len, sz), med[PFN],
               sides == 2 ? med[PMEM] : 0.0, ratio, len / med[PFN]);
        fprintf(f, "%s,%zu,%.2f,%.2f,%.3f\n", op_name[op], len, med[PFN], sides == 2 ? med[PMEM] : 0.0, ratio);
        fflush(stdout);
    }
    fclose(f);

    /* ---- the threshold: non-temporal stores against stores + flushes, by size */
    f = csv(out, "persist_threshold.csv", "bytes,nontemporal_ns,temporal_ns,temporal_over_nontemporal");
    printf("\nlibpfn memcpy_persist forced each way (PFN_F_MEM_NONTEMPORAL / _TEMPORAL), median "
           "of %d interleaved rounds, ns\n", rounds);
    printf("%8s %14s %14s %9s\n", "size", "non-temporal", "stores+flush", "ratio");
    const size_t sweep[] = {64, 128, 256, 512, 1024, 2048, 4096};
    for (size_t i = 0; i < sizeof sweep / sizeof sweep[0]; i++) {
        size_t len = sweep[i];
        uint64_t it_nt = calibrate(MEMCPY_NT, PFN, len, target), it_t = calibrate(MEMCPY_T, PFN, len, target);
        double nt[32], t[32];
        for (int r = 0; r < rounds; r++) {
            double t0 = now_ns();
            run(MEMCPY_NT, PFN, len, it_nt);
            nt[r] = (now_ns() - t0) / it_nt;
            t0 = now_ns();
            run(MEMCPY_T, PFN, len, it_t);
            t[r] = (now_ns() - t0) / it_t;
        }
        double mnt = median(nt, rounds), mt = median(t, rounds);
        printf("%8s %14.1f %14.1f %9.2f\n", size_name(len, sz), mnt, mt, mt / mnt);
        fprintf(f, "%zu,%.2f,%.2f,%.3f\n", len, mnt, mt, mt / mnt);
    }
    fclose(f);

    /* ---- pfn_pmem_persist: flush mode here, msync mode in the helper */
    if (!start_helper(argv)) {
        printf("\nmsync helper did not start with PAGE mappings: flush/msync comparison skipped\n");
    } else {
        f = csv(out, "persist_modes.csv", "op,bytes,flush_ns,msync_tmpfs_ns,msync_disk_ns,"
                                          "tmpfs_over_flush,disk_over_flush");
        printf("\npfn_pmem_persist of dirty bytes, median of %d interleaved rounds, ns per call "
               "(msync mode on tmpfs %s and on the file system of %s)\n", rounds, pmem_dir, disk_dir);
        printf("%-16s %8s %12s %12s %12s %9s %9s\n", "operation", "size", "flush mode",
               "msync tmpfs", "msync disk", "tmpfs/fl", "disk/fl");
        const size_t lens[] = {64, 4096};
        for (size_t i = 0; i < 2; i++) {
            size_t len = lens[i];
            uint64_t it_flush = calibrate(PMEM_PERSIST, PFN, len, target);
            uint64_t it_msync = it_flush / 8 + 1, it_disk = quick ? 20 : 50;
            double fl[32], ms[32], dk[32];
            for (int r = 0; r < rounds; r++) {
                double t0 = now_ns();
                run(PMEM_PERSIST, PFN, len, it_flush);
                fl[r] = (now_ns() - t0) / it_flush;
                ms[r] = helper_round(len, it_msync, 0);
                dk[r] = helper_round(len, it_disk, 1);
            }
            double mf = median(fl, rounds), mm = median(ms, rounds), md = median(dk, rounds);
            printf("%-16s %8s %12.1f %12.1f %12.1f %9.1f %9.1f\n", "pfn_pmem_persist",
                   size_name(len, sz), mf, mm, md, mm / mf, md / mf);
            fprintf(f, "pfn_pmem_persist,%zu,%.2f,%.2f,%.2f,%.2f,%.2f\n", len, mf, mm, md,
                    mm / mf, md / mf);
        }
        fclose(f);
        stop_helper();
    }
    pfn_pmem_unmap(map);
    free(src);
    return 0;
}
