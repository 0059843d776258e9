"""Plots bench/results/simulate*.json: the line and admissions over time, Redis operations per
second, and the time-to-first-audio distribution. Exits 2 without matplotlib."""
import json
import sys

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit(2)

data = json.load(open(sys.argv[1]))
runs = {"fleet's join rate on the origin": data["runs"]["fleet"]["report"],
        "shipped joins_per_second (5,000)": data["runs"]["shipped"]["report"]}
redis = data.get("redis_ops_per_s") or {}
fig, ((line, admitted), (ops, ttfa)) = plt.subplots(2, 2, figsize=(12, 8))
for (name, r), color in zip(runs.items(), ["tab:blue", "tab:orange"]):
    s = r["series"]
    t = [x["t"] for x in s]
    line.plot(t, [x["waiting"] for x in s], color=color, label=f"{name}: waiting")
    admitted.plot(t, [x["admitted"] for x in s], color=color, label=f"{name}: first audio/s")
    ops.plot(t, [x["door_ops"] + x["round_ops"] for x in s], color=color, label=f"{name}: all")
    ops.plot(t, [x["takes"] for x in s], color=color, linestyle=":", label=f"{name}: numbers taken")
    cdf = r["ttfa_cdf"]
    ttfa.plot([max(ms, 1) / 1000 for _, ms in cdf], [q * 100 for q, _ in cdf], color=color, label=name)
arrivals = runs["fleet's join rate on the origin"]["series"]
admitted.plot([x["t"] for x in arrivals], [x["arrivals"] for x in arrivals], color="grey",
              linestyle="--", label="arrivals/s")
if redis.get("take"):
    ops.axhline(redis["take"], color="red", linestyle="--", label="one Redis: number script (measured)")
line.set(xlabel="s after the push", ylabel="joiners holding a number", title="The waiting line")
admitted.set(xlabel="s after the push", ylabel="per second", title="Arrivals and first audio")
ops.set(xlabel="s after the push", ylabel="operations/s", title="Redis operations")
ttfa.set(xlabel="time to first audio (s, log)", ylabel="% of admitted joiners", xscale="log",
         title="Time to first audio (CDF)")
for ax in (line, admitted, ops, ttfa):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
