#!/usr/bin/env python3
"""Summarises an A/B run of scripts/gpu-ab.sh or scripts/gpu-ab-carried.sh: reads the Google
Benchmark CSV files LOGS/*-<variant>.csv (one per run of a variant) and prints, per case, the
median real time of every variant, each variant / A, and every run (their spread is the noise).
If LOGS holds sdpa*.jsonl files (tools/bench/sdpa_prefill.py, one per round), their medians
follow, per shape and backend (the memory-efficient backend left out).

Usage: python3 tools/bench/ab_table.py LOGS
"""
import csv
import glob
import json
import os
import statistics
import sys


def main(logs):
    times = {}  # case -> variant -> [real_time]
    for path in sorted(glob.glob(os.path.join(logs, "*-*.csv"))):
        variant = os.path.basename(path)[:-4].rsplit("-", 1)[1]
        with open(path) as f:
            lines = [l for l in f if l.startswith('"') or l.startswith("name,")]
        for row in csv.DictReader(lines):
            if row.get("error_occurred") != "true" and row.get("real_time"):
                times.setdefault(row["name"], {}).setdefault(variant, []).append(float(row["real_time"]))
    names = sorted({v for d in times.values() for v in d})
    others = [v for v in names if v != "A"]
    print("case".ljust(60), *[f"{v:>9}" for v in names], *[f"{v + '/A':>7}" for v in others])
    for case, d in times.items():
        med = {v: statistics.median(x) for v, x in d.items()}
        short = case.replace("BM_CudaAttention/", "").split("/iterations")[0]
        print(short[:60].ljust(60), *[f"{med.get(v, float('nan')):9.2f}" for v in names],
              *[f"{med.get(v, float('nan')) / med['A']:7.3f}" if "A" in med else "      -" for v in others])
        print("   runs:", "; ".join(f"{v} " + " ".join(f"{x:.4g}" for x in d[v]) for v in names if v in d))
    sdpa = {}
    for path in sorted(glob.glob(os.path.join(logs, "sdpa*.jsonl"))):
        for line in open(path):
            d = json.loads(line)
            if "us" in d:
                sdpa.setdefault((d["dtype"], d["B"], d["T"], d["D"], d["backend"]), []).append(d["us"])
    for k, v in sorted(sdpa.items()):
        if k[4] != "efficient":
            print("sdpa %s B %d T %d D %d %-6s median %.2f us, runs %s" % (*k, statistics.median(v), v))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
