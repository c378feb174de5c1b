// Tests for encore::generate() (src/decode/generation.cpp, beam_search.cpp, sampling.cpp).
//
// A fake DecoderSession produces logits as a deterministic function of each row's token history
// (ToyLogits, mirrored exactly in tools/golden/generation_reference.py) and honours reorder() by
// copying histories. Goldens in tests/data/generation/golden.json come from Hugging Face
// transformers' own generate() run on the same function.
#include <gtest/gtest.h>

#include <algorithm>

#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "decode/generation_internal.h"
#include "encore/core/error.h"
#include "encore/core/tensor.h"
#include "encore/decode/generation.h"

namespace encore {
namespace {

using Ids = std::vector<std::int32_t>;
using LogitsFn = std::function<std::vector<float>(int item, const Ids& history)>;

// ---- the toy model (same definition as generation_reference.py) ---------------------------------
constexpr std::uint64_t kGolden = 0x9E3779B97F4A7C15ull;

std::uint64_t mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

struct ToyLogits {
  std::uint64_t seed = 1;
  int vocab = 24;
  int eos = 3;
  double eos_bias = -1.0;
  double eos_bias_step = 0.75;

  std::vector<float> operator()(int item, const Ids& history) const {
    std::uint64_t h = mix(seed * kGolden + static_cast<std::uint64_t>(item) + 1);
    for (std::int32_t t : history) h = mix(h + static_cast<std::uint64_t>(t) + 1);
    std::vector<float> out(static_cast<std::size_t>(vocab));
    for (int v = 0; v < vocab; ++v)
      out[v] = static_cast<float>(static_cast<double>(mix(h + static_cast<std::uint64_t>(v + 1) * kGolden) >> 44) *
                                  0x1.0p-17);
    // Both terms and their sum are exact in float32 (multiples of 2^-17 below 32).
    if (eos >= 0)
      out[eos] = static_cast<float>(static_cast<double>(out[eos]) + eos_bias +
                                    eos_bias_step * static_cast<double>(history.size() - 1));
    return out;
  }
};

// ---- fake session ------------------------------------------------------------------------------
class FakeSession final : public DecoderSession {
 public:
  /// `log_probs`: step() returns log_softmax of the toy logits (computed in double), as a session
  /// that normalises on its device does.
  FakeSession(int rows, int vocab, int rows_per_item, LogitsFn fn, bool log_probs = false)
      : rows_(rows), vocab_(vocab), per_item_(rows_per_item), fn_(std::move(fn)), histories_(rows),
        log_probs_(log_probs) {}

  int rows() const override { return rows_; }
  int vocab_size() const override { return vocab_; }
  bool step_returns_log_probs() const override { return log_probs_; }

  Tensor step(std::span<const std::int32_t> tokens) override {
    EXPECT_EQ(static_cast<int>(tokens.size()), rows_);
    std::vector<float> values;
    for (int r = 0; r < rows_; ++r) {
      histories_[r].push_back(tokens[r]);
      std::vector<float> row = fn_(r / per_item_, histories_[r]);
      if (log_probs_) {
        const double m = *std::max_element(row.begin(), row.end());
        double sum = 0;
        for (float v : row) sum += std::exp(static_cast<double>(v) - m);
        for (float& v : row) v = static_cast<float>(static_cast<double>(v) - m - std::log(sum));
      }
      values.insert(values.end(), row.begin(), row.end());
    }
    ++steps;
    return Tensor::from_vector(values, Shape{rows_, vocab_});
  }

  void reorder(std::span<const int> parent) override {
    EXPECT_EQ(static_cast<int>(parent.size()), rows_);
    std::vector<Ids> next;
    for (int p : parent) {
      EXPECT_TRUE(p >= 0 && p < rows_);
      EXPECT_EQ(p / per_item_, static_cast<int>(next.size()) / per_item_) << "a beam moved to another item";
      next.push_back(histories_[p]);
    }
    histories_ = std::move(next);
    ++reorders;
  }

  const Ids& history(int row) const { return histories_[row]; }
  int steps = 0;
  int reorders = 0;

 private:
  int rows_, vocab_, per_item_;
  LogitsFn fn_;
  std::vector<Ids> histories_;
  bool log_probs_;
};

FakeSession toy_session(int batch, const GenerationOptions& o, const ToyLogits& toy, bool log_probs = false) {
  const int per = generation_rows_per_item(o);
  return FakeSession(batch * per, toy.vocab, per, toy, log_probs);
}

std::vector<GenerationResult> run_toy(int batch, const GenerationOptions& o, const ToyLogits& toy) {
  FakeSession s = toy_session(batch, o, toy);
  return generate(s, batch, o);
}

// ---- goldens from Hugging Face generate() ------------------------------------------------------
TEST(GenerationGolden, MatchesHuggingFace) {
  std::ifstream in(std::string(ENCORE_TEST_DATA_DIR) + "/generation/golden.json");
  ASSERT_TRUE(in) << "missing tests/data/generation/golden.json";
  const nlohmann::json doc = nlohmann::json::parse(in);
  ASSERT_GE(doc["cases"].size(), 25u);
  for (const auto& c : doc["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const auto& j = c["options"];
    GenerationOptions o;
    o.start_token_id = 0;
    o.max_length = j["max_length"];
    o.min_length = j["min_length"];
    o.num_beams = j["num_beams"];
    o.length_penalty = j["length_penalty"];
    o.early_stopping = j["early_stopping"];
    o.start_token_id = j["start_token_id"];
    o.eos_token_id = j["eos_token_id"];
    o.pad_token_id = j["pad_token_id"];
    o.max_new_tokens = j.value("max_new_tokens", -1);
    o.min_new_tokens = j.value("min_new_tokens", -1);
    o.num_return_sequences = j.value("num_return_sequences", 1);
    ToyLogits toy{c["seed"], c["vocab"], o.eos_token_id.value_or(-1), c["eos_bias"], c["eos_bias_step"]};
    const int batch = c["batch"];
    for (bool log_probs : {false, true}) {  // sessions returning logits, or log-probabilities
      SCOPED_TRACE(log_probs ? "log-prob session" : "logits session");
      FakeSession session = toy_session(batch, o, toy, log_probs);
      const std::vector<GenerationResult> got = generate(session, batch, o);
      EXPECT_EQ(session.steps, c["steps"].get<int>()) << "decoder steps (HF forward passes)";
      ASSERT_EQ(got.size(), static_cast<std::size_t>(batch) * o.num_return_sequences);
      ASSERT_EQ(got.size(), c["expected"].size());
      for (std::size_t i = 0; i < got.size(); ++i) {
        const auto& e = c["expected"][i];
        EXPECT_EQ(got[i].ids, e["ids"].get<Ids>()) << "sequence " << i;
        EXPECT_NEAR(got[i].score, e["score"].get<double>(), 1e-5) << "sequence " << i;
        // One score per generated token, adding up (in float, in order) to the sequence's score;
        // beam search normalises that sum by gen_len^length_penalty.
        ASSERT_EQ(got[i].token_scores.size(), got[i].ids.size() - 1) << "sequence " << i;
        float sum = 0.0f;
        for (float t : got[i].token_scores) sum += t;
        if (o.num_beams == 1)
          EXPECT_EQ(sum, got[i].score) << "sequence " << i;
        else
          EXPECT_NEAR(sum / std::pow(static_cast<double>(got[i].token_scores.size()), o.length_penalty), got[i].score,
                      1e-6 * std::max(1.0, std::abs(double(got[i].score))))
              << "sequence " << i;
      }
    }
  }
}

// Greedy with a min-length mask and sampling with warpers: a session returning log-probabilities
// gives the same tokens and (renormalised where a processor changed the row) the same scores.
TEST(Generation, LogProbSessionsEqualLogitSessions) {
  ToyLogits toy{.seed = 31, .eos_bias = 1.5, .eos_bias_step = 0.5};
  std::vector<GenerationOptions> cases(3);
  cases[0] = {.max_length = 12, .min_length = 6, .start_token_id = 0};
  cases[1] = {.max_length = 12, .min_length = 4, .do_sample = true, .temperature = 0.7f, .top_k = 5, .seed = 9,
              .start_token_id = 0};
  cases[2] = {.max_length = 12, .do_sample = true, .top_p = 0.8f, .seed = 10, .start_token_id = 0};
  for (GenerationOptions& o : cases) {
    o.eos_token_id = toy.eos;
    FakeSession a = toy_session(3, o, toy, false), b = toy_session(3, o, toy, true);
    const auto x = generate(a, 3, o), y = generate(b, 3, o);
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(x[i].ids, y[i].ids) << "item " << i;
      EXPECT_NEAR(x[i].score, y[i].score, 1e-5) << "item " << i;
    }
  }
}

// ---- validation --------------------------------------------------------------------------------
void expect_error(const std::function<void()>& f, ErrorCode code, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(GenerationOptions, InvalidValuesNameTheField) {
  ToyLogits toy;
  auto check = [&](auto mutate, const std::string& needle, ErrorCode code = ErrorCode::invalid_argument) {
    GenerationOptions o;
    o.start_token_id = 0;
    o.eos_token_id = 3;
    mutate(o);
    expect_error([&] { run_toy(1, o, toy); }, code, needle);
  };
  check([](auto& o) { o.max_length = 1; }, "max_length = 1");
  check([](auto& o) { o.max_length = 0; }, "max_length = 0");
  check([](auto& o) { o.num_beams = 0; }, "num_beams = 0");
  check([](auto& o) { o.min_length = -2; }, "min_length = -2");
  check([](auto& o) { o.do_sample = true, o.temperature = 0.0f; }, "temperature = 0");
  check([](auto& o) { o.do_sample = true, o.temperature = -1.5f; }, "temperature = -1.5");
  check([](auto& o) { o.do_sample = true, o.top_p = -0.25f; }, "top_p = -0.25");
  check([](auto& o) { o.do_sample = true, o.top_p = 1.5f; }, "top_p = 1.5");
  check([](auto& o) { o.do_sample = true, o.top_k = -1; }, "top_k = -1");
  check([](auto& o) { o.num_beams = (1 << 20) + 1; }, "num_beams = 1048577");  // over the row limit
  check([](auto& o) { o.early_stopping = 3; }, "early_stopping = 3");
  check([](auto& o) { o.eos_token_id = 24; }, "eos_token_id = 24");
  check([](auto& o) { o.start_token_id.reset(); }, "start_token_id is not set");
  check([](auto& o) { o.pad_token_id = -5; }, "pad_token_id = -5");
  check([](auto& o) { o.start_token_id = 99; }, "start_token_id = 99");
  check([](auto& o) { o.length_penalty = std::numeric_limits<float>::infinity(); }, "length_penalty");
  check([](auto& o) { o.do_sample = true; o.num_beams = 2; }, "num_beams = 2", ErrorCode::unsupported);
  check([](auto& o) { o.max_new_tokens = 0; }, "max_new_tokens = 0");
  check([](auto& o) { o.max_new_tokens = -2; }, "max_new_tokens = -2");
  check([](auto& o) { o.min_new_tokens = -3; }, "min_new_tokens = -3");
  check([](auto& o) { o.num_return_sequences = 0; }, "num_return_sequences = 0");
  check([](auto& o) { o.num_return_sequences = 2; }, "num_return_sequences = 2: greedy");  // HF refuses too
  check([](auto& o) { o.num_beams = 3, o.num_return_sequences = 4; }, "num_return_sequences = 4 must be at most");
  check([](auto& o) { o.do_sample = true, o.num_return_sequences = (1 << 20) + 1; }, "num_return_sequences = 1048577");
  expect_error([&] { run_toy((1 << 20) + 1, GenerationOptions{.start_token_id = 0}, toy); }, ErrorCode::invalid_argument,
               "batch = 1048577 is over");
  // max_new_tokens replaces max_length, which is then not looked at (HF ignores it too).
  GenerationOptions o{.max_length = 1, .max_new_tokens = 3, .start_token_id = 0, .eos_token_id = 3};
  EXPECT_EQ(run_toy(1, o, toy).at(0).ids.size(), 4u);
  // No length given at all: HF 5.x's 20 new tokens after the start token.
  EXPECT_EQ(run_toy(1, GenerationOptions{.start_token_id = 0}, ToyLogits{.eos = -1}).at(0).ids.size(), 21u);
}


// As in Hugging Face, temperature, top_k and top_p only matter when sampling: greedy decoding with
// "temperature 0" (a common client setting) is greedy decoding.
TEST(GenerationOptions, SamplingSettingsAreIgnoredWhenNotSampling) {
  ToyLogits toy;
  GenerationOptions o;
  o.start_token_id = 0;
  o.eos_token_id = 3;
  const auto want = run_toy(1, o, toy);
  o.temperature = 0.0f, o.top_p = 0.0f, o.top_k = -1;
  const auto got = run_toy(1, o, toy);
  ASSERT_EQ(got.size(), want.size());
  EXPECT_EQ(got[0].ids, want[0].ids);
  EXPECT_EQ(GenerationOptions{.start_token_id = 0}.top_k, 50);  // Hugging Face's default
}

TEST(Sampling, NonFiniteScoresAreAnError) {
  const std::vector<float> nan{0.0f, std::numeric_limits<float>::quiet_NaN(), 1.0f};
  expect_error([&] { (void)detail::sample_from_scores(nan, 0.5); }, ErrorCode::invalid_argument, "not finite");
  const std::vector<float> inf{0.0f, std::numeric_limits<float>::infinity()};
  expect_error([&] { (void)detail::sample_from_scores(inf, 0.5); }, ErrorCode::invalid_argument, "not finite");
  const float ninf = -std::numeric_limits<float>::infinity();
  const std::vector<float> masked{ninf, ninf};
  expect_error([&] { (void)detail::sample_from_scores(masked, 0.5); }, ErrorCode::invalid_argument, "-inf");
  const std::vector<float> one{ninf, 2.0f, ninf};
  EXPECT_EQ(detail::sample_from_scores(one, 0.999), 1);
}

TEST(GenerationOptions, BatchAndRowsMustAgree) {
  ToyLogits toy;
  GenerationOptions o;
  o.start_token_id = 0;
  o.num_beams = 3;
  FakeSession s(5, toy.vocab, 3, toy);
  expect_error([&] { generate(s, 2, o); }, ErrorCode::invalid_argument, "rows() = 5");
  expect_error([&] { generate(s, 0, o); }, ErrorCode::invalid_argument, "batch = 0");
}

// generate() writes into the scores (masks, beam sums) only when it holds the sole reference to
// memory the tensor owns: a session's persistent tensor, or a borrowed buffer, stays untouched.
TEST(GenerationOptions, SessionTensorsAreNotModified) {
  class Keeper final : public DecoderSession {
   public:
    explicit Keeper(bool borrowed) {
      for (int i = 0; i < 2 * 6; ++i) buffer_[i] = static_cast<float>(i % 6);
      kept_ = borrowed ? Tensor::from_blob(buffer_, Shape{2, 6}, DType::F32)
                       : Tensor::from_vector(std::vector<float>(buffer_, buffer_ + 12), Shape{2, 6});
    }
    int rows() const override { return 2; }
    int vocab_size() const override { return 6; }
    Tensor step(std::span<const std::int32_t>) override { return kept_; }
    void reorder(std::span<const int>) override {}
    std::vector<float> values() const { return kept_.to_float_vector(); }

   private:
    float buffer_[12];
    Tensor kept_;
  };
  for (bool borrowed : {false, true})
    for (int beams : {1, 2}) {
      Keeper k(borrowed);
      const std::vector<float> before = k.values();
      GenerationOptions o{.max_length = 4, .min_length = 4, .num_beams = beams, .start_token_id = 0, .eos_token_id = 5};
      (void)generate(k, 2 / beams, o);
      EXPECT_EQ(k.values(), before) << (borrowed ? "borrowed" : "owned") << ", beams " << beams;
    }
}

TEST(GenerationOptions, WrongLogitsShapeIsReported) {
  class Bad final : public DecoderSession {
   public:
    int rows() const override { return 2; }
    int vocab_size() const override { return 8; }
    Tensor step(std::span<const std::int32_t>) override { return Tensor::zeros(Shape{2, 7}, DType::F32); }
    void reorder(std::span<const int>) override {}
  } bad;
  GenerationOptions o;
  o.start_token_id = 0;
  expect_error([&] { generate(bad, 2, o); }, ErrorCode::invalid_argument, "[2, 7]");
}

// ---- greedy ------------------------------------------------------------------------------------
TEST(Greedy, TiesPickTheLowestIndex) {
  auto flat = [](int, const Ids&) { return std::vector<float>{1.0f, 2.0f, 5.0f, 5.0f, 5.0f}; };
  FakeSession s(1, 5, 1, flat);
  GenerationOptions o;
  o.start_token_id = 0;
  o.max_length = 4;
  const auto r = generate(s, 1, o);
  EXPECT_EQ(r[0].ids, (Ids{0, 2, 2, 2}));
}

// torch.argmax counts NaN as the maximum and takes the first one; a NaN in the first slot wins too.
TEST(Greedy, NaNCountsAsTheMaximumLikeTorch) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const auto& [row, want] : std::vector<std::pair<std::vector<float>, int>>{
           {{1.0f, 9.0f, nan, 3.0f, nan}, 2}, {{nan, 9.0f, 1.0f}, 0}, {{1.0f, 9.0f, 3.0f}, 1}}) {
    auto fixed = [row = row](int, const Ids&) { return row; };
    FakeSession s(1, static_cast<int>(row.size()), 1, fixed);
    GenerationOptions o;
    o.start_token_id = 0;
    o.max_length = 2;
    EXPECT_EQ(generate(s, 1, o)[0].ids, (Ids{0, want}));
  }
}

TEST(Greedy, FinishedRowsAreFedPadAndResultsAreUnpadded) {
  // Item 0 says eos (3) at once, item 1 after three tokens.
  auto fn = [](int item, const Ids& h) {
    std::vector<float> l(6, 0.0f);
    l[(item == 0 || h.size() >= 4) ? 3 : 1] = 4.0f;
    return l;
  };
  FakeSession s(2, 6, 1, fn);
  GenerationOptions o;
  o.start_token_id = 0;
  o.max_length = 10;
  o.eos_token_id = 3;
  o.pad_token_id = 5;
  const auto r = generate(s, 2, o);
  EXPECT_EQ(r[0].ids, (Ids{0, 3}));
  EXPECT_EQ(r[1].ids, (Ids{0, 1, 1, 1, 3}));
  EXPECT_EQ(s.history(0), (Ids{0, 3, 5, 5}));  // pad fed while item 1 runs on
  EXPECT_EQ(s.steps, 4);
}

TEST(Greedy, CallbackReportsEveryTokenAndTheFinishingOne) {
  ToyLogits toy{.seed = 11};
  GenerationOptions o;
  o.start_token_id = 0;
  o.max_length = 12;
  o.eos_token_id = toy.eos;
  std::map<int, std::vector<TokenEvent>> events;
  std::map<int, std::vector<Ids>> seen_ids;
  o.on_token = [&](const TokenEvent& e) {
    events[e.item].push_back(e);
    seen_ids[e.item].emplace_back(e.ids.begin(), e.ids.end());
    return true;
  };
  const auto r = run_toy(3, o, toy);
  for (int b = 0; b < 3; ++b) {
    const auto& ev = events[b];
    ASSERT_EQ(ev.size(), r[b].ids.size() - 1) << "one event per generated token";
    for (std::size_t i = 0; i < ev.size(); ++i) {
      EXPECT_EQ(ev[i].token, r[b].ids[i + 1]);
      EXPECT_EQ(seen_ids[b][i], Ids(r[b].ids.begin(), r[b].ids.begin() + static_cast<long>(i) + 2));
      EXPECT_EQ(ev[i].finished, i + 1 == ev.size());
    }
  }
}

TEST(Greedy, CancellationStopsMidway) {
  ToyLogits toy{.seed = 5, .eos = -1};
  FakeSession s(2, toy.vocab, 1, toy);
  GenerationOptions o;
  o.start_token_id = 0;
  o.max_length = 20;
  int calls = 0;
  o.on_token = [&](const TokenEvent&) { return ++calls < 5; };
  expect_error([&] { generate(s, 2, o); }, ErrorCode::cancelled, "cancelled");
  EXPECT_EQ(calls, 5);
  EXPECT_EQ(s.steps, 3);  // events 1-2 after step 1, 3-4 after step 2, 5 after step 3
}

// ---- sampling ----------------------------------------------------------------------------------
GenerationOptions sampling_options(std::uint64_t seed) {
  GenerationOptions o;
  o.start_token_id = 0;
  o.max_length = 16;
  o.eos_token_id = 3;
  o.do_sample = true;
  o.seed = seed;
  return o;
}

TEST(Sampling, DeterministicPerSeed) {
  ToyLogits toy{.seed = 41, .eos_bias = -3.0, .eos_bias_step = 0.25};
  const auto a = run_toy(4, sampling_options(7), toy);
  const auto b = run_toy(4, sampling_options(7), toy);
  const auto c = run_toy(4, sampling_options(8), toy);
  bool differs = false;
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(a[i].ids, b[i].ids);
    EXPECT_EQ(a[i].score, b[i].score);
    differs = differs || a[i].ids != c[i].ids;
  }
  EXPECT_TRUE(differs) << "seeds 7 and 8 gave identical samples for 4 items";
}

// Sampling n sequences per item: batch * n rows, item i's on rows i*n .. i*n+n-1, each sampled on
// its own from one stream, so the result is that of a batch of batch * n items that repeat each
// item n times; events name the item and the sequence.
TEST(Sampling, SeveralSequencesPerItemAreRowsOfTheirOwn) {
  ToyLogits toy{.seed = 43, .eos_bias = -3.0, .eos_bias_step = 0.5};
  GenerationOptions o = sampling_options(11);
  o.num_return_sequences = 3;
  std::vector<std::pair<int, int>> seen;  // (item, sequence) of every event
  o.on_token = [&](const TokenEvent& e) {
    seen.emplace_back(e.item, e.sequence);
    return true;
  };
  FakeSession several = toy_session(2, o, toy);
  EXPECT_EQ(several.rows(), 6);
  const auto got = generate(several, 2, o);
  ASSERT_EQ(got.size(), 6u);

  GenerationOptions one = sampling_options(11);
  FakeSession repeated(6, toy.vocab, 3, toy);  // rows 0-2 see item 0's logits, rows 3-5 item 1's
  const auto want = generate(repeated, 6, one);
  bool differ = false;
  for (std::size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(got[i].ids, want[i].ids) << "sequence " << i;
    EXPECT_EQ(got[i].score, want[i].score) << "sequence " << i;
    differ = differ || got[i].ids != got[i / 3 * 3].ids;
  }
  EXPECT_TRUE(differ) << "the samples of an item should not all be equal";
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.front(), std::make_pair(0, 0));
  for (int r = 0; r < 6; ++r)
    EXPECT_NE(std::find(seen.begin(), seen.end(), std::make_pair(r / 3, r % 3)), seen.end()) << "row " << r;
  for (const auto& [item, sequence] : seen) EXPECT_TRUE(item >= 0 && item < 2 && sequence >= 0 && sequence < 3);
}

TEST(Sampling, TopKOneAndTinyTopPEqualGreedy) {
  ToyLogits toy{.seed = 42};
  GenerationOptions greedy;
  greedy.start_token_id = 0;
  greedy.max_length = 16;
  greedy.eos_token_id = 3;
  const auto want = run_toy(3, greedy, toy);
  GenerationOptions k1 = sampling_options(1);
  k1.top_k = 1;
  k1.temperature = 0.7f;
  GenerationOptions p0 = sampling_options(2);
  p0.top_p = 1e-6f;
  for (const auto& o : {k1, p0}) {
    const auto got = run_toy(3, o, toy);
    for (int b = 0; b < 3; ++b) {
      EXPECT_EQ(got[b].ids, want[b].ids) << "item " << b;
      EXPECT_NEAR(got[b].score, 0.0f, 1e-6) << "a single surviving token has probability 1";
      // So is each token's score (under the warped distribution it was drawn from).
      ASSERT_EQ(got[b].token_scores.size(), got[b].ids.size() - 1) << "item " << b;
      for (float t : got[b].token_scores) EXPECT_NEAR(t, 0.0f, 1e-6) << "item " << b;
      EXPECT_LT(*std::min_element(want[b].token_scores.begin(), want[b].token_scores.end()), -1e-3f)
          << "greedy's own token scores are log-probs of the unwarped logits";
    }
  }
}

// One step over many rows with fixed logits: samples follow softmax, warpers cut the tail.
std::vector<int> histogram(const std::vector<float>& logits, GenerationOptions o, int rows) {
  FakeSession s(rows, static_cast<int>(logits.size()), 1, [&](int, const Ids&) { return logits; });
  o.max_length = 2;
  o.do_sample = true;
  std::vector<int> counts(logits.size(), 0);
  for (const auto& r : generate(s, rows, o)) ++counts[r.ids[1]];
  return counts;
}

TEST(Sampling, FrequenciesFollowSoftmaxAndWarpers) {
  const std::vector<float> logits{std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  GenerationOptions o;
  o.start_token_id = 0;
  o.seed = 3;
  const auto plain = histogram(logits, o, 6000);
  EXPECT_NEAR(plain[0] / 6000.0, 0.5, 0.03);
  EXPECT_NEAR(plain[1] / 6000.0, 0.3, 0.03);
  EXPECT_NEAR(plain[2] / 6000.0, 0.2, 0.03);
  o.top_p = 0.6f;  // sorted ascending: cumulative 0.2, 0.5, 1.0 -> only 0.2 is <= 0.4
  const auto nucleus = histogram(logits, o, 3000);
  EXPECT_EQ(nucleus[2], 0);
  EXPECT_NEAR(nucleus[0] / 3000.0, 0.625, 0.03);
  o.top_p = 1.0f;
  o.top_k = 2;
  EXPECT_EQ(histogram(logits, o, 1000)[2], 0);
  o.top_k = 0;
  o.temperature = 0.25f;  // p ~ x^4: 0.0625 : 0.0081 : 0.0016 -> token 0 ~ 86%
  EXPECT_NEAR(histogram(logits, o, 3000)[0] / 3000.0, 0.0625 / (0.0625 + 0.0081 + 0.0016), 0.03);
}

TEST(Sampling, WarperEdgeCases) {
  std::vector<float> tied{1.0f, 3.0f, 3.0f, 0.0f};
  GenerationOptions o;
  o.start_token_id = 0;
  o.top_k = 1;  // HF keeps every token tied with the k-th value
  detail::apply_sampling_warpers(tied, o);
  EXPECT_TRUE(std::isinf(tied[0]) && std::isinf(tied[3]));
  EXPECT_EQ(tied[1], 3.0f);
  EXPECT_EQ(tied[2], 3.0f);
  std::vector<float> peaked{0.0f, 3.0f, 0.0f};  // p = 0.045, 0.909, 0.045
  o.top_k = 0;
  o.top_p = 0.93f;  // drop cumulative <= 0.07: the first tail token only
  detail::apply_sampling_warpers(peaked, o);
  EXPECT_EQ(peaked[1], 3.0f);
  EXPECT_EQ(std::isinf(peaked[0]) + std::isinf(peaked[2]), 1) << "ties sorted by index: token 0 goes first";
  // p0 = 0.1000000164f, just above float32(1 - 0.9) = 0.1000000015: HF (transformers 5.17) keeps the
  // token; a cut-off from a float top_p (1 - 0.9f = 0.1000000238) would drop it.
  std::vector<float> edge{-2.1972243785858154f, 0.0f};
  o.top_p = 0.9;
  detail::apply_sampling_warpers(edge, o);
  EXPECT_FALSE(std::isinf(edge[0]));
  std::vector<float> flat{0.5f, 0.0f, 1.0f, 0.25f};
  o.top_p = 0.0f;  // HF accepts 0: only the most likely token stays
  detail::apply_sampling_warpers(flat, o);
  EXPECT_EQ(flat[2], 1.0f);
  EXPECT_TRUE(std::isinf(flat[0]) && std::isinf(flat[1]) && std::isinf(flat[3]));
}

// ---- beam search -------------------------------------------------------------------------------
GenerationOptions beam_options(int beams, int max_length) {
  GenerationOptions o;
  o.start_token_id = 0;
  o.num_beams = beams;
  o.max_length = max_length;
  o.eos_token_id = 3;
  return o;
}

TEST(BeamSearch, CallbackEndsWithTheFinalResultPerItem) {
  ToyLogits toy{.seed = 21};
  GenerationOptions o = beam_options(4, 12);
  std::map<int, std::vector<std::pair<TokenEvent, Ids>>> events;
  o.on_token = [&](const TokenEvent& e) {
    events[e.item].emplace_back(e, Ids(e.ids.begin(), e.ids.end()));
    return true;
  };
  FakeSession s = toy_session(2, o, toy);
  const auto r = generate(s, 2, o);
  for (int b = 0; b < 2; ++b) {
    const auto& ev = events[b];
    ASSERT_FALSE(ev.empty());
    for (std::size_t i = 0; i + 1 < ev.size(); ++i) EXPECT_FALSE(ev[i].first.finished);
    EXPECT_TRUE(ev.back().first.finished);
    EXPECT_EQ(ev.back().second, r[b].ids);
    EXPECT_EQ(ev.back().first.token, r[b].ids.back());
    for (const auto& [e, ids] : ev) {
      EXPECT_EQ(e.token, ids.back());
      EXPECT_EQ(ids.front(), o.start_token_id);
    }
  }
  EXPECT_EQ(s.reorders, s.steps - 1) << "one reorder before every step but the first";
}

TEST(BeamSearch, CancellationStopsMidway) {
  ToyLogits toy{.seed = 22, .eos = -1};
  GenerationOptions o = beam_options(3, 20);
  o.eos_token_id = -1;
  int calls = 0;
  o.on_token = [&](const TokenEvent&) { return ++calls < 4; };
  FakeSession s = toy_session(2, o, toy);
  expect_error([&] { generate(s, 2, o); }, ErrorCode::cancelled, "cancelled");
  EXPECT_EQ(calls, 4);
  EXPECT_EQ(s.steps, 2);
}

TEST(BeamSearch, OneBeamPerItemRowsStayInTheirItem) {
  // Three items of different toy streams: beam search must never mix histories across items
  // (FakeSession::reorder checks it) and must reproduce an independent single-item run.
  ToyLogits toy{.seed = 23};
  GenerationOptions o = beam_options(3, 10);
  const auto together = run_toy(3, o, toy);
  for (int b = 0; b < 3; ++b) {
    auto item_fn = [&, b](int, const Ids& h) { return toy(b, h); };
    FakeSession alone(3, toy.vocab, 3, item_fn);
    const auto r = generate(alone, 1, o);
    EXPECT_EQ(r[0].ids, together[b].ids) << "item " << b;
    EXPECT_EQ(r[0].score, together[b].score) << "item " << b;
  }
}

TEST(BeamSearch, ScoreIsNormalisedSumOfLogProbs) {
  // Recompute the returned hypothesis' score from the toy logits (log_softmax per position).
  ToyLogits toy{.seed = 24};
  for (float lp : {0.5f, 1.0f, 2.0f}) {
    GenerationOptions o = beam_options(3, 9);
    o.length_penalty = lp;
    const auto r = run_toy(1, o, toy);
    const Ids& ids = r[0].ids;
    ASSERT_EQ(r[0].token_scores.size(), ids.size() - 1);
    double sum = 0.0;
    for (std::size_t t = 1; t < ids.size(); ++t) {
      std::vector<float> l = toy(0, Ids(ids.begin(), ids.begin() + static_cast<long>(t)));
      const float token_score = detail::log_softmax_at(l, ids[t]);
      EXPECT_NEAR(r[0].token_scores[t - 1], token_score, 1e-5) << "token " << t;  // on the hypothesis' own path
      sum += token_score;
    }
    const double want = sum / std::pow(static_cast<double>(ids.size() - 1), lp);
    EXPECT_NEAR(r[0].score, want, 1e-4) << "length_penalty " << lp;
  }
}

}  // namespace
}  // namespace encore
