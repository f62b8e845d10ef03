"""A tiny persistent page store in Python over libpfn: run it twice, it counts its runs.

    PYTHONPATH=python python3 python/examples/kv_pages.py [POOL]

POOL defaults to /dev/shm/libpfn-kv-<uid>.pmem. The pool is created when missing; an existing
file is used only if it carries this example's magic, so a wrong path destroys nothing.
"""

import os
import sys

import pfn

PHYS = 1 << 40  # where the pool lives in libpfn's physical space
PAGES = 16
MAGIC = b"pfn-kv-pages-v1\n"  # page 0 starts with it; the run counter follows

default = os.path.join("/dev/shm" if os.path.isdir("/dev/shm") else os.environ.get("TMPDIR", "/tmp"),
                       f"libpfn-kv-{os.getuid()}.pmem")
path = sys.argv[1] if len(sys.argv) > 1 else default

pfn.library()  # before creating anything: a missing library leaves no empty pool behind

try:  # create it exclusively: a file that exists, or appears meanwhile, is never overwritten
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644))
    fresh = True
except FileExistsError:
    fresh = False
    if not os.path.isfile(path) or os.path.getsize(path) != PAGES * pfn.PAGE_SIZE:
        sys.exit(f"kv_pages: {path} exists and is not a kv_pages pool; refusing to touch it")

ready = not fresh  # a pool this run created counts only once its magic is durable
try:
    with pfn.PmemFile(path, PAGES * pfn.PAGE_SIZE, create=fresh) as pool, pfn.Device("pool") as dev:
        dev.register(PHYS, pool.size, pool.addr)
        header = pfn.Pfn.from_phys(PHYS, pfn.DEV)  # a handle that could itself be stored on media
        with pfn.kmap(header) as page:
            if fresh:
                page[:len(MAGIC)] = MAGIC
            elif bytes(page[:len(MAGIC)]) != MAGIC:
                sys.exit(f"kv_pages: {path} is not a kv_pages pool (no magic); refusing to touch it")
            at = len(MAGIC)
            runs = int.from_bytes(page[at:at + 8], "little") + 1
            page[at:at + 8] = runs.to_bytes(8, "little")
        pool.persist(0, pfn.PAGE_SIZE)
        ready = True
        print(f"libpfn {pfn.version()}: run number {runs} of {path} (page at pfn {header.pfn:#x})")
finally:
    if not ready:
        os.unlink(path)  # never leave a half-made pool that later runs would refuse
# Leaving the `with` closes the device first (unregistering, waiting for readers), then unmaps.
