/* Issue 8 item 4, deterministically: a signal handler that kmaps on a thread interrupted in the
 * middle of its own kmap or kunmap is protected like any reader. The interruption points are
 * reached with the header's inline building blocks (the steps kmap_atomic_pfn_t_inline and
 * kunmap_atomic_pfn_t_inline are made of): the thread enters its read side (the first step
 * of a kmap), or takes its last hold off the stack (the first step of a kunmap), and raises a
 * signal there. The handler kmaps a page, starts an unregister of its range on another thread
 * and waits until that unregister is blocked or has returned: it must be blocked, since the
 * handler still holds the page. Then the handler releases, the interrupted operation finishes,
 * and the unregister returns. stress_signals covers the same under load, at random points. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"
#include "threads.h"

#define PAGE 4096ull
#define PHYS (15ull << 40)

static char *base;
static pfn_device *dev;
static uint64_t target; /* the range the handler maps and the writer unregisters */
static atomic_int writer_tid, writer_done, writer_rc;
static pthread_t writer;

static void *unregister_target(void *arg)
{
    (void)arg;
    atomic_store(&writer_tid, self_tid());
    atomic_store(&writer_rc, pfn_unregister_range(dev, target));
    atomic_store(&writer_done, 1);
    return NULL;
}

/* thread_state() with open/read only: safe in a signal handler. */
static char state_of(int tid)
{
    char path[64], buf[512];
    int n = snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    (void)n;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 0;
    ssize_t got = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (got <= 0)
        return 0;
    buf[got] = 0;
    const char *close_paren = strrchr(buf, ')');
    return close_paren && close_paren[1] == ' ' ? close_paren[2] : 0;
}

static volatile sig_atomic_t mapped_ok, writer_blocked, writer_returned_early;

static void on_signal(int sig)
{
    (void)sig;
    int saved = errno;
    char *p = kmap_atomic_pfn_t(phys_to_pfn_t(target, 0));
    mapped_ok = p == base + 16 * PAGE;
    atomic_store(&writer_tid, 0);
    atomic_store(&writer_done, 0);
    pthread_create(&writer, NULL, unregister_target, NULL);
    while (atomic_load(&writer_tid) == 0)
        ;
    /* Blocked (asleep twice, 2 ms apart) or returned. */
    for (;;) {
        if (atomic_load(&writer_done)) {
            writer_returned_early = 1;
            break;
        }
        char s = state_of(atomic_load(&writer_tid));
        if (s == 'S' || s == 'D') {
            struct timespec ts = {0, 2000000};
            nanosleep(&ts, NULL);
            s = state_of(atomic_load(&writer_tid));
            if ((s == 'S' || s == 'D') && !atomic_load(&writer_done)) {
                writer_blocked = 1;
                break;
            }
        }
    }
    if (p)
        *(volatile char *)p = 1; /* still mapped: the unregister waits for us */
    kunmap_atomic_pfn_t(p);
    errno = saved;
}

static void register_target(void)
{
    pfn_resource r = {target, target + PAGE - 1, NULL};
    REQUIRE(devm_register_kmap_pfn_range(dev, &r, base + 16 * PAGE) == 0);
}

static void after_handler(const char *where)
{
    pthread_join(writer, NULL);
    CHECK(mapped_ok);
    CHECK(writer_blocked);
    CHECK(!writer_returned_early);
    CHECK_EQ(atomic_load(&writer_rc), 0);
    if (!writer_blocked || writer_returned_early)
        fprintf(stderr, "int_signals: unprotected handler %s\n", where);
    mapped_ok = writer_blocked = writer_returned_early = 0;
}

int main(void)
{
    alarm(60);
    char path[256];
    test_path(path, sizeof path, "int_signals");
    unlink(path);
    pfn_pmem *m = pfn_pmem_map(path, 32 * PAGE, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    base = pfn_pmem_addr(m);
    dev = pfn_device_new("signals");
    REQUIRE(dev != NULL);
    pfn_resource other = {PHYS, PHYS + 8 * PAGE - 1, NULL};
    REQUIRE(devm_register_kmap_pfn_range(dev, &other, base) == 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    REQUIRE(sigaction(SIGUSR1, &sa, NULL) == 0);
    REQUIRE(pfn_thread_init() == 0);
    struct pfn_reader *r = pfn_reader_self();
#if defined(__x86_64__) && defined(__linux__)
    REQUIRE(r != NULL);
#endif
    if (r == NULL) {
        printf("int_signals: no inline fast paths on this target; skipped\n");
        return check_report("int_signals");
    }

    /* 1. Interrupted after a kmap entered its read side, before it holds anything: the
     *    thread's outermost section has just begun. */
    target = PHYS + (1ull << 21);
    register_target();
    pfn__enter(r);
    raise(SIGUSR1);
    pfn__leave(r);
    after_handler("inside an outermost kmap's first step");

    /* 2. The same, nested inside another kmap. */
    register_target();
    void *outer = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS, 0));
    CHECK(outer == base);
    pfn__enter(r);
    raise(SIGUSR1);
    pfn__leave(r);
    CHECK_EQ(kunmap_atomic_pfn_t(outer), 0); /* the unregister waits for this one too */
    after_handler("inside a nested kmap's first step");

    /* 3. Interrupted in a kunmap of the thread's only kmap: the hold is off the stack, the
     *    read side not yet left. */
    register_target();
    void *k = kmap_atomic_pfn_t_inline(phys_to_pfn_t(PHYS + PAGE, 0));
    CHECK(k == base + PAGE);
    CHECK_EQ(r->nholds, 1);
    __atomic_store_n(&r->nholds, 0, __ATOMIC_RELAXED);
    raise(SIGUSR1);
    pfn__leave(r);
    after_handler("inside a kunmap");

    /* 4. Interrupted between a read section's open and its first translation. */
    register_target();
    pfn_section s = pfn_read_lock_inline();
    raise(SIGUSR1);
    CHECK(pfn_section_translate_inline(&s, phys_to_pfn_t(PHYS + 2 * PAGE, 0)) == base + 2 * PAGE);
    pfn_read_unlock_inline();
    after_handler("inside a read section");

    CHECK_EQ(r->ctl & PFN__NEST_MASK, 0);
    CHECK_EQ(pfn_device_free(dev), 0);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    unlink(path);
    return check_report("int_signals");
}
