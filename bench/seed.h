#ifndef PFNBENCH_SEED_H
#define PFNBENCH_SEED_H
#include <stdint.h>

/* The 2015 seed's design (mm/kmap_pfn.c, v5 2/5), rebuilt for user space: a list of ranges
 * walked under rcu_read_lock() (liburcu's memb flavour), with kunmap walking it again. */
struct seed_resource {
    uint64_t start, end; /* inclusive, as struct resource */
};

int seed_available(void);
void seed_thread_online(void);
void seed_thread_offline(void);
/* `res` must come from malloc: like the seed, the list keeps the pointer; seed_unregister_all
 * frees it. */
int seed_register_kmap_pfn_range(void *dev, struct seed_resource *res, void *base);
void seed_unregister_all(void);
void *seed_kmap_atomic_pfn_t(uint64_t pfn);
void seed_kunmap_atomic_pfn_t(void *addr);
#endif
