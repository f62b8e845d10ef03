"""DAX devices from Python (issue 11): direct_access inside a read section, reads and writes
at byte offsets with short counts, zeroing, kill (also while another thread holds a section),
and the errors."""

import errno
import os
import threading
import time

import pytest

import pfn

PAGE = pfn.PAGE_SIZE
PHYS = 7 << 40
PAGES = 8


@pytest.fixture
def dax_env(tmp_path_factory):
    """One 8-page file registered as one range; yields (mapping, device, path)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else str(tmp_path_factory.mktemp("pmem"))
    path = os.path.join(base, f"libpfn-pytest-dax-{os.getpid()}-{time.monotonic_ns()}.pmem")
    try:
        with pfn.PmemFile(path, PAGES * PAGE, create=True) as m, pfn.Device("dax") as dev:
            dev.register_pmem(m, PHYS)
            yield m, dev, path
    finally:
        if os.path.exists(path):
            os.unlink(path)


def file_bytes(path, offset, n):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(n)


def test_read_write_zero_across_pages(dax_env):
    m, dev, path = dax_env
    with pfn.Dax(dev, PHYS) as d:
        assert d.pages == PAGES and d.size == PAGES * PAGE and d.alive
        data = bytes((i * 7 + 1) & 0xFF for i in range(3 * PAGE))
        assert d.write(PAGE - 100, data) == len(data)
        assert file_bytes(path, PAGE - 100, len(data)) == data
        assert d.read(PAGE - 100, len(data)) == data
        buf = bytearray(200)
        assert d.readinto(PAGE - 150, buf) == 200
        assert bytes(buf[50:]) == data[:150]
        # Short counts at the end, nothing after it; length 0.
        assert d.write(d.size - 3, b"abcdef") == 3
        assert d.read(d.size - 3, 100) == b"abc"
        assert d.read(d.size, 10) == b""
        assert d.read(d.size + 5, 10) == b""
        assert d.write(0, b"") == 0
        assert d.read(0, 0) == b""
        assert d.zero(PAGE - 10, 20) == 20
        assert file_bytes(path, PAGE - 10, 20) == bytes(20)
        assert d.zero(d.size - 1, 50) == 1
        # A writable memoryview and a read-only one both work as sources.
        assert d.write(5, memoryview(bytearray(b"xyz"))) == 3
        assert d.read(5, 3) == b"xyz"
        with pytest.raises(OSError) as e:
            d.read(2**64 - 2, 10)
        assert e.value.errno == errno.EOVERFLOW
        with pytest.raises(TypeError):
            d.write(0, "text")
        with pytest.raises(ValueError):
            d.read(-1, 1)


def test_direct_access_needs_a_section(dax_env):
    m, dev, _ = dax_env
    with pfn.Dax(dev, PHYS) as d:
        with pytest.raises(OSError) as e:
            d.direct_access(0)
        assert e.value.errno == errno.EINVAL
        assert "read section" in str(e.value)
        with pfn.read_section():
            n, addr, frame = d.direct_access(2, 100)
            assert n == PAGES - 2
            assert addr == m.addr + 2 * PAGE
            assert frame == pfn.Pfn.from_pfn((PHYS >> 12) + 2, pfn.DEV)
            assert not frame.devmap
            assert d.direct_access(PAGES - 1, 4)[0] == 1
            with pytest.raises(OSError) as e:
                d.direct_access(PAGES)
            assert e.value.errno == errno.ERANGE
            with pytest.raises(OSError) as e:
                d.kill()
            assert e.value.errno == errno.EDEADLK


def test_kill_waits_for_a_section_on_another_thread(dax_env):
    _, dev, _ = dax_env
    d = pfn.Dax(dev, PHYS)
    holding, release = threading.Event(), threading.Event()
    seen = {}

    def holder():
        with pfn.read_section():
            seen["n"] = d.direct_access(0, 1)[0]
            holding.set()
            release.wait()
            seen["alive_inside"] = d.alive

    t = threading.Thread(target=holder)
    t.start()
    holding.wait()
    killed = threading.Event()
    k = threading.Thread(target=lambda: (d.kill(), killed.set()))
    k.start()
    while d.alive:  # the kill has begun: new accesses fail at once
        time.sleep(0.001)
    with pytest.raises(OSError) as e:
        d.read(0, 1)
    assert e.value.errno == errno.ENXIO
    assert not killed.is_set()  # it waits for the holder's section
    release.set()
    t.join()
    k.join()
    assert killed.is_set()
    assert seen == {"n": 1, "alive_inside": False}
    d.close()
    assert d.closed
    with pytest.raises(ValueError):
        d.read(0, 1)


def test_errors(dax_env):
    _, dev, _ = dax_env
    with pytest.raises(FileNotFoundError):
        pfn.Dax(dev, PHYS + PAGE)
    with pytest.raises(TypeError):
        pfn.Dax("dev", PHYS)
    d = pfn.Dax(dev, PHYS)
    dev.unregister(PHYS)
    with pytest.raises(OSError) as e:
        d.write(0, b"x")
    assert e.value.errno == errno.ENXIO
    assert d.alive
    d.close()
    d.close()
