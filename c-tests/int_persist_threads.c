/* Persistence from many threads at once, and from signal handlers.
 *
 * 64 threads (16 under PFN_TEST_QUICK) each own a slice of one mapping and copy, set, move
 * and persist in it through every entry point, checking every return and, at the end, every
 * byte against a private copy. Meanwhile a churn thread maps, persists and unmaps small
 * files over and over (adding and removing entries of the registry that persisting by
 * address reads), and is interrupted by a signal whose handler persists and copies into a
 * mapping of its own: the promise that these calls take no lock means a handler never waits
 * for the code it interrupted. The test runs itself twice: msync mode (tmpfs) and flush mode
 * (PFN_FORCE_GRANULARITY=cache_line). */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"
#include "rerun.h"

#define SLICE 8192
#define MAXTHREADS 64

static int quick;
static int nthreads;
static pfn_pmem *shared_map;
static unsigned char *shared_base;
static atomic_int stop_churn;
static atomic_int errors;
static pthread_t churn_thread;

/* ---- the signal handler's own mapping and results */
static unsigned char *handler_area;
static volatile sig_atomic_t handler_runs, handler_failures;

static void on_signal(int sig)
{
    (void)sig;
    int saved = errno;
    unsigned char line[100];
    for (int i = 0; i < 100; i++)
        line[i] = (unsigned char)(handler_runs + i);
    unsigned char *at = handler_area + (handler_runs % 32) * 128 + 3;
    if (pfn_memcpy_persist(at, line, sizeof line) != at)
        handler_failures++;
    for (int i = 0; i < 100; i++)
        if (at[i] != line[i])
            handler_failures++;
    if (pfn_persist(handler_area, 4096) != 0)
        handler_failures++;
    pfn_flush(at, 100);
    pfn_drain();
    handler_runs++;
    errno = saved;
}

static uint64_t next(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    unsigned char *mine = shared_base + (size_t)id * SLICE;
    unsigned char shadow[SLICE], src[SLICE];
    memset(shadow, 0, sizeof shadow);
    memset(mine, 0, SLICE);
    uint64_t x = 0x9E3779B97F4A7C15ull * (uint64_t)(id + 1);
    for (size_t i = 0; i < sizeof src; i++)
        src[i] = (unsigned char)next(&x);
    int rounds = quick ? 150 : 1500;
    for (int r = 0; r < rounds; r++) {
        size_t len = next(&x) % (SLICE / 2), off = next(&x) % (SLICE - len);
        switch (next(&x) % 5) {
        case 0:
            memcpy(shadow + off, src + (off % 64), len);
            if (pfn_memcpy_persist(mine + off, src + (off % 64), len) != mine + off)
                atomic_fetch_add(&errors, 1);
            break;
        case 1: {
            size_t to = next(&x) % (SLICE - len);
            memmove(shadow + to, shadow + off, len);
            if (pfn_memmove_persist(mine + to, mine + off, len) != mine + to)
                atomic_fetch_add(&errors, 1);
            break;
        }
        case 2:
            memset(shadow + off, (int)r, len);
            if (pfn_memset(mine + off, (int)r, len, PFN_F_MEM_NODRAIN) != mine + off)
                atomic_fetch_add(&errors, 1);
            pfn_drain();
            break;
        case 3:
            mine[off] = shadow[off] = (unsigned char)r;
            if (pfn_pmem_persist(shared_map, mine + off, len + 1) != 0)
                atomic_fetch_add(&errors, 1);
            break;
        default:
            if (pfn_persist(mine + off, len) != 0)
                atomic_fetch_add(&errors, 1);
        }
    }
    if (memcmp(mine, shadow, SLICE) != 0)
        atomic_fetch_add(&errors, 1);
    return NULL;
}

/* Maps, persists and unmaps small files until told to stop. */
static void *churn(void *arg)
{
    const char *dir = arg;
    char path[300];
    snprintf(path, sizeof path, "%s-churn", dir);
    long n = 0;
    while (!atomic_load(&stop_churn)) {
        unlink(path);
        pfn_pmem *m = pfn_pmem_map(path, 4 * 4096, PFN_PMEM_CREATE);
        if (!m) {
            atomic_fetch_add(&errors, 1);
            break;
        }
        char *a = pfn_pmem_addr(m);
        a[n % 4096] = (char)n;
        if (pfn_persist(a, 4 * 4096) != 0 || pfn_pmem_unmap(m) != 0)
            atomic_fetch_add(&errors, 1);
        n++;
    }
    unlink(path);
    return (void *)n;
}

static void *signaller(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_churn)) {
        pthread_kill(churn_thread, SIGUSR1);
        usleep(quick ? 2000 : 200);
    }
    return NULL;
}

static int run(void)
{
    char path[256];
    test_path(path, sizeof path, "int_persist_threads");
    unlink(path);
    shared_map = pfn_pmem_map(path, (uint64_t)MAXTHREADS * SLICE + 2 * 4096, PFN_PMEM_CREATE);
    REQUIRE(shared_map != NULL);
    unlink(path);
    shared_base = pfn_pmem_addr(shared_map);
    handler_area = shared_base + (size_t)MAXTHREADS * SLICE;
    const char *forced = getenv("PFN_FORCE_GRANULARITY");
    CHECK_EQ(pfn_pmem_granularity(shared_map),
             forced ? PFN_GRANULARITY_CACHE_LINE : PFN_GRANULARITY_PAGE);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    REQUIRE(sigaction(SIGUSR1, &sa, NULL) == 0);

    nthreads = quick ? 16 : MAXTHREADS;
    pthread_t t[MAXTHREADS], sig;
    REQUIRE(pthread_create(&churn_thread, NULL, churn, path) == 0);
    REQUIRE(pthread_create(&sig, NULL, signaller, NULL) == 0);
    for (int i = 0; i < nthreads; i++)
        REQUIRE(pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < nthreads; i++)
        pthread_join(t[i], NULL);
    /* Let the handler interrupt a fair number of churn rounds even on a fast run. */
    for (int waited = 0; handler_runs < (quick ? 5 : 50) && waited < 20000; waited++)
        usleep(1000);
    atomic_store(&stop_churn, 1);
    pthread_join(sig, NULL);
    void *churned;
    pthread_join(churn_thread, &churned);

    CHECK_EQ(atomic_load(&errors), 0);
    CHECK_EQ(handler_failures, 0);
    CHECK(handler_runs > 0);
    CHECK((long)churned > 0);
    CHECK_EQ(pfn_pmem_unmap(shared_map), 0);
    char name[96];
    snprintf(name, sizeof name, "int_persist_threads[%s: %d threads, %d handler runs, %ld maps]",
             forced ? "flush mode" : "msync mode", nthreads, (int)handler_runs, (long)churned);
    return check_report(name);
}

int main(int argc, char **argv)
{
    quick = getenv("PFN_TEST_QUICK") != NULL;
    if (argc == 2 && !strcmp(argv[1], "--run"))
        return run();
    const char *args[] = {"--run", NULL};
    CHECK_EQ(check_rerun(NULL, args), 0);
    const char *flush[] = {"PFN_FORCE_GRANULARITY=cache_line", NULL};
    CHECK_EQ(check_rerun(flush, args), 0);
    return check_report("int_persist_threads");
}
