// Beam search with the semantics of Hugging Face transformers 5.17 `GenerationMixin._beam_search`
// (the vectorised implementation), do_sample = false, one eos id at most.
//
// Per step and batch item (all arithmetic in float32, like the fp32 torch tensors):
//   logp   = log_softmax(logits) per beam, then the min-length eos mask (HF applies logits
//            processors to the log-probs in beam search, so the mask comes after normalisation)
//   acc    = logp + running score of the beam           (running scores start 0, -1e9, -1e9, ...)
//   top K  = best K of the num_beams*vocab flat (beam, token) entries, K = max(2, 1+n_eos)*num_beams
//   hits   = candidate token is eos, or the new length reaches max_length
//   running: best num_beams of (acc + hits * -1e9)      -> the next running beams, in rank order
//   finish : acc / gen_len^lp, plus -1e9 for each of: item full and early_stopping=true, item
//            heuristically done, candidate not (hits and rank < num_beams); merged with the pool of
//            finished hypotheses, best num_beams kept.   gen_len = tokens generated incl. the new one
// After the step (cur_len += 1), `_check_early_stop_heuristic`: an item stays open while the best
// running score / L^lp beats the worst finished score (or some pool slot is still unfinished), with
// L = max_length - 1 if early_stopping = "never" and lp > 0, else the generated length so far. The
// flag is sticky. The loop ends when no item is open, or every pool is full and early_stopping = true,
// or every candidate hit a stopping criterion (this happens at max_length, where the top num_beams
// candidates of the last step are finalised with acc / (max_length - 1)^lp: the HF 5.x rule).
//
// Ties: torch.topk does not specify the order of equal values; we rank equal values by lower index
// (flat beam*vocab index; rank within the candidates; in the pool merge, older pool entries first).
//
// on_token: after every step, for each item not yet reported finished, the item's current best
// hypothesis: the best finished one if its score is at least the best running beam's
// sum_logprobs / gen_len^lp, else that running beam. When an item can no longer change (heuristic
// closed, pool full with early_stopping = true, or the search ends) its final result is reported
// once with finished = true and no more events follow for it.
#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "decode/generation_internal.h"

namespace encore::detail {
namespace {

constexpr float kBig = -1.0e9f;  // HF's "very large negative" offset; exact in float32

struct Hyp {
  std::vector<std::int32_t> ids;
  float score = 0.0f;
  bool finished = false;
  std::vector<float> token_scores;  // each generated token's processed log-prob on this path
};

// Ordering of torch.topk (largest first; NaN counts as largest) with ties broken by lower index.
bool ranks_before(float a, std::size_t ia, float b, std::size_t ib) {
  const bool na = std::isnan(a), nb = std::isnan(b);
  if (na != nb) return na;
  if (!na && a != b) return a > b;
  return ia < ib;
}

// Indices of the k best values, best first. k is small, so a sorted insertion list is enough.
std::vector<std::size_t> top_k_indices(std::span<const float> v, std::size_t k) {
  std::vector<std::size_t> best;
  best.reserve(k + 1);
  float worst = 0.0f;  // v[best.back()] once k are held
  for (std::size_t i = 0; i < v.size(); ++i) {
    // Fast reject first: a plain compare fails only for NaN (either side) and ties, which the
    // exact ordering then decides.
    if (best.size() == k && (v[i] < worst || !ranks_before(v[i], i, worst, best.back()))) continue;
    auto pos = best.end();
    while (pos != best.begin() && ranks_before(v[i], i, v[*(pos - 1)], *(pos - 1))) --pos;
    best.insert(pos, i);
    if (best.size() > k) best.pop_back();
    if (best.size() == k) worst = v[best.back()];
  }
  return best;
}

// (double) n ** lp rounded to float: torch divides a float32 tensor by the Python float n ** lp.
float length_divisor(int n, float lp) {
  return static_cast<float>(std::pow(static_cast<double>(n), static_cast<double>(lp)));
}

class BeamSearch {
 public:
  BeamSearch(DecoderSession& session, int batch, const GenerationOptions& o)
      : session_(session), o_(o), batch_(batch), beams_(o.num_beams), vocab_(session.vocab_size()),
        k_(std::max(2, 1 + (eos_id(o) >= 0 ? 1 : 0)) * o.num_beams) {}

  std::vector<GenerationResult> run();

 private:
  int row(int item, int beam) const { return item * beams_ + beam; }
  std::span<const Hyp> pool(int b) const { return {pool_.data() + row(b, 0), static_cast<std::size_t>(beams_)}; }
  bool pool_full(int b) const {
    return std::all_of(pool(b).begin(), pool(b).end(), [](const Hyp& h) { return h.finished; });
  }
  void init();
  void expand_item(int b, std::span<float> logits, std::vector<Hyp>& next_running);
  void update_heuristic(int b);
  bool should_continue() const;
  void report(int b, bool search_over);

  DecoderSession& session_;
  const GenerationOptions& o_;
  const int batch_, beams_, vocab_, k_;
  int cur_len_ = 1;                    // sequence length incl. the start token
  std::vector<Hyp> running_, pool_;    // [batch * beams] each, batch-major, best first per item
  std::vector<char> open_, reported_;  // per item: heuristic still unsatisfied; final event sent
  std::vector<int> parents_;           // per row: the row its new running beam continues
  std::vector<std::int32_t> tokens_;   // per row: the token fed at the next step
  std::vector<float> step_logp_;       // this step's processed log-probs of one item's beams
  bool all_hit_ = true;                // every candidate of this step hit a stopping criterion
};

void BeamSearch::init() {
  const auto rows = static_cast<std::size_t>(batch_) * beams_;
  running_.assign(rows, Hyp{{start_id(o_)}, 0.0f, false, {}});
  pool_.assign(rows, Hyp{{start_id(o_)}, kBig, false, {}});
  for (int b = 0; b < batch_; ++b)
    for (int j = 1; j < beams_; ++j) running_[row(b, j)].score = kBig;  // step 1 expands beam 0 only
  open_.assign(static_cast<std::size_t>(batch_), 1);
  reported_.assign(static_cast<std::size_t>(batch_), 0);
  parents_.assign(rows, 0);
  tokens_.assign(rows, start_id(o_));
  step_logp_.assign(static_cast<std::size_t>(beams_) * vocab_, 0.0f);
}

// Steps c-f of one HF iteration for item b; `logits` holds the item's beams_ rows.
void BeamSearch::expand_item(int b, std::span<float> logits, std::vector<Hyp>& next_running) {
  for (int j = 0; j < beams_; ++j) {
    std::span<float> lp = logits.subspan(static_cast<std::size_t>(j) * vocab_, static_cast<std::size_t>(vocab_));
    if (!session_.step_returns_log_probs()) log_softmax_inplace(lp);
    mask_eos_for_min_length(lp, o_, cur_len_);
    // The processed log-probs are kept (the candidates' token scores) in the pass that adds the
    // running score.
    float* const kept = step_logp_.data() + static_cast<std::size_t>(j) * vocab_;
    const float running_score = running_[row(b, j)].score;
    for (std::size_t i = 0; i < lp.size(); ++i) {
      kept[i] = lp[i];
      lp[i] = lp[i] + running_score;
    }
  }
  const std::vector<std::size_t> top = top_k_indices(logits, static_cast<std::size_t>(k_));
  const bool at_max = cur_len_ + 1 >= o_.max_length;
  std::vector<float> run_vals(top.size()), fin_vals(top.size());
  std::vector<char> just_finished(top.size());
  const float divisor = length_divisor(cur_len_, o_.length_penalty);  // gen_len = cur_len + 1 - 1
  const bool closed_full = pool_full(b) && o_.early_stopping == 1;
  for (std::size_t k = 0; k < top.size(); ++k) {
    const float acc = logits[top[k]];
    const auto token = static_cast<std::int32_t>(top[k] % static_cast<std::size_t>(vocab_));
    const bool hits = at_max || token == eos_id(o_);
    all_hit_ = all_hit_ && hits;
    run_vals[k] = hits ? acc + kBig : acc;
    float f = acc / divisor;
    if (closed_full) f = f + kBig;
    if (!open_[b]) f = f + kBig;
    just_finished[k] = hits && k < static_cast<std::size_t>(beams_);
    if (!just_finished[k]) f = f + kBig;
    fin_vals[k] = f;
  }
  auto candidate = [&](std::size_t k, float score, bool finished) {
    const int parent = row(b, static_cast<int>(top[k] / static_cast<std::size_t>(vocab_)));
    Hyp h{running_[parent].ids, score, finished, running_[parent].token_scores};
    h.ids.push_back(static_cast<std::int32_t>(top[k] % static_cast<std::size_t>(vocab_)));
    h.token_scores.push_back(step_logp_[top[k]]);
    return h;
  };
  // e. next running beams: best num_beams candidates once finished ones are pushed down by -1e9.
  const std::vector<std::size_t> keep = top_k_indices(run_vals, static_cast<std::size_t>(beams_));
  for (int j = 0; j < beams_; ++j) {
    next_running[row(b, j)] = candidate(keep[j], run_vals[keep[j]], false);
    parents_[row(b, j)] = row(b, static_cast<int>(top[keep[j]] / static_cast<std::size_t>(vocab_)));
    tokens_[row(b, j)] = next_running[row(b, j)].ids.back();
  }
  // f. finished pool: merge [old pool, candidates] and keep the best num_beams.
  std::vector<float> merged;
  for (const Hyp& h : pool(b)) merged.push_back(h.score);
  merged.insert(merged.end(), fin_vals.begin(), fin_vals.end());
  const std::vector<std::size_t> best = top_k_indices(merged, static_cast<std::size_t>(beams_));
  std::vector<Hyp> new_pool;
  for (std::size_t m : best) {
    if (m < static_cast<std::size_t>(beams_)) {
      new_pool.push_back(pool_[row(b, static_cast<int>(m))]);
    } else {
      const std::size_t k = m - beams_;
      new_pool.push_back(candidate(k, fin_vals[k], just_finished[k] != 0));
    }
  }
  std::move(new_pool.begin(), new_pool.end(), pool_.begin() + row(b, 0));
}

// HF `_check_early_stop_heuristic` for item b (cur_len_ already advanced).
void BeamSearch::update_heuristic(int b) {
  const int hyp_len = (o_.early_stopping == 2 && o_.length_penalty > 0.0f) ? o_.max_length - 1 : cur_len_ - 1;
  const float best_possible = running_[row(b, 0)].score / length_divisor(hyp_len, o_.length_penalty);
  float worst = pool(b)[0].score;
  for (const Hyp& h : pool(b)) worst = std::min(worst, h.score);
  bool improvable = false;
  for (const Hyp& h : pool(b)) improvable = improvable || best_possible > (h.finished ? worst : kBig);
  open_[b] = open_[b] && improvable;
}

// HF `_beam_search_has_unfinished_sequences`.
bool BeamSearch::should_continue() const {
  const bool improvement_possible = std::any_of(open_.begin(), open_.end(), [](char c) { return c != 0; });
  bool all_full = true;
  for (int b = 0; b < batch_; ++b) all_full = all_full && pool_full(b);
  const bool exists_open_beam = !(all_full && o_.early_stopping == 1);
  return improvement_possible && exists_open_beam && !all_hit_;
}

void BeamSearch::report(int b, bool search_over) {
  if (reported_[b]) return;
  const Hyp& best_done = pool(b)[0];
  const bool frozen = search_over || !open_[b] || (pool_full(b) && o_.early_stopping == 1);
  if (frozen) {
    reported_[b] = 1;
    emit_token(o_, b, 0, best_done.ids.back(), best_done.ids, true);
    return;
  }
  const Hyp& lead = running_[row(b, 0)];
  const float lead_score = lead.score / length_divisor(cur_len_ - 1, o_.length_penalty);
  const Hyp& shown = (best_done.finished && best_done.score >= lead_score) ? best_done : lead;
  emit_token(o_, b, 0, shown.ids.back(), shown.ids, false);
}

std::vector<GenerationResult> BeamSearch::run() {
  init();
  const std::size_t width = static_cast<std::size_t>(beams_) * vocab_;
  Tensor logits = take_logits(session_.step(tokens_), batch_ * beams_, vocab_);
  for (;;) {
    all_hit_ = true;
    std::vector<Hyp> next_running(running_.size());
    for (int b = 0; b < batch_; ++b)
      expand_item(b, std::span<float>(logits.data_ptr<float>() + static_cast<std::size_t>(b) * width, width),
                  next_running);
    running_ = std::move(next_running);
    ++cur_len_;
    for (int b = 0; b < batch_; ++b) update_heuristic(b);
    const bool more = should_continue();
    for (int b = 0; b < batch_; ++b) report(b, !more);
    if (!more) break;
    session_.reorder(parents_);
    logits = take_logits(session_.step(tokens_), batch_ * beams_, vocab_);
  }
  // HF returns the first num_return_sequences of each item's finished pool (kept best first).
  std::vector<GenerationResult> out;
  out.reserve(static_cast<std::size_t>(batch_) * o_.num_return_sequences);
  for (int b = 0; b < batch_; ++b)
    for (int j = 0; j < o_.num_return_sequences; ++j) {
      Hyp& h = pool_[row(b, j)];  // (the search is over: moved out)
      out.push_back(GenerationResult{std::move(h.ids), h.score, std::move(h.token_scores)});
    }
  return out;
}

}  // namespace

std::vector<GenerationResult> beam_search(DecoderSession& session, int batch, const GenerationOptions& o) {
  return BeamSearch(session, batch, o).run();
}

}  // namespace encore::detail
