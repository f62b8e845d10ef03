#!/usr/bin/env bash
# Instructions per call of libpfn's and libpmem's persistence primitives, from valgrind's
# callgrind, counted only inside the timed loop (the benchmark toggles collection around it;
# the loop's own bookkeeping, the same for both, is included). Under valgrind both libraries
# see valgrind's CPU: AVX2 and CLFLUSH, no AVX-512, CLWB or CLFLUSHOPT.
# usage: callgrind_persist.sh PERSIST_BINARY RESULTS_DIR
set -euo pipefail
bench=$1 out=$2
if ! command -v valgrind >/dev/null; then
    echo "callgrind: valgrind is not installed (apt-get install valgrind): instruction counts skipped"
    exit 0
fi
iters=20000
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
count() { # op side bytes -> instructions per call, or "-" when the side is not built in
    PFN_FORCE_GRANULARITY=cache_line PMEM_IS_PMEM_FORCE=1 valgrind --tool=callgrind \
        --collect-atstart=no --callgrind-out-file="$tmp/cg.out" \
        "$bench" --count "$1" "$2" "$3" "$iters" >/dev/null 2>"$tmp/err" || { echo -; return; }
    awk -v n="$iters" '/^summary:/ { printf "%.1f", $2 / n }' "$tmp/cg.out"
}
csv="$out/persist_callgrind.csv"
echo "op,bytes,libpfn,libpmem" > "$csv"
printf '\nInstructions per call (callgrind, %d calls, loop included)\n' "$iters"
printf '%-16s %8s %10s %10s\n' operation bytes libpfn libpmem
for spec in memcpy:64 memcpy:256 memcpy:4096 memset:4096 persist:64 persist:4096; do
    op=${spec%%:*} bytes=${spec##*:}
    a=$(count "$op" pfn "$bytes")
    b=$(count "$op" pmem "$bytes")
    printf '%-16s %8s %10s %10s\n' "$op" "$bytes" "$a" "$b"
    echo "$op,$bytes,$a,$b" >> "$csv"
done
