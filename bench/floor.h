#ifndef PFNBENCH_FLOOR_H
#define PFNBENCH_FLOOR_H
#include "pfn.h"
void *pfnbench_floor_kmap(pfn_t pfn);
void pfnbench_floor_kunmap(void *addr);
#endif
