// linear and matmul on cuBLASLt. Row-major tensors are handed to cuBLAS (column-major) as their
// transposes: Y = A B row-major is Y^T = B^T A^T column-major, and a row-major matrix read as
// column-major already is its transpose, so no data moves. Transposed views and uniform row
// strides become transpose flags and leading dimensions; only layouts with no such description
// (non-uniform strides, stride-0 rows) are copied to a dense scratch first.
//
// Plans (the matmul descriptor, layouts and heuristic algorithm) are cached per runtime and shape
// key, so the heuristic runs once per shape.
//
// linear with at most 16 rows of x (decode steps) can take the weight-streaming GEMV of
// kernels/cuda/gemv.cu instead (GemvPolicy): by default only for one f16/bf16 row with
// programmatic dependent launch, where it measured faster than cuBLASLt in a decode step.
#include "backends/cuda/cublas_gemm.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "kernels/cuda/gemm_kernels.h"

namespace encore::cuda {
namespace {

static_assert(static_cast<int>(kernels::Act::none) == static_cast<int>(Activation::none) &&
                  static_cast<int>(kernels::Act::gelu) == static_cast<int>(Activation::gelu) &&
                  static_cast<int>(kernels::Act::gelu_tanh) == static_cast<int>(Activation::gelu_tanh) &&
                  static_cast<int>(kernels::Act::relu) == static_cast<int>(Activation::relu) &&
                  static_cast<int>(kernels::Act::silu) == static_cast<int>(Activation::silu) &&
                  static_cast<int>(kernels::Act::sigmoid) == static_cast<int>(Activation::sigmoid) &&
                  static_cast<int>(kernels::Act::tanh) == static_cast<int>(Activation::tanh),
              "kernels::Act must mirror encore::Activation");

bool is_gemm_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F16: return CUDA_R_16F;
    case DType::BF16: return CUDA_R_16BF;
    default: return CUDA_R_32F;
  }
}

kernels::FloatType float_type(DType t) {
  switch (t) {
    case DType::F16: return kernels::FloatType::f16;
    case DType::BF16: return kernels::FloatType::bf16;
    default: return kernels::FloatType::f32;
  }
}

// Largest power of two (<= 256, cuBLASLt's default assumption) dividing v (an address or offset).
std::int64_t pow2_alignment(std::uint64_t v) {
  if (v == 0) return 256;
  return static_cast<std::int64_t>(std::min<std::uint64_t>(256, v & (~v + 1)));
}

std::int64_t alignment_of(const void* p) { return pow2_alignment(reinterpret_cast<std::uintptr_t>(p)); }

std::int64_t element_bytes(cudaDataType_t t) {
  switch (t) {
    case CUDA_R_16F:
    case CUDA_R_16BF: return 2;
    case CUDA_R_8I: return 1;
    default: return 4;
  }
}

// Alignment every batch member of an operand keeps: its base address and, when batched, its stride.
std::int64_t operand_alignment(const void* p, std::int64_t stride, cudaDataType_t t, std::int32_t batch) {
  std::int64_t a = alignment_of(p);
  if (batch > 1 && stride != 0)
    a = std::min(a, pow2_alignment(static_cast<std::uint64_t>(stride * element_bytes(t))));
  return a;
}

// ---- plan cache -----------------------------------------------------------------------------------

using PlanKey = std::array<std::int64_t, 26>;

struct PlanKeyHash {
  std::size_t operator()(const PlanKey& k) const noexcept {
    std::uint64_t h = 1469598103934665603ull;  // FNV-1a over the words
    for (const std::int64_t v : k) {
      h ^= static_cast<std::uint64_t>(v);
      h *= 1099511628211ull;
    }
    return static_cast<std::size_t>(h);
  }
};

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  std::size_t workspace = 0;
  bool found = false;  // false: cuBLASLt has no algorithm (remembered so we do not ask again)

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (d != nullptr) cublasLtMatrixLayoutDestroy(d);
    if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
    if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
  }
};

using PlanMap = std::unordered_map<PlanKey, std::unique_ptr<Plan>, PlanKeyHash>;

// One mutex for all plans: it also covers the per-call update of the bias pointer in a cached
// descriptor, and is held only while a call is queued (cuBLASLt returns without waiting).
std::mutex g_plan_mutex;

std::unordered_map<const CudaRuntime*, PlanMap>& plan_maps() {
  static auto* maps = new std::unordered_map<const CudaRuntime*, PlanMap>();  // lives as long as the runtimes
  return *maps;
}

PlanKey make_key(const LtCall& c) {
  return PlanKey{c.ab_type, c.d_type, c.scale_type, c.compute, c.op_a, c.op_b, static_cast<std::int64_t>(c.a_rows),
                 static_cast<std::int64_t>(c.a_cols), static_cast<std::int64_t>(c.b_rows),
                 static_cast<std::int64_t>(c.b_cols), static_cast<std::int64_t>(c.d_rows),
                 static_cast<std::int64_t>(c.d_cols), c.lda, c.ldb, c.ldd, c.a_stride, c.b_stride, c.d_stride, c.batch,
                 static_cast<std::int64_t>(c.epilogue), operand_alignment(c.A, c.a_stride, c.ab_type, c.batch),
                 operand_alignment(c.B, c.b_stride, c.ab_type, c.batch),
                 operand_alignment(c.D, c.d_stride, c.d_type, c.batch), c.bias != nullptr ? alignment_of(c.bias) : 0, 0,
                 0};
}

template <typename T>
void set_desc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const T& value) {
  ENCORE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof(value)));
}

cublasLtMatrixLayout_t make_layout(cudaDataType_t type, std::uint64_t rows, std::uint64_t cols, std::int64_t ld,
                                   std::int32_t batch, std::int64_t stride) {
  cublasLtMatrixLayout_t layout = nullptr;
  ENCORE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, type, rows, cols, ld));
  if (batch > 1) {
    const auto set = [&](cublasLtMatrixLayoutAttribute_t attr, const auto& value) {
      const cublasStatus_t s = cublasLtMatrixLayoutSetAttribute(layout, attr, &value, sizeof(value));
      if (s != CUBLAS_STATUS_SUCCESS) cublasLtMatrixLayoutDestroy(layout);
      ENCORE_CUBLAS_CHECK(s);
    };
    set(CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, batch);
    set(CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, stride);
  }
  return layout;
}

struct Preference {
  cublasLtMatmulPreference_t pref = nullptr;
  Preference() { ENCORE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref)); }
  ~Preference() { cublasLtMatmulPreferenceDestroy(pref); }
  template <typename T> void set(cublasLtMatmulPreferenceAttributes_t attr, T value) {
    ENCORE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof(value)));
  }
};

std::unique_ptr<Plan> create_plan(CudaRuntime& rt, const LtCall& c) {
  auto plan = std::make_unique<Plan>();
  ENCORE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->desc, c.compute, c.scale_type));
  set_desc(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, static_cast<std::int32_t>(c.op_a));
  set_desc(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, static_cast<std::int32_t>(c.op_b));
  set_desc(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, c.epilogue);
  if (c.bias != nullptr) set_desc(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, c.bias);
  plan->a = make_layout(c.ab_type, c.a_rows, c.a_cols, c.lda, c.batch, c.a_stride);
  plan->b = make_layout(c.ab_type, c.b_rows, c.b_cols, c.ldb, c.batch, c.b_stride);
  plan->d = make_layout(c.d_type, c.d_rows, c.d_cols, c.ldd, c.batch, c.d_stride);

  Preference pref;
  pref.set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, static_cast<std::uint64_t>(CudaRuntime::kWorkspaceBytes));
  // Views at odd offsets (slices of a fused QKV output) must exclude algorithms assuming 256 B.
  const auto align_d = static_cast<std::uint32_t>(operand_alignment(c.D, c.d_stride, c.d_type, c.batch));
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
           static_cast<std::uint32_t>(operand_alignment(c.A, c.a_stride, c.ab_type, c.batch)));
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
           static_cast<std::uint32_t>(operand_alignment(c.B, c.b_stride, c.ab_type, c.batch)));
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_d);
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_d);

  cublasLtMatmulHeuristicResult_t result{};
  int count = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(rt.cublaslt(), plan->desc, plan->a, plan->b, plan->d,
                                                               plan->d, pref.pref, 1, &result, &count);
  // NOT_SUPPORTED / INVALID_VALUE: no algorithm for this combination (e.g. an epilogue or a
  // stride-0 batch); the caller falls back to a simpler form.
  if (status == CUBLAS_STATUS_NOT_SUPPORTED || status == CUBLAS_STATUS_INVALID_VALUE) return plan;
  ENCORE_CUBLAS_CHECK(status);
  if (count > 0) {
    plan->algo = result.algo;
    plan->workspace = result.workspaceSize;
    plan->found = true;
  }
  return plan;
}

// ---- operands -------------------------------------------------------------------------------------

// A logical row-major [R, C] matrix with element (r, c) at r*sr + c*sc, as a GemmOperand if one of
// the two dense orientations describes it.
std::optional<GemmOperand> as_operand(const void* ptr, std::int64_t R, std::int64_t C, std::int64_t sr,
                                      std::int64_t sc) {
  const std::int64_t rmin = std::max<std::int64_t>(R, 1), cmin = std::max<std::int64_t>(C, 1);
  if (C <= 1 || sc == 1) {
    const std::int64_t ld = R <= 1 ? cmin : sr;
    if (ld >= cmin) return GemmOperand{ptr, ld, false, 0};
  }
  if (R <= 1 || sr == 1) {
    const std::int64_t ld = C <= 1 ? rmin : sc;
    if (ld >= rmin) return GemmOperand{ptr, ld, true, 0};
  }
  return std::nullopt;
}

kernels::Act to_act(Activation a) { return static_cast<kernels::Act>(static_cast<int>(a)); }

LtCall to_lt_call(const GemmProblem& p) {
  // Y^T (N x M, col-major) = B^T (N x K) A^T (K x M); cuBLAS's A is our B, its B our A.
  LtCall c;
  c.ab_type = c.d_type = cuda_type(p.dtype);
  c.scale_type = CUDA_R_32F;
  c.compute = p.dtype == DType::F32 && p.allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const auto N = static_cast<std::uint64_t>(p.N), M = static_cast<std::uint64_t>(p.M),
             K = static_cast<std::uint64_t>(p.K);
  c.op_a = p.b.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  c.a_rows = p.b.transposed ? K : N;
  c.a_cols = p.b.transposed ? N : K;
  c.lda = p.b.ld;
  c.op_b = p.a.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  c.b_rows = p.a.transposed ? M : K;
  c.b_cols = p.a.transposed ? K : M;
  c.ldb = p.a.ld;
  c.d_rows = N;
  c.d_cols = M;
  c.ldd = p.N;
  c.a_stride = p.b.batch_stride;
  c.b_stride = p.a.batch_stride;
  c.d_stride = p.M * p.N;
  c.batch = static_cast<std::int32_t>(p.batch);
  c.A = p.b.ptr;
  c.B = p.a.ptr;
  c.D = p.d;
  return c;
}

std::string problem_text(const GemmProblem& p) {
  return fmt::format("{} GEMM batch {} x [{}, {}] x [{}, {}] (A ld {}{}, B ld {}{})", dtype_name(p.dtype), p.batch,
                     p.M, p.K, p.K, p.N, p.a.ld, p.a.transposed ? " transposed" : "", p.b.ld,
                     p.b.transposed ? " transposed" : "");
}

// Queues p as one (strided-batched) cuBLASLt call, or one call per batch member when there is no
// batched algorithm (e.g. for a stride-0 operand). False when cuBLASLt has no algorithm at all.
bool queue_gemm(CudaRuntime& rt, const GemmProblem& p, cublasLtEpilogue_t epilogue, const void* bias) {
  const float alpha = p.alpha, beta = 0.0f;
  LtCall call = to_lt_call(p);
  call.alpha = &alpha;
  call.beta = &beta;
  call.epilogue = epilogue;
  call.bias = bias;
  if (lt_matmul(rt, call)) return true;
  if (p.batch <= 1) return false;
  const auto es = static_cast<std::int64_t>(dtype_size(p.dtype));
  LtCall one = call;
  one.batch = 1;
  one.a_stride = one.b_stride = one.d_stride = 0;
  for (std::int64_t i = 0; i < p.batch; ++i) {
    one.A = static_cast<const char*>(call.A) + i * call.a_stride * es;
    one.B = static_cast<const char*>(call.B) + i * call.b_stride * es;
    one.D = static_cast<char*>(call.D) + i * call.d_stride * es;
    if (!lt_matmul(rt, one)) {
      // Members differ only in alignment; the first one failing means none was queued.
      ENCORE_CHECK(i == 0, backend, "cuBLASLt has no algorithm for member {} of the {}", i, problem_text(p));
      return false;
    }
  }
  return true;
}

// A dense row-major copy ([batch, rows, cols], 256-byte aligned) of one operand.
GemmOperand dense_operand(CudaRuntime& rt, const GemmOperand& op, std::int64_t rows, std::int64_t cols,
                          std::int64_t batch, DType dtype, DeviceBuffer& buffer) {
  const auto es = static_cast<std::int64_t>(dtype_size(dtype));
  buffer = rt.scratch(static_cast<std::size_t>(batch * rows * cols * es));
  kernels::StridedLayout layout;
  layout.rank = 3;
  layout.shape[0] = batch;
  layout.shape[1] = rows;
  layout.shape[2] = cols;
  layout.strides[0] = op.batch_stride;
  layout.strides[1] = op.transposed ? 1 : op.ld;
  layout.strides[2] = op.transposed ? op.ld : 1;
  ENCORE_CUDA_CHECK(kernels::launch_strided_copy(buffer.data(), op.ptr, es, layout, rt.stream()));
  return GemmOperand{buffer.data(), std::max<std::int64_t>(cols, 1), false, batch > 1 ? rows * cols : 0};
}

}  // namespace

// ---- public ---------------------------------------------------------------------------------------

bool lt_matmul(CudaRuntime& rt, const LtCall& call) {
  std::lock_guard<std::mutex> lock(g_plan_mutex);
  PlanMap& plans = plan_maps()[&rt];
  const PlanKey key = make_key(call);
  auto it = plans.find(key);
  if (it == plans.end()) it = plans.emplace(key, create_plan(rt, call)).first;
  Plan& plan = *it->second;
  if (!plan.found) return false;
  if (call.bias != nullptr) set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, call.bias);
  ENCORE_CUBLAS_CHECK(cublasLtMatmul(rt.cublaslt(), plan.desc, call.alpha, call.A, plan.a, call.B, plan.b, call.beta,
                                     call.D, plan.d, call.D, plan.d, &plan.algo, rt.workspace(), plan.workspace,
                                     rt.stream()));
  return true;
}

std::size_t gemm_plan_count(const CudaRuntime& rt) {
  std::lock_guard<std::mutex> lock(g_plan_mutex);
  const auto it = plan_maps().find(&rt);
  return it == plan_maps().end() ? 0 : it->second.size();
}

std::int64_t collapsed_row_stride(const Tensor& x) {
  std::int64_t stride = 0, expect = -1;
  for (int i = x.rank() - 2; i >= 0; --i) {
    const std::int64_t n = x.shape()[i], s = x.strides()[i];
    if (n == 1) continue;
    if (expect < 0) stride = s;
    else if (s != expect) return -1;
    expect = s * n;
  }
  return stride;
}

GemmOperand matrix_operand(const void* ptr, std::int64_t rows, std::int64_t cols, std::int64_t row_stride,
                           std::int64_t col_stride, bool transpose) {
  const auto op = transpose ? as_operand(ptr, cols, rows, col_stride, row_stride)
                            : as_operand(ptr, rows, cols, row_stride, col_stride);
  return op.value_or(GemmOperand{});
}

GemmOperand matrix_operand(const Tensor& t, bool transpose) {
  const int r = t.rank();
  return matrix_operand(t.data(), t.shape()[r - 2], t.shape()[r - 1], t.strides()[r - 2], t.strides()[r - 1],
                        transpose);
}

DeviceBuffer dense_copy(CudaRuntime& rt, const Tensor& t) {
  DeviceBuffer buffer = rt.scratch(t.nbytes());
  kernels::StridedLayout layout;
  layout.rank = t.rank();
  for (int i = 0; i < t.rank(); ++i) {
    layout.shape[i] = t.shape()[i];
    layout.strides[i] = t.strides()[i];
  }
  ENCORE_CUDA_CHECK(kernels::launch_strided_copy(buffer.data(), t.data(), static_cast<std::int64_t>(dtype_size(t.dtype())),
                                                 layout, rt.stream()));
  return buffer;
}

void run_gemm(CudaRuntime& rt, const GemmProblem& p) {
  ENCORE_CHECK(is_gemm_float(p.dtype), unsupported, "CUDA GEMM: dtype {} is not supported (f32, f16, bf16)",
               dtype_name(p.dtype));
  ENCORE_CHECK(p.M >= 0 && p.N >= 0 && p.K >= 0 && p.batch >= 0 && p.batch <= std::numeric_limits<std::int32_t>::max(),
               invalid_argument, "CUDA GEMM: invalid problem {}", problem_text(p));
  if (p.M == 0 || p.N == 0 || p.batch == 0) return;
  const std::int64_t total = p.batch * p.M * p.N;
  const kernels::FloatType yt = float_type(p.dtype), bt = float_type(p.bias_dtype);
  if (p.K == 0) {  // an empty sum: D = act(bias or 0)
    rt.memset(p.d, 0, static_cast<std::size_t>(total) * dtype_size(p.dtype));
    ENCORE_CUDA_CHECK(kernels::launch_bias_activation(p.d, yt, total, p.N, 1, p.bias, bt, p.bias_stride,
                                                      to_act(p.act), rt.stream()));
    return;
  }

  // cuBLASLt's bias must be dense and of D's type; its GELU is the tanh form, and for f32 (the
  // accuracy mode, compared to 1e-5) our kernel's tanhf is used rather than its approximation. A
  // bias view at an odd offset (a slice of a fused QKV bias) goes to our kernel: the epilogue's
  // vector loads are not documented to handle less than 16-byte alignment.
  const bool fuse_bias = p.bias != nullptr && p.bias_dtype == p.dtype && (p.bias_stride == 1 || p.N == 1) &&
                         alignment_of(p.bias) >= 16;
  const bool with_bias = p.bias != nullptr;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  bool act_fused = false;
  // ReLU is never fused: cuBLASLt documents its epilogue as max(x, 0), which may turn NaN into 0,
  // where the CPU backend and torch.relu keep NaN; our bias/activation kernel keeps it.
  if (!with_bias || fuse_bias) {
    if (p.act == Activation::gelu_tanh && p.dtype != DType::F32) {
      epilogue = with_bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
      act_fused = true;
    } else if (with_bias) {
      epilogue = CUBLASLT_EPILOGUE_BIAS;
    }
  }
  bool bias_fused = with_bias && epilogue != CUBLASLT_EPILOGUE_DEFAULT;

  bool done = queue_gemm(rt, p, epilogue, bias_fused ? p.bias : nullptr);
  if (!done && epilogue != CUBLASLT_EPILOGUE_DEFAULT) {  // no algorithm with this epilogue: plain + kernel
    bias_fused = act_fused = false;
    done = queue_gemm(rt, p, CUBLASLT_EPILOGUE_DEFAULT, nullptr);
  }
  DeviceBuffer a_copy, b_copy;
  if (!done) {  // last resort (odd alignments or strides): dense, 256-byte aligned operands
    GemmProblem q = p;
    q.a = dense_operand(rt, p.a, p.M, p.K, p.batch, p.dtype, a_copy);
    q.b = dense_operand(rt, p.b, p.K, p.N, p.batch, p.dtype, b_copy);
    done = queue_gemm(rt, q, CUBLASLT_EPILOGUE_DEFAULT, nullptr);
  }
  ENCORE_CHECK(done, backend, "cuBLASLt has no algorithm for the {}", problem_text(p));

  const void* late_bias = with_bias && !bias_fused ? p.bias : nullptr;
  const Activation late_act = act_fused ? Activation::none : p.act;
  ENCORE_CUDA_CHECK(kernels::launch_bias_activation(p.d, yt, total, p.N, 1, late_bias, bt, p.bias_stride,
                                                    to_act(late_act), rt.stream()));
}

// ---- linear ---------------------------------------------------------------------------------------

namespace {

std::atomic<int> g_gemv_policy{-1};  // -1: environment not read yet; else a GemvPolicy

// The GEMV kernel's view of linear(x, w) (bias, activation and y left unset), when the policy
// gives it one.
std::optional<kernels::GemvArgs> gemv_view(const CudaRuntime& rt, const Tensor& x, const Tensor& w,
                                           const LinearAttrs& attrs) {
  const GemvPolicy policy = gemv_policy();
  if (policy == GemvPolicy::never || x.rank() < 1 || w.rank() != 2 || !is_gemm_float(x.dtype())) return std::nullopt;
  const std::int64_t K = x.dim(-1);
  if (K <= 0) return std::nullopt;
  const std::int64_t M = x.numel() / K;
  if (M < 1 || M > kernels::kGemvMaxRows) return std::nullopt;
  if (policy == GemvPolicy::automatic && (M != 1 || x.dtype() == DType::F32 || !rt.programmatic_launch()))
    return std::nullopt;
  const std::int64_t row_stride = collapsed_row_stride(x);
  const GemmOperand b = matrix_operand(w, attrs.layout == WeightLayout::out_in);  // W as [K, N]
  if (row_stride < 0 || b.ptr == nullptr) return std::nullopt;
  kernels::GemvArgs a;
  a.type = float_type(x.dtype());
  a.M = M;
  a.K = K;
  a.N = attrs.layout == WeightLayout::out_in ? w.dim(0) : w.dim(1);
  a.x = x.data();
  a.x_row_stride = row_stride;
  a.x_col_stride = x.strides()[x.rank() - 1];
  a.w = b.ptr;
  a.ldw = b.ld;
  a.k_contiguous = b.transposed;
  return a;
}

}  // namespace

GemvPolicy gemv_policy() {
  int mode = g_gemv_policy.load(std::memory_order_relaxed);
  if (mode < 0) {
    const char* e = std::getenv("ENCORE_CUDA_GEMV");
    const GemvPolicy p = e == nullptr                ? GemvPolicy::automatic
                         : std::strcmp(e, "1") == 0 ? GemvPolicy::always
                         : std::strcmp(e, "0") == 0 ? GemvPolicy::never
                                                    : GemvPolicy::automatic;
    mode = static_cast<int>(p);
    int expected = -1;
    if (!g_gemv_policy.compare_exchange_strong(expected, mode)) mode = expected;  // set_gemv_policy won
  }
  return static_cast<GemvPolicy>(mode);
}

void set_gemv_policy(GemvPolicy policy) { g_gemv_policy.store(static_cast<int>(policy)); }

bool linear_takes_gemv(const CudaRuntime& rt, const Tensor& x, const Tensor& w, const LinearAttrs& attrs) {
  if (!x.defined() || !w.defined()) return false;
  const std::optional<kernels::GemvArgs> a = gemv_view(rt, x, w, attrs);
  return a.has_value() && a->N > 0;
}

void linear(const Tensor& x, const Tensor& w, const Tensor& bias, const LinearAttrs& attrs, const Tensor& y,
            const CudaContext& ctx) {
  CudaRuntime& rt = runtime_of(ctx, "linear");
  ENCORE_CHECK(x.defined() && w.defined() && y.defined(), invalid_argument, "linear: x, weight and y must be defined");
  const Device dev = rt.device();
  ENCORE_CHECK(x.device() == dev && w.device() == dev && y.device() == dev && (!bias.defined() || bias.device() == dev),
               invalid_argument, "linear (CUDA): x {}, weight {}, y {}{} must all be on {}", x.device().str(),
               w.device().str(), y.device().str(), bias.defined() ? ", bias " + bias.device().str() : "", dev.str());
  const bool out_in = attrs.layout == WeightLayout::out_in;
  ENCORE_CHECK(x.rank() >= 1 && w.rank() == 2, invalid_argument, "linear: x {} needs >= 1 dim and weight {} 2 dims",
               x.shape().str(), w.shape().str());
  const std::int64_t K = x.dim(-1), N = out_in ? w.dim(0) : w.dim(1);
  ENCORE_CHECK((out_in ? w.dim(1) : w.dim(0)) == K, invalid_argument,
               "linear: x {} has K = {} but weight {} ({}) does not", x.shape().str(), K, w.shape().str(),
               out_in ? "out_in [N, K]" : "in_out [K, N]");
  Shape expect = x.shape();
  expect[expect.rank() - 1] = N;
  ENCORE_CHECK(y.shape() == expect && y.is_contiguous(), invalid_argument,
               "linear: y {} should be a contiguous {} for x {} and weight {}", y.shape().str(), expect.str(),
               x.shape().str(), w.shape().str());
  ENCORE_CHECK(!bias.defined() || (bias.rank() == 1 && bias.dim(0) == N), invalid_argument,
               "linear: bias {} must be [{}]", bias.shape().str(), N);
  ENCORE_CHECK(is_gemm_float(x.dtype()) && w.dtype() == x.dtype() && y.dtype() == x.dtype() &&
                   (!bias.defined() || is_gemm_float(bias.dtype())),
               unsupported,
               "linear (CUDA): x {}, weight {}, y {} must share one of f32/f16/bf16 (bias: any of them), got bias {}",
               dtype_name(x.dtype()), dtype_name(w.dtype()), dtype_name(y.dtype()),
               bias.defined() ? dtype_name(bias.dtype()) : "none");
  const std::int64_t M = K == 0 ? (N == 0 ? 0 : y.numel() / N) : x.numel() / K;
  if (M == 0 || N == 0) return;
  DeviceGuard guard(rt.ordinal());

  // Decode-sized x (M <= 16): one pass over the weight beats cuBLASLt's GEMM tiles (gemv.cu).
  if (std::optional<kernels::GemvArgs> g = gemv_view(rt, x, w, attrs)) {
    g->act = to_act(attrs.activation);
    g->y = y.data();
    if (bias.defined()) {
      g->bias = bias.data();
      g->bias_type = float_type(bias.dtype());
      g->bias_stride = bias.strides()[0];
    }
    g->pdl = rt.programmatic_launch();
    g->clusters = rt.sm90_code();  // the cluster finish exists only in sm_90 code
    ENCORE_CUDA_CHECK(kernels::launch_gemv(*g, rt.ordinal(), rt.multiprocessors(), rt.stream()));
    return;
  }

  GemmProblem p;
  p.dtype = x.dtype();
  p.M = M;
  p.N = N;
  p.K = K;
  p.d = y.data();
  p.act = attrs.activation;
  p.allow_tf32 = ctx.allow_tf32;
  if (bias.defined()) {
    p.bias = bias.data();
    p.bias_dtype = bias.dtype();
    p.bias_stride = bias.strides()[0];
  }
  DeviceBuffer x_copy, w_copy;
  if (K > 0) {
    const std::int64_t sr = collapsed_row_stride(x);
    std::optional<GemmOperand> xa;
    if (sr >= 0) xa = as_operand(x.data(), M, K, sr, x.strides()[x.rank() - 1]);
    if (!xa) {  // leading dims that do not collapse: one dense copy
      x_copy = dense_copy(rt, x);
      xa = GemmOperand{x_copy.data(), K, false, 0};
    }
    p.a = *xa;
    // B = W^T (out_in) or W (in_out) as [K, N].
    p.b = matrix_operand(w, out_in);
    if (p.b.ptr == nullptr) {
      w_copy = dense_copy(rt, w);
      p.b = GemmOperand{w_copy.data(), out_in ? K : N, out_in, 0};
    }
  }
  run_gemm(rt, p);
}

// ---- matmul ---------------------------------------------------------------------------------------

namespace {

// The stride that walks the flattened batch dims [first, nb) of an operand, if one does.
std::optional<std::int64_t> batch_stride(const std::vector<std::int64_t>& extents, const std::vector<std::int64_t>& strides,
                                         int first) {
  std::optional<std::int64_t> base;
  std::int64_t inner = 1;
  for (int d = static_cast<int>(extents.size()) - 1; d >= first; --d) {
    const auto i = static_cast<std::size_t>(d);
    if (extents[i] == 1) continue;
    if (!base) base = strides[i];  // every dim inside it has extent 1
    else if (strides[i] != *base * inner) return std::nullopt;
    inner *= extents[i];
  }
  return base.value_or(0);
}

}  // namespace

void matmul(const Tensor& a, const Tensor& b, const MatMulAttrs& attrs, const Tensor& y, const CudaContext& ctx) {
  CudaRuntime& rt = runtime_of(ctx, "matmul");
  ENCORE_CHECK(a.defined() && b.defined() && y.defined(), invalid_argument, "matmul: a, b and y must be defined");
  const Device dev = rt.device();
  ENCORE_CHECK(a.device() == dev && b.device() == dev && y.device() == dev, invalid_argument,
               "matmul (CUDA): a {}, b {}, y {} must all be on {}", a.device().str(), b.device().str(),
               y.device().str(), dev.str());
  ENCORE_CHECK(a.rank() >= 2 && b.rank() >= 2 && y.rank() == std::max(a.rank(), b.rank()), invalid_argument,
               "matmul: a {} and b {} need >= 2 dims and y {} their broadcast rank", a.shape().str(), b.shape().str(),
               y.shape().str());
  ENCORE_CHECK(is_gemm_float(a.dtype()) && b.dtype() == a.dtype() && y.dtype() == a.dtype(), unsupported,
               "matmul (CUDA): a {}, b {}, y {} must share one of f32/f16/bf16", dtype_name(a.dtype()),
               dtype_name(b.dtype()), dtype_name(y.dtype()));
  const std::int64_t M = attrs.trans_a ? a.dim(-1) : a.dim(-2), Ka = attrs.trans_a ? a.dim(-2) : a.dim(-1);
  const std::int64_t Kb = attrs.trans_b ? b.dim(-1) : b.dim(-2), N = attrs.trans_b ? b.dim(-2) : b.dim(-1);
  ENCORE_CHECK(Ka == Kb && y.dim(-2) == M && y.dim(-1) == N && y.is_contiguous(), invalid_argument,
               "matmul: a {} (trans {}) x b {} (trans {}) does not give a contiguous y {}", a.shape().str(),
               attrs.trans_a, b.shape().str(), attrs.trans_b, y.shape().str());

  // Batch dims of y, with each operand's stride per dim (0 where it broadcasts).
  const int nb = y.rank() - 2;
  std::vector<std::int64_t> extents(static_cast<std::size_t>(nb)), sa(extents.size(), 0), sb(extents.size(), 0);
  std::int64_t batch = 1;
  for (int d = 0; d < nb; ++d) {
    const auto i = static_cast<std::size_t>(d);
    extents[i] = y.shape()[d];
    batch *= extents[i];
    const auto stride_of = [&](const Tensor& t, const char* name) -> std::int64_t {
      const int j = d - (nb - (t.rank() - 2));
      if (j < 0) return 0;
      ENCORE_CHECK(t.shape()[j] == extents[i] || t.shape()[j] == 1, invalid_argument,
                   "matmul: batch dim {} of {} {} does not broadcast to y {}", j, name, t.shape().str(), y.shape().str());
      return t.shape()[j] == 1 ? 0 : t.strides()[j];
    };
    sa[i] = stride_of(a, "a");
    sb[i] = stride_of(b, "b");
  }
  if (M == 0 || N == 0 || batch == 0) return;
  DeviceGuard guard(rt.ordinal());

  GemmProblem p;
  p.dtype = a.dtype();
  p.M = M;
  p.N = N;
  p.K = Ka;
  p.alpha = attrs.alpha;
  p.allow_tf32 = ctx.allow_tf32;
  // Operands whose matrices have no dense orientation are copied whole (then they are contiguous).
  DeviceBuffer a_copy, b_copy;
  const auto operand = [&](const Tensor& t, bool trans, DeviceBuffer& copy, std::vector<std::int64_t>& strides) {
    GemmOperand op = matrix_operand(t, trans);
    if (op.ptr != nullptr || Ka == 0) return op;
    copy = dense_copy(rt, t);
    const Shape dense = contiguous_strides(t.shape());
    const int r = t.rank();
    op = matrix_operand(copy.data(), t.shape()[r - 2], t.shape()[r - 1], dense[r - 2], dense[r - 1], trans);
    for (int d = 0; d < nb; ++d) {
      const int j = d - (nb - (r - 2));
      strides[static_cast<std::size_t>(d)] = j < 0 || t.shape()[j] == 1 ? 0 : dense[j];
    }
    return op;
  };
  p.a = operand(a, attrs.trans_a, a_copy, sa);  // A as [M, K]
  p.b = operand(b, attrs.trans_b, b_copy, sb);  // B as [K, N]

  // The longest run of trailing batch dims both operands walk with one stride is one batched
  // call; the leading dims (rare mixed broadcasts) loop.
  int first = 0;
  std::optional<std::int64_t> stride_a, stride_b;
  for (; first < nb; ++first) {
    stride_a = batch_stride(extents, sa, first);
    stride_b = batch_stride(extents, sb, first);
    if (stride_a && stride_b) break;
  }
  std::int64_t inner = 1;
  for (int d = first; d < nb; ++d) inner *= extents[static_cast<std::size_t>(d)];
  p.batch = inner;
  p.a.batch_stride = stride_a.value_or(0);
  p.b.batch_stride = stride_b.value_or(0);
  const std::int64_t outer = batch / inner, es = static_cast<std::int64_t>(dtype_size(p.dtype));
  const char* a0 = static_cast<const char*>(p.a.ptr);
  const char* b0 = static_cast<const char*>(p.b.ptr);
  for (std::int64_t o = 0; o < outer; ++o) {
    std::int64_t rem = o, off_a = 0, off_b = 0;
    for (int d = first - 1; d >= 0; --d) {
      const auto i = static_cast<std::size_t>(d);
      off_a += (rem % extents[i]) * sa[i];
      off_b += (rem % extents[i]) * sb[i];
      rem /= extents[i];
    }
    GemmProblem q = p;
    if (a0 != nullptr) q.a.ptr = a0 + off_a * es;
    if (b0 != nullptr) q.b.ptr = b0 + off_b * es;
    q.d = static_cast<char*>(y.data()) + o * inner * M * N * es;
    run_gemm(rt, q);
  }
}

}  // namespace encore::cuda
