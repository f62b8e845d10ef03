#!/usr/bin/env bash
# Draws bench/results/translate.png from translate.csv (needs python3 with matplotlib).
set -euo pipefail
dir=${1:-bench/results}
if ! python3 -c 'import matplotlib' 2>/dev/null; then
    echo "plot: matplotlib is not installed (pip install matplotlib): $dir/translate.png not drawn"
    exit 0
fi
python3 "$(dirname "$0")/plot.py" "$dir"
