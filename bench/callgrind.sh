#!/usr/bin/env bash
# Instructions per operation from valgrind's callgrind, counted only inside each contender's
# loop (the bench toggles collection around it): stable on a noisy machine, unlike time.
# usage: callgrind.sh BENCH_BINARY RESULTS_DIR [quick]
set -euo pipefail
bench=$1 out=$2 mode=${3:-}
if ! command -v valgrind >/dev/null; then
    echo "callgrind: valgrind is not installed (apt-get install valgrind): instruction counts skipped"
    exit 0
fi
iters=200000
[ "$mode" = quick ] && iters=50000
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
count() { # contender log2_ranges iters -> instructions
    valgrind --tool=callgrind --collect-atstart=no --callgrind-out-file="$tmp/cg.out" \
        "$bench" --count "$1" "$2" "$3" >/dev/null 2>"$tmp/err" || { echo 0; return; }
    awk '/^summary:/ {print $2}' "$tmp/cg.out"
}
contenders=$("$bench" --list)
csv="$out/callgrind.csv"
echo "contender,ranges,instructions_per_op,minus_raw" > "$csv"
printf '\nInstructions per operation (callgrind; the loop of %d operations only)\n' "$iters"
printf '%8s' ranges
for c in $contenders; do printf ' %14s' "$c"; done
echo
for log2 in 0 4 8 12 16; do
    [ "$mode" = quick ] && [ "$log2" -gt 8 ] && break
    printf '%8d' $((1 << log2))
    raw=""
    for c in $contenders; do
        # the seed's list walk at 2^16 ranges is too slow to count under valgrind at full size
        n=$iters
        [ "$c" = seed ] && [ "$log2" -ge 12 ] && n=200
        ir=$(count "$c" "$log2" "$n")
        per=$(awk -v ir="$ir" -v n="$n" 'BEGIN { printf "%.1f", ir / n }')
        [ -z "$raw" ] && raw=$per
        printf ' %14s' "$per"
        echo "$c,$((1 << log2)),$per,$(awk -v a="$per" -v b="$raw" 'BEGIN { printf "%.1f", a - b }')" >> "$csv"
    done
    echo
done
