/* The fork policy: in the child, registrations stay valid; the forking thread's kmaps and
 * object-bound sections stay held (it is the thread that continues); other threads' kmaps and
 * the object-bound sections they opened are released, so an unregister in the child does not
 * wait for threads that do not exist there; registration works.
 * Also (issue 8 item 11): a new thread of the child never gets the reader state of a parent
 * thread (whose hold stack the fork may have caught mid-change), and a fork while another
 * thread's unregister is waiting (for the forking thread itself) neither deadlocks nor leaves
 * the child's grace periods stuck. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"

#define PAGE 4096ull
#define PHYS (2ull << 40)

static atomic_int holding, release_now;
static char *base;
static struct pfn_reader *holder_reader;
/* Object-bound sections open at the fork: one opened by the holder thread, one by the forking
 * thread. In the child the first no longer holds anything off (its opener does not exist
 * there) and the second stays open until the child closes it. */
static pfn_section holder_obj, main_obj;

/* Holds one kmap, and 40 more nested ones (past the reader's inline holds). */
static void *holder(void *arg)
{
    (void)arg;
    void *p = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + PAGE, 0));
    void *more[40];
    for (int i = 0; i < 40; i++)
        more[i] = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + 3 * PAGE, 0));
    holder_reader = pfn_reader_self();
    int opened = pfn_section_open(&holder_obj) == 0;
    atomic_store(&holding, opened && p == base + PAGE && more[39] == base + 3 * PAGE);
    while (!atomic_load(&release_now))
        usleep(1000);
    for (int i = 0; i < 40; i++)
        kunmap_atomic_pfn_t(more[i]);
    kunmap_atomic_pfn_t(p);
    return pfn_section_close(&holder_obj) == 0 ? (void *)1 : NULL;
}

static atomic_int waiter_started, waiter_done;
static pfn_device *waiter_dev;

/* Unregisters a range while the main thread holds a kmap: waits (in a grace period) until the
 * main thread lets go, which happens only after the fork. */
static void *waiting_unregister(void *arg)
{
    (void)arg;
    atomic_store(&waiter_started, 1);
    int rc = pfn_unregister_range(waiter_dev, PHYS + (1ull << 30));
    atomic_store(&waiter_done, rc == 0 ? 1 : -1);
    return NULL;
}

static struct pfn_reader *child_thread_reader;

static void *child_thread(void *arg)
{
    (void)arg;
    if (pfn_thread_init() != 0)
        return NULL;
    child_thread_reader = pfn_reader_self();
    void *p = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + 128 * PAGE, 0));
    int ok = p == base + 4 * PAGE && kunmap_atomic_pfn_t(p) == 0;
    return ok ? (void *)1 : NULL;
}

/* Runs in the child; returns the number of failed checks. */
static int child(pfn_device *dev, char *held)
{
    /* An unregister that waited for the parent's thread would hang: fail as hung instead. */
    check_watchdog("int_fork (child)", 120);
    /* Registrations are inherited, and the data is shared. */
    char *p = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + 2 * PAGE, 0));
    CHECK(p == base + 2 * PAGE);
    if (p)
        CHECK(strcmp(p, "from the parent") == 0);
    kunmap_atomic_pfn_t(p);
    /* The forking thread still holds its kmap: unregistering would wait for itself. */
    CHECK_EQ(pfn_unregister_range(dev, PHYS), -EDEADLK);
    kunmap_atomic_pfn_t(held);
    /* Its object-bound section is still open here, and closes; the holder thread's was
     * closed by the fork (its opener does not exist here): closing it is -EINVAL. */
    CHECK_EQ(pfn_section_close(&main_obj), 0);
    CHECK_EQ(pfn_section_close(&holder_obj), -EINVAL);
    /* The parent's other thread holds a kmap of this range in the parent; in the child that
     * thread does not exist, so this returns at once. */
    CHECK_EQ(pfn_unregister_range(dev, PHYS), 0);
    CHECK_NULL_ERRNO(kmap_atomic_pfn_t(phys_to_pfn_t(PHYS, 0)), ENXIO);
    /* Registration is not stuck behind a lock taken by a thread of the parent. */
    pfn_device *mine = pfn_device_new("child");
    pfn_resource r = {PHYS + 64 * PAGE, PHYS + 65 * PAGE - 1, NULL};
    CHECK_EQ(devm_register_kmap_pfn_range(mine, &r, base), 0);
    CHECK(kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + 64 * PAGE, 0)) == base);
    kunmap_atomic_pfn_t(base);
    CHECK_EQ(pfn_device_free(mine), 0);
    /* A new thread gets fresh reader state, never the parent thread's. */
    pfn_device *d2 = pfn_device_new("child2");
    pfn_resource r2 = {PHYS + 128 * PAGE, PHYS + 129 * PAGE - 1, NULL};
    CHECK_EQ(devm_register_kmap_pfn_range(d2, &r2, base + 4 * PAGE), 0);
    pthread_t t;
    void *ok = NULL;
    REQUIRE(pthread_create(&t, NULL, child_thread, NULL) == 0);
    pthread_join(t, &ok);
    CHECK(ok != NULL);
#if defined(__x86_64__) && defined(__linux__)
    CHECK(child_thread_reader != NULL && child_thread_reader != holder_reader);
#endif
    CHECK_EQ(pfn_device_free(d2), 0);
    /* The parent's unregister was waiting at the fork: here its range is still being
     * unregistered by a call that does not exist. Another unregister of it waits for a grace
     * period of the child's own (which does not hang) and says -ENOENT; then the space is
     * free. */
    CHECK_EQ(pfn_unregister_range(waiter_dev, PHYS + (1ull << 30)), -ENOENT);
    pfn_device *d3 = pfn_device_new("child3");
    pfn_resource r3 = {PHYS + (1ull << 30), PHYS + (1ull << 30) + PAGE - 1, NULL};
    CHECK_EQ(devm_register_kmap_pfn_range(d3, &r3, base), 0);
    CHECK_EQ(pfn_device_free(d3), 0);
    return checks_failed;
}

int main(void)
{
    check_watchdog("int_fork", 180);
    char path[256];
    test_path(path, sizeof path, "int_fork");
    unlink(path);
    pfn_pmem *m = pfn_pmem_map(path, 8 * PAGE, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    base = pfn_pmem_addr(m);
    strcpy(base + 2 * PAGE, "from the parent");
    pfn_device *dev = pfn_device_new("forked");
    pfn_resource r = {PHYS, PHYS + 8 * PAGE - 1, NULL};
    REQUIRE(devm_register_kmap_pfn_range(dev, &r, base) == 0);

    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, holder, NULL) == 0);
    while (!atomic_load(&holding))
        usleep(1000);
    char *held = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS, 0));
    CHECK(held == base);
    /* Another thread waits in an unregister (for this thread's kmap) while we fork. */
    waiter_dev = pfn_device_new("waiter");
    pfn_resource wr = {PHYS + (1ull << 30), PHYS + (1ull << 30) + PAGE - 1, NULL};
    REQUIRE(devm_register_kmap_pfn_range(waiter_dev, &wr, base) == 0);
    pthread_t w;
    REQUIRE(pthread_create(&w, NULL, waiting_unregister, NULL) == 0);
    while (!atomic_load(&waiter_started))
        usleep(1000);
    for (;;) { /* unpublished: it is now waiting for us */
        void *q = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + (1ull << 30), 0));
        if (!q)
            break;
        kunmap_atomic_pfn_t(q);
        usleep(200);
    }

    REQUIRE(pfn_section_open(&main_obj) == 0);
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0)
        _exit(child(dev, held) == 0 ? 0 : 1);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* The parent is untouched: its kmaps are still held, its range still registered. */
    CHECK_EQ(pfn_unregister_range(dev, PHYS), -EDEADLK);
    CHECK_EQ(atomic_load(&waiter_done), 0); /* still waiting for this thread */
    kunmap_atomic_pfn_t(held);
    /* In the parent both object-bound sections are as they were: open, closed by their
     * holders. */
    CHECK_EQ(pfn_section_close(&main_obj), 0);
    atomic_store(&release_now, 1);
    void *holder_ok = NULL;
    pthread_join(t, &holder_ok);
    CHECK(holder_ok != NULL);
    pthread_join(w, NULL);
    CHECK_EQ(atomic_load(&waiter_done), 1);
    CHECK_EQ(pfn_device_free(waiter_dev), 0);
    CHECK(kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + 3 * PAGE, 0)) == base + 3 * PAGE);
    kunmap_atomic_pfn_t(base + 3 * PAGE);
    CHECK_EQ(pfn_device_free(dev), 0);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    unlink(path);
    return check_report("int_fork");
}
