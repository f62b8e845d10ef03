#!/usr/bin/env bash
# Installs what a make target needs and this machine lacks, and nothing more.
#
#   install-deps.sh demo   a C compiler, make and Rust: all `make demo` needs
#   install-deps.sh test   also what `make test` runs: c++, pkg-config, valgrind, git, the
#                          benchmark's peers (liburcu-dev, libpmemobj-dev, libpmem-dev), python3 with a
#                          project-local virtual environment (build/venv) holding pytest,
#                          rustfmt and clippy, and the Rust of Cargo.toml's rust-version
#
# Safe to run again: it installs nothing when everything is present. Debian packages come from
# apt-get (as root, or through sudo), shown as they install; pytest goes into build/venv, never
# into the system's Python. Rust itself is never installed here. Whatever cannot be installed
# is named in one line each, with how to get it, and the script fails.
set -euo pipefail
mode=${1:-test}
case "$mode" in demo | test) ;; *) echo "usage: $0 demo|test" >&2; exit 2 ;; esac
top=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$top/build}
have() { command -v "$1" >/dev/null 2>&1; }
say() { echo "install-deps: $*"; }
debs=()     # Debian packages to install
problems=() # what cannot be installed here, one line each

# ---- Rust: a toolchain at least as new as rust-version (the user's choice how to get one)
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$top/Cargo.toml" | head -n 1)
older() { # is version $1 older than $2?
    [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n 1)" = "$1" ]
}
if ! have cargo || ! have rustc; then
    problems+=("no Rust toolchain (cargo and rustc): install one with rustup, https://rustup.rs (Debian 12's own cargo is too old: libpfn needs Rust $msrv)")
else
    rustc_version=$(rustc --version 2>/dev/null | sed -n 's/^rustc \([0-9][0-9.]*\).*/\1/p' || true)
    if [ -z "$rustc_version" ] || older "$rustc_version" "$msrv"; then
        problems+=("rustc ${rustc_version:-of unknown version} is older than the Rust $msrv libpfn needs: update it (rustup update), or install rustup: https://rustup.rs")
    fi
fi

# ---- the C side
have cc || debs+=(gcc libc6-dev)
have make || debs+=(make)
if [ "$mode" = test ]; then
    have c++ || debs+=(g++)
    have git || debs+=(git)
    have pkg-config || debs+=(pkg-config)
    have valgrind || debs+=(valgrind)
    # The benchmark's peers, so that `make test` checks every contender returns correct addresses.
    pkg() { have pkg-config && pkg-config --exists "$1"; }
    pkg liburcu-memb || debs+=(liburcu-dev)
    pkg libpmemobj || debs+=(libpmemobj-dev)
    pkg libpmem || debs+=(libpmem-dev)
    have python3 || debs+=(python3)
    # Debian's python3 lacks ensurepip (so venv) until python3-venv is installed.
    if ! have python3 || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        debs+=(python3-venv)
    fi
fi

if ((${#debs[@]})); then
    sudo=""
    if [ "$(id -u)" != 0 ]; then have sudo && sudo=sudo; fi
    if ! have apt-get; then
        problems+=("missing: ${debs[*]} (Debian package names): install them with your system's package manager")
    elif [ "$(id -u)" != 0 ] && [ -z "$sudo" ]; then
        problems+=("missing: ${debs[*]}: install them as root: apt-get install ${debs[*]}")
    else
        say "installing ${debs[*]} with apt-get (this can take a few minutes)"
        if ! { $sudo apt-get update && $sudo env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends "${debs[@]}"; }; then
            problems+=("apt-get could not install ${debs[*]}: install them yourself (apt-get install ${debs[*]})")
        fi
    fi
fi

# ---- test tools that are not Debian packages here
if [ "$mode" = test ] && have cargo; then
    tools=()
    cargo fmt --version >/dev/null 2>&1 || tools+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || tools+=(clippy)
    if ((${#tools[@]})); then
        if have rustup; then
            say "adding ${tools[*]} with rustup"
            rustup component add "${tools[@]}" || problems+=("rustup could not add ${tools[*]}: run rustup component add ${tools[*]}")
        else
            problems+=("cargo fmt / cargo clippy missing (${tools[*]}): with rustup: rustup component add ${tools[*]}; a distro toolchain has them as packages (apt-get install rustfmt rust-clippy)")
        fi
    fi
    # The minimum Rust itself, so that scripts/check-rust-version.py can build with it.
    msrv_toolchain=$msrv
    [[ "$msrv_toolchain" == *.*.* ]] || msrv_toolchain=$msrv.0
    if have rustup && ! rustup run "$msrv_toolchain" rustc --version >/dev/null 2>&1; then
        say "installing Rust $msrv_toolchain (rust-version) with rustup, to check the code builds with it"
        rustup toolchain install "$msrv_toolchain" --profile minimal ||
            say "could not install Rust $msrv_toolchain: rust-version is checked against the lockfile only"
    fi
fi

if [ "$mode" = test ] && have python3 && python3 -c 'import ensurepip, venv' 2>/dev/null; then
    venv=$out/venv
    if ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
        rm -rf "$venv"
        # A pytest that the system already has (python3-pytest) is used as it is.
        site=""
        python3 -c 'import pytest' 2>/dev/null && site=--system-site-packages
        say "creating the project's Python environment $venv"
        python3 -m venv $site "$venv" || problems+=("python3 -m venv $venv failed: install python3-venv (apt-get install python3-venv)")
    fi
    if "$venv/bin/python" -c 'import sys' 2>/dev/null && ! "$venv/bin/python" -c 'import pytest' 2>/dev/null; then
        say "installing pytest into $venv (from PyPI)"
        "$venv/bin/python" -m pip install --disable-pip-version-check pytest ||
            problems+=("could not install pytest into $venv (is PyPI reachable?): apt-get install python3-pytest, then rm -rf $venv and run again")
    fi
fi

if ((${#problems[@]})); then
    for p in "${problems[@]}"; do say "$p" >&2; done
    exit 1
fi
