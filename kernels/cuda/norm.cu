// Normalisation kernels on CUDA: layer_norm (standard and CASS-NAT's unbiased-std kind), the fused
// add_layer_norm, rms_norm, group_norm and l2_normalize.
//
// Row norms (layer/rms): one block per row, statistics in f32 and two-pass (mean, then squared
// deviations: no E[x^2] - mean^2 cancellation), the row cached in shared memory as f32 when it fits
// (else re-read), 16-byte vector loads when the row is contiguous and aligned. group_norm: one
// block per (batch, group). l2_normalize: a block per line, or a thread per line when the axis is
// strided and lines are many (coalesced across threads).
#include <cmath>

#include "kernels/cuda/kernel_common.cuh"

namespace encore::cuda {

using namespace kc;

namespace {

enum NormMode : int { kLayerNorm, kLayerNormUnbiased, kRmsNorm };

struct RowNormParams {
  Indexer<4> rows;  // row starts of x, residual, sum, y
  i64 count = 0, C = 0;
  i64 step[4] = {};  // last-dim strides
  const void* x = nullptr;
  const void* r = nullptr;
  void* sum = nullptr;
  void* y = nullptr;
  int tx = 0, tr = 0, ts = 0, ty = 0;
  const void* g = nullptr;
  const void* b = nullptr;
  int tg = 0, tb = 0;
  i64 gs = 0, bs = 0;
  int mode = kLayerNorm;
  float eps = 0.0f;
  bool add = false, cache = false;
};

constexpr i64 kCacheFloats = 11 * 1024;  // rows up to 44 KiB of f32 stay in shared memory (+ static: < 48 KiB)

/// Loads up to 8 consecutive elements at p[i] (16 bytes when vec: 4 f32 or 8 f16/bf16).
__device__ __forceinline__ int load_chunk(const void* p, i64 i, i64 step, int dt, bool vec, float* v) {
  if (!vec) {
    v[0] = load_f(p, i * step, dt);
    return 1;
  }
  if (dt == kF32) {
    const float4 q = *reinterpret_cast<const float4*>(static_cast<const float*>(p) + i);
    v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
    return 4;
  }
  const uint4 q = *reinterpret_cast<const uint4*>(static_cast<const std::uint16_t*>(p) + i);
  const unsigned w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if (dt == kF16) {
      const __half2 h = *reinterpret_cast<const __half2*>(&w[k]);
      v[2 * k] = __low2float(h), v[2 * k + 1] = __high2float(h);
    } else {
      const __nv_bfloat162 h = *reinterpret_cast<const __nv_bfloat162*>(&w[k]);
      v[2 * k] = __low2float(h), v[2 * k + 1] = __high2float(h);
    }
  }
  return 8;
}

__device__ __forceinline__ bool aligned16(const void* p, i64 elem, int es) {
  return ((reinterpret_cast<std::uintptr_t>(p) + static_cast<std::uintptr_t>(elem * es)) & 15u) == 0;
}

__global__ void row_norm_kernel(const RowNormParams p) {
  extern __shared__ float cache[];
  __shared__ float red[32];
  pdl::begin();
  const i64 C = p.C;
  for (i64 row = blockIdx.x; row < p.count; row += gridDim.x) {
    i64 off[4];
    p.rows.offsets(row, off);
    const void* xr = static_cast<const char*>(p.x) + off[0] * (p.tx == kF32 ? 4 : 2);
    const void* rr = p.add ? static_cast<const char*>(p.r) + off[1] * (p.tr == kF32 ? 4 : 2) : nullptr;
    const int es = p.tx == kF32 ? 4 : 2, V = 16 / es;
    const bool vec = p.step[0] == 1 && C % V == 0 && aligned16(xr, 0, 1) &&
                     (!p.add || (p.tr == p.tx && p.step[1] == 1 && aligned16(rr, 0, 1)));
    // The element values the statistics see: x (+ residual, rounded to the sum's dtype).
    auto chunk = [&](i64 c, float* v) {
      const int n = load_chunk(xr, c, p.step[0], p.tx, vec, v);
      if (p.add) {
        float w[8];
        load_chunk(rr, c, p.step[1], p.tr, vec, w);
        for (int k = 0; k < n; ++k) v[k] = round_to(v[k] + w[k], p.ts);
      }
      return n;
    };
    // Passes 2 and 3 without the cache: with a residual they re-read the sum pass 1 stored (the
    // rounded x + r), never x and r again, as the sum may be written over either of them.
    auto again = [&](i64 c, float* v) {
      if (!p.add) return chunk(c, v);
      const int n = vec ? V : 1;
      for (int k = 0; k < n; ++k) v[k] = load_f(p.sum, off[2] + (c + k) * p.step[2], p.ts);
      return n;
    };
    const i64 stride = static_cast<i64>(blockDim.x) * (vec ? V : 1);
    // Pass 1: sum (or sum of squares for RMS); write the residual sum; fill the cache.
    float acc = 0.0f;
    for (i64 c = threadIdx.x * (vec ? V : 1); c < C; c += stride) {
      float v[8];
      const int n = chunk(c, v);
      for (int k = 0; k < n; ++k) {
        acc += p.mode == kRmsNorm ? v[k] * v[k] : v[k];
        if (p.add) store_f(p.sum, off[2] + (c + k) * p.step[2], p.ts, v[k]);
        if (p.cache) cache[c + k] = v[k];
      }
    }
    const float total = block_sum(acc, red);
    float mean = 0.0f;
    double rstd;
    if (p.mode == kRmsNorm) {
      rstd = 1.0 / sqrt(static_cast<double>(total) / static_cast<double>(C) + p.eps);
    } else {
      mean = total / static_cast<float>(C);
      float m2 = 0.0f;  // pass 2: squared deviations
      for (i64 c = threadIdx.x * (vec ? V : 1); c < C; c += stride) {
        float v[8];
        const int n = p.cache ? (vec ? V : 1) : again(c, v);
        for (int k = 0; k < n; ++k) {
          const float d = (p.cache ? cache[c + k] : v[k]) - mean;
          m2 += d * d;
        }
      }
      const double s2 = block_sum(m2, red);
      if (p.mode == kLayerNorm) rstd = 1.0 / sqrt(s2 / static_cast<double>(C) + p.eps);
      else rstd = 1.0 / (sqrt(s2 / static_cast<double>(C - 1)) + p.eps);  // C == 1: NaN, like torch.std
    }
    const float rs = static_cast<float>(rstd);
    // Pass 3: normalise and store.
    for (i64 c = threadIdx.x * (vec ? V : 1); c < C; c += stride) {
      float v[8];
      const int n = p.cache ? (vec ? V : 1) : again(c, v);
      for (int k = 0; k < n; ++k) {
        const i64 e = c + k;
        float o = ((p.cache ? cache[e] : v[k]) - mean) * rs;
        if (p.g) o *= load_f(p.g, e * p.gs, p.tg);
        if (p.b) o += load_f(p.b, e * p.bs, p.tb);
        store_f(p.y, off[3] + e * p.step[3], p.ty, o);
      }
    }
    __syncthreads();  // the cache is reused by the next row
  }
}

void set_param(const char* op, const char* what, const Tensor& t, i64 c, const void*& ptr, int& dt, i64& stride) {
  if (!t.defined()) return;
  check_float(op, what, t);
  ENCORE_CU_CHECK(t.rank() == 1 && t.shape()[0] == c, invalid_argument, op, ": ", what, " has shape ",
                  t.shape().str(), ", expected [", c, "]");
  ptr = t.data();
  dt = code(t.dtype());
  stride = t.strides()[0];
}

void row_norm(const char* op, const Tensor& x, const Tensor* residual, const Tensor* sum, const Tensor& gamma,
              const Tensor* beta, int mode, float eps, const Tensor& y, const CudaContext& ctx) {
  check_float(op, "x", x);
  check_float(op, "y", y);
  check_shape(op, "y", y, x.shape());
  if (residual) {
    check_float(op, "residual", *residual);
    check_float(op, "sum", *sum);
    check_shape(op, "residual", *residual, x.shape());
    check_shape(op, "sum", *sum, x.shape());
  }
  ENCORE_CU_CHECK(x.rank() >= 1, invalid_argument, op, ": x must have at least one dimension");
  RowNormParams p;
  p.C = x.shape()[x.rank() - 1];
  set_param(op, "gamma", gamma, p.C, p.g, p.tg, p.gs);
  if (beta) set_param(op, "beta", *beta, p.C, p.b, p.tb, p.bs);
  if (x.numel() == 0) return;
  Launch l(ctx, op);
  const int last = x.rank() - 1;
  const Tensor& r = residual ? *residual : x;
  const Tensor& s = sum ? *sum : y;
  const Shape outer = drop_dim(x.shape(), last);
  p.rows = make_indexer<4>(outer, std::array<Shape, 4>{drop_dim(x.strides(), last), drop_dim(r.strides(), last),
                                                       drop_dim(s.strides(), last), drop_dim(y.strides(), last)});
  p.count = outer.numel();
  p.step[0] = x.strides()[last], p.step[1] = r.strides()[last], p.step[2] = s.strides()[last];
  p.step[3] = y.strides()[last];
  p.x = x.data(), p.r = r.data(), p.sum = s.data(), p.y = y.data();
  p.tx = code(x.dtype()), p.tr = code(r.dtype()), p.ts = code(s.dtype()), p.ty = code(y.dtype());
  p.mode = mode;
  p.eps = eps;
  p.add = residual != nullptr;
  p.cache = p.C <= kCacheFloats;
  const int threads = threads_for_row(p.C, 8, 512);
  const std::size_t smem = p.cache ? static_cast<std::size_t>(p.C) * sizeof(float) : 0;
  const unsigned blocks = static_cast<unsigned>(std::min<i64>(p.count, 1 << 20));
  l.kernel(op, row_norm_kernel, blocks, threads, smem, p);
}

// ---- group_norm ---------------------------------------------------------------------------------------

struct GroupNormParams {
  Indexer<2> sp;  // spatial dims of x and y
  i64 S = 0, cpg = 0, groups = 0;
  i64 xs0 = 0, xs1 = 0, ys0 = 0, ys1 = 0;
  const void* x = nullptr;
  void* y = nullptr;
  int tx = 0, ty = 0;
  const void* g = nullptr;
  const void* b = nullptr;
  int tg = 0, tb = 0;
  i64 gs = 0, bs = 0;
  float eps = 0.0f;
};

__global__ void group_norm_kernel(const GroupNormParams p) {
  __shared__ float red[32];
  const i64 n = p.cpg * p.S;
  const i64 bi = blockIdx.x / p.groups, c0 = (blockIdx.x % p.groups) * p.cpg;
  auto offsets = [&](i64 e, i64& xo, i64& yo) {
    const i64 c = c0 + e / p.S;
    i64 o[2];
    p.sp.offsets(e % p.S, o);
    xo = bi * p.xs0 + c * p.xs1 + o[0];
    yo = bi * p.ys0 + c * p.ys1 + o[1];
    return c;
  };
  float acc = 0.0f;
  for (i64 e = threadIdx.x; e < n; e += blockDim.x) {
    i64 xo, yo;
    offsets(e, xo, yo);
    acc += load_f(p.x, xo, p.tx);
  }
  const float mean = static_cast<float>(static_cast<double>(block_sum(acc, red)) / static_cast<double>(n));
  float m2 = 0.0f;
  for (i64 e = threadIdx.x; e < n; e += blockDim.x) {
    i64 xo, yo;
    offsets(e, xo, yo);
    const float d = load_f(p.x, xo, p.tx) - mean;
    m2 += d * d;
  }
  const double rstd = 1.0 / sqrt(static_cast<double>(block_sum(m2, red)) / static_cast<double>(n) + p.eps);
  for (i64 e = threadIdx.x; e < n; e += blockDim.x) {
    i64 xo, yo;
    const i64 c = offsets(e, xo, yo);
    const float k = static_cast<float>(rstd * (p.g ? load_f(p.g, c * p.gs, p.tg) : 1.0f));
    float o = (load_f(p.x, xo, p.tx) - mean) * k;
    if (p.b) o += load_f(p.b, c * p.bs, p.tb);
    store_f(p.y, yo, p.ty, o);
  }
}

// ---- l2_normalize -----------------------------------------------------------------------------------

struct LineParams {
  Lines<2> L;
  const void* x = nullptr;
  void* y = nullptr;
  int tx = 0, ty = 0;
  float eps = 0.0f;
  bool per_thread = false;
};

__global__ void l2_kernel(const LineParams p) {
  __shared__ float red[32];
  const i64 first = p.per_thread ? blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x : blockIdx.x;
  const i64 step = p.per_thread ? static_cast<i64>(gridDim.x) * blockDim.x : gridDim.x;
  const i64 t0 = p.per_thread ? 0 : threadIdx.x, ts = p.per_thread ? 1 : blockDim.x;
  // Block per line: every thread of a block runs the same iterations (block_sum synchronises).
  for (i64 line = first; line < p.L.count; line += step) {
    i64 off[2];
    p.L.ix.offsets(line, off);
    float ss = 0.0f;
    for (i64 i = t0; i < p.L.len; i += ts) {
      const float v = load_f(p.x, off[0] + i * p.L.step[0], p.tx);
      ss += v * v;
    }
    if (!p.per_thread) ss = block_sum(ss, red);
    // eps = 0: a zero vector divides 0 by 0 (NaN), like Segmenter's x / x.norm().
    const double norm = sqrt(static_cast<double>(ss));  // NaN stays NaN (fmax would drop it)
    const double denom = norm < static_cast<double>(p.eps) ? static_cast<double>(p.eps) : norm;
    const float inv = static_cast<float>(1.0 / denom);
    for (i64 i = t0; i < p.L.len; i += ts)
      store_f(p.y, off[1] + i * p.L.step[1], p.ty, load_f(p.x, off[0] + i * p.L.step[0], p.tx) * inv);
  }
}

}  // namespace

void layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const LayerNormAttrs& attrs, const Tensor& y,
                const CudaContext& ctx) {
  row_norm("layer_norm", x, nullptr, nullptr, gamma, &beta,
           attrs.kind == LayerNormKind::standard ? kLayerNorm : kLayerNormUnbiased, attrs.eps, y, ctx);
}

void add_layer_norm(const Tensor& x, const Tensor& residual, const Tensor& gamma, const Tensor& beta,
                    const LayerNormAttrs& attrs, const Tensor& sum, const Tensor& y, const CudaContext& ctx) {
  row_norm("add_layer_norm", x, &residual, &sum, gamma, &beta,
           attrs.kind == LayerNormKind::standard ? kLayerNorm : kLayerNormUnbiased, attrs.eps, y, ctx);
}

void rms_norm(const Tensor& x, const Tensor& gamma, const RmsNormAttrs& attrs, const Tensor& y,
              const CudaContext& ctx) {
  row_norm("rms_norm", x, nullptr, nullptr, gamma, nullptr, kRmsNorm, attrs.eps, y, ctx);
}

void group_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const GroupNormAttrs& attrs, const Tensor& y,
                const CudaContext& ctx) {
  const char* op = "group_norm";
  check_float(op, "x", x);
  check_float(op, "y", y);
  check_shape(op, "y", y, x.shape());
  ENCORE_CU_CHECK(x.rank() >= 2, invalid_argument, "group_norm: x must be [B, C, *], got ", x.shape().str());
  const i64 batch = x.shape()[0], ch = x.shape()[1], groups = attrs.groups;
  ENCORE_CU_CHECK(groups >= 1 && ch % groups == 0, invalid_argument, "group_norm: ", ch,
                  " channels do not split into ", groups, " groups");
  GroupNormParams p;
  set_param(op, "gamma", gamma, ch, p.g, p.tg, p.gs);
  set_param(op, "beta", beta, ch, p.b, p.tb, p.bs);
  if (x.numel() == 0) return;
  Launch l(ctx, op);
  Shape spatial, xs, ys;
  for (int d = 2; d < x.rank(); ++d) {
    spatial.push_back(x.shape()[d]);
    xs.push_back(x.strides()[d]);
    ys.push_back(y.strides()[d]);
  }
  p.sp = make_indexer<2>(spatial, std::array<Shape, 2>{xs, ys});
  p.S = spatial.numel();
  p.cpg = ch / groups;
  p.groups = groups;
  p.xs0 = x.strides()[0], p.xs1 = x.strides()[1], p.ys0 = y.strides()[0], p.ys1 = y.strides()[1];
  p.x = x.data(), p.y = y.data();
  p.tx = code(x.dtype()), p.ty = code(y.dtype());
  p.eps = attrs.eps;
  ENCORE_CU_CHECK(batch * groups < (i64{1} << 31), unsupported, "group_norm: ", batch * groups,
                  " (batch x groups) blocks are too many");
  group_norm_kernel<<<static_cast<unsigned>(batch * groups), threads_for_row(p.cpg * p.S, 4, 1024), 0, l.stream>>>(p);
  check_launch(op);
}

void l2_normalize(const Tensor& x, const L2NormAttrs& attrs, const Tensor& y, const CudaContext& ctx) {
  check_float("l2_normalize", "x", x);
  check_float("l2_normalize", "y", y);
  check_shape("l2_normalize", "y", y, x.shape());
  const int axis = normalize_axis(attrs.axis, x.rank(), "l2_normalize axis");
  if (x.numel() == 0) return;
  Launch l(ctx, "l2_normalize");
  LineParams p;
  p.L = make_lines<2>({&x, &y}, axis);
  p.x = x.data(), p.y = y.data();
  p.tx = code(x.dtype()), p.ty = code(y.dtype());
  p.eps = attrs.eps;
  p.per_thread = p.L.step[0] != 1 && p.L.count >= 1024;
  if (p.per_thread) {
    l2_kernel<<<blocks_for(p.L.count), kThreads, 0, l.stream>>>(p);
  } else {
    const unsigned blocks = static_cast<unsigned>(std::min<i64>(p.L.count, 1 << 20));
    l2_kernel<<<blocks, threads_for_row(p.L.len, 4, 512), 0, l.stream>>>(p);
  }
  check_launch("l2_normalize");
}

}  // namespace encore::cuda
