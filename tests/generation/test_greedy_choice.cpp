// generate() with a session that makes greedy choices itself (DecoderSession::step_greedy, as the
// fused CUDA decoder step does on the GPU) against the same session returning logits: identical ids
// and scores, min-length masking included; sampling and beams keep using step().
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "decode/generation_internal.h"
#include "encore/core/error.h"
#include "encore/core/tensor.h"
#include "encore/decode/generation.h"

namespace encore {
namespace {

constexpr int kVocab = 17;
constexpr int kEos = 3;

// Logits of a row as a fixed function of its history (eos grows likelier with length).
std::vector<float> logits_of(int row, const std::vector<std::int32_t>& history) {
  std::uint64_t h = 0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(row + 1);
  for (std::int32_t t : history) h = (h ^ static_cast<std::uint64_t>(t + 1)) * 0xBF58476D1CE4E5B9ull;
  std::vector<float> out(kVocab);
  for (int v = 0; v < kVocab; ++v) {
    h = (h ^ (h >> 29)) * 0x94D049BB133111EBull + static_cast<std::uint64_t>(v);
    out[static_cast<std::size_t>(v)] = static_cast<float>(static_cast<double>(h >> 40) * 0x1.0p-21);
  }
  out[kEos] += 0.6f * static_cast<float>(history.size()) - 2.0f;
  return out;
}

class LogitsSession : public DecoderSession {
 public:
  explicit LogitsSession(int rows) : histories_(static_cast<std::size_t>(rows)) {}
  int rows() const override { return static_cast<int>(histories_.size()); }
  int vocab_size() const override { return kVocab; }
  Tensor step(std::span<const std::int32_t> tokens) override {
    ++steps;
    std::vector<float> all;
    for (int r = 0; r < rows(); ++r) {
      const std::vector<float> row = advance(r, tokens[static_cast<std::size_t>(r)]);
      all.insert(all.end(), row.begin(), row.end());
    }
    return Tensor::from_vector(all, Shape{rows(), kVocab});
  }
  void reorder(std::span<const int> parent) override {
    std::vector<std::vector<std::int32_t>> next;
    for (int p : parent) next.push_back(histories_[static_cast<std::size_t>(p)]);
    histories_ = std::move(next);
  }
  int steps = 0;

 protected:
  std::vector<float> advance(int r, std::int32_t token) {
    histories_[static_cast<std::size_t>(r)].push_back(token);
    return logits_of(r, histories_[static_cast<std::size_t>(r)]);
  }

 private:
  std::vector<std::vector<std::int32_t>> histories_;
};

// Chooses from the same logits in double precision, as a device would in f32.
class ChoosingSession final : public LogitsSession {
 public:
  using LogitsSession::LogitsSession;
  bool chooses_greedy() const override { return true; }
  std::vector<GreedyChoice> step_greedy(std::span<const std::int32_t> tokens, std::int32_t eos) override {
    ++greedy_steps;
    std::vector<GreedyChoice> out;
    for (int r = 0; r < rows(); ++r) {
      const std::vector<float> l = advance(r, tokens[static_cast<std::size_t>(r)]);
      int best = 0, best_ne = eos == 0 ? 1 : 0;
      double sum = 0, sum_ne = 0;
      for (int v = 0; v < kVocab; ++v) {
        if (l[v] > l[best]) best = v;
        if (v != eos && l[v] > l[best_ne]) best_ne = v;
      }
      for (int v = 0; v < kVocab; ++v) {
        sum += std::exp(double(l[v]) - l[best]);
        if (v != eos) sum_ne += std::exp(double(l[v]) - l[best_ne]);
      }
      out.push_back({best, static_cast<float>(-std::log(sum)), best_ne, static_cast<float>(-std::log(sum_ne))});
    }
    if (bad_choice) out[0].token = kVocab;
    return out;
  }
  int greedy_steps = 0;
  bool bad_choice = false;
};

TEST(GreedyChoice, SameIdsAndScoresAsFromLogits) {
  for (int min_length : {0, 4, 7})
    for (std::int32_t eos : {kEos, -1}) {
      SCOPED_TRACE("min_length " + std::to_string(min_length) + " eos " + std::to_string(eos));
      const GenerationOptions o{.max_length = 9, .min_length = min_length, .start_token_id = 0, .eos_token_id = eos};
      LogitsSession plain(3);
      ChoosingSession choosing(3);
      const auto want = generate(plain, 3, o);
      const auto got = generate(choosing, 3, o);
      EXPECT_EQ(choosing.steps, 0);
      EXPECT_EQ(choosing.greedy_steps, plain.steps);
      ASSERT_EQ(got.size(), want.size());
      bool any_eos = false;
      for (std::size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(got[i].ids, want[i].ids) << "item " << i;
        EXPECT_NEAR(got[i].score, want[i].score, 1e-5) << "item " << i;
        any_eos = any_eos || (eos >= 0 && got[i].ids.back() == eos);
      }
      // The fixture must exercise both outcomes: sequences that end early and the eos mask.
      if (eos >= 0 && min_length < 7) EXPECT_TRUE(any_eos);
    }
}

// Rows of log-probabilities crafted for the edge cases (ties, NaN, eos the favourite, eos certain),
// returned as they are (step_returns_log_probs) or chosen from by detail::greedy_choice, which
// sessions use: generate() must produce bitwise the same ids and scores either way.
class CraftedSession : public DecoderSession {
 public:
  CraftedSession(bool choose) : choose_(choose) {}
  int rows() const override { return 1; }
  int vocab_size() const override { return 6; }
  bool step_returns_log_probs() const override { return true; }
  bool chooses_greedy() const override { return choose_; }
  Tensor step(std::span<const std::int32_t>) override { return Tensor::from_vector(next(), Shape{1, 6}); }
  std::vector<GreedyChoice> step_greedy(std::span<const std::int32_t>, std::int32_t eos) override {
    return {detail::greedy_choice(next(), eos)};
  }
  void reorder(std::span<const int>) override {}

 private:
  std::vector<float> next() {
    const float nan = std::nanf(""), inf = INFINITY;
    static const std::vector<std::vector<float>> rows = {
        {-2.0f, -1.0f, -1.0f, -3.0f, -4.0f, -5.0f},       // a tie: the lower index
        {-3.0f, -2.5f, -1.5f, -0.4f, -2.0f, -2.2f},       // eos (3) the favourite
        {-1e-8f, -30.0f, -31.0f, -1e-9f, -40.0f, -50.0f},  // eos nearly certain: no renormalisation shortcut
        {-1.0f, nan, -0.5f, -2.0f, nan, -3.0f},            // the first NaN wins
        {-inf, -inf, -inf, 0.0f, -inf, -inf},              // only eos possible
        {-1.5f, -1.5f, -2.5f, -0.1f, -1.5f, -9.0f},
    };
    return rows[static_cast<std::size_t>(step_++ % static_cast<int>(rows.size()))];
  }
  bool choose_;
  int step_ = 0;
};

TEST(GreedyChoice, SessionsChoosingFromLogProbsMatchGenerateBitwise) {
  for (int min_length : {0, 4, 8})
    for (std::int32_t eos : {3, 0, -1}) {
      SCOPED_TRACE("min_length " + std::to_string(min_length) + " eos " + std::to_string(eos));
      const GenerationOptions o{.max_length = 8, .min_length = min_length, .start_token_id = 0,
                                .eos_token_id = eos, .pad_token_id = 5};
      CraftedSession rows(false), choosing(true);
      const auto want = generate(rows, 1, o);
      const auto got = generate(choosing, 1, o);
      EXPECT_EQ(got[0].ids, want[0].ids);
      EXPECT_EQ(std::isnan(got[0].score), std::isnan(want[0].score));
      if (!std::isnan(want[0].score)) EXPECT_EQ(got[0].score, want[0].score);
    }
}

// detail::greedy_choice on its own, against hand-derived choices (the test above compares it with
// generate(), which uses it too): ties, eos the favourite, the first NaN, only eos possible.
TEST(GreedyChoice, DirectChoicesOnCraftedRows) {
  const float nan = std::nanf(""), inf = INFINITY;
  const std::vector<float> tie{-2.0f, -1.0f, -1.0f, -3.0f, -4.0f, -5.0f};
  GreedyChoice g = detail::greedy_choice(tie, 3);
  EXPECT_EQ(g.token, 1);
  EXPECT_EQ(g.log_prob, -1.0f);
  EXPECT_EQ(g.token_without_eos, 1);
  EXPECT_NEAR(g.log_prob_without_eos, -1.0 - std::log1p(-std::exp(-3.0)), 1e-6);

  const std::vector<float> eos_first{-3.0f, -2.5f, -1.5f, -0.4f, -2.0f, -2.2f};
  g = detail::greedy_choice(eos_first, 3);
  EXPECT_EQ(g.token, 3);
  EXPECT_EQ(g.log_prob, -0.4f);
  EXPECT_EQ(g.token_without_eos, 2);
  EXPECT_NEAR(g.log_prob_without_eos, -1.5 - std::log1p(-std::exp(-0.4)), 1e-6);
  g = detail::greedy_choice(eos_first, -1);  // no eos: nothing is excluded
  EXPECT_EQ(g.token, 3);
  EXPECT_EQ(g.token_without_eos, 3);

  const std::vector<float> with_nan{-1.0f, nan, -0.5f, -2.0f, nan, -3.0f};
  g = detail::greedy_choice(with_nan, 3);
  EXPECT_EQ(g.token, 1);  // the first NaN is the maximum (torch.argmax)
  EXPECT_TRUE(std::isnan(g.log_prob));
  EXPECT_EQ(g.token_without_eos, 1);

  const std::vector<float> only_eos{-inf, -inf, -inf, 0.0f, -inf, -inf};
  g = detail::greedy_choice(only_eos, 3);
  EXPECT_EQ(g.token, 3);
  EXPECT_EQ(g.log_prob, 0.0f);
}

TEST(GreedyChoice, SamplingAndBeamsUseLogits) {
  ChoosingSession sampled(2);
  (void)generate(sampled, 2, {.max_length = 5, .do_sample = true, .seed = 7, .start_token_id = 0});
  EXPECT_EQ(sampled.greedy_steps, 0);
  EXPECT_GT(sampled.steps, 0);
  ChoosingSession beams(4);
  (void)generate(beams, 2, {.max_length = 5, .num_beams = 2, .start_token_id = 0, .eos_token_id = kEos});
  EXPECT_EQ(beams.greedy_steps, 0);
  EXPECT_GT(beams.steps, 0);
}

TEST(GreedyChoice, ChoicesOutsideTheVocabularyAreReported) {
  ChoosingSession s(2);
  s.bad_choice = true;
  try {
    (void)generate(s, 2, {.max_length = 5, .start_token_id = 0});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("outside the vocabulary"), std::string::npos) << e.what();
  }
  LogitsSession plain(1);
  EXPECT_THROW(plain.step_greedy(std::vector<std::int32_t>{0}, -1), Error);  // the default: unsupported
}

}  // namespace
}  // namespace encore
