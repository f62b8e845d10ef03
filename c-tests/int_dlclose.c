/* Issue 8 item 6: loading and unloading the library at any time is safe. The program is not
 * linked against libpfn: it dlopens the shared library (PFN_SO_PATH, set by the Makefile),
 * kmaps on a thread, dlcloses the library while that thread is alive, then lets the thread
 * exit (its exit handler must not point into unloaded code), forks (fork handlers likewise),
 * and loads the library again and uses it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>
#include "pfn.h"
#include "check.h"

#ifndef PFN_SO_PATH
#define PFN_SO_PATH "target/release/libpfn.so"
#endif
#define PAGE 4096ull
#define PHYS (19ull << 40)

struct api {
    void *lib;
    pfn_pmem *(*pmem_map)(const char *, uint64_t, uint32_t);
    void *(*pmem_addr)(const pfn_pmem *);
    int (*pmem_unmap)(pfn_pmem *);
    pfn_device *(*device_new)(const char *);
    int (*device_free)(pfn_device *);
    int (*reg)(pfn_device *, const pfn_resource *, void *);
    void *(*kmap)(pfn_t);
    int (*kunmap)(void *);
};

static int load(struct api *a)
{
    a->lib = dlopen(PFN_SO_PATH, RTLD_NOW | RTLD_LOCAL);
    if (!a->lib) {
        fprintf(stderr, "int_dlclose: dlopen %s: %s\n", PFN_SO_PATH, dlerror());
        return 0;
    }
#define SYM(field, name) (*(void **)&a->field = dlsym(a->lib, name)) != NULL
    return SYM(pmem_map, "pfn_pmem_map") && SYM(pmem_addr, "pfn_pmem_addr") &&
           SYM(pmem_unmap, "pfn_pmem_unmap") && SYM(device_new, "pfn_device_new") &&
           SYM(device_free, "pfn_device_free") && SYM(reg, "devm_register_kmap_pfn_range") &&
           SYM(kmap, "kmap_atomic_pfn_t") && SYM(kunmap, "kunmap_atomic_pfn_t");
}

static struct api api;
static atomic_int mapped, exit_now;
static char *base;

static void *kmap_then_exit(void *arg)
{
    (void)arg;
    void *p = api.kmap(phys_to_pfn_t(PHYS, 0));
    atomic_store(&mapped, p == base ? 1 : -1);
    api.kunmap(p);
    p = api.kmap(phys_to_pfn_t(PHYS + PAGE, 0)); /* exits holding this one */
    while (!atomic_load(&exit_now))
        usleep(500);
    return NULL;
}

int main(void)
{
    check_watchdog("int_dlclose", 60);
    char path[256];
    test_path(path, sizeof path, "int_dlclose");
    unlink(path);
    REQUIRE(load(&api));
    pfn_pmem *m = api.pmem_map(path, 16 * PAGE, PFN_PMEM_CREATE);
    REQUIRE(m != NULL);
    base = api.pmem_addr(m);
    pfn_device *dev = api.device_new("dl");
    REQUIRE(dev != NULL);
    pfn_resource r = {PHYS, PHYS + 16 * PAGE - 1, NULL};
    CHECK_EQ(api.reg(dev, &r, base), 0);

    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, kmap_then_exit, NULL) == 0);
    while (atomic_load(&mapped) == 0)
        usleep(100);
    CHECK_EQ(atomic_load(&mapped), 1);
    CHECK_EQ(dlclose(api.lib), 0);
    /* The thread exits (holding a kmap) after the library was closed. */
    atomic_store(&exit_now, 1);
    pthread_join(t, NULL);
    /* A fork after the close runs the library's fork handlers. */
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0)
        _exit(7);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 7);

    /* Loaded again, it is the same library, still working: the exited thread's kmap is
     * released, so freeing the device does not wait for it. */
    struct api again;
    REQUIRE(load(&again));
    void *p = again.kmap(phys_to_pfn_t(PHYS + 2 * PAGE, 0));
    CHECK(p == base + 2 * PAGE);
    CHECK_EQ(again.kunmap(p), 0);
    CHECK_EQ(again.device_free(dev), 0);
    CHECK_EQ(again.pmem_unmap(m), 0);
    CHECK_EQ(dlclose(again.lib), 0);
    unlink(path);
    return check_report("int_dlclose");
}
