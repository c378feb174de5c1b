// libFuzzer target: the real GPT-2 tokenizer on arbitrary text, and arbitrary ids to decode.
// Beyond "no crash", it checks properties that hold for every input: byte-level BPE is
// lossless (decode_bytes(encode(x)) == x, with and without special-token parsing), decode gives
// valid UTF-8 input back unchanged, tokenize agrees with encode, every id is in range, and decoding
// ids succeeds exactly when all ids are in range, else throws Error(invalid_argument).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "encore/core/error.h"
#include "encore/io/tokenizer.h"

#ifndef ENCORE_FUZZ_GPT2_DIR
#error "ENCORE_FUZZ_GPT2_DIR must name the directory holding vocab.json and merges.txt"
#endif

namespace {

using encore::io::Gpt2Tokenizer;

// A property broke: stop here so libFuzzer saves the input.
void require(bool ok) {
  if (!ok) __builtin_trap();
}

const Gpt2Tokenizer& gpt2() {
  static const Gpt2Tokenizer t = Gpt2Tokenizer::from_files(ENCORE_FUZZ_GPT2_DIR "/vocab.json",
                                                           ENCORE_FUZZ_GPT2_DIR "/merges.txt");
  return t;
}

// Well-formed UTF-8 (Unicode Table 3-7: no overlongs, surrogates or code points past U+10FFFF).
// Written here rather than taken from the tokenizer's internals, so that it checks them.
bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    int n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b0 < 0x80) {
      n = 0;
    } else if (b0 >= 0xC2 && b0 <= 0xDF) {
      n = 1;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      n = 2;
      lo = b0 == 0xE0 ? 0xA0 : 0x80;
      hi = b0 == 0xED ? 0x9F : 0xBF;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      n = 3;
      lo = b0 == 0xF0 ? 0x90 : 0x80;
      hi = b0 == 0xF4 ? 0x8F : 0xBF;
    } else {
      return false;
    }
    if (s.size() - i <= static_cast<std::size_t>(n)) return false;
    for (int k = 1; k <= n; ++k) {
      const auto b = static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]);
      if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return false;
    }
    i += static_cast<std::size_t>(n) + 1;
  }
  return true;
}

void check_ids(const Gpt2Tokenizer& t, const std::vector<std::int32_t>& ids) {
  for (const std::int32_t id : ids) require(id >= 0 && id < t.vocab_size());
}

void check_text(const Gpt2Tokenizer& t, std::string_view text) {
  const auto plain = t.encode(text, false);
  check_ids(t, plain);
  require(t.decode_bytes(plain) == text);  // lossless, special tokens spelled out as text
  const auto ids = t.encode(text);
  check_ids(t, ids);
  require(t.decode_bytes(ids) == text);  // a special token decodes to its own text
  if (valid_utf8(text)) require(t.decode(ids) == text);
  require(valid_utf8(t.decode(ids)));
  const auto tokens = t.tokenize(text);
  require(tokens.size() == ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) require(tokens[i] == t.id_to_token(ids[i]));
}

// The input's bytes as int32 ids: decoding must succeed when all are in range, else throw
// Error(invalid_argument).
void check_decode_ids(const Gpt2Tokenizer& t, std::span<const std::uint8_t> data) {
  std::vector<std::int32_t> ids(data.size() / sizeof(std::int32_t));
  if (!ids.empty()) std::memcpy(ids.data(), data.data(), ids.size() * sizeof(std::int32_t));
  bool in_range = true;
  for (const std::int32_t id : ids) in_range = in_range && id >= 0 && id < t.vocab_size();
  for (const bool skip : {false, true}) {
    try {
      const std::string bytes = t.decode_bytes(ids, skip);
      const std::string text = t.decode(ids, skip);
      require(in_range && valid_utf8(text));
      if (valid_utf8(bytes)) require(text == bytes);
    } catch (const encore::Error& e) {
      require(!in_range && e.code() == encore::ErrorCode::invalid_argument);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const Gpt2Tokenizer& t = gpt2();
  check_text(t, std::string_view(reinterpret_cast<const char*>(data), size));
  check_decode_ids(t, {data, size});
  return 0;
}
