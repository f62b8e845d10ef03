"""The Python binding over the same ground as the C tests."""

import errno
import os
import threading
import time

import pytest

import pfn

PAGE = pfn.PAGE_SIZE
PHYS = 3 << 40


@pytest.fixture
def path(tmp_path_factory):
    base = "/dev/shm" if os.path.isdir("/dev/shm") else str(tmp_path_factory.mktemp("pmem"))
    p = os.path.join(base, f"libpfn-pytest-{os.getpid()}-{time.monotonic_ns()}.pmem")
    yield p
    if os.path.exists(p):
        os.unlink(p)


@pytest.fixture
def registered(path):
    with pfn.PmemFile(path, 16 * PAGE, create=True) as m, pfn.Device("py") as dev:
        dev.register(PHYS, m.size, m.addr)
        yield m, dev


def test_encoding_helpers_and_boundaries():
    top = (1 << 52) - 1
    for flags in (0, pfn.SG_CHAIN, pfn.SG_LAST, pfn.DEV, pfn.MAP, pfn.SPECIAL, pfn.DEV | pfn.MAP):
        for n in (0, 1, 0x12345, top):
            p = pfn.Pfn.from_pfn(n, flags)
            assert p.val == n | flags
            assert p.pfn == n and p.flags == flags
            assert p.phys == n << 12
            assert p.has_page == bool(flags & pfn.MAP or not flags & pfn.DEV)
            assert p.devmap == (flags & (pfn.DEV | pfn.MAP) == pfn.DEV | pfn.MAP)
            assert p.special == bool(flags & pfn.SPECIAL)
            assert pfn.Pfn.from_phys((n << 12) | 0x123, flags) == p
    assert pfn.Pfn.from_phys((1 << 64) - 1).pfn == top


def test_kmap_write_persist_remap_read(path):
    with pfn.PmemFile(path, 16 * PAGE, create=True) as m, pfn.Device("w") as dev:
        dev.register(PHYS, m.size, m.addr, name="w0")
        for i in range(16):
            with pfn.kmap(pfn.Pfn.from_phys(PHYS + i * PAGE, pfn.DEV)) as page:
                assert len(page) == PAGE
                page[:8] = (0xC0FFEE00 + i).to_bytes(8, "little")
        m.persist()
        m.persist(PAGE, 8)
    with pfn.PmemFile(path) as m, pfn.Device("r") as dev:
        assert m.size == 16 * PAGE
        dev.register(PHYS, m.size, m.addr)
        for i in range(16):
            with pfn.kmap(pfn.Pfn.from_phys(PHYS + i * PAGE)) as page:
                assert int.from_bytes(page[:8], "little") == 0xC0FFEE00 + i
        with pfn.kmap(pfn.Pfn.from_phys(PHYS + 10 * PAGE), length=6 * PAGE) as run:
            assert len(run) == 6 * PAGE
        with pytest.raises(ValueError, match="contiguous"):
            with pfn.kmap(pfn.Pfn.from_phys(PHYS + 10 * PAGE), length=7 * PAGE):
                pass


def test_view_is_released_after_the_block(registered):
    with pfn.kmap(pfn.Pfn.from_phys(PHYS)) as page:
        kept = page
    with pytest.raises(ValueError):
        kept[0]


def test_every_error_is_an_oserror_with_its_errno(registered, path):
    m, dev = registered
    def err(fn):
        with pytest.raises(OSError) as e:
            fn()
        return e.value.errno
    assert err(lambda: dev.register(PHYS + PAGE, PAGE, m.addr)) == errno.EBUSY
    assert err(lambda: dev.register(PHYS + 100 * PAGE + 1, PAGE, m.addr)) == errno.EINVAL
    assert err(lambda: dev.register(PHYS + 100 * PAGE, 100, m.addr)) == errno.EINVAL
    assert err(lambda: dev.register(PHYS + 100 * PAGE, PAGE, m.addr + 8)) == errno.EINVAL
    assert err(lambda: dev.unregister(PHYS + PAGE)) == errno.ENOENT
    assert err(lambda: pfn.kmap(pfn.Pfn.from_phys(PHYS + 99 * PAGE)).__enter__()) == errno.ENXIO
    assert err(lambda: pfn.kmap(pfn.Pfn.from_phys(PHYS, pfn.SG_CHAIN)).__enter__()) == errno.EINVAL
    assert err(lambda: m.persist(0, 17 * PAGE)) == errno.EINVAL
    assert err(lambda: m.persist(17 * PAGE)) == errno.EINVAL
    assert err(lambda: m.close()) == errno.EBUSY  # a range still lies in it
    assert not m.closed
    with pfn.kmap(pfn.Pfn.from_phys(PHYS)):
        assert err(lambda: dev.unregister(PHYS)) == errno.EDEADLK
        assert err(lambda: dev.close()) == errno.EDEADLK
    with pytest.raises(FileNotFoundError) as e:
        pfn.PmemFile(path + ".missing")
    assert e.value.filename == path + ".missing"
    assert err(lambda: pfn.PmemFile(path + ".odd", 100, create=True)) == errno.EINVAL
    assert err(lambda: pfn.PmemFile("/")) == errno.EISDIR
    dev.unregister(PHYS)
    assert err(lambda: dev.unregister(PHYS)) == errno.ENOENT


def test_read_section_translates_without_unmapping(registered):
    m, _ = registered
    with pfn.read_section() as translate:
        assert translate(pfn.Pfn.from_phys(PHYS + 3 * PAGE)) == m.addr + 3 * PAGE
        with pytest.raises(OSError) as e:
            translate(pfn.Pfn.from_phys(PHYS + 40 * PAGE))
        assert e.value.errno == errno.ENXIO


HANG_CAP = float(os.environ.get("PFN_TEST_HANG_SECONDS", "300"))


def test_unregister_waits_for_a_kmap_on_another_thread(registered):
    """No sleep stands in for the ordering: the holder keeps its kmap until it has seen the
    range gone (ENXIO), which proves the unregister has begun and must now wait for it."""
    _, dev = registered
    held = threading.Event()
    seen = []

    def holder():
        with pfn.kmap(pfn.Pfn.from_phys(PHYS + 2 * PAGE)) as page:
            held.set()
            deadline = time.monotonic() + HANG_CAP
            while time.monotonic() < deadline:
                try:
                    with pfn.kmap(pfn.Pfn.from_phys(PHYS + 3 * PAGE)):
                        pass
                except OSError as e:
                    seen.append(e.errno)
                    break
            page[0] = 1
            seen.append("released")

    t = threading.Thread(target=holder)
    t.start()
    assert held.wait(HANG_CAP), "hung: the holder never got its kmap"
    dev.unregister(PHYS)
    # It returned only after the holder, which had seen the range gone, released its kmap.
    assert seen == [errno.ENXIO, "released"], f"hung or wrong order: {seen}"
    t.join(HANG_CAP)
    assert not t.is_alive(), "hung: the holder did not finish"


def test_many_threads_translate(registered):
    m, _ = registered
    bad = []

    def worker(k):
        for i in range(2000):
            page = (i * 7 + k) % 16
            with pfn.kmap(pfn.Pfn.from_phys(PHYS + page * PAGE)) as v:
                if ctypes_addr(v) != m.addr + page * PAGE:
                    bad.append(page)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


def ctypes_addr(view):
    import ctypes
    return ctypes.addressof(ctypes.c_char.from_buffer(view))
