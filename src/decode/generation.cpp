// generate(): option validation, greedy decoding and sampling (HF 5.17 `_sample` semantics), and
// dispatch to beam search (beam_search.cpp).
//
// Greedy / sampling, per step:
//   scores = last logits (fp32) -> min-length eos mask -> [sampling: temperature, top-k, top-p]
//   token  = argmax(scores) (ties -> lowest index)  |  sample from softmax(scores)
// A row that produced eos is finished and is fed pad (pad_token_id, or eos when -1) from then on;
// the loop ends when every row is finished or the length reaches max_length.
// GenerationResult::score is the sum over generated tokens of log_softmax(scores)[token] (float32):
// the log-probability of the sequence under the distribution each token was chosen from.
//
// Sampling cannot reproduce torch.multinomial's stream. Our algorithm: one SplitMix64 stream
// seeded with options.seed; every step draws one uniform u in [0,1) per row, in row order
// (finished rows draw too, so a row's draws do not depend on when others finish), and picks the
// first token whose cumulative probability (index order, double precision) exceeds u.
//
// Sampling with num_return_sequences = n runs batch * n rows, item i's samples on rows i*n .. i*n+n-1
// (HF expands the inputs the same way), each row a sequence of its own.
//
// on_token (greedy/sampling): one event per unfinished sequence per step, in row order; the event
// for the token that finishes a sequence (eos or max_length) has finished = true, and that
// sequence gets no events afterwards.
#include <algorithm>
#include <climits>
#include <cmath>
#include <string>

#include "core/check.h"
#include "decode/generation_internal.h"

namespace encore {
namespace detail {

void validate_options(const GenerationOptions& o, int batch, int vocab) {
  const char* w = "GenerationOptions";
  ENCORE_CHECK(batch >= 1, invalid_argument, "generate: batch = {} must be >= 1", batch);
  ENCORE_CHECK(o.num_beams >= 1, invalid_argument, "{}.num_beams = {} must be >= 1", w, o.num_beams);
  ENCORE_CHECK(o.num_return_sequences >= 1, invalid_argument, "{}.num_return_sequences = {} must be >= 1", w,
               o.num_return_sequences);
  // HF GenerationConfig.validate: more than one sequence needs beams to pick from, or sampling.
  ENCORE_CHECK(o.num_return_sequences == 1 || o.num_beams > 1 || o.do_sample, invalid_argument,
               "{}.num_return_sequences = {}: greedy decoding returns one sequence per item (use num_beams >= {} or "
               "do_sample)",
               w, o.num_return_sequences, o.num_return_sequences);
  ENCORE_CHECK(o.num_beams == 1 || o.num_return_sequences <= o.num_beams, invalid_argument,
               "{}.num_return_sequences = {} must be at most num_beams = {}", w, o.num_return_sequences, o.num_beams);
  const int per = generation_rows_per_item(o);
  if (per == 1)
    ENCORE_CHECK(batch <= kMaxGenerationRows, invalid_argument, "generate: batch = {} is over {} rows", batch,
                 kMaxGenerationRows);
  ENCORE_CHECK(static_cast<long long>(batch) * per <= kMaxGenerationRows, invalid_argument,
               "{}.{} = {}: batch {} x {} is over {} rows", w, o.num_beams > 1 ? "num_beams" : "num_return_sequences",
               per, batch, per, kMaxGenerationRows);
  ENCORE_CHECK(o.max_new_tokens == -1 || (o.max_new_tokens >= 1 && o.max_new_tokens < INT_MAX), invalid_argument,
               "{}.max_new_tokens = {} must be >= 1 (or -1: unset, max_length applies)", w, o.max_new_tokens);
  ENCORE_CHECK(o.min_new_tokens >= -1 && o.min_new_tokens < INT_MAX, invalid_argument,
               "{}.min_new_tokens = {} must be >= 0 (or -1: unset, min_length applies)", w, o.min_new_tokens);
  // max_new_tokens, when set, replaces max_length (HF ignores the latter then).
  ENCORE_CHECK(o.max_new_tokens != -1 || o.max_length == -1 || o.max_length >= 2, invalid_argument,
               "{}.max_length = {} must be > 1 (it counts the start token, which is already there), or -1 "
               "(unset: {} new tokens)",
               w, o.max_length, kDefaultNewTokens);
  ENCORE_CHECK(o.min_length >= 0, invalid_argument, "{}.min_length = {} must be >= 0", w, o.min_length);
  if (o.do_sample) {  // as in Hugging Face, the sampling settings are only looked at when sampling
    ENCORE_CHECK(std::isfinite(o.temperature) && o.temperature > 0.0f, invalid_argument,
                 "{}.temperature = {} must be > 0 when do_sample", w, o.temperature);
    ENCORE_CHECK(o.top_p >= 0.0 && o.top_p <= 1.0, invalid_argument, "{}.top_p = {} must be in [0, 1] when do_sample",
                 w, o.top_p);  // 0 keeps only the most likely token, as HF's warper
    ENCORE_CHECK(o.top_k >= 0, invalid_argument, "{}.top_k = {} must be >= 0 (0 = off) when do_sample", w, o.top_k);
  }
  ENCORE_CHECK(std::isfinite(o.length_penalty), invalid_argument, "{}.length_penalty = {} must be finite", w,
               o.length_penalty);
  ENCORE_CHECK(o.early_stopping >= 0 && o.early_stopping <= 2, invalid_argument,
               "{}.early_stopping = {} must be 0 (false), 1 (true) or 2 (never)", w, o.early_stopping);
  ENCORE_CHECK(!(o.do_sample && o.num_beams > 1), unsupported,
               "{}: do_sample with num_beams = {} (beam sampling) is not supported", w, o.num_beams);
  ENCORE_CHECK(vocab >= 1, invalid_argument, "generate: session.vocab_size() = {} must be >= 1", vocab);
  // Beam search keeps 2 * num_beams candidates out of num_beams * vocab (torch.topk needs k <= n).
  ENCORE_CHECK(o.num_beams == 1 || vocab >= 2, invalid_argument,
               "generate: beam search needs session.vocab_size() >= 2, got {}", vocab);
  ENCORE_CHECK(o.start_token_id.has_value(), invalid_argument,
               "{}.start_token_id is not set: give the token generation starts from", w);
  ENCORE_CHECK(*o.start_token_id >= 0 && *o.start_token_id < vocab, invalid_argument,
               "{}.start_token_id = {} must be in [0, vocab_size = {})", w, *o.start_token_id, vocab);
  const std::int32_t eos = eos_id(o), pad = o.pad_token_id.value_or(-1);
  ENCORE_CHECK(eos >= -1 && eos < vocab, invalid_argument,
               "{}.eos_token_id = {} must be -1 (none) or in [0, vocab_size = {})", w, eos, vocab);
  ENCORE_CHECK(pad >= -1 && pad < vocab, invalid_argument,
               "{}.pad_token_id = {} must be -1 (= eos) or in [0, vocab_size = {})", w, pad, vocab);
}

GenerationOptions resolve_lengths(GenerationOptions o) {
  constexpr int kPrompt = 1;  // the start token
  if (o.max_new_tokens >= 1) o.max_length = kPrompt + o.max_new_tokens;
  else if (o.max_length == -1) o.max_length = kPrompt + kDefaultNewTokens;  // HF 5.x, no length given
  if (o.min_new_tokens >= 0) o.min_length = kPrompt + o.min_new_tokens;
  o.max_new_tokens = o.min_new_tokens = -1;
  return o;
}

}  // namespace detail

int generation_rows_per_item(const GenerationOptions& o) noexcept {
  if (o.num_beams > 1) return o.num_beams;
  return o.do_sample && o.num_return_sequences > 1 ? o.num_return_sequences : 1;
}

namespace {

using detail::take_logits;

void validate(const DecoderSession& session, int batch, const GenerationOptions& o) {
  detail::validate_options(o, batch, session.vocab_size());
  const int per = generation_rows_per_item(o);
  const long long rows = static_cast<long long>(batch) * per;
  ENCORE_CHECK(session.rows() == rows, invalid_argument,
               "generate: session.rows() = {} but batch * {} = {} * {} = {}", session.rows(),
               o.num_beams > 1 ? "num_beams" : o.do_sample ? "num_return_sequences" : "1", batch, per, rows);
}

// Chooses the next token of one row and returns its log-probability under the processed scores.
// `log_probs`: the scores are already log_softmax(logits); unless a processor changed them, the
// log-probability is read off directly (no pass over the vocabulary).
std::int32_t pick_token(std::span<float> scores, const GenerationOptions& o, int cur_len, detail::SplitMix64& rng,
                        bool log_probs, float& logprob) {
  if (log_probs && !o.do_sample) {  // the choice a session makes with step_greedy, the same code
    const GreedyChoice c =
        detail::greedy_choice(scores, detail::eos_masked_for_min_length(o, cur_len) ? detail::eos_id(o) : -1);
    logprob = c.log_prob_without_eos;
    return c.token_without_eos;
  }
  detail::mask_eos_for_min_length(scores, o, cur_len);
  int token = 0;
  if (o.do_sample) {
    detail::apply_sampling_warpers(scores, o);
    token = detail::sample_from_scores(scores, rng.uniform());
  } else {
    token = detail::argmax(scores);
  }
  logprob = detail::log_softmax_at(scores, token);
  return static_cast<std::int32_t>(token);
}

// `batch` rows, each its own sequence; row b is sequence b % per of item b / per (events only).
std::vector<GenerationResult> greedy_or_sample(DecoderSession& session, int batch, int per,
                                               const GenerationOptions& o) {
  const int vocab = session.vocab_size();
  const std::int32_t pad = detail::pad_id(o);
  const bool log_probs = session.step_returns_log_probs();
  const bool session_chooses = !o.do_sample && session.chooses_greedy();
  detail::SplitMix64 rng(o.seed);
  Tensor logits;
  std::vector<GreedyChoice> choices;
  auto step = [&](std::span<const std::int32_t> tokens) {
    if (!session_chooses) {
      logits = take_logits(session.step(tokens), batch, vocab);
      return;
    }
    choices = session.step_greedy(tokens, detail::eos_id(o));
    ENCORE_CHECK(static_cast<int>(choices.size()) == batch, invalid_argument,
                 "generate: session.step_greedy returned {} choices for {} rows", choices.size(), batch);
    for (const GreedyChoice& c : choices)
      ENCORE_CHECK(c.token >= 0 && c.token < vocab && c.token_without_eos >= 0 && c.token_without_eos < vocab,
                   invalid_argument, "generate: session.step_greedy chose token {} / {} outside the vocabulary of {}",
                   c.token, c.token_without_eos, vocab);
  };
  // The processors greedy decoding applies reduce to the min-length eos mask: the session's
  // choice without eos is what argmax over the masked row picks.
  auto choose = [&](int b, int cur_len, float& logprob) -> std::int32_t {
    if (!session_chooses) {
      std::span<float> scores(logits.data_ptr<float>() + static_cast<std::size_t>(b) * vocab, static_cast<std::size_t>(vocab));
      return pick_token(scores, o, cur_len, rng, log_probs, logprob);
    }
    const GreedyChoice& c = choices[static_cast<std::size_t>(b)];
    const bool masked = detail::eos_masked_for_min_length(o, cur_len);
    logprob = masked ? c.log_prob_without_eos : c.log_prob;
    return masked ? c.token_without_eos : c.token;
  };

  std::vector<GenerationResult> out(static_cast<std::size_t>(batch));
  std::vector<bool> finished(static_cast<std::size_t>(batch), false);
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(batch), detail::start_id(o));
  for (auto& r : out) {
    r.ids.push_back(detail::start_id(o));
    r.token_scores.reserve(static_cast<std::size_t>(std::max(o.max_length - 1, 0)));
  }

  int cur_len = 1;
  int unfinished = batch;
  step(tokens);
  for (;;) {
    for (int b = 0; b < batch; ++b) {
      float logprob = 0.0f;
      const std::int32_t t = choose(b, cur_len, logprob);
      if (finished[b]) {
        tokens[b] = pad;
        continue;
      }
      tokens[b] = t;
      out[b].ids.push_back(t);
      out[b].score += logprob;
      out[b].token_scores.push_back(logprob);
    }
    ++cur_len;
    for (int b = 0; b < batch; ++b) {
      if (finished[b]) continue;
      const bool done = tokens[b] == detail::eos_id(o) || cur_len >= o.max_length;  // tokens are >= 0
      if (done) {
        finished[b] = true;
        --unfinished;
      }
      detail::emit_token(o, b / per, b % per, tokens[b], out[b].ids, done);
    }
    if (unfinished == 0) break;
    step(tokens);
  }
  return out;
}

}  // namespace

std::vector<GreedyChoice> DecoderSession::step_greedy(std::span<const std::int32_t>, std::int32_t) {
  detail::fail(ErrorCode::unsupported,
               "DecoderSession::step_greedy: this session returns logits only (chooses_greedy() is false)");
}

std::vector<GenerationResult> generate(DecoderSession& session, int batch, const GenerationOptions& options) {
  validate(session, batch, options);
  const GenerationOptions o = detail::resolve_lengths(options);
  if (o.num_beams > 1) return detail::beam_search(session, batch, o);
  // Sampling with n sequences per item: each of the batch * n rows is sampled on its own.
  const int per = generation_rows_per_item(o);
  return greedy_or_sample(session, batch * per, per, o);
}

}  // namespace encore
