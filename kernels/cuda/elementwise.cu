// Pointwise and data-movement CUDA kernels: activation, binary (NumPy broadcasting), scale, glu,
// cast, copy, concat, pad, gather, scatter_add, embedding.
//
// Every kernel here is one grid-stride loop over the output (or source) elements; Indexer<N> maps
// the flat index to per-operand offsets, which is a plain multiply for contiguous tensors. dtypes
// are decoded at run time (one instantiation per kernel), math is f32 and results are rounded once.
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "kernels/common/index_checks.h"
#include "kernels/cuda/kernel_common.cuh"

namespace encore::cuda {
namespace kc {

// ---- index validation (declared in kernel_common.cuh) ---------------------------------------------

namespace {
bool index_checks_enabled(cudaStream_t s) {
  static const bool off = [] {
    const char* e = std::getenv("ENCORE_CUDA_UNCHECKED_INDICES");
    return e != nullptr && std::strcmp(e, "1") == 0;
  }();
  if (off) return false;
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  check_cuda(cudaStreamIsCapturing(s, &st), "cudaStreamIsCapturing");
  return st == cudaStreamCaptureStatusNone;
}
}  // namespace

IndexCheck::IndexCheck(Launch& l) : l_(l) {
  if (!index_checks_enabled(l.stream)) return;
  buf_ = l.rt.scratch(3 * sizeof(unsigned long long));
  check_cuda(cudaMemsetAsync(buf_.data(), 0, 3 * sizeof(unsigned long long), l.stream), "cudaMemsetAsync");
}

void IndexCheck::check(const char* op, const char* what, const std::string& tail) {
  if (buf_.data() == nullptr) return;
  unsigned long long rec[3] = {0, 0, 0};
  check_cuda(cudaMemcpyAsync(rec, buf_.data(), sizeof(rec), cudaMemcpyDeviceToHost, l_.stream), "cudaMemcpyAsync");
  check_cuda(cudaStreamSynchronize(l_.stream), "cudaStreamSynchronize");
  if (rec[0] != 0)
    fail(ErrorCode::invalid_argument, op, ": ", what, " ", static_cast<i64>(rec[1]), " at position ",
         static_cast<i64>(rec[2]), " ", tail);
}

}  // namespace kc

using namespace kc;

namespace {

// ---- pointwise math ---------------------------------------------------------------------------------

enum PwOp : int { kPwAct, kPwScale, kPwBinary, kPwGlu };

struct PwParams {
  Indexer<3> ix;  // a, b, y
  i64 n = 0;
  const void* a = nullptr;
  const void* b = nullptr;
  void* y = nullptr;
  int ta = 0, tb = 0, ty = 0;
  int op = 0, sub = 0;  // sub: Activation, BinaryOp or GluKind
  float s0 = 1.0f, s1 = 0.0f;
  bool int_mode = false;  // i32/i64 add/sub/mul, wrapping
};

__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ __forceinline__ float act_f(float x, int act) {
  switch (static_cast<Activation>(act)) {
    case Activation::gelu: return 0.5f * x * erfcf(-x * 0.70710678118654752f);
    case Activation::gelu_tanh:  // x * sigmoid(2u): no cancellation for negative x
      return x / (1.0f + expf(-1.5957691216057308f * (x + 0.044715f * x * x * x)));
    case Activation::relu: return x < 0.0f ? 0.0f : x;  // NaN stays NaN
    case Activation::silu: return x / (1.0f + expf(-x));
    case Activation::sigmoid: return sigmoid_f(x);
    case Activation::tanh: return tanhf(x);
    default: return x;
  }
}

__device__ __forceinline__ float binary_f(float a, float b, int op) {
  switch (static_cast<BinaryOp>(op)) {
    case BinaryOp::add: return a + b;
    case BinaryOp::sub: return a - b;
    case BinaryOp::mul: return a * b;
    default: return a / b;
  }
}

__global__ void pointwise_kernel(const PwParams p) {
  pdl::begin();
  for (i64 i = blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x; i < p.n;
       i += static_cast<i64>(gridDim.x) * blockDim.x) {
    i64 off[3];
    p.ix.offsets(i, off);
    if (p.int_mode) {
      const auto u = static_cast<unsigned long long>(load_i(p.a, off[0], p.ta));
      const auto v = static_cast<unsigned long long>(load_i(p.b, off[1], p.tb));
      const unsigned long long r = p.sub == static_cast<int>(BinaryOp::add)   ? u + v
                                   : p.sub == static_cast<int>(BinaryOp::sub) ? u - v
                                                                              : u * v;
      if (p.ty == kI32) static_cast<std::int32_t*>(p.y)[off[2]] = static_cast<std::int32_t>(r);
      else static_cast<i64*>(p.y)[off[2]] = static_cast<i64>(r);
      continue;
    }
    const float a = load_f(p.a, off[0], p.ta);
    float r;
    switch (p.op) {
      case kPwAct: r = act_f(a, p.sub); break;
      case kPwScale: r = a * p.s0 + p.s1; break;
      case kPwBinary: r = binary_f(a, load_f(p.b, off[1], p.tb), p.sub); break;
      default: {
        const float b = load_f(p.b, off[1], p.tb);
        r = p.sub == static_cast<int>(GluKind::glu) ? a * sigmoid_f(b) : a * sigmoid_f(a) * b;
      }
    }
    store_f(p.y, off[2], p.ty, r);
  }
}

void launch_pointwise(Launch& l, PwParams& p, const Shape& shape, const Shape& sa, const Shape& sb, const Shape& sy,
                      const char* name) {
  p.n = shape.numel();
  if (p.n == 0) return;
  p.ix = make_indexer<3>(shape, std::array<Shape, 3>{sa, sb, sy});
  l.kernel(name, pointwise_kernel, blocks_for(p.n), kThreads, 0, p);
}

// ---- cast and raw copies ------------------------------------------------------------------------------

struct MoveParams {
  Indexer<2> ix;  // x, y
  i64 n = 0;
  const void* x = nullptr;
  void* y = nullptr;
  int tx = 0, ty = 0, es = 0;
};

// Integer ranges as plain constants (std::numeric_limits is host-only constexpr under nvcc).
template <typename I> struct Lim;
template <> struct Lim<std::int8_t> { static constexpr i64 lo = -128, hi = 127; };
template <> struct Lim<std::uint8_t> { static constexpr i64 lo = 0, hi = 255; };
template <> struct Lim<std::int32_t> { static constexpr i64 lo = INT32_MIN, hi = INT32_MAX; };
template <> struct Lim<i64> { static constexpr i64 lo = INT64_MIN, hi = INT64_MAX; };

template <typename I>
__device__ __forceinline__ I saturate_d(double v) {  // float -> integer: truncate, saturate, NaN -> 0
  if (v != v) return 0;
  if (v <= static_cast<double>(Lim<I>::lo)) return static_cast<I>(Lim<I>::lo);
  if (v >= static_cast<double>(Lim<I>::hi)) return static_cast<I>(Lim<I>::hi);
  return static_cast<I>(v);
}
template <typename I>
__device__ __forceinline__ I saturate_i(i64 v) {
  if (v < Lim<I>::lo) return static_cast<I>(Lim<I>::lo);
  if (v > Lim<I>::hi) return static_cast<I>(Lim<I>::hi);
  return static_cast<I>(v);
}

__global__ void cast_kernel(const MoveParams p) {
  pdl::begin();
  for (i64 i = blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x; i < p.n;
       i += static_cast<i64>(gridDim.x) * blockDim.x) {
    i64 off[2];
    p.ix.offsets(i, off);
    void* y = p.y;
    const i64 o = off[1];
    if (is_float_code(p.tx)) {
      const float f = load_f(p.x, off[0], p.tx);
      switch (p.ty) {
        case kI8: static_cast<std::int8_t*>(y)[o] = saturate_d<std::int8_t>(f); break;
        case kU8: static_cast<std::uint8_t*>(y)[o] = saturate_d<std::uint8_t>(f); break;
        case kI32: static_cast<std::int32_t*>(y)[o] = saturate_d<std::int32_t>(f); break;
        case kI64: static_cast<i64*>(y)[o] = saturate_d<i64>(f); break;
        case kBool: static_cast<std::uint8_t*>(y)[o] = f != 0.0f; break;  // NaN is true
        default: store_f(y, o, p.ty, f);
      }
    } else {
      const i64 v = load_i(p.x, off[0], p.tx);
      switch (p.ty) {
        case kI8: static_cast<std::int8_t*>(y)[o] = saturate_i<std::int8_t>(v); break;
        case kU8: static_cast<std::uint8_t*>(y)[o] = saturate_i<std::uint8_t>(v); break;
        case kI32: static_cast<std::int32_t*>(y)[o] = saturate_i<std::int32_t>(v); break;
        case kI64: static_cast<i64*>(y)[o] = v; break;
        case kBool: static_cast<std::uint8_t*>(y)[o] = v != 0; break;
        default: store_f(y, o, p.ty, static_cast<float>(v));
      }
    }
  }
}

__global__ void copy_kernel(const MoveParams p) {
  pdl::begin();
  for (i64 i = blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x; i < p.n;
       i += static_cast<i64>(gridDim.x) * blockDim.x) {
    i64 off[2];
    p.ix.offsets(i, off);
    move_elem(p.x, off[0], p.y, off[1], p.es);
  }
}

/// y = x element for element (same shape); raw bytes when the dtypes match, else converted.
void move(Launch& l, const Tensor& x, const Tensor& y, const char* name) {
  MoveParams p;
  p.n = x.numel();
  if (p.n == 0) return;
  if (x.dtype() == y.dtype() && x.is_contiguous() && y.is_contiguous()) {
    check_cuda(cudaMemcpyAsync(y.data(), x.data(), x.nbytes(), cudaMemcpyDeviceToDevice, l.stream), name);
    return;
  }
  p.ix = make_indexer<2>(x.shape(), std::array<Shape, 2>{x.strides(), y.strides()});
  p.x = x.data();
  p.y = y.data();
  p.tx = code(x.dtype());
  p.ty = code(y.dtype());
  p.es = static_cast<int>(dtype_size(x.dtype()));
  l.kernel(name, x.dtype() == y.dtype() ? copy_kernel : cast_kernel, blocks_for(p.n), kThreads, 0, p);
}

// ---- pad, gather, scatter_add, embedding ------------------------------------------------------------

struct PadParams {
  int rank = 0;
  i64 n = 0;
  i64 ysize[kMaxDims] = {}, ystride[kMaxDims] = {}, xsize[kMaxDims] = {}, xstride[kMaxDims] = {},
      before[kMaxDims] = {};
  const void* x = nullptr;
  void* y = nullptr;
  int es = 0;
  unsigned long long value = 0;  // the pad value's bytes in y's dtype
};

__global__ void pad_kernel(const PadParams p) {
  for (i64 i = blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x; i < p.n;
       i += static_cast<i64>(gridDim.x) * blockDim.x) {
    i64 rem = i, yo = 0, xo = 0;
    bool inside = true;
    for (int d = p.rank - 1; d >= 0; --d) {
      const i64 c = rem % p.ysize[d];
      rem /= p.ysize[d];
      yo += c * p.ystride[d];
      const i64 xc = c - p.before[d];
      inside = inside && xc >= 0 && xc < p.xsize[d];
      xo += xc * p.xstride[d];
    }
    if (inside) move_elem(p.x, xo, p.y, yo, p.es);
    else move_elem(&p.value, 0, p.y, yo, p.es);
  }
}

struct IndexParams {
  Indexer<3> ix;   // gather: x (axis stride 0), y, index; scatter: src, acc (axis 0), index
  i64 n = 0;       // embedding: ids, y, table column
  const void* x = nullptr;
  void* y = nullptr;
  const void* index = nullptr;
  int tx = 0, ty = 0, ti = 0, es = 0;
  i64 extent = 0;        // valid indices: [0, extent)
  i64 axis_stride = 0;   // added per index unit (x's for gather/embedding rows, acc's for scatter)
  i64 index_stride = 1;  // to report positions
  i64 row_len = 1;       // embedding: elements per id
  bool raw = true;       // embedding: same dtype, move bytes
  BadIndex bad;
};

__device__ __forceinline__ void zero_elem(void* y, i64 o, int es) {
  const unsigned long long z = 0;
  move_elem(&z, 0, y, o, es);
}

__global__ void gather_kernel(const IndexParams p) {
  pdl::begin();
  for (i64 i = blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x; i < p.n;
       i += static_cast<i64>(gridDim.x) * blockDim.x) {
    i64 off[3];
    p.ix.offsets(i, off);
    const i64 id = load_i(p.index, off[2], p.ti);
    if (id < 0 || id >= p.extent) {
      p.bad.report(id, p.index_stride != 0 ? off[2] / p.index_stride : 0);
      zero_elem(p.y, off[1], p.es);
    } else {
      move_elem(p.x, off[0] + id * p.axis_stride, p.y, off[1], p.es);
    }
  }
}

__global__ void embedding_kernel(const IndexParams p) {
  pdl::begin();
  for (i64 i = blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x; i < p.n;
       i += static_cast<i64>(gridDim.x) * blockDim.x) {
    i64 off[3];
    p.ix.offsets(i, off);
    const i64 id = load_i(p.index, off[0], p.ti);
    if (id < 0 || id >= p.extent) {
      p.bad.report(id, i / p.row_len);
      zero_elem(p.y, off[1], p.es);
    } else if (p.raw) {
      move_elem(p.x, id * p.axis_stride + off[2], p.y, off[1], p.es);
    } else {
      store_f(p.y, off[1], p.ty, load_f(p.x, id * p.axis_stride + off[2], p.tx));
    }
  }
}

// Duplicate indices add through f32 atomics (order, hence the last bits, vary between runs).
__global__ void scatter_add_kernel(const IndexParams p) {
  for (i64 i = blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x; i < p.n;
       i += static_cast<i64>(gridDim.x) * blockDim.x) {
    i64 off[3];
    p.ix.offsets(i, off);
    const i64 id = load_i(p.index, off[2], p.ti);
    if (id < 0 || id >= p.extent) {
      p.bad.report(id, p.index_stride != 0 ? off[2] / p.index_stride : 0);
      continue;
    }
    atomicAdd(static_cast<float*>(p.y) + off[1] + id * p.axis_stride, load_f(p.x, off[0], p.tx));
  }
}

/// Strides of a 1-D index tensor spread over `rank` dims: its stride on `axis`, 0 elsewhere.
Shape index_strides(const Tensor& index, int rank, int axis) {
  Shape s;
  for (int d = 0; d < rank; ++d) s.push_back(d == axis ? index.strides()[0] : 0);
  return s;
}

Shape with_axis_stride(Shape s, int axis, i64 v) {
  s[axis] = v;
  return s;
}

/// Checks a one-input float op (x and y floating, y shaped like x) and fills its operands; the
/// op's code and constants are the caller's.
PwParams unary_params(const char* op, const Tensor& x, const Tensor& y) {
  check_float(op, "x", x);
  check_float(op, "y", y);
  check_shape(op, "y", y, x.shape());
  PwParams p;
  p.a = p.b = x.data();
  p.y = y.data();
  p.ta = p.tb = code(x.dtype());
  p.ty = code(y.dtype());
  return p;
}

}  // namespace

// ---- public kernels -----------------------------------------------------------------------------------

void activation(const Tensor& x, Activation act, const Tensor& y, const CudaContext& ctx) {
  PwParams p = unary_params("activation", x, y);
  Launch l(ctx, "activation");
  p.op = kPwAct;
  p.sub = static_cast<int>(act);
  launch_pointwise(l, p, x.shape(), x.strides(), x.strides(), y.strides(), "activation");
}

void scale(const Tensor& x, const ScaleAttrs& attrs, const Tensor& y, const CudaContext& ctx) {
  PwParams p = unary_params("scale", x, y);
  Launch l(ctx, "scale");
  p.op = kPwScale;
  p.s0 = attrs.scale;
  p.s1 = attrs.shift;
  launch_pointwise(l, p, x.shape(), x.strides(), x.strides(), y.strides(), "scale");
}

void binary(const Tensor& a, const Tensor& b, BinaryOp op, const Tensor& y, const CudaContext& ctx) {
  check_dev("binary", "a", a);
  check_dev("binary", "b", b);
  check_dev("binary", "y", y);
  const int r = std::max(a.rank(), b.rank());
  Shape out;
  for (int d = 0; d < r; ++d) {
    const int da = d - (r - a.rank()), db = d - (r - b.rank());
    const i64 ea = da < 0 ? 1 : a.shape()[da], eb = db < 0 ? 1 : b.shape()[db];
    ENCORE_CU_CHECK(ea == eb || ea == 1 || eb == 1, invalid_argument, "binary: shapes ", a.shape().str(), " and ",
                    b.shape().str(), " do not broadcast (dim ", d, ": ", ea, " vs ", eb, ")");
    out.push_back(ea == 1 ? eb : ea);
  }
  check_shape("binary", "y", y, out);
  PwParams p;
  const bool fl = is_floating(a.dtype()) && is_floating(b.dtype()) && is_floating(y.dtype());
  if (!fl) {
    const bool same = a.dtype() == b.dtype() && a.dtype() == y.dtype();
    ENCORE_CU_CHECK(same && (y.dtype() == DType::I32 || y.dtype() == DType::I64) && op != BinaryOp::div, unsupported,
                    "binary: dtypes ", dtype_name(a.dtype()), ", ", dtype_name(b.dtype()), " -> ",
                    dtype_name(y.dtype()), " are not supported (floating dtypes, or i32/i64 add/sub/mul)");
    p.int_mode = true;
  }
  Launch l(ctx, "binary");
  p.a = a.data();
  p.b = b.data();
  p.y = y.data();
  p.ta = code(a.dtype());
  p.tb = code(b.dtype());
  p.ty = code(y.dtype());
  p.op = kPwBinary;
  p.sub = static_cast<int>(op);
  launch_pointwise(l, p, out, broadcast_strides(a, out), broadcast_strides(b, out), y.strides(), "binary");
}

void glu(const Tensor& x, const GluAttrs& attrs, const Tensor& y, const CudaContext& ctx) {
  check_float("glu", "x", x);
  check_float("glu", "y", y);
  const int axis = normalize_axis(attrs.axis, x.rank(), "glu axis");
  const i64 two_h = x.shape()[axis];
  ENCORE_CU_CHECK(two_h % 2 == 0, invalid_argument, "glu: dimension ", axis, " of x ", x.shape().str(),
                  " has odd extent ", two_h);
  Shape expected = x.shape();
  expected[axis] = two_h / 2;
  check_shape("glu", "y", y, expected);
  if (y.numel() == 0) return;
  Launch l(ctx, "glu");
  const Tensor a = x.slice(axis, 0, two_h / 2), b = x.slice(axis, two_h / 2, two_h);
  PwParams p;
  p.a = a.data();
  p.b = b.data();
  p.y = y.data();
  p.ta = p.tb = code(x.dtype());
  p.ty = code(y.dtype());
  p.op = kPwGlu;
  p.sub = static_cast<int>(attrs.kind);
  launch_pointwise(l, p, y.shape(), a.strides(), b.strides(), y.strides(), "glu");
}

void cast(const Tensor& x, const Tensor& y, const CudaContext& ctx) {
  check_dev("cast", "x", x);
  check_dev("cast", "y", y);
  check_shape("cast", "y", y, x.shape());
  Launch l(ctx, "cast");
  move(l, x, y, "cast");
}

void copy(const Tensor& x, const Tensor& y, const CudaContext& ctx) {
  check_dev("copy", "x", x);
  check_dev("copy", "y", y);
  check_shape("copy", "y", y, x.shape());
  ENCORE_CU_CHECK(x.dtype() == y.dtype(), invalid_argument, "copy: x is ", dtype_name(x.dtype()), " but y is ",
                  dtype_name(y.dtype()), " (use cast to convert)");
  Launch l(ctx, "copy");
  move(l, x, y, "copy");
}

void concat(std::span<const Tensor> xs, int axis_in, const Tensor& y, const CudaContext& ctx) {
  check_dev("concat", "y", y);
  ENCORE_CU_CHECK(!xs.empty(), invalid_argument, "concat: no inputs");
  const int axis = normalize_axis(axis_in, y.rank(), "concat axis");
  i64 total = 0;
  for (std::size_t k = 0; k < xs.size(); ++k) {
    const Tensor& x = xs[k];
    check_dev("concat", "input", x);
    ENCORE_CU_CHECK(x.dtype() == y.dtype(), invalid_argument, "concat: input ", k, " is ", dtype_name(x.dtype()),
                    " but y is ", dtype_name(y.dtype()));
    bool ok = x.rank() == y.rank();
    for (int d = 0; ok && d < y.rank(); ++d) ok = d == axis || x.shape()[d] == y.shape()[d];
    ENCORE_CU_CHECK(ok, invalid_argument, "concat: input ", k, " has shape ", x.shape().str(),
                    ", incompatible with y ", y.shape().str(), " along axis ", axis);
    total += x.shape()[axis];
  }
  ENCORE_CU_CHECK(total == y.shape()[axis], invalid_argument, "concat: inputs add up to ", total, " along axis ",
                  axis, ", y has ", y.shape()[axis]);
  Launch l(ctx, "concat");
  i64 at = 0;
  for (const Tensor& x : xs) {  // one copy per input into its slice of y
    const i64 n = x.shape()[axis];
    if (n > 0 && x.numel() > 0) move(l, x, y.slice(axis, at, at + n), "concat");
    at += n;
  }
}

void pad(const Tensor& x, const PadAttrs& attrs, const Tensor& y, const CudaContext& ctx) {
  check_dev("pad", "x", x);
  check_dev("pad", "y", y);
  ENCORE_CU_CHECK(x.dtype() == y.dtype(), invalid_argument, "pad: x is ", dtype_name(x.dtype()), " but y is ",
                  dtype_name(y.dtype()));
  ENCORE_CU_CHECK(attrs.pads.size() % 2 == 0 && attrs.pads.size() <= 2 * static_cast<std::size_t>(x.rank()),
                  invalid_argument, "pad: ", attrs.pads.size(), " pad values for a rank-", x.rank(),
                  " tensor (expected pairs, at most ", 2 * x.rank(), ")");
  PadParams p;
  Shape expected = x.shape();
  for (int d = 0; d < x.rank(); ++d) {
    const std::size_t i = 2 * static_cast<std::size_t>(d);
    const i64 before = i < attrs.pads.size() ? attrs.pads[i] : 0, after = i < attrs.pads.size() ? attrs.pads[i + 1] : 0;
    expected[d] = x.shape()[d] + before + after;
    ENCORE_CU_CHECK(expected[d] >= 0, invalid_argument, "pad: pads ", before, " and ", after,
                    " remove more than dimension ", d, " of ", x.shape().str(), " holds");
    p.before[d] = before;
    p.xsize[d] = x.shape()[d];
    p.xstride[d] = x.strides()[d];
    p.ysize[d] = expected[d];
    p.ystride[d] = y.strides().rank() > d ? y.strides()[d] : 0;
  }
  check_shape("pad", "y", y, expected);
  p.n = y.numel();
  if (p.n == 0) return;
  // The pad value converted exactly as Tensor::fill converts it (on the host).
  Tensor one = Tensor::from_blob(&p.value, Shape{1}, y.dtype());
  one.fill(attrs.value);
  Launch l(ctx, "pad");
  p.rank = x.rank();
  p.x = x.data();
  p.y = y.data();
  p.es = static_cast<int>(dtype_size(y.dtype()));
  pad_kernel<<<blocks_for(p.n), kThreads, 0, l.stream>>>(p);
  check_launch("pad");
}

void gather(const Tensor& x, const Tensor& index, const GatherAttrs& attrs, const Tensor& y, const CudaContext& ctx) {
  check_dev("gather", "x", x);
  check_dev("gather", "y", y);
  check_index_dtype("gather", "index", index);
  const int axis = index_checks::check_gather(x, index, attrs.axis, y);
  if (y.numel() == 0) return;
  Launch l(ctx, "gather");
  IndexCheck guard(l);
  IndexParams p;
  p.n = y.numel();
  p.ix = make_indexer<3>(y.shape(), std::array<Shape, 3>{with_axis_stride(x.strides(), axis, 0), y.strides(),
                                                         index_strides(index, y.rank(), axis)});
  p.x = x.data();
  p.y = y.data();
  p.index = index.data();
  p.ti = code(index.dtype());
  p.es = static_cast<int>(dtype_size(x.dtype()));
  p.extent = x.shape()[axis];
  p.axis_stride = x.strides()[axis];
  p.index_stride = index.strides()[0];
  p.bad = guard.device();
  l.kernel("gather", gather_kernel, blocks_for(p.n), kThreads, 0, p);
  guard.check("gather", "index", str_cat("is out of range for dimension ", axis, " of extent ", p.extent));
}

void scatter_add(const Tensor& x, const Tensor& index, const Tensor& src, const ScatterAddAttrs& attrs,
                 const Tensor& y, const CudaContext& ctx) {
  const char* op = "scatter_add";
  check_float(op, "x", x);
  check_float(op, "src", src);
  check_float(op, "y", y);
  check_index_dtype(op, "index", index);
  const int axis = index_checks::check_scatter_add(x, index, src, attrs.axis, y);
  if (y.numel() == 0) return;
  Launch l(ctx, op);
  // Accumulate in f32: into y itself when it is f32, else into a scratch copy rounded once at the end.
  const bool direct = y.dtype() == DType::F32;
  DeviceBuffer scratch;
  Tensor acc = y;
  if (!direct) {
    scratch = l.rt.scratch(static_cast<std::size_t>(y.numel()) * sizeof(float));
    acc = Tensor::from_blob(scratch.data(), y.shape(), DType::F32, {}, y.device());
  }
  if (!(x.data() == acc.data() && x.dtype() == acc.dtype() && x.strides() == acc.strides())) move(l, x, acc, op);
  if (src.numel() > 0) {
    IndexCheck guard(l);
    IndexParams p;
    p.n = src.numel();
    p.ix = make_indexer<3>(src.shape(), std::array<Shape, 3>{src.strides(), with_axis_stride(acc.strides(), axis, 0),
                                                             index_strides(index, src.rank(), axis)});
    p.x = src.data();
    p.y = acc.data();
    p.index = index.data();
    p.tx = code(src.dtype());
    p.ti = code(index.dtype());
    p.extent = x.shape()[axis];
    p.axis_stride = acc.strides()[axis];
    p.index_stride = index.strides()[0];
    p.bad = guard.device();
    scatter_add_kernel<<<blocks_for(p.n), kThreads, 0, l.stream>>>(p);
    check_launch(op);
    guard.check(op, "index", str_cat("is out of range for dimension ", axis, " of extent ", p.extent));
  }
  if (!direct) move(l, acc, y, op);
}

void embedding(const Tensor& table, const Tensor& ids, const Tensor& y, const CudaContext& ctx) {
  check_dev("embedding", "table", table);
  check_dev("embedding", "y", y);
  check_dev("embedding", "ids", ids);
  ENCORE_CU_CHECK(ids.dtype() == DType::I32 || ids.dtype() == DType::I64, unsupported, "embedding: ids have dtype ",
                  dtype_name(ids.dtype()), "; expected i32 or i64");
  ENCORE_CU_CHECK(table.rank() == 2, invalid_argument, "embedding: table must be [V, D], got ", table.shape().str());
  const i64 vocab = table.shape()[0], dim = table.shape()[1];
  Shape expected = ids.shape();
  expected.push_back(dim);
  check_shape("embedding", "y", y, expected);
  const bool same = table.dtype() == y.dtype();
  ENCORE_CU_CHECK(same || (is_floating(table.dtype()) && is_floating(y.dtype())), unsupported, "embedding: a ",
                  dtype_name(table.dtype()), " table cannot produce ", dtype_name(y.dtype()), " output");
  if (y.numel() == 0) return;
  Launch l(ctx, "embedding");
  IndexCheck guard(l);
  Shape id_strides = ids.strides(), col_strides;
  id_strides.push_back(0);
  for (int d = 0; d < ids.rank(); ++d) col_strides.push_back(0);
  col_strides.push_back(table.strides()[1]);
  IndexParams p;
  p.n = y.numel();
  p.ix = make_indexer<3>(y.shape(), std::array<Shape, 3>{id_strides, y.strides(), col_strides});
  p.x = table.data();
  p.y = y.data();
  p.index = ids.data();
  p.tx = code(table.dtype());
  p.ty = code(y.dtype());
  p.ti = code(ids.dtype());
  p.es = static_cast<int>(dtype_size(y.dtype()));
  p.extent = vocab;
  p.axis_stride = table.strides()[0];
  p.row_len = dim;
  p.raw = same;
  p.bad = guard.device();
  l.kernel("embedding", embedding_kernel, blocks_for(p.n), kThreads, 0, p);
  guard.check("embedding", "id", str_cat("is out of range for a vocabulary of ", vocab, " rows"));
}

}  // namespace encore::cuda
