#!/usr/bin/env python3
"""Torch SDPA decode attention, side by side with benchmarks/bench_cuda_decode_attention.

Times torch.nn.functional.scaled_dot_product_attention under sdpa_kernel(FLASH_ATTENTION) and
sdpa_kernel(CUDNN_ATTENTION), bf16, q [B, Hq, 1, D], K/V [B, Hkv, L, D] contiguous (enable_gqa
when Hq != Hkv), as CUDA-graph replays: the graph holds one call per KV copy (copies rotate so
that at least 200 MB is touched: caches smaller than L2 would otherwise be timed from L2, as in
our benchmark), replayed at least --replays times; the per-call time is the median replay over
the calls in it. Prints one JSON line per (case, backend); a backend that refuses a case prints an
"error" field instead of a time.

Cases: the quick matrix of our benchmark (uniform lengths only: SDPA has no paged/ragged decode),
or the keys found in --keys-from (e.g. the output of `bench_cuda_decode_attention
--benchmark_list_tests`), narrowed by --filter. Needs only torch and a CUDA GPU.
"""
import argparse
import json
import math
import re
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

KEY_RE = re.compile(r"B(\d+)_H(\d+)x(\d+)_D(\d+)_L(\d+)")


def quick_cases():
    """The uniform cases of quick_cases() in benchmarks/bench_cuda_decode_attention.cpp."""
    c = []
    c += [(1, 1, 1, 128, L) for L in (16384, 262144)]
    c += [(1, 8, 8, 128, L) for L in (16384, 65536, 131072, 262144)]
    c += [(2, 4, 4, 128, 131072)]
    c += [(1, 32, 32, 128, L) for L in (8192, 16384, 65536, 262144)]
    c += [(8, 32, 32, 128, 8192), (16, 32, 32, 128, 32768), (64, 32, 32, 128, 4096)]
    c += [(1, 12, 12, 64, L) for L in (1024, 4096)]
    c += [(4, 12, 12, 64, 1024), (16, 12, 12, 64, 2048)]
    c += [(B, 32, 8, 128, L) for B in (1, 8) for L in (32768, 131072)]
    c += [(1, 32, 8, 128, 4097)]
    c += [(B, 64, 8, 128, L) for B in (1, 4) for L in (8192, 131072)]
    c += [(1, 8, 1, 128, L) for L in (1000, 4096, 16768, 17024, 32768, 131071, 131072, 524288)]
    c += [(4, 8, 1, 128, 65536)]
    c += [(B, 16, 16, 64, L) for B in (1, 16) for L in (4096, 32768)]
    return c


def key(B, Hq, Hkv, D, L):
    return f"B{B}_H{Hq}x{Hkv}_D{D}_L{L}"


def time_case(B, Hq, Hkv, D, L, backend, min_replays):
    dev = torch.device("cuda")
    kv_bytes = 2 * B * Hkv * L * D * 2
    copies = int(min(20, max(1, math.ceil(200e6 / kv_bytes))))
    q = torch.randn(B, Hq, 1, D, dtype=torch.bfloat16, device=dev)
    ks = [torch.randn(B, Hkv, L, D, dtype=torch.bfloat16, device=dev) for _ in range(copies)]
    vs = [torch.randn(B, Hkv, L, D, dtype=torch.bfloat16, device=dev) for _ in range(copies)]
    gqa = Hq != Hkv

    def call(i):
        return F.scaled_dot_product_attention(q, ks[i], vs[i], enable_gqa=gqa)

    with sdpa_kernel(backend):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the capture (workspace, autotuning)
            for i in range(copies):
                call(i)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outs = [call(i) for i in range(copies)]
    del outs

    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def replay():
        start.record()
        graph.replay()
        stop.record()
        stop.synchronize()
        return start.elapsed_time(stop) * 1e-3  # seconds

    replay()
    times = sorted(replay() for _ in range(min_replays))
    per_call = times[len(times) // 2] / copies
    del graph, ks, vs, q
    torch.cuda.empty_cache()
    return per_call, kv_bytes, copies


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="flash,cudnn", help="comma list of flash, cudnn")
    ap.add_argument("--keys-from", help="file whose lines contain case keys (B.._H..x.._D.._L..); '-' = stdin")
    ap.add_argument("--filter", default="", help="regex on the case key")
    ap.add_argument("--replays", type=int, default=200, help="graph replays per case (median)")
    ap.add_argument("--max-gb", type=float, default=40.0, help="skip cases whose KV (all copies) exceeds this")
    args = ap.parse_args()

    if args.keys_from:
        text = sys.stdin.read() if args.keys_from == "-" else open(args.keys_from).read()
        cases = sorted({tuple(int(x) for x in m.groups()) for m in KEY_RE.finditer(text)})
    else:
        cases = quick_cases()
    flt = re.compile(args.filter)
    backends = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}
    props = torch.cuda.get_device_properties(0)
    for B, Hq, Hkv, D, L in cases:
        k = key(B, Hq, Hkv, D, L)
        if not flt.search(k):
            continue
        if 2 * B * Hkv * L * D * 2 > args.max_gb * 1e9:
            continue
        for name in args.backends.split(","):
            rec = {"key": k, "B": B, "Hq": Hq, "Hkv": Hkv, "D": D, "L": L, "backend": name,
                   "torch": torch.__version__, "device": props.name}
            try:
                t, kv_bytes, copies = time_case(B, Hq, Hkv, D, L, backends[name], args.replays)
                rec.update(us=t * 1e6, tbps=kv_bytes / t * 1e-12, kv_bytes=kv_bytes, calls_per_graph=copies,
                           replays=args.replays)
            except Exception as e:  # e.g. a backend without GQA support for this shape
                rec["error"] = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
                torch.cuda.empty_cache()
            print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
