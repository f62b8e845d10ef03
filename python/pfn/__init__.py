"""libpfn from Python: pfn_t handles into a library-owned physical space, O(1) kmaps.

    import pfn
    with pfn.PmemFile("/dev/shm/pool.pmem", 1 << 20, create=True) as m, pfn.Device("pmem0") as dev:
        dev.register(1 << 40, m.size, m.addr)
        h = pfn.Pfn.from_phys((1 << 40) + 5 * pfn.PAGE_SIZE, pfn.DEV)
        with pfn.kmap(h) as page:          # a writable memoryview of the page
            page[:5] = b"hello"
        m.persist()

Open the mapping first and the device second, as above: leaving the `with` closes them in
reverse order, the device (unregistering its ranges) before the mapping under them. A `Dax`
over a device's range is opened after the device, so it is destroyed first.

Errors the C library reports are OSError with its errno (FileNotFoundError and the other
OSError subclasses where Python has one). Wrong arguments are TypeError, ValueError or
OverflowError, raised before anything reaches C. A kmap's memoryview is released when its
`with` block ends; do not keep it (or slices of it) beyond that. Devices and mappings still
open at interpreter exit are closed then (devices first).
"""

import atexit
import contextlib
import ctypes
import errno as _errno
import operator
import os
import threading
import weakref

from ._lib import c_u64 as _u64_t
from ._lib import load as _load
from ._lib import pfn_page as _page_t
from ._lib import pfn_phys_t as _phys_t
from ._lib import pfn_resource as _resource
from ._lib import pfn_section as _section_t
from ._lib import pfn_sg_miter as _sg_miter
from ._lib import pfn_sg_table as _sg_table
from ._lib import pfn_t as _pfn_t
from ._version import __version__

__all__ = [
    "PAGE_SHIFT", "PAGE_SIZE", "FLAGS_MASK", "SG_CHAIN", "SG_LAST", "DEV", "MAP", "SPECIAL",
    "Pfn", "Phys", "Device", "PmemFile", "Section", "kmap", "read_section", "virt_to_pfn",
    "virt_to_phys", "thread_init", "errormsg", "version", "library", "library_file",
    "__version__",
    "GRANULARITY_BYTE", "GRANULARITY_CACHE_LINE", "GRANULARITY_PAGE", "persist",
    "flush_method", "movnt_method", "LABEL_SIZE", "ScatterList", "Dax",
    "MEMMAP_DRAM", "MEMMAP_IN_RANGE", "PAGE_BYTES", "PAGE_FLAGS_USER", "Page", "Pin",
    "pfn_to_page", "pfn_to_virt", "memmap_reserved_bytes", "memmap_usage", "pin",
    "pin_waiters",
]

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
FLAGS_MASK = 0xFFF0000000000000
SG_CHAIN = 1 << 63
SG_LAST = 1 << 62
DEV = 1 << 61
MAP = 1 << 60
SPECIAL = 1 << 59
MEMMAP_DRAM = 0
MEMMAP_IN_RANGE = 1
PAGE_BYTES = 16
PAGE_FLAGS_USER = (1 << 24) - 1
_PFN_LIMIT = 1 << 52
_PHYS_LIMIT = 1 << 56
_PHYS_FLAGS_MASK = 0xFF00000000000000
_U64_LIMIT = 1 << 64
_U32_LIMIT = 1 << 32
# The C library's scatterlist flags (PFN_SG_*).
_SG_PERSIST = 1 << 0
_SG_MITER_TO_SG = 1 << 1
_SG_MITER_FROM_SG = 1 << 2
# How stores to a mapping become durable (PmemFile.granularity; the C PFN_GRANULARITY_*).
GRANULARITY_BYTE = 0        # the platform flushes CPU caches on power loss: a fence suffices
GRANULARITY_CACHE_LINE = 1  # cache-line flushes and a fence (device DAX, MAP_SYNC)
GRANULARITY_PAGE = 2        # msync (page cache: tmpfs, ordinary disks)
LABEL_SIZE = 64             # bytes a pool label takes at the start of a mapping

_lib = None
_lib_file = None
_load_lock = threading.Lock()


def library(path=None):
    """The loaded C library (a ctypes.CDLL), loaded on first use.

    `path` picks the file, and only the first time: once a library is loaded, asking for
    another file raises RuntimeError (a process cannot switch libraries). Without `path`:
    $PFN_LIBRARY, else the build tree this package sits in, else the libdir that pkg-config
    reports for an installed libpfn, else the system loader (libpfn.so.MAJOR). When none
    works, OSError lists every place tried."""
    global _lib, _lib_file
    if path is not None:
        path = _fspath(path, "path")
    with _load_lock:
        if _lib is None:
            _lib, _lib_file = _load(path)
        elif path is not None and not _same_file(path, _lib_file):
            raise RuntimeError(
                f"libpfn is already loaded from {_lib_file}; pfn.library({path!r}) cannot "
                "load another one into this process: call it before anything else uses pfn, "
                "or set PFN_LIBRARY before starting Python")
        return _lib


def library_file():
    """The path of the loaded C library's file (loading it if needed)."""
    library()
    return _lib_file


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def version():
    """The loaded C library's version, "MAJOR.MINOR.PATCH" (the package's own is
    pfn.__version__; the two are equal for a matching build)."""
    return library().pfn_version().decode()


# ---- argument checks: wrong types and values fail here, the Python way, never in C

def _int(value, name):
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}") from None


def _u64(value, name):
    """`value` as an int in 0 .. 2**64 - 1."""
    v = _int(value, name)
    if v < 0:
        raise ValueError(f"{name} must not be negative, got {v}")
    if v >= _U64_LIMIT:
        raise OverflowError(f"{name} must be below 2**64, got {v:#x}")
    return v


def _flags(value, name="flags"):
    v = _u64(value, name)
    if v & ~FLAGS_MASK:
        raise ValueError(f"{name} {v:#x} has bits outside FLAGS_MASK ({FLAGS_MASK:#x})")
    return v


def _name(value, name):
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, not {type(value).__name__}")
    if "\0" in value:
        raise ValueError(f"{name} contains a NUL character")
    return value.encode()


def _fspath(value, name):
    try:
        path = os.fspath(value)
    except TypeError:
        raise TypeError(
            f"{name} must be a str, bytes or os.PathLike, not {type(value).__name__}") from None
    if ("\0" if isinstance(path, str) else b"\0") in path:
        raise ValueError(f"{name} contains a NUL character")
    return path


def _pfn_val(p, name="p"):
    if isinstance(p, Pfn):
        return p.val
    if isinstance(p, int):
        return _u64(p, name)
    raise TypeError(f"{name} must be a Pfn or an int, not {type(p).__name__}")


# ---- C errors become OSError

def errormsg():
    """The message of this thread's last failing libpfn call (C's pfn_errormsg): the call,
    the condition and the values; "" before any failure. OSError texts carry it already."""
    return library().pfn_errormsg().decode(errors="replace")


def _raise(err, what, hint=None, filename=None, c_call=True):
    """Raises the OSError for a call `what` that failed with errno `err`. When the failure
    came from the C library (c_call), its per-thread message (pfn_errormsg) is appended: it
    was set by that very call, on this thread, since nothing else ran here in between."""
    msg = f"{what}: {os.strerror(err)}"
    if c_call:
        detail = errormsg()
        if detail:
            msg += f": {detail}"
    if hint:
        msg += f" ({hint})"
    if filename is not None:
        raise OSError(err, msg, filename)
    raise OSError(err, msg)


def _check(rc, what, hint=None):
    if rc < 0:
        _raise(-rc, what, hint)
    return rc


def _null_check(ptr, what, filename=None):
    if not ptr:
        _raise(ctypes.get_errno() or _errno.EIO, what, filename=filename)
    return ptr


class Pfn:
    """A pfn_t value: page-frame number in bits 0..51, flags in bits 52..63.

    Pfn(val) wraps a raw 64-bit value; Pfn.from_pfn and Pfn.from_phys build one from a frame
    number or a physical address. Two Pfns are equal when their values are."""

    __slots__ = ("val",)

    def __init__(self, val):
        """Wraps the raw 64-bit pfn_t value `val` (an int in 0 .. 2**64 - 1)."""
        self.val = _u64(val, "val")

    @classmethod
    def from_pfn(cls, pfn, flags=0):
        """The pfn_t of frame number `pfn` (below 2**52) with `flags` (a combination of
        SG_CHAIN, SG_LAST, DEV, MAP, SPECIAL), as C's __pfn_to_pfn_t."""
        n = _u64(pfn, "pfn")
        if n >= _PFN_LIMIT:
            raise OverflowError(f"pfn must be below 2**52, got {n:#x}")
        # getattr: a double-underscore name written in a class body would be mangled
        make = getattr(library(), "__pfn_to_pfn_t")
        return cls(make(n, _flags(flags)).val)

    @classmethod
    def from_phys(cls, phys, flags=0):
        """The pfn_t of the frame holding physical address `phys` (any byte in it), with
        `flags`, as C's phys_to_pfn_t."""
        return cls(library().phys_to_pfn_t(_u64(phys, "phys"), _flags(flags)).val)

    def _c(self):
        return _pfn_t(self.val)

    @property
    def pfn(self):
        """The page-frame number (bits 0..51)."""
        return library().pfn_t_to_pfn(self._c())

    @property
    def phys(self):
        """The physical address of the frame's first byte."""
        return library().pfn_t_to_phys(self._c())

    @property
    def flags(self):
        """The flag bits (bits 52..63; see FLAGS_MASK)."""
        return self.val & FLAGS_MASK

    @property
    def has_page(self):
        """True when the frame has a struct page (PFN_MAP set, or PFN_DEV clear), as the
        kernel's pfn_t_has_page."""
        return library().pfn_t_has_page(self._c())

    @property
    def devmap(self):
        """True when both PFN_DEV and PFN_MAP are set, as the kernel's pfn_t_devmap."""
        return library().pfn_t_devmap(self._c())

    @property
    def special(self):
        """True when PFN_SPECIAL is set."""
        return library().pfn_t_special(self._c())

    def __eq__(self, other):
        return isinstance(other, Pfn) and other.val == self.val

    def __hash__(self):
        return hash(self.val)

    def __repr__(self):
        return f"Pfn(pfn={self.val & (_PFN_LIMIT - 1):#x}, flags={self.flags:#x})"

    def byte(self, offset=0):
        """The byte handle (Phys) of byte `offset` of this frame, with the same flags."""
        return Phys.make(self.phys + _u64(offset, "offset"), self.flags)


class Phys:
    """A byte handle (C's pfn_phys_t): the physical address of one byte (bits 0..55) and pfn_t
    flags (bits 56..63) in one 64-bit word that may be stored on media. 0 is the null handle.

    Phys(val) wraps a raw value; Phys.make(phys, flags) builds one; `h + n` names the byte n
    further on (same flags)."""

    __slots__ = ("val",)

    def __init__(self, val):
        """Wraps the raw 64-bit pfn_phys_t value `val` (an int in 0 .. 2**64 - 1)."""
        self.val = _u64(val, "val")

    @classmethod
    def make(cls, phys, flags=0):
        """The handle of physical byte `phys` (below 2**56) with `flags` (DEV, MAP, ...)."""
        phys = _u64(phys, "phys")
        if phys >= _PHYS_LIMIT:
            raise OverflowError(f"phys must be below 2**56, got {phys:#x}")
        return cls(phys | (_flags(flags) & _PHYS_FLAGS_MASK))

    @property
    def addr(self):
        """The physical byte address."""
        return self.val & (_PHYS_LIMIT - 1)

    @property
    def flags(self):
        """The flag bits (bits 56..63)."""
        return self.val & _PHYS_FLAGS_MASK

    @property
    def is_null(self):
        """True for the null handle (0)."""
        return self.val == 0

    @property
    def pfn(self):
        """The Pfn of the frame holding the byte (same flags)."""
        return Pfn.from_phys(self.addr, self.flags)

    def _c(self):
        return _phys_t(self.val)

    def __add__(self, offset):
        offset = _int(offset, "offset")
        addr = self.addr + offset
        if not 0 <= addr < _PHYS_LIMIT:
            raise OverflowError(f"{self!r} + {offset} leaves the 2**56-byte space of byte handles")
        return Phys(self.flags | addr)

    def __eq__(self, other):
        return isinstance(other, Phys) and other.val == self.val

    def __hash__(self):
        return hash(("Phys", self.val))

    def __repr__(self):
        return f"Phys(addr={self.addr:#x}, flags={self.flags:#x})"


# ---- handles: every C object the package creates is listed until freed, so that whatever a
# program leaves open (or fails to close, e.g. in the wrong order) is released at exit.

_handles_lock = threading.Lock()
_open_handles = {}  # C pointer -> (exit order, C free function, weakref to the Python object)


class _Handle:
    """A C object ended by the C function named `_free`, on close() or when its `with` ends."""

    _free = ""
    _exit_order = 0  # lower closes first at interpreter exit
    _ptr = None

    def _adopt(self, ptr):
        self._ptr = ptr
        with _handles_lock:
            _open_handles[ptr] = (self._exit_order, self._free, weakref.ref(self))

    def _live(self):
        ptr = self._ptr
        if not ptr:
            raise ValueError(f"{type(self).__name__} is closed")
        return ptr

    @property
    def closed(self):
        """True once close() has succeeded."""
        return not self._ptr

    def close(self):
        """Ends the C object (a second close does nothing). On error (OSError) it stays open
        and usable, and close() may be called again."""
        with _handles_lock:
            ptr, self._ptr = self._ptr, None
        if not ptr:
            return
        rc = getattr(library(), self._free)(ptr)
        if rc < 0:
            with _handles_lock:
                self._ptr = ptr
            _raise(-rc, self._free, self._close_hint(-rc))
        with _handles_lock:
            _open_handles.pop(ptr, None)

    def _close_hint(self, err):
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self.closed else f"at {self._ptr:#x}"
        return f"<pfn.{type(self).__name__} {state}>"


@atexit.register
def _release_at_exit():
    """Closes what is still open: devices first (unregistering their ranges), then mappings."""
    with _handles_lock:
        left = sorted(_open_handles.items(), key=lambda item: item[1][0])
    for ptr, (_, free, ref) in left:
        obj = ref()
        try:
            if obj is not None:
                obj.close()
            elif getattr(_lib, free)(ptr) == 0:
                with _handles_lock:
                    _open_handles.pop(ptr, None)
        except OSError:
            pass  # e.g. this thread still holds a kmap: nothing more can be done at exit


class Device(_Handle):
    """An owner of ranges of the physical space (C's pfn_device).

    Closing it unregisters all its ranges, waiting until no thread holds a kmap of them."""

    _free = "pfn_device_free"
    _exit_order = 0

    def __init__(self, name=None):
        """Creates a device; `name` (a str or None) is for diagnostics."""
        encoded = _name(name, "name")
        self._adopt(_null_check(library().pfn_device_new(encoded), "pfn_device_new"))

    def register(self, start, size, base, name=None):
        """Registers physical bytes start .. start + size - 1 as mapped at address `base`.

        start, size and base must be page-aligned (else OSError EINVAL); a range overlapping
        any registered one is OSError EBUSY."""
        start = _u64(start, "start")
        size = _u64(size, "size")
        base = _u64(base, "base")
        if size == 0:
            raise ValueError("size must be positive")
        end = start + size - 1
        if end >= _U64_LIMIT:
            raise OverflowError(f"start + size - 1 = {end:#x} is beyond the 64-bit physical space")
        res = _resource(start, end, _name(name, "name"))
        _check(library().devm_register_kmap_pfn_range(self._live(), ctypes.byref(res), base),
               "register")

    def register_free(self, size, base, align=0):
        """Registers `size` bytes mapped at `base` in physical space no other range uses and
        returns the start the library picked (aligned to `align`, a power of two; 0 picks the
        largest power of two not above `size`, at most 1 GiB). For handles that are not
        stored: stored ones need the same start on every run (use register). OSError ENOSPC
        when no free range is that large."""
        size = _u64(size, "size")
        align = _u64(align, "align")
        base = _u64(base, "base")
        start = _u64_t(0)
        _check(library().pfn_register_free(self._live(), size, align, base,
                                           ctypes.byref(start)), "register_free")
        return start.value

    def register_pmem(self, mapping, phys):
        """Registers the whole PmemFile `mapping` at physical address `phys` (page-aligned);
        unregister it with unregister(phys), or close the device."""
        if not isinstance(mapping, PmemFile):
            raise TypeError(f"mapping must be a PmemFile, not {type(mapping).__name__}")
        _check(library().pfn_pmem_register(self._live(), mapping._live(), _u64(phys, "phys")),
               "register_pmem")

    def register_labeled(self, mapping):
        """Registers the whole PmemFile `mapping` where its pool label (its first LABEL_SIZE
        bytes) says, and returns that start; a new pool (blank label bytes) is labeled first
        with a random free start. Handles stored in the pool stay valid across runs. OSError
        EILSEQ when the bytes are neither blank nor a label (nothing is written)."""
        if not isinstance(mapping, PmemFile):
            raise TypeError(f"mapping must be a PmemFile, not {type(mapping).__name__}")
        phys = _u64_t(0)
        _check(library().pfn_pmem_register_labeled(self._live(), mapping._live(),
                                                   ctypes.byref(phys)), "register_labeled")
        return phys.value

    def register_memmap(self, start, size, base, in_range=False, name=None):
        """Registers a range as register() does, with a page descriptor (Page) for every
        translatable frame: in memory the library maps (default), or with in_range=True at
        the head of the range itself, whose first memmap_reserved_bytes(size) bytes then hold
        the descriptors (their flags and data persist with the range's bytes) and are not
        translatable. OSError EINVAL as register(), or for an in-range memmap of a one-frame
        range; EBUSY as register(), or when the memory already holds another in-range
        memmap."""
        start = _u64(start, "start")
        size = _u64(size, "size")
        base = _u64(base, "base")
        if size == 0:
            raise ValueError("size must be positive")
        end = start + size - 1
        if end >= _U64_LIMIT:
            raise OverflowError(f"start + size - 1 = {end:#x} is beyond the 64-bit physical space")
        res = _resource(start, end, _name(name, "name"))
        _check(library().pfn_register_range_memmap(
            self._live(), ctypes.byref(res), base,
            MEMMAP_IN_RANGE if in_range else MEMMAP_DRAM), "register_memmap")

    def unregister(self, start):
        """Unregisters the range this device registered at physical address `start`, waiting
        until no thread holds a kmap of it (OSError EDEADLK if this thread does; ENOENT if
        this device registered no range there). Afterwards its memory may be unmapped."""
        rc = library().pfn_unregister_range(self._live(), _u64(start, "start"))
        _check(rc, "unregister", self._close_hint(-rc))

    def close(self):
        """Unregisters every range of the device, waiting until no thread holds a kmap of
        them, and frees it. OSError EDEADLK (and the device stays open) when this thread holds
        a kmap or read section."""
        super().close()

    def _close_hint(self, err):
        if err == _errno.EDEADLK:
            return "this thread holds a kmap or read section: end it first"
        return None


class Dax(_Handle):
    """A DAX device over the range `device` registered at physical `start` (C's pfn_dax), or
    over a physically contiguous run of its ranges (`size`): exposed by page offset, read
    and written at byte offsets, across pages and ranges.

    read/readinto/write/zero work at any byte offset, crossing pages, and return short counts
    at the device's end like os.pread/os.pwrite; writes and zeroes are durable when they
    return. direct_access must run inside `with pfn.read_section():` (as the kernel's needs
    dax_read_lock). kill() makes every later access fail (OSError ENXIO) and waits for the
    read sections in flight; close() kills and frees it. Open it after its Device, so that a
    `with` destroys it first."""

    _free = "pfn_dax_destroy"
    _exit_order = -1

    def __init__(self, device, start, size=None):
        """Wraps the range `device` (a pfn.Device) registered at physical `start`, or with
        `size`, the physically contiguous run of its ranges that covers start .. start + size
        exactly (C's pfn_dax_create_span; the ranges may lie anywhere in virtual memory):
        FileNotFoundError (ENOENT) when it has no range at `start`; OSError EINVAL when
        `size` is 0 or not a multiple of PAGE_SIZE, or the ranges leave a gap, belong to
        another device or end elsewhere than start + size."""
        if not isinstance(device, Device):
            raise TypeError(f"device must be a pfn.Device, not {type(device).__name__}")
        start = _u64(start, "start")
        if size is None:
            made = library().pfn_dax_create(device._live(), start)
        else:
            made = library().pfn_dax_create_span(device._live(), start, _u64(size, "size"))
        self._adopt(_null_check(made, "Dax"))

    @property
    def pages(self):
        """The pages the device exposes (offsets 0 .. pages - 1)."""
        return _check(library().pfn_dax_pages(self._live()), "pages")

    @property
    def size(self):
        """The bytes the device exposes."""
        return self.pages * PAGE_SIZE

    @property
    def alive(self):
        """False once kill() has begun."""
        return bool(_check(library().pfn_dax_alive(self._live()), "alive"))

    def kill(self):
        """Makes every later access fail (ENXIO), then waits until no read section that could
        have seen the device alive is open on any thread. OSError EDEADLK inside a read
        section or kmap of this thread."""
        _check(library().pfn_dax_kill(self._live()), "kill", self._close_hint(_errno.EDEADLK))

    def direct_access(self, pgoff, nr_pages=1):
        """(pages, addr, Pfn): how many pages from page offset `pgoff` are contiguous and
        mapped (at most nr_pages), the first one's address (an int, valid until the
        enclosing read section ends) and its Pfn (DEV, and MAP when the range has page
        descriptors). Call inside `with pfn.read_section():`; outside one it is OSError EINVAL.
        OSError ERANGE past the device's end, ENXIO once killed or its range is gone."""
        pgoff = _u64(pgoff, "pgoff")
        nr_pages = _u64(nr_pages, "nr_pages")
        addr = ctypes.c_void_p()
        frame = _pfn_t()
        n = _check(library().pfn_dax_direct_access(self._live(), pgoff, nr_pages,
                                                   ctypes.byref(addr), ctypes.byref(frame)),
                   "direct_access")
        return n, addr.value or 0, Pfn(frame.val)

    def read(self, offset, length):
        """Up to `length` bytes at byte `offset`, as bytes (fewer at the device's end; b""
        at or after it)."""
        offset = _u64(offset, "offset")
        length = _u64(length, "length")
        # The C call copies at most what lies before the device's end: the buffer needs no
        # more (the full length still goes to C, which checks offset + length).
        room = min(length, max(self.size - offset, 0))
        buf = ctypes.create_string_buffer(max(room, 1))
        n = _check(library().pfn_dax_read(self._live(), offset, buf, length), "read")
        return buf.raw[:n]

    def readinto(self, offset, buffer):
        """Reads into `buffer` (a writable bytes-like object) from byte `offset`, as many
        bytes as fit; returns how many (fewer at the device's end)."""
        offset = _u64(offset, "offset")
        view = _bytes_view(buffer, "buffer")
        if view.readonly:
            view.release()
            raise TypeError("buffer must be writable")
        try:
            n = view.nbytes
            if n == 0:
                return _check(library().pfn_dax_read(self._live(), offset, None, 0), "readinto")
            target = (ctypes.c_char * n).from_buffer(view)
            try:
                return _check(library().pfn_dax_read(self._live(), offset,
                                                     ctypes.addressof(target), n), "readinto")
            finally:
                del target
        finally:
            view.release()

    def write(self, offset, data):
        """Writes `data` (any bytes-like object) at byte `offset`, durably; returns the bytes
        written (fewer at the device's end, 0 at or after it)."""
        offset = _u64(offset, "offset")
        view = _bytes_view(data, "data")
        try:
            n = view.nbytes
            if n == 0:
                return _check(library().pfn_dax_write(self._live(), offset, None, 0), "write")
            keep = view.tobytes() if view.readonly else (ctypes.c_char * n).from_buffer(view)
            src = ctypes.cast(ctypes.c_char_p(keep), ctypes.c_void_p) if view.readonly \
                else ctypes.addressof(keep)
            try:
                return _check(library().pfn_dax_write(self._live(), offset, src, n), "write")
            finally:
                del keep
        finally:
            view.release()

    def zero(self, offset, length):
        """Zeroes `length` bytes at byte `offset`, durably; returns the bytes zeroed."""
        offset = _u64(offset, "offset")
        length = _u64(length, "length")
        return _check(library().pfn_dax_zero(self._live(), offset, length), "zero")

    def _close_hint(self, err):
        if err == _errno.EDEADLK:
            return "this thread holds a kmap or read section: end it first"
        return None


class PmemFile(_Handle):
    """A file mapped shared and read-write (C's pfn_pmem)."""

    _free = "pfn_pmem_unmap"
    _exit_order = 1

    def __init__(self, path, size=0, create=False):
        """Maps `size` bytes of the file at `path` (size 0: the whole existing file).

        With create=True the file is created if missing and extended to `size` if shorter.
        size must be a multiple of PAGE_SIZE (else OSError EINVAL). A missing file without
        create is FileNotFoundError."""
        path = _fspath(path, "path")
        size = _u64(size, "size")
        lib = library()
        raw = os.fsencode(path)
        self._adopt(_null_check(lib.pfn_pmem_map(raw, size, 1 if create else 0),
                                "pfn_pmem_map", filename=path))
        self._addr = lib.pfn_pmem_addr(self._ptr)
        self._size = lib.pfn_pmem_size(self._ptr)

    @property
    def addr(self):
        """The address of the mapping's first byte (page-aligned), as an int."""
        self._live()
        return self._addr

    @property
    def size(self):
        """The mapping's length in bytes."""
        self._live()
        return self._size

    @property
    def backed_size(self):
        """Bytes the file still backs (less than size after someone truncated it)."""
        return library().pfn_pmem_backed_size(self._live())

    def persist(self, offset=0, length=None):
        """Makes bytes offset .. offset + length - 1 of the mapping durable (default: from
        offset to the end). Bytes outside the mapping are OSError EINVAL; bytes the file no
        longer backs (truncated) are OSError EFAULT."""
        ptr = self._live()
        offset = _u64(offset, "offset")
        length = max(self._size - offset, 0) if length is None else _u64(length, "length")
        if offset > self._size:
            _raise(_errno.EINVAL, "persist",
                   f"offset {offset:#x} is beyond the mapping's {self._size:#x} bytes",
                   c_call=False)
        _check(library().pfn_pmem_persist(ptr, self._addr + offset, length), "persist")

    def close(self):
        """Unmaps the file. OSError EBUSY (and it stays mapped) while a registered range lies
        in it: close the Device that registered it first."""
        super().close()

    def _close_hint(self, err):
        if err == _errno.EBUSY:
            return ("a registered range still lies in this mapping, so it stays mapped: close "
                    "the Device first; in one `with`, open the mapping first: "
                    "`with PmemFile(...) as m, Device(...) as dev:`")
        return None

    @property
    def label(self):
        """The physical start this pool's label records, or None for a new pool (blank label
        bytes). OSError EILSEQ when the first LABEL_SIZE bytes are neither blank nor a label.
        Assigning an int writes a label there (and makes it durable)."""
        phys = _u64_t(0)
        rc = library().pfn_pmem_label_get(self._live(), ctypes.byref(phys))
        if rc == -_errno.ENODATA:
            return None
        _check(rc, "label")
        return phys.value

    @label.setter
    def label(self, phys):
        _check(library().pfn_pmem_label_set(self._live(), _u64(phys, "phys")), "label")

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
            _raise(_errno.EINVAL, f"memcpy_persist: {n} bytes at {offset} outside {self.size}",
                   c_call=False)
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
        _raise(_errno.EINVAL, "persist", "address and length must not be negative", c_call=False)
    _check(library().pfn_persist(addr, length), "persist")


def flush_method():
    """The cache-line flush instruction in use: "clwb", "clflushopt" or "clflush"."""
    return library().pfn_flush_method().decode()


def movnt_method():
    """The vector unit of non-temporal copies: "avx512f", "avx2", "sse2" or "none"."""
    return library().pfn_movnt_method().decode()


@contextlib.contextmanager
def kmap(p, length=None):
    """Maps handle `p` for this thread and yields a writable memoryview of `length` bytes:
    from the frame's start for a Pfn (or an int pfn_t value), from the named byte for a Phys.
    `length` defaults to the rest of the page; it may reach to the end of the range (or of
    ranges registered back to back after it).

    The view is released and the kmap ended when the block exits. A handle in no registered
    range is OSError ENXIO; a length longer than what is contiguous is ValueError."""
    if isinstance(p, Phys):
        if p.is_null:
            _raise(_errno.EINVAL, "kmap", "the null byte handle names no byte", c_call=False)
        frame, skip = p.pfn, p.addr & (PAGE_SIZE - 1)
    else:
        frame, skip = Pfn(_pfn_val(p)), 0
    length = PAGE_SIZE - skip if length is None else _int(length, "length")
    if length < 1:
        raise ValueError(f"length must be positive, got {length}")
    lib = library()
    avail = _u64_t(0)
    addr = _null_check(lib.kmap_atomic_pfn_t_len(frame._c(), ctypes.byref(avail)), "kmap")
    try:
        if skip + length > avail.value:
            raise ValueError(f"kmap: {length} bytes asked, {avail.value - skip} contiguous to "
                             "the end of the range")
        view = memoryview((ctypes.c_char * length).from_address(addr + skip)).cast("B")
        try:
            yield view
        finally:
            view.release()
    finally:
        lib.kunmap_atomic_pfn_t(addr)


def _section_translate(lib, section, p):
    """The address `p` (a Pfn, Phys or int pfn_t value) names in the open `section`."""
    if isinstance(p, Phys):
        return _null_check(lib.pfn_section_translate_phys(ctypes.byref(section), p._c()),
                           "translate")
    return _null_check(lib.pfn_section_translate_len(ctypes.byref(section),
                                                     _pfn_t(_pfn_val(p)), None), "translate")


class Section:
    """An object-bound read section (C's pfn_section_open): while it is open, no range it can
    see finishes unregistering, so every address it translated stays valid. Unlike
    read_section() it belongs to this object, not to a thread: any thread may translate in it
    and close it. A thread that unregisters while a Section it opened is open waits for it
    (forever, if that thread is the one to close it): close it first.

        with pfn.Section() as s:
            addr = s.translate(h)

    After close(), translate raises ValueError; a second close() does nothing."""

    def __init__(self):
        """Opens the section (OSError ENOMEM when the library cannot record it)."""
        self._lock = threading.Lock()
        self._c = _section_t()
        self._open = False
        lib = library()
        _check(lib.pfn_section_open(ctypes.byref(self._c)), "Section")
        self._open = True

    def translate(self, p):
        """The address (an int) of handle `p`: a Pfn or int pfn_t value (the frame's first
        byte) or a Phys (the byte it names). OSError ENXIO when no range the section sees
        holds it; ValueError once the section is closed."""
        with self._lock:
            if not self._open:
                raise ValueError("the section is closed: its addresses are no longer valid")
            return _section_translate(library(), self._c, p)

    @property
    def closed(self):
        """True once close() has run."""
        return not self._open

    def close(self):
        """Closes the section (from any thread): addresses translated in it must no longer
        be used."""
        with self._lock:
            if not self._open:
                return
            self._open = False
            _check(library().pfn_section_close(ctypes.byref(self._c)), "Section.close")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_open", False) and _lib is not None:
            _lib.pfn_section_close(ctypes.byref(self._c))


@contextlib.contextmanager
def read_section():
    """A read section bound to this thread (C's pfn_read_lock): yields translate(p) -> address
    (an int) for a Pfn, Phys or int `p`; the addresses stay valid until the block exits, and
    translate raises ValueError after it. Like a kmap, an open section holds off unregistering
    on other threads, and unregistering from this thread is OSError EDEADLK."""
    lib = library()
    lock = threading.Lock()
    section = lib.pfn_read_lock()
    if not section.reader:
        _raise(ctypes.get_errno() or _errno.ENOMEM, "read_section")
    is_open = [True]

    def translate(p):
        """The address of handle `p` (OSError ENXIO when no range holds it; ValueError after
        the section's block has exited)."""
        with lock:
            if not is_open[0]:
                raise ValueError("the read section has ended: its addresses are no longer valid")
            return _section_translate(lib, section, p)
    try:
        yield translate
    finally:
        with lock:
            is_open[0] = False
            rc = lib.pfn_section_close(ctypes.byref(section))
        _check(rc, "read_section: closing")


def virt_to_pfn(addr):
    """The Pfn of the frame holding virtual address `addr` (an int) in a registered range, with
    the flags the range was registered with (DEV, plus MAP with page descriptors). OSError
    ENXIO when no registered range holds it."""
    out = _pfn_t(0)
    _check(library().pfn_virt_to_pfn_t(_u64(addr, "addr"), ctypes.byref(out)), "virt_to_pfn")
    return Pfn(out.val)


def virt_to_phys(addr):
    """The byte handle (Phys) of virtual address `addr` in a registered range. OSError ENXIO
    when no registered range holds it, ERANGE when its physical address is at or above 2**56
    or is the null handle."""
    out = _phys_t(0)
    _check(library().pfn_virt_to_phys(_u64(addr, "addr"), ctypes.byref(out)), "virt_to_phys")
    return Phys(out.val)


def thread_init():
    """Sets the calling thread up ahead of time (C's pfn_thread_init): afterwards its kmaps
    and sections allocate nothing. Calling it again does nothing."""
    _check(library().pfn_thread_init(), "thread_init")


# ---- scatterlists

def _u32(value, name):
    v = _int(value, name)
    if v < 0:
        raise ValueError(f"{name} must not be negative, got {v}")
    if v >= _U32_LIMIT:
        raise OverflowError(f"{name} must be below 2**32, got {v:#x}")
    return v


def _bytes_view(data, name):
    """A flat, C-contiguous byte view of any bytes-like object."""
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"{name} must be a bytes-like object, not {type(data).__name__}") from None
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    return view.cast("B")


class ScatterList:
    """A scatterlist: a list of (handle, offset, length) extents of the physical space, possibly
    on many ranges, through which bytes are copied in and out at memory speed (C's pfn_sg
    entries, in a table from pfn_sg_alloc_table*).

    Each extent is `length` bytes starting `offset` bytes after the first byte of the frame
    its handle names (the offset may pass the frame). The frames need not be registered when
    the list is made: every copy checks them (OSError ENXIO when one lies in no registered
    range). Copies run in one read section each; bytes are moved piece by piece, one
    translation for every run of bytes contiguous in memory (across frames, and across ranges
    registered back to back physically and in memory).

        with pfn.ScatterList([(h1, 0, 4096), (h2, 100, 50)]) as sgl:
            sgl.copy_in(b"x" * 4146)
            data = sgl.copy_out()
            for chunk in sgl.chunks():          # read-only memoryviews, one mapped chunk each
                ...

    Close it (or leave the `with`) to free the table; a closed list raises ValueError. Calls
    on one list from several threads run one at a time; closing it while a chunks() iteration
    is under way raises ValueError (its chunks would point into freed memory)."""

    def __init__(self, entries):
        """A list of `entries`: an iterable of (p, offset, length), with p a Pfn or an int
        (a pfn_t value, flags included), offset and length ints below 2**32. At least one.
        OSError EINVAL for a handle with SG_CHAIN, EOVERFLOW for bytes past the end of the
        64-bit physical space."""
        items = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, tuple) or len(entry) != 3:
                raise TypeError(f"entries[{i}] must be a (p, offset, length) tuple, "
                                f"not {type(entry).__name__}")
            p, offset, length = entry
            items.append((_pfn_val(p, f"entries[{i}] p"), _u32(offset, f"entries[{i}] offset"),
                          _u32(length, f"entries[{i}] length")))
        if not items:
            raise ValueError("a scatterlist needs at least one entry")
        if len(items) >= _U32_LIMIT:
            raise OverflowError("too many entries")
        lib = library()
        table = _sg_table()
        _check(lib.pfn_sg_alloc_table(ctypes.byref(table), len(items)), "pfn_sg_alloc_table")
        self._adopt(table)
        sg = table.sgl
        try:
            for i, (val, offset, length) in enumerate(items):
                _check(lib.pfn_sg_set_pfn(sg, _pfn_t(val), length, offset),
                       f"pfn_sg_set_pfn (entries[{i}])")
                if i + 1 < len(items):
                    sg = lib.pfn_sg_next(sg)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_buffer(cls, addr, length):
        """The list of the `length` bytes at address `addr` (an int), every page of which must
        lie in a registered range (OSError ENXIO otherwise): one entry for each run of pages
        that follow each other physically."""
        addr = _u64(addr, "addr")
        length = _u64(length, "length")
        self = cls.__new__(cls)
        table = _sg_table()
        _check(library().pfn_sg_alloc_table_from_buf(ctypes.byref(table), addr, length),
               "pfn_sg_alloc_table_from_buf")
        self._adopt(table)
        return self

    def _adopt(self, table):
        self._lock = threading.Lock()
        self._iterating = 0
        self._table = table
        self._finalizer = weakref.finalize(self, library().pfn_sg_free_table,
                                           ctypes.byref(table))

    def _live(self):
        table = getattr(self, "_table", None)
        if table is None or not table.sgl:
            raise ValueError("ScatterList is closed")
        return table

    def _run(self, call):
        """call(table), with the list open and no close() running meanwhile."""
        with self._lock:
            return call(self._live())

    @property
    def closed(self):
        """True once close() has run."""
        table = getattr(self, "_table", None)
        return table is None or not table.sgl

    def close(self):
        """Frees the list (a second close does nothing). ValueError while a chunks()
        iteration is under way (finish or close it first)."""
        if getattr(self, "_finalizer", None) is None:
            return
        with self._lock:
            if self._iterating:
                raise ValueError("a chunks() iteration of this ScatterList is under way: "
                                 "finish it (or close the iterator) first")
            self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self):
        """The number of entries."""
        return self._run(lambda table: table.nents)

    @property
    def entries(self):
        """The entries, as a list of (Pfn, offset, length) (the list's own flag, SG_LAST,
        left out)."""
        def walk(table):
            lib = library()
            out, sg = [], table.sgl
            for i in range(table.nents):
                out.append((Pfn(lib.pfn_sg_pfn(sg).val), sg.contents.offset, sg.contents.length))
                if i + 1 < table.nents:
                    sg = lib.pfn_sg_next(sg)
            return out
        return self._run(walk)

    @property
    def nbytes(self):
        """The bytes the list describes (the sum of its lengths)."""
        return sum(length for _, _, length in self.entries)

    def copy_in(self, data, skip=0, persist=False):
        """Copies `data` (any bytes-like object) into the list's bytes from `skip` bytes into
        them on; with persist=True the bytes are durable when it returns, each by its
        mapping's method. Returns the bytes copied (fewer than len(data) when the list ends
        first). Nothing is written when it fails (OSError: ENXIO for a frame in no registered
        range)."""
        self._live()
        skip = _u64(skip, "skip")
        flags = _SG_PERSIST if persist else 0
        view = _bytes_view(data, "data")
        n = view.nbytes
        if n == 0:
            view.release()
            return 0
        if view.readonly:
            keep = view.tobytes()
            src = ctypes.cast(ctypes.c_char_p(keep), ctypes.c_void_p)
        else:
            keep = (ctypes.c_char * n).from_buffer(view)
            src = ctypes.addressof(keep)
        try:
            rc = self._run(lambda t: library().pfn_sg_pcopy_from_buffer(t.sgl, t.nents, src, n,
                                                                        skip, flags))
        finally:
            del keep
            view.release()
        return _check(rc, "copy_in")

    def copy_out(self, length=None, skip=0):
        """The list's bytes from `skip` bytes into them on, at most `length` of them (default:
        all), as bytes."""
        skip = _u64(skip, "skip")
        if length is None:
            length = max(self.nbytes - skip, 0)
        length = _u64(length, "length")
        buf = ctypes.create_string_buffer(length)
        n = _check(self._run(lambda t: library().pfn_sg_pcopy_to_buffer(t.sgl, t.nents, buf,
                                                                        length, skip)),
                   "copy_out")
        return buf.raw[:n]

    def readinto(self, buffer, skip=0):
        """Copies the list's bytes from `skip` on into `buffer` (a writable bytes-like
        object), as many as fit; returns how many."""
        self._live()
        skip = _u64(skip, "skip")
        view = _bytes_view(buffer, "buffer")
        if view.readonly:
            view.release()
            raise TypeError("buffer must be writable")
        n = view.nbytes
        if n == 0:
            view.release()
            return 0
        target = (ctypes.c_char * n).from_buffer(view)
        dst = ctypes.addressof(target)
        try:
            rc = self._run(lambda t: library().pfn_sg_pcopy_to_buffer(t.sgl, t.nents, dst, n,
                                                                      skip))
        finally:
            del target
            view.release()
        return _check(rc, "readinto")

    def zero(self, length=None, skip=0, persist=False):
        """Zeroes `length` bytes of the list (default: all) from `skip` on, durably with
        persist=True. Returns the bytes zeroed; nothing is written when it fails."""
        skip = _u64(skip, "skip")
        if length is None:
            length = max(self.nbytes - skip, 0)
        length = _u64(length, "length")
        flags = _SG_PERSIST if persist else 0
        return _check(self._run(lambda t: library().pfn_sg_zero_buffer(t.sgl, t.nents, length,
                                                                       skip, flags)), "zero")

    def chunks(self, write=False, persist=False):
        """Iterates over the list's bytes one mapped chunk at a time (C's pfn_sg_miter): each
        a memoryview of the longest piece of an entry that is contiguous in memory, read-only
        unless write=True; with write=True and persist=True each chunk is made durable when
        the iteration leaves it. A chunk is one kmap of this thread: consume the iterator on
        this thread; the view is released when the next chunk comes (do not keep it), and
        the last kmap when the iteration ends (also by break or an exception). A frame in no
        registered range raises OSError ENXIO when its chunk is reached."""
        self._live()
        if persist and not write:
            raise ValueError("persist=True needs write=True")
        flags = (_SG_MITER_TO_SG if write else _SG_MITER_FROM_SG) | (_SG_PERSIST if persist else 0)
        return self._chunks(write, flags)

    def _chunks(self, write, flags):
        lib = library()
        miter = _sg_miter()
        with self._lock:
            table = self._live()
            _check(lib.pfn_sg_miter_start(ctypes.byref(miter), table.sgl, table.nents, flags),
                   "pfn_sg_miter_start")
            self._iterating += 1
        try:
            while True:
                rc = lib.pfn_sg_miter_next(ctypes.byref(miter))
                if rc == 0:
                    return
                _check(rc, "pfn_sg_miter_next")
                view = memoryview((ctypes.c_char * miter.length).from_address(miter.addr)).cast("B")
                if not write:
                    view = view.toreadonly()
                try:
                    yield view
                finally:
                    view.release()
        finally:
            rc = lib.pfn_sg_miter_stop(ctypes.byref(miter))
            with self._lock:
                self._iterating -= 1
            _check(rc, "pfn_sg_miter_stop")

    def __repr__(self):
        if self.closed:
            return "<pfn.ScatterList closed>"
        return f"<pfn.ScatterList of {len(self)} entries>"


# ---- page descriptors and pins

def memmap_reserved_bytes(size, in_range=True):
    """Bytes at the head of a range of `size` bytes that an in-range memmap takes (0 for a
    memmap in library memory): the first translatable byte is start plus this. OSError EINVAL
    when size is 0, not a page multiple, or one page (in range)."""
    rc = library().pfn_memmap_reserved_bytes(_u64(size, "size"),
                                             MEMMAP_IN_RANGE if in_range else MEMMAP_DRAM)
    return _check(rc, "memmap_reserved_bytes")


def memmap_usage():
    """(frames, dram_bytes, in_range_bytes) of the memmaps of registered ranges: frames with a
    descriptor, bytes the library mapped for them, bytes they take at the head of ranges."""
    out = [_u64_t(0), _u64_t(0), _u64_t(0)]
    _check(library().pfn_memmap_usage(*(ctypes.byref(v) for v in out)), "memmap_usage")
    return tuple(v.value for v in out)


class Page:
    """A page descriptor (C's struct pfn_page), by address. `desc` is a ctypes view of the
    16 bytes (refcount, flags, data); flags and data are also properties, and yours (flags
    bits PAGE_FLAGS_USER). Like the address it yields, a Page is valid only while something
    holds its range: a kmap, a section or a Pin."""

    __slots__ = ("addr",)

    def __init__(self, addr):
        """Wraps the descriptor at address `addr` (an int), as pfn_to_page returns it."""
        self.addr = _u64(addr, "addr")

    @property
    def desc(self):
        """The descriptor as a ctypes structure over its own memory."""
        return _page_t.from_address(self.addr)

    @property
    def flags(self):
        """The descriptor's flags word (bits PAGE_FLAGS_USER are yours); assignable."""
        return self.desc.flags

    @flags.setter
    def flags(self, value):
        self.desc.flags = _int(value, "flags")

    @property
    def data(self):
        """The descriptor's data word (yours); assignable."""
        return self.desc.data

    @data.setter
    def data(self, value):
        self.desc.data = _u64(value, "data")

    @property
    def pfn(self):
        """The frame it describes, with DEV | MAP (C's pfn_page_to_pfn_t). OSError EINVAL when
        the address is no descriptor of a registered range."""
        lib = library()
        ctypes.set_errno(0)
        val = lib.pfn_page_to_pfn_t(self.addr).val
        if val == 0:
            _raise(ctypes.get_errno() or _errno.EINVAL, "Page.pfn")
        return Pfn(val)

    @property
    def address(self):
        """The address (an int) of the frame it describes (C's pfn_page_address)."""
        return _null_check(library().pfn_page_address(self.addr), "Page.address")

    @property
    def ref_count(self):
        """The reference count (C's pfn_page_ref_count)."""
        return _check(library().pfn_page_ref_count(self.addr), "Page.ref_count")

    def get(self):
        """Takes a reference (C's pfn_get_page); returns the new count. While a descriptor of
        a range is referenced, unregistering the range is OSError EBUSY."""
        return _check(library().pfn_get_page(self.addr), "Page.get")

    def put(self):
        """Drops a reference (C's pfn_put_page); returns the count left. OSError EINVAL when
        it is already zero."""
        return _check(library().pfn_put_page(self.addr), "Page.put")

    def __eq__(self, other):
        return isinstance(other, Page) and other.addr == self.addr

    def __hash__(self):
        return hash(self.addr)

    def __repr__(self):
        return f"Page({self.addr:#x})"


def pfn_to_page(p):
    """The Page of frame `p` (a Pfn or int pfn_t value; C's pfn_t_to_page). OSError EINVAL when
    `p` has DEV without MAP; ENXIO when no range holds it or its range has no memmap."""
    return Page(_null_check(library().pfn_t_to_page(_pfn_t(_pfn_val(p))), "pfn_to_page"))


def pfn_to_virt(p):
    """The address (an int) of frame `p` without a kmap (C's pfn_t_to_virt): valid while
    something holds its range. OSError EINVAL for DEV without MAP, ENXIO."""
    return _null_check(library().pfn_t_to_virt(_pfn_t(_pfn_val(p))), "pfn_to_virt")


class Pin:
    """A long-lived pin of the range holding a frame (C's pfn_pin_frame / pfn_unpin): until it
    is released, unregistering the range waits (on other threads; from the thread that pinned
    it, unregister is OSError EDEADLK). `addr` is the frame's address and `page` its Page (None
    without a memmap), valid while the pin is held. Release it from any thread, once: with
    release(), or by leaving the with block.

        with pfn.pin(h) as p:
            ... p.addr ...

    OSError ENXIO when no live range holds the frame (or it is being unregistered)."""

    def __init__(self, p):
        """Pins the range holding frame `p` (a Pfn or int pfn_t value)."""
        lib = library()
        addr = ctypes.c_void_p()
        page = ctypes.c_void_p()
        self._lock = threading.Lock()
        self._pin = _null_check(lib.pfn_pin_frame(_pfn_t(_pfn_val(p)), ctypes.byref(addr),
                                                  ctypes.byref(page)), "pin")
        self.addr = addr.value
        self.page = Page(page.value) if page.value else None

    @property
    def released(self):
        """True once release() has run."""
        return self._pin is None

    def release(self):
        """Releases the pin (any thread); a second call does nothing."""
        with self._lock:
            pin, self._pin = self._pin, None
        if pin is not None:
            _check(library().pfn_unpin(pin), "Pin.release")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def __del__(self):
        if getattr(self, "_pin", None) is not None and _lib is not None:
            _lib.pfn_unpin(self._pin)

    def __repr__(self):
        state = "released" if self._pin is None else f"addr={self.addr:#x}"
        return f"Pin({state})"


def pin(p):
    """Pins the range holding frame `p` (a Pfn or int pfn_t value): a Pin, also a context
    manager."""
    return Pin(p)


def pin_waiters():
    """How many unregisters are waiting right now for pins to be released."""
    return library().pfn_pin_waiters()
