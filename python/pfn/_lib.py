"""Loading libpfn and declaring every C function's types (ctypes)."""

import ctypes
import ctypes.util
import os
from pathlib import Path

c_u64 = ctypes.c_uint64


class pfn_t(ctypes.Structure):
    _fields_ = [("val", c_u64)]


class pfn_resource(ctypes.Structure):
    _fields_ = [("start", c_u64), ("end", c_u64), ("name", ctypes.c_char_p)]


class pfn_section(ctypes.Structure):
    _fields_ = [
        ("root", ctypes.c_size_t),
        ("cache_pfn", c_u64),
        ("cache_pages", c_u64),
        ("cache_addr", ctypes.c_size_t),
    ]


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
    "kunmap_atomic_pfn_t": (None, [ctypes.c_void_p]),
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
}


def _candidates(explicit):
    if explicit:
        yield str(explicit)
        return
    env = os.environ.get("PFN_LIBRARY")
    if env:
        yield env
        return
    # The build tree this package sits in (python/pfn/ -> target/release/).
    tree = Path(__file__).resolve().parents[2] / "target" / "release" / "libpfn.so"
    if tree.exists():
        yield str(tree)
    found = ctypes.util.find_library("pfn")
    yield found or "libpfn.so.0"


def load(path=None):
    """Open libpfn: `path`, else $PFN_LIBRARY, else the build tree, else the system loader."""
    errors = []
    for candidate in _candidates(path):
        try:
            lib = ctypes.CDLL(candidate, use_errno=True)
        except OSError as e:
            errors.append(f"{candidate}: {e}")
            continue
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
        return lib
    raise OSError("libpfn not found (set PFN_LIBRARY or build with `cargo build --release`): "
                  + "; ".join(errors))
