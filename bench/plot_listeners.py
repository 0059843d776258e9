"""Plots bench/results/listeners-vs-icecast*.json: listeners vs server CPU and vs late frames."""
import json
import sys

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit(2)

rows = json.load(open(sys.argv[1]))
fig, (cpu, late) = plt.subplots(1, 2, figsize=(11, 4.2))
for cfg in sorted({r["config"] for r in rows}):
    pts = sorted((r["n"], r["server_cpu_percent"], r["late_percent"]) for r in rows if r["config"] == cfg)
    xs = [p[0] for p in pts]
    cpu.plot(xs, [p[1] for p in pts], marker="o", label=cfg)
    late.plot(xs, [p[2] for p in pts], marker="o", label=cfg)
cpu.set(xlabel="listeners", ylabel="server CPU (% of one core)", title="Server CPU")
late.set(xlabel="listeners", ylabel="late frames (%)", title="Late frames (> 500 ms)")
for ax in (cpu, late):
    ax.grid(alpha=0.3)
    ax.legend()
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
