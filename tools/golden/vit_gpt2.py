#!/usr/bin/env python3
"""Writes tiny random ViT-GPT2 captioning models and their reference outputs (golden data).

Needs: torch (CPU is enough), transformers, pillow, numpy, safetensors. Goldens in the repository
were made with the versions recorded in each golden.safetensors' metadata and README.md.

For each variant writes <out>/<dir>/:
  config.json, model.safetensors (+ generation_config.json)   from save_pretrained
  golden.safetensors:
    pixel_values              [2, 3, S, S]  two images of tests/data/images through ViTImageProcessorPil
    encoder.last_hidden_state [2, N, H]     N = 1 + (S/P)^2 (CLS first)
    encoder.hidden_states.{i} [2, N, H]     i = 0 (embeddings) .. layers (before the final layernorm)
    decoder_input_ids         [2, T] i64    a fixed teacher-forcing sequence, start token first
    decoder.logits            [2, T, V]     for decoder_input_ids
    decoder.hidden_states.{i} [2, T, H]     i = 0 (embeddings) .. layers (the last is after ln_f)
    greedy.sequences          [2, L] i64    generate(max_length 12, num_beams=1), padded with pad id
    greedy.scores             [L-1, 2, V]   the logits of each greedy step
    beam.sequences            [2, L'] i64   generate(max_length 12, num_beams=4, length_penalty=1,
                                            early_stopping=False)
    beam.sequences_scores     [2]           the normalised score of each returned hypothesis
    beam.transition_scores    [2, L'-1]     compute_transition_scores(..., beam_indices)
    long_beam.pixel_values    [3, 3, S, S]  the two images above and blocks_300x400.png
    long_beam.{lp05,lp2}.sequences          [3, L''] i64  generate(max_length 21, num_beams=4,
                                            early_stopping=True, length_penalty 0.5 / 2.0)
    long_beam.{lp05,lp2}.sequences_scores   [3]
    long_beam.{lp05,lp2}.transition_scores  [3, L''-1]
  metadata: versions, seed and how it was found (unmet_soft_quality: the soft quality() reasons the
  seed still has), the re-draw gain, max_length, the image names, long_beam.* (max_length,
  early_stopping, length_penalties as name=value), sensitivity (below).

Variants: vit_gpt2_tiny is spec vision_models.md 1.7 (LayerNorm eps defaults 1e-12 / 1e-5, decoder
gelu_new); vit_gpt2_tiny_b has other sizes (to catch hard-coded ones), LayerNorm eps 0.5 in both
the ViT (layer_norm_eps) and GPT-2 (layer_norm_epsilon), and the decoder's exact erf GELU
(activation_function "gelu"). For it the script checks, and records as `sensitivity`, that the
default eps or gelu_new would move encoder states / logits by >= 10x the C++ tests' elementwise
allowance (1e-4 |want| + 1e-6 max |want|).

The default init gives near-uniform logits and an immediate end-of-sequence, and a plain N(0, 0.5)
re-draw gives captions that repeat one or two tokens (the tied LM head favours the current token
or one favourite). So every parameter is re-drawn (see GAIN below) and the seed is searched from
--seed on (at most SEED_TRIES): the first seed with no hard and the fewest soft quality() reasons
(see quality(): non-repetitive greedy/beam rows, an end-of-sequence somewhere, a greedy row running
to max_length, beam != greedy, float32 close to float64, float16-stable greedy ids; softer wishes
for the long beams, bfloat16 stability and an end-of-sequence in the greedy/beam goldens).

Usage: python3 tools/golden/vit_gpt2.py [--out tests/data] [--images tests/data/images] [--seed 0]
Then run tools/golden/vit_gpt2_generation.py on the two directories (generation_options.json).
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
IMAGES = ("photo_640x480.jpg", "noise_17x23.png")
LONG_IMAGES = ("photo_640x480.jpg", "noise_17x23.png", "blocks_300x400.png")
MAX_LENGTH = 12
LONG_MAX_LENGTH = 21  # 20 new tokens: fed at positions 0..19, all that n_positions 20 allows
LONG_PENALTIES = {"lp05": 0.5, "lp2": 2.0}  # golden name -> length_penalty, with early_stopping=True
NUM_BEAMS = 4
F32_SHARE = 0.25
BF16_UNSTABLE = "greedy ids change in bfloat16"
SEED_TRIES = 1000

# The re-draw (every parameter, in named_parameters() order, from one torch.Generator seeded with
# the seed): weight matrices N(0, GAIN / sqrt(fan_in)) in the decoder and N(0, ENC_GAIN / sqrt(fan_in))
# in the encoder (a tamer encoder keeps float32 rounding small), token embeddings N(0, WTE_STD), position
# embeddings (GPT-2 wpe, ViT position_embeddings) N(0, WPE_STD), LayerNorm weights N(1, LN_STD),
# biases, LayerNorm biases and the CLS token N(0, BIAS_STD). Large position embeddings and small biases keep
# the tied LM head from repeating the current token or one favourite token.
GAIN = 1.5
ENC_GAIN = 1.0
WTE_STD, WPE_STD, LN_STD, BIAS_STD = 0.5, 2.0, 0.2, 0.05

VARIANTS = {
    "vit_gpt2_tiny": dict(hidden=32, enc_layers=2, heads=4, intermediate=37, image=32, patch=8,
                          dec_layers=2, vocab=50, positions=20, layer_norm_eps=None, activation="gelu_new",
                          decoder_input_ids=[[49, 3, 17, 8, 22, 5, 41], [49, 0, 48, 12, 12, 30, 7]]),
    # eps 0.5 (ViT layer_norm_eps and GPT-2 layer_norm_epsilon) is large against the variances of
    # the re-drawn model, so a loader ignoring the config's eps fails the goldens; the decoder's
    # exact (erf) GELU is the one of the real ViT, the decoder of vit_gpt2_tiny has gelu_new.
    "vit_gpt2_tiny_b": dict(hidden=48, enc_layers=3, heads=6, intermediate=50, image=48, patch=16,
                            dec_layers=3, vocab=67, positions=24, layer_norm_eps=0.5, activation="gelu",
                            decoder_input_ids=[[66, 1, 65, 20, 33, 9, 60, 2, 2], [66, 40, 13, 0, 7, 51, 64, 3, 11]]),
}


def make_config(v):
    from transformers import GPT2Config, ViTConfig, VisionEncoderDecoderConfig

    special = v["vocab"] - 1
    eps = v["layer_norm_eps"]  # None: the defaults (ViT 1e-12, GPT-2 1e-5)
    enc_eps = {} if eps is None else {"layer_norm_eps": eps}
    dec_eps = {} if eps is None else {"layer_norm_epsilon": eps}
    enc = ViTConfig(hidden_size=v["hidden"], num_hidden_layers=v["enc_layers"], num_attention_heads=v["heads"],
                    intermediate_size=v["intermediate"], image_size=v["image"], patch_size=v["patch"], **enc_eps)
    dec = GPT2Config(n_embd=v["hidden"], n_layer=v["dec_layers"], n_head=v["heads"], vocab_size=v["vocab"],
                     n_positions=v["positions"], add_cross_attention=True, is_decoder=True,
                     activation_function=v["activation"],
                     bos_token_id=special, eos_token_id=special, pad_token_id=special, **dec_eps)
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id = cfg.pad_token_id = cfg.eos_token_id = cfg.bos_token_id = special
    enc._attn_implementation = dec._attn_implementation = "eager"
    return cfg, special


def redraw(model, seed):
    """Re-draws every parameter (see GAIN); the tied lm_head/wte is one parameter, drawn once."""
    import torch
    from transformers.pytorch_utils import Conv1D

    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        owner = model.get_submodule(name.rpartition(".")[0])
        if isinstance(owner, torch.nn.LayerNorm):
            mean, std = (1.0, LN_STD) if name.endswith(".weight") else (0.0, BIAS_STD)
        elif name.endswith("wte.weight"):
            mean, std = 0.0, WTE_STD
        elif name.endswith("wpe.weight") or name.endswith("position_embeddings"):
            mean, std = 0.0, WPE_STD
        elif p.dim() == 1 or name.endswith("cls_token"):
            mean, std = 0.0, BIAS_STD
        else:  # Conv1D stores (in, out); nn.Linear (out, in); Conv2d (out, in, kh, kw)
            fan_in = p.shape[0] if isinstance(owner, Conv1D) else p[0].numel()
            mean, std = 0.0, (ENC_GAIN if name.startswith("encoder.") else GAIN) / fan_in**0.5
        with torch.no_grad():
            p.copy_(torch.empty_like(p).normal_(mean, std, generator=g))


def build(v, seed):
    """The variant's model with its parameters re-drawn with `seed`."""
    import torch
    from transformers import VisionEncoderDecoderModel

    cfg, special = make_config(v)
    torch.manual_seed(seed)
    model = VisionEncoderDecoderModel(config=cfg)
    model.config._attn_implementation = "eager"
    redraw(model, seed)
    return model.eval(), special


def pixel_values(images_dir, size, names=IMAGES):
    import numpy as np
    from PIL import Image
    from transformers import ViTImageProcessorPil

    proc = ViTImageProcessorPil(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    ims = [Image.open(os.path.join(images_dir, n)).convert("RGB") for n in names]
    return np.asarray(proc(images=ims, return_tensors="np")["pixel_values"], dtype=np.float32)


def generation_kwargs(special, max_length=MAX_LENGTH):
    return dict(max_length=max_length, min_length=0, do_sample=False, no_repeat_ngram_size=0, repetition_penalty=1.0,
                bos_token_id=special, eos_token_id=special, pad_token_id=special, decoder_start_token_id=special)


def long_beam(model, special, pv3, length_penalty, early_stopping=True):
    return model.generate(pixel_values=pv3, num_beams=NUM_BEAMS, length_penalty=length_penalty,
                          early_stopping=early_stopping, num_return_sequences=1, output_scores=True,
                          return_dict_in_generate=True, **generation_kwargs(special, LONG_MAX_LENGTH))


def run(model, special, pv, pv3, decoder_input_ids):
    import torch

    out = {}
    with torch.no_grad():
        enc = model.encoder(pixel_values=pv, output_hidden_states=True)
        out["encoder.last_hidden_state"] = enc.last_hidden_state
        for i, h in enumerate(enc.hidden_states):
            out[f"encoder.hidden_states.{i}"] = h
        ids = torch.tensor(decoder_input_ids, dtype=torch.long)
        fwd = model(pixel_values=pv, decoder_input_ids=ids, output_hidden_states=True)
        out["decoder_input_ids"] = ids
        out["decoder.logits"] = fwd.logits
        for i, h in enumerate(fwd.decoder_hidden_states):
            out[f"decoder.hidden_states.{i}"] = h
        kw = generation_kwargs(special)
        greedy = model.generate(pixel_values=pv, num_beams=1, output_scores=True, return_dict_in_generate=True, **kw)
        out["greedy.sequences"] = greedy.sequences
        out["greedy.scores"] = torch.stack(greedy.scores)
        beam = model.generate(pixel_values=pv, num_beams=NUM_BEAMS, length_penalty=1.0, early_stopping=False,
                              num_return_sequences=1, output_scores=True, return_dict_in_generate=True, **kw)
        out["beam.sequences"] = beam.sequences
        out["beam.sequences_scores"] = beam.sequences_scores
        out["beam.transition_scores"] = model.compute_transition_scores(
            beam.sequences, beam.scores, beam.beam_indices, normalize_logits=False)
        out["long_beam.pixel_values"] = pv3
        for key, lp in LONG_PENALTIES.items():
            b = long_beam(model, special, pv3, lp)
            out[f"long_beam.{key}.sequences"] = b.sequences
            out[f"long_beam.{key}.sequences_scores"] = b.sequences_scores
            out[f"long_beam.{key}.transition_scores"] = model.compute_transition_scores(
                b.sequences, b.scores, b.beam_indices, normalize_logits=False)
    return out


def generated(row, special):
    """The tokens after the start token, up to (without) the first end-of-sequence; and whether
    there was one."""
    row = row[1:]
    return (row[: row.index(special)], True) if special in row else (row, False)


def longest_run(tokens):
    best = run = 0
    for i, t in enumerate(tokens):
        run = run + 1 if i > 0 and t == tokens[i - 1] else 1
        best = max(best, run)
    return best


def same(a, b):
    return a.shape == b.shape and bool((a == b).all())


def quality(model, special, pv, pv3, out):
    """What keeps the outputs of a re-drawn model from being good goldens: (hard, soft), two lists
    of reasons. A seed with a hard reason is never taken; among the others the search prefers
    fewer soft ones. The costly checks run only when no cheap hard one failed.
    Hard:
    - every greedy and beam row: at least 3 generated tokens, none of them more than 3 times in a
      row, at least 4 distinct;
    - a greedy row runs to max_length; beam search differs from greedy; some generated row
      (greedy, beam or long beam) ends with end-of-sequence before max_length;
    - encoder states and logits in float32 are within F32_SHARE of the C++ tests' elementwise
      tolerance of the same model in float64 (the re-drawn models amplify rounding);
    - greedy ids stay the same with the model in float16 (all of it, or only its weights rounded),
      so the CUDA half-precision goldens compare ids with margin to spare.
    Soft:
    - every long-beam row: at least 1 generated token (length_penalty 0.5 favours short ones), none
      more than 3 times in a row, at least 4 distinct (or all distinct when fewer are generated);
    - long beams: some row runs to LONG_MAX_LENGTH, some ends with end-of-sequence; the two
      length penalties give different results; early_stopping=False gives other results than True
      for one of them (so the goldens see the length penalty and the stopping rule);
    - a greedy or beam row ends with end-of-sequence;
    - greedy ids stay the same in bfloat16 (BF16_UNSTABLE; eps 0.5 and the gain make vit_gpt2_tiny_b
      too sensitive for bfloat16's 8 bits on every seed tried: the CUDA test then compares bf16
      greedy ids only where the metadata's half_precision_greedy lists bfloat16)."""
    import copy

    import torch

    hard, soft = [], []
    rows = {"greedy": out["greedy.sequences"], "beam": out["beam.sequences"]}
    rows.update({f"long_beam.{k}": out[f"long_beam.{k}.sequences"] for k in LONG_PENALTIES})
    ends = {}
    for what, seqs in rows.items():
        long = what.startswith("long_beam")
        for r, row in enumerate(seqs.tolist()):
            toks, ends[what, r] = generated(row, special)
            if len(toks) < (1 if long else 3) or longest_run(toks) > 3 or len(set(toks)) < min(4, len(toks)):
                (soft if long else hard).append(f"{what} row {r} is degenerate: {row}")
    if all(ends["greedy", r] for r in range(len(out["greedy.sequences"]))):
        hard.append("no greedy row runs to max_length")
    if same(out["greedy.sequences"], out["beam.sequences"]):
        hard.append("beam search gives the greedy result")
    if not any(ends.values()):
        hard.append("no row ends with end-of-sequence")
    if hard:
        return hard, soft
    long_ends = [e for (what, _), e in ends.items() if what.startswith("long_beam")]
    if all(long_ends):
        soft.append("no long-beam row runs to max_length")
    if not any(long_ends):
        soft.append("no long-beam row ends with end-of-sequence")
    if same(*(out[f"long_beam.{k}.sequences"] for k in LONG_PENALTIES)):
        soft.append("the length penalties give the same long beams")
    if not any(e for (what, _), e in ends.items() if not what.startswith("long_beam")):
        soft.append("no greedy or beam row ends with end-of-sequence")
    with torch.no_grad():
        wide = copy.deepcopy(model).double()  # float32 rounding must stay far inside the tolerance
        enc = wide.encoder(pixel_values=pv.double()).last_hidden_state
        logits = wide(pixel_values=pv.double(), decoder_input_ids=out["decoder_input_ids"]).logits
        for key, want in (("encoder.last_hidden_state", enc), ("decoder.logits", logits)):
            allowed = 1e-4 * want.abs() + 1e-6 * want.abs().max()
            if float(((out[key].double() - want).abs() / allowed).max()) > F32_SHARE:
                return hard + [f"float32 {key} is more than {F32_SHARE} of the tolerance from float64"], soft
        for dtype in (torch.float16, torch.bfloat16):
            for whole in (True, False):
                half = copy.deepcopy(model).to(dtype)
                if not whole:
                    half = half.float()
                got = half.generate(pixel_values=pv.to(half.dtype), num_beams=1, **generation_kwargs(special))
                if not same(got, out["greedy.sequences"]):
                    if dtype == torch.float16:
                        return hard + [f"greedy ids change in float16 ({'model' if whole else 'weights'})"], soft
                    soft.append(BF16_UNSTABLE)
                    break
        if all(same(long_beam(model, special, pv3, lp, early_stopping=False).sequences, out[f"long_beam.{k}.sequences"])
               for k, lp in LONG_PENALTIES.items()):
            soft.append("early_stopping=False gives the same long beams")
    return hard, soft


def sensitivity(v, seed, pv, out):
    """How far the goldens move when the loader would ignore the variant's layer_norm_eps (using
    the ViT / GPT-2 defaults 1e-12 / 1e-5) or its exact decoder GELU (using gelu_new): the largest
    elementwise error in units of the C++ tests' allowance (1e-4 |want| + 1e-6 max |want|), and
    the whole-tensor relative error. The goldens catch the mistake when these are >> 1."""
    import torch

    def compare(model, key):
        with torch.no_grad():
            if key == "encoder.last_hidden_state":
                got = model.encoder(pixel_values=pv).last_hidden_state
            else:
                got = model(pixel_values=pv, decoder_input_ids=out["decoder_input_ids"]).logits
        want = out[key]
        allowed = 1e-4 * want.abs() + 1e-6 * want.abs().max()
        return {"max_err_over_allowed": float(((got - want).abs() / allowed).max()),
                "relative_error": float((got - want).norm() / want.norm())}

    result = {}
    if v["layer_norm_eps"] is not None:
        model, _ = build(dict(v, layer_norm_eps=None), seed)
        result["default_layer_norm_eps"] = {k: compare(model, k) for k in ("encoder.last_hidden_state", "decoder.logits")}
    if v["activation"] != "gelu_new":
        model, _ = build(dict(v, activation="gelu_new"), seed)
        result["gelu_new_decoder"] = {"decoder.logits": compare(model, "decoder.logits")}
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data"))
    ap.add_argument("--images", default=os.path.join(ROOT, "tests", "data", "images"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=sorted(VARIANTS), action="append", help="write only these variants")
    args = ap.parse_args()

    import numpy as np
    import PIL
    import safetensors
    import torch
    import transformers
    from safetensors.torch import save_file

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "safetensors": safetensors.__version__, "numpy": np.__version__, "pillow": PIL.__version__,
                "python": sys.version.split()[0]}
    summary = {}
    for name, v in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        pv = torch.from_numpy(pixel_values(args.images, v["image"]))
        pv3 = torch.from_numpy(pixel_values(args.images, v["image"], LONG_IMAGES))
        best = None  # (number of soft reasons, seed, soft reasons): the first seed of the fewest wins
        for seed in range(args.seed, args.seed + SEED_TRIES):
            model, special = build(v, seed)
            hard, soft = quality(model, special, pv, pv3, run(model, special, pv, pv3, v["decoder_input_ids"]))
            if not hard and (best is None or len(soft) < best[0]):
                best = (len(soft), seed, soft)
                if not soft:
                    break
        if best is None:
            raise SystemExit(f"{name}: every seed in [{args.seed}, {args.seed + SEED_TRIES}) fails quality()")
        _, seed, unmet = best
        model, special = build(v, seed)
        out = run(model, special, pv, pv3, v["decoder_input_ids"])
        checks = sensitivity(v, seed, pv, out)
        for what, tensors in checks.items():
            for key, c in tensors.items():
                if c["max_err_over_allowed"] < 10:
                    raise SystemExit(f"{name}: {what} moves {key} by only {c['max_err_over_allowed']:.3g}x the tolerance")
        target = os.path.join(args.out, name)
        os.makedirs(target, exist_ok=True)
        model.save_pretrained(target)
        tensors = {"pixel_values": pv, **out}
        meta = {"generator": "tools/golden/vit_gpt2.py", "seed": str(seed), "seed_search": f"first seed from {args.seed} with no hard and the fewest soft quality() reasons",
                "unmet_soft_quality": json.dumps(unmet),
                "half_precision_greedy": "float16" if BF16_UNSTABLE in unmet else "bfloat16,float16",
                "redraw_gain": str(GAIN), "redraw_encoder_gain": str(ENC_GAIN), "max_length": str(MAX_LENGTH), "num_beams": str(NUM_BEAMS), "images": ",".join(IMAGES),
                "special_token_id": str(special), "long_beam.images": ",".join(LONG_IMAGES),
                "long_beam.max_length": str(LONG_MAX_LENGTH), "long_beam.early_stopping": "true",
                "long_beam.length_penalties": ",".join(f"{k}={lp}" for k, lp in LONG_PENALTIES.items()),
                "sensitivity": json.dumps(checks), **versions}
        save_file({k: t.detach().contiguous() for k, t in tensors.items()}, os.path.join(target, "golden.safetensors"),
                  metadata=meta)
        summary[name] = {"seed": seed, "unmet_soft_quality": unmet, "greedy": out["greedy.sequences"].tolist(), "beam": out["beam.sequences"].tolist(),
                         "beam_scores": [round(x, 6) for x in out["beam.sequences_scores"].tolist()],
                         "sensitivity": checks}
        for k in LONG_PENALTIES:
            summary[name][f"long_beam.{k}"] = out[f"long_beam.{k}.sequences"].tolist()
            summary[name][f"long_beam.{k}_scores"] = [round(x, 6) for x in out[f"long_beam.{k}.sequences_scores"].tolist()]
        print(name, json.dumps(summary[name]), flush=True)
    if not args.only:
        with open(os.path.join(args.out, "vit_gpt2_tiny", "README.md"), "w") as f:
            f.write(README.format(summary=format_summary(summary), gain=GAIN, enc_gain=ENC_GAIN, wte=WTE_STD, wpe=WPE_STD, ln=LN_STD,
                                  bias=BIAS_STD, **versions))
        with open(os.path.join(args.out, "vit_gpt2_tiny_b", "README.md"), "w") as f:
            f.write(README_B)


def format_summary(summary):
    lines = []
    for name, s in summary.items():
        lines.append(f"{name}: seed {s['seed']}, unmet soft quality() reasons: {json.dumps(s['unmet_soft_quality'])}")
        for key, value in s.items():
            if key not in ("seed", "unmet_soft_quality"):
                lines.append(f"  {key}: {json.dumps(value)}")
    return "\n".join(lines)


README = """# Tiny random ViT-GPT2 captioning models (golden data)

Written by `tools/golden/vit_gpt2.py` (`python3 tools/golden/vit_gpt2.py --out tests/data`; it reads
the images in `tests/data/images`). Versions: torch {torch}, transformers {transformers},
safetensors {safetensors}, numpy {numpy}, Pillow {pillow}, Python {python}; CPU, float32, eager
attention, deterministic algorithms, one thread.

- `vit_gpt2_tiny/`: spec vision_models.md 1.7 (ViT hidden 32, 2 layers, 4 heads, intermediate 37,
  image 32, patch 8; GPT-2 n_embd 32, 2 layers, 4 heads, vocab 50, n_positions 20, cross-attention;
  bos = eos = pad = decoder_start = 49; LayerNorm eps the defaults 1e-12 (ViT) / 1e-5 (GPT-2);
  decoder activation gelu_new).
- `vit_gpt2_tiny_b/`: other sizes (hidden 48, 3+3 layers, 6 heads, intermediate 50, image 48,
  patch 16, vocab 67, n_positions 24; special id 66), LayerNorm eps 0.5 in the ViT and the GPT-2
  (a loader ignoring the config's eps fails its goldens), and the decoder's exact erf GELU
  (activation_function "gelu"). `sensitivity` below: how far the default eps / gelu_new would
  move its encoder states and logits, in units of the C++ tests' elementwise allowance.

Each holds `save_pretrained` output (config.json, model.safetensors, generation_config.json; the
weights carry the legacy v4 key names, e.g. `encoder.encoder.layer.0.attention.attention.query.weight`,
as transformers 5.x converts back when saving; `decoder.lm_head.weight` is tied to
`decoder.transformer.wte.weight` and not stored) and
`golden.safetensors` (its tensors and metadata are listed in the script's docstring): pixel_values of
`photo_640x480.jpg` and `noise_17x23.png` via ViTImageProcessorPil, encoder states, teacher-forced
decoder logits, greedy and 4-beam generations (max_length 12, length_penalty 1.0,
early_stopping False) with scores, and 4-beam generations on those two images and
`blocks_300x400.png` with max_length 21 (20 new tokens), early_stopping True and length_penalty
0.5 (`long_beam.lp05.*`) and 2.0 (`long_beam.lp2.*`).

Parameters: re-drawn with the seed in the metadata (weight matrices N(0, {gain}/sqrt(fan_in)) in the
decoder, N(0, {enc_gain}/sqrt(fan_in)) in the encoder, token
embeddings N(0, {wte}), position embeddings N(0, {wpe}), LayerNorm weights N(1, {ln}), biases and
the CLS token N(0, {bias})); the seed is the first from 0 with no hard and the fewest soft
`quality()` reasons (the script's docstring and `quality()` list them: non-repetitive greedy and
beam captions, an end-of-sequence before max_length, float32 outputs within a quarter of the tests'
tolerance of float64 ones, greedy ids unchanged in float16 (and, softly, bfloat16),
length penalty and early stopping visible in the long beams). Unmet soft reasons are listed below.

`generation_options.json` (in both) is written by `tools/golden/vit_gpt2_generation.py` from the same
golden pixel values (CPU float32): Hugging Face `generate()` with no generation argument (these models
set no length: 20 new tokens, 21 ids), with max_new_tokens / min_new_tokens beside a max_length /
min_length they override, and 4 beams returning their best 3.

Results:
```
{summary}
```
"""

README_B = """# Tiny random ViT-GPT2 captioning model, second variant (golden data)

See `../vit_gpt2_tiny/README.md`: both directories are written by `tools/golden/vit_gpt2.py`. This one
has other sizes than vit_gpt2_tiny, LayerNorm eps 0.5 (ViT layer_norm_eps and GPT-2
layer_norm_epsilon) and the decoder's exact GELU (activation_function "gelu").
"""


if __name__ == "__main__":
    main()
