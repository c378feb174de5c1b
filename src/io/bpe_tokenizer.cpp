// Gpt2Tokenizer: loading vocab.json/merges.txt or tokenizer.json, BPE encoding, byte-level decoding.
#include "encore/io/tokenizer.h"

#include <algorithm>
#include <array>
#include <climits>
#include <mutex>
#include <optional>
#include <queue>
#include <system_error>
#include <unordered_map>

#include "core/check.h"
#include "io/bpe_tokenizer_unicode.h"
#include "io/safetensors_json.h"
#include "io/small_file.h"

namespace encore::io {

namespace fs = std::filesystem;
using encore::detail::fail;
using detail::printable;

namespace {

constexpr std::uintmax_t kMaxTokenizerFileBytes = 256u << 20;
constexpr int kMaxJsonDepth = 32;          // tokenizer.json nests pre-tokenizer sequences a few levels
constexpr std::size_t kMaxCachedWords = 1u << 16;
// Words longer than this are encoded but not cached, so the cache holds at most ~16 MiB of keys.
constexpr std::size_t kMaxCachedWordBytes = 256;
constexpr std::string_view kEndOfText = "<|endoftext|>";

std::string read_text_file(const fs::path& path) {
  return detail::read_small_file(path, kMaxTokenizerFileBytes, "tokenizer file");
}

// The hardened JSON parser of the safetensors reader; syntax errors additionally get a line
// number (the shared parser reports a byte offset only).
nlohmann::json parse_json_file(const std::string& text, const std::string& source, std::string_view what) {
  try {
    return detail::parse_json(text, kMaxJsonDepth, {source, what});
  } catch (const Error& e) {
    std::optional<std::size_t> byte;  // where nlohmann's own parser stops, if it does
    try {
      const auto lenient = nlohmann::json::parse(text);
      (void)lenient;
    } catch (const nlohmann::json::parse_error& pe) {
      byte = pe.byte;
    } catch (const nlohmann::json::exception&) {  // e.g. number overflow: no position
    }
    if (!byte) throw;  // duplicate key, nesting depth, ...: the message says where
    const auto end = text.begin() + static_cast<std::ptrdiff_t>(std::min(*byte, text.size()));
    const auto line = 1 + std::count(text.begin(), end, '\n');
    fail(ErrorCode::bad_model_file, "{} (line {})", e.what(), line);
  }
}

// The raw bytes a vocabulary string stands for: each character of GPT-2's byte alphabet maps back
// to its byte; a token with any other character (an added token such as "Ġworld日") stands for its
// own UTF-8, whole, as the `tokenizers` ByteLevel decoder does (all or nothing per token).
std::string vocab_string_to_bytes(std::string_view token) {
  std::string out;
  for (std::string_view rest = token; !rest.empty();) {
    const auto step = detail::next_utf8(rest);
    const int b = step.valid ? detail::char_to_byte(step.cp) : -1;
    if (b < 0) return std::string(token);
    out.push_back(static_cast<char>(b));
    rest.remove_prefix(step.length);
  }
  return out;
}

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using TokenMap = std::unordered_map<std::string, std::int32_t, StringHash, std::equal_to<>>;

struct AddedToken {
  std::string content;
  std::int32_t id;
  bool special;
};

std::uint64_t pair_key(std::int32_t a, std::int32_t b) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
}

// HF's clean_up_tokenization, replacement by replacement in its order.
std::string clean_up_tokenization(std::string s) {
  static constexpr std::pair<std::string_view, std::string_view> kRules[] = {
      {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kRules) {
    std::string out;
    std::size_t pos = 0;
    for (std::size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size())
      out.append(s, pos, hit - pos).append(to);
    out.append(s, pos);
    s = std::move(out);
  }
  return s;
}

}  // namespace

struct Gpt2Tokenizer::State {
  std::string source;                       // for messages
  std::vector<std::string> tokens;          // id -> vocabulary string
  std::vector<std::string> bytes;           // id -> the bytes it decodes to
  std::vector<bool> special;                // id -> special token
  TokenMap vocab;                           // vocabulary string -> id
  std::array<std::int32_t, 256> byte_id{};  // id of each single-byte token
  struct Merge {
    std::int32_t rank;
    std::int32_t merged;
  };
  std::unordered_map<std::uint64_t, Merge> merges;  // (left id, right id) -> rank, result
  std::size_t merge_count = 0;
  std::vector<AddedToken> added;  // matched in the text before pre-tokenisation
  std::int32_t eos = -1;

  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<std::int32_t>, StringHash, std::equal_to<>> cache;

  void check_id(std::int32_t id) const {
    if (id < 0 || id >= static_cast<std::int32_t>(tokens.size()))
      fail(ErrorCode::invalid_argument, "token id {} is out of range: the vocabulary has {} ids (0..{})", id,
           tokens.size(), tokens.size() - 1);
  }

  void bpe(std::string_view word, std::vector<std::int32_t>& out) const;
  void encode_plain(std::string_view text, std::vector<std::int32_t>& out) const;
};

// BPE on one pre-token: start from its bytes, repeatedly merge the adjacent pair of lowest rank
// (leftmost first on ties). A heap over candidate pairs makes long words O(n log n) instead of
// the quadratic rescan; stale heap entries are recognised by the ids they expected.
void Gpt2Tokenizer::State::bpe(std::string_view word, std::vector<std::int32_t>& out) const {
  {
    std::lock_guard lock(cache_mutex);
    if (const auto it = cache.find(word); it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  struct Symbol {
    std::int32_t id, prev, next;
    bool alive;
  };
  struct Candidate {
    std::int32_t rank, pos, left, right, merged;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  const auto n = static_cast<std::int32_t>(word.size());
  std::vector<Symbol> sym(static_cast<std::size_t>(n));
  for (std::int32_t i = 0; i < n; ++i)
    sym[static_cast<std::size_t>(i)] = {byte_id[static_cast<unsigned char>(word[static_cast<std::size_t>(i)])],
                                        i - 1, i + 1 < n ? i + 1 : -1, true};
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto consider = [&](std::int32_t pos) {
    const Symbol& s = sym[static_cast<std::size_t>(pos)];
    if (s.next < 0) return;
    const std::int32_t right = sym[static_cast<std::size_t>(s.next)].id;
    if (const auto m = merges.find(pair_key(s.id, right)); m != merges.end())
      heap.push({m->second.rank, pos, s.id, right, m->second.merged});
  };
  for (std::int32_t i = 0; i + 1 < n; ++i) consider(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& s = sym[static_cast<std::size_t>(c.pos)];
    if (!s.alive || s.next < 0 || s.id != c.left || sym[static_cast<std::size_t>(s.next)].id != c.right) continue;
    Symbol& r = sym[static_cast<std::size_t>(s.next)];
    r.alive = false;
    s.id = c.merged;
    s.next = r.next;
    if (s.next >= 0) sym[static_cast<std::size_t>(s.next)].prev = c.pos;
    if (s.prev >= 0) consider(s.prev);
    consider(c.pos);
  }
  std::vector<std::int32_t> ids;
  for (std::int32_t i = 0; i >= 0 && i < n; i = sym[static_cast<std::size_t>(i)].next)
    ids.push_back(sym[static_cast<std::size_t>(i)].id);
  out.insert(out.end(), ids.begin(), ids.end());
  if (word.size() > kMaxCachedWordBytes) return;  // long words are rare and would pin their bytes
  std::lock_guard lock(cache_mutex);
  if (cache.size() >= kMaxCachedWords) cache.clear();  // bound memory on adversarial input
  cache.emplace(std::string(word), std::move(ids));
}

void Gpt2Tokenizer::State::encode_plain(std::string_view text, std::vector<std::int32_t>& out) const {
  for (std::string_view word : detail::gpt2_pre_tokenize(text)) bpe(word, out);
}

namespace {

// Validated vocabulary: id -> string, dense 0..n-1.
std::vector<std::string> vocab_from_json(const nlohmann::json& v, const std::string& source) {
  if (!v.is_object())
    fail(ErrorCode::bad_model_file, "{}: the vocabulary is a JSON {}, expected an object of token -> id", source,
         v.type_name());
  std::vector<std::string> tokens(v.size());
  std::vector<bool> seen(v.size());
  for (const auto& [token, id] : v.items()) {
    if (!id.is_number_integer())
      fail(ErrorCode::bad_model_file, "{}: token '{}' has a JSON {} id, expected an integer", source,
           printable(token), id.type_name());
    const auto value = id.get<std::int64_t>();
    if (value < 0 || value >= static_cast<std::int64_t>(v.size()))
      fail(ErrorCode::bad_model_file, "{}: token '{}' has id {}, expected 0..{} (ids must be dense)", source,
           printable(token), value, v.size() - 1);
    const auto i = static_cast<std::size_t>(value);
    if (seen[i])
      fail(ErrorCode::bad_model_file, "{}: tokens '{}' and '{}' share id {}", source, printable(tokens[i]),
           printable(token), value);
    seen[i] = true;
    tokens[i] = token;
  }
  return tokens;
}

}  // namespace

Gpt2Tokenizer::Gpt2Tokenizer(std::shared_ptr<State> state) : state_(std::move(state)) {}

namespace {

// Fills the id tables of `s` from its tokens; checks the byte alphabet is complete.
void index_vocabulary(auto& s) {
  const auto n = s.tokens.size();
  s.bytes.resize(n);
  s.special.assign(n, false);
  s.vocab.reserve(n);
  s.byte_id.fill(-1);
  for (std::size_t i = 0; i < n; ++i) {
    s.vocab.emplace(s.tokens[i], static_cast<std::int32_t>(i));
    s.bytes[i] = vocab_string_to_bytes(s.tokens[i]);
  }
  const auto& alphabet = detail::byte_to_char();
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    detail::append_utf8(ch, alphabet[static_cast<std::size_t>(b)]);
    const auto it = s.vocab.find(ch);
    if (it == s.vocab.end())
      fail(ErrorCode::bad_model_file,
           "{}: the vocabulary has no token for byte 0x{:02X} ('{}'); a byte-level BPE vocabulary needs all 256",
           s.source, b, printable(ch));
    s.byte_id[static_cast<std::size_t>(b)] = it->second;
  }
}

// Adds one merge rule; `rank` is its priority (0 = first), `where` locates it in messages.
void add_merge(auto& s, std::string_view left, std::string_view right, std::size_t rank, const std::string& where) {
  auto id_of = [&](std::string_view t) {
    const auto it = s.vocab.find(t);
    if (it == s.vocab.end())
      fail(ErrorCode::bad_model_file, "{}: merge '{} {}' uses '{}', which is not in the vocabulary", where,
           printable(left), printable(right), printable(t));
    return it->second;
  };
  const std::int32_t a = id_of(left), b = id_of(right);
  const std::int32_t merged = id_of(std::string(left) + std::string(right));
  // A repeated pair keeps its last rank, as both Hugging Face implementations do.
  s.merges[pair_key(a, b)] = {static_cast<std::int32_t>(rank), merged};
  ++s.merge_count;
}

// "left right": exactly one space between two non-empty halves.
std::optional<std::pair<std::string_view, std::string_view>> split_merge(std::string_view line) {
  const auto space = line.find(' ');
  if (space == 0 || space == std::string_view::npos || space + 1 == line.size() ||
      line.find(' ', space + 1) != std::string_view::npos)
    return std::nullopt;
  return std::pair{line.substr(0, space), line.substr(space + 1)};
}

void parse_merges_txt(auto& s, const std::string& text, const std::string& source) {
  std::size_t line_no = 0, rank = 0, pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
    const auto merge = split_merge(line);
    if (!merge)
      fail(ErrorCode::bad_model_file, "{}: line {}: '{}' is not a merge (expected two tokens separated by one space)",
           source, line_no, printable(line));
    add_merge(s, merge->first, merge->second, rank++, fmt::format("{}: line {}", source, line_no));
  }
}

void mark_end_of_text(auto& s) {
  if (const auto it = s.vocab.find(kEndOfText); it != s.vocab.end()) {
    s.eos = it->second;
    s.special[static_cast<std::size_t>(s.eos)] = true;
    s.added.push_back({std::string(kEndOfText), s.eos, true});
  }
}

// A boolean member of a tokenizer.json object (`fallback` when absent or null).
bool json_flag(const nlohmann::json& obj, const char* key, bool fallback, const std::string& where) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_boolean())
    fail(ErrorCode::bad_model_file, "{}: '{}' is a JSON {}, expected true or false", where, key, it->type_name());
  return it->get<bool>();
}

// A post-processor that adds no token: ByteLevel (offsets only), a template whose single-sequence
// form is the sequence alone, or a Sequence of those. Anything else adds tokens: refused.
void check_post_processor(const nlohmann::json& post, const std::string& src) {
  const auto type = post.is_object() ? post.find("type") : post.end();
  const std::string kind = type != post.end() && type->is_string() ? type->get<std::string>() : "";
  bool adds_nothing = kind == "ByteLevel";
  if (kind == "TemplateProcessing") {
    const auto single = post.find("single");
    adds_nothing = single != post.end() && single->is_array() && single->size() == 1 && (*single)[0].is_object() &&
                   (*single)[0].contains("Sequence");
  } else if (kind == "Sequence") {
    const auto list = post.find("processors");
    if (list == post.end() || !list->is_array()) fail(ErrorCode::bad_model_file, "{}: post_processor Sequence has no 'processors' array", src);
    for (const auto& p : *list) check_post_processor(p, src);
    adds_nothing = true;
  }
  if (!adds_nothing)
    fail(ErrorCode::unsupported, "{}: post_processor {} adds tokens to the text's, which is not supported", src,
         printable(post.dump(), 120));
}

// tokenizer.json: only what GPT-2-style byte-level BPE needs; anything that would change the
// result and is not implemented (a normalizer, another pre-tokenizer) is refused.
void load_tokenizer_json(auto& s, const nlohmann::json& root) {
  const std::string& src = s.source;
  if (!root.is_object()) fail(ErrorCode::bad_model_file, "{}: is a JSON {}, expected an object", src, root.type_name());
  const auto model = root.find("model");
  if (model == root.end() || !model->is_object())
    fail(ErrorCode::bad_model_file, "{}: has no 'model' object", src);
  if (const auto type = model->find("type"); type != model->end() && *type != "BPE")
    fail(ErrorCode::unsupported, "{}: model type {} is not supported (only BPE)", src, printable(type->dump()));
  if (const auto norm = root.find("normalizer"); norm != root.end() && !norm->is_null())
    fail(ErrorCode::unsupported, "{}: has a normalizer ({}); only GPT-2 byte-level BPE without one is supported", src,
         printable(norm->dump(), 80));
  if (const auto pre = root.find("pre_tokenizer"); pre != root.end() && !pre->is_null()) {
    const std::string where = src + ": pre_tokenizer";
    const bool byte_level = pre->is_object() && pre->contains("type") && (*pre)["type"] == "ByteLevel" &&
                            !json_flag(*pre, "add_prefix_space", false, where) &&
                            json_flag(*pre, "use_regex", true, where);
    if (!byte_level)
      fail(ErrorCode::unsupported,
           "{}: pre_tokenizer {} is not supported (expected ByteLevel with add_prefix_space false)", src,
           printable(pre->dump(), 120));
  }
  // Settings that change the ids encode() returns: tokens added around the text (a template or
  // BERT/RoBERTa post-processor), truncation or padding to a length, BPE dropout, and word affixes
  // of other BPE flavours. The ByteLevel post-processor only moves offsets, which encore does not
  // return.
  for (const char* key : {"truncation", "padding"})
    if (const auto it = root.find(key); it != root.end() && !it->is_null())
      fail(ErrorCode::unsupported, "{}: sets '{}' ({}), which is not supported", src, key, printable(it->dump(), 80));
  if (const auto post = root.find("post_processor"); post != root.end() && !post->is_null())
    check_post_processor(*post, src);
  if (const auto drop = model->find("dropout");
      drop != model->end() && !drop->is_null() && !(drop->is_number() && drop->get<double>() == 0.0))
    fail(ErrorCode::unsupported, "{}: model.dropout is {}; BPE dropout is not supported", src, printable(drop->dump(), 40));
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (const auto it = model->find(key); it != model->end() && !it->is_null() && *it != "")
      fail(ErrorCode::unsupported, "{}: model.{} is {}; only GPT-2 byte-level BPE (none) is supported", src, key,
           printable(it->dump(), 40));
  const auto vocab = model->find("vocab");
  if (vocab == model->end()) fail(ErrorCode::bad_model_file, "{}: model has no 'vocab'", src);
  s.tokens = vocab_from_json(*vocab, src + ": model.vocab");

  // Added tokens may reuse vocabulary ids or extend the vocabulary (then densely).
  std::vector<AddedToken> added;
  if (const auto list = root.find("added_tokens"); list != root.end() && !list->is_null()) {
    if (!list->is_array()) fail(ErrorCode::bad_model_file, "{}: added_tokens is not an array", src);
    for (const auto& t : *list) {
      if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() || !t.contains("content") ||
          !t["content"].is_string() || t["content"].get_ref<const std::string&>().empty())
        fail(ErrorCode::bad_model_file, "{}: added token {} needs an integer 'id' and a non-empty 'content'", src,
             printable(t.dump(), 120));
      const std::string where = fmt::format("{}: added token {}", src, printable(t.dump(), 120));
      for (const char* flag : {"lstrip", "rstrip", "single_word"})
        if (json_flag(t, flag, false, where))
          fail(ErrorCode::unsupported, "{}: added token {} sets '{}', which is not supported", src,
               printable(t.dump(), 120), flag);
      const auto id = t["id"].get<std::int64_t>();
      if (id < 0 || id > INT32_MAX - 1)
        fail(ErrorCode::bad_model_file, "{}: added token {} has id {} out of range", src, printable(t.dump(), 120), id);
      added.push_back({t["content"].get<std::string>(), static_cast<std::int32_t>(id),
                       json_flag(t, "special", false, where)});
    }
  }
  std::sort(added.begin(), added.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  for (const auto& a : added) {
    const auto size = static_cast<std::int64_t>(s.tokens.size());
    if (a.id < size) {
      if (s.tokens[static_cast<std::size_t>(a.id)] != a.content)
        fail(ErrorCode::bad_model_file, "{}: added token '{}' has id {}, which the vocabulary gives to '{}'", src,
             printable(a.content), a.id, printable(s.tokens[static_cast<std::size_t>(a.id)]));
    } else if (a.id == size) {
      s.tokens.push_back(a.content);
    } else {
      fail(ErrorCode::bad_model_file, "{}: added token '{}' has id {}, leaving a gap after the last id {}", src,
           printable(a.content), a.id, size - 1);
    }
  }
  index_vocabulary(s);
  for (const auto& a : added) {
    if (a.special) s.special[static_cast<std::size_t>(a.id)] = true;
    if (a.content == kEndOfText) s.eos = a.id;
  }
  s.added = std::move(added);
  if (s.eos < 0) mark_end_of_text(s);

  const auto merges = model->find("merges");
  if (merges == model->end() || !merges->is_array())
    fail(ErrorCode::bad_model_file, "{}: model has no 'merges' array", src);
  std::size_t rank = 0;
  for (const auto& m : *merges) {
    const std::string where = fmt::format("{}: model.merges[{}]", src, rank);
    if (m.is_string()) {
      const auto& str = m.get_ref<const std::string&>();
      const auto merge = split_merge(str);
      if (!merge)
        fail(ErrorCode::bad_model_file, "{}: '{}' is not a merge (expected \"left right\")", where, printable(str));
      add_merge(s, merge->first, merge->second, rank, where);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      add_merge(s, m[0].get_ref<const std::string&>(), m[1].get_ref<const std::string&>(), rank, where);
    } else {
      fail(ErrorCode::bad_model_file, "{}: {} is not a merge (expected \"left right\" or [left, right])", where,
           printable(m.dump(), 80));
    }
    ++rank;
  }
}

}  // namespace

Gpt2Tokenizer Gpt2Tokenizer::from_files(const fs::path& vocab_json, const fs::path& merges_txt) {
  auto s = std::make_shared<State>();
  s->source = vocab_json.string();
  s->tokens = vocab_from_json(parse_json_file(read_text_file(vocab_json), s->source, "vocabulary"), s->source);
  index_vocabulary(*s);
  mark_end_of_text(*s);
  parse_merges_txt(*s, read_text_file(merges_txt), merges_txt.string());
  return Gpt2Tokenizer(std::move(s));
}

Gpt2Tokenizer Gpt2Tokenizer::from_directory(const fs::path& dir) {
  std::error_code ec;
  if (fs::exists(dir / "tokenizer.json", ec)) {
    auto s = std::make_shared<State>();
    s->source = (dir / "tokenizer.json").string();
    load_tokenizer_json(*s, parse_json_file(read_text_file(dir / "tokenizer.json"), s->source, "tokenizer"));
    return Gpt2Tokenizer(std::move(s));
  }
  if (fs::exists(dir / "vocab.json", ec) && fs::exists(dir / "merges.txt", ec))
    return from_files(dir / "vocab.json", dir / "merges.txt");
  fail(ErrorCode::io, "{}: no tokenizer.json, nor vocab.json with merges.txt, in this directory", dir.string());
}

std::vector<std::int32_t> Gpt2Tokenizer::encode(std::string_view text, bool parse_special_tokens) const {
  ENCORE_CHECK(text.size() <= static_cast<std::size_t>(INT32_MAX), invalid_argument,
               "Gpt2Tokenizer::encode: {} bytes of text is more than the 2 GiB limit", text.size());
  const State& s = *state_;
  std::vector<std::int32_t> out;
  out.reserve(text.size() / 3 + 1);
  if (!parse_special_tokens || s.added.empty()) {
    s.encode_plain(text, out);
    return out;
  }
  // Leftmost occurrence of an added token, longest on ties; the text between is plain.
  std::size_t plain = 0;
  for (std::size_t i = 0; i < text.size();) {
    const AddedToken* hit = nullptr;
    for (const auto& a : s.added)
      if (text.substr(i).starts_with(a.content) && (!hit || a.content.size() > hit->content.size())) hit = &a;
    if (!hit) {
      ++i;
      continue;
    }
    s.encode_plain(text.substr(plain, i - plain), out);
    out.push_back(hit->id);
    i += hit->content.size();
    plain = i;
  }
  s.encode_plain(text.substr(plain), out);
  return out;
}

std::string Gpt2Tokenizer::decode_bytes(std::span<const std::int32_t> ids, bool skip_special_tokens) const {
  const State& s = *state_;
  std::string out;
  for (const std::int32_t id : ids) {
    s.check_id(id);
    if (skip_special_tokens && s.special[static_cast<std::size_t>(id)]) continue;
    out += s.bytes[static_cast<std::size_t>(id)];
  }
  return out;
}

std::string Gpt2Tokenizer::decode(std::span<const std::int32_t> ids, const DecodeOptions& options) const {
  std::string text = detail::utf8_lossy(decode_bytes(ids, options.skip_special_tokens));
  return options.clean_up_tokenization_spaces ? clean_up_tokenization(std::move(text)) : text;
}

std::string Gpt2Tokenizer::decode(std::span<const std::int32_t> ids, bool skip_special_tokens) const {
  DecodeOptions options;
  options.skip_special_tokens = skip_special_tokens;
  return decode(ids, options);
}

std::vector<std::string> Gpt2Tokenizer::tokenize(std::string_view text, bool parse_special_tokens) const {
  std::vector<std::string> out;
  for (const std::int32_t id : encode(text, parse_special_tokens))
    out.push_back(state_->tokens[static_cast<std::size_t>(id)]);
  return out;
}

std::int32_t Gpt2Tokenizer::token_to_id(std::string_view token) const {
  if (const auto id = find_token(token)) return *id;
  fail(ErrorCode::invalid_argument, "token '{}' is not in the vocabulary of {}", printable(token), state_->source);
}

std::optional<std::int32_t> Gpt2Tokenizer::find_token(std::string_view token) const noexcept {
  const auto it = state_->vocab.find(token);
  if (it == state_->vocab.end()) return std::nullopt;
  return it->second;
}

const std::string& Gpt2Tokenizer::id_to_token(std::int32_t id) const {
  state_->check_id(id);
  return state_->tokens[static_cast<std::size_t>(id)];
}

std::int32_t Gpt2Tokenizer::vocab_size() const noexcept { return static_cast<std::int32_t>(state_->tokens.size()); }
std::size_t Gpt2Tokenizer::merge_count() const noexcept { return state_->merge_count; }
std::int32_t Gpt2Tokenizer::eos_token_id() const noexcept { return state_->eos; }

bool Gpt2Tokenizer::is_special(std::int32_t id) const noexcept {
  return id >= 0 && id < vocab_size() && state_->special[static_cast<std::size_t>(id)];
}

}  // namespace encore::io
