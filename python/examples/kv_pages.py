"""A tiny persistent page store in Python over libpfn: run it twice, it counts its runs.

    PYTHONPATH=python python3 python/examples/kv_pages.py [/dev/shm/libpfn-example.pmem]
"""

import sys

import pfn

PHYS = 1 << 40  # where the pool lives in libpfn's physical space
path = sys.argv[1] if len(sys.argv) > 1 else "/dev/shm/libpfn-example.pmem"

with pfn.PmemFile(path, 16 * pfn.PAGE_SIZE, create=True) as pool, pfn.Device("pool") as dev:
    dev.register(PHYS, pool.size, pool.addr)
    counter = pfn.Pfn.from_phys(PHYS, pfn.DEV)  # a handle that could itself be stored on media
    with pfn.kmap(counter) as page:
        runs = int.from_bytes(page[:8], "little") + 1
        page[:8] = runs.to_bytes(8, "little")
    pool.persist(0, 8)
    print(f"{pfn.version()}: run number {runs} of {path} (page at pfn {counter.pfn:#x})")
# Leaving the `with` closes the device first (unregistering, waiting for readers), then unmaps.
