"""Scatterlists from Python (issue 12): build one over several ranges, copy bytes in and out,
iterate mapped chunks as memoryviews, and the errors."""

import ctypes
import errno
import os
import threading
import time

import pytest

import pfn

PAGE = pfn.PAGE_SIZE
PHYS = 5 << 40


@pytest.fixture
def ranges(tmp_path_factory):
    """One 16-page file as three ranges: pages 0..3 and 4..7 back to back (one run), pages
    8..15 elsewhere in physical space. Yields (mapping, device)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else str(tmp_path_factory.mktemp("pmem"))
    path = os.path.join(base, f"libpfn-pytest-sg-{os.getpid()}-{time.monotonic_ns()}.pmem")
    try:
        with pfn.PmemFile(path, 16 * PAGE, create=True) as m, pfn.Device("sg") as dev:
            dev.register(PHYS, 4 * PAGE, m.addr)
            dev.register(PHYS + 4 * PAGE, 4 * PAGE, m.addr + 4 * PAGE)
            dev.register(PHYS + (1 << 30), 8 * PAGE, m.addr + 8 * PAGE)
            yield m, dev
    finally:
        if os.path.exists(path):
            os.unlink(path)


def h(phys, flags=pfn.DEV):
    return pfn.Pfn.from_phys(phys, flags)


def raw(m, offset, n):
    return ctypes.string_at(m.addr + offset, n)


def test_copy_in_and_out_across_frames_and_ranges(ranges):
    m, _ = ranges
    entries = [
        (h(PHYS), 4000, 8 * PAGE - 4000),          # across frames and into the second range
        (h(PHYS + (1 << 30)), PAGE + 7, 100),       # the offset passes its frame
        (h(PHYS + 2 * PAGE).val, 0, 0),              # empty, an int handle
        (h(PHYS + (1 << 30) + 7 * PAGE), 4090, 6),
    ]
    with pfn.ScatterList(entries) as sgl:
        assert len(sgl) == 4
        assert sgl.entries == [(p if isinstance(p, pfn.Pfn) else pfn.Pfn(p), o, n)
                               for p, o, n in entries]
        total = 8 * PAGE - 4000 + 100 + 6
        assert sgl.nbytes == total
        data = bytes((i * 31) & 0xFF for i in range(total))
        assert sgl.copy_in(data) == total
        assert raw(m, 4000, 8 * PAGE - 4000) == data[:8 * PAGE - 4000]
        assert raw(m, 9 * PAGE + 7, 100) == data[8 * PAGE - 4000:8 * PAGE - 3900]
        assert raw(m, 15 * PAGE + 4090, 6) == data[-6:]
        assert sgl.copy_out() == data
        assert sgl.copy_out(10, skip=total - 4) == data[-4:]    # the list ends first
        assert sgl.copy_out(skip=total + 5) == b""
        buf = bytearray(50)
        assert sgl.readinto(buf, skip=100) == 50
        assert bytes(buf) == data[100:150]
        # Any bytes-like object; skip; a short list copies what it has.
        assert sgl.copy_in(memoryview(b"ABCDEFGHIJ")[::2], skip=3) == 5
        assert sgl.copy_out(5, skip=3) == b"ACEGI"
        assert sgl.copy_in(b"z" * 20, skip=total - 6, persist=True) == 6
        assert sgl.zero(4, skip=1, persist=True) == 4
        assert sgl.copy_out(6) == data[:1] + bytes(4) + b"E"


def test_chunks_are_memoryviews_one_per_contiguous_piece(ranges):
    m, _ = ranges
    entries = [(h(PHYS), 100, 8 * PAGE - 200), (h(PHYS + (1 << 30)), 0, 2 * PAGE)]
    with pfn.ScatterList(entries) as sgl:
        sgl.copy_in(bytes(range(256)) * ((sgl.nbytes + 255) // 256))
        want = sgl.copy_out()
        views, lengths = [], []
        for chunk in sgl.chunks():
            assert isinstance(chunk, memoryview) and chunk.readonly
            views.append(chunk)
            lengths.append(len(chunk))
        # One chunk across the two ranges that continue each other, one for the third.
        assert lengths == [8 * PAGE - 200, 2 * PAGE]
        for v in views:            # released when the iteration moved on
            with pytest.raises(ValueError):
                v[0]
        got = b"".join(bytes(c) for c in sgl.chunks())
        assert got == want
        # Writing through the chunks, durably.
        for chunk in sgl.chunks(write=True, persist=True):
            chunk[:] = b"\x5a" * len(chunk)
        assert sgl.copy_out() == b"\x5a" * sgl.nbytes
        assert raw(m, 100, 4) == b"\x5a" * 4
        # A break ends the iteration and releases its chunk: the ranges can go.
        for chunk in sgl.chunks():
            break
        with pytest.raises(ValueError):
            list(sgl.chunks(persist=True))


def test_long_lists_chain_tables(ranges):
    entries = [(h(PHYS + (i % 16) * PAGE if i % 16 < 8 else PHYS + (1 << 30) + (i % 8) * PAGE),
                i % 64, 10) for i in range(600)]
    with pfn.ScatterList(entries) as sgl:
        assert len(sgl) == 600
        assert sgl.entries[599] == entries[599]
        data = os.urandom(6000)
        assert sgl.copy_in(data) == 6000
        # Overlapping entries: later ones win, as in list order.
        expect = {}
        pos = 0
        for p, off, n in entries:
            base = p.phys + off
            for k in range(n):
                expect[base + k] = data[pos + k]
            pos += n
        got = sgl.copy_out()
        pos = 0
        for p, off, n in entries:
            assert got[pos:pos + n] == bytes(expect[p.phys + off + k] for k in range(n))
            pos += n


def test_from_buffer(ranges):
    m, _ = ranges
    with pfn.ScatterList.from_buffer(m.addr + 10, 16 * PAGE - 20) as sgl:
        # The first two ranges are one physical run; the third is elsewhere.
        assert [(p.phys, o, n) for p, o, n in sgl.entries] == [
            (PHYS, 10, 8 * PAGE - 10), (PHYS + (1 << 30), 0, 8 * PAGE - 10)]
        assert sgl.copy_out() == raw(m, 10, 16 * PAGE - 20)
    with pytest.raises(OSError) as e:
        pfn.ScatterList.from_buffer(ctypes.addressof(ctypes.create_string_buffer(64)), 64)
    assert e.value.errno == errno.ENXIO


def test_errors(ranges):
    m, dev = ranges
    with pytest.raises(TypeError, match="entries\\[0\\]"):
        pfn.ScatterList([h(PHYS)])
    with pytest.raises(TypeError, match="p"):
        pfn.ScatterList([("x", 0, 1)])
    with pytest.raises(TypeError, match="offset"):
        pfn.ScatterList([(h(PHYS), 1.5, 1)])
    with pytest.raises(ValueError):
        pfn.ScatterList([])
    with pytest.raises(ValueError):
        pfn.ScatterList([(h(PHYS), -1, 1)])
    with pytest.raises(OverflowError):
        pfn.ScatterList([(h(PHYS), 0, 1 << 32)])
    with pytest.raises(OSError) as e:
        pfn.ScatterList([(pfn.Pfn.from_pfn(5, pfn.SG_CHAIN), 0, 1)])
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        pfn.ScatterList([(pfn.Pfn.from_pfn((1 << 52) - 1), 4000, 200)])
    assert e.value.errno == errno.EOVERFLOW
    # A frame in no range: the copy fails and writes nothing.
    before = raw(m, 0, 16)
    with pfn.ScatterList([(h(PHYS), 0, 16), (h(PHYS + (2 << 30)), 0, 16)]) as sgl:
        with pytest.raises(OSError) as e:
            sgl.copy_in(b"q" * 32)
        assert e.value.errno == errno.ENXIO
        assert raw(m, 0, 16) == before
        with pytest.raises(OSError):
            sgl.copy_out()
        chunks = sgl.chunks()
        assert bytes(next(chunks)) == before
        with pytest.raises(OSError) as e:
            next(chunks)
        assert e.value.errno == errno.ENXIO
        with pytest.raises(TypeError):
            sgl.copy_in("text")
        with pytest.raises(TypeError):
            sgl.readinto(b"read-only")
        # While a chunk is held, unregistering on this thread would wait for itself.
        it = sgl.chunks()
        next(it)
        with pytest.raises(OSError) as e:
            dev.unregister(PHYS)
        assert e.value.errno == errno.EDEADLK
        with pytest.raises(ValueError, match="under way"):
            sgl.close()
        it.close()
    assert sgl.closed
    with pytest.raises(ValueError, match="closed"):
        sgl.copy_out()
    sgl.close()
    assert "closed" in repr(sgl)


def test_another_thread_unregistering_waits_for_the_chunk(ranges):
    m, dev = ranges
    with pfn.ScatterList([(h(PHYS), 0, 8 * PAGE)]) as sgl:
        it = sgl.chunks()
        chunk = next(it)
        assert len(chunk) == 8 * PAGE       # across both ranges of the run
        done = threading.Event()

        def unregister():
            dev.unregister(PHYS + 4 * PAGE)  # the run's second range
            done.set()

        t = threading.Thread(target=unregister)
        t.start()
        # It cannot finish while the chunk is held; the bytes stay readable meanwhile.
        assert not done.wait(0.2)
        assert bytes(chunk[-4:]) == raw(m, 8 * PAGE - 4, 4)
        it.close()
        t.join()
        assert done.is_set()
        with pytest.raises(OSError) as e:
            sgl.copy_out()
        assert e.value.errno == errno.ENXIO


def test_a_section_returned_by_value_is_the_whole_struct():
    # pfn_read_lock returns struct pfn_section by value (56 bytes): ctypes must know all of
    # it, or the call writes past the space it set aside.
    lib = pfn.library()
    s = lib.pfn_read_lock()
    lib.pfn_read_unlock()
    assert ctypes.sizeof(s) == 56
    assert s.reader and s.token >= 1
