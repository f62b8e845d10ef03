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


@pytest.fixture
def span_env(tmp_path_factory):
    """Three files of 2, 3 and 1 pages registered physically back to back from SPAN (each
    its own mapping, so not one virtual run); yields (device, [(mapping, path, offset)])."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else str(tmp_path_factory.mktemp("pmem"))
    stem = os.path.join(base, f"libpfn-pytest-dax-span-{os.getpid()}-{time.monotonic_ns()}")
    paths = [f"{stem}.{i}" for i in range(3)]
    try:
        maps = [pfn.PmemFile(p, n * PAGE, create=True) for p, n in zip(paths, (2, 3, 1))]
        try:
            with pfn.Device("span") as dev:
                parts, at = [], 0
                for m, p in zip(maps, paths):
                    dev.register_pmem(m, SPAN + at)
                    parts.append((m, p, at))
                    at += m.size
                yield dev, parts
        finally:
            for m in maps:
                m.close()
    finally:
        for p in paths:
            if os.path.exists(p):
                os.unlink(p)


SPAN = 9 << 40


def test_span_reads_and_writes_across_ranges(span_env):
    dev, parts = span_env
    size = 6 * PAGE
    with pfn.Dax(dev, SPAN, size) as d:
        assert d.pages == 6 and d.size == size
        data = bytes((i * 13 + 5) & 0xFF for i in range(size))
        assert d.write(0, data) == size
        for m, path, off in parts:
            assert file_bytes(path, 0, m.size) == data[off:off + m.size]
        assert d.read(0, size + 10) == data
        # Across both boundaries in one call.
        assert d.zero(2 * PAGE - 5, 3 * PAGE + 10) == 3 * PAGE + 10
        model = bytearray(data)
        model[2 * PAGE - 5:5 * PAGE + 5] = bytes(3 * PAGE + 10)
        assert d.read(0, size) == bytes(model)
        with pfn.read_section():
            assert d.direct_access(2, 10)[0] == 3  # to the end of the middle range
            assert d.direct_access(5, 10)[0] == 1
        # The middle range goes: its bytes fail, the others still serve.
        dev.unregister(SPAN + 2 * PAGE)
        assert d.read(0, size) == bytes(model[:2 * PAGE])
        with pytest.raises(OSError) as e:
            d.read(3 * PAGE, 1)
        assert e.value.errno == errno.ENXIO
        assert d.write(5 * PAGE, b"last") == 4
        assert file_bytes(parts[2][1], 0, 4) == b"last"


def test_span_errors(span_env):
    dev, parts = span_env
    for size in (0, PAGE + 1, 3 * PAGE, 7 * PAGE):
        with pytest.raises(OSError) as e:
            pfn.Dax(dev, SPAN, size)
        assert e.value.errno == errno.EINVAL
    with pytest.raises(FileNotFoundError):
        pfn.Dax(dev, SPAN + PAGE, 2 * PAGE)
    with pfn.Dax(dev, SPAN, 2 * PAGE) as one:
        assert one.pages == 2
