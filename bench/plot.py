"""Plot ns per operation against the number of ranges, one line per contender; and, when the
persistence benchmark ran, libpfn against libpmem per operation (persist.png)."""
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


# ---- persistence: libpfn against libpmem, ns per operation (persist.csv from bench/persist.c)
try:
    with open(f"{out}/persist.csv") as f:
        rows = list(csv.DictReader(f))
except FileNotFoundError:
    rows = []
if rows:
    def label(r):
        n = int(r["bytes"])
        size = f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB" if n >= 1024 else f"{n} B"
        return f"{r['op']}\n{size}"
    fig, ax = plt.subplots(figsize=(10, 5))
    xs = range(len(rows))
    pfn = [float(r["libpfn_ns"]) for r in rows]
    pmem = [float(r["libpmem_ns"]) for r in rows]
    ax.bar([x - 0.2 for x in xs], pfn, 0.4, label="libpfn", color="tab:blue")
    if any(pmem):
        ax.bar([x + 0.2 for x in xs], pmem, 0.4, label="libpmem", color="tab:green")
    for x, r in zip(xs, rows):
        ratio = float(r["libpmem_over_libpfn"])
        if ratio:
            ax.annotate(f"{ratio:.2f}x", (x, max(pfn[x], pmem[x])), ha="center", va="bottom",
                        fontsize=8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([label(r) for r in rows], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("ns per operation (median; label: libpmem / libpfn)")
    ax.set_title("Persistence on one /dev/shm mapping, both flushing (CLWB / non-temporal stores)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(f"{out}/persist.png", dpi=110)
    print(f"plot: {out}/persist.png")
