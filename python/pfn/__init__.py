"""libpfn from Python: pfn_t handles into a library-owned physical space, O(1) kmaps.

    import pfn
    with pfn.PmemFile("/dev/shm/pool", 1 << 20, create=True) as m, pfn.Device("pmem0") as dev:
        dev.register(1 << 40, m.size, m.addr)
        h = pfn.Pfn.from_phys((1 << 40) + 5 * pfn.PAGE_SIZE, pfn.DEV)
        with pfn.kmap(h) as page:          # a writable memoryview of the page
            page[:5] = b"hello"
        m.persist()

Errors are OSError with the errno of the C call. A kmap's memoryview is released when its
`with` block ends; do not keep it (or slices of it) beyond that.
"""

import contextlib
import ctypes
import errno as _errno
import os

from ._lib import load as _load, pfn_resource as _resource, pfn_t as _pfn_t, c_u64 as _u64

__all__ = [
    "PAGE_SHIFT", "PAGE_SIZE", "FLAGS_MASK", "SG_CHAIN", "SG_LAST", "DEV", "MAP", "SPECIAL",
    "Pfn", "Device", "PmemFile", "kmap", "read_section", "version", "library",
    "GRANULARITY_BYTE", "GRANULARITY_CACHE_LINE", "GRANULARITY_PAGE", "persist",
    "flush_method", "movnt_method",
]

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
FLAGS_MASK = 0xFFF0000000000000
SG_CHAIN = 1 << 63
SG_LAST = 1 << 62
DEV = 1 << 61
MAP = 1 << 60
SPECIAL = 1 << 59
# How stores to a mapping become durable (PmemFile.granularity; the C PFN_GRANULARITY_*).
GRANULARITY_BYTE = 0        # the platform flushes CPU caches on power loss: a fence suffices
GRANULARITY_CACHE_LINE = 1  # cache-line flushes and a fence (device DAX, MAP_SYNC)
GRANULARITY_PAGE = 2        # msync (page cache: tmpfs, ordinary disks)

_lib = None


def library(path=None):
    """The loaded C library (loaded on first use; `path` picks a file the first time)."""
    global _lib
    if _lib is None:
        _lib = _load(path)
    return _lib


def _raise(err, what):
    raise OSError(err, f"{what}: {os.strerror(err)}")


def _check(rc, what):
    if rc < 0:
        _raise(-rc, what)
    return rc


def _null_check(ptr, what):
    if not ptr:
        _raise(ctypes.get_errno() or _errno.EIO, what)
    return ptr


def version():
    return library().pfn_version().decode()


class Pfn:
    """A pfn_t value: page-frame number in bits 0..51, flags in bits 52..63."""

    __slots__ = ("val",)

    def __init__(self, val):
        if not 0 <= val < 1 << 64:
            raise ValueError("a pfn_t is an unsigned 64-bit value")
        self.val = val

    @classmethod
    def from_pfn(cls, pfn, flags=0):
        # getattr: a double-underscore name written in a class body would be mangled
        make = getattr(library(), "__pfn_to_pfn_t")
        return cls(make(pfn & (2**64 - 1), flags & (2**64 - 1)).val)

    @classmethod
    def from_phys(cls, phys, flags=0):
        return cls(library().phys_to_pfn_t(phys, flags).val)

    def _c(self):
        return _pfn_t(self.val)

    @property
    def pfn(self):
        return library().pfn_t_to_pfn(self._c())

    @property
    def phys(self):
        return library().pfn_t_to_phys(self._c())

    @property
    def flags(self):
        return self.val & FLAGS_MASK

    @property
    def has_page(self):
        return library().pfn_t_has_page(self._c())

    @property
    def devmap(self):
        return library().pfn_t_devmap(self._c())

    @property
    def special(self):
        return library().pfn_t_special(self._c())

    def __eq__(self, other):
        return isinstance(other, Pfn) and other.val == self.val

    def __hash__(self):
        return hash(self.val)

    def __repr__(self):
        return f"Pfn(pfn={self.pfn:#x}, flags={self.flags:#x})"


class _Handle:
    """A C handle ended by the function named `_free` when closed (or when the `with` ends)."""

    _free = ""
    _ptr = None

    def close(self):
        if self._ptr:
            _check(getattr(library(), self._free)(self._ptr), self._free)
            self._ptr = None

    def _live(self):
        if not self._ptr:
            raise ValueError(f"{type(self).__name__} is closed")
        return self._ptr

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Device(_Handle):
    """An owner of ranges. Closing it unregisters them all, waiting for kmaps in flight."""

    _free = "pfn_device_free"

    def __init__(self, name=None):
        lib = library()
        self._ptr = _null_check(
            lib.pfn_device_new(name.encode() if name is not None else None), "pfn_device_new")

    def register(self, start, size, base, name=None):
        """Registers physical bytes start .. start + size - 1 as mapped at address `base`."""
        res = _resource(start, start + size - 1, name.encode() if name else None)
        _check(library().devm_register_kmap_pfn_range(self._live(), ctypes.byref(res), base),
               "register")

    def unregister(self, start):
        _check(library().pfn_unregister_range(self._live(), start), "unregister")


class PmemFile(_Handle):
    """A file mapped shared, read-write (size 0: the whole existing file)."""

    _free = "pfn_pmem_unmap"

    def __init__(self, path, size=0, create=False):
        lib = library()
        self._ptr = _null_check(
            lib.pfn_pmem_map(os.fsencode(path), size, 1 if create else 0), f"map {path}")
        self.addr = lib.pfn_pmem_addr(self._ptr)
        self.size = lib.pfn_pmem_size(self._ptr)

    @property
    def backed_size(self):
        """Bytes the file still backs (less than size after someone truncated it)."""
        return library().pfn_pmem_backed_size(self._live())

    def persist(self, offset=0, length=None):
        """Makes bytes offset .. offset + length of the mapping durable (default: all)."""
        if length is None:
            length = self.size - offset
        if offset < 0 or length < 0:
            _raise(_errno.EINVAL, "persist")
        _check(library().pfn_pmem_persist(self._live(), self.addr + offset, length), "persist")

    @property
    def granularity(self):
        """How stores to this mapping become durable: GRANULARITY_PAGE (persist uses msync),
        GRANULARITY_CACHE_LINE (cache-line flushes) or GRANULARITY_BYTE (a fence)."""
        return _check(library().pfn_pmem_granularity(self._live()), "granularity")

    def memcpy_persist(self, offset, data):
        """Copies `data` (any bytes-like object: bytes, bytearray, memoryview, array, ...)
        into the mapping at `offset` and makes it durable before returning, the fastest way
        the mapping allows. Returns the number of bytes copied."""
        self._live()
        view = memoryview(data)
        if not view.c_contiguous:
            view = memoryview(view.tobytes())
        view = view.cast("B")
        n = view.nbytes
        if offset < 0 or offset + n > self.size:
            _raise(_errno.EINVAL, f"memcpy_persist: {n} bytes at {offset} outside {self.size}")
        if n == 0:
            return 0
        if view.readonly:
            keep = view.tobytes()   # ctypes takes no read-only buffer; a bytes copy it can
            src = ctypes.cast(ctypes.c_char_p(keep), ctypes.c_void_p)
        else:
            keep = (ctypes.c_char * n).from_buffer(view)
            src = ctypes.addressof(keep)
        try:
            if not library().pfn_memcpy_persist(self.addr + offset, src, n):
                _raise(ctypes.get_errno() or _errno.EIO, "memcpy_persist")
        finally:
            del keep    # releases the buffer (a bytearray can be resized again)
            view.release()
        return n


def persist(addr, length):
    """Makes `length` bytes at address `addr` durable without a mapping in hand: msync where
    they lie in a GRANULARITY_PAGE mapping of this library, cache-line flushes elsewhere."""
    if addr < 0 or length < 0:
        _raise(_errno.EINVAL, "persist")
    _check(library().pfn_persist(addr, length), "persist")


def flush_method():
    """The cache-line flush instruction in use: "clwb", "clflushopt" or "clflush"."""
    return library().pfn_flush_method().decode()


def movnt_method():
    """The vector unit of non-temporal copies: "avx512f", "avx2", "sse2" or "none"."""
    return library().pfn_movnt_method().decode()


@contextlib.contextmanager
def kmap(p, length=PAGE_SIZE):
    """Maps handle `p` (a Pfn or int) for this thread, yielding a writable memoryview of
    `length` bytes from the frame's start (at most to the range's end). The view is released
    and the kmap ended when the block exits."""
    lib = library()
    val = p.val if isinstance(p, Pfn) else p
    avail = _u64(0)
    addr = _null_check(lib.kmap_atomic_pfn_t_len(_pfn_t(val), ctypes.byref(avail)), "kmap")
    try:
        if length > avail.value:
            _raise(_errno.EINVAL, f"kmap: {length} bytes asked, {avail.value} contiguous")
        view = memoryview((ctypes.c_char * length).from_address(addr)).cast("B")
        try:
            yield view
        finally:
            view.release()
    finally:
        lib.kunmap_atomic_pfn_t(addr)


@contextlib.contextmanager
def read_section():
    """A read section: yields translate(p) -> address (int) valid until the block exits."""
    lib = library()
    section = lib.pfn_read_lock()
    try:
        def translate(p):
            val = p.val if isinstance(p, Pfn) else p
            return _null_check(lib.pfn_section_translate(ctypes.byref(section), _pfn_t(val)),
                               "translate")
        yield translate
    finally:
        lib.pfn_read_unlock()
