/* Grace periods under load: how long an unregister takes while T reader threads loop kmap /
 * kunmap on this 2-CPU machine, beside liburcu-memb's synchronize_rcu() while T threads loop
 * rcu_read_lock / rcu_read_unlock, in the same run, for T = 1, 2, 8, 16 and 64.
 *
 * A reader preempted inside its section must be waited for, so with more threads than CPUs one
 * scheduling round is the floor of any grace period. Each writer sample: libpfn registers a
 * range and times its pfn_unregister_range (the readers kmap another range, which stays);
 * liburcu times synchronize_rcu. Samples until both 30 samples and 1 s (or 200 samples) are
 * reached per contender and thread count; p50, p99 and the maximum are printed, with the
 * ratio of libpfn's p99 to liburcu's.
 *
 * usage: grace [--quick] [--out DIR] [--pmem DIR] */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pfn.h"
#ifdef HAVE_URCU
#include <urcu/urcu-memb.h>
#endif

#define PAGE 4096ull
#define PHYS (21ull << 40)
#define MAX_THREADS 64

static char *base;
static pfn_device *dev;
static atomic_int stop;
static atomic_ullong reads;

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void *pfn_reader(void *arg)
{
    (void)arg;
    uint64_t n = 0, sum = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        volatile char *p = kmap_atomic_pfn_t(phys_to_pfn_t(PHYS, 0));
        sum += p[0];
        kunmap_atomic_pfn_t((void *)p);
        n++;
    }
    atomic_fetch_add(&reads, n + (sum & 0));
    return NULL;
}

#ifdef HAVE_URCU
static int shared_value;

static void *urcu_reader(void *arg)
{
    (void)arg;
    uint64_t n = 0, sum = 0;
    urcu_memb_register_thread();
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        urcu_memb_read_lock();
        sum += *(volatile int *)&shared_value;
        urcu_memb_read_unlock();
        n++;
    }
    urcu_memb_unregister_thread();
    atomic_fetch_add(&reads, n + (sum & 0));
    return NULL;
}
#endif

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct stats {
    double p50, p99, max;
    int n;
};

static struct stats summarize(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    int i99 = (int)(0.99 * (n - 1) + 0.5);
    return (struct stats){v[n / 2], v[i99], v[n - 1], n};
}

/* One contender with `threads` busy readers: samples of the writer's wait, in microseconds. */
static struct stats run(int urcu, int threads, double min_seconds)
{
    static double samples[200];
    pthread_t t[MAX_THREADS];
    atomic_store(&stop, 0);
    for (int i = 0; i < threads; i++)
#ifdef HAVE_URCU
        pthread_create(&t[i], NULL, urcu ? urcu_reader : pfn_reader, NULL);
#else
        pthread_create(&t[i], NULL, pfn_reader, NULL);
#endif
    usleep(20000); /* the readers get going */
    int n = 0;
    double start = now_us();
    pfn_resource r = {PHYS + PAGE, PHYS + 2 * PAGE - 1, NULL};
    while (n < 200 && (n < 30 || now_us() - start < min_seconds * 1e6)) {
        double t0, t1;
        if (urcu) {
#ifdef HAVE_URCU
            t0 = now_us();
            urcu_memb_synchronize_rcu();
            t1 = now_us();
#else
            break;
#endif
        } else {
            if (devm_register_kmap_pfn_range(dev, &r, base + PAGE) != 0) {
                fprintf(stderr, "grace: register failed\n");
                exit(1);
            }
            t0 = now_us();
            if (pfn_unregister_range(dev, r.start) != 0) {
                fprintf(stderr, "grace: unregister failed\n");
                exit(1);
            }
            t1 = now_us();
        }
        samples[n++] = t1 - t0;
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    return summarize(samples, n);
}

int main(int argc, char **argv)
{
    int quick = 0;
    const char *out = NULL, *dir = "/dev/shm";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--out") && i + 1 < argc)
            out = argv[++i];
        else if (!strcmp(argv[i], "--pmem") && i + 1 < argc)
            dir = argv[++i];
        else {
            fprintf(stderr, "usage: grace [--quick] [--out DIR] [--pmem DIR]\n");
            return 2;
        }
    }
    char path[512];
    snprintf(path, sizeof path, "%s/libpfn-grace-%d.pmem", dir, (int)getpid());
    pfn_pmem *m = pfn_pmem_map(path, 16 * PAGE, PFN_PMEM_CREATE);
    if (!m) {
        perror("grace: pfn_pmem_map");
        return 1;
    }
    base = pfn_pmem_addr(m);
    dev = pfn_device_new("grace");
    pfn_resource held = {PHYS, PHYS + PAGE - 1, NULL};
    if (!dev || devm_register_kmap_pfn_range(dev, &held, base) != 0) {
        fprintf(stderr, "grace: setup failed\n");
        return 1;
    }
    FILE *csv = NULL;
    if (out) {
        char p[512];
        snprintf(p, sizeof p, "%s/grace.csv", out);
        csv = fopen(p, "w");
        if (csv)
            fprintf(csv, "readers,contender,samples,p50_us,p99_us,max_us\n");
    }
    const int counts[] = {1, 2, 8, 16, 64};
    printf("Grace periods with T threads looping read-side sections on %ld CPUs (microseconds)\n",
           sysconf(_SC_NPROCESSORS_ONLN));
    printf("%4s  %-30s  %-30s  %s\n", "T", "libpfn unregister p50/p99/max",
           "liburcu-memb synchronize_rcu", "p99 libpfn/liburcu");
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        int T = counts[i];
        double secs = quick ? 0.3 : 1.0;
        struct stats p = run(0, T, secs);
#ifdef HAVE_URCU
        struct stats u = run(1, T, secs);
        printf("%4d  %8.0f %9.0f %9.0f (n=%3d)  %8.0f %9.0f %9.0f (n=%3d)  %.2f\n", T, p.p50, p.p99,
               p.max, p.n, u.p50, u.p99, u.max, u.n, p.p99 / u.p99);
#else
        printf("%4d  %8.0f %9.0f %9.0f (n=%3d)  (liburcu-dev not installed)\n", T, p.p50, p.p99,
               p.max, p.n);
#endif
        fflush(stdout);
        if (csv) {
            fprintf(csv, "%d,libpfn,%d,%.1f,%.1f,%.1f\n", T, p.n, p.p50, p.p99, p.max);
#ifdef HAVE_URCU
            fprintf(csv, "%d,liburcu-memb,%d,%.1f,%.1f,%.1f\n", T, u.n, u.p50, u.p99, u.max);
#endif
        }
    }
    if (csv)
        fclose(csv);
    pfn_device_free(dev);
    pfn_pmem_unmap(m);
    unlink(path);
    return 0;
}
