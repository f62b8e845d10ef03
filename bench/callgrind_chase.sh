#!/usr/bin/env bash
# Instructions per hop of each pointer-chasing contender (callgrind, the chase loop only: the
# benchmark toggles collection around it). Stable where time is not.
# usage: callgrind_chase.sh CHASE_BINARY RESULTS_DIR
set -euo pipefail
bin=$1 out=$2
if ! command -v valgrind >/dev/null; then
    echo "callgrind: valgrind is not installed: instruction counts skipped"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
hops=80000
csv="$out/chase_callgrind.csv"
echo "contender,ranges,chains,instructions_per_hop" > "$csv"
printf '\nInstructions per hop (callgrind; 262,144 nodes; the loop only)\n'
printf '%-12s %10s %10s %10s %10s\n' contender "1 range" "16" "256" "(8 chains)"
for c in $("$bin" --list); do
    printf '%-12s' "$c"
    for r in 1 16 256; do
        valgrind --tool=callgrind --collect-atstart=no --callgrind-out-file="$tmp/cg.out" \
            "$bin" --count "$c" 262144 "$r" 8 "$hops" >/dev/null 2>"$tmp/err" || { printf ' %10s' -; continue; }
        per=$(awk -v n="$hops" '/^summary:/ {printf "%.1f", $2 / n}' "$tmp/cg.out")
        printf ' %10s' "$per"
        echo "$c,$r,8,$per" >> "$csv"
    done
    echo
done
