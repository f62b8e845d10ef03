/* The debug mode (PFN_DEBUG, issue 9 item 6): an unmatched kunmap or section close aborts with
 * a message naming it; holds still held at thread exit, or when a call that waits for readers
 * is refused, are reported with their addresses. Without PFN_DEBUG the same misuse returns
 * -EINVAL and the program goes on. Each case runs in a fresh process of this binary (the
 * library reads PFN_DEBUG once, when it loads), its stderr captured in a file. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"
#include "rerun.h"

#define PAGE 4096ull
#define PHYS (0x3dull << 40)

static char path[256];
static pfn_pmem *m;
static pfn_device *dev;

static void setup(const char *tag)
{
    test_path(path, sizeof path, tag);
    m = pfn_pmem_map(path, 4 * PAGE, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    unlink(path);
    dev = pfn_device_new("debug");
    REQUIRE(dev != NULL);
    REQUIRE(pfn_pmem_register(dev, m, PHYS) == 0);
}

static void *exit_holding(void *arg)
{
    (void)arg;
    void *a = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS + PAGE, PFN_DEV));
    REQUIRE(a != NULL);
    return a; /* exits holding it */
}

/* The child's side: one misuse each; exit 0 when the library let it go on. */
static int child(const char *mode)
{
    setup("int_debug_child");
    void *a = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS, PFN_DEV));
    REQUIRE(a != NULL);
    if (!strcmp(mode, "unmatched-kunmap")) {
        int rc = kunmap_atomic_pfn_t((char *)a + 2 * PAGE);
        return rc == -EINVAL ? 0 : 1;
    }
    if (!strcmp(mode, "read-unlock-none")) {
        REQUIRE(kunmap_atomic_pfn_t(a) == 0);
        pfn_read_unlock();
        return 0;
    }
    if (!strcmp(mode, "section-close-twice")) {
        REQUIRE(kunmap_atomic_pfn_t(a) == 0);
        struct pfn_section s;
        REQUIRE(pfn_section_open(&s) == 0);
        REQUIRE(pfn_section_close(&s) == 0);
        return pfn_section_close(&s) == -EINVAL ? 0 : 1;
    }
    if (!strcmp(mode, "section-close-outer")) {
        REQUIRE(kunmap_atomic_pfn_t(a) == 0);
        struct pfn_section outer = pfn_read_lock();
        REQUIRE(outer.reader != NULL);
        struct pfn_section inner = pfn_read_lock();
        REQUIRE(inner.reader != NULL);
        int rc = pfn_section_close(&outer); /* not the innermost */
        REQUIRE(pfn_section_close(&inner) == 0);
        REQUIRE(pfn_section_close(&outer) == 0);
        return rc == -EINVAL ? 0 : 1;
    }
    if (!strcmp(mode, "free-while-holding")) {
        int rc = pfn_device_free(dev);
        REQUIRE(kunmap_atomic_pfn_t(a) == 0);
        return rc == -EDEADLK && pfn_device_free(dev) == 0 ? 0 : 1;
    }
    if (!strcmp(mode, "thread-exit")) {
        REQUIRE(kunmap_atomic_pfn_t(a) == 0);
        pthread_t t;
        void *held;
        REQUIRE(pthread_create(&t, NULL, exit_holding, NULL) == 0);
        REQUIRE(pthread_join(t, &held) == 0);
        /* Its hold ended with it: the device frees at once. */
        return pfn_device_free(dev) == 0 ? 0 : 1;
    }
    return 3;
}

static char out[4096];

/* Runs `mode` in a child, PFN_DEBUG on or off; its stderr lands in `out`. Returns the status. */
static int run(const char *mode, bool debug)
{
    char log[300];
    snprintf(log, sizeof log, "%s.stderr", path);
    int fd = open(log, O_RDWR | O_CREAT | O_TRUNC, 0600);
    REQUIRE(fd >= 0);
    unlink(log);
    int saved = dup(2);
    REQUIRE(saved >= 0 && dup2(fd, 2) == 2);
    const char *set[] = {debug ? "PFN_DEBUG=1" : "PFN_DEBUG=0", NULL};
    const char *args[] = {mode, NULL};
    int status = check_rerun(set, args);
    REQUIRE(dup2(saved, 2) == 2);
    close(saved);
    ssize_t n = pread(fd, out, sizeof out - 1, 0);
    out[n > 0 ? n : 0] = 0;
    close(fd);
    return status;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        return child(argv[1]);
    test_path(path, sizeof path, "int_debug");
    check_watchdog("int_debug", 300);
    char want[64];

    CHECK_EQ(run("unmatched-kunmap", true), 128 + SIGABRT);
    CHECK(strstr(out, "libpfn: misuse: kunmap_atomic_pfn_t") != NULL);
    CHECK_EQ(run("unmatched-kunmap", false), 0);
    CHECK(strstr(out, "libpfn:") == NULL);

    CHECK_EQ(run("read-unlock-none", true), 128 + SIGABRT);
    CHECK(strstr(out, "libpfn: misuse: pfn_read_unlock") != NULL);
    CHECK_EQ(run("read-unlock-none", false), 0);
    CHECK(strstr(out, "libpfn:") == NULL);

    /* The report names the page held: the mapping's first page (the child's own address,
     * so only the shape is checked: "kmaps of 0x...000 (newest first)"). */
    CHECK_EQ(run("section-close-twice", true), 128 + SIGABRT);
    CHECK(strstr(out, "libpfn: misuse: pfn_section_close") != NULL);
    CHECK_EQ(run("section-close-twice", false), 0);
    CHECK(strstr(out, "libpfn:") == NULL);

    CHECK_EQ(run("section-close-outer", true), 128 + SIGABRT);
    CHECK(strstr(out, "libpfn: misuse: pfn_section_close") != NULL);
    CHECK_EQ(run("section-close-outer", false), 0);
    CHECK(strstr(out, "libpfn:") == NULL);

    CHECK_EQ(run("free-while-holding", true), 0);
    CHECK(strstr(out, "refused (EDEADLK): this thread holds 1 kmap(s) and 0 read section(s); kmaps of 0x") != NULL);
    CHECK(strstr(out, "000 (newest first)") != NULL);
    CHECK_EQ(run("free-while-holding", false), 0);
    CHECK(strstr(out, "libpfn:") == NULL);

    CHECK_EQ(run("thread-exit", true), 0);
    snprintf(want, sizeof want, "exited holding 1 kmap(s) and 0 read section(s); kmaps of 0x");
    CHECK(strstr(out, want) != NULL);
    CHECK_EQ(run("thread-exit", false), 0);
    CHECK(strstr(out, "libpfn:") == NULL);
    return check_report("int_debug");
}
