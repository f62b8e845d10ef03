/* Write through kmap, persist, then SIGKILL the writing process: a new process (here, the
 * parent) maps the file, registers it and reads every persisted byte back. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"

#define PAGE 4096ull
#define PAGES 64
#define PHYS (8ull << 40)

static uint64_t word(uint64_t page, uint64_t i) { return (page << 32) ^ (i * 0x9E3779B97F4A7C15ull); }

static void writer(const char *path, int ready_fd)
{
    pfn_pmem *m = pfn_pmem_map(path, PAGES * PAGE, PFN_PMEM_CREATE);
    pfn_device *dev = pfn_device_new("writer");
    pfn_resource r = {PHYS, PHYS + PAGES * PAGE - 1, NULL};
    if (!m || !dev || devm_register_kmap_pfn_range(dev, &r, pfn_pmem_addr(m)))
        _exit(2);
    for (uint64_t p = 0; p < PAGES; p++) {
        uint64_t *a = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + p * PAGE, PFN_DEV));
        if (!a)
            _exit(3);
        for (uint64_t i = 0; i < PAGE / 8; i++)
            a[i] = word(p, i);
        if (pfn_pmem_persist(m, a, PAGE))
            _exit(4);
        kunmap_atomic_pfn_t(a);
    }
    /* Persisted: tell the parent, and wait to be killed without any cleanup. */
    if (write(ready_fd, "k", 1) != 1)
        _exit(5);
    for (;;)
        pause();
}

int main(void)
{
    check_watchdog("int_durability", 120); /* a writer that never reports fails as hung */
    char path[256];
    test_path(path, sizeof path, "int_durability");
    unlink(path);
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        writer(path, fds[1]);
    }
    close(fds[1]);
    char c;
    CHECK(read(fds[0], &c, 1) == 1);
    kill(pid, SIGKILL);
    int status;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    pfn_pmem *m = pfn_pmem_map(path, 0, 0);
    REQUIRE(m != NULL);
    CHECK_EQ(pfn_pmem_size(m), PAGES * PAGE);
    /* make test runs this twice: msync (tmpfs) and cache-line flushes (forced). */
    const char *forced = getenv("PFN_FORCE_GRANULARITY");
    int flushing = forced && !strcmp(forced, "cache_line");
    CHECK_EQ(pfn_pmem_granularity(m), flushing ? PFN_GRANULARITY_CACHE_LINE : PFN_GRANULARITY_PAGE);
    pfn_device *dev = pfn_device_new("reader");
    pfn_resource r = {PHYS, PHYS + PAGES * PAGE - 1, NULL};
    CHECK_EQ(devm_register_kmap_pfn_range(dev, &r, pfn_pmem_addr(m)), 0);
    uint64_t good = 0;
    for (uint64_t p = 0; p < PAGES; p++) {
        const uint64_t *a = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + p * PAGE, 0));
        if (a)
            for (uint64_t i = 0; i < PAGE / 8; i++)
                good += a[i] == word(p, i);
        kunmap_atomic_pfn_t((void *)a);
    }
    CHECK_EQ(good, PAGES * PAGE / 8);
    CHECK_EQ(pfn_device_free(dev), 0);
    CHECK_EQ(pfn_pmem_unmap(m), 0);
    unlink(path);
    return check_report("int_durability");
}
