/* The ABI floor: an exported kmap/kunmap pair that does no work, built as its own shared
 * library so every call goes through the PLT exactly as a call into libpfn.so does. */
#include "floor.h"

void *pfnbench_floor_kmap(pfn_t pfn)
{
    (void)pfn;
    return 0;
}

void pfnbench_floor_kunmap(void *addr)
{
    (void)addr;
}
