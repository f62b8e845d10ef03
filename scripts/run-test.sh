#!/usr/bin/env bash
# Runs one test of `make test`:  run-test.sh NAME COMMAND [ARG...]
#
# The output goes to $OUT/test-logs/NAME.log and is shown only when the test fails (V=1: as
# it runs). The result, PASS or FAIL, goes to $OUT/test-results/NAME, where test-summary.sh
# counts it. A test still running after PFN_TEST_RUN_CAP seconds (default: three times
# PFN_TEST_HANG_SECONDS, or 900) is stopped and fails as hung; the tests' own caps are
# shorter, so this catches what they do not.
set -u
name=$1
shift
out=${OUT:-build}
log=$out/test-logs/$name.log
result=$out/test-results/$name
mkdir -p "$(dirname "$log")" "$(dirname "$result")"
rm -f "$result"
cap=${PFN_TEST_RUN_CAP:-$((3 * ${PFN_TEST_HANG_SECONDS:-300}))}
start=$(date +%s%N)

if [ "${V:-}" = 1 ]; then
    echo "  RUN     $name: $*"
    { timeout -k 10 "$cap" "$@" </dev/null 2>&1; echo "rc=$?" > "$log.rc"; } | tee "$log" &
else
    timeout -k 10 "$cap" "$@" </dev/null > "$log" 2>&1 &
fi
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid; exit 130' INT TERM
wait $pid
rc=$?
if [ "${V:-}" = 1 ]; then rc=$(sed -n 's/^rc=//p' "$log.rc"); rm -f "$log.rc"; fi
secs=$(( ($(date +%s%N) - start) / 100000000 ))
took="$((secs / 10)).$((secs % 10)) s"

if [ "$rc" = 0 ]; then
    echo PASS > "$result"
    printf '  PASS    %s (%s)\n' "$name" "$took"
    exit 0
fi
echo FAIL > "$result"
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    printf '  FAIL    %s: HUNG, stopped after %s s (PFN_TEST_RUN_CAP)\n' "$name" "$cap"
else
    printf '  FAIL    %s (exit status %s, %s)\n' "$name" "$rc" "$took"
fi
if [ "${V:-}" != 1 ]; then
    lines=$(wc -l < "$log")
    [ "$lines" -gt 60 ] && echo "          ... (the last 60 of $lines lines; all in $log)"
    tail -n 60 "$log" | sed 's/^/          /'
fi
exit 0 # the summary counts failures; make goes on to the other tests
