// Gpt2Tokenizer: Hugging Face golden data (tests/data/gpt2-tokenizer/golden.jsonl, written by
// tools/golden/gpt2_tokenizer.py), loading formats, malformed files and invalid input.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "encore/core/error.h"
#include "encore/io/tokenizer.h"
#include "io/bpe_tokenizer_unicode.h"
#include "temp_dir.h"

namespace encore::test {
namespace {

namespace fs = std::filesystem;
using io::Gpt2Tokenizer;
using json = nlohmann::json;
const fs::path kDir = fs::path(ENCORE_TEST_DATA_DIR) / "gpt2-tokenizer";

const Gpt2Tokenizer& gpt2() {
  static const Gpt2Tokenizer t = Gpt2Tokenizer::from_directory(kDir);
  return t;
}

std::vector<json> golden(const std::string& kind) {
  std::ifstream in(kDir / "golden.jsonl");
  EXPECT_TRUE(in) << "missing golden.jsonl";
  std::vector<json> out;
  for (std::string line; std::getline(in, line);) {
    json j = json::parse(line);
    if (j["kind"] == kind) out.push_back(std::move(j));
  }
  return out;
}

void expect_error(const std::function<void()>& f, ErrorCode code, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error thrown; expected " << error_code_name(code);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << "message: " << e.what() << "\nlacks: " << p;
  }
}

void write(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
}

// ---- golden data -------------------------------------------------------------------------------

TEST(Gpt2Tokenizer, GoldenMetadata) {
  const auto meta = golden("meta");
  ASSERT_EQ(meta.size(), 1u);
  EXPECT_GE(meta[0]["encode_strings"].get<int>(), 200);
  const auto& t = gpt2();
  EXPECT_EQ(t.vocab_size(), 50257);
  EXPECT_EQ(t.merge_count(), 50000u);
  EXPECT_EQ(t.eos_token_id(), 50256);
  EXPECT_EQ(t.bos_token_id(), 50256);
  EXPECT_TRUE(t.is_special(50256));
  EXPECT_FALSE(t.is_special(995));
  EXPECT_FALSE(t.is_special(-1));
  EXPECT_EQ(t.token_to_id("Ġworld"), 995);
  EXPECT_EQ(t.id_to_token(995), "Ġworld");
  EXPECT_EQ(t.find_token("no such token"), std::nullopt);
}

TEST(Gpt2Tokenizer, EncodeMatchesHuggingFace) {
  const auto& t = gpt2();
  const auto cases = golden("encode");
  ASSERT_GE(cases.size(), 200u);
  int failures = 0;
  for (const auto& c : cases) {
    const auto text = c["text"].get<std::string>();
    const auto expect = c["ids"].get<std::vector<std::int32_t>>();
    const auto ids = t.encode(text);
    EXPECT_EQ(ids, expect) << "text: " << json(text).dump();
    EXPECT_EQ(t.tokenize(text), c["tokens"].get<std::vector<std::string>>()) << json(text).dump();
    failures += ids != expect;
    if (failures > 10) FAIL() << "too many failures";
  }
}

TEST(Gpt2Tokenizer, DecodeMatchesHuggingFace) {
  const auto& t = gpt2();
  for (const auto& c : golden("encode")) {
    const auto text = c["text"].get<std::string>();
    const auto ids = c["ids"].get<std::vector<std::int32_t>>();
    EXPECT_EQ(t.decode(ids), c["decoded"].get<std::string>()) << json(text).dump();
    EXPECT_EQ(t.decode(ids, true), c["decoded_skip"].get<std::string>()) << json(text).dump();
    io::DecodeOptions cleanup;
    cleanup.clean_up_tokenization_spaces = true;
    EXPECT_EQ(t.decode(ids, cleanup), c["decoded_cleanup"].get<std::string>()) << json(text).dump();
    EXPECT_EQ(t.decode(t.encode(text)), text);  // the corpus is valid UTF-8, so decoding round-trips
  }
  const auto cases = golden("decode");
  ASSERT_GE(cases.size(), 50u);
  for (const auto& c : cases) {
    const auto ids = c["ids"].get<std::vector<std::int32_t>>();
    EXPECT_EQ(t.decode(ids), c["text"].get<std::string>()) << c["ids"].dump();
    EXPECT_EQ(t.decode(ids, true), c["text_skip"].get<std::string>()) << c["ids"].dump();
  }
}

// ---- behaviour without golden counterparts -------------------------------------------------------

TEST(Gpt2Tokenizer, InvalidUtf8IsEncodedByteByByte) {
  const auto& t = gpt2();
  const std::string text = "ok \xff\xfe abc\xc3 \xe2\x82 end\xf0\x9f";
  const auto ids = t.encode(text);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(t.decode_bytes(ids), text);
  EXPECT_EQ(t.decode(ids), "ok \xEF\xBF\xBD\xEF\xBF\xBD abc\xEF\xBF\xBD \xEF\xBF\xBD end\xEF\xBF\xBD");
  EXPECT_EQ(t.decode(t.encode("\xff")), "\xEF\xBF\xBD");
  EXPECT_EQ(t.id_to_token(t.encode("\xff").at(0)), "ÿ");
}

TEST(Gpt2Tokenizer, SpecialTokensInText) {
  const auto& t = gpt2();
  EXPECT_EQ(t.encode("<|endoftext|>"), std::vector<std::int32_t>{50256});
  const auto plain = t.encode("<|endoftext|>", /*parse_special_tokens=*/false);
  EXPECT_GT(plain.size(), 1u);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 50256), 0);
  EXPECT_EQ(t.decode(plain), "<|endoftext|>");
  EXPECT_EQ(t.decode(std::vector<std::int32_t>{50256, 15496, 50256}, true), "Hello");
}

TEST(Gpt2Tokenizer, IdsOutOfRange) {
  const auto& t = gpt2();
  for (std::int32_t bad : {-1, 50257, INT32_MAX}) {
    const std::vector<std::int32_t> ids{15496, bad};
    expect_error([&] { (void)t.decode(ids); }, ErrorCode::invalid_argument, {std::to_string(bad), "50257"});
    expect_error([&] { (void)t.decode_bytes(ids, true); }, ErrorCode::invalid_argument, {std::to_string(bad)});
    expect_error([&] { (void)t.id_to_token(bad); }, ErrorCode::invalid_argument, {std::to_string(bad)});
  }
  expect_error([&] { (void)t.token_to_id("not a token"); }, ErrorCode::invalid_argument, {"not a token"});
}

TEST(Gpt2Tokenizer, LongWordsAreFast) {
  const auto& t = gpt2();
  std::string text;
  for (int i = 0; i < 100000; ++i) text += "ab";
  const auto start = std::chrono::steady_clock::now();
  const auto ids = t.encode(text);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(t.decode(ids), text);
  EXPECT_LT(seconds, 10.0) << "BPE on one 200 KB word took " << seconds << " s";
}

TEST(Gpt2Tokenizer, ConcurrentUse) {
  const auto& t = gpt2();
  const auto cases = golden("encode");
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      for (std::size_t i = static_cast<std::size_t>(k); i < cases.size() * 2; i += 3) {
        const auto& c = cases[i % cases.size()];
        if (t.encode(c["text"].get<std::string>()) != c["ids"].get<std::vector<std::int32_t>>()) ++mismatches[k];
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

TEST(Gpt2Tokenizer, Utf8Lossy) {
  using io::detail::utf8_lossy;
  EXPECT_EQ(utf8_lossy("abc"), "abc");
  EXPECT_EQ(utf8_lossy("\xe2\x82"), "\xEF\xBF\xBD");            // one maximal subpart
  EXPECT_EQ(utf8_lossy("\xed\xa0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate: 3
  EXPECT_EQ(utf8_lossy("\xf4\x90\x80\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // above U+10FFFF
  EXPECT_EQ(utf8_lossy("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80");
}

// ---- other formats -----------------------------------------------------------------------------

json read_json(const fs::path& p) {
  std::ifstream in(p);
  return json::parse(in);
}

std::vector<std::string> merges_lines() {
  std::ifstream in(kDir / "merges.txt");
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && !line.starts_with("#version")) out.push_back(line);
  return out;
}

TEST(Gpt2Tokenizer, TokenizerJsonMatchesVocabAndMerges) {
  const json vocab = read_json(kDir / "vocab.json");
  const auto lines = merges_lines();
  for (bool pairs : {false, true}) {
    json merges = json::array();
    for (const auto& l : lines) {
      const auto sp = l.find(' ');
      if (pairs)
        merges.push_back(json::array({l.substr(0, sp), l.substr(sp + 1)}));
      else
        merges.push_back(l);
    }
    json doc = {{"version", "1.0"},
                {"added_tokens", json::array({{{"id", 50256}, {"content", "<|endoftext|>"}, {"special", true}},
                                              {{"id", 50257}, {"content", "<image>"}, {"special", false}},
                                              {{"id", 50258}, {"content", "<pad>"}, {"special", true}},
                                              {{"id", 50259}, {"content", "日本é"}, {"special", false}},
                                              {{"id", 50260}, {"content", "Ġworld日"}, {"special", false}}})},
                {"normalizer", nullptr},
                {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
                {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
    // The rest of GPT-2's own tokenizer.json, none of which changes the ids (the post-processor
    // only moves offsets): accepted. The second pass writes an identity template instead.
    doc["truncation"] = nullptr, doc["padding"] = nullptr;
    doc["model"]["dropout"] = nullptr, doc["model"]["continuing_subword_prefix"] = "";
    doc["model"]["end_of_word_suffix"] = "";
    doc["post_processor"] = pairs ? json{{"type", "TemplateProcessing"},
                                         {"single", json::array({{{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})}}
                                  : json{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}};
    TempDir dir;
    write(dir / "tokenizer.json", doc.dump());
    const auto t = Gpt2Tokenizer::from_directory(dir.path());
    EXPECT_EQ(t.vocab_size(), 50261);
    EXPECT_EQ(t.eos_token_id(), 50256);
    for (const auto& c : golden("encode")) {
      const auto text = c["text"].get<std::string>();
      if (text.find('<') != std::string::npos) continue;
      EXPECT_EQ(t.encode(text), c["ids"].get<std::vector<std::int32_t>>()) << json(text).dump();
    }
    const auto ids = t.encode("a<image>b<pad><|endoftext|>");
    EXPECT_EQ(ids, (std::vector<std::int32_t>{64, 50257, 65, 50258, 50256}));
    EXPECT_EQ(t.decode(ids), "a<image>b<pad><|endoftext|>");
    EXPECT_EQ(t.decode(ids, true), "a<image>b");
    // An added token with a character outside the byte alphabet decodes as its own text, whole
    // (tokenizers' ByteLevel decoder: "Ġ" stays "Ġ" there), not character by character.
    EXPECT_EQ(t.decode(std::vector<std::int32_t>{50259, 50260}), "日本éĠworld日");
  }
}

// A tiny byte-level vocabulary: the 256 byte tokens (ids 0..255 in byte order) plus `extra`.
json tiny_vocab(const std::vector<std::string>& extra = {}) {
  json v = json::object();
  const auto& alphabet = io::detail::byte_to_char();
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    io::detail::append_utf8(ch, alphabet[static_cast<std::size_t>(b)]);
    v[ch] = b;
  }
  int id = 256;
  for (const auto& e : extra) v[e] = id++;
  return v;
}

TEST(Gpt2Tokenizer, TinyVocabulary) {
  TempDir dir;
  write(dir / "vocab.json", tiny_vocab({"ab", "abc", "Ġab", "<|endoftext|>"}).dump(1));
  write(dir / "merges.txt", "#version: 0.2\r\na b\r\nab c\r\nĠ ab\r\n");
  const auto t = Gpt2Tokenizer::from_directory(dir.path());
  EXPECT_EQ(t.vocab_size(), 260);
  EXPECT_EQ(t.merge_count(), 3u);
  EXPECT_EQ(t.eos_token_id(), 259);
  EXPECT_EQ(t.encode("abc ab abd"), (std::vector<std::int32_t>{257, 258, 258, 'd'}));
  EXPECT_EQ(t.decode(t.encode("abc ab abd")), "abc ab abd");
}

TEST(Gpt2Tokenizer, MalformedFilesAreRejected) {
  const std::string good_merges = "#version: 0.2\na b\n";
  const std::string good_vocab = tiny_vocab({"ab"}).dump(1);
  struct Case {
    const char* name;
    std::string vocab, merges;
    std::vector<std::string> expect;
  };
  json gap = tiny_vocab({"ab"});
  gap["ab"] = 300;
  json dup = tiny_vocab({"ab"});
  dup["ab"] = 5;
  json negative = tiny_vocab({"ab"});
  negative["ab"] = -1;
  json text_id = tiny_vocab({"ab"});
  text_id["ab"] = "256";
  json missing_byte = tiny_vocab({"ab"});
  missing_byte.erase("Ā");
  missing_byte["zz"] = 0;
  const Case cases[] = {
      {"syntax", "{\n\"a\": 0,\n\"b\" 1\n}", good_merges, {"vocab.json", "line 3"}},
      {"array", "[1, 2]", good_merges, {"vocab.json", "array"}},
      {"duplicate key", "{\"a\": 0, \"a\": 1}", good_merges, {"vocab.json", "duplicate key"}},
      {"gap", gap.dump(), good_merges, {"vocab.json", "'ab'", "300"}},
      {"duplicate id", dup.dump(), good_merges, {"vocab.json", "share id 5"}},
      {"negative id", negative.dump(), good_merges, {"vocab.json", "-1"}},
      {"string id", text_id.dump(), good_merges, {"vocab.json", "'ab'", "string"}},
      {"missing byte", missing_byte.dump(), good_merges, {"vocab.json", "byte 0x00"}},
      {"one token", good_vocab, "#version: 0.2\na b\nabc\n", {"merges.txt", "line 3", "'abc'"}},
      {"three tokens", good_vocab, "a b c\n", {"merges.txt", "line 1"}},
      {"double space", good_vocab, "a  b\n", {"merges.txt", "line 1"}},
      {"unknown token", good_vocab, "a b\nq zz\n", {"merges.txt", "line 2", "'zz'"}},
      {"unknown result", good_vocab, "a b\nb c\n", {"merges.txt", "line 2", "'bc'"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    TempDir dir;
    write(dir / "vocab.json", c.vocab);
    write(dir / "merges.txt", c.merges);
    expect_error([&] { (void)Gpt2Tokenizer::from_directory(dir.path()); }, ErrorCode::bad_model_file, c.expect);
  }
}

TEST(Gpt2Tokenizer, MissingFilesAndUnsupportedTokenizerJson) {
  TempDir dir;
  expect_error([&] { (void)Gpt2Tokenizer::from_directory(dir.path()); }, ErrorCode::io,
               {dir.path().string(), "tokenizer.json", "vocab.json"});
  expect_error([&] { (void)Gpt2Tokenizer::from_files(dir / "nope.json", dir / "merges.txt"); },
               ErrorCode::io, {"nope.json"});
  // A device behind the name is refused before it is read (/dev/zero would never end).
  std::filesystem::create_symlink("/dev/zero", dir / "zero.json");
  expect_error([&] { (void)Gpt2Tokenizer::from_files(dir / "zero.json", dir / "merges.txt"); }, ErrorCode::io,
               {"zero.json", "not a regular file"});
  const json base = {{"model", {{"type", "BPE"}, {"vocab", tiny_vocab()}, {"merges", json::array()}}}};
  struct Case {
    const char* name;
    json doc;
    ErrorCode code;
    std::string expect;
  };
  json normalizer = base;
  normalizer["normalizer"] = {{"type", "NFC"}};
  json prefix = base;
  prefix["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}};
  json unigram = base;
  unigram["model"]["type"] = "Unigram";
  json lstrip = base;
  lstrip["added_tokens"] = json::array({{{"id", 256}, {"content", "<x>"}, {"lstrip", true}}});
  json conflict = base;
  conflict["added_tokens"] = json::array({{{"id", 3}, {"content", "<x>"}}});
  json hole = base;
  hole["added_tokens"] = json::array({{{"id", 300}, {"content", "<x>"}}});
  json bad_merge = base;
  bad_merge["model"]["merges"] = json::array({42});
  json text_flag = base;
  text_flag["added_tokens"] = json::array({{{"id", 256}, {"content", "<x>"}, {"special", "yes"}}});
  json text_prefix = base;
  text_prefix["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", 0}};
  // A BOS before the text, as OPT-style tokenizers add it (HF: [50256, ...] where GPT-2 gives [...]).
  json bos = base;
  bos["post_processor"] = {{"type", "TemplateProcessing"},
                           {"single", json::array({{{"SpecialToken", {{"id", "<|endoftext|>"}, {"type_id", 0}}}},
                                                   {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})}};
  json roberta = base;
  roberta["post_processor"] = {{"type", "Sequence"},
                               {"processors", json::array({{{"type", "ByteLevel"}}, {{"type", "RobertaProcessing"}}})}};
  json truncation = base;
  truncation["truncation"] = {{"max_length", 8}};
  json padding = base;
  padding["padding"] = {{"strategy", "BatchLongest"}};
  json dropout = base;
  dropout["model"]["dropout"] = 0.1;
  json suffix = base;
  suffix["model"]["end_of_word_suffix"] = "</w>";
  json prefix_sub = base;
  prefix_sub["model"]["continuing_subword_prefix"] = "##";
  const Case cases[] = {
      {"normalizer", normalizer, ErrorCode::unsupported, "normalizer"},
      {"prefix space", prefix, ErrorCode::unsupported, "pre_tokenizer"},
      {"unigram", unigram, ErrorCode::unsupported, "Unigram"},
      {"lstrip", lstrip, ErrorCode::unsupported, "lstrip"},
      {"conflict", conflict, ErrorCode::bad_model_file, "id 3"},
      {"hole", hole, ErrorCode::bad_model_file, "gap"},
      {"bad merge", bad_merge, ErrorCode::bad_model_file, "model.merges[0]"},
      {"text flag", text_flag, ErrorCode::bad_model_file, "'special' is a JSON string"},
      {"number flag", text_prefix, ErrorCode::bad_model_file, "'add_prefix_space' is a JSON number"},
      {"bos template", bos, ErrorCode::unsupported, "post_processor"},
      {"roberta", roberta, ErrorCode::unsupported, "RobertaProcessing"},
      {"truncation", truncation, ErrorCode::unsupported, "'truncation'"},
      {"padding", padding, ErrorCode::unsupported, "'padding'"},
      {"dropout", dropout, ErrorCode::unsupported, "dropout"},
      {"suffix", suffix, ErrorCode::unsupported, "end_of_word_suffix"},
      {"subword prefix", prefix_sub, ErrorCode::unsupported, "continuing_subword_prefix"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    write(dir / "tokenizer.json", c.doc.dump());
    expect_error([&] { (void)Gpt2Tokenizer::from_directory(dir.path()); }, c.code, {"tokenizer.json", c.expect});
  }
}

}  // namespace
}  // namespace encore::test
