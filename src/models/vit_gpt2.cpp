// VitGpt2: loading, the encoder and teacher-forced decoder calls, and captioning.
#include "encore/models/vit_gpt2.h"

#include <chrono>
#include <mutex>

#include "core/check.h"
#include "core/device_lock.h"
#include "decode/generation_internal.h"
#include "encore/core/threads.h"
#include "encore/graph/plan.h"
#include "models/vit_gpt2_internal.h"
#include "models/vit_gpt2_session.h"

namespace encore {

namespace {

// Planned work kept between calls, checked out by one call at a time so that concurrent callers
// never share a plan (a second caller simply plans its own). Bounded: the oldest entries go.
template <typename T>
class Pool {
 public:
  template <typename Fits>
  std::unique_ptr<T> take(Fits fits) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = items_.begin(); it != items_.end(); ++it)
      if (fits(**it)) {
        std::unique_ptr<T> item = std::move(*it);
        items_.erase(it);
        return item;
      }
    return nullptr;
  }
  void give_back(std::unique_ptr<T> item) {
    std::lock_guard<std::mutex> lock(mutex_);
    items_.push_back(std::move(item));
    if (items_.size() > kCapacity) items_.erase(items_.begin());
  }
  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    items_.clear();
  }

 private:
  static constexpr std::size_t kCapacity = 4;
  std::mutex mutex_;
  std::vector<std::unique_ptr<T>> items_;
};

struct EncoderPlan {
  std::int64_t batch;
  Plan plan;
};

}  // namespace

struct VitGpt2::Impl {
  /// Checks the device and dtype of `options`; config and weights are the loader's to fill.
  explicit Impl(const ModelOptions& options);

  VitGpt2Config config;
  vitgpt2::Weights weights;
  Device device;
  DType dtype = DType::F32;
  PlanOptions plan_options;
  Pool<EncoderPlan> encoders;          // by batch size
  Pool<vitgpt2::Session> sessions;     // by encoder shape, beams, max_length

  Tensor encode(const Tensor& pixels, std::unique_ptr<EncoderPlan>& plan);
};

namespace {

void check_dtype(DType dtype, Device device) {
  const bool ok = dtype == DType::F32 || dtype == DType::BF16 || (dtype == DType::F16 && device.is_cuda());
  ENCORE_CHECK(ok, unsupported, "VitGpt2: dtype {} is not supported on {} (cpu: f32, bf16; cuda: f32, f16, bf16)",
               dtype_name(dtype), device.str());
}

Tensor to_host_f32(const Tensor& t) {
  const Tensor host = t.device().is_cpu() ? t : t.to(Device::cpu());
  return host.dtype() == DType::F32 ? host.contiguous() : host.to(DType::F32);
}

}  // namespace

VitGpt2::Impl::Impl(const ModelOptions& options) : device(Device::parse(options.device)), dtype(options.dtype) {
  check_dtype(dtype, device);
  ENCORE_CHECK(options.num_threads >= 0 && options.num_threads <= max_thread_count(), invalid_argument,
               "VitGpt2: ModelOptions::num_threads = {} is not valid: expected 0 (the default) or 1..{}",
               options.num_threads, max_thread_count());
  // On CUDA every plan is recorded once and replayed: one launch per encoder pass or decode step.
  plan_options = PlanOptions{.device = device, .num_threads = options.num_threads, .cuda_graph = device.is_cuda()};
}

VitGpt2 VitGpt2::load(const std::filesystem::path& dir, const ModelOptions& options) {
  auto impl = std::make_unique<Impl>(options);
  const auto lock = detail::lock_device(impl->device);  // weights are copied to the device
  impl->config = vitgpt2::read_config(dir);
  impl->weights = vitgpt2::load_weights(dir, impl->config, impl->dtype, impl->device);
  return VitGpt2(std::move(impl));
}

VitGpt2 VitGpt2::load(VitGpt2Files files, const ModelOptions& options) {
  auto impl = std::make_unique<Impl>(options);
  const auto lock = detail::lock_device(impl->device);
  impl->config = vitgpt2::parse_config(files.config_json, files.generation_config_json, "<memory>/config.json",
                                       "<memory>/generation_config.json");
  impl->weights = vitgpt2::load_weights(io::ModelWeights::from_files(std::move(files.weights)), impl->config,
                                        impl->dtype, impl->device);
  return VitGpt2(std::move(impl));
}

VitGpt2::VitGpt2(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
VitGpt2::VitGpt2(VitGpt2&&) noexcept = default;
VitGpt2& VitGpt2::operator=(VitGpt2&&) noexcept = default;
VitGpt2::~VitGpt2() {
  if (impl_ == nullptr) return;  // moved from
  const auto lock = detail::lock_device(impl_->device);  // its plans sync the device's stream as they go
  impl_.reset();
}

const VitGpt2Config& VitGpt2::config() const noexcept { return impl_->config; }

GenerationOptions VitGpt2::generation_options() const {
  const VitGpt2Config& c = impl_->config;
  GenerationOptions o;
  // HF 5.x: max_new_tokens wins over max_length; with neither anywhere, 20 new tokens (-1).
  o.max_length = c.max_length.value_or(-1);
  o.max_new_tokens = c.max_new_tokens.value_or(-1);
  o.min_new_tokens = c.min_new_tokens.value_or(-1);
  o.min_length = c.min_length, o.num_beams = c.num_beams, o.num_return_sequences = c.num_return_sequences;
  o.length_penalty = c.length_penalty, o.early_stopping = c.early_stopping;
  o.do_sample = c.do_sample, o.temperature = c.temperature, o.top_k = c.top_k, o.top_p = c.top_p;
  o.start_token_id = c.decoder_start_token_id, o.eos_token_id = c.eos_token_id, o.pad_token_id = c.pad_token_id;
  return o;
}
Device VitGpt2::device() const noexcept { return impl_->device; }

namespace {

// A tensor on another CUDA device moves to `device` before the model's device lock is taken: the
// copy takes both devices' locks, lower ordinal first, which holding the model's lock already
// would invert (two threads copying between two GPUs in opposite directions would deadlock).
Tensor from_other_gpu(const Tensor& t, Device device) {
  return t.defined() && t.device().is_cuda() && t.device() != device ? t.to(device) : t;
}

void check_pixels(const Tensor& pixels, const VitGpt2Config& c) {
  ENCORE_CHECK(pixels.defined() && pixels.rank() == 4 && pixels.dim(0) >= 1 && pixels.dim(1) == c.num_channels &&
                   pixels.dim(2) == c.image_size && pixels.dim(3) == c.image_size,
               invalid_argument, "VitGpt2: pixel_values must be [B, {}, {}, {}] with B >= 1, got {}", c.num_channels,
               c.image_size, c.image_size, pixels.defined() ? pixels.shape().str() : std::string("undefined"));
  ENCORE_CHECK(pixels.dtype() == DType::F32, invalid_argument, "VitGpt2: pixel_values must be f32, got {}",
               dtype_name(pixels.dtype()));
}

Graph encoder_graph(const VitGpt2Config& c, const vitgpt2::Weights& w, DType dtype, const Shape& pixels_shape) {
  Graph g;
  Value x = g.input("pixel_values", DType::F32, pixels_shape);
  g.output("h", vitgpt2::build_encoder(g, x, w, c, dtype));
  return g;
}

}  // namespace

// Encoder states on the model's device, in the model's dtype, as a view into the checked-out
// plan's arena (valid while `plan` is held and not run again).
Tensor VitGpt2::Impl::encode(const Tensor& pixels, std::unique_ptr<EncoderPlan>& plan) {
  check_pixels(pixels, config);
  const std::int64_t batch = pixels.dim(0);
  plan = encoders.take([batch](const EncoderPlan& p) { return p.batch == batch; });
  if (plan == nullptr)
    plan.reset(new EncoderPlan{batch, Plan(encoder_graph(config, weights, dtype, pixels.shape()), plan_options)});
  const bool direct = pixels.device() == device || (pixels.device().is_cpu() && plan->plan.accepts_host_inputs());
  return plan->plan.run({{"pixel_values", direct ? pixels : pixels.to(device)}}).at("h");
}

Tensor VitGpt2::encode(const Tensor& pixel_values) const {
  const Tensor pixels = from_other_gpu(pixel_values, impl_->device);
  const auto lock = detail::lock_device(impl_->device);  // see core/device_lock.h
  std::unique_ptr<EncoderPlan> plan;
  // The plan's output is a view into its arena, which the next call taking the plan overwrites: the
  // caller gets a copy of its own (to_host_f32 copies only when the device or dtype differs).
  const Tensor out = impl_->encode(pixels, plan);
  const Tensor states = out.device().is_cpu() && out.dtype() == DType::F32 ? out.clone() : to_host_f32(out);
  impl_->encoders.give_back(std::move(plan));
  return states;
}

void VitGpt2::release_plans() {
  const auto lock = detail::lock_device(impl_->device);
  impl_->encoders.clear();
  impl_->sessions.clear();
}

Tensor VitGpt2::decoder_logits(const Tensor& encoder_states_in, const Tensor& ids_in) const {
  const Tensor encoder_states = from_other_gpu(encoder_states_in, impl_->device);
  const Tensor ids = from_other_gpu(ids_in, impl_->device);
  const auto lock = detail::lock_device(impl_->device);
  const VitGpt2Config& c = impl_->config;
  ENCORE_CHECK(ids.defined() && ids.rank() == 2 && (ids.dtype() == DType::I32 || ids.dtype() == DType::I64),
               invalid_argument, "VitGpt2::decoder_logits: ids must be i32/i64 [B, T], got {}", ids.str());
  ENCORE_CHECK(ids.dim(1) >= 1 && ids.dim(1) <= c.max_positions, invalid_argument,
               "VitGpt2::decoder_logits: {} tokens, the model has {} positions", ids.dim(1), c.max_positions);
  ENCORE_CHECK(encoder_states.defined() && encoder_states.rank() == 3 && encoder_states.dim(0) == ids.dim(0) &&
                   encoder_states.dim(2) == c.enc_hidden,
               invalid_argument, "VitGpt2::decoder_logits: encoder_states must be [{}, T_enc, {}], got {}", ids.dim(0),
               c.enc_hidden, encoder_states.str());
  const std::int64_t batch = ids.dim(0), t = ids.dim(1);
  Tensor positions = Tensor::empty({batch, t}, DType::I32);
  for (std::int64_t i = 0; i < positions.numel(); ++i) positions.data_ptr<std::int32_t>()[i] = static_cast<std::int32_t>(i % t);
  Graph g;
  Value vi = g.input("ids", ids.dtype(), ids.shape());
  Value vp = g.input("positions", DType::I32, positions.shape());
  Value ve = g.input("encoder_states", impl_->dtype, encoder_states.shape());
  g.output("logits", vitgpt2::build_decoder_full(g, vi, vp, ve, impl_->weights, c));
  Plan plan(g, impl_->plan_options);
  const Device dev = impl_->device;
  Tensor states = encoder_states.dtype() == impl_->dtype ? encoder_states : encoder_states.to(Device::cpu()).to(impl_->dtype);
  const auto out = plan.run({{"ids", ids.to(dev)}, {"positions", positions.to(dev)}, {"encoder_states", states.to(dev)}});
  return to_host_f32(out.at("logits"));
}

std::vector<Caption> VitGpt2::caption(const Tensor& pixel_values_in, GenerationOptions options,
                                     CaptionTimings* timings) const {
  using Clock = std::chrono::steady_clock;
  const auto ms = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  };
  const auto t0 = Clock::now();
  const VitGpt2Config& c = impl_->config;
  // Unset ids take the model's, each on its own (as HF falls back per id).
  if (!options.start_token_id) options.start_token_id = c.decoder_start_token_id;
  ENCORE_CHECK(*options.start_token_id >= 0, invalid_argument,
               "VitGpt2::caption: the model's files name no decoder_start_token_id or bos_token_id (Hugging Face "
               "refuses to generate then too); give GenerationOptions::start_token_id");
  if (!options.eos_token_id) options.eos_token_id = c.eos_token_id;
  if (!options.pad_token_id) options.pad_token_id = c.pad_token_id;
  // Every option is checked before any work: before the encoder runs and a session is planned for
  // batch x rows per image (beams, or samples when sampling several sequences per image).
  check_pixels(pixel_values_in, c);
  ENCORE_CHECK(pixel_values_in.dim(0) <= detail::kMaxGenerationRows, invalid_argument,
               "VitGpt2::caption: {} images is over the {} rows generation takes", pixel_values_in.dim(0),
               detail::kMaxGenerationRows);
  detail::validate_options(options, static_cast<int>(pixel_values_in.dim(0)), static_cast<int>(c.vocab_size));
  const int new_tokens = options.max_new_tokens;
  options = detail::resolve_lengths(options);
  // The last token is never fed back, so a sequence may be one longer than the positions (HF's
  // default of 20 new tokens is 21 with the start token, on a model of 20 positions too).
  if (new_tokens != -1)
    ENCORE_CHECK(new_tokens <= c.max_positions, invalid_argument,
                 "VitGpt2::caption: max_new_tokens = {} must be at most {} (the decoder's positions)", new_tokens,
                 c.max_positions);
  ENCORE_CHECK(options.max_length <= c.max_positions + 1, invalid_argument,
               "VitGpt2::caption: max_length {} must be at most {} (the decoder's {} positions, plus the last "
               "token, which is not fed back)",
               options.max_length, c.max_positions + 1, c.max_positions);
  const int per_image = generation_rows_per_item(options);
  const Tensor pixel_values = from_other_gpu(pixel_values_in, impl_->device);
  // On CUDA one caption at a time per device (core/device_lock.h): its plans record CUDA graphs
  // on the device's one stream. The token callback runs under this lock.
  const auto lock = detail::lock_device(impl_->device);
  Impl& m = *impl_;
  std::unique_ptr<EncoderPlan> encoder;
  const Tensor states = m.encode(pixel_values, encoder);
  const int batch = static_cast<int>(pixel_values.dim(0));
  std::unique_ptr<vitgpt2::Session> session = m.sessions.take([&](const vitgpt2::Session& s) {
    return s.fits(states.shape(), per_image, options.max_length);
  });
  if (session != nullptr)
    session->restart(states);
  else
    session = std::make_unique<vitgpt2::Session>(m.config, m.weights, m.dtype, m.plan_options, states,
                                                 per_image, options.max_length);
  m.encoders.give_back(std::move(encoder));  // the cross K/V are computed: the states may go
  const auto t1 = Clock::now();
  std::vector<Caption> out;
  // A failed or cancelled generation drops the session (its cache is mid-caption).
  for (GenerationResult& r : generate(*session, batch, options))
    out.push_back(Caption{std::move(r.ids), r.score, std::move(r.token_scores)});
  m.sessions.give_back(std::move(session));
  if (timings != nullptr) *timings = CaptionTimings{ms(t0, t1), ms(t1, Clock::now())};
  return out;
}

}  // namespace encore
