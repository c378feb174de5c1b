#!/usr/bin/env python3
"""Golden expectations for encore's generate() (tests/generation/test_generation.cpp).

Runs Hugging Face transformers' own `generate()` (greedy and beam search) on a tiny toy causal LM
whose next-token logits are a deterministic function of (scenario seed, batch item, token history).
The C++ test re-implements the same function (ToyLogits in test_generation.cpp) in a fake
DecoderSession, runs encore::generate() with the same options and compares ids exactly and scores
within 1e-5.

The logits function (integer arithmetic, exactly representable in float32, easy to mirror):
    mix(z)      = splitmix64 finaliser: z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27;
                  z *= 0x94D049BB133111EB; z ^= z >> 31                      (all mod 2**64)
    h0          = mix(seed * G + item + 1)                                   G = 0x9E3779B97F4A7C15
    h           = fold over tokens t of the history (start token included): h = mix(h + t + 1)
    logit[v]    = (mix(h + (v + 1) * G) >> 44) * 2**-17                      in [0, 8)
    logit[eos] += eos_bias + eos_bias_step * (len(history) - 1)              multiples of 1/16
Rows are batch-major (row = item * num_beams + beam), so item = row // num_beams.

Each case also records `steps`, the number of forward passes HF made, which the test compares with
the number of DecoderSession::step calls (this pins the stopping rules, not just the outputs).
The greedy "score" is not an HF output: it is the float32 sum of log_softmax(processed scores)[token]
over the generated tokens, taken from `output_scores`.

Usage (the goldens were made with transformers 5.17.0 and torch 2.15.0 from PyPI, CPU only, which gave
the cases made earlier with torch 2.10.0 unchanged; the
Linux torch wheel pulls its CUDA runtime wheels, ~3 GB, even though nothing here uses a GPU):
    python -m venv /tmp/hfenv && /tmp/hfenv/bin/pip install transformers==5.17.0 torch==2.15.0
    /tmp/hfenv/bin/python tools/golden/generation_reference.py --out tests/data/generation/golden.json
"""
import argparse
import json
import sys

import torch
import transformers
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix(z):
    z &= MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def toy_logits(params, item, history):
    h = mix(params["seed"] * GOLDEN + item + 1)
    for t in history:
        h = mix(h + t + 1)
    vocab = params["vocab"]
    out = [(mix(h + (v + 1) * GOLDEN) >> 44) * 2.0**-17 for v in range(vocab)]
    eos = params["eos"]
    if eos >= 0:
        out[eos] += params["eos_bias"] + params["eos_bias_step"] * (len(history) - 1)
    return out  # every value is exact in float32


class ToyConfig(PretrainedConfig):
    model_type = "encore_toy_lm"

    def __init__(self, vocab_size=16, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size


class ToyLM(PreTrainedModel, GenerationMixin):
    config_class = ToyConfig

    def __init__(self, config, params, num_beams):
        super().__init__(config)
        self.dummy = nn.Parameter(torch.zeros(1))  # generate() looks for a device/dtype
        self.params = params
        self.num_beams = num_beams
        self.calls = 0  # forward passes = decoder steps (use_cache=False: whole history each time)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        rows, length = input_ids.shape
        self.calls += 1
        logits = torch.zeros(rows, length, self.config.vocab_size, dtype=torch.float32)
        for r in range(rows):
            history = input_ids[r].tolist()
            logits[r, -1] = torch.tensor(toy_logits(self.params, r // self.num_beams, history), dtype=torch.float32)
        return CausalLMOutputWithPast(logits=logits)


def true_ids(row, eos, max_length):
    """HF pads outputs; a hypothesis ends at its first eos (after the start token) or at max_length."""
    row = list(row)
    if eos >= 0 and eos in row[1:]:
        return row[: row.index(eos, 1) + 1]
    assert len(row) == max_length, "a hypothesis without eos must reach max_length"
    return row


def greedy_scores(out, ids_per_row):
    """Sum of log_softmax(processed scores)[token] over generated tokens, summed in float32."""
    totals = []
    for b, ids in enumerate(ids_per_row):
        total = torch.zeros((), dtype=torch.float32)
        for step, token in enumerate(ids[1:]):
            logp = torch.log_softmax(out.scores[step][b].float(), dim=-1)[token]
            total = total + logp
        totals.append(float(total))
    return totals


def run_case(case):
    o = case["options"]
    params = {k: case[k] for k in ("seed", "vocab", "eos_bias", "eos_bias_step")}
    params["eos"] = o["eos_token_id"]
    num_beams = o["num_beams"]
    model = ToyLM(ToyConfig(vocab_size=case["vocab"]), params, num_beams).eval()
    eos = o["eos_token_id"]
    pad = o["pad_token_id"]
    early = {0: False, 1: True, 2: "never"}[o["early_stopping"]]
    input_ids = torch.full((case["batch"], 1), o["start_token_id"], dtype=torch.long)
    # max_new_tokens / min_new_tokens, when set, are passed beside max_length / min_length: HF lets
    # them win, and the test checks that encore does too.
    max_length = o["max_length"] if o["max_new_tokens"] < 0 else 1 + o["max_new_tokens"]
    kwargs = dict(
        max_length=o["max_length"],
        min_length=o["min_length"],
        num_return_sequences=o["num_return_sequences"],
        num_beams=num_beams,
        do_sample=False,
        eos_token_id=eos if eos >= 0 else None,
        pad_token_id=pad if pad >= 0 else (eos if eos >= 0 else None),
        bos_token_id=o["start_token_id"],
        use_cache=False,
        return_dict_in_generate=True,
        output_scores=True,
    )
    if num_beams > 1:
        kwargs.update(length_penalty=o["length_penalty"], early_stopping=early)
    if o["max_new_tokens"] >= 0:
        kwargs.update(max_new_tokens=o["max_new_tokens"])
    if o["min_new_tokens"] >= 0:
        kwargs.update(min_new_tokens=o["min_new_tokens"])
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
    ids = [true_ids(r, eos, max_length) for r in out.sequences.tolist()]
    scores = [float(s) for s in out.sequences_scores] if num_beams > 1 else greedy_scores(out, ids)
    return [{"ids": i, "score": s} for i, s in zip(ids, scores)], model.calls


def opts(max_length, num_beams=1, min_length=0, length_penalty=1.0, early_stopping=0, eos=3, pad=-1, start=0,
         max_new_tokens=-1, min_new_tokens=-1, num_return_sequences=1):
    return dict(max_length=max_length, min_length=min_length, num_beams=num_beams, length_penalty=length_penalty,
                early_stopping=early_stopping, start_token_id=start, eos_token_id=eos, pad_token_id=pad,
                max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                num_return_sequences=num_return_sequences)


def case(name, batch, seed, options, vocab=24, eos_bias=-1.0, eos_bias_step=0.75):
    return dict(name=name, batch=batch, vocab=vocab, seed=seed, eos_bias=eos_bias, eos_bias_step=eos_bias_step,
                options=options)


CASES = [
    case("greedy_batch3", 3, 11, opts(12)),
    case("greedy_batch3_pad", 3, 12, opts(12, pad=5), eos_bias=-2.0, eos_bias_step=0.5),
    case("greedy_min_length", 2, 13, opts(12, min_length=6), eos_bias=4.0, eos_bias_step=0.0),
    case("greedy_no_eos", 2, 14, opts(9, eos=-1)),
    case("beam4_lp1_early_false", 2, 21, opts(12, num_beams=4)),
    case("beam4_lp1_early_false_b3", 3, 22, opts(14, num_beams=4), eos_bias=-2.0, eos_bias_step=0.5),
    case("beam3_lp0.5", 2, 23, opts(12, num_beams=3, length_penalty=0.5)),
    case("beam3_lp2.0", 2, 24, opts(12, num_beams=3, length_penalty=2.0)),
    case("beam3_lp2.0_never", 2, 24, opts(12, num_beams=3, length_penalty=2.0, early_stopping=2)),
    case("beam3_early_true", 2, 25, opts(12, num_beams=3, early_stopping=1)),
    case("beam3_early_true_lp2_b3", 3, 32, opts(14, num_beams=3, length_penalty=2.0, early_stopping=1)),
    case("beam4_early_true_b3", 3, 33, opts(14, num_beams=4, early_stopping=1), eos_bias=-2.0, eos_bias_step=0.5),
    case("beam3_early_never", 2, 26, opts(12, num_beams=3, early_stopping=2)),
    case("beam4_max_length_no_eos", 2, 27, opts(8, num_beams=4), eos_bias=-24.0, eos_bias_step=0.0),
    case("beam3_no_eos_token", 1, 28, opts(7, num_beams=3, eos=-1)),
    case("beam3_max_length_mixed", 2, 29, opts(7, num_beams=3), eos_bias=-1.5, eos_bias_step=0.25),
    case("beam3_min_length", 2, 30, opts(12, num_beams=3, min_length=5), eos_bias=3.0, eos_bias_step=0.0),
    case("beam2_lp0", 2, 31, opts(10, num_beams=2, length_penalty=0.0)),
    # max_new_tokens / min_new_tokens win over max_length / min_length (set to other values here).
    case("greedy_max_new_tokens", 2, 41, opts(20, max_new_tokens=6), eos_bias=-24.0, eos_bias_step=0.0),
    case("greedy_min_new_tokens", 2, 42, opts(12, min_length=2, min_new_tokens=5), eos_bias=4.0, eos_bias_step=0.0),
    case("beam3_max_new_tokens", 2, 43, opts(4, num_beams=3, max_new_tokens=9)),
    case("beam3_min_new_tokens", 2, 44, opts(12, num_beams=3, min_length=9, min_new_tokens=3), eos_bias=3.0,
         eos_bias_step=0.0),
    # The best n hypotheses per item, best first.
    case("beam4_return3", 2, 45, opts(12, num_beams=4, num_return_sequences=3)),
    case("beam3_return3_early_true_b3", 3, 46, opts(14, num_beams=3, early_stopping=1, num_return_sequences=3),
         eos_bias=-2.0, eos_bias_step=0.5),
    case("beam4_return2_max_length", 2, 47, opts(8, num_beams=4, num_return_sequences=2), eos_bias=-24.0,
         eos_bias_step=0.0),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    results = []
    for c in CASES:
        expected, calls = run_case(c)
        results.append(dict(c, expected=expected, steps=calls))
        lens = [len(e["ids"]) for e in expected]
        print(f"{c['name']:32s} steps {calls:2d} lengths {lens} scores {[round(e['score'], 4) for e in expected]}", file=sys.stderr)
    doc = dict(
        generator="tools/golden/generation_reference.py",
        transformers=transformers.__version__,
        torch=torch.__version__,
        cases=results,
    )
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
