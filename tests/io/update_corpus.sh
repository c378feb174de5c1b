#!/bin/sh
# Regenerates the committed safetensors corpus from the table in tests/io/corpus.cpp:
#   tests/data/safetensors/            valid files (also used by the encore-inspect tests)
#   tests/data/safetensors_malformed/  malformed files and malformed model directories
#   tests/fuzz/corpus/                 seeds for fuzz_safetensors (valid_*, malformed_*, and
#                                      reference_* from tests/data/safetensors_reference/)
# usage: tests/io/update_corpus.sh BUILD_DIR   (BUILD_DIR holds tests/io/test_io)
set -eu
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
ENCORE_WRITE_CORPUS="$out" "$build/tests/io/test_io" --gtest_filter=MalformedCorpus.DumpWhenAsked >/dev/null
rm -rf "$root/tests/data/safetensors_malformed"/*/
rm -f "$root/tests/data/safetensors"/*.safetensors "$root/tests/data/safetensors_malformed"/*.safetensors \
      "$root/tests/fuzz/corpus"/*.safetensors
mkdir -p "$root/tests/data/safetensors" "$root/tests/data/safetensors_malformed" "$root/tests/fuzz/corpus"
cp "$out"/valid/* "$root/tests/data/safetensors/"
cp "$out"/malformed/* "$root/tests/data/safetensors_malformed/"
cp -r "$out"/index/* "$root/tests/data/safetensors_malformed/"
for f in "$out"/valid/*; do cp "$f" "$root/tests/fuzz/corpus/valid_$(basename "$f")"; done
for f in "$root"/tests/data/safetensors_reference/*.safetensors; do
  cp "$f" "$root/tests/fuzz/corpus/$(basename "$f")"
done
for f in "$out"/malformed/*; do cp "$f" "$root/tests/fuzz/corpus/malformed_$(basename "$f")"; done
echo "corpus written from $build/tests/io/test_io"
