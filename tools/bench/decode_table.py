#!/usr/bin/env python3
"""Merges bench_cuda_decode_attention's JSON (--benchmark_format=json) with sdpa_decode.py's JSON
lines into the markdown table of docs/benchmarks/decode_attention.md.

Per case: KV MB, the read-only ceiling (TB/s), `automatic` (us and the strategy it ran), lean (us,
TB/s, fraction of the ceiling), plain, the best split (and its s), torch SDPA flash and cuDNN (us),
lean / best split, automatic / the fastest of ours (lean, plain, every split), and the best SDPA
time over lean's and over automatic's (> 1: ours is faster). Standard library only.

    python3 tools/bench/decode_table.py ours.json sdpa.jsonl > table.md
"""
import argparse
import json
import math
import sys


def load_ours(path):
    with open(path) as f:
        data = json.load(f)
    cases = {}
    for b in data.get("benchmarks", []):
        parts = b.get("name", "").split("/")
        if len(parts) < 3 or parts[0] != "decode":
            continue
        if b.get("run_type", "iteration") != "iteration":
            continue  # --benchmark_repetitions aggregates (mean, median, stddev): the runs are enough
        case, variant = parts[1], parts[2]
        entry = cases.setdefault(case, {"order": len(cases)})
        if b.get("error_occurred"):
            entry[variant] = {"error": b.get("error_message", "error")}
            continue
        entry.setdefault(variant, {"runs": []})["runs"].append(dict(b, us=b["real_time"]))  # manual time, us
    for entry in cases.values():  # repeated runs of a variant (--benchmark_repetitions): the median run
        for variant, v in entry.items():
            if isinstance(v, dict) and "runs" in v:
                runs = sorted(v["runs"], key=lambda r: r["us"])
                entry[variant] = runs[(len(runs) - 1) // 2]
    return cases, data.get("context", {})


def load_sdpa(path):
    out = {}
    if not path:
        return out
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                r = json.loads(line)
                out.setdefault(r["key"], {})[r["backend"]] = r
    return out


STRATEGY = {1: "plain", 2: "split", 3: "lean"}  # encore::DecodeStrategy values


def fmt(x, digits=1):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ours")
    ap.add_argument("sdpa", nargs="?")
    args = ap.parse_args()
    cases, ctx = load_ours(args.ours)
    sdpa = load_sdpa(args.sdpa)

    w = sys.stdout.write
    w("| case | KV MB | ceiling TB/s | auto µs (ran) | lean µs | lean TB/s | lean % ceil | plain µs "
      "| best split µs (s) | SDPA flash µs | SDPA cuDNN µs | lean / best split | auto / fastest ours "
      "| best SDPA / lean | best SDPA / auto |\n")
    w("|" + "---|" * 15 + "\n")
    worst_vs_split, wins, total = 0.0, 0, 0
    auto_ratios, auto_wins, auto_total = [], 0, 0
    for case, e in sorted(cases.items(), key=lambda kv: kv[1]["order"]):
        lean, plain, stream = e.get("lean", {}), e.get("plain", {}), e.get("stream", {})
        kv_mb = lean.get("kv_MB") or stream.get("kv_MB") or e.get("auto", {}).get("kv_MB")
        splits = [(v["us"], v.get("splits", 0), n) for n, v in e.items()
                  if isinstance(v, dict) and n.startswith("split") and "us" in v]
        best_split = min(splits) if splits else None
        s = sdpa.get(case, {})
        flash = s.get("flash", {}).get("us")
        cudnn = s.get("cudnn", {}).get("us")
        sdpa_best = min([x for x in (flash, cudnn) if x is not None], default=None)
        lean_us = lean.get("us")
        vs_split = lean_us / best_split[0] if lean_us and best_split else None
        vs_sdpa = sdpa_best / lean_us if lean_us and sdpa_best else None
        auto = e.get("auto", {})
        auto_us = auto.get("us")
        ours = [x for x in [lean_us, plain.get("us")] + [v[0] for v in splits] if x]
        auto_vs_fastest = auto_us / min(ours) if auto_us and ours else None
        auto_vs_sdpa = sdpa_best / auto_us if auto_us and sdpa_best else None
        if auto_vs_fastest:
            auto_ratios.append(auto_vs_fastest)
        if auto_vs_sdpa:
            auto_total += 1
            auto_wins += auto_vs_sdpa >= 1.0
        ran = STRATEGY.get(int(auto["strategy"]), "?") if "strategy" in auto else None
        auto_txt = f"{fmt(auto_us)} ({ran})" if auto_us and ran else fmt(auto_us)
        if vs_split:
            worst_vs_split = max(worst_vs_split, vs_split)
        if vs_sdpa:
            total += 1
            wins += vs_sdpa >= 1.0
        split_txt = f"{fmt(best_split[0])} ({int(best_split[1])})" if best_split else "–"
        w(f"| {case} | {fmt(kv_mb)} | {fmt(stream.get('ceiling_TB/s'), 2)} | {auto_txt} | {fmt(lean_us)} | "
          f"{fmt(lean.get('TB/s'), 2)} | {fmt(100 * lean['frac_ceiling'] if 'frac_ceiling' in lean else None, 0)} | "
          f"{fmt(plain.get('us'))} | {split_txt} | {fmt(flash)} | {fmt(cudnn)} | {fmt(vs_split, 2)} | "
          f"{fmt(auto_vs_fastest, 2)} | {fmt(vs_sdpa, 2)} | {fmt(auto_vs_sdpa, 2)} |\n")
    w("\n")
    if total:
        w(f"Lean is at least as fast as the best SDPA backend in {wins} of {total} cases. ")
    if worst_vs_split:
        w(f"Worst lean / best fixed split: {worst_vs_split:.2f} (target <= 1.05).\n")
    if auto_ratios:
        near = sum(r <= 1.05 for r in auto_ratios)
        w(f"Automatic is within 5 % of the fastest of ours in {near} of {len(auto_ratios)} cases "
          f"(worst {max(auto_ratios):.2f}x the fastest).\n")
    if auto_total:
        w(f"Automatic is at least as fast as the best SDPA backend in {auto_wins} of {auto_total} cases.\n")
    dev = ctx.get("host_name", "")
    if dev:
        w(f"\nHost: {dev}; date {ctx.get('date', '')}.\n")


if __name__ == "__main__":
    main()
