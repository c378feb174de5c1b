// Logits processing for generate(): min-length masking, log_softmax, argmax and the sampling
// warpers (temperature, top-k, top-p), with HF 5.17 semantics; plus the deterministic sampler.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "core/check.h"
#include "decode/generation_internal.h"

namespace encore::detail {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

}  // namespace

Tensor take_logits(Tensor logits, int rows, int vocab) {
  ENCORE_CHECK(logits.defined(), invalid_argument, "generate: DecoderSession::step returned no logits");
  ENCORE_CHECK(logits.rank() == 2 && logits.dim(0) == rows && logits.dim(1) == vocab, invalid_argument,
               "generate: DecoderSession::step returned logits of shape {}, expected [{}, {}]",
               logits.shape().str(), rows, vocab);
  if (!logits.device().is_cpu()) logits = logits.to(Device::cpu());
  if (logits.dtype() != DType::F32) logits = logits.to(DType::F32);  // HF also upcasts the last logits to fp32
  // Generation writes into the scores (masks, warpers, beam sums): the session's own tensor is used
  // only when nothing else can see it (sole owner of memory it allocated), else a copy.
  const std::shared_ptr<Storage>& storage = logits.storage();
  const bool private_copy = logits.is_contiguous() && storage.use_count() == 1 && storage->owns_memory();
  return private_copy ? logits : logits.clone();
}

bool eos_masked_for_min_length(const GenerationOptions& o, int cur_len) {
  return eos_id(o) >= 0 && o.min_length > 0 && cur_len < o.min_length;
}

bool mask_eos_for_min_length(std::span<float> scores, const GenerationOptions& o, int cur_len) {
  if (!eos_masked_for_min_length(o, cur_len)) return false;
  scores[eos_id(o)] = kNegInf;
  return true;
}

void log_softmax_inplace(std::span<float> x) {
  const float m = *std::max_element(x.begin(), x.end());
  double sum = 0.0;
  for (float& v : x) {
    v = v - m;  // shifted in float first, as torch does
    sum += std::exp(static_cast<double>(v));
  }
  const auto lse = static_cast<float>(std::log(sum));
  for (float& v : x) v = v - lse;
}

float log_softmax_at(std::span<const float> x, int index) {
  const float m = *std::max_element(x.begin(), x.end());
  double sum = 0.0;
  for (float v : x) sum += std::exp(static_cast<double>(v - m));
  return (x[index] - m) - static_cast<float>(std::log(sum));
}

int argmax(std::span<const float> x, int masked_index) {
  const auto at = [&](int i) { return i == masked_index ? kNegInf : x[static_cast<std::size_t>(i)]; };
  if (x.empty() || std::isnan(at(0))) return 0;
  int best = 0;
  float best_value = at(0);
  for (int i = 1; i < static_cast<int>(x.size()); ++i) {
    const float v = at(i);
    if (v > best_value) {
      best_value = v, best = i;
    } else if (v != v) {
      return i;  // the first NaN wins, as in torch.argmax
    }
  }
  return best;
}

GreedyChoice greedy_choice(std::span<const float> lp, std::int32_t eos) {
  GreedyChoice c;
  c.token = argmax(lp);
  c.log_prob = lp[static_cast<std::size_t>(c.token)];
  if (eos < 0) {
    c.token_without_eos = c.token;
    c.log_prob_without_eos = c.log_prob;
    return c;
  }
  const int best = argmax(lp, eos);  // the row as the min-length mask leaves it
  c.token_without_eos = best;
  const float eos_before = lp[static_cast<std::size_t>(eos)];
  if (eos_before < -1e-6f) {  // masking eos out of normalised log-probs renormalises by 1 - p(eos)
    c.log_prob_without_eos =
        lp[static_cast<std::size_t>(best)] - static_cast<float>(std::log1p(-std::exp(static_cast<double>(eos_before))));
  } else {
    std::vector<float> masked(lp.begin(), lp.end());
    masked[static_cast<std::size_t>(eos)] = kNegInf;
    c.log_prob_without_eos = log_softmax_at(masked, best);
  }
  return c;
}

namespace {

// HF TopKLogitsWarper: everything strictly below the k-th largest value is removed (ties with the
// k-th value survive).
void apply_top_k(std::span<float> scores, int top_k) {
  const auto n = static_cast<int>(scores.size());
  if (top_k <= 0 || top_k >= n) return;
  std::vector<float> sorted(scores.begin(), scores.end());
  std::nth_element(sorted.begin(), sorted.begin() + (top_k - 1), sorted.end(), std::greater<>());
  const float kth = sorted[top_k - 1];
  for (float& v : scores)
    if (v < kth) v = kNegInf;
}

// HF TopPLogitsWarper: sort ascending, cumulative softmax; drop tokens whose cumulative probability
// is <= 1 - top_p, but always keep the most likely one. torch.sort is not stable; we break ties by
// index (lower index first in ascending order, so the highest index of a tie is kept longest).
void apply_top_p(std::span<float> scores, double top_p) {
  if (top_p >= 1.0) return;
  const auto n = static_cast<int>(scores.size());
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return scores[a] < scores[b]; });
  const float m = scores[order.back()];
  double sum = 0.0;
  for (int i : order) sum += std::exp(static_cast<double>(scores[i] - m));
  // torch: softmax in float, cumsum accumulated in double (CPU acc type) and stored as float.
  const auto threshold = static_cast<float>(1.0 - top_p);  // HF: a float32 tensor against the Python float
  double cum = 0.0;
  std::vector<int> removed;
  for (int r = 0; r < n - 1; ++r) {  // r = n - 1 is the most likely token: always kept
    const int i = order[r];
    cum += static_cast<float>(std::exp(static_cast<double>(scores[i] - m)) / sum);
    if (static_cast<float>(cum) <= threshold) removed.push_back(i);
  }
  for (int i : removed) scores[i] = kNegInf;
}

}  // namespace

void apply_sampling_warpers(std::span<float> scores, const GenerationOptions& o) {
  if (o.temperature != 1.0f)
    for (float& v : scores) v = v / o.temperature;
  apply_top_k(scores, o.top_k);
  apply_top_p(scores, o.top_p);
}

std::uint64_t SplitMix64::next() {
  // splitmix64 (Steele, Lea, Flood 2014): a Weyl sequence passed through a 64-bit finaliser.
  std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double SplitMix64::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

int sample_from_scores(std::span<const float> scores, double uniform) {
  float m = -INFINITY;
  for (float x : scores) {
    // torch.multinomial refuses these too: a NaN anywhere, or nothing left to draw from.
    ENCORE_CHECK(!std::isnan(x) && x != INFINITY, invalid_argument,
                 "generate: cannot sample from scores holding {} (the session's logits are not finite)", x);
    m = std::max(m, x);
  }
  ENCORE_CHECK(m > -INFINITY, invalid_argument,
               "generate: cannot sample: every token's score is -inf (all masked, or logits of -inf)");
  std::vector<double> p(scores.size());
  double total = 0.0;
  for (std::size_t i = 0; i < scores.size(); ++i) total += p[i] = std::exp(static_cast<double>(scores[i] - m));
  const double target = uniform * total;
  double cum = 0.0;
  int last_positive = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (p[i] <= 0.0) continue;
    last_positive = static_cast<int>(i);
    cum += p[i];
    if (cum > target) return last_positive;
  }
  return last_positive;  // rounding left target at the very end of the distribution
}

void emit_token(const GenerationOptions& o, int item, int sequence, std::int32_t token,
                std::span<const std::int32_t> ids, bool finished) {
  if (!o.on_token) return;
  TokenEvent ev;
  ev.item = item;
  ev.sequence = sequence;
  ev.token = token;
  ev.ids = ids;
  ev.finished = finished;
  ENCORE_CHECK(o.on_token(ev), cancelled, "generate: cancelled by on_token at item {} (sequence length {})",
               item, ids.size());
}

}  // namespace encore::detail
