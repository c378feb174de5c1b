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
#include <random>
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
  // Every position the model has: the cache's 16-token blocks are crossed, and beam reorders then
  // share full blocks.
  const int max_length = static_cast<int>(config_.max_positions);
  int argmax_checked = 0;  // rows whose top two log-probs are far enough apart to compare choices
  for (int beams : {1, 2, 4}) {
    SCOPED_TRACE("beams " + std::to_string(beams));
    const int images = 2, rows = images * beams;
    Tensor enc = states(images, 11 + beams);
    Session fused(config_, weights_, dtype_, plan_, enc, beams, max_length);
    std::optional<Session> graph;
    {
      GraphStepOnly off;
      graph.emplace(config_, weights_, dtype_, plan_, enc, beams, max_length);
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
      for (int step = 0; step < max_length - 1; ++step) {
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
          if (rb[best] - rb[second] > 2 * tolerance()) {
            EXPECT_EQ(argmax(ra, vocab), best) << "row " << r;
            ++argmax_checked;
          }
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
  EXPECT_GT(argmax_checked, 0) << "no row had a clear enough choice to compare";
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
  EXPECT_TRUE(many_rows.chooses_greedy());  // made on the graph's log-probs
  const std::vector<std::int32_t> tokens(12, config_.decoder_start_token_id);
  EXPECT_EQ(many_rows.step(tokens).dim(0), 12);
  EXPECT_EQ(many_rows.step_greedy(tokens, -1).size(), 12u);

  const Weights f32 = load_weights(dir_, config_, DType::F32, Device::cuda(0));
  const Tensor enc32 = random_states({1, config_.num_patches() + 1, config_.enc_hidden}, 4).to(Device::cuda(0));
  Session full_precision(config_, f32, DType::F32, plan_, enc32, 1, 8);
  EXPECT_FALSE(full_precision.fused_step());
}

// A GPU context that cannot hold the fused step's grid (MPS with an SM limit, a green context):
// the launch fails before anything runs, and the session goes on as the step graph over the same
// cache, through step() (failing at step 3) and through step_greedy() (failing at step 4).
TEST_P(FusedStep, FallsBackToTheGraphWhenTheGridCannotLaunch) {
  const int vocab = static_cast<int>(config_.vocab_size), images = 2, max_length = 10;
  for (int fail_at : {3, 4}) {
    SCOPED_TRACE("launch fails at step " + std::to_string(fail_at));
    const Tensor enc = states(images, 23 + fail_at);
    Session s(config_, weights_, dtype_, plan_, enc, 1, max_length);
    std::optional<Session> graph;
    {
      GraphStepOnly off;
      graph.emplace(config_, weights_, dtype_, plan_, enc, 1, max_length);
    }
    ASSERT_TRUE(s.fused_step());
    std::vector<std::int32_t> tokens(images, config_.decoder_start_token_id);
    for (int step = 0; step < max_length - 1; ++step) {
      SCOPED_TRACE("step " + std::to_string(step));
      if (step == fail_at) s.fused()->set_grid_for_testing(5 * s.fused()->ctas());
      const Tensor want = graph->step(tokens);
      const float* pw = want.data_ptr<float>();
      if (step % 2 == 1) {
        const Tensor got = s.step(tokens);
        const float* pg = got.data_ptr<float>();
        double worst = 0;
        for (std::int64_t i = 0; i < got.numel(); ++i) worst = std::max(worst, std::abs(double(pg[i]) - pw[i]));
        EXPECT_LE(worst, tolerance());
      } else {
        const std::vector<GreedyChoice> c = s.step_greedy(tokens, -1);
        ASSERT_EQ(c.size(), static_cast<std::size_t>(images));
        for (int r = 0; r < images; ++r) {
          const float* row = pw + static_cast<std::size_t>(r) * vocab;
          const int best = argmax(row, vocab), second = argmax(row, vocab, best);
          if (row[best] - row[second] > 2 * tolerance()) EXPECT_EQ(c[r].token, best) << "row " << r;
          EXPECT_NEAR(c[r].log_prob, row[c[r].token], tolerance()) << "row " << r;
        }
      }
      EXPECT_EQ(s.fused_step(), step < fail_at);
      for (int r = 0; r < images; ++r) tokens[static_cast<std::size_t>(r)] = (step * 7 + r * 13 + 1) % vocab;
    }
  }
}

Tensor random_weight(const Shape& shape, float scale, std::mt19937& rng) {
  Tensor t = Tensor::empty(shape, DType::F32);
  std::normal_distribution<float> dist(0.0f, scale);
  float* p = t.data_ptr<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return t.to(DType::F16).to(Device::cuda(0));
}

// GPT-2-small shapes (hidden 768, 12 heads of 64, MLP 3072, the 50257-token LM head; 2 layers and
// 40 positions to stay short) with random weights: what the tiny models cannot reach (head dim 64,
// a weight ring that wraps, several columns per CTA, several LM-head batches per CTA) against the
// graph, over three cache blocks and beam reorders.
TEST(FusedStepGpt2Shapes, MatchesTheStepGraph) {
  if (build_info().cuda_devices.empty()) GTEST_SKIP() << "no CUDA GPU present";
  VitGpt2Config c;
  c.dec_layers = 2;
  c.max_positions = 40;
  std::mt19937 rng(99);
  const std::int64_t d = c.dec_hidden, f = c.dec_intermediate;
  Weights w;
  w.wte = random_weight({c.vocab_size, d}, 0.1f, rng);
  w.wpe = random_weight({c.max_positions, d}, 0.1f, rng);
  w.ln_f_w = random_weight({d}, 0.2f, rng);
  w.ln_f_b = random_weight({d}, 0.2f, rng);
  for (std::int64_t l = 0; l < c.dec_layers; ++l) {
    DecoderLayer x;
    for (Tensor* t : {&x.ln1_w, &x.ln1_b, &x.lnx_w, &x.lnx_b, &x.ln2_w, &x.ln2_b}) *t = random_weight({d}, 0.5f, rng);
    x.attn_w = random_weight({d, 3 * d}, 0.05f, rng), x.attn_b = random_weight({3 * d}, 0.05f, rng);
    x.proj_w = random_weight({d, d}, 0.05f, rng), x.proj_b = random_weight({d}, 0.05f, rng);
    x.xq_w = random_weight({d, d}, 0.05f, rng), x.xq_b = random_weight({d}, 0.05f, rng);
    x.xkv_w = random_weight({d, 2 * d}, 0.05f, rng), x.xkv_b = random_weight({2 * d}, 0.05f, rng);
    x.xproj_w = random_weight({d, d}, 0.05f, rng), x.xproj_b = random_weight({d}, 0.05f, rng);
    x.fc_w = random_weight({d, f}, 0.05f, rng), x.fc_b = random_weight({f}, 0.05f, rng);
    x.fc2_w = random_weight({f, d}, 0.05f, rng), x.fc2_b = random_weight({d}, 0.05f, rng);
    w.decoder.push_back(x);
  }
  const PlanOptions plan{.device = Device::cuda(0), .cuda_graph = true};
  const int vocab = static_cast<int>(c.vocab_size), steps = static_cast<int>(c.max_positions) - 1;
  for (int beams : {1, 4}) {
    SCOPED_TRACE("beams " + std::to_string(beams));
    const int images = 2, rows = images * beams;
    const Tensor enc = random_states({images, c.num_patches() + 1, c.enc_hidden}, 5 + beams).to(DType::F16).to(Device::cuda(0));
    Session fused(c, w, DType::F16, plan, enc, beams, steps + 1);
    std::optional<Session> graph;
    {
      GraphStepOnly off;
      graph.emplace(c, w, DType::F16, plan, enc, beams, steps + 1);
    }
    ASSERT_TRUE(fused.fused_step());
    std::vector<std::int32_t> tokens(static_cast<std::size_t>(rows), c.decoder_start_token_id);
    double worst = 0;
    int compared = 0;
    for (int step = 0; step < steps; ++step) {
      const Tensor a = fused.step(tokens), b = graph->step(tokens);
      const float* pa = a.data_ptr<float>();
      const float* pb = b.data_ptr<float>();
      for (std::int64_t i = 0; i < a.numel(); ++i) worst = std::max(worst, std::abs(double(pa[i]) - pb[i]));
      for (int r = 0; r < rows; ++r) {
        const float* rb = pb + static_cast<std::size_t>(r) * vocab;
        const int best = argmax(rb, vocab), second = argmax(rb, vocab, best);
        if (rb[best] - rb[second] > 0.1) {
          EXPECT_EQ(argmax(pa + static_cast<std::size_t>(r) * vocab, vocab), best) << "step " << step << " row " << r;
          ++compared;
        }
        tokens[static_cast<std::size_t>(r)] = static_cast<std::int32_t>((step * 7919 + r * 104729 + 13) % vocab);
      }
      if (beams > 1 && step % 3 == 1) {
        std::vector<int> parent(static_cast<std::size_t>(rows));
        for (int r = 0; r < rows; ++r) parent[static_cast<std::size_t>(r)] = (r / beams) * beams + (r + step) % beams;
        fused.reorder(parent);
        graph->reorder(parent);
      }
    }
    EXPECT_LE(worst, 5e-2) << "largest log-prob difference over " << steps << " steps";
    EXPECT_GT(compared, 0) << "no row had a clear favourite: the argmax check never ran";
  }
}

INSTANTIATE_TEST_SUITE_P(TinyModels, FusedStep,
                         ::testing::Combine(::testing::Values("vit_gpt2_tiny", "vit_gpt2_tiny_b"),
                                            ::testing::Values(DType::F16, DType::BF16)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param)) + "_" + dtype_name(std::get<1>(info.param));
                         });

}  // namespace
}  // namespace encore::vitgpt2
