#!/usr/bin/env bash
# plog survives restarts: every command is a new process that maps the pool afresh, registers
# it at the physical base stored in it and follows the pfn_t links stored on media. And plog
# never destroys data: only `create` makes a file, and only where none exists; a file that is
# not a pool is refused untouched.
set -uo pipefail
plog=$1
dir=$(mktemp -d "${PFN_TEST_DIR:-/dev/shm}/libpfn-plog-test.XXXXXX")
trap 'rm -rf "$dir"' EXIT
pool="$dir/log.pmem"
passed=0 failed=0
check() { # what, then a command that must succeed
    local what=$1
    shift
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "plog_test: FAILED: $what"; fi
}
# A command that must fail with status 1, print a message naming `$2`, and leave `$3` as it was
# (or absent). `$4...` is the plog command line.
state() { if [ -f "$1" ]; then sha256sum < "$1"; elif [ -e "$1" ]; then ls -ld "$1"; ls -lA "$1"; else echo absent; fi; }
refuses() {
    local want=$1 file=$2 before after out
    shift 2
    before=$(state "$file")
    out=$("$plog" "$@" 2>&1 >/dev/null)
    local rc=$?
    after=$(state "$file")
    [ "$rc" = 1 ] && [[ "$out" == *"$want"* ]] && [ "$before" = "$after" ] ||
        { echo "plog_test: rc $rc, message: $out"; return 1; }
}

check "create" "$plog" "$pool" create
check "append" "$plog" "$pool" append "first record"
check "append two" "$plog" "$pool" append "second" "third, in the same run"
got=$("$plog" "$pool" list)
want=$'1: first record\n2: second\n3: third, in the same run'
check "list reads back every record in order" [ "$got" = "$want" ]

check "create refuses an existing pool" refuses "exists" "$pool" "$pool" create
check "the pool is intact after that" [ "$("$plog" "$pool" list)" = "$want" ]
check "list of a missing file" refuses "No such file" "$dir/missing" "$dir/missing" list
check "append to a missing file" refuses "No such file" "$dir/missing" "$dir/missing" append x
check "nothing was created" [ ! -e "$dir/missing" ]

head -c 5000 /dev/urandom > "$dir/odd"
check "list of a 5000-byte file" refuses "not a plog pool" "$dir/odd" "$dir/odd" list
check "append to a 5000-byte file" refuses "not a plog pool" "$dir/odd" "$dir/odd" append x
head -c 1048576 /dev/urandom > "$dir/random"
check "list of a 1 MiB random file" refuses "not a plog pool" "$dir/random" "$dir/random" list
check "append to a 1 MiB random file" refuses "not a plog pool" "$dir/random" "$dir/random" append x
check "create over a foreign file" refuses "exists" "$dir/random" "$dir/random" create
printf 'LOOPGOLP' > "$dir/bad-sb" # the magic, little-endian, then a zero superblock
head -c 4088 /dev/zero >> "$dir/bad-sb"
check "a pool with an inconsistent superblock" refuses "inconsistent" "$dir/bad-sb" "$dir/bad-sb" append x
check "list of a directory" refuses "not a regular file" "$dir" "$dir" list

echo "plog_test: $passed passed, $failed failed"
[ "$failed" = 0 ]
