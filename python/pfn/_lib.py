"""Finding and loading libpfn, and the C types and signatures of every function (ctypes).

_SIGNATURES is the one place where C signatures are declared: a function is callable from
the package once it is listed there.
"""

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

from ._version import __version__

c_u64 = ctypes.c_uint64
MAJOR = __version__.split(".")[0]
SONAME = f"libpfn.so.{MAJOR}"


class pfn_t(ctypes.Structure):
    """struct pfn_t: a page-frame number (bits 0..51) and flags (bits 52..63)."""

    _fields_ = [("val", c_u64)]


class pfn_resource(ctypes.Structure):
    """struct pfn_resource: physical bytes start ..= end, and an optional name."""

    _fields_ = [("start", c_u64), ("end", c_u64), ("name", ctypes.c_char_p)]


class pfn_phys_t(ctypes.Structure):
    """struct pfn_phys_t: a byte handle (physical byte address in bits 0..55, flags above)."""

    _fields_ = [("val", c_u64)]


class pfn_section(ctypes.Structure):
    """struct pfn_section: what pfn_read_lock returns and pfn_section_open fills in. Its
    layout must match the header's exactly: pfn_read_lock returns it by value."""

    _fields_ = [
        ("root", ctypes.c_size_t),
        ("cache_pfn", c_u64),
        ("cache_pages", c_u64),
        ("cache_addr", ctypes.c_size_t),
        ("reader", ctypes.c_void_p),
        ("token", c_u64),
        ("prev", ctypes.c_void_p),
    ]


class pfn_page(ctypes.Structure):
    """struct pfn_page: a page descriptor (16 bytes): an atomic reference count (change it
    only through pfn_get_page / pfn_put_page), flags (bits 0..23 the caller's) and a data word
    (the caller's)."""

    _fields_ = [("refcount", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("data", c_u64)]


class pfn_sg(ctypes.Structure):
    """struct pfn_sg: one scatterlist entry (a pfn_t, an offset into its frame, a length)."""

    _fields_ = [("pfn", pfn_t), ("offset", ctypes.c_uint32), ("length", ctypes.c_uint32)]


class pfn_sg_table(ctypes.Structure):
    """struct pfn_sg_table: a scatterlist allocated by pfn_sg_alloc_table*."""

    _fields_ = [("sgl", ctypes.POINTER(pfn_sg)), ("nents", ctypes.c_uint),
                ("orig_nents", ctypes.c_uint)]


class pfn_sg_miter(ctypes.Structure):
    """struct pfn_sg_miter: the mapping iterator (addr, length, consumed; the rest private)."""

    _fields_ = [
        ("addr", ctypes.c_void_p),
        ("length", ctypes.c_size_t),
        ("consumed", ctypes.c_size_t),
        ("priv_start", ctypes.c_void_p),
        ("priv_cur", ctypes.c_void_p),
        ("priv_pos", c_u64),
        ("priv_left", c_u64),
        ("priv_saved", ctypes.c_void_p),
        ("priv_power", c_u64),
        ("priv_lam", c_u64),
        ("priv_flags", ctypes.c_uint32),
        ("priv_state", ctypes.c_uint32),
        ("priv_error", ctypes.c_int32),
        ("priv_reserved", ctypes.c_uint32),
    ]


class iovec(ctypes.Structure):
    """struct iovec of <sys/uio.h>."""

    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


_SG = ctypes.POINTER(pfn_sg)


# name: (restype, argtypes). Every exported function, so that no call relies on ctypes'
# default int return (which would truncate 64-bit pointers and values).
_SIGNATURES = {
    "pfn_version": (ctypes.c_char_p, []),
    "__pfn_to_pfn_t": (pfn_t, [c_u64, c_u64]),
    "pfn_to_pfn_t": (pfn_t, [c_u64]),
    "phys_to_pfn_t": (pfn_t, [c_u64, c_u64]),
    "pfn_t_to_pfn": (c_u64, [pfn_t]),
    "pfn_t_to_phys": (c_u64, [pfn_t]),
    "pfn_t_has_page": (ctypes.c_bool, [pfn_t]),
    "pfn_t_devmap": (ctypes.c_bool, [pfn_t]),
    "pfn_t_special": (ctypes.c_bool, [pfn_t]),
    "__pfn_t_has_page": (ctypes.c_bool, [pfn_t]),
    "__pfn_t_to_pfn": (c_u64, [pfn_t]),
    "__pfn_t_to_phys": (c_u64, [pfn_t]),
    "pfn_device_new": (ctypes.c_void_p, [ctypes.c_char_p]),
    "pfn_device_free": (ctypes.c_int, [ctypes.c_void_p]),
    "devm_register_kmap_pfn_range": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.POINTER(pfn_resource), ctypes.c_void_p],
    ),
    "pfn_unregister_range": (ctypes.c_int, [ctypes.c_void_p, c_u64]),
    "kmap_atomic_pfn_t": (ctypes.c_void_p, [pfn_t]),
    "kmap_atomic_pfn_t_len": (ctypes.c_void_p, [pfn_t, ctypes.POINTER(c_u64)]),
    "kunmap_atomic_pfn_t": (ctypes.c_int, [ctypes.c_void_p]),
    "kmap_atomic_pfn_phys": (ctypes.c_void_p, [pfn_phys_t]),
    "pfn_thread_init": (ctypes.c_int, []),
    "pfn_register_free": (
        ctypes.c_int,
        [ctypes.c_void_p, c_u64, c_u64, ctypes.c_void_p, ctypes.POINTER(c_u64)],
    ),
    "pfn_pmem_register": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, c_u64]),
    "pfn_virt_to_pfn_t": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(pfn_t)]),
    "pfn_register_range_memmap": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.POINTER(pfn_resource), ctypes.c_void_p, ctypes.c_uint32],
    ),
    "pfn_memmap_reserved_bytes": (ctypes.c_int64, [c_u64, ctypes.c_uint32]),
    "pfn_t_to_page": (ctypes.c_void_p, [pfn_t]),
    "pfn_page_to_pfn_t": (pfn_t, [ctypes.c_void_p]),
    "pfn_page_address": (ctypes.c_void_p, [ctypes.c_void_p]),
    "pfn_t_to_virt": (ctypes.c_void_p, [pfn_t]),
    "pfn_get_page": (ctypes.c_int, [ctypes.c_void_p]),
    "pfn_put_page": (ctypes.c_int, [ctypes.c_void_p]),
    "pfn_page_ref_count": (ctypes.c_int, [ctypes.c_void_p]),
    "pfn_memmap_usage": (
        ctypes.c_int,
        [ctypes.POINTER(c_u64), ctypes.POINTER(c_u64), ctypes.POINTER(c_u64)],
    ),
    "pfn_pin": (ctypes.c_void_p, [pfn_t]),
    "pfn_pin_frame": (
        ctypes.c_void_p,
        [pfn_t, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p)],
    ),
    "pfn_unpin": (ctypes.c_int, [ctypes.c_void_p]),
    "pfn_pin_waiters": (ctypes.c_uint, []),
    "pfn_virt_to_phys": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(pfn_phys_t)]),
    "pfn_section_open": (ctypes.c_int, [ctypes.POINTER(pfn_section)]),
    "pfn_section_close": (ctypes.c_int, [ctypes.POINTER(pfn_section)]),
    "pfn_section_translate_len": (
        ctypes.c_void_p,
        [ctypes.POINTER(pfn_section), pfn_t, ctypes.POINTER(c_u64)],
    ),
    "pfn_section_translate_phys": (ctypes.c_void_p, [ctypes.POINTER(pfn_section), pfn_phys_t]),
    "pfn_errormsg": (ctypes.c_char_p, []),
    "pfn_pmem_label_get": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(c_u64)]),
    "pfn_pmem_label_set": (ctypes.c_int, [ctypes.c_void_p, c_u64]),
    "pfn_pmem_register_labeled": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(c_u64)],
    ),
    "pfn_read_lock": (pfn_section, []),
    "pfn_read_unlock": (None, []),
    "pfn_section_translate": (ctypes.c_void_p, [ctypes.POINTER(pfn_section), pfn_t]),
    "pfn_pmem_map": (ctypes.c_void_p, [ctypes.c_char_p, c_u64, ctypes.c_uint32]),
    "pfn_pmem_addr": (ctypes.c_void_p, [ctypes.c_void_p]),
    "pfn_pmem_size": (c_u64, [ctypes.c_void_p]),
    "pfn_pmem_backed_size": (c_u64, [ctypes.c_void_p]),
    "pfn_pmem_persist": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]),
    "pfn_pmem_unmap": (ctypes.c_int, [ctypes.c_void_p]),
    "pfn_table_bytes": (c_u64, []),
    "pfn_pmem_map_range": (ctypes.c_void_p, [ctypes.c_char_p, c_u64, c_u64, ctypes.c_uint32]),
    "pfn_pmem_granularity": (ctypes.c_int, [ctypes.c_void_p]),
    "pfn_flush": (None, [ctypes.c_void_p, ctypes.c_size_t]),
    "pfn_drain": (None, []),
    "pfn_persist": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t]),
    "pfn_memcpy_persist": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]),
    "pfn_memmove_persist": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]),
    "pfn_memset_persist": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]),
    "pfn_memcpy": (ctypes.c_void_p,
                   [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint32]),
    "pfn_memmove": (ctypes.c_void_p,
                    [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint32]),
    "pfn_memset": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint32]),
    "pfn_flush_method": (ctypes.c_char_p, []),
    "pfn_movnt_method": (ctypes.c_char_p, []),
    "pfn_movnt_threshold": (ctypes.c_size_t, []),
    # scatterlists
    "pfn_sg_alloc_table": (ctypes.c_int, [ctypes.POINTER(pfn_sg_table), ctypes.c_uint]),
    "pfn_sg_free_table": (None, [ctypes.POINTER(pfn_sg_table)]),
    "pfn_sg_alloc_table_from_pfns": (
        ctypes.c_int,
        [ctypes.POINTER(pfn_sg_table), ctypes.POINTER(pfn_t), ctypes.c_uint, ctypes.c_uint, c_u64],
    ),
    "pfn_sg_alloc_table_from_buf": (
        ctypes.c_int, [ctypes.POINTER(pfn_sg_table), ctypes.c_void_p, ctypes.c_size_t]),
    "pfn_sg_is_chain": (ctypes.c_bool, [_SG]),
    "pfn_sg_is_last": (ctypes.c_bool, [_SG]),
    "pfn_sg_chain_ptr": (_SG, [_SG]),
    "pfn_sg_pfn": (pfn_t, [_SG]),
    "pfn_sg_phys": (c_u64, [_SG]),
    "pfn_sg_set_pfn": (ctypes.c_int, [_SG, pfn_t, ctypes.c_uint32, ctypes.c_uint32]),
    "pfn_sg_mark_end": (None, [_SG]),
    "pfn_sg_unmark_end": (None, [_SG]),
    "pfn_sg_init_table": (None, [_SG, ctypes.c_uint]),
    "pfn_sg_chain": (ctypes.c_int, [_SG, ctypes.c_uint, _SG]),
    "pfn_sg_next": (_SG, [_SG]),
    "pfn_sg_nents": (ctypes.c_int, [_SG]),
    "pfn_sg_nents_for_len": (ctypes.c_int, [_SG, c_u64]),
    "pfn_sg_last": (_SG, [_SG, ctypes.c_uint]),
    "pfn_sg_copy_from_buffer": (
        ctypes.c_ssize_t, [_SG, ctypes.c_uint, ctypes.c_void_p, ctypes.c_size_t]),
    "pfn_sg_copy_to_buffer": (
        ctypes.c_ssize_t, [_SG, ctypes.c_uint, ctypes.c_void_p, ctypes.c_size_t]),
    "pfn_sg_pcopy_from_buffer": (
        ctypes.c_ssize_t,
        [_SG, ctypes.c_uint, ctypes.c_void_p, ctypes.c_size_t, c_u64, ctypes.c_uint32]),
    "pfn_sg_pcopy_to_buffer": (
        ctypes.c_ssize_t, [_SG, ctypes.c_uint, ctypes.c_void_p, ctypes.c_size_t, c_u64]),
    "pfn_sg_zero_buffer": (
        ctypes.c_ssize_t, [_SG, ctypes.c_uint, ctypes.c_size_t, c_u64, ctypes.c_uint32]),
    "pfn_sg_miter_start": (
        ctypes.c_int, [ctypes.POINTER(pfn_sg_miter), _SG, ctypes.c_uint, ctypes.c_uint32]),
    "pfn_sg_miter_next": (ctypes.c_int, [ctypes.POINTER(pfn_sg_miter)]),
    "pfn_sg_miter_skip": (ctypes.c_int, [ctypes.POINTER(pfn_sg_miter), c_u64]),
    "pfn_sg_miter_stop": (ctypes.c_int, [ctypes.POINTER(pfn_sg_miter)]),
    "pfn_dax_create": (ctypes.c_void_p, [ctypes.c_void_p, c_u64]),
    "pfn_dax_create_span": (ctypes.c_void_p, [ctypes.c_void_p, c_u64, c_u64]),
    "pfn_dax_destroy": (ctypes.c_int, [ctypes.c_void_p]),
    "pfn_dax_kill": (ctypes.c_int, [ctypes.c_void_p]),
    "pfn_dax_alive": (ctypes.c_int, [ctypes.c_void_p]),
    "pfn_dax_pages": (ctypes.c_int64, [ctypes.c_void_p]),
    "pfn_dax_direct_access": (
        ctypes.c_int64,
        [ctypes.c_void_p, c_u64, c_u64, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(pfn_t)]),
    "pfn_dax_read": (ctypes.c_int64, [ctypes.c_void_p, c_u64, ctypes.c_void_p, ctypes.c_size_t]),
    "pfn_dax_write": (ctypes.c_int64, [ctypes.c_void_p, c_u64, ctypes.c_void_p, ctypes.c_size_t]),
    "pfn_dax_zero": (ctypes.c_int64, [ctypes.c_void_p, c_u64, c_u64]),
    "pfn_sg_to_iovec": (
        ctypes.c_int,
        [ctypes.POINTER(pfn_section), _SG, ctypes.c_uint, c_u64, c_u64, ctypes.POINTER(iovec),
         ctypes.c_int, ctypes.POINTER(c_u64)]),
}


def build_tree_library():
    """target/release/libpfn.so of the libpfn source tree this package sits in (python/pfn/
    -> target/release/), or None when it is not in one (an installed package)."""
    top = Path(__file__).resolve().parents[2]
    if not (top / "Cargo.toml").is_file():
        return None
    return top / "target" / "release" / "libpfn.so"


def pkg_config_libdir():
    """The libdir of an installed libpfn as pkg-config reports it, and a note on why not."""
    tool = os.environ.get("PKG_CONFIG", "pkg-config")
    if not shutil.which(tool):
        return None, f"{tool} is not installed"
    try:
        r = subprocess.run([tool, "--variable=libdir", "pfn"], capture_output=True, text=True,
                           timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"{tool} failed: {e}"
    if r.returncode != 0 or not r.stdout.strip():
        return None, "no pfn.pc (libpfn is not installed, or not where pkg-config looks)"
    return r.stdout.strip(), None


def candidates():
    """Where the library is looked for, in order: [(how it was found, path or soname)], and
    notes on the places that gave no candidate. $PFN_LIBRARY, when set, is the only one."""
    env = os.environ.get("PFN_LIBRARY")
    if env:
        return [("$PFN_LIBRARY (when set, the only place tried)", env)], []
    found, notes = [], ["$PFN_LIBRARY: not set"]
    tree = build_tree_library()
    if tree is None:
        notes.append("the build tree: this package is installed, not in a libpfn source tree")
    elif tree.exists():
        found.append(("the build tree", str(tree)))
    else:
        notes.append(f"the build tree: {tree}: no such file")
    libdir, why = pkg_config_libdir()
    if libdir:
        found.append(("pkg-config's libdir", os.path.join(libdir, SONAME)))
    else:
        notes.append(f"pkg-config: {why}")
    found.append(("the system loader", SONAME))
    return found, notes


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def loaded_file(lib, fallback):
    """The file the loader actually opened for `lib` (dladdr), or `fallback`."""
    try:
        dladdr = ctypes.CDLL(None).dladdr
    except (OSError, AttributeError):
        return fallback
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    dladdr.restype = ctypes.c_int
    info = _DlInfo()
    addr = ctypes.cast(lib.pfn_version, ctypes.c_void_p).value
    if dladdr(addr, ctypes.byref(info)) and info.dli_fname:
        return os.path.realpath(os.fsdecode(info.dli_fname))
    return fallback


def _declare(lib, path):
    for name, (restype, argtypes) in _SIGNATURES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise OSError(f"{path} is not a libpfn this package can use: it has no {name} "
                          f"(this package is libpfn {__version__}; rebuild with `make lib`)"
                          ) from None
        fn.restype = restype
        fn.argtypes = argtypes


def load(path=None):
    """Opens libpfn and declares its functions: `path` when given, else $PFN_LIBRARY, else the
    build tree, else pkg-config's libdir, else the system loader. Returns (CDLL, file)."""
    if path is not None:
        tries, notes = [("pfn.library(path)", os.fspath(path))], []
    else:
        tries, notes = candidates()
    tried = list(notes)
    for how, candidate in tries:
        try:
            lib = ctypes.CDLL(candidate, use_errno=True)
        except OSError as e:
            tried.append(f"{how}: {e}")
            continue
        _declare(lib, candidate)
        return lib, loaded_file(lib, candidate)
    raise OSError(
        "libpfn not found. Tried:\n  " + "\n  ".join(tried) + "\n"
        "Build it with `make lib` in the libpfn source tree, then point PFN_LIBRARY at "
        "target/release/libpfn.so (or install it with `make install`).")
