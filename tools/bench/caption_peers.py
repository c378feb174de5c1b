#!/usr/bin/env python3
"""Peers for `encore-bench caption`: the same ViT-GPT2 captioning job in PyTorch eager
(transformers' generate) and in ONNX Runtime (encoder + a KV-cached decoder step, search in Python).

Needs torch, transformers 5.17, onnxruntime, onnx, onnxscript, safetensors, numpy.

Modes:
  --make-model DIR [--size base|tiny] [--seed S]
      Builds a VisionEncoderDecoderModel (ViTConfig + GPT2Config with cross-attention) at the sizes
      of encore-bench's random models (base: ViT-B/16 224 + GPT-2 small), re-draws every parameter
      from N(0, 0.02) (LayerNorm weights 1 + N(0, 0.02)) with the seed, and save_pretrained(DIR)
      (safetensors), so that `encore-bench caption --model DIR` loads exactly the same weights.
  --model DIR --engine torch --device cpu|cuda --dtype fp32|fp16|bf16 ...
      times model.generate(pixel_values, max_new_tokens=N, min_new_tokens=N, num_beams, greedy),
      eager (no torch.compile), default attention implementation (sdpa).
  --model DIR --engine ort ...
      CPU, fp32: exports (once, into DIR/onnx-opset18/, in a subprocess so that torch's memory does not
      count) the encoder + per-layer cross-attention K/V, and one decoder step with explicit
      per-layer past/present K/V tensors; greedy or beam search runs in Python over ORT sessions.

Every timing mode generates exactly --new-tokens tokens (end-of-sequence is masked until then, as
encore-bench does), takes random pixels [B, 3, S, S] in [-1, 1], and writes p50/p90 total latency,
tokens/s (batch x new tokens / p50 seconds) and peak memory (CPU: ru_maxrss of the process; CUDA:
torch.cuda.max_memory_allocated) to --json in the format tools/bench/caption_table.py reads.

Examples:
  python tools/bench/caption_peers.py --make-model /work/bench-models/vit-b16-gpt2-base --size base
  python tools/bench/caption_peers.py --model /work/bench-models/vit-b16-gpt2-base --engine torch \\
      --device cpu --dtype fp32 --threads 2 --batch 1 --beams 1 --iters 5 --json torch_b1.json
"""
import argparse
import datetime
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time

import numpy as np  # every mode; torch and onnxruntime are imported only where used

# Sizes of encore-bench's random models (benchmarks/cli/random_model.cpp), same names.
SIZES = {
    "base": dict(image=224, patch=16, enc_hidden=768, enc_layers=12, enc_heads=12, enc_intermediate=3072,
                 dec_hidden=768, dec_layers=12, dec_heads=12, dec_intermediate=3072, vocab=50257, positions=1024,
                 special=50256),
    "tiny": dict(image=32, patch=8, enc_hidden=64, enc_layers=2, enc_heads=4, enc_intermediate=128,
                 dec_hidden=64, dec_layers=2, dec_heads=4, dec_intermediate=256, vocab=1000, positions=64,
                 special=999),
}
INIT_STD = 0.02
PIXEL_SEED = 1234
ONNX_OPSET = 18


def fail(message):
    """A usage error: message on stderr, exit status 2 (like encore-bench)."""
    print(f"caption_peers: {message}", file=sys.stderr)
    sys.exit(2)


# ---------------------------------------------------------------------------------------------
# --make-model


def build_model(size, seed):
    import torch
    from transformers import GPT2Config, ViTConfig, VisionEncoderDecoderConfig, VisionEncoderDecoderModel

    s = SIZES[size]
    special = s["special"]
    enc = ViTConfig(hidden_size=s["enc_hidden"], num_hidden_layers=s["enc_layers"], num_attention_heads=s["enc_heads"],
                    intermediate_size=s["enc_intermediate"], image_size=s["image"], patch_size=s["patch"])
    dec = GPT2Config(n_embd=s["dec_hidden"], n_layer=s["dec_layers"], n_head=s["dec_heads"],
                     n_inner=s["dec_intermediate"], vocab_size=s["vocab"], n_positions=s["positions"],
                     add_cross_attention=True, is_decoder=True,
                     bos_token_id=special, eos_token_id=special, pad_token_id=special)
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id = cfg.pad_token_id = cfg.eos_token_id = cfg.bos_token_id = special
    torch.manual_seed(seed)
    model = VisionEncoderDecoderModel(config=cfg)
    # Re-drawn with an explicit generator so the weights depend only on the seed, not on
    # transformers' init code; the tied lm_head/wte is one parameter, drawn once.
    g = torch.Generator().manual_seed(seed)
    layer_norm_weights = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}
    with torch.no_grad():
        for p in model.parameters():
            mean = 1.0 if id(p) in layer_norm_weights else 0.0
            p.copy_(torch.empty_like(p).normal_(mean, INIT_STD, generator=g))
    gen = model.generation_config
    gen.decoder_start_token_id = gen.bos_token_id = gen.eos_token_id = gen.pad_token_id = special
    return model.eval()


def make_model(args):
    model = build_model(args.size, args.seed)
    os.makedirs(args.make_model, exist_ok=True)
    model.save_pretrained(args.make_model)  # safetensors by default
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.size} model ({params / 1e6:.1f} M parameters, seed {args.seed}) to {args.make_model}")


# ---------------------------------------------------------------------------------------------
# Shared by the timing modes


def read_sizes(model_dir):
    """Sizes from config.json without importing torch (the ORT process stays torch-free)."""
    path = os.path.join(model_dir, "config.json")
    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError as e:
        fail(f"--model: cannot read {path}: {e.strerror}")
    enc, dec = cfg.get("encoder", {}), cfg.get("decoder", {})
    if enc.get("model_type") != "vit" or dec.get("model_type") != "gpt2":
        fail(f"--model: {path} is not a ViT + GPT-2 vision-encoder-decoder config")
    special = cfg.get("decoder_start_token_id", dec.get("bos_token_id", 50256))
    return dict(image=enc.get("image_size", 224), patch=enc.get("patch_size", 16),
                dec_hidden=dec.get("n_embd", 768), dec_layers=dec.get("n_layer", 12), dec_heads=dec.get("n_head", 12),
                vocab=dec.get("vocab_size", 50257), positions=dec.get("n_positions", 1024),
                start=special, eos=cfg.get("eos_token_id", dec.get("eos_token_id", special)))


def random_pixels(batch, image):
    rng = np.random.default_rng(PIXEL_SEED)
    return rng.uniform(-1.0, 1.0, size=(batch, 3, image, image)).astype(np.float32)


def percentile(values, q):
    return float(np.percentile(np.asarray(values, dtype=np.float64), q * 100.0))  # linear, as encore-bench


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def cpu_model_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def report(args, engine_info, total_ms, extra):
    p50 = percentile(total_ms, 0.5)
    result = {
        "engine": args.engine, "task": "caption", "model": os.path.basename(os.path.normpath(args.model)),
        "model_dir": args.model, "device": args.device, "dtype": {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}[args.dtype],
        "threads": args.threads, "batch": args.batch, "beams": args.beams, "new_tokens": args.new_tokens,
        "warmup": args.warmup, "iters": args.iters, "total_ms": total_ms, "p50_ms": p50,
        "p90_ms": percentile(total_ms, 0.9), "tokens_per_s": args.batch * args.new_tokens / (p50 / 1e3),
        "cpu": cpu_model_name(), "host": socket.gethostname(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"), **engine_info, **extra,
    }
    mib = 1024.0 * 1024.0
    print(f"{args.engine} caption: {result['model']}, {args.device} {args.dtype}, {args.threads} threads, "
          f"batch {args.batch}, beams {args.beams}, {args.new_tokens} new tokens, warmup {args.warmup}, iters {args.iters}")
    for note in result.get("notes", []):
        print(f"  NOTE: {note}")
    print(f"  total p50 {p50:.2f} ms, p90 {result['p90_ms']:.2f} ms, tokens/s {result['tokens_per_s']:.1f}")
    if "encoder_p50_ms" in result:
        print(f"  encoder alone p50 {result['encoder_p50_ms']:.2f} ms")
    print(f"  peak memory ({result['peak_mem_kind']}) {result['peak_mem_bytes'] / mib:.1f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


# ---------------------------------------------------------------------------------------------
# --engine torch


def run_torch(args, sizes):
    import torch
    import transformers
    from transformers import VisionEncoderDecoderModel

    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        fail("--device cuda: torch sees no CUDA device")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    device = torch.device(args.device)
    model = VisionEncoderDecoderModel.from_pretrained(args.model, dtype=dtype).to(device).eval()
    pixels = torch.from_numpy(random_pixels(args.batch, sizes["image"])).to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    kwargs = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, num_beams=args.beams,
                  do_sample=False, length_penalty=1.0, early_stopping=False, no_repeat_ngram_size=0,
                  repetition_penalty=1.0, decoder_start_token_id=sizes["start"], eos_token_id=sizes["eos"],
                  pad_token_id=sizes["eos"], bos_token_id=sizes["start"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    total_ms, encoder_ms = [], []
    with torch.inference_mode():
        for i in range(args.warmup + args.iters):
            sync()
            start = time.perf_counter()
            out = model.generate(pixel_values=pixels, **kwargs)
            sync()
            elapsed = (time.perf_counter() - start) * 1e3
            if out.shape != (args.batch, args.new_tokens + 1):
                raise SystemExit(f"caption_peers: generate returned {tuple(out.shape)}, expected "
                                 f"({args.batch}, {args.new_tokens + 1})")
            if i >= args.warmup:
                total_ms.append(elapsed)
        for i in range(args.warmup + args.iters):  # where the time goes: the encoder alone
            sync()
            start = time.perf_counter()
            model.encoder(pixel_values=pixels)
            sync()
            if i >= args.warmup:
                encoder_ms.append((time.perf_counter() - start) * 1e3)
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device), "cuda_max_memory_allocated"
    else:
        peak, kind = peak_rss_bytes(), "cpu_rss_incl_weights"
    info = {"torch": torch.__version__, "transformers": transformers.__version__,
            "attn_implementation": model.config.decoder._attn_implementation, "engine_detail": "generate, eager"}
    report(args, info, total_ms, {"encoder_p50_ms": percentile(encoder_ms, 0.5), "encoder_ms": encoder_ms,
                                  "peak_mem_bytes": int(peak), "peak_mem_kind": kind,
                                  "parameters": sum(p.numel() for p in model.parameters()), "notes": []})


# ---------------------------------------------------------------------------------------------
# --engine ort, part 1: the export (runs in a subprocess; the only part that imports torch)


def onnx_dir(model_dir):
    return os.path.join(model_dir, f"onnx-opset{ONNX_OPSET}")


def kv_names(prefix, layers):
    return [f"{prefix}_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]


def export_onnx(model_dir, threads):
    import torch
    from transformers import VisionEncoderDecoderModel

    torch.set_num_threads(threads)
    # Eager attention: plain MatMul/Softmax in the ONNX graph, which every ORT version optimises.
    model = VisionEncoderDecoderModel.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    decoder = model.decoder
    cfg = decoder.config
    layers, heads = cfg.n_layer, cfg.n_head
    head_dim = cfg.n_embd // heads

    class EncoderWithCrossKV(torch.nn.Module):
        """pixels -> per layer cross-attention K and V [B, heads, T_enc, head_dim], as GPT2Attention makes them."""

        def __init__(self):
            super().__init__()
            self.encoder, self.blocks = model.encoder, decoder.transformer.h

        def forward(self, pixel_values):
            h = self.encoder(pixel_values=pixel_values).last_hidden_state
            out = []
            for block in self.blocks:
                k, v = block.crossattention.c_attn(h).split(cfg.n_embd, dim=2)
                shape = (*k.shape[:-1], heads, head_dim)
                out += [k.view(shape).transpose(1, 2), v.view(shape).transpose(1, 2)]
            return tuple(out)

    def attend(q, k, v):
        # q [R, heads, 1, head_dim] over every key: a single new query sees the whole past, no mask.
        weights = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * (head_dim ** -0.5), dim=-1)
        return torch.matmul(weights, v)

    def split_heads(x):
        return x.view(x.shape[0], x.shape[1], heads, head_dim).transpose(1, 2)

    def merge_heads(x):
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], heads * head_dim)

    class DecoderStep(torch.nn.Module):
        """One token per row through GPT-2's own modules (LayerNorms, Conv1D projections, MLP, LM head),
        with the K/V cache as explicit tensors: per layer past K/V in, present K/V (past + the new
        position) out, cross K/V in. The attention math is GPT2Attention's for one query (checked
        against transformers' forward in check_export)."""

        def __init__(self):
            super().__init__()
            self.decoder = decoder

        def forward(self, input_ids, position_ids, *kv):
            cross, past = kv[:2 * layers], kv[2 * layers:]
            t = self.decoder.transformer
            h = t.wte(input_ids) + t.wpe(position_ids)
            present = []
            for i, block in enumerate(t.h):
                q, k, v = block.attn.c_attn(block.ln_1(h)).split(cfg.n_embd, dim=2)
                k = torch.cat([past[2 * i], split_heads(k)], dim=2)
                v = torch.cat([past[2 * i + 1], split_heads(v)], dim=2)
                present += [k, v]
                h = h + block.attn.c_proj(merge_heads(attend(split_heads(q), k, v)))
                q = block.crossattention.q_attn(block.ln_cross_attn(h))
                h = h + block.crossattention.c_proj(merge_heads(attend(split_heads(q), cross[2 * i], cross[2 * i + 1])))
                h = h + block.mlp(block.ln_2(h))
            logits = self.decoder.lm_head(t.ln_f(h))
            return (logits[:, -1, :], *present)

    target = onnx_dir(model_dir)
    os.makedirs(target, exist_ok=True)
    image = model.config.encoder.image_size
    pixels = torch.from_numpy(random_pixels(2, image))
    with torch.no_grad():
        cross = EncoderWithCrossKV()(pixels)
    enc_tokens = cross[0].shape[2]
    cross_names, past_names, present_names = kv_names("cross", layers), kv_names("past", layers), kv_names("present", layers)
    past_len = 3
    past = [torch.randn(2, heads, past_len, head_dim) * 0.1 for _ in range(2 * layers)]
    step_args = (torch.tensor([[5], [7]]), torch.tensor([[past_len], [past_len]]), *cross, *past)
    rows, past_dim = torch.export.Dim("rows", min=1, max=4096), torch.export.Dim("past", min=0, max=cfg.n_positions)
    batch_dim = torch.export.Dim("batch", min=1, max=4096)
    # *kv is one argument for torch.export: its shapes are one nested tuple.
    step_shapes = ({0: rows}, {0: rows}, ({0: rows},) * len(cross) + ({0: rows, 2: past_dim},) * len(past))
    step_axes = {"input_ids": {0: "rows"}, "position_ids": {0: "rows"}, "logits": {0: "rows"}}
    step_axes.update({n: {0: "rows"} for n in cross_names})
    step_axes.update({n: {0: "rows", 2: "past"} for n in past_names})
    step_axes.update({n: {0: "rows", 2: "total"} for n in present_names})
    exports = [  # (module, args, file, inputs, outputs, dynamo dynamic_shapes, torchscript dynamic_axes)
        (EncoderWithCrossKV(), (pixels,), "encoder.onnx", ["pixel_values"], cross_names, ({0: batch_dim},),
         {n: {0: "batch"} for n in ["pixel_values", *cross_names]}),
        (DecoderStep(), step_args, "decoder_step.onnx", ["input_ids", "position_ids", *cross_names, *past_names],
         ["logits", *present_names], step_shapes, step_axes),
    ]
    exporter = None
    for dynamo in (True, False):
        try:
            for module, example, name, inputs, outputs, shapes, axes in exports:
                dynamic = dict(dynamic_shapes=shapes) if dynamo else dict(dynamic_axes=axes)
                torch.onnx.export(module.eval(), example, os.path.join(target, name), input_names=inputs,
                                  output_names=outputs, opset_version=ONNX_OPSET, dynamo=dynamo, external_data=False,
                                  **dynamic)
            exporter = "dynamo" if dynamo else "torchscript"
            break
        except Exception as e:  # noqa: BLE001  the other exporter may still work; both failing is fatal
            print(f"caption_peers: torch.onnx.export(dynamo={dynamo}) failed: {type(e).__name__}: {e}", file=sys.stderr)
    if exporter is None:
        raise SystemExit("caption_peers: neither ONNX exporter could export the KV-cached decoder step")
    max_diff = check_export(model, target, pixels, threads)
    with open(os.path.join(target, "done.json"), "w") as f:
        json.dump({"exporter": exporter, "opset": ONNX_OPSET, "torch": torch.__version__, "attn_implementation": "eager",
                   "encoder_tokens": int(enc_tokens), "teacher_forced_logits_max_abs_diff": max_diff}, f, indent=2)
    print(f"caption_peers: exported with the {exporter} exporter; teacher-forced logits max |diff| vs "
          f"transformers = {max_diff:.2e}", file=sys.stderr)


def check_export(model, target, pixels, threads):
    """Teacher-forced logits of the ORT encoder + cached step loop against transformers' forward."""
    import torch

    special = model.config.decoder_start_token_id
    vocab = model.config.decoder.vocab_size
    ids = torch.tensor([[special, 3 % vocab, 17 % vocab, 8 % vocab, 22 % vocab]] * pixels.shape[0])
    with torch.no_grad():
        ref = model(pixel_values=pixels, decoder_input_ids=ids).logits.numpy()
    enc, dec = ort_sessions(target, threads)
    layers = model.config.decoder.n_layer
    cross = enc.run(None, {"pixel_values": pixels.numpy()})
    past = empty_past(cross, layers)
    worst = 0.0
    for t in range(ids.shape[1]):
        tokens = ids[:, t:t + 1].numpy()
        logits, *past = dec.run(None, step_feeds(tokens, t, cross, past, layers))
        worst = max(worst, float(np.abs(logits - ref[:, t, :]).max()))
    if not worst < 1e-3:
        raise SystemExit(f"caption_peers: the ONNX decoder disagrees with transformers (max |diff| {worst:.3e})")
    return worst


# ---------------------------------------------------------------------------------------------
# --engine ort, part 2: sessions and the search loop (numpy + onnxruntime only)


def ort_sessions(target, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    make = lambda name: ort.InferenceSession(os.path.join(target, name), so, providers=["CPUExecutionProvider"])  # noqa: E731
    return make("encoder.onnx"), make("decoder_step.onnx")


def empty_past(cross, layers):
    rows, heads, _, head_dim = cross[0].shape
    return [np.zeros((rows, heads, 0, head_dim), dtype=np.float32) for _ in range(2 * layers)]


def step_feeds(tokens, position, cross, past, layers):
    feeds = {"input_ids": tokens.astype(np.int64), "position_ids": np.full(tokens.shape, position, dtype=np.int64)}
    feeds.update(zip(kv_names("cross", layers), cross))
    feeds.update(zip(kv_names("past", layers), past))
    return feeds


def log_softmax(x):
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def ort_caption(enc, dec, pixels, sizes, beams, new_tokens):
    """Greedy (beams = 1) or beam search with transformers' semantics for a fixed length: end-of-
    sequence masked throughout (min_new_tokens = max_new_tokens), beam b > 0 starts at -1e9 so the
    first step expands one hypothesis, the cache rows follow their parent beams every step."""
    layers = sizes["dec_layers"]
    batch = pixels.shape[0]
    rows = batch * beams
    cross = enc.run(None, {"pixel_values": pixels})
    if beams > 1:  # every beam of an image reads that image's cross K/V (as transformers expands them)
        cross = [np.repeat(c, beams, axis=0) for c in cross]
    past = empty_past(cross, layers)
    seqs = np.full((rows, 1), sizes["start"], dtype=np.int64)
    scores = np.zeros((batch, beams), dtype=np.float32)
    scores[:, 1:] = -1e9
    scores = scores.reshape(rows)
    for step in range(new_tokens):
        logits, *past = dec.run(None, step_feeds(seqs[:, -1:], step, cross, past, layers))
        logits[:, sizes["eos"]] = -np.inf
        if beams == 1:
            seqs = np.concatenate([seqs, logits.argmax(axis=-1)[:, None]], axis=1)
            continue
        vocab = logits.shape[1]
        candidates = (scores[:, None] + log_softmax(logits)).reshape(batch, beams * vocab)
        top = np.argpartition(-candidates, beams, axis=1)[:, :beams]
        order = np.argsort(-np.take_along_axis(candidates, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        scores = np.take_along_axis(candidates, top, axis=1).reshape(rows)
        parent = (np.arange(batch)[:, None] * beams + top // vocab).reshape(rows)
        seqs = np.concatenate([seqs[parent], (top % vocab).reshape(rows, 1)], axis=1)
        past = [p[parent] for p in past]
    return seqs.reshape(batch, beams, -1)[:, 0, :]  # equal lengths: the best score is the best beam


def run_ort(args, sizes, target):
    import onnxruntime as ort

    enc, dec = ort_sessions(target, args.threads)
    pixels = random_pixels(args.batch, sizes["image"])
    total_ms, encoder_ms = [], []
    for i in range(args.warmup + args.iters):
        start = time.perf_counter()
        seqs = ort_caption(enc, dec, pixels, sizes, args.beams, args.new_tokens)
        elapsed = (time.perf_counter() - start) * 1e3
        if seqs.shape != (args.batch, args.new_tokens + 1):
            raise SystemExit(f"caption_peers: ORT loop returned {seqs.shape}, expected ({args.batch}, {args.new_tokens + 1})")
        if i >= args.warmup:
            total_ms.append(elapsed)
    for i in range(args.warmup + args.iters):  # the encoder (+ cross K/V) alone
        start = time.perf_counter()
        enc.run(None, {"pixel_values": pixels})
        if i >= args.warmup:
            encoder_ms.append((time.perf_counter() - start) * 1e3)
    with open(os.path.join(target, "done.json")) as f:
        export = json.load(f)
    notes = ["decoder step exported with a KV cache (past/present per layer); search loop in Python/numpy"]
    info = {"onnxruntime": ort.__version__, "exporter": export["exporter"], "opset": export["opset"],
            "attn_implementation": "eager (exported)", "engine_detail": "ORT CPU EP, cached decoder step"}
    report(args, info, total_ms, {"encoder_p50_ms": percentile(encoder_ms, 0.5), "encoder_ms": encoder_ms,
                                  "peak_mem_bytes": peak_rss_bytes(), "peak_mem_kind": "cpu_rss_incl_weights",
                                  "recomputes_prefix": False, "notes": notes})


def ensure_onnx(args):
    target = onnx_dir(args.model)
    if os.path.exists(os.path.join(target, "done.json")):
        return target
    cmd = [sys.executable, os.path.abspath(__file__), "--export-onnx", args.model, "--threads", str(args.threads)]
    print(f"caption_peers: exporting ONNX models to {target} (once): {' '.join(cmd)}", file=sys.stderr)
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit(f"caption_peers: ONNX export of {args.model} failed")
    return target


# ---------------------------------------------------------------------------------------------


def positive(name, lo=1):
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} expects an integer >= {lo}, got '{text}'")
        if v < lo:
            raise argparse.ArgumentTypeError(f"{name} expects an integer >= {lo}, got {v}")
        return v
    return parse


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--make-model", metavar="DIR", help="write a random model to DIR and exit")
    ap.add_argument("--size", choices=sorted(SIZES), default="base")
    ap.add_argument("--seed", type=positive("--seed", 0), default=0)
    ap.add_argument("--export-onnx", metavar="DIR", help=argparse.SUPPRESS)  # internal: the export subprocess
    ap.add_argument("--model", metavar="DIR")
    ap.add_argument("--engine", choices=["torch", "ort"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    ap.add_argument("--threads", type=positive("--threads"), default=os.cpu_count())
    ap.add_argument("--batch", type=positive("--batch"), default=1)
    ap.add_argument("--beams", type=positive("--beams"), default=1)
    ap.add_argument("--new-tokens", type=positive("--new-tokens"), default=16)
    ap.add_argument("--warmup", type=positive("--warmup", 0), default=1)
    ap.add_argument("--iters", type=positive("--iters"), default=10)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    if args.make_model or args.export_onnx:
        return args
    if not args.model or not args.engine:
        fail("give --make-model DIR, or --model DIR and --engine torch|ort")
    if not os.path.isdir(args.model):
        fail(f"--model: '{args.model}' is not a directory")
    if args.device != "cpu" and not (args.device == "cuda" or (args.device.startswith("cuda:") and args.device[5:].isdigit())):
        fail(f"--device expects cpu, cuda or cuda:N, got '{args.device}'")
    if args.engine == "ort" and (args.device != "cpu" or args.dtype != "fp32"):
        fail(f"--engine ort runs on cpu in fp32 only, got --device {args.device} --dtype {args.dtype}")
    if args.json:
        try:
            open(args.json, "a").close()  # fail now, not after minutes of measuring
        except OSError as e:
            fail(f"--json: cannot write '{args.json}': {e.strerror}")
    return args


def main():
    args = parse_args()
    if args.make_model:
        return make_model(args)
    if args.export_onnx:
        return export_onnx(args.export_onnx, args.threads)
    sizes = read_sizes(args.model)
    if args.new_tokens + 1 > sizes["positions"]:
        fail(f"--new-tokens {args.new_tokens} does not fit the model's {sizes['positions']} positions")
    if args.engine == "torch":
        return run_torch(args, sizes)
    return run_ort(args, sizes, ensure_onnx(args))


if __name__ == "__main__":
    main()
