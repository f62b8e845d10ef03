#!/usr/bin/env bash
# plog survives restarts: every command is a new process that maps the pool afresh, registers
# it at the physical base stored in it and follows the pfn_t links stored on media.
set -euo pipefail
plog=$1
dir=${PFN_TEST_DIR:-/dev/shm}
pool="$dir/libpfn-plog-test-$$.pmem"
trap 'rm -f "$pool"' EXIT
"$plog" "$pool" append "first record"
"$plog" "$pool" append "second" "third, in the same run"
got=$("$plog" "$pool" list)
want=$'1: first record\n2: second\n3: third, in the same run'
if [ "$got" != "$want" ]; then
    printf 'plog_test: list printed:\n%s\nwanted:\n%s\n' "$got" "$want"
    echo "plog_test: 0 passed, 1 failed"
    exit 1
fi
echo "plog_test: 1 passed, 0 failed"
