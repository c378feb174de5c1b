#!/usr/bin/env python3
"""Converts a Hugging Face checkpoint saved as pytorch_model.bin (a pickle) into model.safetensors,
once, offline, so that encore can load it (encore never unpickles).

    python3 tools/convert_to_safetensors.py MODEL_DIR [OUT_DIR]

Writes OUT_DIR/model.safetensors (default: MODEL_DIR itself) and copies config.json,
generation_config.json and the tokenizer/processor files next to it. Legacy non-persistent
buffers that old GPT-2 checkpoints pickled (attn.bias / attn.masked_bias / crossattention.bias
causal masks) are dropped; tied tensors are stored once (encore uses wte for the LM head). Needs
torch and safetensors (pip install torch safetensors). Only load checkpoints you trust:
torch.load runs with weights_only=True, which refuses arbitrary pickled code.
"""
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

LEGACY_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".crossattention.bias", ".crossattention.masked_bias")
SIDE_FILES = ("config.json", "generation_config.json", "preprocessor_config.json", "vocab.json", "merges.txt",
              "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    src = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) == 3 else src
    binary = src / "pytorch_model.bin"
    if not binary.is_file():
        print(f"convert_to_safetensors: {binary} not found", file=sys.stderr)
        return 1
    state = torch.load(binary, map_location="cpu", weights_only=True)
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    tensors, seen = {}, {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor) or name.endswith(LEGACY_SUFFIXES):
            continue
        key = (value.data_ptr(), value.dtype, tuple(value.shape))
        if value.numel() > 0 and key in seen:  # tied weight: keep the first name only
            continue
        seen[key] = name
        tensors[name] = value.contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    if out != src:
        for f in SIDE_FILES:
            if (src / f).is_file():
                shutil.copy2(src / f, out / f)
    print(f"wrote {out / 'model.safetensors'}: {len(tensors)} tensors "
          f"({sum(t.numel() for t in tensors.values()) / 1e6:.1f}M parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
