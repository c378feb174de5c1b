// ViT-GPT2 against Hugging Face transformers 5.17 on tiny random models (tools/golden/vit_gpt2.py):
// encoder states and teacher-forced logits to 1e-4, greedy and 4-beam token ids exactly.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "encore/core/build_info.h"
#include "encore/core/logging.h"
#include "encore/io/safetensors.h"
#include "encore/models/vit_gpt2.h"
#include "temp_dir.h"

using namespace encore;
namespace fs = std::filesystem;

namespace {

const fs::path kData = ENCORE_TEST_DATA_DIR;

double relative_error(const Tensor& got, const Tensor& want) {
  const std::vector<float> a = got.to_float_vector(), b = want.to_float_vector();
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

// Element by element: |got - want| <= 1e-4 |want| + 1e-6 max|want|. The whole-tensor ratio above
// lets a wrong GELU flavour through on these models (exact vs tanh: 4.5e-5 .. 1.1e-4), while CPU f32
// is within ~2e-7 of HF's float64 (review of session 11).
void expect_elementwise_close(const Tensor& got, const Tensor& want, const char* what) {
  const std::vector<float> a = got.to_float_vector(), b = want.to_float_vector();
  ASSERT_EQ(a.size(), b.size()) << what;
  double peak = 0;
  for (float v : b) peak = std::max(peak, std::abs(double(v)));
  std::size_t bad = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double err = std::abs(double(a[i]) - b[i]), allowed = 1e-4 * std::abs(double(b[i])) + 1e-6 * peak;
    if (err > allowed && bad++ < 3) ADD_FAILURE() << what << "[" << i << "]: " << a[i] << " vs " << b[i];
  }
  EXPECT_EQ(bad, 0u) << what;
}

// HF pads finished rows with pad (= eos here); encore returns sequences without padding.
std::vector<std::int32_t> hf_row(const Tensor& sequences, std::int64_t row, std::int32_t eos) {
  std::vector<std::int32_t> ids;
  for (std::int64_t t = 0; t < sequences.dim(1); ++t) {
    ids.push_back(static_cast<std::int32_t>(sequences.at<std::int64_t>({row, t})));
    if (t > 0 && ids.back() == eos) break;
  }
  return ids;
}

// Per-token scores against HF's compute_transition_scores row `row` (beam_indices,
// normalize_logits=False), which is zero past the hypothesis' end.
void expect_transition_scores(const std::vector<float>& got, const Tensor& want, std::int64_t row) {
  ASSERT_LE(static_cast<std::int64_t>(got.size()), want.dim(1)) << "row " << row;
  for (std::int64_t t = 0; t < want.dim(1); ++t) {
    const double w = want.at<float>({row, t});
    if (t < static_cast<std::int64_t>(got.size()))
      EXPECT_NEAR(got[static_cast<std::size_t>(t)], w, 1e-4 * std::max(1.0, std::abs(w))) << "row " << row << " token " << t;
    else
      EXPECT_EQ(w, 0.0) << "row " << row << ": HF scored token " << t << " past the hypothesis' end";
  }
}

class VitGpt2Golden : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    dir_ = kData / GetParam();
    golden_ = std::make_unique<io::SafetensorsFile>(io::SafetensorsFile::open(dir_ / "golden.safetensors"));
  }
  Tensor golden(const char* name) const { return golden_->tensor(name); }
  fs::path dir_;
  std::unique_ptr<io::SafetensorsFile> golden_;
};

TEST_P(VitGpt2Golden, EncoderStatesMatch) {
  const auto model = VitGpt2::load(dir_);
  const Tensor states = model.encode(golden("pixel_values"));
  EXPECT_EQ(states.shape(), golden("encoder.last_hidden_state").shape());
  EXPECT_LT(relative_error(states, golden("encoder.last_hidden_state")), 1e-4);
  expect_elementwise_close(states, golden("encoder.last_hidden_state"), "encoder states");
}

// encode() returns states of the caller's own: a later call (which reuses the pooled encoder
// plan and its memory) leaves them as they were.
TEST_P(VitGpt2Golden, EncodedStatesOutliveLaterCalls) {
  const auto model = VitGpt2::load(dir_);
  const Tensor pixels = golden("pixel_values");
  const Tensor first = model.encode(pixels);
  const std::vector<float> kept = first.to_float_vector();
  Tensor other = pixels.clone();
  for (std::int64_t i = 0; i < other.numel(); ++i) other.data_ptr<float>()[i] *= -0.5f;
  const Tensor second = model.encode(other);
  EXPECT_NE(first.data(), second.data());
  EXPECT_EQ(first.to_float_vector(), kept);
  EXPECT_NE(second.to_float_vector(), kept);
}

TEST_P(VitGpt2Golden, TeacherForcedLogitsMatch) {
  const auto model = VitGpt2::load(dir_);
  const Tensor logits = model.decoder_logits(golden("encoder.last_hidden_state"), golden("decoder_input_ids"));
  EXPECT_EQ(logits.shape(), golden("decoder.logits").shape());
  EXPECT_LT(relative_error(logits, golden("decoder.logits")), 1e-4);
  expect_elementwise_close(logits, golden("decoder.logits"), "logits");
}

TEST_P(VitGpt2Golden, GreedyIdsMatch) {
  const auto model = VitGpt2::load(dir_);
  const Tensor want = golden("greedy.sequences");
  const auto caps = model.caption(golden("pixel_values"), {.max_length = static_cast<int>(want.dim(1))});
  ASSERT_EQ(caps.size(), 2u);
  // The score is the sum of the emitted tokens' log-probabilities under HF's per-step logits
  // (greedy.scores [steps, B, V], output_scores): checks the greedy choice's own score path.
  const Tensor scores = golden("greedy.scores");
  for (std::int64_t r = 0; r < 2; ++r) {
    const auto& ids = caps[static_cast<std::size_t>(r)].ids;
    EXPECT_EQ(ids, hf_row(want, r, model.config().eos_token_id)) << "row " << r;
    // Each token's own score too (HF compute_transition_scores with normalize_logits=True).
    const std::vector<float>& token_scores = caps[static_cast<std::size_t>(r)].token_scores;
    ASSERT_EQ(token_scores.size(), ids.size() - 1) << "row " << r;
    double want_score = 0;
    for (std::size_t t = 1; t < ids.size(); ++t) {
      const auto step = static_cast<std::int64_t>(t - 1);
      double mx = -INFINITY, sum = 0;
      for (std::int64_t v = 0; v < scores.dim(2); ++v) mx = std::max(mx, double(scores.at<float>({step, r, v})));
      for (std::int64_t v = 0; v < scores.dim(2); ++v) sum += std::exp(double(scores.at<float>({step, r, v})) - mx);
      const double token_score = double(scores.at<float>({step, r, ids[t]})) - mx - std::log(sum);
      EXPECT_NEAR(token_scores[t - 1], token_score, 1e-4 * std::max(1.0, std::abs(token_score)))
          << "row " << r << " token " << t;
      want_score += token_score;
    }
    EXPECT_NEAR(caps[static_cast<std::size_t>(r)].score, want_score, 1e-4 * std::max(1.0, std::abs(want_score)))
        << "row " << r;
  }
}

TEST_P(VitGpt2Golden, BeamSearchIdsAndScoresMatch) {
  const auto model = VitGpt2::load(dir_);
  const Tensor want = golden("beam.sequences"), scores = golden("beam.sequences_scores");
  const auto caps = model.caption(golden("pixel_values"), {.max_length = 12, .num_beams = 4});
  ASSERT_EQ(caps.size(), 2u);
  for (std::int64_t r = 0; r < 2; ++r) {
    EXPECT_EQ(caps[static_cast<std::size_t>(r)].ids, hf_row(want, r, model.config().eos_token_id)) << "row " << r;
    EXPECT_NEAR(caps[static_cast<std::size_t>(r)].score, scores.at<float>({r}), 1e-4) << "row " << r;
    expect_transition_scores(caps[static_cast<std::size_t>(r)].token_scores, golden("beam.transition_scores"), r);
  }
}

// Beam search over the whole length the models allow (long_beam.max_length 21: 20 new tokens), on
// a batch of 3 images, once per length penalty (0.5 favours short hypotheses, 2.0 long ones), with
// early_stopping=True (done once num_beams hypotheses are finished; the seed search made sure that
// early_stopping=False gives other ids). Ids exactly, scores to 1e-4 (relative), on every device
// this build has (CUDA in f32).
TEST_P(VitGpt2Golden, LongBeamSearchWithLengthPenaltiesMatches) {
  const std::map<std::string, std::string>& meta = golden_->metadata();
  ASSERT_TRUE(meta.contains("long_beam.length_penalties")) << "golden.safetensors predates the long beams";
  EXPECT_EQ(meta.at("long_beam.early_stopping"), "true");
  const int max_length = std::stoi(meta.at("long_beam.max_length"));
  std::vector<std::pair<std::string, float>> penalties;  // "lp05=0.5,lp2=2.0"
  for (std::string rest = meta.at("long_beam.length_penalties"); !rest.empty();) {
    const std::string item = rest.substr(0, rest.find(','));
    rest = item.size() < rest.size() ? rest.substr(item.size() + 1) : "";
    penalties.emplace_back("long_beam." + item.substr(0, item.find('=')), std::stof(item.substr(item.find('=') + 1)));
  }
  ASSERT_EQ(penalties.size(), 2u);
  const Tensor pixels = golden("long_beam.pixel_values");
  ASSERT_EQ(pixels.dim(0), 3);
  std::vector<std::string> devices = {"cpu"};
  if (!build_info().cuda_devices.empty()) devices.push_back("cuda");
  for (const std::string& device : devices) {
    const auto model = VitGpt2::load(dir_, {.device = device});
    const std::int32_t eos = model.config().eos_token_id;
    for (const auto& [name, penalty] : penalties) {
      SCOPED_TRACE(device + " " + name);
      const Tensor want = golden((name + ".sequences").c_str()), scores = golden((name + ".sequences_scores").c_str());
      const Tensor transitions = golden((name + ".transition_scores").c_str());
      const auto caps = model.caption(
          pixels, {.max_length = max_length, .num_beams = 4, .length_penalty = penalty, .early_stopping = 1});
      ASSERT_EQ(caps.size(), 3u);
      for (std::int64_t r = 0; r < 3; ++r) {
        const auto& c = caps[static_cast<std::size_t>(r)];
        EXPECT_EQ(c.ids, hf_row(want, r, eos)) << "row " << r;
        const double s = scores.at<float>({r});
        EXPECT_NEAR(c.score, s, 1e-4 * std::max(1.0, std::abs(s))) << "row " << r;
        expect_transition_scores(c.token_scores, transitions, r);
      }
    }
  }
}

TEST_P(VitGpt2Golden, StreamingCallbackSeesEveryTokenAndCanCancel) {
  const auto model = VitGpt2::load(dir_);
  // Greedy: one event per generated token of each image, in order, each naming the newest token
  // and the sequence so far, the last one finished.
  std::vector<std::vector<std::int32_t>> seen(2);
  std::vector<bool> finished(2, false);
  GenerationOptions opts{.max_length = 8};
  opts.on_token = [&](const TokenEvent& e) {
    EXPECT_TRUE(e.item == 0 || e.item == 1);
    EXPECT_FALSE(finished[static_cast<std::size_t>(e.item)]) << "an event after the finishing one";
    auto& s = seen[static_cast<std::size_t>(e.item)];
    s.push_back(e.token);
    EXPECT_EQ(e.ids.size(), s.size() + 1);  // the start token, then the tokens so far
    EXPECT_EQ(e.ids.back(), e.token);
    finished[static_cast<std::size_t>(e.item)] = e.finished;
    return true;
  };
  const auto caps = model.caption(golden("pixel_values"), opts);
  for (std::size_t r = 0; r < 2; ++r) {
    EXPECT_TRUE(finished[r]) << "image " << r;
    EXPECT_EQ(std::vector<std::int32_t>(caps[r].ids.begin() + 1, caps[r].ids.end()), seen[r]) << "image " << r;
  }
  opts.on_token = [](const TokenEvent&) { return false; };
  try {
    (void)model.caption(golden("pixel_values"), opts);
    FAIL() << "expected cancellation";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::cancelled);
  }
}

// Several threads captioning on one GPU at once: their plans record CUDA graphs on the device's
// one stream while the others work (first calls record: every thread starts with a fresh batch
// size), and every caption must still be the golden one.
TEST_P(VitGpt2Golden, CudaCaptionsFromSeveralThreadsAtOnce) {
  if (build_info().cuda_devices.empty()) GTEST_SKIP() << "no CUDA GPU present";
  const auto model = VitGpt2::load(dir_, {.device = "cuda"});
  const auto other = VitGpt2::load(dir_, {.device = "cuda", .dtype = DType::F16});  // a second model, same device
  const Tensor pixels = golden("pixel_values"), greedy = golden("greedy.sequences");
  const std::int32_t eos = model.config().eos_token_id;
  const int length = static_cast<int>(greedy.dim(1));
  std::vector<std::string> failures(6);
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t)
    threads.emplace_back([&, t] {
      try {
        const VitGpt2& m = t % 3 == 2 ? other : model;
        const Tensor one = pixels.slice(0, t % 2, t % 2 + 1).contiguous();  // each thread also runs batch 1
        for (int rep = 0; rep < 3; ++rep) {
          const auto both = m.caption(pixels, {.max_length = length});
          const auto single = m.caption(one, {.max_length = length});
          for (std::int64_t r = 0; r < 2; ++r)
            if (both[static_cast<std::size_t>(r)].ids != hf_row(greedy, r, eos)) failures[t] = "batch row differs";
          if (single[0].ids != hf_row(greedy, t % 2, eos)) failures[t] = "single image differs";
        }
      } catch (const std::exception& e) {
        failures[t] = e.what();
      }
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < 6; ++t) EXPECT_EQ(failures[t], "") << "thread " << t;
}

// The same goldens on the GPU: f32 token-exact (logits to 1e-4), f16/bf16 greedy ids identical.
TEST_P(VitGpt2Golden, CudaMatchesGoldens) {
  if (build_info().cuda_devices.empty()) GTEST_SKIP() << "no CUDA GPU present";
  const auto model = VitGpt2::load(dir_, {.device = "cuda"});
  EXPECT_LT(relative_error(model.encode(golden("pixel_values")), golden("encoder.last_hidden_state")), 1e-4);
  EXPECT_LT(relative_error(model.decoder_logits(golden("encoder.last_hidden_state"), golden("decoder_input_ids")),
                           golden("decoder.logits")),
            1e-4);
  const Tensor greedy = golden("greedy.sequences"), beam = golden("beam.sequences");
  const std::int32_t eos = model.config().eos_token_id;
  const auto g = model.caption(golden("pixel_values"), {.max_length = static_cast<int>(greedy.dim(1))});
  const auto b = model.caption(golden("pixel_values"), {.max_length = 12, .num_beams = 4});
  for (std::int64_t r = 0; r < 2; ++r) {
    EXPECT_EQ(g[static_cast<std::size_t>(r)].ids, hf_row(greedy, r, eos)) << "greedy row " << r;
    EXPECT_EQ(b[static_cast<std::size_t>(r)].ids, hf_row(beam, r, eos)) << "beam row " << r;
  }
  // Half-precision greedy ids equal the f32 goldens for the dtypes in which tools/golden/vit_gpt2.py
  // found them stable (metadata half_precision_greedy; vit_gpt2_tiny_b, eps 0.5, is too sensitive
  // for bf16's 8 bits on every seed it tried); in the others the captions need only be well formed.
  const std::map<std::string, std::string>& meta = golden_->metadata();
  const std::string stable = "," + (meta.contains("half_precision_greedy") ? meta.at("half_precision_greedy")
                                                                           : std::string("bfloat16,float16")) + ",";
  for (DType dt : {DType::F16, DType::BF16}) {
    const bool exact = stable.find(dt == DType::F16 ? ",float16," : ",bfloat16,") != std::string::npos;
    const auto half = VitGpt2::load(dir_, {.device = "cuda", .dtype = dt});
    const auto h = half.caption(golden("pixel_values"), {.max_length = static_cast<int>(greedy.dim(1))});
    ASSERT_EQ(h.size(), 2u);
    for (std::int64_t r = 0; r < 2; ++r) {
      const auto& ids = h[static_cast<std::size_t>(r)].ids;
      if (exact) {
        EXPECT_EQ(ids, hf_row(greedy, r, eos)) << dtype_name(dt) << " greedy row " << r;
      } else {
        EXPECT_TRUE(ids.size() >= 2 && ids.size() <= static_cast<std::size_t>(greedy.dim(1)) &&
                    ids[0] == model.config().decoder_start_token_id)
            << dtype_name(dt) << " greedy row " << r;
      }
    }
  }
}

// The model keeps its planned encoder and decode sessions between calls (on CUDA: recorded
// graphs, replayed). Repeated and interleaved calls, with the batch rows swapped so that stale
// cross-attention keys or cache contents would show, must keep matching the goldens.
TEST_P(VitGpt2Golden, RepeatedCallsReusePlansCorrectly) {
  std::vector<std::string> devices{"cpu"};
  if (!build_info().cuda_devices.empty()) devices.push_back("cuda");
  const Tensor pixels = golden("pixel_values");
  Tensor swapped = Tensor::empty(pixels.shape(), pixels.dtype());
  swapped.slice(0, 0, 1).copy_from(pixels.slice(0, 1, 2));
  swapped.slice(0, 1, 2).copy_from(pixels.slice(0, 0, 1));
  const Tensor greedy = golden("greedy.sequences"), beam = golden("beam.sequences");
  for (const std::string& device : devices) {
    SCOPED_TRACE(device);
    auto model = VitGpt2::load(dir_, {.device = device});
    const std::int32_t eos = model.config().eos_token_id;
    for (int round = 0; round < 3; ++round) {
      const bool swap = round % 2 == 1;
      const auto g = model.caption(swap ? swapped : pixels, {.max_length = static_cast<int>(greedy.dim(1))});
      const auto b = model.caption(swap ? swapped : pixels, {.max_length = 12, .num_beams = 4});
      for (std::int64_t r = 0; r < 2; ++r) {
        const std::int64_t want_row = swap ? 1 - r : r;
        EXPECT_EQ(g[static_cast<std::size_t>(r)].ids, hf_row(greedy, want_row, eos)) << "round " << round << " row " << r;
        EXPECT_EQ(b[static_cast<std::size_t>(r)].ids, hf_row(beam, want_row, eos)) << "round " << round << " row " << r;
      }
      const Tensor states = model.encode(swap ? swapped : pixels);
      EXPECT_LT(relative_error(states.slice(0, swap ? 1 : 0, swap ? 2 : 1),
                               golden("encoder.last_hidden_state").slice(0, 0, 1)),
                1e-4);
    }
    model.release_plans();
    const auto again = model.caption(pixels, {.max_length = static_cast<int>(greedy.dim(1))});
    EXPECT_EQ(again[0].ids, hf_row(greedy, 0, eos));
  }
}

// Special ids left at their defaults take the model's one by one (as HF's generate does for ids it
// is not given): setting only eos, or only the start token, to the model's value changes nothing.
TEST_P(VitGpt2Golden, IdsNotGivenTakeTheModelsOneByOne) {
  const auto model = VitGpt2::load(dir_);
  const Tensor want = golden("greedy.sequences");
  const int length = static_cast<int>(want.dim(1));
  const VitGpt2Config& c = model.config();
  GenerationOptions only_eos{.max_length = length}, only_start{.max_length = length};
  only_eos.eos_token_id = c.eos_token_id;
  only_start.start_token_id = c.decoder_start_token_id;
  for (const GenerationOptions& o : {only_eos, only_start, model.generation_options()}) {
    GenerationOptions run = o;
    run.max_length = length, run.num_beams = 1, run.do_sample = false;
    const auto caps = model.caption(golden("pixel_values"), run);
    ASSERT_EQ(caps.size(), 2u);
    for (std::int64_t r = 0; r < 2; ++r)
      EXPECT_EQ(caps[static_cast<std::size_t>(r)].ids, hf_row(want, r, c.eos_token_id)) << "row " << r;
  }
  const GenerationOptions g = model.generation_options();
  EXPECT_EQ(g.start_token_id, c.decoder_start_token_id);
  EXPECT_EQ(g.eos_token_id, c.eos_token_id);
  EXPECT_FALSE(c.max_length.has_value());  // the tiny models' files set none:
  EXPECT_EQ(g.max_length, -1);             // unset, HF 5.x's 20 new tokens
  EXPECT_EQ(g.max_new_tokens, -1);
  EXPECT_EQ(g.num_beams, c.num_beams);
  EXPECT_EQ(g.top_k, c.top_k);
}

// Ids that are set are used as given, also the values a default could be mistaken for: start 0,
// and eos -1 (none: every caption runs to max_length, past the tokens that would have ended it).
TEST_P(VitGpt2Golden, IdsGivenAreUsedEvenStartZeroAndNoEos) {
  const auto model = VitGpt2::load(dir_);
  const VitGpt2Config& c = model.config();
  ASSERT_NE(c.decoder_start_token_id, 0);
  const Tensor pixels = golden("pixel_values");
  const int length = static_cast<int>(c.max_positions);
  GenerationOptions start0{.max_length = length, .start_token_id = 0};
  for (const Caption& cap : model.caption(pixels, start0)) EXPECT_EQ(cap.ids.front(), 0);
  GenerationOptions with_eos{.max_length = length}, no_eos{.max_length = length, .eos_token_id = -1};
  const auto stopped = model.caption(pixels, with_eos), ran_on = model.caption(pixels, no_eos);
  int early = 0;
  for (std::size_t r = 0; r < ran_on.size(); ++r) {
    EXPECT_EQ(ran_on[r].ids.size(), static_cast<std::size_t>(length)) << "row " << r;
    if (stopped[r].ids.size() < static_cast<std::size_t>(length)) {  // it ended at eos: the same ids up to there
      ++early;
      EXPECT_EQ(stopped[r].ids.back(), c.eos_token_id);
      EXPECT_TRUE(std::equal(stopped[r].ids.begin(), stopped[r].ids.end(), ran_on[r].ids.begin())) << "row " << r;
    }
  }
  EXPECT_GT(early, 0) << "no caption ends at eos within " << length << " tokens: the check above cannot fail";
}

// Hugging Face generate() on the golden pixels (tools/golden/vit_gpt2_generation.py, CPU f32): with
// no argument at all (the model's files set no length: 20 new tokens), max_new_tokens /
// min_new_tokens over max_length / min_length, and 4 beams returning their best 3. Each case starts
// from generation_options(), as "caption as HF would" does; on every device this build has (CUDA
// in f32: ids exactly, scores to 1e-4 like the CPU).
TEST_P(VitGpt2Golden, GenerationSettingsMatchHuggingFace) {
  std::ifstream in(dir_ / "generation_options.json");
  ASSERT_TRUE(in) << "missing " << (dir_ / "generation_options.json");
  const nlohmann::json doc = nlohmann::json::parse(in);
  ASSERT_EQ(doc["cases"].size(), 3u);
  std::vector<std::string> devices = {"cpu"};
  if (!build_info().cuda_devices.empty()) devices.push_back("cuda");
  for (const std::string& device : devices) {
    const auto model = VitGpt2::load(dir_, {.device = device});
    for (const auto& [name, c] : doc["cases"].items()) {
      SCOPED_TRACE(device + " " + name);
      GenerationOptions o = model.generation_options();
      const nlohmann::json& j = c["options"];
      o.max_length = j.value("max_length", o.max_length);
      o.min_length = j.value("min_length", o.min_length);
      o.max_new_tokens = j.value("max_new_tokens", o.max_new_tokens);
      o.min_new_tokens = j.value("min_new_tokens", o.min_new_tokens);
      o.num_beams = j.value("num_beams", o.num_beams);
      o.num_return_sequences = j.value("num_return_sequences", o.num_return_sequences);
      const auto caps = model.caption(golden("pixel_values"), o);
      const auto want = c["ids"].get<std::vector<std::vector<std::int32_t>>>();
      ASSERT_EQ(caps.size(), want.size());
      for (std::size_t i = 0; i < caps.size(); ++i) {
        EXPECT_EQ(caps[i].ids, want[i]) << "sequence " << i;
        if (c.contains("scores")) {
          const double s = c["scores"][i].get<double>();
          EXPECT_NEAR(caps[i].score, s, 1e-4 * std::max(1.0, std::abs(s))) << "sequence " << i;
        }
      }
    }
  }
}
// Sampling n captions per image: rows of their own that share the image's cross-attention keys
// and values (the session plans n rows per image), each sampled from one stream in row order. So
// the result is that of the batch with each image repeated n times, on every device.
TEST_P(VitGpt2Golden, SeveralSampledCaptionsPerImageEqualRepeatedImages) {
  const Tensor pixels = golden("pixel_values");
  const std::int64_t images = pixels.dim(0);
  constexpr int n = 3;
  Tensor repeated = Tensor::empty({images * n, pixels.dim(1), pixels.dim(2), pixels.dim(3)}, DType::F32);
  for (std::int64_t i = 0; i < images * n; ++i)
    repeated.slice(0, i, i + 1).copy_from(pixels.slice(0, i / n, i / n + 1));
  std::vector<std::string> devices = {"cpu"};
  if (!build_info().cuda_devices.empty()) devices.push_back("cuda");
  for (const std::string& device : devices) {
    SCOPED_TRACE(device);
    const auto model = VitGpt2::load(dir_, {.device = device});
    GenerationOptions o = model.generation_options();
    o.do_sample = true, o.seed = 5, o.max_new_tokens = 8, o.temperature = 1.5f;
    const GenerationOptions one = o;
    o.num_return_sequences = n;
    const auto several = model.caption(pixels, o);
    const auto want = model.caption(repeated, one);
    ASSERT_EQ(several.size(), static_cast<std::size_t>(images * n));
    ASSERT_EQ(want.size(), several.size());
    bool differ = false;
    for (std::size_t i = 0; i < several.size(); ++i) {
      EXPECT_EQ(several[i].ids, want[i].ids) << "caption " << i;
      EXPECT_NEAR(several[i].score, want[i].score, 1e-4 * std::max(1.0f, std::abs(want[i].score))) << "caption " << i;
      differ = differ || several[i].ids != several[i / n * n].ids;
    }
    EXPECT_TRUE(differ) << "the samples of an image should not all be equal";
  }
}

// Tensors the model does not read are reported as a warning (HF reports unused weights too): none
// for the golden checkpoint; the second layer's when the config asks for one layer fewer.
TEST_P(VitGpt2Golden, UnusedTensorsAreReported) {
  std::vector<std::string> warnings;
  set_log_callback([&](LogLevel level, std::string_view message) {
    if (level == LogLevel::warn) warnings.emplace_back(message);
  });
  struct Restore {
    ~Restore() { set_log_callback(nullptr); }
  } restore;
  (void)VitGpt2::load(dir_);
  for (const std::string& w : warnings) EXPECT_EQ(w.find("not used"), std::string::npos) << w;
  warnings.clear();
  std::ifstream in(dir_ / "config.json");
  nlohmann::json config = nlohmann::json::parse(in);
  config["decoder"]["n_layer"] = config["decoder"]["n_layer"].get<int>() - 1;
  test::TempDir dir("encore-unused");
  std::ofstream(dir / "config.json") << config.dump();
  fs::copy_file(dir_ / "model.safetensors", dir / "model.safetensors");
  (void)VitGpt2::load(dir.path());
  const std::string last_layer = "decoder.transformer.h." + std::to_string(config["decoder"]["n_layer"].get<int>());
  bool reported = false;
  for (const std::string& w : warnings) reported = reported || (w.find("not used") != std::string::npos &&
                                                                w.find(last_layer) != std::string::npos);
  EXPECT_TRUE(reported) << "no warning names the tensors of " << last_layer;
}

// The same model from memory: the files' bytes, no directory.
TEST_P(VitGpt2Golden, LoadsFromMemory) {
  const auto read = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  const auto weights = [&] {
    const std::string bytes = read(dir_ / "model.safetensors");
    std::vector<std::byte> v(bytes.size());
    std::memcpy(v.data(), bytes.data(), bytes.size());
    return io::SafetensorsFile::from_bytes(std::move(v), "model.safetensors");
  };
  VitGpt2Files files;
  files.config_json = read(dir_ / "config.json");
  if (fs::exists(dir_ / "generation_config.json")) files.generation_config_json = read(dir_ / "generation_config.json");
  files.weights.push_back(weights());
  const auto model = VitGpt2::load(std::move(files));
  const Tensor want = golden("greedy.sequences");
  const auto caps = model.caption(golden("pixel_values"), {.max_length = static_cast<int>(want.dim(1))});
  ASSERT_EQ(caps.size(), 2u);
  for (std::int64_t r = 0; r < 2; ++r)
    EXPECT_EQ(caps[static_cast<std::size_t>(r)].ids, hf_row(want, r, model.config().eos_token_id)) << "row " << r;

  const auto refused = [](VitGpt2Files f, ErrorCode code, const std::string& needle) {
    try {
      (void)VitGpt2::load(std::move(f));
      ADD_FAILURE() << "loaded; expected an error containing '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  refused(VitGpt2Files{"{not json", std::nullopt, {}}, ErrorCode::bad_model_file, "<memory>/config.json: the file is not valid JSON");
  refused(VitGpt2Files{read(dir_ / "config.json"), std::string("[]"), {}}, ErrorCode::bad_model_file,
          "<memory>/generation_config.json: expected a JSON object");
  refused(VitGpt2Files{read(dir_ / "config.json"), std::nullopt, {}}, ErrorCode::invalid_argument, "no file given");
  VitGpt2Files twice{read(dir_ / "config.json"), std::nullopt, {}};
  twice.weights.push_back(weights());
  twice.weights.push_back(weights());
  refused(std::move(twice), ErrorCode::bad_model_file, "is in two shards");
  // A transformers-5 spelling beside the transformers-4 one of the same tensor is ambiguous.
  const io::SafetensorsFile v4 = weights();
  const std::string query = "encoder.encoder.layer.0.attention.attention.query.weight";
  const std::vector<io::NamedTensor> v5 = {{"encoder.layers.0.attention.q_proj.weight", v4.tensor(query)}};
  VitGpt2Files both{read(dir_ / "config.json"), std::nullopt, {}};
  both.weights.push_back(weights());
  both.weights.push_back(io::SafetensorsFile::from_bytes(io::serialize_safetensors(v5), "v5.safetensors"));
  refused(std::move(both), ErrorCode::bad_model_file,
          "checkpoint has both '" + query + "' and 'encoder.layers.0.attention.q_proj.weight'");

  // Every tensor in transformers 5's spelling (save_pretrained(save_original_format=False): the
  // conversion mapping renames `encoder.layer.` to `layers.` and the ViT blocks' modules), and the
  // LM head stored under lm_head instead of wte: the same model, the same logits.
  const auto v5_name = [](std::string n) {
    const std::string old_prefix = "encoder.encoder.layer.";
    if (!n.starts_with(old_prefix)) return n == "decoder.transformer.wte.weight" ? std::string("decoder.lm_head.weight") : n;
    n = "encoder.layers." + n.substr(old_prefix.size());
    for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
             {"attention.attention.query", "attention.q_proj"}, {"attention.attention.key", "attention.k_proj"},
             {"attention.attention.value", "attention.v_proj"}, {"attention.output.dense", "attention.o_proj"},
             {"intermediate.dense", "mlp.fc1"}, {"output.dense", "mlp.fc2"}})
      if (const auto at = n.find(from); at != std::string::npos) return n.replace(at, from.size(), to);
    return n;
  };
  std::vector<io::NamedTensor> renamed;
  for (const io::TensorEntry& e : v4.entries()) renamed.push_back({v5_name(e.name), v4.tensor(e.name)});
  VitGpt2Files v5_files{read(dir_ / "config.json"), std::nullopt, {}};
  v5_files.weights.push_back(io::SafetensorsFile::from_bytes(io::serialize_safetensors(renamed), "v5.safetensors"));
  const VitGpt2 model_v5 = VitGpt2::load(std::move(v5_files));
  const Tensor states = golden("encoder.last_hidden_state");
  EXPECT_LT(relative_error(model_v5.decoder_logits(states, golden("decoder_input_ids")), golden("decoder.logits")), 1e-4);
  EXPECT_LT(relative_error(model_v5.encode(golden("pixel_values")), states), 1e-4);

  // An LM head that is not wte (an untied head) is refused, not silently replaced by wte.
  std::vector<io::NamedTensor> untied;
  for (const io::TensorEntry& e : v4.entries()) untied.push_back({e.name, v4.tensor(e.name)});
  Tensor head = v4.tensor("decoder.transformer.wte.weight").clone();
  head.data_ptr<float>()[5] += 1.0f;
  untied.push_back({"decoder.lm_head.weight", head});
  VitGpt2Files untied_files{read(dir_ / "config.json"), std::nullopt, {}};
  untied_files.weights.push_back(io::SafetensorsFile::from_bytes(io::serialize_safetensors(untied), "untied.safetensors"));
  refused(std::move(untied_files), ErrorCode::unsupported, "an LM head not tied to the token embeddings");
}
INSTANTIATE_TEST_SUITE_P(TinyModels, VitGpt2Golden, ::testing::Values("vit_gpt2_tiny", "vit_gpt2_tiny_b"));

TEST(VitGpt2Errors, BadInputsGiveClearErrors) {
  const auto model = VitGpt2::load(kData / "vit_gpt2_tiny");
  try {
    (void)model.encode(Tensor::zeros({1, 3, 31, 32}, DType::F32));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("[B, 3, 32, 32]"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)model.caption(Tensor::zeros({1, 3, 32, 32}, DType::F32), {.max_length = 1000}), Error);
  // The 20-position tiny model takes sequences of up to 21 tokens (the last is never fed back).
  const auto at_most = [&](GenerationOptions o, const char* needle) {
    try {
      (void)model.caption(Tensor::zeros({1, 3, 32, 32}, DType::F32), o);
      FAIL() << needle;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  at_most({.max_length = 22}, "max_length 22 must be at most 21");
  at_most({.max_new_tokens = 21}, "max_new_tokens = 21 must be at most 20");
  EXPECT_EQ(model.caption(Tensor::zeros({1, 3, 32, 32}, DType::F32), {.max_length = 21, .min_length = 21})[0].ids.size(),
            21u);
  // Options are checked before any work, naming the field: 3 images x 2^30 beams would overflow.
  try {
    (void)model.caption(Tensor::zeros({3, 3, 32, 32}, DType::F32), {.num_beams = 1 << 30});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("num_beams = 1073741824"), std::string::npos) << e.what();
  }
  try {
    (void)model.caption(Tensor::zeros({1, 3, 32, 32}, DType::F32), {.do_sample = true, .temperature = -1.0f});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("temperature = -1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(VitGpt2::load(kData / "vit_gpt2_tiny", {.device = "tpu"}), Error);
  EXPECT_THROW(VitGpt2::load(kData / "vit_gpt2_tiny", {.dtype = DType::I8}), Error);
}

TEST(VitGpt2Errors, MissingOrUnconvertedCheckpoints) {
  const fs::path tmp = fs::temp_directory_path() / "encore_vitgpt2_bin_only";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  fs::copy_file(kData / "vit_gpt2_tiny" / "config.json", tmp / "config.json");
  std::ofstream(tmp / "pytorch_model.bin") << "not a safetensors file";
  try {
    (void)VitGpt2::load(tmp);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("convert_to_safetensors.py"), std::string::npos) << e.what();
  }
  fs::remove_all(tmp);
  EXPECT_THROW(VitGpt2::load(kData / "no_such_model"), Error);
}

}  // namespace
