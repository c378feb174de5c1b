#!/usr/bin/env python3
"""Writes tests/data/gpt2-tokenizer/golden.jsonl: GPT-2 tokenizer results from Hugging Face.

Needs: pip install transformers tokenizers regex   (transformers 5.17.0 was used; any works)

Every line is one JSON object:
  {"kind": "meta", ...}        versions and notes (first line)
  {"kind": "encode", "text", "ids", "tokens", "decoded", "decoded_skip", "decoded_cleanup"}
        ids/tokens: GPT2Tokenizer(vocab.json, merges.txt).encode(text) and its vocabulary strings;
        decoded*: decode(ids) plain, with skip_special_tokens=True, with clean_up_tokenization_spaces=True.
        When another implementation disagrees on the ids, "ids_<name>" holds its answer (see below).
  {"kind": "decode", "ids", "text", "text_skip"}
        decode() of id sequences that are not encodings (random ids, partial UTF-8 sequences).

Implementations compared on every string:
  hf        transformers' GPT2Tokenizer. In transformers 5.x it is backed by the Rust `tokenizers`
            library (GPT2TokenizerFast is the same class); in 4.x it is the pure-Python "slow" one.
  hf_fast   GPT2TokenizerFast, when it is a different class (4.x).
  python    the original byte-level BPE algorithm written out below with the `regex` module, i.e.
            what 4.x's slow GPT2Tokenizer does; independent of the installed transformers.
"hf" is the expected answer. The C++ test checks ids, tokens and all decodings.

Usage: python3 tools/golden/gpt2_tokenizer.py [--vocab-dir DIR] [--out FILE]
"""
import argparse
import base64
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def byte_alphabet():
    """GPT-2's byte -> printable character table."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class ReferenceBPE:
    """Byte-level BPE as in OpenAI's GPT-2 encoder (and transformers 4.x's slow tokenizer)."""

    def __init__(self, vocab_path, merges_path):
        import regex

        self.pattern = regex.compile(GPT2_PATTERN)
        with open(vocab_path, encoding="utf-8") as f:
            self.vocab = json.load(f)
        with open(merges_path, encoding="utf-8") as f:
            lines = [l for l in f.read().split("\n") if l and not l.startswith("#version")]
        self.ranks = {tuple(l.split(" ")): i for i, l in enumerate(lines)}
        self.bytes_to_chars = byte_alphabet()
        self.special = "<|endoftext|>"

    def _bpe(self, word):
        parts = list(word)
        while len(parts) > 1:
            pairs = {(parts[i], parts[i + 1]) for i in range(len(parts) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def encode(self, text):
        ids = []
        for k, chunk in enumerate(text.split(self.special)):
            if k:
                ids.append(self.vocab[self.special])
            for word in self.pattern.findall(chunk):
                mapped = "".join(self.bytes_to_chars[b] for b in word.encode("utf-8"))
                ids.extend(self.vocab[t] for t in self._bpe(mapped))
        return ids


def corpus():
    """The test strings: hand-picked edge cases, then seeded random mixtures."""
    c = [
        # prose
        "Hello world", " Hello world", "Hello  world", "The quick brown fox jumps over the lazy dog.",
        "A man riding a wave on top of a surfboard.", "a cat sitting on a couch next to a remote control",
        "Two dogs are playing with a frisbee in the park!", "Is this a question? Yes, it is.",
        "GPT-2 is a large transformer-based language model with 1.5 billion parameters.",
        "She sells sea shells by the sea shore; the shells she sells are surely sea shells.",
        "\"Quoted text,\" he said -- and (parenthetical) [bracketed] {braced}.",
        "Mr. Smith went to Washington D.C. on Jan. 5th, 2021 at 3:30 p.m.",
        "ALL CAPS SENTENCE WITH SHOUTING", "camelCaseIdentifierName and snake_case_name",
        "Ellipsis... and dash—em dash – en dash", "Semicolons; colons: commas, periods.",
        "a", "A", ".", "!", "?", "", " ", "  ", "a b c d e f g", "I", "x y",
        # numbers
        "123", "1234567890", "3.14159", "1,000,000", "2024-01-01", "0x1F", "1e-5", " 42", "abc123def",
        "Call 555-1234 now", "$19.99", "100%", "-7", "+1 (800) 555-0199", "v1.2.3", "1st 2nd 3rd 4th",
        "½ ¼ ¾ ² ³ ¹", "①②③", "٣٤٥ ١٢", "१२३ ४५६", "１２３ ＡＢＣ", "Ⅻ Ⅳ ⅸ", "𝟘𝟙𝟚",
        "12345678901234567890123456789012345678901234567890",
        # code
        "def foo(x):\n    return x * 2\n", "int main() { return 0; }", "for (int i = 0; i < n; ++i) {}",
        "if x == 1:\n\tprint('yes')\nelse:\n\tpass", '{"key": "value", "n": [1, 2, 3]}',
        "<html><body class=\"x\">Hi</body></html>", "https://example.com/path?q=1&r=two#frag",
        "user.name+tag@example.org", r"^\d{3}-\d{4}$", "/usr/local/bin/python3 --version",
        "x += 1; y -= 2; z *= 3; w /= 4;", "a->b.c::d", "std::vector<std::string> v{};", "#include <stdio.h>",
        "SELECT * FROM users WHERE id = 42;", "git commit -m \"fix: it's done\"",
        "    indented four", "\tindented tab", "lambda x: x**2 if x>0 else -x", "~!@#$%^&*()_+`-=[]\\;',./",
        # whitespace
        "a  b", "a   b", "a    b", "  leading", "   leading three", "trailing ", "trailing  ", "trailing   ",
        "\n", "\n\n", "\n\n\n", "a\nb", "a\n\nb", "a \n b", "a\n b", "a \nb", "\t", "\t\ttab", "a\t b", "a \tb",
        "\r\n", "line one\r\nline two\r\n", " \n ", "\n \n", "   \n\n   x", "x   ", "x\n", "    ", "\u3000",
        "a\u3000b", "a\u3000\u3000b", " \u3000 ", "\u00a0", "a\u00a0b", "a\u00a0 b", "a \u00a0b", "\u2003x",
        "\u2009thin\u2009space", "\x0b\x0c", "a\x0bb", "\x1c\x1d\x1e\x1f", "a\x1cb", "\u0085", "a\u0085b",
        "\u2028\u2029", "word \n\n\n next", "end with spaces and newline  \n",
        # contractions
        "I'm", "you're", "they've", "he'll", "she'd", "it's", "don't", "can't", "won't", "IT'S", "I'M",
        "We'Re", "THEY'VE", "He'LL", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "''s", "'S", "'sa",
        "rock'n'roll", "the dogs' bones", "'tis", "'twas", "o'clock", " 's", "it’s curly", "x's y'd z'll",
        "'", "''", "'''", "can''t", "Let's go", "LET'S GO", "I've've", "'re're",
        # unicode text
        "café", "naïve résumé", "Ünïcödé", "Straße", "cafe\u0301", "e\u0301\u0302\u0303", "한국어 텍스트",
        "日本語のテキストです。", "中文字符测试", "Привет, мир!", "Ελληνικά γράμματα", "עברית", "مرحبا بالعالم",
        "हिन्दी भाषा", "ภาษาไทย", "தமிழ்", "ქართული", "Հայերեն", "አማርኛ", "ﬁ ﬂ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "Z̤̈a̴l̸g̶o̷",
        "ǅ ǈ ǋ", "ʰʲʷ", "Ᲊᲊ", "ÅÄÖåäö", "Ωmega μ", "漢字かなカナ", "𠀋𠀍", "Ǆemal", "İstanbul ı",
        "x\u0300", "\u0300x", " \u0301", "\u0301\u0301",
        # emoji and symbols
        "😀", "😀😃😄", "I love 🍕!", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇺🇸🇯🇵", "❤️", "1️⃣", "🧑🏿‍🚀", "© ® ™ € £ ¥",
        "→ ← ↑ ↓", "∑∫√∞≠≤≥", "★☆♠♣♥♦", " 🎉 ", "emoji👍in👍text", "#️⃣*️⃣",
        # control and invisible characters
        "\x00", "a\x00b", "\x01\x02\x03", "a\x7fb", "\x1b[31mred\x1b[0m", "\u200b", "a\u200bb", "\u200d",
        "\ufeffBOM", "\u200e\u200f", "\ufffd", "\ufffd\ufffd", "\U0010fffd", "\ue000",
        # special tokens
        "<|endoftext|>", "a<|endoftext|>b", "<|endoftext|><|endoftext|>", "<|endoftext", "endoftext|>",
        " <|endoftext|> ", "Hello<|endoftext|> world", "<|endoftext|>\n", "<<|endoftext|>>",
        # long words
        "a" * 1000, "Pneumonoultramicroscopicsilicovolcanoconiosis", "supercalifragilisticexpialidocious" * 20,
        "1234567890" * 300, "!" * 500, " " * 300 + "x", "\n" * 200, "ab" * 700, "é" * 400, "日本" * 300,
        "😀" * 100,
        # newer Unicode letters (classification depends on the regex engine's Unicode version)
        "a\u0558b \u0558x", "\u0558's", "x \u1c89\u1c8a", "a\u1c89b",
    ]
    rnd = random.Random(1234)
    c.append("".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(500)))
    c.append(base64.b64encode(bytes(rnd.randrange(256) for _ in range(1500))).decode())
    pool = (list("abcXYZ019 '\n\t.,!?-_") + [" ", " ", "  ", "'s", "'t", "'re", "<|endoftext|>"]
            + list("éüßñçøå日本語한글ПрΩعربहि") + ["\u0301", "\u0308", "\u200d", "\u00a0", "\u3000", "\x00", "\x7f"]
            + ["😀", "👍🏽", "🇫🇷", "❤️", "½", "٣", "१", "Ⅻ", "ǅ", "\U0001d400", "\ufffd"])
    for _ in range(120):
        c.append("".join(rnd.choice(pool) for _ in range(rnd.randint(1, 40))))
    return c


def decode_cases(vocab_size, byte_id):
    """Id sequences that are not encodings: partial and invalid UTF-8, random ids."""
    b = byte_id
    cases = [
        [b[0xE2]], [b[0xE2], b[0x80]], [b[0xF0], b[0x9F], b[0x98]], [b[0xF0], b[0x9F], b[0x98], b[0x80]],
        [b[0xFF]], [b[0xC0], b[0x80]], [b[0xED], b[0xA0], b[0x80]], [b[0xF4], b[0x90], b[0x80], b[0x80]],
        [b[0x80], b[0x80], b[0x41]], [b[0xE0], b[0x80], b[0x80]], [b[0xC3]], [b[0xC3], b[0x28]],
        [b[0xE2], b[0x28], b[0xA1]], [b[0xF8], b[0x88], b[0x80], b[0x80], b[0x80]], [b[0xF0], b[0x28], b[0x8C], b[0xBC]],
        [447], [447, 227], [447, 15496], [15496, 50256, 995], [50256], [50256, 50256], [],
    ]
    rnd = random.Random(99)
    for _ in range(60):
        cases.append([rnd.randrange(vocab_size) for _ in range(rnd.randint(1, 12))])
    for _ in range(20):  # byte tokens only: dense in ill-formed UTF-8
        cases.append([b[rnd.randrange(256)] for _ in range(rnd.randint(1, 8))])
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab-dir", default=os.path.join(ROOT, "tests", "data", "gpt2-tokenizer"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "gpt2-tokenizer", "golden.jsonl"))
    args = ap.parse_args()

    import tokenizers
    import transformers
    from transformers import GPT2Tokenizer

    vocab = os.path.join(args.vocab_dir, "vocab.json")
    merges = os.path.join(args.vocab_dir, "merges.txt")
    hf = GPT2Tokenizer(vocab, merges)
    # transformers 5.x ignores clean_up_tokenization_spaces=True for BPE tokenizers unless forced;
    # the golden records the classic clean-up (always applied by 4.x) that encore offers as an option.
    hf_cleanup = GPT2Tokenizer(vocab, merges, clean_up_tokenization_spaces=True,
                               clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output=True)
    others = {}
    fast_cls = getattr(transformers, "GPT2TokenizerFast", None)
    if fast_cls is not None and fast_cls is not GPT2Tokenizer:
        others["hf_fast"] = fast_cls(vocab, merges)
    reference = ReferenceBPE(vocab, merges)

    byte_id = {b: reference.vocab[ch] for b, ch in byte_alphabet().items()}
    texts = corpus()
    records, disagreements = [], 0
    for text in texts:
        ids = hf.encode(text)
        rec = {
            "kind": "encode",
            "text": text,
            "ids": ids,
            "tokens": hf.convert_ids_to_tokens(ids),
            "decoded": hf.decode(ids, clean_up_tokenization_spaces=False),
            "decoded_skip": hf.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False),
            "decoded_cleanup": hf_cleanup.decode(ids, clean_up_tokenization_spaces=True),
        }
        alt = {name: tok.encode(text) for name, tok in others.items()}
        alt["python"] = reference.encode(text)
        for name, other in alt.items():
            if other != ids:
                rec["ids_" + name] = other
                disagreements += 1
                print(f"disagreement ({name}) on {text!r}", file=sys.stderr)
        records.append(rec)
    for ids in decode_cases(len(reference.vocab), byte_id):
        records.append({
            "kind": "decode",
            "ids": ids,
            "text": hf.decode(ids, clean_up_tokenization_spaces=False),
            "text_skip": hf.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False),
        })
    meta = {
        "kind": "meta",
        "generator": "tools/golden/gpt2_tokenizer.py",
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "python": sys.version.split()[0],
        "expected": f"transformers {transformers.__version__} GPT2Tokenizer ({type(hf._tokenizer).__module__ if hasattr(hf, '_tokenizer') else 'python'})",
        "compared": ["python (regex-module reference BPE)"] + list(others),
        "encode_strings": len(texts),
        "disagreements": disagreements,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        for r in [meta] + records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}: {len(texts)} strings, {len(records) - len(texts)} decode cases, "
          f"{disagreements} disagreements")


if __name__ == "__main__":
    main()
