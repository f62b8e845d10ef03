/* The fork policy: in the child, registrations stay valid; the forking thread's kmaps stay
 * held (it is the thread that continues); other threads' kmaps are released, so an unregister
 * in the child does not wait for threads that do not exist there; registration works. */
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

static void *holder(void *arg)
{
    (void)arg;
    void *p = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + PAGE, 0));
    atomic_store(&holding, p == base + PAGE);
    while (!atomic_load(&release_now))
        usleep(1000);
    kunmap_atomic_pfn_t(p);
    return NULL;
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
    kunmap_atomic_pfn_t(held);
    atomic_store(&release_now, 1);
    pthread_join(t, NULL);
    CHECK(kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + 3 * PAGE, 0)) == base + 3 * PAGE);
    kunmap_atomic_pfn_t(base + 3 * PAGE);
    CHECK_EQ(pfn_device_free(dev), 0);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    unlink(path);
    return check_report("int_fork");
}
