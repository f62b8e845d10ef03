"""python/examples/kv_pages.py counts its runs in a pool, and never touches a foreign file."""

import hashlib
import os
import subprocess
import sys

import pytest

import pfn

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "kv_pages.py")
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(pfn.__file__)))


@pytest.fixture
def pool_dir(tmp_path):
    base = "/dev/shm" if os.path.isdir("/dev/shm") else str(tmp_path)
    d = os.path.join(base, f"libpfn-pytest-kv-{os.getpid()}-{id(tmp_path)}")
    os.mkdir(d)
    yield d
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    os.rmdir(d)


def kv(path):
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    return subprocess.run([sys.executable, EXAMPLE, path], capture_output=True, text=True,
                          env=env, timeout=300)


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_counts_its_runs(pool_dir):
    pool = os.path.join(pool_dir, "kv.pmem")
    for n in (1, 2):
        r = kv(pool)
        assert r.returncode == 0, r.stderr
        assert f"run number {n} of {pool}" in r.stdout


@pytest.mark.parametrize("size", [5000, 16 * 4096])
def test_refuses_a_foreign_file_untouched(pool_dir, size):
    foreign = os.path.join(pool_dir, "foreign")
    with open(foreign, "wb") as f:
        f.write(os.urandom(size))
    before = digest(foreign)
    r = kv(foreign)
    assert r.returncode == 1
    assert "refusing to touch it" in r.stderr
    assert digest(foreign) == before and os.path.getsize(foreign) == size
