/* Issue 8 item 5: cancellation never aborts the process or leaves state behind.
 * - A thread blocked in pfn_unregister_range (or pfn_device_free) waiting for another thread's
 *   kmap is cancelled: the call is not a cancellation point, so it completes when the kmap is
 *   released, returns 0, and the thread is cancelled at its next cancellation point.
 * - Threads loop through every kind of call (registration, unregistration, kmaps, sections,
 *   object-bound sections, pmem calls) with a cancellation point between calls, and are
 *   cancelled at random instants: none is ever cancelled inside a call (no call is a
 *   cancellation point), and afterwards every lock is free and nothing is held.
 * Each part runs in a child process, so that an abort ("exception not rethrown", the bug this
 * guards against) fails the test with a message instead of killing it silently. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"
#include "threads.h"

#define PAGE 4096ull
#define PHYS (17ull << 40)

static char *base;
static pfn_pmem *map;
static pfn_device *dev;
static atomic_int holding, release_now, call_tid, call_returned, call_rc;

static void *holder(void *arg)
{
    (void)arg;
    void *p = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS, 0));
    atomic_store(&holding, p == base);
    while (!atomic_load(&release_now))
        usleep(200);
    kunmap_atomic_pfn_t(p);
    return NULL;
}

static void *blocked_call(void *arg)
{
    int which = (int)(uintptr_t)arg;
    atomic_store(&call_tid, self_tid());
    int rc = which == 0 ? pfn_unregister_range(dev, PHYS) : pfn_device_free(dev);
    atomic_store(&call_rc, rc);
    atomic_store(&call_returned, 1);
    for (;;)
        pause(); /* a cancellation point: the pending cancel acts here */
    return NULL;
}

/* Returns the number of failed checks (run in a child). */
static int cancel_while_blocked(int which)
{
    dev = pfn_device_new("cancel");
    REQUIRE(dev != NULL);
    pfn_resource r = {PHYS, PHYS + 4 * PAGE - 1, NULL};
    REQUIRE(devm_register_kmap_pfn_range(dev, &r, base) == 0);
    pthread_t h, c;
    REQUIRE(pthread_create(&h, NULL, holder, NULL) == 0);
    while (!atomic_load(&holding))
        usleep(100);
    REQUIRE(pthread_create(&c, NULL, blocked_call, (void *)(uintptr_t)which) == 0);
    while (atomic_load(&call_tid) == 0)
        usleep(100);
    CHECK(wait_blocked_or_done(atomic_load(&call_tid), &call_returned));
    CHECK_EQ(pthread_cancel(c), 0);
    /* Still waiting (cancellation is held off inside the call). */
    CHECK(wait_blocked_or_done(atomic_load(&call_tid), &call_returned));
    atomic_store(&release_now, 1);
    void *ret;
    pthread_join(c, &ret);
    pthread_join(h, NULL);
    CHECK(ret == PTHREAD_CANCELED);
    CHECK_EQ(atomic_load(&call_returned), 1);
    CHECK_EQ(atomic_load(&call_rc), 0);
    CHECK_NULL_ERRNO(kmap_atomic_pfn_t(phys_to_pfn_t(PHYS, 0)), ENXIO);
    if (which == 0)
        CHECK_EQ(pfn_device_free(dev), 0);
    return checks_failed;
}

/* Cancellation at random instants of a thread that calls everything. */
static atomic_ullong loops;
static atomic_int cancelled_inside;
static _Thread_local const char *inside; /* the call running now, or NULL */

static void on_cancel(void *arg)
{
    (void)arg;
    if (inside) {
        fprintf(stderr, "int_cancel: cancelled inside %s\n", inside);
        atomic_fetch_add(&cancelled_inside, 1);
    }
}

#define CALL(what, expr) (inside = what, (expr), inside = NULL, pthread_testcancel())

static void *busy(void *arg)
{
    uint64_t slot = (uint64_t)(uintptr_t)arg;
    uint64_t phys = PHYS + (1ull << 30) + slot * 64 * PAGE;
    pthread_cleanup_push(on_cancel, NULL);
    for (;;) {
        pfn_device *d;
        CALL("pfn_device_new", d = pfn_device_new("busy"));
        if (d) {
            pfn_resource r = {phys, phys + 8 * PAGE - 1, NULL};
            int rc;
            CALL("devm_register_kmap_pfn_range", rc = devm_register_kmap_pfn_range(d, &r, base + 8 * PAGE));
            if (rc == 0) {
                void *p;
                pfn_section s, o;
                CALL("kmap_atomic_pfn_t", p = kmap_atomic_pfn_t(phys_to_pfn_t(phys, 0)));
                CALL("pfn_read_lock", s = pfn_read_lock());
                CALL("pfn_section_translate", pfn_section_translate(&s, phys_to_pfn_t(phys + PAGE, 0)));
                CALL("pfn_read_unlock", pfn_read_unlock());
                CALL("kunmap_atomic_pfn_t", kunmap_atomic_pfn_t(p));
                /* An object-bound section belongs to its value, not to the thread: one left
                 * open by a cancelled thread would hold off grace periods for ever. So no
                 * cancellation point between its open and its close. */
                inside = "pfn_section_open";
                rc = pfn_section_open(&o);
                inside = "pfn_section_close";
                if (rc == 0)
                    pfn_section_close(&o);
                inside = NULL;
                pthread_testcancel();
                CALL("pfn_pmem_persist", pfn_pmem_persist(map, base, 64));
                CALL("pfn_unregister_range", pfn_unregister_range(d, phys));
            }
            CALL("pfn_device_free", pfn_device_free(d));
        }
        atomic_fetch_add(&loops, 1);
    }
    pthread_cleanup_pop(0);
    return NULL;
}

static int cancel_anywhere(void)
{
    dev = pfn_device_new("survivor");
    REQUIRE(dev != NULL);
    pfn_resource r = {PHYS, PHYS + 4 * PAGE - 1, NULL};
    REQUIRE(devm_register_kmap_pfn_range(dev, &r, base) == 0);
    for (int round = 0; round < 40; round++) {
        pthread_t t[2];
        unsigned long long before = atomic_load(&loops);
        for (int i = 0; i < 2; i++)
            REQUIRE(pthread_create(&t[i], NULL, busy, (void *)(uintptr_t)(round * 2 + i)) == 0);
        while (atomic_load(&loops) < before + 2 + (unsigned)round % 7)
            sched_yield();
        for (int i = 0; i < 2; i++) {
            pthread_cancel(t[i]);
            pthread_join(t[i], NULL);
        }
    }
    /* Nothing is left locked or held: these complete. */
    pfn_device *d = pfn_device_new("after");
    CHECK(d != NULL);
    pfn_resource r2 = {PHYS + 64 * PAGE, PHYS + 65 * PAGE - 1, NULL};
    CHECK_EQ(devm_register_kmap_pfn_range(d, &r2, base), 0);
    CHECK_EQ(pfn_unregister_range(dev, PHYS), 0);
    CHECK_EQ(pfn_device_free(d), 0);
    CHECK_EQ(pfn_device_free(dev), 0);
    CHECK_EQ(atomic_load(&cancelled_inside), 0);
    printf("int_cancel: 80 threads cancelled at random instants, after %llu loops in all\n",
           (unsigned long long)atomic_load(&loops));
    return checks_failed;
}

static void in_child(const char *what, int (*fn)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        check_watchdog(what, 120);
        int failed = fn();
        fflush(NULL);
        _exit(failed ? 1 : 0);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    if (!WIFEXITED(status))
        fprintf(stderr, "int_cancel: %s: the process died of signal %d\n", what,
                WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static int unregister_cancelled(void) { return cancel_while_blocked(0); }
static int free_cancelled(void) { return cancel_while_blocked(1); }

int main(void)
{
    check_watchdog("int_cancel", 300);
    char path[256];
    test_path(path, sizeof path, "int_cancel");
    unlink(path);
    map = pfn_pmem_map(path, 64 * PAGE, PFN_PMEM_CREATE);
    REQUIRE(map != NULL);
    base = pfn_pmem_addr(map);
    in_child("a cancelled pfn_unregister_range", unregister_cancelled);
    in_child("a cancelled pfn_device_free", free_cancelled);
    in_child("cancellation at random instants", cancel_anywhere);
    CHECK_EQ(pfn_pmem_unmap(map), 0);
    unlink(path);
    return check_report("int_cancel");
}
