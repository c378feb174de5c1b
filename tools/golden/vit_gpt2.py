#!/usr/bin/env python3
"""Writes tiny random ViT-GPT2 captioning models and their reference outputs (golden data).

Needs: torch (CPU is enough), transformers, pillow, numpy, safetensors. Goldens in the repository
were made with the versions recorded in each golden.safetensors' metadata and README.md.

For each variant (spec vision_models.md 1.7 and a second one with other sizes, to catch hard-coded
sizes), writes <out>/<dir>/:
  config.json, model.safetensors (+ generation_config.json)   from save_pretrained
  golden.safetensors:
    pixel_values              [2, 3, S, S]  two images of tests/data/images through ViTImageProcessorPil
    encoder.last_hidden_state [2, N, H]     N = 1 + (S/P)^2 (CLS first)
    encoder.hidden_states.{i} [2, N, H]     i = 0 (embeddings) .. layers (before the final layernorm)
    decoder_input_ids         [2, T] i64    a fixed teacher-forcing sequence, start token first
    decoder.logits            [2, T, V]     for decoder_input_ids
    decoder.hidden_states.{i} [2, T, H]     i = 0 (embeddings) .. layers (the last is after ln_f)
    greedy.sequences          [2, L] i64    generate(max_length, num_beams=1), padded with pad id
    greedy.scores             [L-1, 2, V]   the logits of each greedy step
    beam.sequences            [2, L'] i64   generate(num_beams=4, length_penalty=1, early_stopping=False)
    beam.sequences_scores     [2]           the normalised score of each returned hypothesis
    beam.transition_scores    [2, L'-1]     compute_transition_scores(..., beam_indices)
  metadata: versions, seed, max_length, the image names.

Every parameter is re-drawn from N(0, 0.5) (seeded): the default init gives near-uniform logits
and an immediate end-of-sequence. The seed is the first one from --seed on for which greedy runs
to max_length without end-of-sequence on row 0, beam search differs from greedy, and some
generated row ends with end-of-sequence (failing that, the first meeting the first two).

Usage: python3 tools/golden/vit_gpt2.py [--out tests/data] [--images tests/data/images] [--seed 0]
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
IMAGES = ("photo_640x480.jpg", "noise_17x23.png")
MAX_LENGTH = 12
NUM_BEAMS = 4
SEED_TRIES = 300

VARIANTS = {
    "vit_gpt2_tiny": dict(hidden=32, enc_layers=2, heads=4, intermediate=37, image=32, patch=8,
                          dec_layers=2, vocab=50, positions=20,
                          decoder_input_ids=[[49, 3, 17, 8, 22, 5, 41], [49, 0, 48, 12, 12, 30, 7]]),
    "vit_gpt2_tiny_b": dict(hidden=48, enc_layers=3, heads=6, intermediate=50, image=48, patch=16,
                            dec_layers=3, vocab=67, positions=24,
                            decoder_input_ids=[[66, 1, 65, 20, 33, 9, 60, 2, 2], [66, 40, 13, 0, 7, 51, 64, 3, 11]]),
}


def build(v, seed):
    import torch
    from transformers import GPT2Config, ViTConfig, VisionEncoderDecoderConfig, VisionEncoderDecoderModel

    special = v["vocab"] - 1
    enc = ViTConfig(hidden_size=v["hidden"], num_hidden_layers=v["enc_layers"], num_attention_heads=v["heads"],
                    intermediate_size=v["intermediate"], image_size=v["image"], patch_size=v["patch"])
    dec = GPT2Config(n_embd=v["hidden"], n_layer=v["dec_layers"], n_head=v["heads"], vocab_size=v["vocab"],
                     n_positions=v["positions"], add_cross_attention=True, is_decoder=True,
                     bos_token_id=special, eos_token_id=special, pad_token_id=special)
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id = cfg.pad_token_id = cfg.eos_token_id = cfg.bos_token_id = special
    enc._attn_implementation = dec._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = VisionEncoderDecoderModel(config=cfg)
    model.config._attn_implementation = "eager"
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # tied lm_head/wte is one parameter, drawn once
            p.copy_(torch.empty_like(p).normal_(0.0, 0.5, generator=g))
    return model.eval(), special


def pixel_values(images_dir, size):
    import numpy as np
    from PIL import Image
    from transformers import ViTImageProcessorPil

    proc = ViTImageProcessorPil(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    ims = [Image.open(os.path.join(images_dir, n)).convert("RGB") for n in IMAGES]
    return np.asarray(proc(images=ims, return_tensors="np")["pixel_values"], dtype=np.float32)


def generation_kwargs(special):
    return dict(max_length=MAX_LENGTH, min_length=0, do_sample=False, no_repeat_ngram_size=0, repetition_penalty=1.0,
                bos_token_id=special, eos_token_id=special, pad_token_id=special, decoder_start_token_id=special)


def run(model, special, pv, decoder_input_ids):
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
    return out


def quality(out, special):
    """2: greedy row 0 runs to max_length, beam differs from greedy, and some row ends with
    end-of-sequence (so finished hypotheses and padding are exercised); 1: all but the last; 0: neither."""
    greedy, beam = out["greedy.sequences"], out["beam.sequences"]
    row0_runs = greedy.shape[1] == MAX_LENGTH and not (greedy[0, 1:] == special).any()
    differs = greedy.shape != beam.shape or bool((greedy != beam).any())
    has_eos = bool((greedy[:, 1:] == special).any() or (beam[:, 1:] == special).any())
    return (1 + has_eos) if row0_runs and differs else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data"))
    ap.add_argument("--images", default=os.path.join(ROOT, "tests", "data", "images"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import numpy as np
    import PIL
    import safetensors
    import torch
    import transformers
    from safetensors.torch import save_file

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "safetensors": safetensors.__version__, "numpy": np.__version__, "pillow": PIL.__version__, "python": sys.version.split()[0]}
    summary = {}
    for name, v in VARIANTS.items():
        pv = torch.from_numpy(pixel_values(args.images, v["image"]))
        best = None  # (quality, seed); the first seed of the best quality wins
        for seed in range(args.seed, args.seed + SEED_TRIES):
            model, special = build(v, seed)
            q = quality(run(model, special, pv, v["decoder_input_ids"]), special)
            if best is None or q > best[0]:
                best = (q, seed)
            if q == 2:
                break
        if best[0] == 0:
            raise SystemExit(f"{name}: no seed in [{args.seed}, {args.seed + SEED_TRIES}) gives usable generations")
        seed = best[1]
        model, special = build(v, seed)
        out = run(model, special, pv, v["decoder_input_ids"])
        target = os.path.join(args.out, name)
        os.makedirs(target, exist_ok=True)
        model.save_pretrained(target)
        tensors = {"pixel_values": pv, **out}
        meta = {"generator": "tools/golden/vit_gpt2.py", "seed": str(seed), "seed_quality": str(best[0]), "max_length": str(MAX_LENGTH),
                "num_beams": str(NUM_BEAMS), "images": ",".join(IMAGES), "special_token_id": str(special), **versions}
        save_file({k: t.detach().contiguous() for k, t in tensors.items()}, os.path.join(target, "golden.safetensors"),
                  metadata=meta)
        summary[name] = {"seed": seed, "eos_in_outputs": best[0] == 2, "greedy": out["greedy.sequences"].tolist(), "beam": out["beam.sequences"].tolist(),
                         "beam_scores": [round(x, 6) for x in out["beam.sequences_scores"].tolist()]}
        print(name, json.dumps(summary[name]))
    with open(os.path.join(args.out, "vit_gpt2_tiny", "README.md"), "w") as f:
        f.write(README.format(summary=format_summary(summary), **versions))


def format_summary(summary):
    lines = []
    for name, s in summary.items():
        lines.append(f"{name}: seed {s['seed']}, end-of-sequence in outputs: {s['eos_in_outputs']}")
        for key in ("greedy", "beam", "beam_scores"):
            lines.append(f"  {key}: {json.dumps(s[key])}")
    return "\n".join(lines)


README = """# Tiny random ViT-GPT2 captioning models (golden data)

Written by `tools/golden/vit_gpt2.py` (`python3 tools/golden/vit_gpt2.py --out tests/data`; it reads
the images in `tests/data/images`). Versions: torch {torch}, transformers {transformers},
safetensors {safetensors}, numpy {numpy}, Pillow {pillow}, Python {python}; CPU, float32, eager
attention, deterministic algorithms, one thread.

- `vit_gpt2_tiny/`: spec vision_models.md 1.7 (ViT hidden 32, 2 layers, 4 heads, intermediate 37,
  image 32, patch 8; GPT-2 n_embd 32, 2 layers, 4 heads, vocab 50, n_positions 20, cross-attention;
  bos = eos = pad = decoder_start = 49).
- `vit_gpt2_tiny_b/`: other sizes (hidden 48, 3+3 layers, 6 heads, intermediate 50, image 48,
  patch 16, vocab 67, n_positions 24; special id 66).

Each holds `save_pretrained` output (config.json, model.safetensors, generation_config.json; the
weights carry the legacy v4 key names, e.g. `encoder.encoder.layer.0.attention.attention.query.weight`,
as transformers 5.x converts back when saving; `decoder.lm_head.weight` is tied to
`decoder.transformer.wte.weight` and not stored) and
`golden.safetensors` (its tensors and metadata are listed in the script's docstring): pixel_values of
`photo_640x480.jpg` and `noise_17x23.png` via ViTImageProcessorPil, encoder states, teacher-forced
decoder logits, greedy and 4-beam generations (max_length 12, length_penalty 1.0,
early_stopping False) with scores. Every parameter was re-drawn from N(0, 0.5) with the seed in the
metadata (the first seed for which greedy row 0 runs to max_length, beam differs from greedy and
some row ends with end-of-sequence; `eos_in_outputs` below says whether that last part was met).

Results:
```
{summary}
```
"""

if __name__ == "__main__":
    main()
