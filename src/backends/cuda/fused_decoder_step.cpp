// The host side of the fused decoder step: checks that a model fits the kernel, repacks its
// projections, plans shared memory, and launches one cooperative grid per step.
#include "backends/cuda/fused_decoder_step.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>

#include <fmt/format.h>

#include "backends/cuda/cooperative_grids.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/cuda_kernels.h"
#include "backends/cuda/runtime.h"
#include "kernels/cuda/fused_decoder_step_internal.h"

namespace encore::cuda {

using namespace fused;
using i64 = std::int64_t;

namespace {

i64 ceil_div(i64 a, i64 b) { return (a + b - 1) / b; }

template <typename... A>
std::string cat(const A&... a) {
  std::string s;
  ((s += fmt::format("{}", a)), ...);
  return s;
}

}  // namespace

// The transposed projections, kMatrices per layer, and the tensors they were made from (a pack is
// only used with the weights it was made from).
struct FusedDecoderPack {
  std::vector<Tensor> transposed;
  std::vector<const void*> sources;
};

struct FusedDecoderStep::Impl {
  CudaRuntime* rt = nullptr;
  FusedDecoderShape shape;
  FusedDecoderWeights w;
  std::shared_ptr<const FusedDecoderPack> pack;
  Tensor layer_args;           // LayerArgs[L] as bytes on the device
  Tensor h, q, att, mlp, partial, picks, barrier, tokens, trace;
  StepArgs args{};
  const void* kernel = nullptr;
  int grid = 0;
  std::size_t smem = 0;
};

namespace {

struct Plan {
  int d = 0, heads = 0, hd = 0, ffn = 0, vocab = 0, t_enc = 0, max_keys = 0, x_floats = 0;
  int dynamic_smem_max = 0;  // the device's opt-in shared memory less the kernel's static share
  int grid = 0, ring_bytes = 0;
  std::size_t smem = 0;
};

std::vector<const void*> pack_sources(const FusedDecoderWeights& w) {
  std::vector<const void*> out;
  for (const FusedDecoderLayer& l : w.layers)
    for (const Tensor* t : {&l.qkv_w, &l.proj_w, &l.xq_w, &l.xproj_w, &l.fc_w, &l.fc2_w}) out.push_back(t->data());
  return out;
}

// The step's cooperative grids per device: a refused size is not tried by later sessions.
CooperativeGrids g_grids;

std::string layout_reason(const FusedDecoderShape& sh, const FusedDecoderWeights& w, Plan& p) {
  if (!w.wte.defined() || !w.wte.device().is_cuda()) return "the weights are not on a CUDA device";
  const DType dt = w.wte.dtype();
  if (dt != DType::F16 && dt != DType::BF16) return cat("dtype ", dtype_name(dt), " (the fused step takes f16, bf16)");
  if (w.layers.empty() || w.layers.size() > static_cast<std::size_t>(kMaxLayers))
    return cat(w.layers.size(), " layers (the fused step takes 1..", kMaxLayers, ")");
  if (sh.rows < 1 || sh.rows > FusedDecoderStep::kMaxRows)
    return cat(sh.rows, " rows (the fused step takes 1..", FusedDecoderStep::kMaxRows, ")");
  if (sh.beams < 1 || sh.rows % sh.beams != 0) return cat(sh.rows, " rows are not a multiple of ", sh.beams, " beams");
  if (w.wte.rank() != 2) return "wte is not [V, D]";
  p.vocab = static_cast<int>(w.wte.dim(0));
  p.d = static_cast<int>(w.wte.dim(1));
  p.heads = sh.heads;
  if (p.heads < 1 || p.d % p.heads != 0) return cat("hidden size ", p.d, " is not a multiple of ", p.heads, " heads");
  p.hd = p.d / p.heads;
  // Power-of-two head dims from 8 (one 16-byte load per key) to 128: they divide the CTA evenly.
  if (p.hd < 8 || p.hd > 128 || (p.hd & (p.hd - 1)) != 0)
    return cat("head dim ", p.hd, " (the fused step takes 8, 16, 32, 64, 128)");
  const FusedDecoderLayer& l0 = w.layers[0];
  if (!l0.fc_w.defined() || l0.fc_w.rank() != 2) return "fc_w is not [D, F]";
  p.ffn = static_cast<int>(l0.fc_w.dim(1));
  if (p.d % 8 != 0 || p.ffn % 8 != 0) return cat("hidden ", p.d, " / MLP ", p.ffn, " sizes are not multiples of 8");
  if (p.d > kMaxHidden) return cat("hidden size ", p.d, " (the fused step takes up to ", kMaxHidden, ")");
  if (!l0.cross_kv.defined() || l0.cross_kv.rank() != 3) return "cross keys/values are not [images, T, 2D]";
  p.t_enc = static_cast<int>(l0.cross_kv.dim(1));
  if (p.t_enc < 1) return "cross keys/values of 0 encoder tokens";  // the softmax would divide 0 by 0
  const i64 d = p.d, f = p.ffn;
  // Dense, 16-byte aligned (the kernel reads 16 bytes at a time and bulk-copies slices).
  auto same = [&](const Tensor& t, const Shape& want) {
    return t.defined() && t.device() == w.wte.device() && t.dtype() == dt && t.is_contiguous() && t.shape() == want &&
           reinterpret_cast<std::uintptr_t>(t.data()) % 16 == 0;
  };
  if (!same(w.wte, {p.vocab, d}) || !same(w.wpe, {w.wpe.defined() ? w.wpe.dim(0) : 0, d}) || !same(w.ln_f_w, {d}) ||
      !same(w.ln_f_b, {d}))
    return "wte / wpe / ln_f are not dense, 16-byte aligned [V, D] / [P, D] / [D] tensors of one dtype";
  const Tensor& kc0 = l0.k_cache;
  if (!kc0.defined() || kc0.rank() != 4 || kc0.dim(1) != p.heads || kc0.dim(3) != p.hd) return "the KV cache is not [blocks, H, block, D/H]";
  const i64 blocks = kc0.dim(0), bs = kc0.dim(2);
  const Shape cache{blocks, p.heads, bs, p.hd};
  const Shape cross{sh.rows / sh.beams, p.t_enc, 2 * d};
  for (std::size_t i = 0; i < w.layers.size(); ++i) {
    const FusedDecoderLayer& l = w.layers[i];
    const bool ok = same(l.ln1_w, {d}) && same(l.ln1_b, {d}) && same(l.qkv_w, {d, 3 * d}) && same(l.qkv_b, {3 * d}) &&
                    same(l.proj_w, {d, d}) && same(l.proj_b, {d}) && same(l.lnx_w, {d}) && same(l.lnx_b, {d}) &&
                    same(l.xq_w, {d, d}) && same(l.xq_b, {d}) && same(l.xproj_w, {d, d}) && same(l.xproj_b, {d}) &&
                    same(l.ln2_w, {d}) && same(l.ln2_b, {d}) && same(l.fc_w, {d, f}) && same(l.fc_b, {f}) &&
                    same(l.fc2_w, {f, d}) && same(l.fc2_b, {d}) && same(l.k_cache, cache) && same(l.v_cache, cache) &&
                    same(l.cross_kv, cross);
    if (!ok) return cat("layer ", i, ": a tensor is not of the expected shape, dtype, device or layout");
  }
  const Tensor& tab = w.block_table;
  if (!tab.defined() || tab.dtype() != DType::I32 || tab.rank() != 2 || tab.dim(0) != sh.rows || !tab.is_contiguous() ||
      tab.device() != w.wte.device() || !w.lengths.defined() || w.lengths.dtype() != DType::I32 ||
      w.lengths.rank() != 1 || w.lengths.numel() != sh.rows || !w.lengths.is_contiguous() ||
      w.lengths.device() != w.wte.device())
    return "block table / lengths are not contiguous i32 [rows, max_blocks] / [rows] on the weights' device";
  if (tab.dim(1) > kMaxTableBlocks)
    return cat("a block table of ", tab.dim(1), " blocks per row (the fused step takes up to ", kMaxTableBlocks, ")");
  p.max_keys = static_cast<int>(std::max<i64>(tab.dim(1) * bs, p.t_enc));

  CudaRuntime& rt = CudaRuntime::get(w.wte.device());
  if (rt.sm() < 90) return cat("compute capability ", rt.sm() / 10, ".", rt.sm() % 10, " (the fused step needs 9.0)");
  DeviceGuard guard(rt.ordinal());  // the function attributes below are those of the current device
  int cooperative = 0;
  ENCORE_CUDA_CHECK(cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, rt.ordinal()));
  if (cooperative == 0) return "the device does not take cooperative launches";
  cudaFuncAttributes attributes{};
  ENCORE_CUDA_CHECK(cudaFuncGetAttributes(&attributes, step_kernel(dt)));
  if (attributes.binaryVersion < 90)  // e.g. a build for compute_80 PTX: the kernel body is empty there
    return cat("this build has no sm_90 code for the fused step (its code is for compute capability ",
               attributes.binaryVersion / 10, ".", attributes.binaryVersion % 10, ")");
  int optin = 0;
  ENCORE_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, rt.ordinal()));
  p.dynamic_smem_max = optin - static_cast<int>(attributes.sharedSizeBytes);
  p.grid = rt.multiprocessors();
  if (g_grids.refused(rt.ordinal()) <= p.grid)
    return cat("a cooperative grid of ", g_grids.refused(rt.ordinal()), " CTAs was refused on this device before (",
               p.grid, " needed)");
  if (static_cast<i64>(std::max<i64>({3 * d, f, p.vocab})) * p.grid >= (i64{1} << 31))
    return cat("a vocabulary of ", p.vocab, " over ", p.grid, " SMs overflows 32-bit column arithmetic");
  if (ceil_div(std::max<i64>(3 * d, f), p.grid) > kMaxColumns)
    return cat("projections of ", std::max<i64>(3 * d, f), " columns over ", p.grid, " SMs (the fused step takes up to ",
               kMaxColumns, " per SM)");
  const i64 es = static_cast<i64>(dtype_size(dt));
  p.x_floats = static_cast<int>(sh.rows * std::max(d, f));
  const i64 fixed = ceil_div(static_cast<i64>(shared_header_bytes()), 128) * 128 + ceil_div(p.x_floats * 4, 128) * 128 + ceil_div(p.max_keys * 4, 128) * 128;
  const i64 ring = (static_cast<i64>(optin) - fixed) / 128 * 128;
  const i64 max_slice = std::max({ceil_div(3 * d, p.grid) * d, ceil_div(f, p.grid) * d, ceil_div(d, p.grid) * f}) * es;
  if (ring < max_slice)
    return cat("shared memory: ", optin, " bytes per CTA hold activations of ", fixed, " bytes but not a ", max_slice,
                   "-byte weight slice");
  p.ring_bytes = static_cast<int>(std::min<i64>(ring, INT_MAX / 2));
  p.smem = static_cast<std::size_t>(fixed + p.ring_bytes);
  return {};
}

}  // namespace

std::string FusedDecoderStep::unsupported_reason(const FusedDecoderShape& shape, const FusedDecoderWeights& weights) {
  Plan p;
  return layout_reason(shape, weights, p);
}

std::shared_ptr<const FusedDecoderPack> FusedDecoderStep::pack(const FusedDecoderWeights& weights) {
  ENCORE_CHECK(weights.wte.defined() && weights.wte.device().is_cuda(), invalid_argument,
               "fused decoder step: the weights to pack are not on a CUDA device");
  CudaRuntime& rt = CudaRuntime::get(weights.wte.device());
  const CudaContext ctx = rt.context();
  auto out = std::make_shared<FusedDecoderPack>();
  for (const FusedDecoderLayer& l : weights.layers)
    for (const Tensor* w : {&l.qkv_w, &l.proj_w, &l.xq_w, &l.xproj_w, &l.fc_w, &l.fc2_w}) {
      Tensor t = Tensor::empty({w->dim(1), w->dim(0)}, w->dtype(), rt.device());
      copy(w->transpose(0, 1), t, ctx);
      out->transposed.push_back(std::move(t));
    }
  out->sources = pack_sources(weights);
  return out;
}

FusedDecoderStep::FusedDecoderStep(const FusedDecoderShape& shape, FusedDecoderWeights weights,
                                   std::shared_ptr<const FusedDecoderPack> pack)
    : impl_(std::make_unique<Impl>()) {
  Plan p;
  const std::string why = layout_reason(shape, weights, p);
  ENCORE_CHECK(why.empty(), unsupported, "fused decoder step: {}", why);
  Impl& m = *impl_;
  m.rt = &CudaRuntime::get(weights.wte.device());
  m.shape = shape;
  m.w = std::move(weights);
  const Device dev = m.rt->device();
  const DType dt = m.w.wte.dtype();

  m.pack = pack != nullptr ? std::move(pack) : FusedDecoderStep::pack(m.w);
  ENCORE_CHECK(m.pack->sources == pack_sources(m.w), invalid_argument,
               "fused decoder step: the pack given was made from other weights");
  std::vector<LayerArgs> host(m.w.layers.size());
  for (std::size_t i = 0; i < m.w.layers.size(); ++i) {
    const FusedDecoderLayer& l = m.w.layers[i];
    LayerArgs& la = host[i];
    for (int k = 0; k < kMatrices; ++k) la.w[k] = m.pack->transposed[i * kMatrices + k].data();
    la.ln1_w = l.ln1_w.data(), la.ln1_b = l.ln1_b.data(), la.qkv_b = l.qkv_b.data(), la.proj_b = l.proj_b.data();
    la.lnx_w = l.lnx_w.data(), la.lnx_b = l.lnx_b.data(), la.xq_b = l.xq_b.data(), la.xproj_b = l.xproj_b.data();
    la.ln2_w = l.ln2_w.data(), la.ln2_b = l.ln2_b.data(), la.fc_b = l.fc_b.data(), la.fc2_b = l.fc2_b.data();
    la.k_cache = l.k_cache.data(), la.v_cache = l.v_cache.data(), la.cross_kv = l.cross_kv.data();
  }
  const std::size_t arg_bytes = host.size() * sizeof(LayerArgs);
  m.layer_args = Tensor::empty({static_cast<i64>(arg_bytes)}, DType::U8, dev);
  m.rt->copy(m.layer_args.data(), dev, host.data(), Device::cpu(), arg_bytes);

  const i64 rows = shape.rows;
  m.h = Tensor::empty({rows, p.d}, DType::F32, dev);
  m.q = Tensor::empty({rows, p.d}, DType::F32, dev);
  m.att = Tensor::empty({rows, p.d}, DType::F32, dev);
  m.mlp = Tensor::empty({rows, p.ffn}, DType::F32, dev);
  m.partial = Tensor::empty({static_cast<i64>(p.grid) * rows * static_cast<i64>(sizeof(Partial) / 4)}, DType::F32, dev);
  m.picks = Tensor::empty({rows * 4}, DType::I32, dev);
  m.barrier = Tensor::zeros({1}, DType::I64, dev);
  m.tokens = Tensor::empty({rows, 2}, DType::I32, dev);
  log_probs_ = Tensor::empty({rows, p.vocab}, DType::F32, dev);

  StepArgs& a = m.args;
  a.layers = static_cast<const LayerArgs*>(m.layer_args.data());
  a.num_layers = static_cast<int>(m.w.layers.size());
  a.wte = m.w.wte.data(), a.wpe = m.w.wpe.data(), a.lnf_w = m.w.ln_f_w.data(), a.lnf_b = m.w.ln_f_b.data();
  a.tokens = m.tokens.data_ptr<std::int32_t>();
  a.table = m.w.block_table.data_ptr<std::int32_t>();
  a.lengths = m.w.lengths.data_ptr<std::int32_t>();
  a.max_blocks = static_cast<int>(m.w.block_table.dim(1));
  a.block_size = static_cast<int>(m.w.layers[0].k_cache.dim(2));
  a.rows = shape.rows, a.beams = shape.beams, a.d = p.d, a.heads = p.heads, a.hd = p.hd, a.ffn = p.ffn;
  a.vocab = p.vocab, a.t_enc = p.t_enc;
  a.eps = shape.layer_norm_eps;
  a.scale = 1.0f / std::sqrt(static_cast<float>(p.hd));
  a.gelu_tanh = shape.gelu_tanh ? 1 : 0;
  a.h = m.h.data_ptr<float>(), a.q = m.q.data_ptr<float>(), a.att = m.att.data_ptr<float>(), a.mlp = m.mlp.data_ptr<float>();
  a.logits = log_probs_.data_ptr<float>();
  a.partial = static_cast<Partial*>(m.partial.data());
  a.picks = static_cast<FusedGreedyPick*>(m.picks.data());
  a.barrier = static_cast<unsigned long long*>(m.barrier.data());
  a.x_floats = p.x_floats, a.max_keys = p.max_keys, a.ring_bytes = p.ring_bytes;

  m.kernel = step_kernel(dt);
  m.grid = p.grid;
  m.smem = p.smem;
  DeviceGuard guard_dev(m.rt->ordinal());
  // The limit is the kernel's, shared by every instance on the device: set it to the most any
  // instance can ask for, so that building one never lowers it under another's launch.
  ENCORE_CHECK(static_cast<i64>(m.smem) <= p.dynamic_smem_max, unsupported,
               "fused decoder step: {} bytes of shared memory asked, {} available per CTA", m.smem, p.dynamic_smem_max);
  ENCORE_CUDA_CHECK(cudaFuncSetAttribute(m.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, p.dynamic_smem_max));
  int per_sm = 0;
  ENCORE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, m.kernel, kThreads, m.smem));
  ENCORE_CHECK(per_sm >= 1, unsupported, "fused decoder step: a {}-thread CTA with {} bytes of shared memory does not fit on an SM",
               kThreads, m.smem);
}

FusedDecoderStep::~FusedDecoderStep() = default;

void FusedDecoderStep::run(std::span<const std::int32_t> tokens, int eos_token_id, bool log_probs) {
  Impl& m = *impl_;
  const int rows = m.shape.rows;
  ENCORE_CHECK(static_cast<int>(tokens.size()) == 2 * rows, invalid_argument,
               "fused decoder step: {} token/position values for {} rows (expected {})", tokens.size(), rows, 2 * rows);
  const i64 positions = m.w.wpe.dim(0), capacity = static_cast<i64>(m.args.max_blocks) * m.args.block_size;
  for (int r = 0; r < rows; ++r) {
    const std::int32_t id = tokens[2 * r], pos = tokens[2 * r + 1];
    ENCORE_CHECK(id >= 0 && id < m.args.vocab, invalid_argument, "fused decoder step: token {} is outside the vocabulary of {}",
                 id, m.args.vocab);
    ENCORE_CHECK(pos >= 0 && pos < positions && pos < capacity, invalid_argument,
                 "fused decoder step: position {} is outside the {} positions the model and the cache hold", pos,
                 std::min(positions, capacity));
  }
  const Device dev = m.rt->device();
  m.rt->copy(m.tokens.data(), dev, tokens.data(), Device::cpu(), tokens.size_bytes());
  StepArgs a = m.args;
  a.trace = m.trace.defined() ? static_cast<unsigned long long*>(m.trace.data()) : nullptr;
  a.eos = eos_token_id;
  a.write_log_probs = log_probs ? 1 : 0;
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute attr[1] = {};
  attr[0].id = cudaLaunchAttributeCooperative;  // all CTAs co-resident, or the launch fails
  attr[0].val.cooperative = 1;
  cfg.gridDim = dim3(static_cast<unsigned>(m.grid));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = m.smem;
  cfg.stream = m.rt->stream();
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  void* params[] = {&a};
  DeviceGuard guard(m.rt->ordinal());
  const cudaError_t err = cudaLaunchKernelExC(&cfg, m.kernel, params);
  if (err == cudaErrorCooperativeLaunchTooLarge) {
    (void)cudaGetLastError();  // a launch-configuration error: nothing ran, the context is fine
    g_grids.record(m.rt->ordinal(), m.grid, false);
    detail::fail(ErrorCode::unsupported,
                 "fused decoder step: this GPU context cannot hold {} co-resident CTAs of {} threads and {} bytes of "
                 "shared memory (an MPS SM limit or a green context?)",
                 m.grid, kThreads, m.smem);
  }
  ENCORE_CUDA_CHECK(err);
}

void FusedDecoderStep::set_grid_for_testing(int ctas) {
  // 512-thread CTAs fit at most 4 per SM: a grid above 4 per SM can never be co-resident, so the
  // kernel never runs with a grid its partition was not made for.
  ENCORE_CHECK(ctas > 4 * impl_->grid, invalid_argument,
               "fused decoder step: a test grid of {} CTAs could be co-resident (more than {} needed)", ctas,
               4 * impl_->grid);
  impl_->grid = ctas;
}

std::vector<FusedGreedyPick> FusedDecoderStep::picks() {
  Impl& m = *impl_;
  std::vector<FusedGreedyPick> out(static_cast<std::size_t>(m.shape.rows));
  m.rt->copy(out.data(), Device::cpu(), m.picks.data(), m.rt->device(), out.size() * sizeof(FusedGreedyPick));
  return out;
}

int FusedDecoderStep::barriers() const noexcept { return barriers_per_step(impl_->args.num_layers); }
int FusedDecoderStep::ctas() const noexcept { return impl_->grid; }

void FusedDecoderStep::set_profiling(bool on) {
  Impl& m = *impl_;
  if (!on) {
    m.trace = Tensor();
    return;
  }
  if (!m.trace.defined())
    m.trace = Tensor::zeros({static_cast<i64>(m.grid) * barriers() * kTraceValues}, DType::I64, m.rt->device());
}

std::vector<std::uint64_t> FusedDecoderStep::profile() {
  Impl& m = *impl_;
  if (!m.trace.defined()) return {};
  std::vector<std::uint64_t> out(static_cast<std::size_t>(m.trace.numel()));
  m.rt->copy(out.data(), Device::cpu(), m.trace.data(), m.rt->device(), out.size() * sizeof(std::uint64_t));
  return out;
}

}  // namespace encore::cuda
