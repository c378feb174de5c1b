#!/usr/bin/env python3
"""Writes the seed corpora of the tokenizer fuzzers (Python 3 standard library only):

  tests/fuzz/corpus_tokenizer/        texts for fuzz_tokenizer, and two id sequences (int32 LE)

usage: tests/fuzz/make_tokenizer_corpora.py   (rewrites the directory)
"""
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


def write(directory, files):
    path = FUZZ / directory
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    for name, data in files.items():
        (path / name).write_bytes(data)
    print(f"{path}: {len(files)} files")


if __name__ == "__main__":
    write("corpus_tokenizer", TEXTS)
