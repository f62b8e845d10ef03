"""The package as a newcomer meets it: versions, finding the library, help(), argument checks,
wrong nesting of `with`, and release at interpreter exit."""

import errno
import inspect
import os
import pydoc
import re
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

import pfn

PAGE = pfn.PAGE_SIZE
PHYS = 5 << 40
TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(pfn.__file__)))


def cargo_version():
    text = open(os.path.join(TOP, "Cargo.toml")).read()
    return re.search(r'^version = "(.*)"', text, re.M).group(1)


@pytest.fixture
def path(tmp_path_factory):
    base = "/dev/shm" if os.path.isdir("/dev/shm") else str(tmp_path_factory.mktemp("pmem"))
    p = os.path.join(base, f"libpfn-pytest-pkg-{os.getpid()}-{time.monotonic_ns()}.pmem")
    yield p
    if os.path.exists(p):
        os.unlink(p)


def run_python(code, env=None, cwd=None):
    """Runs `code` in a fresh interpreter that imports this same pfn package."""
    full = dict(os.environ if env is None else env)
    full["PYTHONPATH"] = PACKAGE_PARENT
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=full, cwd=cwd, timeout=300)


# ---- versions

def test_versions_agree():
    want = cargo_version()
    assert pfn.__version__ == want
    assert pfn.version() == want  # the C library's pfn_version(), same form as the header's


def test_installed_package_is_the_one_tested():
    """Under `make test`'s second run the package comes from pip, not from the source tree."""
    if os.environ.get("PFN_TEST_INSTALLED") != "1":
        pytest.skip("testing the source tree (PFN_TEST_INSTALLED=1 tests an installed package)")
    import importlib.metadata
    assert sys.prefix != sys.base_prefix, "installed into a virtual environment"
    assert os.path.abspath(pfn.__file__).startswith(os.path.abspath(sys.prefix) + os.sep)
    assert not os.path.abspath(pfn.__file__).startswith(os.path.join(TOP, "python") + os.sep)
    assert importlib.metadata.version("libpfn") == cargo_version()


# ---- finding the library

def test_library_path_cannot_switch_libraries(tmp_path):
    loaded = pfn.library_file()
    assert os.path.exists(loaded)
    assert pfn.library(loaded) is pfn.library()  # the same file again is fine
    other = tmp_path / "libpfn.so"
    shutil.copy(loaded, other)
    with pytest.raises(RuntimeError, match="already loaded"):
        pfn.library(other)


def installed_copy(tmp_path):
    """A copy of the package outside any source tree (as pip installs it)."""
    site = tmp_path / "site"
    shutil.copytree(os.path.dirname(os.path.abspath(pfn.__file__)), site / "pfn",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return site


def run_installed(site, code, **env_changes):
    env = {k: v for k, v in os.environ.items() if k not in ("PFN_LIBRARY", "LD_LIBRARY_PATH")}
    env.update(env_changes)
    env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, cwd=str(site), timeout=300)


def fake_pkg_config(tmp_path, libdir):
    tool = tmp_path / "fake-pkg-config"
    if libdir is None:
        tool.write_text("#!/bin/sh\nexit 1\n")
    else:
        tool.write_text(f'#!/bin/sh\n[ "$1 $2" = "--variable=libdir pfn" ] && echo "{libdir}"\n')
    tool.chmod(0o755)
    return str(tool)


def test_not_found_lists_every_place_tried(tmp_path):
    site = installed_copy(tmp_path)
    r = run_installed(site, "import pfn; pfn.version()", PFN_LIBRARY=str(tmp_path / "nope.so"))
    assert str(tmp_path / "nope.so") in r.stderr and "make lib" in r.stderr
    r = run_installed(site, "import pfn; pfn.version()",
                      PKG_CONFIG=fake_pkg_config(tmp_path, None))
    if r.returncode == 0:
        pytest.skip("a libpfn is installed where the system loader finds it")
    msg = r.stderr
    assert "libpfn not found" in msg
    assert "$PFN_LIBRARY: not set" in msg
    assert "the build tree: this package is installed" in msg
    assert "pkg-config: no pfn.pc" in msg
    assert "the system loader: libpfn.so.0" in msg
    assert "make lib" in msg


def test_found_through_pkg_config_libdir(tmp_path):
    libdir = tmp_path / "prefix" / "lib"
    libdir.mkdir(parents=True)
    shutil.copy(pfn.library_file(), libdir / "libpfn.so.0")
    site = installed_copy(tmp_path)
    r = run_installed(site, "import pfn; print(pfn.library_file()); print(pfn.version())",
                      PKG_CONFIG=fake_pkg_config(tmp_path, libdir))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(libdir / "libpfn.so.0"), cargo_version()]


def test_found_through_the_system_loader(tmp_path):
    libdir = tmp_path / "loader"
    libdir.mkdir()
    shutil.copy(pfn.library_file(), libdir / "libpfn.so.0")
    site = installed_copy(tmp_path)
    r = run_installed(site, "import pfn; print(pfn.library_file())",
                      PKG_CONFIG=fake_pkg_config(tmp_path, None), LD_LIBRARY_PATH=str(libdir))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(libdir / "libpfn.so.0")


def test_found_in_the_build_tree():
    """The source-tree package (PYTHONPATH=python) finds target/release/ by itself."""
    env = {k: v for k, v in os.environ.items() if k != "PFN_LIBRARY"}
    env["PYTHONPATH"] = os.path.join(TOP, "python")
    r = subprocess.run([sys.executable, "-c", "import pfn; print(pfn.library_file())"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == os.path.realpath(os.path.join(TOP, "target/release/libpfn.so"))


# ---- help()

def public_members():
    for name in pfn.__all__:
        obj = getattr(pfn, name)
        if inspect.isclass(obj):
            yield name, obj
            for attr, member in inspect.getmembers(obj):
                if attr.startswith("_") and attr != "__init__":
                    continue
                if attr == "__init__" and member is object.__init__:
                    continue
                if callable(member) or isinstance(member, property):
                    yield f"{name}.{attr}", member
        elif callable(obj):
            yield name, obj


def test_every_public_name_has_a_docstring():
    missing = [name for name, obj in public_members() if not (obj.__doc__ or "").strip()]
    assert not missing, f"no docstring: {missing}"
    named = {name for name, _ in public_members()}
    for name in ("Device.__init__", "Device.unregister", "Device.close", "Pfn.from_pfn",
                 "Pfn.from_phys", "version", "PmemFile.addr", "PmemFile.size",
                 "PmemFile.close", "library"):
        assert name in named


def test_help_shows_them():
    text = pydoc.render_doc(pfn.PmemFile)
    assert "The address of the mapping's first byte" in text
    assert "close the Device that registered it first" in text
    assert "Makes bytes offset" in text


# ---- arguments are checked the Python way

def test_wrong_types_are_type_errors_naming_the_argument(path):
    cases = [
        (lambda: pfn.Pfn("5"), "val"),
        (lambda: pfn.Pfn(5.0), "val"),
        (lambda: pfn.Pfn.from_pfn("1"), "pfn"),
        (lambda: pfn.Pfn.from_phys(4096, "1"), "flags"),
        (lambda: pfn.Device(b"pmem0"), "name"),
        (lambda: pfn.PmemFile(3), "path"),
        (lambda: pfn.PmemFile(path, "4096", create=True), "size"),
        (lambda: pfn.kmap("0x1000").__enter__(), "p"),
        (lambda: pfn.kmap(1, length=1.5).__enter__(), "length"),
    ]
    with pfn.Device("types") as dev:
        cases += [
            (lambda: dev.register("1", PAGE, 4096), "start"),
            (lambda: dev.register(PHYS, None, 4096), "size"),
            (lambda: dev.register(PHYS, PAGE, 4096, name=b"x"), "name"),
            (lambda: dev.unregister(1.0), "start"),
        ]
        for fn, arg in cases:
            with pytest.raises(TypeError, match=rf"^{arg} must be"):
                fn()
    assert not os.path.exists(path)


def test_out_of_range_integers_are_value_or_overflow_errors():
    with pytest.raises(ValueError):
        pfn.Pfn(-1)
    with pytest.raises(OverflowError):
        pfn.Pfn(1 << 64)
    with pytest.raises(ValueError):
        pfn.Pfn.from_phys(-4096)  # used to wrap silently to pfn 0xfffffffffffff
    with pytest.raises(OverflowError):
        pfn.Pfn.from_phys(1 << 64)
    with pytest.raises(OverflowError):
        pfn.Pfn.from_pfn(1 << 52)  # used to drop the high bits silently
    with pytest.raises(ValueError, match="FLAGS_MASK"):
        pfn.Pfn.from_pfn(1, flags=5)
    with pytest.raises(ValueError):
        pfn.kmap(-1).__enter__()
    with pytest.raises(ValueError):
        pfn.kmap(1, length=0).__enter__()
    with pfn.Device("ranges") as dev:
        with pytest.raises(ValueError):
            dev.register(-(1 << 20), 1 << 20, 4096)  # used to succeed
        with pytest.raises(ValueError):
            dev.register(PHYS, -PAGE, 4096)
        with pytest.raises(ValueError):
            dev.register(PHYS, 0, 4096)
        with pytest.raises(OverflowError):
            dev.register((1 << 64) - PAGE, 2 * PAGE, 4096)
        with pytest.raises(ValueError):
            dev.unregister(-1)
        with pytest.raises(ValueError, match="NUL"):
            dev.register(PHYS, PAGE, 4096, name="a\0b")
    with pytest.raises(ValueError, match="NUL"):
        pfn.Device("a\0b")
    with pytest.raises(ValueError, match="NUL"):
        pfn.PmemFile("/dev/shm/a\0b")


def test_persist_arguments(path):
    with pfn.PmemFile(path, 4 * PAGE, create=True) as m:
        with pytest.raises(ValueError):
            m.persist(-1)
        with pytest.raises(ValueError):
            m.persist(0, -1)
        with pytest.raises(TypeError, match="^offset"):
            m.persist("0")
        m.persist(PAGE, PAGE)
        m.persist(4 * PAGE)  # nothing left to persist: fine


def test_closed_objects_say_so(path):
    m = pfn.PmemFile(path, PAGE, create=True)
    d = pfn.Device("closed")
    m.close()
    d.close()
    m.close()  # again: nothing
    d.close()
    assert m.closed and d.closed
    for fn in (lambda: m.addr, lambda: m.size, lambda: m.persist(), lambda: m.backed_size,
               lambda: d.register(PHYS, PAGE, 4096), lambda: d.unregister(PHYS)):
        with pytest.raises(ValueError, match="closed"):
            fn()


def test_c_errors_are_oserrors_with_errno(path):
    with pytest.raises(OSError) as e:
        pfn.PmemFile(path, 100, create=True)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(IsADirectoryError):
        pfn.PmemFile("/")
    with pfn.PmemFile(path, 4 * PAGE, create=True) as m, pfn.Device("e") as dev:
        with pytest.raises(OSError) as e:
            dev.register(PHYS + 1, PAGE, m.addr)
        assert e.value.errno == errno.EINVAL
        dev.register(PHYS, m.size, m.addr)
        with pfn.kmap(PHYS >> 12):
            with pytest.raises(OSError, match="holds a kmap") as e:
                dev.close()
            assert e.value.errno == errno.EDEADLK
        assert not dev.closed


# ---- `with` in the wrong order, and release at exit

def test_wrong_nesting_says_what_to_do(path):
    with pytest.raises(OSError) as e:
        with pfn.Device("outer") as dev, pfn.PmemFile(path, 4 * PAGE, create=True) as m:
            dev.register(PHYS, m.size, m.addr)
    assert e.value.errno == errno.EBUSY
    assert "close the Device first" in str(e.value)
    assert "with PmemFile(...) as m, Device(...) as dev:" in str(e.value)
    assert dev.closed and not m.closed  # the device closed after the error; m stayed mapped
    m.close()  # now it can


def test_everything_is_released_at_exit(path):
    """A program that closes in the wrong order, and one that never closes, still end with no
    range registered and the file unmapped (checked after pfn's exit handler has run)."""
    code = f"""
        import atexit, ctypes, errno, sys
        def verify():  # registered before pfn's handler, so it runs after it
            lib = pfn.library()
            maps = open("/proc/self/maps").read()
            gone = [not lib.kmap_atomic_pfn_t(pfn.Pfn.from_phys(p)._c()) and
                    ctypes.get_errno() == errno.ENXIO for p in ({PHYS}, {PHYS} + (1 << 30))]
            print("mapped" if {path!r} in maps else "unmapped", gone)
            sys.stdout.flush()
        atexit.register(verify)
        import pfn
        try:
            with pfn.Device("d") as d, pfn.PmemFile({path!r}, 16 * 4096, create=True) as m:
                d.register({PHYS}, m.size, m.addr)
        except OSError:
            pass
        m2 = pfn.PmemFile({path!r})  # never closed
        d2 = pfn.Device("never closed")
        d2.register({PHYS} + (1 << 30), m2.size, m2.addr)
        del m2  # even without a reference
        print("mapped" if {path!r} in open("/proc/self/maps").read() else "unmapped")
    """
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["mapped", "unmapped [True, True]"], r.stdout
