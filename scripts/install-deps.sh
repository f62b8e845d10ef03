#!/usr/bin/env bash
# Installs what the build and the tests need and this machine lacks (Debian packages).
# Safe to run again: it installs nothing when everything is present.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have cc || need+=(gcc)
have c++ || need+=(g++)
have make || need+=(make)
have git || need+=(git)
have pkg-config || need+=(pkg-config)
have valgrind || need+=(valgrind)
# The benchmark's peers, so that `make test` checks every contender returns correct addresses.
pkg() { have pkg-config && pkg-config --exists "$1"; }
pkg liburcu-memb || need+=(liburcu-dev)
pkg libpmemobj || need+=(libpmemobj-dev)
pkg libpmem || need+=(libpmem-dev)

if ((${#need[@]})); then
    echo "install-deps: installing ${need[*]}"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! python3 -c 'import pytest' 2>/dev/null; then
    echo "install-deps: installing pytest"
    python3 -m pip install -q pytest
fi

if ! have cargo; then
    echo "install-deps: cargo is missing; install a Rust toolchain (rustup) first" >&2
    exit 1
fi
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        rustup component add "$component"
    fi
done
