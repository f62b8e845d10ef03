/* Churn: reader threads kmap random pfns (some nested across ranges, some on threads that exit
 * holding them; the exported calls and the header's inline ones; byte handles), check each
 * page's pattern and write to it, while a writer keeps registering fresh memory and
 * unregistering old ranges, munmapping each one the moment its unregister returns. Beside
 * them: a thread reading through thread-bound read sections (PFN_SECTION_SCOPE, inline
 * translation with lengths), a pair of threads passing object-bound sections from one to the
 * other (opened on one, checked and closed on the other), and a thread that keeps sending
 * signals to the readers, whose handler kmaps and opens sections while the interrupted
 * reader is anywhere in its own kmap, kunmap or section; and a thread copying through
 * scatterlists (entries on two ranges, one crossing from one into the other; copies out,
 * durable writes read back, the mapping iterator); and two pin workers that pin random frames,
 * check them through their page descriptors (a quarter of the slots have a memmap in DRAM, a
 * quarter one at the head of the range) while holding the pin across a pause, and release
 * every fourth pin on the other worker's thread. A reader still using a range after
 * its grace period would fault (or see another range's pattern): the test proves the grace
 * period, not just the bookkeeping.
 *
 * It stops on work done, not on wall time: it runs until every reader has checked its minimum
 * of kmaps and the writer has registered and unregistered its minimum of ranges under them
 * (lower minimums with PFN_TEST_QUICK, for valgrind), so a loaded machine gets the same
 * coverage as an idle one, later. Only a hang reaches the cap, and then the test fails saying
 * so. PFN_STRESS_SECONDS keeps it going at least that long (a soak). PFN_TEST_READERS (1 to
 * 64, default 3) sets the number of kmap readers: `make test` also runs it with 64 on this
 * 2-CPU machine, each doing a share of the same total reads. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"

#define PAGE 4096ull
#define SLOTS 64          /* physical slots the writer cycles through */
#define SLOT_PAGES 16     /* pages per range */
#define PHYS (6ull << 40)
#define MAX_READERS 64
#define MAGIC 0x5EED5EED00000000ull
#define HANG_CAP 300      /* seconds; the default run takes a few */
#define BATCH 64          /* a reader publishes its counts every BATCH kmaps */

struct slot {
    char *mem; /* current mapping, or NULL */
    uint64_t gen;
};

static struct slot slots[SLOTS];
static pfn_device *dev;
static atomic_int stop;
static atomic_ullong bad_pattern;
/* Readers set up (pfn_thread_init): signals are sent only after that, since a handler that
 * interrupts the thread's own set-up gets EAGAIN (as documented), not a mapping. */
static atomic_int readers_ready;
/* Where a bad read was seen (the first one's line), for the report. */
static atomic_int bad_line;
#define BAD() (atomic_fetch_add(&bad_pattern, 1), atomic_compare_exchange_strong(&bad_line, &(int){0}, __LINE__))

/* The work the run must cover: one entry per kind (new kinds of worker add theirs here). */
enum {
    W_REGISTERED,
    W_UNREGISTERED,
    W_NESTED,
    W_EXITS,
    W_SECTIONS,
    W_OBJECTS,
    W_HANDLER,
    W_SG_COPIES,
    W_SG_WRITES,
    W_PINS,
    W_PIN_HANDOFFS,
    W_PAGES,
    W_KINDS /* reader i counts in work[W_KINDS + i] */
};
static int readers_n = 3;
static char reader_what[MAX_READERS][48];
static struct check_work work[W_KINDS + MAX_READERS] = {
    [W_REGISTERED] = {"writer: ranges registered under readers", 0, 0},
    [W_UNREGISTERED] = {"writer: ranges unregistered and unmapped under readers", 0, 0},
    [W_NESTED] = {"readers: nested triples across ranges", 0, 0},
    [W_EXITS] = {"threads exited holding a kmap", 0, 0},
    [W_SECTIONS] = {"section reader: pages checked in thread-bound sections", 0, 0},
    [W_OBJECTS] = {"object-bound sections opened on one thread, checked and closed on another", 0, 0},
    [W_HANDLER] = {"signal handlers: pages checked while their thread was reading", 0, 0},
    [W_SG_COPIES] = {"scatterlist worker: lists over two ranges copied out and checked", 0, 0},
    [W_SG_WRITES] = {"scatterlist worker: lists written and read back in one section", 0, 0},
    [W_PINS] = {"pin workers: pins held across a pause, frames checked before and after", 0, 0},
    [W_PIN_HANDOFFS] = {"pin workers: pins released on the other worker's thread", 0, 0},
    [W_PAGES] = {"pin workers: page descriptors checked both ways and referenced", 0, 0},
};

/* Under valgrind (PFN_TEST_QUICK) one thread runs at a time: the busy threads yield now and
 * then, so that the writer's grace periods (which wait for every reader) make progress. */
static int quick;

static void maybe_yield(void)
{
    static _Thread_local unsigned n;
    if (quick && (++n & 255) == 0)
        sched_yield();
}

static void set_minimums(void)
{
    unsigned long long kmaps = quick ? 5000 : 1000000, ranges = quick ? 40 : 3000;
    /* Many readers share the work of three: the run covers the same kmaps, over more threads. */
    unsigned long long each = readers_n > 3 ? kmaps * 3 / (unsigned long long)readers_n : kmaps;
    for (int i = 0; i < readers_n; i++) {
        snprintf(reader_what[i], sizeof reader_what[i], "reader %d: kmaps checked", i);
        work[W_KINDS + i] = (struct check_work){reader_what[i], each, 0};
    }
    /* With 64 busy readers on 2 CPUs every grace period waits for each preempted reader to
     * be scheduled again (about a scheduler round, 0.1 to 0.3 s here): fewer ranges, the
     * same kinds of work. */
    if (readers_n > 3)
        ranges = quick ? 20 : 100;
    work[W_REGISTERED].want = ranges;
    work[W_UNREGISTERED].want = ranges;
    work[W_NESTED].want = kmaps / 16;
    work[W_EXITS].want = quick || readers_n > 3 ? 1 : 32;
    work[W_SECTIONS].want = kmaps;
    work[W_OBJECTS].want = quick ? 100 : readers_n > 3 ? 5000 : 50000;
    work[W_HANDLER].want = quick ? 10 : readers_n > 3 ? 1000 : 20000;
    work[W_SG_COPIES].want = quick ? 100 : readers_n > 3 ? 2000 : 20000;
    work[W_SG_WRITES].want = quick ? 30 : readers_n > 3 ? 500 : 5000;
    work[W_PINS].want = quick ? 60 : readers_n > 3 ? 500 : 5000;
    work[W_PIN_HANDOFFS].want = quick ? 10 : readers_n > 3 ? 100 : 1000;
    work[W_PAGES].want = quick ? 20 : readers_n > 3 ? 200 : 2000;
}

static uint64_t phys_of(int s, int page) { return PHYS + ((uint64_t)s * SLOT_PAGES + page) * PAGE; }

/* Slot s % 4 == 1 has a memmap in DRAM, s % 4 == 3 one at the head of its range (whose first
 * page then holds it and is not translatable); the others have none. */
static int register_slot(int s, char *mem)
{
    pfn_resource r = {phys_of(s, 0), phys_of(s, SLOT_PAGES) - 1, NULL};
    if (s % 4 == 1)
        return pfn_register_range_memmap(dev, &r, mem, PFN_MEMMAP_DRAM);
    if (s % 4 == 3)
        return pfn_register_range_memmap(dev, &r, mem, PFN_MEMMAP_IN_RANGE);
    return devm_register_kmap_pfn_range(dev, &r, mem);
}

/* Each page starts with its physical address ^ MAGIC (and ends with its complement, for
 * copies of whole pages): a translation to the wrong memory, or to memory reused for another
 * range, cannot pass the check. */
static char *make_range(int s)
{
    char *mem = mmap(NULL, SLOT_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(mem != MAP_FAILED);
    for (int p = 0; p < SLOT_PAGES; p++) {
        *(uint64_t *)(mem + p * PAGE) = phys_of(s, p) ^ MAGIC;
        *(uint64_t *)(mem + p * PAGE + PAGE - 8) = ~(phys_of(s, p) ^ MAGIC);
    }
    return mem;
}

static uint64_t rnd(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static int check_page(const char *a, uint64_t phys)
{
    return *(const volatile uint64_t *)a == (phys ^ MAGIC);
}

#define EXITERS 16
static pthread_t exiters[EXITERS];
static bool exiter_used[EXITERS];

static void *hold_and_exit(void *arg)
{
    uint64_t phys = (uint64_t)(uintptr_t)arg;
    char *a = kmap_atomic_pfn_t(phys_to_pfn_t(phys, 0));
    if (a) {
        if (!check_page(a, phys))
            BAD();
        check_work_add(&work[W_EXITS], 1);
    }
    return NULL; /* exits holding it: the exit must release it */
}

/* Reader 0 uses the exported calls, reader 1 the header's inline ones, reader 2 byte handles
 * (to a byte inside the page). */
static char *map_page(int who, uint64_t phys)
{
    if (who == 1)
        return kmap_atomic_pfn_t_inline(phys_to_pfn_t(phys, PFN_DEV));
    if (who == 2) {
        char *b = kmap_atomic_pfn_phys(pfn_phys_make(phys + 24, PFN_DEV));
        return b ? b - 24 : NULL;
    }
    return kmap_atomic_pfn_t(phys_to_pfn_t(phys, PFN_DEV));
}

static void unmap_page(int who, char *a)
{
    if (who == 1)
        kunmap_atomic_pfn_t_inline(a);
    else
        kunmap_atomic_pfn_t(who == 2 ? a + 24 : a);
}

static void *reader(void *arg)
{
    int who = (int)((uintptr_t)arg % 3);
    struct check_work *mine = &work[W_KINDS + (uintptr_t)arg];
    uint64_t x = 0x9E3779B97F4A7C15ull ^ (uintptr_t)arg, n = 0, nested = 0;
    REQUIRE(pfn_thread_init() == 0); /* its signal handler may kmap from now on */
    atomic_fetch_add(&readers_ready, 1);
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        uint64_t r = rnd(&x);
        uint64_t phys = phys_of((int)(r % SLOTS), (int)((r >> 32) % SLOT_PAGES));
        char *a = map_page(who, phys);
        if (!a) {
            if (errno != ENXIO)
                BAD();
            continue;
        }
        if (!check_page(a, phys))
            BAD();
        /* Reader 0, under its kmap, looks up the frame's descriptor (slots with a memmap): the
         * lookup by pfn may miss only once an unregister has begun; a descriptor found names
         * this frame and its address. */
        if (who == 0 && (r % SLOTS) % 2 == 1 && (r & 0x300) == 0) {
            pfn_t f = phys_to_pfn_t(phys, PFN_DEV | PFN_MAP);
            struct pfn_page *pg = pfn_t_to_page(f);
            if (pg ? pfn_page_to_pfn_t(pg).val != f.val || pfn_page_address(pg) != a : errno != ENXIO)
                BAD();
        }
        /* A write through the mapping, to words 1..3 only: the scatterlist worker checks bytes
         * from 64 on. */
        ((volatile uint64_t *)a)[1 + (uintptr_t)arg % 3] = r;
        if ((r & 7) == 0) {
            /* Nested: two more pages of (likely) other ranges, released in mixed order. */
            uint64_t p2 = phys_of((int)(rnd(&x) % SLOTS), 0), p3 = phys_of((int)(rnd(&x) % SLOTS), 1);
            char *b = kmap_atomic_pfn_t(phys_to_pfn_t(p2, 0));
            char *c = kmap_atomic_pfn_t(phys_to_pfn_t(p3, 0));
            if ((b && !check_page(b, p2)) || (c && !check_page(c, p3)))
                BAD();
            kunmap_atomic_pfn_t(b);
            if (!check_page(a, phys)) /* still held: still valid */
                BAD();
            unmap_page(who, a);
            kunmap_atomic_pfn_t(c);
            nested++;
        } else {
            unmap_page(who, a);
        }
        maybe_yield();
        if (++n == BATCH) {
            check_work_add(mine, n);
            check_work_add(&work[W_NESTED], nested);
            n = nested = 0;
        }
    }
    check_work_add(mine, n);
    check_work_add(&work[W_NESTED], nested);
    return NULL;
}

/* Thread-bound sections: a scope, several translations (inline, with lengths), each page
 * checked while the section is open. */
static void *section_reader(void *arg)
{
    (void)arg;
    uint64_t x = 0xC0FFEE, n = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        PFN_SECTION_SCOPE(s);
        for (int i = 0; i < 8; i++) {
            uint64_t r = rnd(&x);
            int slot = (int)(r % SLOTS), page = (int)((r >> 32) % SLOT_PAGES);
            uint64_t len = 0;
            struct pfn_section *cur = pfn_section_current_inline();
            char *a = pfn_section_translate_len_inline(cur, phys_to_pfn_t(phys_of(slot, page), 0), &len);
            if (!a)
                continue;
            /* The length covers at least the rest of the range (more when the next slot's
             * range happens to follow it in memory too), whose last page must check. */
            uint64_t last = phys_of(slot, SLOT_PAGES - 1);
            if (!check_page(a, phys_of(slot, page)) || len < (uint64_t)(SLOT_PAGES - page) * PAGE ||
                len % PAGE != 0 || !check_page(a + (SLOT_PAGES - 1 - page) * PAGE, last))
                BAD();
            n++;
        }
        maybe_yield();
        if (n >= BATCH) {
            check_work_add(&work[W_SECTIONS], n);
            n = 0;
        }
    }
    check_work_add(&work[W_SECTIONS], n);
    return NULL;
}

/* Object-bound sections handed from one thread to another through a ring (one producer, one
 * consumer): the opener translates and checks a page, the other thread checks it again and
 * closes the section. */
struct handoff {
    pfn_section s;
    char *a;
    uint64_t phys;
};
#define RING 64
static struct handoff ring[RING];
static atomic_ulong ring_head, ring_tail; /* written by the opener / the closer */

static void *section_opener(void *arg)
{
    (void)arg;
    uint64_t x = 0xFEED;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        unsigned long head = atomic_load(&ring_head);
        if (head - atomic_load(&ring_tail) == RING) {
            sched_yield();
            continue;
        }
        struct handoff *h = &ring[head % RING];
        if (pfn_section_open(&h->s) != 0) {
            BAD();
            continue;
        }
        uint64_t r = rnd(&x);
        h->phys = phys_of((int)(r % SLOTS), (int)((r >> 32) % SLOT_PAGES));
        h->a = pfn_section_translate(&h->s, phys_to_pfn_t(h->phys, 0));
        if (h->a && !check_page(h->a, h->phys))
            BAD();
        atomic_store(&ring_head, head + 1);
    }
    return NULL;
}

/* Closes what the ring holds; returns how many. */
static unsigned long close_handoffs(void)
{
    unsigned long tail = atomic_load(&ring_tail), head = atomic_load(&ring_head), n = 0;
    for (; tail != head; tail++, n++) {
        struct handoff *h = &ring[tail % RING];
        /* Still open (on the other thread's behalf): still valid here. */
        if (h->a && !check_page(h->a, h->phys))
            BAD();
        if (pfn_section_close(&h->s) != 0 || pfn_section_close(&h->s) != -EINVAL)
            BAD();
    }
    atomic_store(&ring_tail, tail);
    check_work_add(&work[W_OBJECTS], n);
    return n;
}

static void *section_closer(void *arg)
{
    (void)arg;
    while (!atomic_load_explicit(&stop, memory_order_relaxed))
        if (close_handoffs() == 0)
            sched_yield();
    return NULL;
}

/* Scatterlists over slots s and s + 1: four whole pages (patterns at both ends) and an entry
 * crossing from slot s's last page into slot s + 1's first (the end of one page, the start of
 * the next: the two ranges are physically adjacent, in memory most likely not). Copied
 * out and checked; every 8th list also walked with the mapping iterator. Then four small
 * entries (bytes 64.. of the same pages, nobody else's) are written, durably every other
 * time, and read back inside an outer section: when both succeed they must agree, since no
 * unregister can finish (and no new range take the place) while the section is open. The
 * copies are long enough that the thread is often preempted inside one: a copy that went on
 * after its range's grace period would fault, since the writer munmaps at once. */
#define SG_OUT (4 * PAGE + 16)

static void sg_page_list(struct pfn_sg *sg, const uint64_t *phys, int s)
{
    pfn_sg_init_table(sg, 5);
    for (int i = 0; i < 4; i++)
        if (pfn_sg_set_pfn(&sg[i], phys_to_pfn_t(phys[i], PFN_DEV), (uint32_t)PAGE, 0) != 0)
            BAD();
    if (pfn_sg_set_pfn(&sg[4], phys_to_pfn_t(phys_of(s, SLOT_PAGES - 1), PFN_DEV), 16, PAGE - 8) != 0)
        BAD();
}

static int sg_bytes_ok(const unsigned char *b, const uint64_t *phys, int s)
{
    uint64_t w, z;
    for (int i = 0; i < 4; i++) {
        memcpy(&w, b + i * PAGE, 8);
        memcpy(&z, b + i * PAGE + PAGE - 8, 8);
        if (w != (phys[i] ^ MAGIC) || z != ~(phys[i] ^ MAGIC))
            return 0;
    }
    memcpy(&w, b + 4 * PAGE, 8);
    if (w != ~(phys_of(s, SLOT_PAGES - 1) ^ MAGIC))
        return 0;
    memcpy(&w, b + 4 * PAGE + 8, 8);
    return w == (phys_of(s + 1, 0) ^ MAGIC);
}

static void *sg_worker(void *arg)
{
    (void)arg;
    uint64_t x = 0x5C5C5C, copies = 0, writes = 0, round = 0;
    struct pfn_sg sg[5], w[4];
    static unsigned char out[SG_OUT];
    unsigned char in[32], back[32];
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        int s = (int)(rnd(&x) % (SLOTS - 1));
        uint64_t phys[4];
        for (int i = 0; i < 4; i++)
            phys[i] = phys_of(s + (i & 1), (int)(rnd(&x) % SLOT_PAGES));
        sg_page_list(sg, phys, s);
        ptrdiff_t n = pfn_sg_copy_to_buffer(sg, 5, out, SG_OUT);
        if (n == (ptrdiff_t)SG_OUT) {
            if (!sg_bytes_ok(out, phys, s))
                BAD();
            copies++;
        } else if (n != -ENXIO) {
            BAD();
        }
        if ((++round & 7) == 0) {
            pfn_sg_miter m;
            if (pfn_sg_miter_start(&m, sg, 5, PFN_SG_MITER_FROM_SG) != 0)
                BAD();
            size_t got = 0;
            int rc;
            while ((rc = pfn_sg_miter_next(&m)) == 1 && got + m.length <= SG_OUT) {
                memcpy(out + got, m.addr, m.length);
                got += m.length;
            }
            if (pfn_sg_miter_stop(&m) != 0 || (rc != 0 && rc != -ENXIO) || (rc == 0 && !sg_bytes_ok(out, phys, s)))
                BAD();
        }
        pfn_sg_init_table(w, 4);
        for (int i = 0; i < 4; i++)
            if (pfn_sg_set_pfn(&w[i], phys_to_pfn_t(phys[i], 0), 8, 64 + 8 * (uint32_t)i) != 0)
                BAD();
        for (int i = 0; i < 32; i++)
            in[i] = (unsigned char)rnd(&x);
        pfn_section sec = pfn_read_lock();
        ptrdiff_t n1 = pfn_sg_pcopy_from_buffer(w, 4, in, sizeof in, 0, (round & 1) ? PFN_SG_PERSIST : 0);
        ptrdiff_t n2 = pfn_sg_copy_to_buffer(w, 4, back, sizeof back);
        pfn_read_unlock();
        (void)sec;
        if (n1 == (ptrdiff_t)sizeof in && n2 == (ptrdiff_t)sizeof back) {
            if (memcmp(in, back, sizeof in) != 0)
                BAD();
            writes++;
        } else if ((n1 != (ptrdiff_t)sizeof in && n1 != -ENXIO) || (n2 != (ptrdiff_t)sizeof back && n2 != -ENXIO)) {
            BAD();
        }
        /* A thread that is inside a section most of the time, preempted there, stretches the
         * writer's grace periods by a scheduling round: this one pauses now and then (outside
         * any section), as the signaller does. Pacing only: nothing waits on it. */
        if ((round & 3) == 0)
            usleep(quick ? 500 : 20);
        if (copies + writes >= BATCH) {
            check_work_add(&work[W_SG_COPIES], copies);
            check_work_add(&work[W_SG_WRITES], writes);
            copies = writes = 0;
        }
    }
    check_work_add(&work[W_SG_COPIES], copies);
    check_work_add(&work[W_SG_WRITES], writes);
    return NULL;
}

/* The signal handler: a kmap and a section of random pages, checked, on a thread that was
 * interrupted anywhere in its own reading. */
static _Thread_local uint64_t handler_rng = 0x51C;

static void on_signal(int sig)
{
    (void)sig;
    int saved = errno;
    uint64_t r = rnd(&handler_rng);
    uint64_t phys = phys_of((int)(r % SLOTS), (int)((r >> 32) % SLOT_PAGES));
    char *a = kmap_atomic_pfn_t(phys_to_pfn_t(phys, 0));
    if (a) {
        if (!check_page(a, phys))
            BAD();
        kunmap_atomic_pfn_t(a);
        check_work_add(&work[W_HANDLER], 1);
    } else if (errno != ENXIO) {
        BAD();
    }
    pfn_section s = pfn_read_lock_inline();
    r = rnd(&handler_rng);
    phys = phys_of((int)(r % SLOTS), (int)((r >> 32) % SLOT_PAGES));
    a = pfn_section_translate_inline(&s, phys_to_pfn_t(phys, 0));
    if (a && !check_page(a, phys))
        BAD();
    pfn_read_unlock_inline();
    errno = saved;
}

/* Pin workers: a pin of a random frame, checked through pfn_t_to_virt and (when its slot has
 * a memmap) its page descriptor, both ways; held across a pause (the "I/O"), checked again,
 * then released, or every fourth time swapped with the other worker's (each releases the
 * pin the other took). The writer unmaps a range as soon as its unregister returns, so a pin
 * that did not hold the range would fault or see another range's pattern. */
struct held_pin {
    pfn_dev_pagemap *pin;
    uint64_t phys;
    char *addr;
};
static _Atomic(struct held_pin *) pin_exchange;

static int held_ok(const struct held_pin *h) { return check_page(h->addr, h->phys); }

static void release_held(struct held_pin *h)
{
    if (!held_ok(h))
        BAD();
    if (pfn_unpin(h->pin) != 0)
        BAD();
    free(h);
}

static void *pin_worker(void *arg)
{
    uint64_t x = 0xB1B1B1 ^ (uintptr_t)arg, pins = 0, handoffs = 0, pages = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        uint64_t r = rnd(&x);
        int s = (int)(r % SLOTS), pg = (int)((r >> 32) % SLOT_PAGES);
        uint64_t phys = phys_of(s, pg);
        pfn_t pfn = phys_to_pfn_t(phys, PFN_DEV | PFN_MAP);
        /* The address and descriptor come with the pin (pfn_pin_frame): lookups by pfn would
         * miss the range once the writer has begun to unregister it, pin or no pin. */
        void *addr = NULL;
        struct pfn_page *page = NULL;
        pfn_dev_pagemap *pin = (r & 0x10000) ? pfn_pin_frame(pfn, &addr, &page) : pfn_pin(pfn);
        if (!pin) {
            if (errno != ENXIO)
                BAD();
            continue;
        }
        if (!addr) {
            /* A plain pin: look up by pfn, which may miss (ENXIO) only if an unregister has
             * begun meanwhile. */
            addr = pfn_t_to_virt(pfn);
            page = pfn_t_to_page(pfn);
            if (!addr) {
                if (errno != ENXIO)
                    BAD();
                pfn_unpin(pin);
                continue;
            }
            if (!page && s % 2 == 1) {
                pfn_unpin(pin);
                continue;
            }
        }
        struct held_pin *h = malloc(sizeof *h);
        REQUIRE(h != NULL);
        *h = (struct held_pin){pin, phys, addr};
        if (!held_ok(h)) {
            BAD();
            pfn_unpin(pin);
            free(h);
            continue;
        }
        if (s % 2 == 1) {
            if (!page || pfn_page_to_pfn_t(page).val != pfn.val || pfn_page_address(page) != h->addr ||
                pfn_get_page(page) < 1) {
                BAD();
            } else {
                page->data = phys;
                if (pfn_put_page(page) < 0)
                    BAD();
                pages++;
            }
        } else if (page) {
            BAD();
        }
        /* The pause a pin is for: blocking work while the range stays. */
        if ((r & 3) == 0)
            usleep(quick ? 200 : 20);
        else
            sched_yield();
        if (!held_ok(h) || (page && page->data != phys && page->data != 0))
            BAD();
        if (((r >> 8) & 3) == 0) {
            struct held_pin *other = atomic_exchange(&pin_exchange, h);
            if (other) {
                release_held(other);
                handoffs++;
            }
        } else {
            release_held(h);
        }
        pins++;
        if (pins >= 16) {
            check_work_add(&work[W_PINS], pins);
            check_work_add(&work[W_PIN_HANDOFFS], handoffs);
            check_work_add(&work[W_PAGES], pages);
            pins = handoffs = pages = 0;
        }
    }
    check_work_add(&work[W_PINS], pins);
    check_work_add(&work[W_PIN_HANDOFFS], handoffs);
    check_work_add(&work[W_PAGES], pages);
    return NULL;
}

static pthread_t readers[MAX_READERS];

static void *signaller(void *arg)
{
    (void)arg;
    unsigned i = 0;
    while (atomic_load(&readers_ready) < readers_n)
        sched_yield();
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        pthread_kill(readers[i++ % (unsigned)readers_n], SIGUSR1);
        if ((i & 15) == 0)
            usleep(quick ? 500 : 50);
    }
    return NULL;
}

int main(void)
{
    quick = getenv("PFN_TEST_QUICK") != NULL;
    const char *nr = getenv("PFN_TEST_READERS");
    if (nr && *nr) {
        readers_n = atoi(nr);
        REQUIRE(readers_n >= 1 && readers_n <= MAX_READERS);
    }
    set_minimums();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    REQUIRE(sigaction(SIGUSR1, &sa, NULL) == 0);
    dev = pfn_device_new("churn");
    REQUIRE(dev != NULL);
    for (int s = 0; s < SLOTS; s += 2) {
        slots[s].mem = make_range(s);
        REQUIRE(register_slot(s, slots[s].mem) == 0);
    }
    pthread_t *t = readers, others[7];
    for (int i = 0; i < readers_n; i++)
        REQUIRE(pthread_create(&t[i], NULL, reader, (void *)(uintptr_t)i) == 0);
    REQUIRE(pthread_create(&others[0], NULL, section_reader, NULL) == 0);
    REQUIRE(pthread_create(&others[1], NULL, section_opener, NULL) == 0);
    REQUIRE(pthread_create(&others[2], NULL, section_closer, NULL) == 0);
    REQUIRE(pthread_create(&others[3], NULL, signaller, NULL) == 0);
    REQUIRE(pthread_create(&others[4], NULL, sg_worker, NULL) == 0);
    REQUIRE(pthread_create(&others[5], NULL, pin_worker, (void *)1) == 0);
    REQUIRE(pthread_create(&others[6], NULL, pin_worker, (void *)2) == 0);

    /* The writer churns until every kind of work reached its minimum. */
    struct check_run run;
    check_run_start(&run, "stress_churn", work, W_KINDS + (size_t)readers_n, HANG_CAP);
    uint64_t x = 12345, steps = 0, fails = 0;
    while (check_run_more(&run)) {
        int s = (int)(rnd(&x) % SLOTS);
        if (slots[s].mem) {
            int rc = pfn_unregister_range(dev, phys_of(s, 0));
            if (rc == -EBUSY)
                continue; /* a pin worker holds a page reference for a moment: try later */
            if (rc != 0 && fails++ < 3)
                fprintf(stderr, "stress_churn: unregister -> %d: %s\n", rc, pfn_errormsg());
            /* The grace period is over: unmap at once. A late reader would now fault. */
            fails += munmap(slots[s].mem, SLOT_PAGES * PAGE) != 0;
            slots[s].mem = NULL;
            check_work_add(&work[W_UNREGISTERED], 1);
        } else {
            slots[s].mem = make_range(s);
            int rr = register_slot(s, slots[s].mem);
            if (rr != 0 && fails++ < 3)
                fprintf(stderr, "stress_churn: register slot %d -> %d: %s\n", s, rr, pfn_errormsg());
            check_work_add(&work[W_REGISTERED], 1);
        }
        if ((++steps & 63) == 0) {
            pthread_t e;
            /* At most EXITERS of them at once (joined in turn): valgrind, which runs one thread
             * at a time, allows 500 threads, and detached ones could pile up there. */
            size_t k = (size_t)(steps >> 6) % EXITERS;
            if (exiter_used[k])
                pthread_join(exiters[k], NULL);
            REQUIRE(pthread_create(&e, NULL, hold_and_exit, (void *)(uintptr_t)phys_of(s, 2)) == 0);
            exiters[k] = e;
            exiter_used[k] = true;
        }
    }
    double seconds = check_seconds_since(&run.start);

    atomic_store(&stop, 1);
    pthread_join(others[3], NULL); /* no more signals */
    for (int i = 0; i < readers_n; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 3; i++)
        pthread_join(others[i], NULL);
    pthread_join(others[4], NULL);
    pthread_join(others[5], NULL);
    pthread_join(others[6], NULL);
    for (int k = 0; k < EXITERS; k++)
        if (exiter_used[k])
            pthread_join(exiters[k], NULL);
    struct held_pin *left = atomic_exchange(&pin_exchange, NULL);
    if (left)
        release_held(left);
    close_handoffs(); /* what the opener left after the closer stopped */
    CHECK_EQ(fails, 0);
    CHECK_EQ(atomic_load(&bad_pattern), 0);
    if (atomic_load(&bad_pattern))
        fprintf(stderr, "stress_churn: the first bad read was seen at line %d\n", atomic_load(&bad_line));
    check_run_done(&run);
    /* Teardown: every exiting thread has been joined, so this frees at once. */
    CHECK_EQ(pfn_device_free(dev), 0);
    for (int s = 0; s < SLOTS; s++)
        if (slots[s].mem)
            munmap(slots[s].mem, SLOT_PAGES * PAGE);
    printf("stress_churn: %.1f s to do the minimum work:\n", seconds);
    check_run_print(&run, stdout);
    return check_report("stress_churn");
}
