"""Byte handles, reverse translation, free-space registration, object-bound sections, the
error messages OSError carries, and sections that refuse to translate once they have ended."""

import ctypes
import errno
import os
import re
import threading
import time

import pytest

import pfn
from pfn._lib import pfn_section as C_SECTION

PAGE = pfn.PAGE_SIZE
PHYS = 7 << 40
TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture
def path(tmp_path_factory):
    base = "/dev/shm" if os.path.isdir("/dev/shm") else str(tmp_path_factory.mktemp("pmem"))
    p = os.path.join(base, f"libpfn-pytest-h-{os.getpid()}-{time.monotonic_ns()}.pmem")
    yield p
    if os.path.exists(p):
        os.unlink(p)


@pytest.fixture
def registered(path):
    with pfn.PmemFile(path, 8 * PAGE, create=True) as m, pfn.Device("h") as dev:
        dev.register_pmem(m, PHYS)
        yield m, dev


def test_section_struct_matches_the_header():
    """pfn_read_lock returns struct pfn_section by value: a ctypes twin of another size would
    let C write past it. Compare field names and size with the header (in a source tree)."""
    header = os.path.join(TOP, "include", "pfn.h")
    if not os.path.isfile(header):
        pytest.skip("not in a libpfn source tree: no header to compare with")
    text = open(header).read()
    body = re.search(r"typedef struct pfn_section \{(.*?)\} pfn_section;", text, re.S).group(1)
    names = re.findall(r"(\w+);", body)
    assert names == [f[0] for f in C_SECTION._fields_]
    assert ctypes.sizeof(C_SECTION) == 8 * len(names)


def test_byte_handles_name_bytes_and_map_them(registered):
    m, _ = registered
    h = pfn.Phys.make(PHYS + 3 * PAGE + 100, pfn.DEV)
    assert h.addr == PHYS + 3 * PAGE + 100 and h.flags == pfn.DEV and not h.is_null
    assert h.pfn == pfn.Pfn.from_phys(PHYS + 3 * PAGE, pfn.DEV)
    assert pfn.Pfn.from_phys(PHYS + 3 * PAGE, pfn.DEV).byte(100) == h
    assert (h + 28).addr == h.addr + 28 and (h + 28).flags == pfn.DEV
    assert pfn.Phys(0).is_null
    with pfn.kmap(h) as rest:
        assert len(rest) == PAGE - 100
        rest[:5] = b"bytes"
    with pfn.kmap(h.pfn) as page:
        assert bytes(page[100:105]) == b"bytes"
    # a byte handle's kmap may run on past its page, as far as the range goes
    with pfn.kmap(h, 4 * PAGE + PAGE - 100) as run:
        assert len(run) == 5 * PAGE - 100
    with pytest.raises(ValueError, match="contiguous"):
        with pfn.kmap(h, 5 * PAGE):
            pass
    with pytest.raises(OSError) as e:
        with pfn.kmap(pfn.Phys(0)):
            pass
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OverflowError):
        pfn.Phys.make(1 << 56)
    with pytest.raises(OverflowError):
        pfn.Phys.make((1 << 56) - 1) + 1
    with pytest.raises(TypeError):
        pfn.Phys.make("1")


def test_reverse_translation_round_trips(registered):
    m, _ = registered
    for off in (0, 1, PAGE - 1, 5 * PAGE + 77, m.size - 1):
        p = pfn.virt_to_pfn(m.addr + off)
        assert p.phys == PHYS + (off & ~(PAGE - 1)) and p.flags == pfn.DEV
        h = pfn.virt_to_phys(m.addr + off)
        assert h.addr == PHYS + off and h.flags == pfn.DEV
        with pfn.read_section() as translate:
            assert translate(h) == m.addr + off
            assert translate(p) == m.addr + (off & ~(PAGE - 1))
    for outside in (m.addr - 1, m.addr + m.size, 0):
        with pytest.raises(OSError) as e:
            pfn.virt_to_pfn(outside)
        assert e.value.errno == errno.ENXIO
        with pytest.raises(OSError) as e:
            pfn.virt_to_phys(outside)
        assert e.value.errno == errno.ENXIO


def test_register_free_picks_disjoint_starts(path):
    with pfn.PmemFile(path, 16 * PAGE, create=True) as m, pfn.Device("f") as dev:
        starts = [dev.register_free(4 * PAGE, m.addr + i * 4 * PAGE) for i in range(4)]
        assert len(set(starts)) == 4
        for i, s in enumerate(starts):
            assert s % (4 * PAGE) == 0 and s < 1 << 56
            assert pfn.virt_to_phys(m.addr + i * 4 * PAGE + 9).addr == s + 9
        spans = sorted((s, s + 4 * PAGE) for s in starts)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
        with pytest.raises(OSError) as e:
            dev.register_free(PAGE, m.addr, align=3 * PAGE)
        assert e.value.errno == errno.EINVAL
        dev.unregister(starts[0])


def test_errors_carry_the_library_message(registered):
    m, dev = registered
    with pytest.raises(OSError) as e:
        dev.register(PHYS + 100 * PAGE, 100, m.addr)
    assert e.value.errno == errno.EINVAL
    assert "not page-aligned" in str(e.value)
    assert "devm_register_kmap_pfn_range" in pfn.errormsg()
    with pytest.raises(OSError) as e:
        dev.register(PHYS + PAGE, PAGE, m.addr)
    assert e.value.errno == errno.EBUSY
    assert pfn.errormsg() in str(e.value) and pfn.errormsg()
    # a Python-side check does not borrow the last C message
    with pytest.raises(OSError) as e:
        m.persist(100 * PAGE)
    assert pfn.errormsg() not in str(e.value)


def test_read_section_translate_refuses_after_the_block(registered):
    m, dev = registered
    with pfn.read_section() as translate:
        assert translate(pfn.Pfn.from_phys(PHYS)) == m.addr
    with pytest.raises(ValueError, match="ended"):
        translate(pfn.Pfn.from_phys(PHYS))
    # the section really ended: unregistering from this thread neither deadlocks nor EDEADLKs
    dev.unregister(PHYS)
    with pytest.raises(ValueError):
        translate(pfn.Pfn.from_phys(PHYS))


def test_section_is_closed_from_another_thread(registered):
    m, dev = registered
    s = pfn.Section()
    assert s.translate(pfn.Phys.make(PHYS + 12)) == m.addr + 12
    done = threading.Event()

    def unregister():
        dev.unregister(PHYS)
        done.set()
    t = threading.Thread(target=unregister)
    t.start()
    # Once the range has left lookups the unregister has begun, and it must then wait for the
    # open section: `done` stays clear until close. No sleep stands in for the ordering.
    while True:
        try:
            pfn.virt_to_pfn(m.addr)
        except OSError as e:
            assert e.errno == errno.ENXIO
            break
        time.sleep(0.001)
    assert not done.is_set()
    assert s.translate(pfn.Phys.make(PHYS + 12)) == m.addr + 12  # still valid memory
    closer = threading.Thread(target=s.close)
    closer.start()
    closer.join()
    t.join()
    assert done.is_set() and s.closed
    with pytest.raises(ValueError, match="closed"):
        s.translate(pfn.Pfn.from_phys(PHYS))
    s.close()  # a second close does nothing


def test_thread_init_is_idempotent():
    pfn.thread_init()
    pfn.thread_init()


def test_pool_labels_keep_stored_handles_valid(path):
    with pfn.PmemFile(path, 4 * PAGE, create=True) as m, pfn.Device("l") as dev:
        assert m.label is None
        start = dev.register_labeled(m)
        assert m.label == start and start % (2 << 20) == 0
        with pfn.kmap(pfn.Phys.make(start + pfn.LABEL_SIZE)) as rest:
            rest[:4] = b"kept"
    with pfn.PmemFile(path) as m, pfn.Device("l") as dev:
        assert dev.register_labeled(m) == start
        with pfn.kmap(pfn.Phys.make(start + pfn.LABEL_SIZE), 4) as rest:
            assert bytes(rest) == b"kept"
        dev.unregister(start)
        m.label = 9 << 40
        assert dev.register_labeled(m) == 9 << 40
        dev.unregister(9 << 40)
        ctypes.memmove(m.addr, b"NOTALABL", 8)
        with pytest.raises(OSError) as e:
            m.label
        assert e.value.errno == errno.EILSEQ and "not a labeled pool" in str(e.value)
