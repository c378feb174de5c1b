// GPT-2 tokenizer internals: UTF-8, character classes, the pre-tokenisation split, byte table.
#include "io/bpe_tokenizer_unicode.h"

#include <algorithm>

namespace encore::io::detail {
namespace {

struct ClassRange {
  char32_t first;
  char32_t last;
  CharClass cls;
};
constexpr CharClass kLetter = CharClass::letter;
constexpr CharClass kNumber = CharClass::number;
constexpr CharClass kSpace = CharClass::space;

constexpr ClassRange kRanges[] = {
#include "io/unicode_tables.inc"
};

constexpr bool ranges_sorted() {
  for (std::size_t i = 0; i < std::size(kRanges); ++i) {
    if (kRanges[i].first > kRanges[i].last) return false;
    if (i > 0 && kRanges[i - 1].last >= kRanges[i].first) return false;
  }
  return true;
}
static_assert(ranges_sorted(), "unicode_tables.inc must hold sorted, disjoint ranges");

bool is_continuation(unsigned char b) noexcept { return (b & 0xC0) == 0x80; }

}  // namespace

CharClass char_class(char32_t cp) noexcept {
  const ClassRange* end = std::end(kRanges);
  const ClassRange* it =
      std::upper_bound(std::begin(kRanges), end, cp, [](char32_t v, const ClassRange& r) { return v < r.first; });
  if (it == std::begin(kRanges)) return CharClass::other;
  --it;
  return cp <= it->last ? it->cls : CharClass::other;
}

Utf8Step next_utf8(std::string_view s) noexcept {
  Utf8Step step;
  if (s.empty()) return step;
  const auto b0 = static_cast<unsigned char>(s[0]);
  if (b0 < 0x80) return {b0, 1, true};
  int need;
  char32_t cp;
  // Allowed range of the second byte (Unicode Table 3-7); later bytes are plain 80..BF.
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1, cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2, cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;   // no overlongs
    if (b0 == 0xED) hi = 0x9F;   // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3, cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;   // no overlongs
    if (b0 == 0xF4) hi = 0x8F;   // nothing above U+10FFFF
  } else {
    return step;  // 80..C1, F5..FF never start a sequence
  }
  std::uint8_t len = 1;
  for (int k = 1; k <= need; ++k, ++len) {
    if (static_cast<std::size_t>(k) >= s.size()) return {0, len, false};
    const auto b = static_cast<unsigned char>(s[static_cast<std::size_t>(k)]);
    const bool ok = k == 1 ? (b >= lo && b <= hi) : is_continuation(b);
    if (!ok) return {0, len, false};
    cp = (cp << 6) | (b & 0x3F);
  }
  return {cp, len, true};
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  while (!bytes.empty()) {
    const Utf8Step step = next_utf8(bytes);
    if (step.valid)
      out.append(bytes.data(), step.length);
    else
      out.append("\xEF\xBF\xBD");  // U+FFFD
    bytes.remove_prefix(step.length);
  }
  return out;
}

std::vector<std::string_view> gpt2_pre_tokenize(std::string_view text) {
  struct Char {
    std::size_t length;
    CharClass cls;
  };
  // The character at byte offset i; a byte outside well-formed UTF-8 is one 'other' character.
  auto at = [&](std::size_t i) -> Char {
    const Utf8Step s = next_utf8(text.substr(i));
    if (!s.valid) return {1, CharClass::other};
    return {s.length, char_class(s.cp)};
  };
  auto run_end = [&](std::size_t i, CharClass cls) {
    while (i < text.size()) {
      const Char c = at(i);
      if (c.cls != cls) break;
      i += c.length;
    }
    return i;
  };

  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < text.size()) {
    const Char c = at(i);
    std::size_t end = 0;
    // 's|'t|'re|'ve|'m|'ll|'d — lower case only, whatever follows.
    if (text[i] == '\'' && i + 1 < text.size()) {
      const std::string_view rest = text.substr(i + 1);
      if (rest[0] == 's' || rest[0] == 't' || rest[0] == 'm' || rest[0] == 'd')
        end = i + 2;
      else if (rest.starts_with("re") || rest.starts_with("ve") || rest.starts_with("ll"))
        end = i + 3;
    }
    if (end == 0) {
      // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+': one optional ASCII space, then a run.
      std::size_t run_start = i;
      CharClass cls = c.cls;
      if (text[i] == ' ' && i + 1 < text.size()) {
        const CharClass next = at(i + 1).cls;
        if (next != CharClass::space) run_start = i + 1, cls = next;
      }
      if (cls != CharClass::space) {
        end = run_end(run_start, cls);
      } else {
        // '\s+(?!\S)' leaves the last blank of a run for the word after it; '\s+' takes a
        // single blank that precedes a non-blank.
        std::size_t k = i, last = i;
        while (k < text.size()) {
          const Char b = at(k);
          if (b.cls != CharClass::space) break;
          last = k;
          k += b.length;
        }
        end = (k < text.size() && last > i) ? last : k;
      }
    }
    out.push_back(text.substr(i, end - i));
    i = end;
  }
  return out;
}

const std::array<char32_t, 256>& byte_to_char() noexcept {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      t[static_cast<std::size_t>(b)] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

int char_to_byte(char32_t cp) noexcept {
  static const std::array<std::int16_t, 324> inverse = [] {
    std::array<std::int16_t, 324> t;
    t.fill(-1);
    const auto& fwd = byte_to_char();
    for (int b = 0; b < 256; ++b) t[fwd[static_cast<std::size_t>(b)]] = static_cast<std::int16_t>(b);
    return t;
  }();
  return cp < inverse.size() ? inverse[cp] : -1;
}

}  // namespace encore::io::detail
