// encore — token generation over any decoder: greedy, beam search (Hugging Face transformers 5.x
// semantics) and sampling, with a streaming callback and cancellation.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "encore/core/tensor.h"

namespace encore {

/// A greedy choice a session makes where its logits are (DecoderSession::step_greedy).
struct GreedyChoice {
  std::int32_t token = 0;              ///< argmax of the logits (ties -> lowest index)
  float log_prob = 0.0f;               ///< its log-probability, log_softmax(logits)[token]
  std::int32_t token_without_eos = 0;  ///< the argmax with eos excluded (min-length masking)
  float log_prob_without_eos = 0.0f;   ///< its log-probability renormalised over the tokens but eos
};

/// What a model exposes to the generation loop. One "row" is one hypothesis (a batch item, or a
/// beam of it, or one of its samples); rows are numbered batch-major (item i's rows are
/// i*per .. i*per+per-1, per = generation_rows_per_item(options)).
class DecoderSession {
 public:
  virtual ~DecoderSession() = default;
  /// Rows the session was started with.
  virtual int rows() const = 0;
  /// Vocabulary size (logits width).
  virtual int vocab_size() const = 0;
  /// Feeds one new token per row (the first call feeds the start token) and returns the logits
  /// for the next position: a CPU f32 tensor [rows, vocab].
  virtual Tensor step(std::span<const std::int32_t> tokens) = 0;
  /// Row r continues the history of row parent[r] (beam search). Called between steps.
  virtual void reorder(std::span<const int> parent) = 0;
  /// True when step() returns log_softmax(logits) over the vocabulary (f32) instead of raw logits:
  /// a session can compute it where the logits are (e.g. on the GPU), and generation then skips
  /// its own per-step pass over the vocabulary. Every processor generation applies (min-length
  /// mask, temperature, top-k, top-p) gives the same choice on either; scores are renormalised
  /// where a processor changed a row.
  virtual bool step_returns_log_probs() const { return false; }
  /// True when step_greedy() is available. Greedy decoding (not sampling, not beams) then uses it.
  virtual bool chooses_greedy() const { return false; }
  /// Like step(), but returns only each row's greedy choice (`eos_token_id` -1 = none), made where
  /// the logits are: on a GPU a few bytes per row reach the host instead of a row of log-probs.
  /// The default throws Error(unsupported).
  virtual std::vector<GreedyChoice> step_greedy(std::span<const std::int32_t> tokens, std::int32_t eos_token_id);
};

/// Reported after every generated token: greedy and sampling per sequence (an item's, or with
/// num_return_sequences > 1 each of its samples); beam search per item, its current best hypothesis.
struct TokenEvent {
  int item = 0;                         ///< batch item
  int sequence = 0;                     ///< which of the item's samples (sampling with num_return_sequences > 1), else 0
  std::int32_t token = 0;               ///< newest token
  std::span<const std::int32_t> ids;    ///< the sequence so far (beam search: the item's best; start token included)
  bool finished = false;                ///< this sequence (beam search: item) is done: eos, or max_length
};

struct GenerationOptions {
  /// Total length including the start token (HF semantics); -1 = unset: 20 new tokens, HF's
  /// default (max_length 21).
  int max_length = -1;
  int min_length = 0;             ///< eos is masked until this length
  /// When set (>= 1), the tokens to generate after the start token; it overrides max_length
  /// (= 1 + max_new_tokens), as HF's max_new_tokens does. -1 = unset.
  int max_new_tokens = -1;
  /// When set (>= 0), eos is masked until this many tokens follow the start token; it overrides
  /// min_length (= 1 + min_new_tokens), as HF's min_new_tokens does. -1 = unset.
  int min_new_tokens = -1;
  int num_beams = 1;              ///< 1 = greedy or sampling
  /// Results per batch item. Beam search returns its best num_return_sequences hypotheses (at most
  /// num_beams), best first; sampling draws that many sequences per item, each on a row of its
  /// own. Greedy decoding returns one (more is an error, as in HF).
  int num_return_sequences = 1;
  float length_penalty = 1.0f;    ///< beam score = sum_logprobs / generated_len^length_penalty
  /// HF early_stopping: 0 = false (heuristic stop), 1 = true (stop when num_beams hypotheses are
  /// done), 2 = "never" (exact).
  int early_stopping = 0;
  bool do_sample = false;
  // The sampling settings, read (and checked) only when do_sample, as in Hugging Face; the defaults
  // are HF's (top_k 50).
  float temperature = 1.0f;       ///< > 0
  int top_k = 50;                 ///< 0 = off
  /// [0, 1]; 1 = off, 0 = the most likely token only. A double, as HF's: the cut-off is
  /// float32(1 - top_p), which a float top_p (0.9f = 0.89999998) would move.
  double top_p = 1.0;
  std::uint64_t seed = 0;         ///< sampling RNG seed (deterministic per seed)
  /// Special ids. generate(): start_token_id must be set; eos_token_id unset or -1 = none;
  /// pad_token_id unset or -1 = eos_token_id. VitGpt2::caption(): an unset id takes the model's,
  /// each on its own, as HF does for ids it is not given; a set one is used as given (start 0,
  /// eos -1 = none, pad -1 = eos).
  std::optional<std::int32_t> start_token_id;
  std::optional<std::int32_t> eos_token_id;
  std::optional<std::int32_t> pad_token_id;
  /// Called after each token; return false to cancel (generate() then throws Error(cancelled)).
  std::function<bool(const TokenEvent&)> on_token;
};

/// One result per returned sequence: batch * num_return_sequences, item-major (item i's are
/// i * n .. i * n + n - 1).
struct GenerationResult {
  std::vector<std::int32_t> ids;  ///< start token included, eos included if generated, no padding
  float score = 0.0f;             ///< beam search: normalised score (HF sequences_scores); greedy and
                                  ///< sampling: sum of the chosen tokens' log-probs
  /// One per generated token (ids[1..]): its log-probability as the search scored it, so that they
  /// add up to `score`. Beam search: log_softmax of the logits, then the min-length eos mask (not
  /// renormalised, as HF), at the token on its beam's path (HF compute_transition_scores with
  /// beam_indices, normalize_logits=False); their float sum over gen_len^length_penalty is `score`.
  /// Greedy and sampling: log_softmax of the processed scores at the chosen token (HF
  /// normalize_logits=True), i.e. under the distribution the token was taken from: renormalised
  /// without eos while min_length masks it, and after temperature, top-k and top-p when sampling.
  std::vector<float> token_scores;
};

/// Rows a DecoderSession needs per batch item for `options`: num_beams for beam search,
/// num_return_sequences when sampling, else 1 (at least 1 whatever the options; generate()
/// refuses invalid ones).
int generation_rows_per_item(const GenerationOptions& options) noexcept;

/// Runs generation on `session` (which must have been started with batch *
/// generation_rows_per_item(options) rows). Throws Error(invalid_argument) for inconsistent options
/// (naming the field), Error(cancelled) when on_token returns false.
std::vector<GenerationResult> generate(DecoderSession& session, int batch, const GenerationOptions& options);

}  // namespace encore
