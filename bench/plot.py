"""Plot ns per operation against the number of ranges, one line per contender."""
import csv
import platform
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out = sys.argv[1] if len(sys.argv) > 1 else "bench/results"
series = defaultdict(list)
with open(f"{out}/translate.csv") as f:
    for row in csv.DictReader(f):
        series[row["contender"]].append((int(row["ranges"]), float(row["ns_per_op"])))

style = {
    "raw": ("k", ":"), "floor": ("gray", "--"), "libpfn": ("tab:blue", "-"),
    "libpfn_section": ("tab:cyan", "-"), "seed": ("tab:red", "-"),
    "pmemobj_hit": ("tab:green", "-."), "pmemobj_miss": ("tab:olive", "-."),
}
fig, ax = plt.subplots(figsize=(8, 5))
for name, points in series.items():
    points.sort()
    color, line = style.get(name, (None, "-"))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name,
            color=color, linestyle=line)
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xlabel("registered ranges (2 MiB each)")
ax.set_ylabel("ns per operation (translate + read one word + end access)")
ax.set_title(f"libpfn vs the seed's list walk and PMDK ({platform.machine()}, "
             f"{platform.node() or 'this machine'})")
ax.grid(True, which="both", alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(f"{out}/translate.png", dpi=110)
print(f"plot: {out}/translate.png")
