#!/usr/bin/env bash
# `make demo` needs a C compiler, make and Rust, and nothing else: run it with a PATH that
# holds only those and a stock system's basic commands (no pip, python, valgrind, pkg-config,
# git, apt-get, sudo, c++). Then take the compiler, then Rust away, and fake a Rust that is too
# old: each time the demo must stop at its dependency check with one line that says what is
# missing and how to get it.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/libpfn-demo-deps.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
check() { # what, then a command that must succeed
    local what=$1
    shift
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "demo-deps: FAILED: $what"; fi
}

# What every Debian/Ubuntu system has (the Essential packages' commands the build uses).
basics="sh bash env cat cp mv rm ln mkdir rmdir ls chmod touch test [ printf echo true false
        sed grep head tail sort uniq tr cut wc id uname dirname basename readlink realpath
        mktemp date sleep find xargs expr"
toolchain_c="cc as ld"       # a C compiler (gcc, clang: cc, and binutils' as and ld)
toolchain_rust="cargo rustc" # Rust (rustup's proxies or a distro's)

make_bin() { # dir, then the commands to link into it
    local dir=$1 cmd path
    shift
    mkdir -p "$dir"
    for cmd in "$@"; do
        path=$(type -P "$cmd") || continue # the file, also for shell builtins (printf, test)
        ln -sf "$path" "$dir/$cmd"
    done
}
# Runs `make demo` in a clean environment: PATH, a name for the output file, make's options.
# (-W: as if those sources had changed, so that cargo and cc run with this PATH too.)
run_demo() {
    local path=$1 name=$2
    shift 2
    env -i HOME="$HOME" PATH="$path" ${RUSTUP_HOME:+RUSTUP_HOME="$RUSTUP_HOME"} \
        ${CARGO_HOME:+CARGO_HOME="$CARGO_HOME"} ${RUSTUP_TOOLCHAIN:+RUSTUP_TOOLCHAIN="$RUSTUP_TOOLCHAIN"} \
        LANG=C "$(command -v make)" -C "$top" --no-print-directory "$@" demo PMEM_FILE="$tmp/demo.pmem" \
        > "$tmp/$name.out" 2>&1
}
fails() { ! "$@"; }
absent() { (PATH=$1; ! command -v "$2" >/dev/null); }
shows() { grep -q -- "$2" "$tmp/$1.out" || { echo "demo-deps: $1: wanted \"$2\" in:"; cat "$tmp/$1.out"; return 1; }; }

make_bin "$tmp/full" $basics make $toolchain_c $toolchain_rust
for tool in pip pip3 python3 valgrind pkg-config git apt-get sudo c++; do
    check "$tool is absent from the restricted PATH" absent "$tmp/full" "$tool"
done
check "make demo passes with only cc, make and Rust" run_demo "$tmp/full" full -W build.rs -W examples/demo.c
check "cargo ran" shows full 'CARGO'
check "cc ran" shows full 'CC *build/demo'
check "the demo ran to its end" shows full '^ok$'
check "and removed its file" [ ! -e "$tmp/demo.pmem" ]
check "installed nothing" fails grep -q installing "$tmp/full.out"

make_bin "$tmp/no-cc" $basics make $toolchain_rust
check "without a C compiler, make demo fails" fails run_demo "$tmp/no-cc" no-cc
check "and says what is missing" shows no-cc 'install-deps: missing: gcc'
check "in one line" test "$(grep -c 'install-deps:' "$tmp/no-cc.out")" = 1

make_bin "$tmp/no-rust" $basics make $toolchain_c
check "without Rust, make demo fails" fails run_demo "$tmp/no-rust" no-rust
check "and says how to get it" shows no-rust 'install-deps: no Rust toolchain.*https://rustup.rs'

make_bin "$tmp/old-rust" $basics make $toolchain_c
printf '#!/bin/sh\necho "rustc 1.63.0"\n' > "$tmp/old-rust/rustc"
printf '#!/bin/sh\necho "cargo 1.65.0"\n' > "$tmp/old-rust/cargo"
chmod +x "$tmp/old-rust/rustc" "$tmp/old-rust/cargo"
check "with a Rust older than rust-version, make demo fails" fails run_demo "$tmp/old-rust" old-rust
check "and says so" shows old-rust 'install-deps: rustc 1.63.0 is older than the Rust'

echo "demo-deps: $passed passed, $failed failed"
[ "$failed" = 0 ]
