"""Page descriptors (a ctypes view) and pins (context managers) through the Python binding."""

import errno
import os
import threading
import time

import pytest

import pfn

PAGE = pfn.PAGE_SIZE
PHYS = 5 << 40


@pytest.fixture
def mapping(tmp_path_factory):
    base = "/dev/shm" if os.path.isdir("/dev/shm") else str(tmp_path_factory.mktemp("pmem"))
    p = os.path.join(base, f"libpfn-pytest-pages-{os.getpid()}-{time.monotonic_ns()}.pmem")
    with pfn.PmemFile(p, 600 * PAGE, create=True) as m:
        yield m
    os.unlink(p)


def test_descriptors_round_trip_and_refcounts(mapping):
    with pfn.Device("pages") as dev:
        dev.register_memmap(PHYS, 8 * PAGE, mapping.addr)
        h = pfn.Pfn.from_phys(PHYS + 7 * PAGE, pfn.DEV | pfn.MAP)
        page = pfn.pfn_to_page(h)
        assert page.pfn == h
        assert page.address == mapping.addr + 7 * PAGE == pfn.pfn_to_virt(h)
        assert pfn.pfn_to_page(pfn.Pfn.from_phys(PHYS, pfn.DEV | pfn.MAP)).addr == \
            page.addr - 7 * pfn.PAGE_BYTES
        assert (page.desc.refcount, page.flags, page.data) == (0, 0, 0)
        page.flags, page.data = 0x123, 1 << 63
        assert (page.desc.flags, page.desc.data) == (0x123, 1 << 63)
        assert page.get() == 1 and page.ref_count == 1
        with pytest.raises(OSError) as e:
            dev.unregister(PHYS)
        assert e.value.errno == errno.EBUSY
        assert page.put() == 0
        with pytest.raises(OSError) as e:
            page.put()
        assert e.value.errno == errno.EINVAL
        with pytest.raises(OSError) as e:
            pfn.pfn_to_page(pfn.Pfn.from_phys(PHYS, pfn.DEV))
        assert e.value.errno == errno.EINVAL
        with pytest.raises(OSError) as e:
            pfn.Page(page.addr + 8).pfn
        assert e.value.errno == errno.EINVAL
        assert pfn.memmap_usage() == (8, PAGE, 0)
        dev.unregister(PHYS)
        with pytest.raises(OSError) as e:
            pfn.pfn_to_page(h)
        assert e.value.errno == errno.ENXIO


def test_memmap_in_the_range_persists(mapping):
    reserved = pfn.memmap_reserved_bytes(mapping.size)
    assert reserved == 3 * PAGE
    assert pfn.memmap_reserved_bytes(mapping.size, in_range=False) == 0
    with pfn.Device("in range") as dev:
        dev.register_memmap(PHYS, mapping.size, mapping.addr, in_range=True)
        first = pfn.Pfn.from_phys(PHYS + reserved, pfn.DEV | pfn.MAP)
        page = pfn.pfn_to_page(first)
        assert page.addr == mapping.addr
        page.data = 77
        with pytest.raises(OSError) as e:
            pfn.pfn_to_page(pfn.Pfn.from_phys(PHYS, pfn.DEV | pfn.MAP))
        assert e.value.errno == errno.ENXIO
        dev.unregister(PHYS)
        dev.register_memmap(PHYS, mapping.size, mapping.addr, in_range=True)
        assert pfn.pfn_to_page(first).data == 77


def test_pin_is_a_context_manager_and_unregister_waits_for_it(mapping):
    with pfn.Device("pins") as dev:
        dev.register_memmap(PHYS, 4 * PAGE, mapping.addr)
        h = pfn.Pfn.from_phys(PHYS + PAGE, pfn.DEV | pfn.MAP)
        with pfn.pin(h) as p:
            assert p.addr == mapping.addr + PAGE
            assert p.page == pfn.pfn_to_page(h)
            with pytest.raises(OSError) as e:
                dev.unregister(PHYS)  # this thread's own pin
            assert e.value.errno == errno.EDEADLK
        assert p.released

        held = pfn.pin(h)
        done = threading.Event()
        t = threading.Thread(target=lambda: (dev.unregister(PHYS), done.set()))
        t.start()
        while pfn.pin_waiters() == 0:
            time.sleep(0.001)
        assert not done.is_set()
        with pytest.raises(OSError) as e:
            pfn.pin(h)
        assert e.value.errno == errno.ENXIO
        releaser = threading.Thread(target=held.release)  # released on another thread
        releaser.start()
        releaser.join()
        t.join()
        assert done.is_set()
        held.release()  # a second release does nothing
