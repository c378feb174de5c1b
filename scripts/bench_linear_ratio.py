#!/usr/bin/env python3
"""Runs bench_cpu_linear and prints encore linear / raw oneDNN matmul throughput per shape.

Each shape's two benchmarks run back to back in one process (filter per shape), and the whole
sweep is repeated --rounds times; the best GFLOP/s of each side is kept. On a shared machine the
best of several interleaved runs is the least disturbed estimate of what each side can do.

    scripts/bench_linear_ratio.py build/benchmarks/bench_cpu_linear [--rounds 3] [--min-time 0.2]
        [--pair BM_LinearBf16:BM_OneDnnMatmulBf16] [--markdown]

Python 3 standard library only.
"""
import argparse
import json
import re
import subprocess
import sys

SHAPES = [(m, k, n) for m in (1, 16, 197, 1024) for (k, n) in ((768, 768), (768, 2304), (768, 3072), (3072, 768))]


def run_shape(binary, ours, theirs, shape, min_time, extra):
    m, k, n = shape
    flt = "^(%s|%s)/%d/%d/%d/" % (re.escape(ours), re.escape(theirs), m, k, n)
    cmd = [binary, "--benchmark_format=json", "--benchmark_filter=" + flt,
           "--benchmark_min_time=%g" % min_time] + extra
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    best = {}
    for b in json.loads(out)["benchmarks"]:
        if b.get("run_type") == "aggregate":
            continue
        name = b["name"].split("/")[0]
        best[name] = max(best.get(name, 0.0), float(b["GFLOPS"]))
    return best.get(ours), best.get(theirs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=0.2)
    ap.add_argument("--pair", default="BM_Linear:BM_OneDnnMatmul", help="OURS:THEIRS benchmark names")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("extra", nargs="*", help="more arguments for the benchmark binary (after --)")
    args = ap.parse_args()
    ours, theirs = args.pair.split(":")

    best = {s: [0.0, 0.0] for s in SHAPES}
    for r in range(args.rounds):
        for s in SHAPES:
            a, b = run_shape(args.binary, ours, theirs, s, args.min_time, args.extra)
            if a is None or b is None:
                sys.exit("no result for %s / %s at %s" % (ours, theirs, s))
            best[s][0] = max(best[s][0], a)
            best[s][1] = max(best[s][1], b)
        print("round %d/%d done" % (r + 1, args.rounds), file=sys.stderr)

    if args.markdown:
        print("| M | K | N | encore GFLOP/s | oneDNN GFLOP/s | ratio |")
        print("|---:|---:|---:|---:|---:|---:|")
    else:
        print("%6s %6s %6s %12s %12s %7s" % ("M", "K", "N", ours, theirs, "ratio"))
    worst = None
    for (m, k, n) in SHAPES:
        a, b = best[(m, k, n)]
        ratio = a / b if b else float("nan")
        if m >= 16:
            worst = ratio if worst is None else min(worst, ratio)
        if args.markdown:
            print("| %d | %d | %d | %.1f | %.1f | %.3f |" % (m, k, n, a, b, ratio))
        else:
            print("%6d %6d %6d %12.1f %12.1f %7.3f" % (m, k, n, a, b, ratio))
    if worst is not None:
        print("\nworst ratio for M >= 16: %.3f (target >= 0.95)" % worst)


if __name__ == "__main__":
    main()
