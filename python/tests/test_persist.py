"""Persistence from Python: granularity, persist by mapping and by address, memcpy_persist
from any buffer, and failed creates that leave nothing (issue 10; issue 8 item 9)."""

import array
import ctypes
import errno
import os
import subprocess
import sys
import time

import pytest

import pfn

PAGE = pfn.PAGE_SIZE


@pytest.fixture
def path(tmp_path_factory):
    base = "/dev/shm" if os.path.isdir("/dev/shm") else str(tmp_path_factory.mktemp("pmem"))
    p = os.path.join(base, f"libpfn-pytest-persist-{os.getpid()}-{time.monotonic_ns()}.pmem")
    yield p
    if os.path.lexists(p):
        os.unlink(p)


def read(m, offset, n):
    return ctypes.string_at(m.addr + offset, n)


def test_tmpfs_is_page_granular_unless_forced(path):
    with pfn.PmemFile(path, 4 * PAGE, create=True) as m:
        if os.environ.get("PFN_FORCE_GRANULARITY") is None:
            assert m.granularity == pfn.GRANULARITY_PAGE
        assert m.granularity in (pfn.GRANULARITY_BYTE, pfn.GRANULARITY_CACHE_LINE,
                                 pfn.GRANULARITY_PAGE)
    with pytest.raises(ValueError):
        m.granularity


def test_the_force_variable_is_read_at_load(path):
    # The library reads PFN_FORCE_GRANULARITY once, when loaded: a new interpreter.
    code = ("import pfn, sys; m = pfn.PmemFile(sys.argv[1], 4096, create=True); "
            "print(m.granularity); m.close()")
    env = dict(os.environ, PFN_FORCE_GRANULARITY="cache_line")
    out = subprocess.run([sys.executable, "-c", code, path], env=env, check=True,
                         capture_output=True, text=True).stdout
    assert int(out) == pfn.GRANULARITY_CACHE_LINE


def test_memcpy_persist_takes_any_buffer(path):
    with pfn.PmemFile(path, 4 * PAGE, create=True) as m:
        ba = bytearray(b"from a bytearray")
        cases = [
            (0, b"hello bytes"),
            (100, ba),
            (200, memoryview(b"0123456789")[2:7]),
            (300, array.array("I", [1, 2, 3, 0xDEADBEEF])),
            (400, memoryview(bytearray(range(20)))[::3]),   # not contiguous
            (PAGE - 3, b"crosses a page"),
            (4 * PAGE - 5, b"12345"),                         # the last bytes
            (7, b""),
        ]
        for offset, data in cases:
            want = bytes(memoryview(data).tobytes())
            assert m.memcpy_persist(offset, data) == len(want)
            assert read(m, offset, len(want)) == want
        ba.extend(b" and still resizable")   # the buffer was released
        big = os.urandom(3 * PAGE + 17)
        assert m.memcpy_persist(11, big) == len(big)
        assert read(m, 11, len(big)) == big
        m.persist(0, 4 * PAGE)


def test_memcpy_persist_refuses_what_does_not_fit(path):
    with pfn.PmemFile(path, 2 * PAGE, create=True) as m:
        for offset, data in [(-1, b"x"), (2 * PAGE, b"x"), (2 * PAGE - 1, b"xy")]:
            with pytest.raises(OSError) as e:
                m.memcpy_persist(offset, data)
            assert e.value.errno == errno.EINVAL
        with pytest.raises(TypeError):
            m.memcpy_persist(0, "text is no buffer")
    with pytest.raises(ValueError):
        m.memcpy_persist(0, b"closed")


def test_persist_by_address(path):
    with pfn.PmemFile(path, 2 * PAGE, create=True) as m:
        ctypes.memset(m.addr + 5, 0x41, 100)
        pfn.persist(m.addr + 5, 100)
        pfn.persist(m.addr, 0)
        pfn.persist(0, 0)
        for addr, n in [(0, 1), (-1, 1), (m.addr, -1), (m.addr, 2**64 - 1)]:
            with pytest.raises((OSError, ctypes.ArgumentError)) as e:
                pfn.persist(addr, n)
            if isinstance(e.value, OSError):
                assert e.value.errno == errno.EINVAL
    buf = ctypes.create_string_buffer(256)   # memory no mapping of the library covers
    pfn.persist(ctypes.addressof(buf), 256)


def test_methods_are_named():
    assert pfn.flush_method() in ("clwb", "clflushopt", "clflush", "none")
    assert pfn.movnt_method() in ("avx512f", "avx2", "sse2", "none")


def test_a_failed_create_leaves_nothing(path):
    # Refused before anything is made, and refused after the file was made.
    for size in (100, 0, 1 << 50):
        with pytest.raises(OSError) as e:
            pfn.PmemFile(path, size, create=True)
        assert e.value.errno in (errno.EINVAL, errno.ENOSPC, errno.EFBIG)
        assert not os.path.lexists(path)
    # A file that existed keeps its bytes and its length.
    with open(path, "wb") as f:
        f.write(b"keep me" * 100)
    with pytest.raises(OSError):
        pfn.PmemFile(path, 1 << 50, create=True)
    with open(path, "rb") as f:
        assert f.read() == b"keep me" * 100
