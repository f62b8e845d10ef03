/* The seed's kmap_pfn.c, re-created from the patch under review (see ../shared/seed/) for user
 * space: ranges on an RCU list (liburcu memb: what the kernel's rcu_read_lock would be in a
 * process), kmap walks the list under rcu_read_lock and returns with it held; kunmap walks the
 * list again to decide whether the address was a device pfn, then drops the read lock. The
 * page-backed (!PFN_DEV) branch has no user-space counterpart, so every pfn is a device pfn. */
#include <stdlib.h>
#include "seed.h"

#ifdef HAVE_URCU
#define _LGPL_SOURCE /* inline read-side lock: the seed's cheapest possible form */
#include <pthread.h>
#include <urcu/urcu-memb.h>
#include <urcu/rculist.h>

struct kmap {
    struct cds_list_head list;
    struct kmap *next_free;
    struct seed_resource *res;
    void *dev;
    void *base;
};

static CDS_LIST_HEAD(ranges);
static pthread_mutex_t register_lock = PTHREAD_MUTEX_INITIALIZER;

int seed_available(void) { return 1; }
void seed_thread_online(void) { urcu_memb_register_thread(); }
void seed_thread_offline(void) { urcu_memb_unregister_thread(); }

static uint64_t resource_size(const struct seed_resource *res)
{
    return res->end - res->start + 1;
}

int seed_register_kmap_pfn_range(void *dev, struct seed_resource *res, void *base)
{
    struct kmap *kmap = calloc(1, sizeof(*kmap));
    if (!kmap)
        return -1;
    CDS_INIT_LIST_HEAD(&kmap->list);
    kmap->res = res;
    kmap->base = base;
    kmap->dev = dev;
    pthread_mutex_lock(&register_lock);
    cds_list_add_rcu(&kmap->list, &ranges);
    pthread_mutex_unlock(&register_lock);
    return 0;
}

/* Teardown for the benchmark only: unlink all, one grace period, free all. */
void seed_unregister_all(void)
{
    struct kmap *kmap, *tmp, *to_free = NULL;
    pthread_mutex_lock(&register_lock);
    cds_list_for_each_entry_safe(kmap, tmp, &ranges, list) {
        cds_list_del_rcu(&kmap->list);
        kmap->next_free = to_free;
        to_free = kmap;
    }
    pthread_mutex_unlock(&register_lock);
    urcu_memb_synchronize_rcu();
    while (to_free) {
        kmap = to_free;
        to_free = kmap->next_free;
        free(kmap->res);
        free(kmap);
    }
}

__attribute__((noinline)) void *seed_kmap_atomic_pfn_t(uint64_t pfn)
{
    struct kmap *kmap;
    uint64_t addr;

    urcu_memb_read_lock();
    addr = pfn << 12;
    cds_list_for_each_entry_rcu(kmap, &ranges, list)
        if (addr >= kmap->res->start && addr <= kmap->res->end)
            return (char *)kmap->base + addr - kmap->res->start;
    /* only unlock in the error case */
    urcu_memb_read_unlock();
    return NULL;
}

__attribute__((noinline)) void seed_kunmap_atomic_pfn_t(void *addr)
{
    struct kmap *kmap;
    int dev_pfn = 0;

    if (!addr)
        return;
    cds_list_for_each_entry_rcu(kmap, &ranges, list)
        if ((char *)addr < (char *)kmap->base + resource_size(kmap->res) &&
            (char *)addr >= (char *)kmap->base) {
            dev_pfn = 1;
            break;
        }
    (void)dev_pfn; /* !dev_pfn would kunmap_atomic() a page-backed address: none here */
    urcu_memb_read_unlock();
}

#else /* no liburcu-dev: the seed contender is skipped */
int seed_available(void) { return 0; }
void seed_thread_online(void) {}
void seed_thread_offline(void) {}
int seed_register_kmap_pfn_range(void *dev, struct seed_resource *res, void *base)
{
    (void)dev; (void)res; (void)base;
    return -1;
}
void seed_unregister_all(void) {}
void *seed_kmap_atomic_pfn_t(uint64_t pfn) { (void)pfn; return NULL; }
void seed_kunmap_atomic_pfn_t(void *addr) { (void)addr; }
#endif
