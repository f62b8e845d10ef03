#!/usr/bin/env bash
# Draws bench/results/translate.png from translate.csv, and persist.png from persist.csv when
# it exists (needs a python3 with matplotlib: the one on PATH, else the system's).
set -euo pipefail
dir=${1:-bench/results}
for py in python3 /usr/bin/python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import matplotlib' 2>/dev/null; then
        exec "$py" "$(dirname "$0")/plot.py" "$dir"
    fi
done
echo "plot: matplotlib is not installed (apt-get install python3-matplotlib): plots not drawn in $dir"
