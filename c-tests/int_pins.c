/* Pins held across an unregister on another thread: the unregister stops new pins, waits for
 * the held ones, and completes once they are released, on any thread. Pins outlive the thread
 * that took them (exit, cancellation), can be released in a signal handler, and are inherited
 * by a fork child. Ordering is by what the library exposes (pfn_pin_waiters), never by sleeps;
 * nothing is timed. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include "pfn.h"
#include "check.h"

#define PAGE 4096ull
#define PHYS (11ull << 40)
#define PAGES 16

static char *base;
static pfn_device *dev;

static pfn_t frame(unsigned k) { return phys_to_pfn_t(PHYS + k * PAGE, PFN_DEV | PFN_MAP); }

static void reg(void)
{
    pfn_resource res = {PHYS, PHYS + PAGES * PAGE - 1, "pins"};
    REQUIRE(pfn_register_range_memmap(dev, &res, base, PFN_MEMMAP_DRAM) == 0);
}

/* Waits (politely, for as long as it takes) until an unregister waits for pins. */
static void wait_for_waiter(void)
{
    while (pfn_pin_waiters() == 0) {
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
}

struct unregister_job {
    pthread_t thread;
    atomic_int done;
    int rc;
    bool free_device;
};

static void *unregister_main(void *arg)
{
    struct unregister_job *j = arg;
    j->rc = j->free_device ? pfn_device_free(dev) : pfn_unregister_range(dev, PHYS);
    atomic_store(&j->done, 1);
    return NULL;
}

static void start_unregister(struct unregister_job *j, bool free_device)
{
    atomic_store(&j->done, 0);
    j->rc = 1;
    j->free_device = free_device;
    REQUIRE(pthread_create(&j->thread, NULL, unregister_main, j) == 0);
}

/* While the unregister waits: new pins and kmaps miss, the held pin still works. */
static void check_refused_meanwhile(struct unregister_job *j, struct pfn_page *held_page)
{
    CHECK_EQ(atomic_load(&j->done), 0);
    CHECK_NULL_ERRNO(pfn_pin(frame(0)), ENXIO);
    CHECK_NULL_ERRNO(kmap_atomic_pfn_t(frame(1)), ENXIO);
    CHECK_NULL_ERRNO(pfn_t_to_page(frame(2)), ENXIO);
    /* The descriptor found under the pin stays valid while the pin is held, lookups by it
     * and its reference count included. */
    CHECK(pfn_page_address(held_page) == base + 3 * PAGE);
    CHECK_EQ(pfn_page_to_pfn_t(held_page).val, frame(3).val);
    CHECK_EQ(pfn_get_page(held_page), 1);
    CHECK_EQ(pfn_put_page(held_page), 0);
    held_page->data++;
    CHECK_EQ(atomic_load(&j->done), 0);
}

/* 1. A pin taken by a thread that has exited since, released by the main thread. */
static pfn_dev_pagemap *exited_pin;
static void *pin_and_exit(void *arg)
{
    (void)arg;
    exited_pin = pfn_pin(frame(3));
    return NULL;
}

static void pin_of_an_exited_thread(void)
{
    reg();
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, pin_and_exit, NULL) == 0);
    pthread_join(t, NULL);
    REQUIRE(exited_pin != NULL);
    struct pfn_page *page = pfn_t_to_page(frame(3));
    REQUIRE(page != NULL);

    struct unregister_job j;
    start_unregister(&j, false);
    wait_for_waiter();
    check_refused_meanwhile(&j, page);
    CHECK_EQ(pfn_unpin(exited_pin), 0); /* another thread than the one that pinned */
    pthread_join(j.thread, NULL);
    CHECK_EQ(j.rc, 0);
    CHECK_EQ(pfn_pin_waiters(), 0);
}

/* 2. A pin holder blocked in "I/O" on its own thread; it releases on its own thread. */
struct holder {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int pinned, release;
    int unpin_rc;
};
static struct holder holder = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 1};

static void *hold_until_told(void *arg)
{
    (void)arg;
    pfn_dev_pagemap *p = pfn_pin(frame(5));
    pthread_mutex_lock(&holder.lock);
    holder.pinned = p ? 1 : -1;
    pthread_cond_broadcast(&holder.cond);
    while (!holder.release)
        pthread_cond_wait(&holder.cond, &holder.lock);
    pthread_mutex_unlock(&holder.lock);
    holder.unpin_rc = pfn_unpin(p);
    return NULL;
}

static void pin_held_by_a_blocked_thread(void)
{
    reg();
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, hold_until_told, NULL) == 0);
    pthread_mutex_lock(&holder.lock);
    while (!holder.pinned)
        pthread_cond_wait(&holder.cond, &holder.lock);
    pthread_mutex_unlock(&holder.lock);
    REQUIRE(holder.pinned == 1);

    struct pfn_page *page = pfn_t_to_page(frame(3));
    REQUIRE(page != NULL);
    struct unregister_job j;
    start_unregister(&j, false);
    wait_for_waiter();
    check_refused_meanwhile(&j, page);
    pthread_mutex_lock(&holder.lock);
    holder.release = 1;
    pthread_cond_broadcast(&holder.cond);
    pthread_mutex_unlock(&holder.lock);
    pthread_join(t, NULL);
    CHECK_EQ(holder.unpin_rc, 0);
    pthread_join(j.thread, NULL);
    CHECK_EQ(j.rc, 0);
}

/* 3. pfn_device_free waits for pins as unregister does; the main thread holds the pin. */
static void device_free_waits(void)
{
    reg();
    char *addr = NULL;
    struct pfn_page *pg = NULL;
    pfn_dev_pagemap *p = pfn_pin_frame(frame(4), (void **)&addr, &pg);
    REQUIRE(p != NULL && addr == base + 4 * PAGE && pg != NULL);
    struct pfn_page *page = pfn_t_to_page(frame(3));
    REQUIRE(page != NULL);
    struct unregister_job j;
    start_unregister(&j, true);
    wait_for_waiter();
    check_refused_meanwhile(&j, page);
    /* What pfn_pin_frame gave stays usable while the lookups by pfn miss. */
    CHECK_NULL_ERRNO(pfn_t_to_virt(frame(4)), ENXIO);
    addr[100] = 1;
    CHECK(pfn_page_address(pg) == addr);
    CHECK_EQ(pfn_unpin(p), 0);
    pthread_join(j.thread, NULL);
    CHECK_EQ(j.rc, 0);
    dev = pfn_device_new("pins again");
    REQUIRE(dev != NULL);
}

/* 4. A thread cancelled while it holds a pin: the pin stays held (it is not thread-bound). */
static pfn_dev_pagemap *cancelled_pin;
static atomic_int cancel_ready;
static void *pin_then_block(void *arg)
{
    (void)arg;
    cancelled_pin = pfn_pin(frame(7));
    atomic_store(&cancel_ready, 1);
    for (;;)
        pause(); /* a cancellation point */
    return NULL;
}

static void pin_of_a_cancelled_thread(void)
{
    reg();
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, pin_then_block, NULL) == 0);
    while (!atomic_load(&cancel_ready)) {
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    pthread_cancel(t);
    void *res = NULL;
    pthread_join(t, &res);
    CHECK(res == PTHREAD_CANCELED);
    REQUIRE(cancelled_pin != NULL);
    struct pfn_page *page = pfn_t_to_page(frame(3));
    REQUIRE(page != NULL);
    struct unregister_job j;
    start_unregister(&j, false);
    wait_for_waiter();
    check_refused_meanwhile(&j, page);
    CHECK_EQ(pfn_unpin(cancelled_pin), 0);
    pthread_join(j.thread, NULL);
    CHECK_EQ(j.rc, 0);
}

/* 5. pfn_unpin in a signal handler (async-signal-safe for a pin another thread took). */
static pfn_dev_pagemap *signal_pin;
static volatile sig_atomic_t signal_rc = 1;
static void unpin_handler(int sig)
{
    (void)sig;
    signal_rc = pfn_unpin(signal_pin);
}

static void *pin_for_the_handler(void *arg)
{
    (void)arg;
    signal_pin = pfn_pin(frame(1));
    return NULL;
}

/* A handler may release a pin another thread took (not one its own thread took outside it). */
static void unpin_in_a_signal_handler(void)
{
    reg();
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, pin_for_the_handler, NULL) == 0);
    pthread_join(t, NULL);
    REQUIRE(signal_pin != NULL);
    signal(SIGUSR1, unpin_handler);
    raise(SIGUSR1);
    CHECK_EQ(signal_rc, 0);
    signal(SIGUSR1, SIG_DFL);
    CHECK_EQ(pfn_unregister_range(dev, PHYS), 0); /* no pin left: no wait, no EDEADLK */
}

/* 6. fork: the child holds a copy of the parent's pins; released there, it can unregister. */
static void pins_across_fork(void)
{
    reg();
    pfn_dev_pagemap *p = pfn_pin(frame(2));
    REQUIRE(p != NULL);
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        int bad = 0;
        bad |= pfn_unregister_range(dev, PHYS) != -EDEADLK; /* this thread's own pin */
        bad |= pfn_unpin(p) != 0;
        bad |= pfn_unregister_range(dev, PHYS) != 0;
        _exit(bad ? 1 : 0);
    }
    int status = 0;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* The parent's pin is its own. */
    CHECK_EQ(pfn_unregister_range(dev, PHYS), -EDEADLK);
    CHECK_EQ(pfn_unpin(p), 0);
    CHECK_EQ(pfn_unregister_range(dev, PHYS), 0);
}

/* 7. The pinning thread while another call's unregister waits for its pin: unregistering again
 * or freeing the device is -EDEADLK there (it would wait for itself), also in a fork child,
 * where no unregister is waiting (the parent's waiter is not the child's). */
static void own_pin_while_another_unregister_waits(void)
{
    reg();
    pfn_dev_pagemap *p = pfn_pin(frame(4));
    REQUIRE(p != NULL);
    struct unregister_job j;
    start_unregister(&j, false);
    wait_for_waiter();
    CHECK_EQ(pfn_unregister_range(dev, PHYS), -EDEADLK);
    CHECK_EQ(pfn_device_free(dev), -EDEADLK);
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        int bad = 0;
        bad |= (pfn_pin_waiters() != 0) << 0;
        bad |= (pfn_unregister_range(dev, PHYS) != -EDEADLK) << 1;
        bad |= (pfn_unpin(p) != 0) << 2;
        /* The parent's unregister began it: here it is finished by this call. */
        bad |= (pfn_unregister_range(dev, PHYS) != -ENOENT) << 3;
        bad |= (pfn_pin_waiters() != 0) << 4;
        _exit(bad);
    }
    int status = 0;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);
    CHECK_EQ(atomic_load(&j.done), 0);
    CHECK_EQ(pfn_unpin(p), 0);
    pthread_join(j.thread, NULL);
    CHECK_EQ(j.rc, 0);
}

/* 8. Threads that exit holding pins, released later elsewhere, do not make memory grow: the
 * counters they leave behind are reused once their pins are released. Each round, K threads
 * in turn pin and exit with the pin held; then all K pins are released. */
#define K 100
static pfn_dev_pagemap *churn_pins[K];
static void *pin_once_and_exit(void *arg)
{
    churn_pins[(uintptr_t)arg] = pfn_pin(frame(6));
    return NULL;
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    REQUIRE(f != NULL);
    long size = 0, resident = 0;
    REQUIRE(fscanf(f, "%ld %ld", &size, &resident) == 2);
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static void exited_pinners_reuse_counters(void)
{
    reg();
    const int rounds = getenv("PFN_TEST_QUICK") ? 4 : 20;
    long before = 0;
    for (int r = 0; r < rounds; r++) {
        if (r == 1)
            before = rss_kib(); /* after the first round's K sets of counters exist */
        for (uintptr_t i = 0; i < K; i++) {
            pthread_t t;
            REQUIRE(pthread_create(&t, NULL, pin_once_and_exit, (void *)i) == 0);
            pthread_join(t, NULL);
            REQUIRE(churn_pins[i] != NULL);
        }
        for (int i = 0; i < K; i++)
            CHECK_EQ(pfn_unpin(churn_pins[i]), 0);
    }
    long grown = rss_kib() - before;
#ifdef __SANITIZE_ADDRESS__
    grown = 0; /* AddressSanitizer keeps memory for every thread that exited */
#endif
    if (getenv("PFN_TEST_VERBOSE"))
        fprintf(stderr, "int_pins: memory grew by %ld KiB over %d rounds of %d exited pinners\n",
                grown, rounds - 1, K);
    /* Without reuse each exited pinner kept about 24 KiB: 2,400 KiB a round. */
    CHECK(grown < 2400L * (rounds - 1) / 4);
    CHECK_EQ(pfn_unregister_range(dev, PHYS), 0);
}

int main(void)
{
    check_watchdog("int_pins", 300);
    base = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(base != MAP_FAILED);
    dev = pfn_device_new("pins");
    REQUIRE(dev != NULL);
    pin_of_an_exited_thread();
    pin_held_by_a_blocked_thread();
    device_free_waits();
    pin_of_a_cancelled_thread();
    unpin_in_a_signal_handler();
    pins_across_fork();
    own_pin_while_another_unregister_waits();
    exited_pinners_reuse_counters();
    CHECK_EQ(pfn_device_free(dev), 0);
    munmap(base, PAGES * PAGE);
    return check_report("int_pins");
}
