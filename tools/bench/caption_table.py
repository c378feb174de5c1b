#!/usr/bin/env python3
"""Markdown tables from `encore-bench caption --json` and `caption_peers.py --json` files.

Rows: engine, device, dtype, batch, beams (same settings grouped, encore first). Several files for
the same engine and settings (repeated runs) are merged: their per-iteration samples are pooled and
the percentiles recomputed. Columns: p50 and p90 total latency, tokens/s (batch x new tokens / p50),
peak memory, and the ratio of each engine's p50 to encore's p50 for the same settings (> 1: encore
is faster). Peak memory is the median over the merged runs (CPU: the process's peak RSS, weights
included; CUDA torch: max_memory_allocated). A second table shows encore's decode steps against their memory floor when present.

Usage: python3 tools/bench/caption_table.py results/*.json > table.md
"""
import argparse
import json
import sys

ENGINE_ORDER = {"encore": 0, "torch": 1, "ort": 2}
MIB = 1024.0 * 1024.0


def percentile(values, q):
    """Linear interpolation between order statistics (numpy's default, as encore-bench)."""
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def load(paths):
    runs = []
    for path in paths:
        try:
            with open(path) as f:
                r = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            sys.exit(f"caption_table: cannot read {path}: {e}")
        missing = [k for k in ("engine", "device", "dtype", "batch", "beams", "new_tokens", "total_ms") if k not in r]
        if missing:
            sys.exit(f"caption_table: {path} lacks {', '.join(missing)} (not a caption benchmark JSON?)")
        runs.append(r)
    return runs


def settings(r):
    return (r["device"], r["dtype"], r["batch"], r["beams"], r["new_tokens"])


def merge(runs):
    """One row per (engine, settings): pooled samples, median peak memory, the union of the notes."""
    rows = {}
    for r in runs:
        key = (r["engine"], settings(r))
        row = rows.setdefault(key, {"engine": r["engine"], "settings": settings(r), "samples": [], "peaks": [],
                                    "notes": set(), "runs": []})
        row["samples"] += r["total_ms"]
        row["peaks"].append(r.get("peak_mem_bytes", 0))
        row["notes"].update(r.get("notes", []))
        row["runs"].append(r)
    for row in rows.values():
        s = row["samples"]
        _, _, batch, _, new_tokens = row["settings"]
        row["p50"], row["p90"] = percentile(s, 0.5), percentile(s, 0.9)
        row["peak"] = percentile(row["peaks"], 0.5)
        row["tokens_per_s"] = batch * new_tokens / (row["p50"] / 1e3)
    return rows


def sort_key(row):
    device, dtype, batch, beams, new_tokens = row["settings"]
    return (device, dtype, new_tokens, batch, beams, ENGINE_ORDER.get(row["engine"], 9), row["engine"])


def main_table(rows):
    out = ["| engine | device | dtype | batch | beams | p50 ms | p90 ms | tokens/s | peak mem MiB | p50 / encore p50 | samples |",
           "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in sorted(rows.values(), key=sort_key):
        device, dtype, batch, beams, _ = row["settings"]
        encore = rows.get(("encore", row["settings"]))
        ratio = f"{row['p50'] / encore['p50']:.2f}" if encore else "n/a"
        engine = row["engine"] + (" *" if row["notes"] else "")
        out.append(f"| {engine} | {device} | {dtype} | {batch} | {beams} | {row['p50']:.1f} | {row['p90']:.1f} | "
                   f"{row['tokens_per_s']:.1f} | {row['peak'] / MIB:.0f} | {ratio} | {len(row['samples'])} |")
    return out


def floor_table(rows):
    encore = [row for row in sorted(rows.values(), key=sort_key) if row["engine"] == "encore"]
    encore = [row for row in encore if any("floor" in r for r in row["runs"])]
    if not encore:
        return []
    out = ["", "| encore | batch | beams | encode p50 ms | decode step ms | floor ms | step / floor | bandwidth GB/s |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in encore:
        device, dtype, batch, beams, new_tokens = row["settings"]
        runs = [r for r in row["runs"] if "floor" in r]
        encode = percentile([x for r in runs for x in r["encode_ms"]], 0.5)
        step = percentile([x for r in runs for x in r["decode_ms"]], 0.5) / new_tokens
        floor = percentile([r["floor"]["floor_ms"] for r in runs], 0.5)
        bandwidth = percentile([r["floor"]["read_bandwidth_bytes_per_s"] for r in runs], 0.5)
        out.append(f"| {device} {dtype} | {batch} | {beams} | {encode:.1f} | {step:.2f} | {floor:.2f} | "
                   f"{step / floor:.2f} | {bandwidth / 1e9:.1f} |")
    return out


def notes(rows):
    collected = sorted({(row["engine"], n) for row in rows.values() for n in row["notes"]})
    return [""] + [f"\\* {engine}: {note}" for engine, note in collected] if collected else []


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="+", help="result files from encore-bench caption / caption_peers.py")
    args = ap.parse_args()
    rows = merge(load(args.json))
    print("\n".join(main_table(rows) + floor_table(rows) + notes(rows)))


if __name__ == "__main__":
    main()
