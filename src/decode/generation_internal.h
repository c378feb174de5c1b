// Internal pieces of generate() (include/encore/decode/generation.h): logits processing shared by
// the greedy/sampling loop (generation.cpp) and beam search (beam_search.cpp).
//
// Everything mirrors what Hugging Face transformers 5.17 computes in fp32 torch on the CPU, so that
// ids match exactly and scores to ~1e-6 (log_softmax and the running sums are done in float32).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "encore/decode/generation.h"

namespace encore::detail {

/// Most rows (batch x num_beams) generate() takes.
inline constexpr long long kMaxGenerationRows = 1 << 20;

/// New tokens when neither max_length nor max_new_tokens is given (HF's GenerationConfig default of
/// max_length 20, which transformers 5.x counts after the prompt).
inline constexpr int kDefaultNewTokens = 20;

/// The checks of generate() that need no session: every option against `batch` and `vocab`.
/// Throws Error(invalid_argument) naming the field, Error(unsupported) for beam sampling.
/// Models call it before encoding, so that a bad option fails before any work.
/// The special ids of validated options: start (set), eos (-1 = none), pad (eos when unset or -1).
inline std::int32_t start_id(const GenerationOptions& o) { return o.start_token_id.value_or(0); }
inline std::int32_t eos_id(const GenerationOptions& o) { return o.eos_token_id.value_or(-1); }
inline std::int32_t pad_id(const GenerationOptions& o) {
  const std::int32_t pad = o.pad_token_id.value_or(-1);
  return pad >= 0 ? pad : eos_id(o);
}

void validate_options(const GenerationOptions& options, int batch, int vocab);

/// `options` (validated) with max_new_tokens / min_new_tokens applied to max_length / min_length
/// (HF: the prompt is the start token, so max_length = 1 + max_new_tokens) and then unset: the
/// lengths the search and a model's session are sized by.
GenerationOptions resolve_lengths(GenerationOptions options);

/// The logits returned by DecoderSession::step as a writable contiguous CPU f32 [rows, vocab]
/// tensor (converting dtype/device like HF's `.to(torch.float32)`): the session's own tensor when
/// generate() holds the only reference to memory it owns, else a copy. Throws if the shape is wrong.
Tensor take_logits(Tensor logits, int rows, int vocab);

/// Whether HF's MinLengthLogitsProcessor masks eos at this length: the sequence (start token
/// included) is still shorter than min_length.
bool eos_masked_for_min_length(const GenerationOptions& o, int cur_len);

/// HF MinLengthLogitsProcessor: eos gets -inf while eos_masked_for_min_length. Returns whether it
/// masked.
bool mask_eos_for_min_length(std::span<float> scores, const GenerationOptions& o, int cur_len);

/// In-place log_softmax in float32: x - max - log(sum(exp(x - max))). The sum is taken in double
/// (torch sums in float, in another order: the two differ by ~1 ulp at most).
void log_softmax_inplace(std::span<float> x);

/// log_softmax(x)[index] without modifying x.
float log_softmax_at(std::span<const float> x, int index);

/// torch.argmax: the first index of the maximum (ties -> lowest index; NaN counts as maximal).
/// x[masked_index] counts as -inf (what the min-length mask writes), without copying the row.
int argmax(std::span<const float> x, int masked_index = -1);

/// The greedy choice generate() makes from one row of log-probabilities (a session whose step()
/// returns log-probs), with and without eos masked: exactly what pick_token computes, so a session
/// that chooses by it (DecoderSession::step_greedy) decodes bit for bit as if it returned the row.
GreedyChoice greedy_choice(std::span<const float> log_probs, std::int32_t eos_token_id);

/// HF sampling warpers in HF order: temperature, top-k, top-p (min_tokens_to_keep = 1).
void apply_sampling_warpers(std::span<float> scores, const GenerationOptions& o);

/// Deterministic sampling stream (splitmix64). One uniform double in [0, 1) per draw.
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next();
  double uniform();  ///< 53 random bits scaled to [0, 1)

 private:
  std::uint64_t state_;
};

/// Samples an index from softmax(scores) with one uniform draw (inverse CDF in index order).
int sample_from_scores(std::span<const float> scores, double uniform);

/// Beam search (HF 5.17 `_beam_search`, do_sample = false). Options are already validated and
/// resolved (resolve_lengths).
std::vector<GenerationResult> beam_search(DecoderSession& session, int batch, const GenerationOptions& o);

/// Throws Error(cancelled) when the callback returns false; no-op without a callback.
void emit_token(const GenerationOptions& o, int item, int sequence, std::int32_t token,
                std::span<const std::int32_t> ids, bool finished);

}  // namespace encore::detail
