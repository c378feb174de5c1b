#!/usr/bin/env python3
"""Writes the seed corpora of the tokenizer fuzzers (Python 3 standard library only):

  tests/fuzz/corpus_tokenizer/        texts for fuzz_tokenizer, and two id sequences (int32 LE)
  tests/fuzz/corpus_tokenizer_files/  tokenizer files for fuzz_tokenizer_files, in its layout:
                                      'v' + vocab.json + NUL + merges.txt, or 't' + tokenizer.json

usage: tests/fuzz/make_tokenizer_corpora.py   (rewrites both directories)
"""
import json
import pathlib
import shutil
import struct

FUZZ = pathlib.Path(__file__).resolve().parent

TEXTS = {
    "ascii_sentence.txt": b"A man riding a wave on top of a surfboard.",
    "contractions.txt": b"I'm sure they're here, aren't they? We've said it's fine; you'll see, he'd know. 'S 'T 'RE don'T",
    "numbers.txt": "In 2026, 3.14159 and 1,000,000 (or 1e6) -42 +7 0x1F 12345678901234567890 \u0663\u0664 \u2167".encode(),
    "whitespace_runs.txt": "  leading\t\ttabs   and    spaces\n\n\nnewlines\r\n\x0b\x0c  \u00a0nbsp\u3000ideographic  \n   ".encode(),
    "unicode_mixed.txt": "caf\u00e9 na\u00efve \u00c5ngstr\u00f6m \u0394\u03b5\u03bb\u03c4\u03b1 \u041f\u0440\u0438\u0432\u0435\u0442 "
    "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u0928\u092e\u0938\u094d\u0924\u0947 e\u0301 \u0558's".encode(),
    "cjk.txt": "\u4e00\u53ea\u732b\u5750\u5728\u7a97\u53f0\u4e0a\u3002\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3001"
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8".encode(),
    "emoji.txt": "\U0001F600 \U0001F468\u200d\U0001F469\u200d\U0001F467 \U0001F44D\U0001F3FD \U0001F1EF\U0001F1F5 "
    "\u2764\ufe0f\U0001F525\U0001F525 \U0010FFFD".encode(),
    "special_token.txt": b"first<|endoftext|>second <|endoftext|><|endoftext|> <|endoftext| <|endoftext|>>\n<|endoftext|>",
    "invalid_utf8.txt": b"ok \xff\xfe bad \xc0\xaf overlong \xed\xa0\x80 surrogate \xf4\x90\x80\x80 too big \xe2\x82 cut "
    b"\x80\xbf lone \xf0\x9f\x98",
    "control_bytes.txt": b"\x00\x01\x02nul and controls\x7f\x1b[31m red\x1b[0m \x00\x00",
    # As ids: q, Ġl, <|endoftext|>, !, Ń, é (all in range); then past the end, -1, INT32_MIN, INT32_MAX.
    "ids_in_range.bin": struct.pack("<6i", 80, 300, 50256, 0, 255, 165),
    "ids_out_of_range.bin": struct.pack("<4i", 50257, -1, -(2**31), 2**31 - 1),
}


def byte_alphabet():
    """GPT-2's byte -> printable character table (the same rule as bpe_tokenizer_unicode.cpp)."""
    chars, extra = [], 256
    for b in range(256):
        if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF:
            chars.append(chr(b))
        else:
            chars.append(chr(extra))
            extra += 1
    return chars


def tiny_vocab(extra=()):
    vocab = {c: i for i, c in enumerate(byte_alphabet())}
    for token in extra:
        vocab[token] = len(vocab)
    return vocab


def split(vocab_text, merges_text):
    return b"v" + vocab_text.encode() + b"\0" + merges_text.encode()


def tokenizer_json(doc):
    return b"t" + json.dumps(doc, ensure_ascii=False).encode()


def tokenizer_doc(merges, **extra):
    doc = {"version": "1.0", "added_tokens": [{"id": 259, "content": "<|endoftext|>", "special": True},
                                              {"id": 260, "content": "<image>", "special": False}],
           "normalizer": None, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
           "model": {"type": "BPE", "vocab": tiny_vocab(["ab", "abc", "\u0120ab"]), "merges": merges}}
    doc.update(extra)
    return doc


def files_corpus():
    good = json.dumps(tiny_vocab(["ab"]), ensure_ascii=False)
    words = tiny_vocab(["ab", "abc", "\u0120ab", "<|endoftext|>"])
    gap, dup, missing = tiny_vocab(["ab"]), tiny_vocab(["ab"]), tiny_vocab(["ab"])
    gap["ab"], dup["ab"] = 300, 5
    del missing["\u0100"]
    missing["zz"] = 0
    out = {
        "valid_vocab_merges": split(json.dumps(words, ensure_ascii=False), "#version: 0.2\na b\nab c\n\u0120 ab\n"),
        "valid_escaped_crlf": split(json.dumps(words), "#version: 0.2\r\na b\r\nab c\r\n\u0120 ab\r\n"),
        "valid_no_merges": b"v" + good.encode(),
        "valid_tokenizer_json_strings": tokenizer_json(tokenizer_doc(["a b", "ab c", "\u0120 ab"])),
        "valid_tokenizer_json_pairs": tokenizer_json(tokenizer_doc([["a", "b"], ["ab", "c"], ["\u0120", "ab"]])),
        "malformed_vocab_syntax": split('{\n"a": 0,\n"b" 1\n}', "a b\n"),
        "malformed_vocab_array": split("[1, 2]", "a b\n"),
        "malformed_duplicate_key": split('{"a": 0, "a": 1}', "a b\n"),
        "malformed_id_gap": split(json.dumps(gap), "a b\n"),
        "malformed_duplicate_id": split(json.dumps(dup), "a b\n"),
        "malformed_missing_byte": split(json.dumps(missing), "a b\n"),
        "malformed_deep_nesting": split("[" * 200 + "]" * 200, ""),
        "malformed_merge_one_token": split(good, "#version: 0.2\na b\nabc\n"),
        "malformed_merge_double_space": split(good, "a  b\n"),
        "malformed_merge_unknown": split(good, "a b\nq zz\n"),
        "malformed_merge_result": split(good, "a b\nb c\n"),
        "malformed_tj_normalizer": tokenizer_json(tokenizer_doc([], normalizer={"type": "NFC"})),
        "malformed_tj_prefix_space": tokenizer_json(
            tokenizer_doc([], pre_tokenizer={"type": "ByteLevel", "add_prefix_space": True})),
        "malformed_tj_unigram": tokenizer_json({"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}),
        "malformed_tj_lstrip": tokenizer_json(
            tokenizer_doc([], added_tokens=[{"id": 259, "content": "<x>", "lstrip": True}])),
        "malformed_tj_added_gap": tokenizer_json(tokenizer_doc([], added_tokens=[{"id": 300, "content": "<x>"}])),
        "malformed_tj_added_huge_id": tokenizer_json(
            tokenizer_doc([], added_tokens=[{"id": 2**40, "content": "<x>"}])),
        "malformed_tj_bad_merge": tokenizer_json(tokenizer_doc([42])),
        "malformed_tj_invalid_utf8": b't{"model": {"type": "BPE", "vocab": {"\xff": 0}, "merges": []}}',
        "malformed_tj_nul": b't{"model": {}}\0{"model": 1}',
    }
    return out


def write(directory, files):
    path = FUZZ / directory
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    for name, data in files.items():
        (path / name).write_bytes(data)
    print(f"{path}: {len(files)} files")


if __name__ == "__main__":
    write("corpus_tokenizer", TEXTS)
    write("corpus_tokenizer_files", files_corpus())
