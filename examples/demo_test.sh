#!/usr/bin/env bash
# The demo never destroys data: it creates its own file (and removes it unless --keep), reuses
# only a demo pool it kept, and refuses any other existing file untouched.
set -uo pipefail
demo=$1
dir=$(mktemp -d "${PFN_TEST_DIR:-/dev/shm}/libpfn-demo-test.XXXXXX")
trap 'rm -rf "$dir"' EXIT
passed=0 failed=0
check() { # what, then a command that must succeed
    local what=$1
    shift
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "demo_test: FAILED: $what"; fi
}
state() { if [ -f "$1" ]; then sha256sum < "$1"; elif [ -e "$1" ]; then ls -ld "$1"; ls -lA "$1"; else echo absent; fi; }
# The demo on `$2` must fail, say `$1`, and leave `$2` as it was.
refuses() {
    local want=$1 file=$2 before after out rc
    before=$(state "$file")
    out=$("$demo" "$file" 2>&1)
    rc=$?
    after=$(state "$file")
    [ "$rc" = 1 ] && [[ "$out" == *"$want"* ]] && [ "$before" = "$after" ] ||
        { echo "demo_test: rc $rc, output: $out"; return 1; }
}
runs_ok() { "$demo" "$@" > "$dir/out" 2>&1 && grep -qx ok "$dir/out" || { cat "$dir/out"; return 1; }; }

check "a run on a new path" runs_ok "$dir/new.pmem"
check "removes the file it created" [ ! -e "$dir/new.pmem" ]
check "a run with --keep" runs_ok --keep "$dir/kept.pmem"
check "keeps it" [ -f "$dir/kept.pmem" ]
check "a second run reuses the kept pool" runs_ok "$dir/kept.pmem"
check "it said so" grep -q "reusing the demo pool" "$dir/out"
check "and kept it (this run did not create it)" [ -f "$dir/kept.pmem" ]

head -c 5000 /dev/urandom > "$dir/odd"
check "a 5000-byte file" refuses "not a demo pool" "$dir/odd"
head -c 1048576 /dev/urandom > "$dir/same-size"
check "a foreign file of the pool's size" refuses "not a demo pool" "$dir/same-size"
check "a directory" refuses "not a regular file" "$dir"
ln -s "$dir/same-size" "$dir/link"
check "a symlink to a foreign file" refuses "not a regular file" "$dir/link"
check "bad usage" bash -c '"$1" --bogus >/dev/null 2>&1; [ $? = 2 ]' _ "$demo"

echo "demo_test: $passed passed, $failed failed"
[ "$failed" = 0 ]
