/* Real-code benchmark: dependent pointer chasing through a structure far larger than the
 * caches, beside the systems users would pick instead, in the same run.
 *
 * A random cyclic linked list of N nodes of 64 bytes (a link, a key, a payload) lives in a pmem
 * file on /dev/shm. Each contender has its own copy with its own kind of link, all visiting the
 * nodes in the same random order:
 *   raw          libpfn's copy itself, its links read as byte offsets (handle - base) and
 *                followed as base + offset over one mapping of the whole file: the limit, what
 *                the same code costs with plain pointers into one pool, on the same memory
 *   pmemobj      the link is a PMEMoid (16 bytes) in a libpmemobj pool; pmemobj_direct (PMDK's
 *                header-inline per-thread cache of the last pool)
 *   section      the link is a libpfn byte handle (8 bytes); one read section per operation
 *                (pfn_read_lock_inline), pfn_section_translate_phys_inline per hop
 *   kmap_inline  byte handle; kmap_atomic_pfn_t_inline + kunmap_atomic_pfn_t_inline per node
 *   kmap         byte handle; the exported kmap_atomic_pfn_phys + kunmap_atomic_pfn_t per node
 * For libpfn the file is mapped as R separate mappings (1, 16 or 256 ranges), each registered at
 * the next physical address, so that the translation table (not one base) finds every node.
 *
 * An operation is 8 hops (a lookup in a structure this size chases about that many links): the
 * section contender opens one section per operation, as a storage engine opens one read
 * transaction per get. Two shapes: one chain (each hop waits for the last: pure latency), and 8
 * chains advanced in turn (8 lookups in flight, as a server's independent requests overlap
 * their cache misses). Every run's sum of keys is compared with raw's, so a contender that
 * follows a wrong link is caught, not timed.
 *
 * usage: chase [--quick] [--verify] [--count CONTENDER NODES RANGES CHAINS HOPS]
 *              [--out DIR] [--pmem DIR] */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "pfn.h"
#include "timing.h"
#ifdef HAVE_PMEMOBJ
#include <libpmemobj.h>
#endif
#ifdef HAVE_CALLGRIND
#include <valgrind/callgrind.h>
#else
#define CALLGRIND_TOGGLE_COLLECT
#endif

#define NODE 64ull
#define HOPS_PER_OP 8
#define MAX_CHAINS 8
#define PHYS_BASE (1ull << 40)

static const char *pmem_dir = "/dev/shm";
static char path_pfn[512], path_obj[512];

struct pfn_node {
    pfn_phys_t next; /* byte handle of the next node */
    uint64_t key;
    uint64_t pad[6];
};
#ifdef HAVE_PMEMOBJ
struct obj_node {
    PMEMoid next;
    uint64_t key;
    uint64_t pad[5];
};
_Static_assert(sizeof(struct obj_node) == NODE, "64-byte nodes");
#endif
_Static_assert(sizeof(struct pfn_node) == NODE, "64-byte nodes");

static uint64_t rnd(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void die(const char *what)
{
    fprintf(stderr, "chase: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* ---------------------------------------------------------------- the structures */

struct world {
    uint64_t nodes;
    uint32_t *order; /* the visiting order: a random cycle over all nodes */
    /* raw: one mapping of libpfn's file */
    const char *raw;
    /* libpfn: the file, mapped as `ranges` pieces */
    unsigned ranges;
    pfn_pmem *maps[256];
    pfn_device *dev;
    /* pmemobj */
#ifdef HAVE_PMEMOBJ
    PMEMobjpool *pop;
    PMEMoid obj_first;
#endif
};

/* A random cycle (Sattolo's algorithm): every node is visited once per lap. */
static uint32_t *random_cycle(uint64_t n)
{
    uint32_t *p = malloc(n * sizeof *p);
    if (!p)
        die("malloc");
    for (uint64_t i = 0; i < n; i++)
        p[i] = (uint32_t)i;
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (uint64_t i = n - 1; i > 0; i--) {
        uint64_t j = rnd(&x) % i;
        uint32_t t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
    return p;
}

static void *map_file(const char *path, uint64_t bytes)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || posix_fallocate(fd, 0, (off_t)bytes) != 0)
        die(path);
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        die("mmap");
    /* Touched in address order first, as pmemobj_create does with its pool, so that every
     * copy gets its pages from the kernel the same way. */
    memset(p, 0, bytes);
    return p;
}

static uint64_t key_of(uint64_t i) { return i * 0x9E3779B97F4A7C15ull >> 7; }

static void build(struct world *w, uint64_t nodes)
{
    w->nodes = nodes;
    w->order = random_cycle(nodes);
    uint64_t bytes = nodes * NODE;
    struct pfn_node *p = map_file(path_pfn, bytes);
    for (uint64_t i = 0; i < nodes; i++) {
        uint64_t cur = w->order[i], next = w->order[(i + 1) % nodes];
        p[cur].next = pfn_phys_make(PHYS_BASE + next * NODE, PFN_DEV);
        p[cur].key = key_of(cur);
    }
    w->raw = (const char *)p;
#ifdef HAVE_PMEMOBJ
    uint64_t pool = bytes + bytes / 8 + (64ull << 20);
    unlink(path_obj);
    w->pop = pmemobj_create(path_obj, "chase", pool, 0600);
    if (!w->pop)
        die("pmemobj_create");
    PMEMoid arr;
    if (pmemobj_alloc(w->pop, &arr, bytes, 0, NULL, NULL) != 0)
        die("pmemobj_alloc");
    struct obj_node *o = pmemobj_direct(arr);
    for (uint64_t i = 0; i < nodes; i++) {
        uint64_t cur = w->order[i], next = w->order[(i + 1) % nodes];
        o[cur].next = (PMEMoid){arr.pool_uuid_lo, arr.off + next * NODE};
        o[cur].key = key_of(cur);
    }
    w->obj_first = arr;
#endif
}

/* Maps the libpfn copy as `ranges` mappings, each registered at the next physical address. */
static void attach(struct world *w, unsigned ranges)
{
    uint64_t bytes = w->nodes * NODE, piece = bytes / ranges;
    w->ranges = ranges;
    w->dev = pfn_device_new("chase");
    if (!w->dev)
        die("pfn_device_new");
    for (unsigned i = 0; i < ranges; i++) {
        w->maps[i] = pfn_pmem_map_range(path_pfn, i * piece, piece, 0);
        if (!w->maps[i])
            die("pfn_pmem_map_range");
        int rc = pfn_pmem_register(w->dev, w->maps[i], PHYS_BASE + i * piece);
        if (rc) {
            errno = -rc;
            die("pfn_pmem_register");
        }
    }
}

static void detach(struct world *w)
{
    if (pfn_device_free(w->dev) != 0)
        die("pfn_device_free");
    for (unsigned i = 0; i < w->ranges; i++)
        pfn_pmem_unmap(w->maps[i]);
}

/* ---------------------------------------------------------------- the contenders */

struct cursors {
    uint64_t raw[MAX_CHAINS];
    pfn_phys_t pfn[MAX_CHAINS];
#ifdef HAVE_PMEMOBJ
    PMEMoid obj[MAX_CHAINS];
#endif
};

static void start_cursors(const struct world *w, struct cursors *c, unsigned chains)
{
    for (unsigned k = 0; k < chains; k++) {
        uint64_t n = w->order[(uint64_t)k * w->nodes / chains];
        c->raw[k] = PHYS_BASE + n * NODE;
        c->pfn[k] = pfn_phys_make(PHYS_BASE + n * NODE, PFN_DEV);
#ifdef HAVE_PMEMOBJ
        c->obj[k] = (PMEMoid){w->obj_first.pool_uuid_lo, w->obj_first.off + n * NODE};
#endif
    }
}

typedef uint64_t (*chase_fn)(const struct world *, struct cursors *, unsigned chains, uint64_t ops);

/* The link as a byte offset: the handle's address bits less the pool's physical base. */
static uint64_t chase_raw(const struct world *w, struct cursors *c, unsigned chains, uint64_t ops)
{
    const char *base = w->raw - PHYS_BASE;
    uint64_t sum = 0;
    for (uint64_t op = 0; op < ops; op++)
        for (int h = 0; h < HOPS_PER_OP; h++)
            for (unsigned k = 0; k < chains; k++) {
                const struct pfn_node *n = (const struct pfn_node *)(base + c->raw[k]);
                sum += n->key;
                c->raw[k] = n->next.val & PFN_PHYS_ADDR_MASK;
            }
    return sum;
}

#ifdef HAVE_PMEMOBJ
static uint64_t chase_pmemobj(const struct world *w, struct cursors *c, unsigned chains, uint64_t ops)
{
    (void)w;
    uint64_t sum = 0;
    for (uint64_t op = 0; op < ops; op++)
        for (int h = 0; h < HOPS_PER_OP; h++)
            for (unsigned k = 0; k < chains; k++) {
                const struct obj_node *n = pmemobj_direct(c->obj[k]);
                sum += n->key;
                c->obj[k] = n->next;
            }
    return sum;
}
#endif

static uint64_t chase_section(const struct world *w, struct cursors *c, unsigned chains, uint64_t ops)
{
    (void)w;
    uint64_t sum = 0;
    for (uint64_t op = 0; op < ops; op++) {
        pfn_section s = pfn_read_lock_inline();
        for (int h = 0; h < HOPS_PER_OP; h++)
            for (unsigned k = 0; k < chains; k++) {
                const struct pfn_node *n = pfn_section_translate_phys_inline(&s, c->pfn[k]);
                sum += n->key;
                c->pfn[k] = n->next;
            }
        pfn_read_unlock_inline();
    }
    return sum;
}

static uint64_t chase_kmap_inline(const struct world *w, struct cursors *c, unsigned chains, uint64_t ops)
{
    (void)w;
    uint64_t sum = 0;
    for (uint64_t op = 0; op < ops; op++)
        for (int h = 0; h < HOPS_PER_OP; h++)
            for (unsigned k = 0; k < chains; k++) {
                pfn_phys_t at = c->pfn[k];
                char *page = kmap_atomic_pfn_t_inline(pfn_phys_to_pfn_t(at));
                const struct pfn_node *n = (const struct pfn_node *)(page + (at.val & 4095));
                sum += n->key;
                c->pfn[k] = n->next;
                kunmap_atomic_pfn_t_inline(page);
            }
    return sum;
}

static uint64_t chase_kmap(const struct world *w, struct cursors *c, unsigned chains, uint64_t ops)
{
    (void)w;
    uint64_t sum = 0;
    for (uint64_t op = 0; op < ops; op++)
        for (int h = 0; h < HOPS_PER_OP; h++)
            for (unsigned k = 0; k < chains; k++) {
                const struct pfn_node *n = kmap_atomic_pfn_phys(c->pfn[k]);
                sum += n->key;
                c->pfn[k] = n->next;
                kunmap_atomic_pfn_t((void *)n);
            }
    return sum;
}

struct contender {
    const char *name;
    chase_fn fn;
};

static const struct contender contenders[] = {
    {"raw", chase_raw},
#ifdef HAVE_PMEMOBJ
    {"pmemobj", chase_pmemobj},
#endif
    {"section", chase_section},
    {"kmap_inline", chase_kmap_inline},
    {"kmap", chase_kmap},
};
#define NCONT (sizeof contenders / sizeof contenders[0])

/* ---------------------------------------------------------------- driver */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median ns per hop of each contender over `rounds` interleaved rounds. Checks the sums. */
static int measure(const struct world *w, unsigned chains, uint64_t ops, int rounds, double *median)
{
    double t[NCONT][15];
    int bad = 0;
    for (int r = 0; r < rounds; r++) {
        uint64_t want = 0;
        for (size_t c = 0; c < NCONT; c++) {
            struct cursors cur;
            start_cursors(w, &cur, chains);
            /* Warm the walk's start (and this thread's reader state) a little. */
            contenders[c].fn(w, &cur, chains, 4);
            start_cursors(w, &cur, chains);
            double t0 = now_ns();
            uint64_t sum = contenders[c].fn(w, &cur, chains, ops);
            t[c][r] = (now_ns() - t0) / (double)(ops * HOPS_PER_OP * chains);
            if (c == 0)
                want = sum;
            else if (sum != want) {
                fprintf(stderr, "chase: %s followed a wrong link (sum %llx, raw %llx)\n",
                        contenders[c].name, (unsigned long long)sum, (unsigned long long)want);
                bad++;
            }
        }
    }
    for (size_t c = 0; c < NCONT; c++) {
        qsort(t[c], (size_t)rounds, sizeof(double), cmp_double);
        median[c] = t[c][rounds / 2];
    }
    return bad;
}

static void paths(void)
{
    snprintf(path_pfn, sizeof path_pfn, "%s/libpfn-chase-pfn-%d.pmem", pmem_dir, (int)getpid());
    snprintf(path_obj, sizeof path_obj, "%s/libpfn-chase-obj-%d.pmem", pmem_dir, (int)getpid());
}

static void cleanup(struct world *w)
{
    munmap((void *)w->raw, w->nodes * NODE);
#ifdef HAVE_PMEMOBJ
    if (w->pop)
        pmemobj_close(w->pop);
#endif
    unlink(path_pfn);
    unlink(path_obj);
    free(w->order);
}

/* Nodes rounded up so that the file splits into 256 page-multiple pieces. */
static uint64_t round_nodes(uint64_t n)
{
    uint64_t q = 256 * 4096 / NODE;
    return (n + q - 1) / q * q;
}

int main(int argc, char **argv)
{
    int quick = 0, verify = 0;
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--verify"))
            verify = 1;
        else if (!strcmp(argv[i], "--out") && i + 1 < argc)
            out = argv[++i];
        else if (!strcmp(argv[i], "--pmem") && i + 1 < argc)
            pmem_dir = argv[++i];
        else if (!strcmp(argv[i], "--count") && i + 5 < argc) {
            /* One contender's loop alone, for callgrind (collection toggled around it). */
            const char *name = argv[++i];
            uint64_t nodes = round_nodes(strtoull(argv[++i], NULL, 0));
            unsigned ranges = (unsigned)atoi(argv[++i]), chains = (unsigned)atoi(argv[++i]);
            uint64_t hops = strtoull(argv[++i], NULL, 0);
            paths();
            struct world w = {0};
            build(&w, nodes);
            attach(&w, ranges);
            for (size_t c = 0; c < NCONT; c++) {
                if (strcmp(contenders[c].name, name))
                    continue;
                struct cursors cur;
                start_cursors(&w, &cur, chains);
                contenders[c].fn(&w, &cur, chains, 4);
                start_cursors(&w, &cur, chains);
                CALLGRIND_TOGGLE_COLLECT;
                uint64_t sum = contenders[c].fn(&w, &cur, chains, hops / HOPS_PER_OP / chains);
                CALLGRIND_TOGGLE_COLLECT;
                printf("%llu\n", (unsigned long long)sum);
            }
            detach(&w);
            cleanup(&w);
            return 0;
        } else if (!strcmp(argv[i], "--list")) {
            for (size_t c = 0; c < NCONT; c++)
                printf("%s\n", contenders[c].name);
            return 0;
        } else {
            fprintf(stderr, "usage: chase [--quick] [--verify] [--list] [--count C NODES RANGES CHAINS HOPS] [--out DIR] [--pmem DIR]\n");
            return 2;
        }
    }
    paths();
    if (verify) {
        /* Small lists, every contender, both shapes, 1 and 16 ranges: the sums must agree. */
        int bad = 0, checks = 0;
        struct world w = {0};
        build(&w, round_nodes(20000));
        for (unsigned ranges = 1; ranges <= 16; ranges *= 16) {
            attach(&w, ranges);
            for (unsigned chains = 1; chains <= MAX_CHAINS; chains *= MAX_CHAINS) {
                double m[NCONT];
                bad += measure(&w, chains, 2000, 1, m);
                checks += (int)NCONT - 1;
            }
            detach(&w);
        }
        cleanup(&w);
        printf("chase-verify: %d passed, %d failed\n", checks - bad, bad);
        return bad ? 1 : 0;
    }

    FILE *csv = NULL;
    if (out) {
        char p[512];
        snprintf(p, sizeof p, "%s/chase.csv", out);
        csv = fopen(p, "w");
        if (csv) {
            fprintf(csv, "nodes,ranges,chains");
            for (size_t c = 0; c < NCONT; c++)
                fprintf(csv, ",%s_ns_per_hop", contenders[c].name);
            fprintf(csv, "\n");
        }
    }
    const uint64_t sizes[] = {1000000, 10000000};
    const unsigned range_counts[] = {1, 16, 256};
    int rounds = quick ? 3 : 7, bad = 0;
    printf("Pointer chasing, ns per hop (median of %d interleaved runs); ratios to raw and to "
           "pmemobj in the same run\n", rounds);
    for (size_t si = 0; si < (quick ? 1u : 2u); si++) {
        struct world w = {0};
        double t0 = now_ns();
        build(&w, round_nodes(sizes[si]));
        fprintf(stderr, "chase: %llu nodes (%llu MiB per copy) built in %.1f s\n",
                (unsigned long long)w.nodes, (unsigned long long)(w.nodes * NODE >> 20),
                (now_ns() - t0) / 1e9);
        for (size_t ri = 0; ri < 3; ri++) {
            attach(&w, range_counts[ri]);
            for (unsigned chains = 1; chains <= MAX_CHAINS; chains *= MAX_CHAINS) {
                double m[NCONT];
                uint64_t ops = (quick ? 100000 : 250000) / chains;
                bad += measure(&w, chains, ops, rounds, m);
                printf("%9llu nodes %3u ranges %u chain%s:", (unsigned long long)w.nodes,
                       range_counts[ri], chains, chains > 1 ? "s" : " ");
                for (size_t c = 0; c < NCONT; c++)
                    printf("  %s %.1f", contenders[c].name, m[c]);
                printf("\n     vs raw:");
                for (size_t c = 1; c < NCONT; c++)
                    printf("  %s %.2fx", contenders[c].name, m[c] / m[0]);
#ifdef HAVE_PMEMOBJ
                printf("\n vs pmemobj:");
                for (size_t c = 2; c < NCONT; c++)
                    printf("  %s %.2fx", contenders[c].name, m[c] / m[1]);
#endif
                printf("\n");
                fflush(stdout);
                if (csv) {
                    fprintf(csv, "%llu,%u,%u", (unsigned long long)w.nodes, range_counts[ri], chains);
                    for (size_t c = 0; c < NCONT; c++)
                        fprintf(csv, ",%.2f", m[c]);
                    fprintf(csv, "\n");
                }
            }
            detach(&w);
        }
        cleanup(&w);
    }
    if (csv)
        fclose(csv);
    return bad ? 1 : 0;
}
