#!/usr/bin/env bash
# The Python package as a user gets it: pip-installed into the project's virtual environment
# (build/venv), then the tests run against that copy, from outside the source tree.
#   test-python-installed.sh PYTHON   (the venv's python)
set -euo pipefail
# Absolute, but not resolved: the venv's python is a symlink, and running its target directly
# would leave the venv (and install into the system's Python).
py=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
if ! "$py" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
    echo "test-python-installed: $1 is not a virtual environment's python: refusing to pip install into it"
    exit 1
fi
top=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath "${OUT:-$top/build}")
# A clean copy: setuptools builds in the source directory and would pick up stale files.
src=$out/python-src
rm -rf "$src"
mkdir -p "$src"
cp -r "$top/python/pyproject.toml" "$top/python/README.md" "$top/python/pfn" "$src/"
find "$src" -name __pycache__ -prune -exec rm -rf {} +
PIP_ROOT_USER_ACTION=ignore "$py" -m pip install --disable-pip-version-check --force-reinstall --no-deps "$src"
cd "$out"
PFN_TEST_INSTALLED=1 PFN_LIBRARY="$top/target/release/libpfn.so" \
    "$py" -m pytest -q -p no:cacheprovider "$top/python/tests"
