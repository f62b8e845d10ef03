#!/usr/bin/env bash
# test-summary.sh LABEL NAME...: counts the results run-test.sh recorded for these tests and
# prints "LABEL: N passed, M failed" (a test without a result, e.g. one whose build failed,
# counts as failed). Exits 1 when any failed.
set -u
label=$1
shift
out=${OUT:-build}
passed=0 failed=0 names=()
for name in "$@"; do
    if [ "$(cat "$out/test-results/$name" 2>/dev/null)" = PASS ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        names+=("$name")
    fi
done
((failed)) && echo "failed: ${names[*]} (logs in $out/test-logs/)"
echo "$label: $passed passed, $failed failed"
[ "$failed" = 0 ]
