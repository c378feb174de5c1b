#!/usr/bin/env python3
"""Golden expectations for ViT-GPT2 generation settings beyond the ones tools/golden/vit_gpt2.py
records: Hugging Face `generate()` on the tiny test models, from their golden pixel values, with

  - no generation argument at all: the models' files set no max_length, so transformers 5.x
    generates 20 new tokens (max_length 21 with the start token), the case
    `VitGpt2::generation_options()` must reproduce;
  - max_new_tokens / min_new_tokens beside a max_length / min_length they override (min_new_tokens
    shows where a row would end with eos within 5 new tokens);
  - 4 beams returning their best 3 hypotheses (num_return_sequences), with sequences_scores.

Writes tests/data/<model>/generation_options.json for each model directory given; the C++ test
(tests/models/test_vit_gpt2.cpp) compares ids exactly and scores to 1e-4 (relative). Runs on the
CPU in float32 (transformers 5.17.0, torch 2.15.0 from PyPI), after tools/golden/vit_gpt2.py:
    python tools/golden/vit_gpt2_generation.py tests/data/vit_gpt2_tiny tests/data/vit_gpt2_tiny_b
"""
import argparse
import json
import os

import torch
import transformers
from safetensors.torch import load_file
from transformers import VisionEncoderDecoderModel

CASES = {
    "defaults": {},
    "new_tokens": {"max_length": 4, "max_new_tokens": 6, "min_length": 2, "min_new_tokens": 5},
    "beams4_return3": {"num_beams": 4, "num_return_sequences": 3, "max_new_tokens": 7},
}


def unpadded(row, eos):
    """HF pads finished rows; encore returns each sequence up to its first eos after the start token."""
    row = list(row)
    if eos in row[1:]:
        return row[: row.index(eos, 1) + 1]
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="tiny model directories holding golden.safetensors")
    args = parser.parse_args()
    torch.manual_seed(0)
    for model_dir in args.models:
        model = VisionEncoderDecoderModel.from_pretrained(model_dir).eval().float()
        pixels = load_file(os.path.join(model_dir, "golden.safetensors"))["pixel_values"].float()
        eos = model.generation_config.eos_token_id
        cases = {}
        for name, kwargs in CASES.items():
            with torch.no_grad():
                out = model.generate(pixel_values=pixels, return_dict_in_generate=True, output_scores=True, **kwargs)
            seqs = [unpadded(r, eos) for r in out.sequences.tolist()]
            entry = {"options": kwargs, "ids": seqs}
            if getattr(out, "sequences_scores", None) is not None:
                entry["scores"] = [float(s) for s in out.sequences_scores]
            cases[name] = entry
            print(f"{model_dir}: {name}: lengths {[len(s) for s in seqs]}")
        doc = {
            "generator": "tools/golden/vit_gpt2_generation.py",
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "cases": cases,
        }
        with open(os.path.join(model_dir, "generation_options.json"), "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
