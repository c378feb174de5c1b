// The fused CUDA decoder step (src/backends/cuda/fused_decoder_step.h) against the step graph it
// replaces, on the tiny golden models: the same log-probabilities over several steps, beam
// reorders and a restart (within the rounding of the graph's f16/bf16 intermediates; the fused
// step keeps activations in f32), and greedy choices made on the device that agree with its own
// log-probabilities. Token-exactness against Hugging Face is checked by test_vit_gpt2's goldens,
// which run the fused step for f16/bf16 on CUDA.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <tuple>

#include "encore/core/build_info.h"
#include "models/vit_gpt2_internal.h"
#include "models/vit_gpt2_session.h"

namespace encore::vitgpt2 {
namespace {

namespace fs = std::filesystem;

// Sessions built while it lives take the graph step (the switch is read per session).
class GraphStepOnly {
 public:
  GraphStepOnly() { setenv("ENCORE_CUDA_FUSED_STEP", "0", 1); }
  ~GraphStepOnly() { unsetenv("ENCORE_CUDA_FUSED_STEP"); }
};

Tensor random_states(const Shape& shape, std::uint64_t seed) {
  Tensor t = Tensor::empty(shape, DType::F32);
  float* p = t.data_ptr<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    p[i] = static_cast<float>(static_cast<double>(seed >> 11) * 0x1.0p-53 * 2.0 - 1.0);
  }
  return t;
}

int argmax(const float* row, int n, int skip = -1) {
  int best = -1;
  for (int i = 0; i < n; ++i)
    if (i != skip && (best < 0 || row[i] > row[best])) best = i;
  return best;
}

class FusedStep : public ::testing::TestWithParam<std::tuple<const char*, DType>> {
 protected:
  void SetUp() override {
    if (build_info().cuda_devices.empty()) GTEST_SKIP() << "no CUDA GPU present";
    dir_ = fs::path(ENCORE_TEST_DATA_DIR) / std::get<0>(GetParam());
    dtype_ = std::get<1>(GetParam());
    config_ = read_config(dir_);
    weights_ = load_weights(dir_, config_, dtype_, Device::cuda(0));
  }
  Tensor states(int images, std::uint64_t seed) const {
    return random_states({images, config_.num_patches() + 1, config_.enc_hidden}, seed).to(dtype_).to(Device::cuda(0));
  }
  // The graph rounds every intermediate to the model dtype (bf16 keeps 8 bits); the fused step
  // keeps them in f32. Observed worst cases on the tiny models: ~0.01 (f16), ~0.18 (bf16).
  double tolerance() const { return dtype_ == DType::F16 ? 3e-2 : 0.3; }

  fs::path dir_;
  DType dtype_ = DType::F16;
  VitGpt2Config config_;
  Weights weights_;
  PlanOptions plan_{.device = Device::cuda(0), .cuda_graph = true};
};

TEST_P(FusedStep, MatchesTheStepGraph) {
  const int vocab = static_cast<int>(config_.vocab_size);
  for (int beams : {1, 2, 4}) {
    SCOPED_TRACE("beams " + std::to_string(beams));
    const int images = 2, rows = images * beams;
    Tensor enc = states(images, 11 + beams);
    Session fused(config_, weights_, dtype_, plan_, enc, beams, 16);
    std::optional<Session> graph;
    {
      GraphStepOnly off;
      graph.emplace(config_, weights_, dtype_, plan_, enc, beams, 16);
    }
    ASSERT_TRUE(fused.fused_step());
    ASSERT_FALSE(graph->fused_step());
    for (int round = 0; round < 2; ++round) {
      if (round == 1) {  // new encoder states in place, an empty cache
        enc = states(images, 97 + beams);
        fused.restart(enc);
        graph->restart(enc);
      }
      std::vector<std::int32_t> tokens(static_cast<std::size_t>(rows), config_.decoder_start_token_id);
      for (int step = 0; step < 10; ++step) {
        SCOPED_TRACE("round " + std::to_string(round) + " step " + std::to_string(step));
        const Tensor a = fused.step(tokens), b = graph->step(tokens);
        ASSERT_EQ(a.shape(), b.shape());
        const float* pa = a.data_ptr<float>();
        const float* pb = b.data_ptr<float>();
        double worst = 0;
        for (std::int64_t i = 0; i < a.numel(); ++i) worst = std::max(worst, std::abs(double(pa[i]) - pb[i]));
        EXPECT_LE(worst, tolerance());
        for (int r = 0; r < rows; ++r) {
          const float* ra = pa + static_cast<std::size_t>(r) * vocab;
          const float* rb = pb + static_cast<std::size_t>(r) * vocab;
          const int best = argmax(rb, vocab), second = argmax(rb, vocab, best);
          if (rb[best] - rb[second] > 2 * tolerance()) EXPECT_EQ(argmax(ra, vocab), best) << "row " << r;
          tokens[static_cast<std::size_t>(r)] = static_cast<std::int32_t>((step * 7 + r * 13 + round + 1) % vocab);
        }
        if (beams > 1 && step % 3 == 1) {  // every row continues another beam of its image
          std::vector<int> parent(static_cast<std::size_t>(rows));
          for (int r = 0; r < rows; ++r) parent[static_cast<std::size_t>(r)] = (r / beams) * beams + (r + step) % beams;
          fused.reorder(parent);
          graph->reorder(parent);
        }
      }
    }
  }
}

TEST_P(FusedStep, GreedyChoicesAreTheArgmaxOfItsLogProbs) {
  const int vocab = static_cast<int>(config_.vocab_size), images = 3;
  const Tensor enc = states(images, 5);
  Session choosing(config_, weights_, dtype_, plan_, enc, 1, 12), full(config_, weights_, dtype_, plan_, enc, 1, 12);
  ASSERT_TRUE(choosing.chooses_greedy());
  std::vector<std::int32_t> tokens(images, config_.decoder_start_token_id);
  for (int step = 0; step < 6; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    const Tensor lp = full.step(tokens);
    const float* p = lp.data_ptr<float>();
    // eos = row 0's favourite: its choice without eos must then be the runner-up.
    const int eos = argmax(p, vocab);
    const std::vector<GreedyChoice> c = choosing.step_greedy(tokens, eos);
    ASSERT_EQ(c.size(), static_cast<std::size_t>(images));
    for (int r = 0; r < images; ++r) {
      const float* row = p + static_cast<std::size_t>(r) * vocab;
      const int best = argmax(row, vocab), best_ne = argmax(row, vocab, eos);
      EXPECT_EQ(c[r].token, best) << "row " << r;
      EXPECT_NEAR(c[r].log_prob, row[best], 1e-5) << "row " << r;
      EXPECT_EQ(c[r].token_without_eos, best_ne) << "row " << r;
      const double renorm = double(row[best_ne]) - std::log1p(-std::exp(double(row[eos])));
      EXPECT_NEAR(c[r].log_prob_without_eos, renorm, 1e-4) << "row " << r;
      tokens[static_cast<std::size_t>(r)] = best_ne;
    }
  }
  EXPECT_THROW(choosing.step_greedy(tokens, vocab), Error);  // eos outside the vocabulary
}

// Where the fused step cannot run, sessions keep the graph and still decode.
TEST_P(FusedStep, FallsBackToTheGraph) {
  const Tensor enc = states(3, 3);
  Session many_rows(config_, weights_, dtype_, plan_, enc, 4, 8);  // 12 rows > kMaxRows
  EXPECT_FALSE(many_rows.fused_step());
  EXPECT_FALSE(many_rows.chooses_greedy());
  const std::vector<std::int32_t> tokens(12, config_.decoder_start_token_id);
  EXPECT_EQ(many_rows.step(tokens).dim(0), 12);

  const Weights f32 = load_weights(dir_, config_, DType::F32, Device::cuda(0));
  const Tensor enc32 = random_states({1, config_.num_patches() + 1, config_.enc_hidden}, 4).to(Device::cuda(0));
  Session full_precision(config_, f32, DType::F32, plan_, enc32, 1, 8);
  EXPECT_FALSE(full_precision.fused_step());
}

INSTANTIATE_TEST_SUITE_P(TinyModels, FusedStep,
                         ::testing::Combine(::testing::Values("vit_gpt2_tiny", "vit_gpt2_tiny_b"),
                                            ::testing::Values(DType::F16, DType::BF16)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param)) + "_" + dtype_name(std::get<1>(info.param));
                         });

}  // namespace
}  // namespace encore::vitgpt2
