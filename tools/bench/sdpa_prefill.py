#!/usr/bin/env python3
"""Times torch scaled_dot_product_attention (flash, cuDNN, memory-efficient backends) at the
prefill/encoder shapes of benchmarks/bench_cuda_attention.cpp (ViT-B: 12 heads x 64; 197 and 1024
tokens; batch 1 and 32; f16 and bf16; then 12 heads x 128 at 1024 tokens, f16), as CUDA-graph
replays so host overhead is out, and prints one JSON line per (shape, backend):
{"B","T","H","D","dtype","backend","us","tflops"}.

Needs only torch. Run on the GPU machine: python3 tools/bench/sdpa_prefill.py > sdpa_prefill.jsonl
"""
import json
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}


def time_graph(fn, calls=20, replays=50):
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000.0 / calls)
    times.sort()
    return times[len(times) // 2]


def main():
    heads = 12
    # (dtype, batch, tokens, head dim): the ViT-B grid, then head dim 128 at 1024 tokens in f16
    # (benchmarks/bench_cuda_attention.cpp times the same cases).
    cases = [(d, b, t, 64) for d in (("f16", torch.float16), ("bf16", torch.bfloat16))
             for b in (1, 32) for t in (197, 1024)]
    cases += [(("f16", torch.float16), b, 1024, 128) for b in (1, 32)]
    for (dtype_name, dtype), batch, tokens, dim in cases:
        q, k, v = (torch.randn(batch, heads, tokens, dim, device="cuda", dtype=dtype) for _ in range(3))
        flops = 4.0 * batch * heads * tokens * tokens * dim
        for name, backend in BACKENDS.items():
            try:
                with sdpa_kernel(backend):
                    torch.nn.functional.scaled_dot_product_attention(q, k, v)
                    us = time_graph(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
            except RuntimeError as e:  # backend not available for this shape/dtype
                print(json.dumps({"B": batch, "T": tokens, "H": heads, "D": dim, "dtype": dtype_name,
                                  "backend": name, "error": str(e)[:120]}))
                continue
            print(json.dumps({"B": batch, "T": tokens, "H": heads, "D": dim, "dtype": dtype_name,
                              "backend": name, "us": round(us, 2), "tflops": round(flops / us / 1e6, 1)}))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
