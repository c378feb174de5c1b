// config.json / generation_config.json of ViT-GPT2: every field a user's file can get wrong ends
// in an encore::Error naming the file and field (never a truncated or out-of-range value), and
// architecture variants encore does not implement are refused by name.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "models/vit_gpt2_internal.h"
#include "temp_dir.h"

using namespace encore;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const fs::path kData = ENCORE_TEST_DATA_DIR;

// A model directory with the tiny golden model's config.json, edited by `edit`, and optionally a
// generation_config.json.
class ConfigDir {
 public:
  explicit ConfigDir(const std::function<void(json&)>& edit, const json* generation = nullptr) {
    json config = json::parse(std::ifstream(kData / "vit_gpt2_tiny" / "config.json"));
    edit(config);
    std::ofstream(dir_ / "config.json") << config.dump(2);
    if (generation != nullptr) std::ofstream(dir_ / "generation_config.json") << generation->dump(2);
  }
  const fs::path& path() const { return dir_.path(); }

 private:
  test::TempDir dir_{"encore-vitgpt2-config"};
};

// read_config on an edited config must fail with `code` and a message containing `needle`.
void expect_refused(const std::function<void(json&)>& edit, ErrorCode code, const std::string& needle,
                    const json* generation = nullptr) {
  const ConfigDir dir(edit, generation);
  try {
    (void)vitgpt2::read_config(dir.path());
    ADD_FAILURE() << "accepted; expected an error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(VitGpt2Config, ReadsTheGoldenConfig) {
  const ConfigDir dir([](json&) {});
  const VitGpt2Config c = vitgpt2::read_config(dir.path());
  EXPECT_EQ(c.image_size, 32);
  EXPECT_EQ(c.patch_size, 8);
  EXPECT_EQ(c.enc_hidden, 32);
  EXPECT_EQ(c.enc_intermediate, 37);
  EXPECT_EQ(c.dec_intermediate, 4 * 32);  // n_inner null: 4 x n_embd
  EXPECT_EQ(c.vocab_size, 50);
  EXPECT_EQ(c.max_positions, 20);
  EXPECT_FLOAT_EQ(c.enc_layer_norm_eps, 1e-12f);
  EXPECT_FLOAT_EQ(c.dec_layer_norm_eps, 1e-5f);
  EXPECT_EQ(c.eos_token_id, 49);
}

// The second golden model is what catches a loader ignoring the config's LayerNorm eps or the
// decoder's activation (tools/golden/vit_gpt2.py checks that its goldens move far beyond the test
// tolerance with the default eps or gelu_new): it must keep eps 0.5 and the exact GELU.
TEST(VitGpt2Config, ReadsTheSecondGoldenConfig) {
  const VitGpt2Config c = vitgpt2::read_config(kData / "vit_gpt2_tiny_b");
  EXPECT_EQ(c.image_size, 48);
  EXPECT_EQ(c.vocab_size, 67);
  EXPECT_EQ(c.max_positions, 24);
  EXPECT_FLOAT_EQ(c.enc_layer_norm_eps, 0.5f);
  EXPECT_FLOAT_EQ(c.dec_layer_norm_eps, 0.5f);
  EXPECT_EQ(c.enc_hidden_act, "gelu");
  EXPECT_EQ(c.dec_activation, "gelu");
  EXPECT_EQ(c.eos_token_id, 66);
}

TEST(VitGpt2Config, IntegerFieldsMustBeIntegersInRange) {
  // A float where an integer belongs: neither truncated (12.5 -> 12) nor cast out of range (1e300).
  expect_refused([](json& j) { j["decoder"]["n_layer"] = 2.5; }, ErrorCode::bad_model_file, "'n_layer' must be an integer");
  expect_refused([](json& j) { j["decoder"]["n_layer"] = 1e300; }, ErrorCode::bad_model_file, "must be an integer");
  expect_refused([](json& j) { j["decoder"]["n_embd"] = "32"; }, ErrorCode::bad_model_file, "'n_embd' must be an integer");
  expect_refused([](json& j) { j["decoder"]["n_head"] = 0; }, ErrorCode::bad_model_file, "'n_head' = 0 is outside");
  expect_refused([](json& j) { j["encoder"]["image_size"] = -32; }, ErrorCode::bad_model_file, "'image_size' = -32");
  expect_refused([](json& j) { j["encoder"]["image_size"] = 16384, j["encoder"]["patch_size"] = 1; },
                 ErrorCode::bad_model_file, "gives 268435456 patches");
  // Sizes whose products would overflow int64 (before: n_embd = 2^62 made the n_inner default
  // 4 x 2^62, signed overflow) stop at the field.
  expect_refused([](json& j) { j["decoder"]["n_embd"] = std::int64_t{1} << 62; }, ErrorCode::bad_model_file,
                 "'n_embd' = 4611686018427387904 is outside");
  expect_refused([](json& j) { j["decoder"]["vocab_size"] = std::uint64_t{1} << 63; }, ErrorCode::bad_model_file,
                 "'vocab_size' = 9223372036854775808 is outside");
  expect_refused([](json& j) { j["decoder_start_token_id"] = 1e10; }, ErrorCode::bad_model_file,
                 "'decoder_start_token_id' must be an integer");
  expect_refused([](json& j) { j["eos_token_id"] = json::array({std::int64_t{1} << 40}); }, ErrorCode::bad_model_file,
                 "'eos_token_id' = 1099511627776 is outside");
  expect_refused([](json& j) { j["pad_token_id"] = 50; }, ErrorCode::bad_model_file, "pad_token_id = 50 is outside the vocabulary");
}

TEST(VitGpt2Config, FloatFieldsMustBeFiniteAndEpsilonPositive) {
  expect_refused([](json& j) { j["decoder"]["layer_norm_epsilon"] = 0; }, ErrorCode::bad_model_file,
                 "'layer_norm_epsilon' = 0 must be a finite, positive number");
  // Positive as a double, 0 as the float it becomes.
  expect_refused([](json& j) { j["decoder"]["layer_norm_epsilon"] = 1e-50; }, ErrorCode::bad_model_file,
                 "'layer_norm_epsilon' = 1e-50 must be");
  expect_refused([](json& j) { j["encoder"]["layer_norm_eps"] = -1e-6; }, ErrorCode::bad_model_file, "'layer_norm_eps'");
  expect_refused([](json& j) { j["encoder"]["layer_norm_eps"] = 1e300; }, ErrorCode::bad_model_file, "'layer_norm_eps'");
  expect_refused([](json& j) { j["length_penalty"] = "high"; }, ErrorCode::bad_model_file, "'length_penalty' must be a number");
}

TEST(VitGpt2Config, GenerationSettingsAreCheckedWhereTheyComeFrom) {
  const json zero_beams = {{"num_beams", 0}};
  expect_refused([](json&) {}, ErrorCode::bad_model_file, "generation_config.json: field 'num_beams' = 0 is outside",
                 &zero_beams);
  const json fractional = {{"max_length", 16.5}};
  expect_refused([](json&) {}, ErrorCode::bad_model_file, "'max_length' must be an integer", &fractional);
  expect_refused([](json& j) { j["max_length"] = 0; }, ErrorCode::bad_model_file, "'max_length' = 0 is outside");
  const json good = {{"num_beams", 3}, {"max_length", 12}, {"length_penalty", 0.5}, {"early_stopping", "never"}};
  const ConfigDir dir([](json&) {}, &good);
  const VitGpt2Config c = vitgpt2::read_config(dir.path());
  EXPECT_EQ(c.num_beams, 3);
  EXPECT_EQ(c.max_length, 12);
  EXPECT_FLOAT_EQ(c.length_penalty, 0.5f);
  EXPECT_EQ(c.early_stopping, 2);
  EXPECT_EQ(c.top_k, 50);  // HF's default when no file sets it
  EXPECT_FALSE(c.max_new_tokens.has_value());
  EXPECT_EQ(c.num_return_sequences, 1);

  // The lengths HF lets win over max_length / min_length, and the sequences per image.
  const json lengths = {{"max_new_tokens", 9}, {"min_new_tokens", 0}, {"num_return_sequences", 2}, {"num_beams", 2}};
  const ConfigDir with_lengths([](json&) {}, &lengths);
  const VitGpt2Config l = vitgpt2::read_config(with_lengths.path());
  EXPECT_EQ(l.max_new_tokens, 9);
  EXPECT_EQ(l.min_new_tokens, 0);
  EXPECT_EQ(l.num_return_sequences, 2);
  const json no_new_tokens = {{"max_new_tokens", 0}};
  expect_refused([](json&) {}, ErrorCode::bad_model_file, "'max_new_tokens' = 0 is outside", &no_new_tokens);
  const json no_sequences = {{"num_return_sequences", 0}};
  expect_refused([](json&) {}, ErrorCode::bad_model_file, "'num_return_sequences' = 0 is outside", &no_sequences);
}

// Generation settings come from generation_config.json alone when there is one (HF 5.17 ignores
// config.json's then), else from config.json; a value only sampling would reject (temperature 0
// beside do_sample false) loads, and is checked when used.
TEST(VitGpt2Config, SamplingSettingsAreRead) {
  const json gen = {{"do_sample", true}, {"top_k", 7}, {"top_p", 0.9}, {"min_length", 3}};
  const auto in_config = [](json& j) {
    j["temperature"] = 0.0, j["top_k"] = 20, j["max_length"] = 12, j["early_stopping"] = true;
    j["decoder"]["max_length"] = 14;
  };
  const ConfigDir dir(in_config, &gen);
  const VitGpt2Config c = vitgpt2::read_config(dir.path());
  EXPECT_TRUE(c.do_sample);
  EXPECT_EQ(c.top_k, 7);
  EXPECT_FLOAT_EQ(c.top_p, 0.9f);
  EXPECT_EQ(c.min_length, 3);
  EXPECT_EQ(c.temperature, 1.0f);  // config.json's 0.0 is ignored beside a generation file
  EXPECT_FALSE(c.max_length.has_value());
  EXPECT_EQ(c.early_stopping, 0);
  const ConfigDir only_config(in_config);
  const VitGpt2Config o = vitgpt2::read_config(only_config.path());
  EXPECT_EQ(o.temperature, 0.0f);
  EXPECT_EQ(o.top_k, 20);
  EXPECT_EQ(o.max_length, 12);  // the top level over the decoder's
  EXPECT_EQ(o.early_stopping, 1);
  // What HF refuses at load: several sequences from greedy decoding, more than the beams.
  const json greedy_three = {{"num_return_sequences", 3}};
  expect_refused([](json&) {}, ErrorCode::bad_model_file, "num_return_sequences = 3 with greedy decoding",
                 &greedy_three);
  const json three_of_two = {{"num_return_sequences", 3}, {"num_beams", 2}};
  expect_refused([](json&) {}, ErrorCode::bad_model_file, "num_return_sequences = 3 is more than num_beams = 2",
                 &three_of_two);
  const json bad_sample = {{"do_sample", "yes"}};
  expect_refused([](json&) {}, ErrorCode::bad_model_file, "'do_sample' has the wrong type", &bad_sample);
  const json bad_min = {{"min_length", -1}};
  expect_refused([](json&) {}, ErrorCode::bad_model_file, "'min_length' = -1 is outside", &bad_min);
}

// Special ids as HF 5.17 resolves them (checked with transformers on the tiny model): with a
// generation_config.json its ids alone, the start being decoder_start_token_id else bos_token_id,
// no eos meaning none; without one, config.json's top level, then its decoder section.
TEST(VitGpt2Config, SpecialIdsResolveAsHuggingFace) {
  {
    const json gen = {{"bos_token_id", 7}, {"eos_token_id", 49}};
    const ConfigDir dir([](json& j) { j["decoder_start_token_id"] = 40; }, &gen);
    const VitGpt2Config c = vitgpt2::read_config(dir.path());
    EXPECT_EQ(c.decoder_start_token_id, 7);  // config.json's 40 is not consulted
    EXPECT_EQ(c.eos_token_id, 49);
    EXPECT_EQ(c.pad_token_id, 49);  // no pad: eos
  }
  {
    const json gen = {{"decoder_start_token_id", 3}};
    const ConfigDir dir([](json& j) { j["eos_token_id"] = 6; }, &gen);
    const VitGpt2Config c = vitgpt2::read_config(dir.path());
    EXPECT_EQ(c.decoder_start_token_id, 3);
    EXPECT_EQ(c.eos_token_id, -1);  // none in the generation file: HF generates to the length
    EXPECT_EQ(c.pad_token_id, -1);
  }
  {
    const ConfigDir dir([](json& j) {
      for (json* o : {&j, &j["decoder"]})
        for (const char* k : {"decoder_start_token_id", "bos_token_id"}) o->erase(k);
      j["bos_token_id"] = 7;
    });
    EXPECT_EQ(vitgpt2::read_config(dir.path()).decoder_start_token_id, 7);  // top-level bos, no start anywhere
  }
  {
    const ConfigDir dir([](json& j) {
      for (json* o : {&j, &j["decoder"]})
        for (const char* k : {"decoder_start_token_id", "bos_token_id"}) o->erase(k);
    });
    EXPECT_EQ(vitgpt2::read_config(dir.path()).decoder_start_token_id, -1);  // none: caption() needs one
  }
}

// Without a generation file, generation settings the top level leaves unset come from the decoder
// section (GenerationConfig.from_model_config), not only its max_length.
TEST(VitGpt2Config, DecoderSectionGenerationSettingsApply) {
  const ConfigDir dir([](json& j) {
    j["decoder"]["num_beams"] = 4, j["decoder"]["length_penalty"] = 0.5, j["decoder"]["max_length"] = 9;
    j.erase("num_beams"), j.erase("length_penalty"), j.erase("max_length");
    j["min_length"] = 3, j["decoder"]["min_length"] = 5;  // the top level wins
  });
  const VitGpt2Config c = vitgpt2::read_config(dir.path());
  EXPECT_EQ(c.num_beams, 4);
  EXPECT_EQ(c.length_penalty, 0.5f);
  EXPECT_EQ(c.max_length, 9);
  EXPECT_EQ(c.min_length, 3);
}

// Logits processors HF applies and encore does not implement are refused by name unless they hold
// their no-op value; sampling warpers count only when the model samples.
TEST(VitGpt2Config, UnimplementedLogitsProcessorsAreRefused) {
  expect_refused([](json& j) { j["no_repeat_ngram_size"] = 2; }, ErrorCode::unsupported, "'no_repeat_ngram_size' = 2");
  expect_refused([](json& j) { j["decoder"]["repetition_penalty"] = 2.0; }, ErrorCode::unsupported,
                 "'repetition_penalty' = 2");
  expect_refused([](json& j) { j["bad_words_ids"] = json::array({json::array({5})}); }, ErrorCode::unsupported,
                 "'bad_words_ids'");
  const json gen = {{"forced_eos_token_id", 4}};
  expect_refused([](json&) {}, ErrorCode::unsupported, "'forced_eos_token_id' = 4", &gen);
  expect_refused([](json& j) { j["do_sample"] = true, j["typical_p"] = 0.5; }, ErrorCode::unsupported, "'typical_p'");
  // No-op values, a top level that undoes its decoder's setting, and warpers without sampling load.
  const ConfigDir fine([](json& j) {
    j["no_repeat_ngram_size"] = 0, j["repetition_penalty"] = 1.0, j["bad_words_ids"] = nullptr;
    j["decoder"]["no_repeat_ngram_size"] = 3;  // overridden by the top level's 0
    j["typical_p"] = 0.5, j["do_sample"] = false;
    j["suppress_tokens"] = json::array();
  });
  EXPECT_NO_THROW((void)vitgpt2::read_config(fine.path()));
}

// GPT2Config's attribute_map names (num_attention_heads, ...) and gelu_new's equivalent spellings.
TEST(VitGpt2Config, AttributeAliasesAndGeluSpellings) {
  const ConfigDir dir([](json& j) {
    json& d = j["decoder"];
    d["num_attention_heads"] = d["n_head"], d.erase("n_head");
    d["max_position_embeddings"] = d["n_positions"], d.erase("n_positions");
    d["activation_function"] = "gelu_pytorch_tanh";
  });
  const VitGpt2Config c = vitgpt2::read_config(dir.path());
  const VitGpt2Config golden = vitgpt2::read_config(ConfigDir([](json&) {}).path());
  EXPECT_EQ(c.dec_heads, golden.dec_heads);
  EXPECT_EQ(c.max_positions, golden.max_positions);
  EXPECT_EQ(c.dec_activation, "gelu_new");
}

TEST(VitGpt2Config, ArchitectureVariantsEncoreDoesNotImplementAreRefused) {
  expect_refused([](json& j) { j["decoder"]["scale_attn_by_inverse_layer_idx"] = true; }, ErrorCode::unsupported,
                 "decoder.scale_attn_by_inverse_layer_idx = true is not supported");
  expect_refused([](json& j) { j["decoder"]["scale_attn_weights"] = false; }, ErrorCode::unsupported,
                 "decoder.scale_attn_weights = false is not supported");
  expect_refused([](json& j) { j["decoder"]["tie_word_embeddings"] = false; }, ErrorCode::unsupported,
                 "decoder.tie_word_embeddings = false is not supported");
  expect_refused([](json& j) { j["encoder"]["qkv_bias"] = false; }, ErrorCode::unsupported,
                 "encoder.qkv_bias = false is not supported");
  expect_refused([](json& j) { j["decoder"]["scale_attn_weights"] = 1; }, ErrorCode::bad_model_file,
                 "'scale_attn_weights' has the wrong type");
  // Absent flags take transformers' defaults, which encore implements.
  const ConfigDir dir([](json& j) {
    for (const char* k : {"scale_attn_weights", "scale_attn_by_inverse_layer_idx", "tie_word_embeddings"})
      j["decoder"].erase(k);
    j["encoder"].erase("qkv_bias");
  });
  EXPECT_NO_THROW((void)vitgpt2::read_config(dir.path()));
}

}  // namespace

// Hostile or ambiguous generation settings: deep nesting is refused without exhausting the stack
// (parser or error message), an eos list of several ids is refused (generation takes one; HF stops
// on any), a list repeating one id is that id, and early_stopping takes HF's values only.
TEST(VitGpt2Config, HostileAndAmbiguousGenerationFields) {
  std::string deep = R"({"max_length": )";
  for (int i = 0; i < 100000; ++i) deep += '[';
  for (int i = 0; i < 100000; ++i) deep += ']';
  deep += '}';
  const std::string config = json::parse(std::ifstream(kData / "vit_gpt2_tiny" / "config.json")).dump();
  try {
    (void)vitgpt2::parse_config(config, deep, "<deep>/config.json", "<deep>/generation_config.json");
    ADD_FAILURE() << "accepted a generation config nested 100000 deep";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::bad_model_file) << e.what();
  }
  const json two_eos = {{"eos_token_id", {5, 7}}};
  expect_refused([](json&) {}, ErrorCode::unsupported, "field 'eos_token_id' lists several token ids", &two_eos);
  const json bad_entry = {{"eos_token_id", {5, "x"}}};
  expect_refused([](json&) {}, ErrorCode::bad_model_file, "field 'eos_token_id' must be an integer", &bad_entry);
  const json same_eos = {{"eos_token_id", {5, 5}}, {"early_stopping", 1}};
  const ConfigDir dir([](json&) {}, &same_eos);
  const VitGpt2Config c = vitgpt2::read_config(dir.path());
  EXPECT_EQ(c.eos_token_id, 5);
  EXPECT_EQ(c.early_stopping, 1);
  const json yes = {{"early_stopping", "yes"}};
  expect_refused([](json&) {}, ErrorCode::bad_model_file, "field 'early_stopping' = \"yes\" must be true, false or",
                 &yes);
}

// config.json is read only when it is a regular file of at most 16 MiB: /dev/zero (or a FIFO)
// behind the name would otherwise be read until memory runs out (or block).
TEST(VitGpt2Config, ConfigMustBeASmallRegularFile) {
  const ConfigDir dir([](json&) {});
  fs::remove(dir.path() / "config.json");
  fs::create_symlink("/dev/zero", dir.path() / "config.json");
  try {
    (void)vitgpt2::read_config(dir.path());
    ADD_FAILURE() << "read /dev/zero as a config";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::io) << e.what();
    EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
  }
}
