// matmul: batched a b with NumPy broadcasting of the batch dims, as one oneDNN matmul. Operands are
// passed with their strides (transposes are strides, broadcast batch dims become extent 1), so no
// copies happen unless oneDNN has only its reference kernel for the layout or a dtype differs.
#include <bit>
#include <optional>
#include <string_view>

#include "backends/cpu/kernels.h"
#include "backends/cpu/onednn_context.h"
#include "core/check.h"

namespace encore::cpu {
namespace {

using namespace onednn;
using dims = dnnl::memory::dims;

struct MatmulPlan {
  dnnl::matmul primitive;
  dnnl::memory::desc a, b, y;  // as the primitive reads them
  bool copy_a = false, copy_b = false;
  dnnl::memory::desc a_from, b_from;  // the tensors as stored, when copied
};

// One operand as oneDNN sees it: rank-R dims with the batch dims padded in front, stride-0
// (expanded) batch dims folded to extent 1 so oneDNN broadcasts them, and the two matrix dims in
// (rows, cols) order, swapped through the strides when transposed.
struct Operand {
  dims d, s;
};

Operand operand(const Tensor& t, int R, bool trans) {
  const int r = t.rank();
  Operand o{dims(static_cast<std::size_t>(R), 1), dims(static_cast<std::size_t>(R), 0)};
  for (int i = 0; i < r - 2; ++i) {
    const auto j = static_cast<std::size_t>(R - r + i);
    o.d[j] = t.strides()[i] == 0 ? 1 : t.shape()[i];
    o.s[j] = t.strides()[i];
  }
  const int rows = trans ? r - 1 : r - 2, cols = trans ? r - 2 : r - 1;
  o.d[static_cast<std::size_t>(R - 2)] = t.shape()[rows];
  o.d[static_cast<std::size_t>(R - 1)] = t.shape()[cols];
  o.s[static_cast<std::size_t>(R - 2)] = t.strides()[rows];
  o.s[static_cast<std::size_t>(R - 1)] = t.strides()[cols];
  // Extent-1 dims: any stride reads the same element; give them a plausible one.
  for (int i = R - 1; i >= 0; --i) {
    const auto j = static_cast<std::size_t>(i);
    if (o.d[j] == 1 && o.s[j] == 0) o.s[j] = i + 1 < R ? o.s[j + 1] * o.d[j + 1] : 1;
  }
  return o;
}

bool is_dense(const dnnl::memory::desc& md) { return md == dense_md(md.dims(), md.data_type()); }

void check_args(const Tensor& a, const Tensor& b, const MatMulAttrs& attrs, const Tensor& y) {
  ENCORE_CHECK(a.defined() && b.defined() && y.defined(), invalid_argument, "matmul: a, b and y must be defined");
  ENCORE_CHECK(a.device().is_cpu() && b.device().is_cpu() && y.device().is_cpu(), invalid_argument,
               "matmul (CPU): every tensor must be on the CPU");
  ENCORE_CHECK(a.rank() >= 2 && b.rank() >= 2, invalid_argument, "matmul: a {} and b {} must have at least 2 dims",
               a.shape().str(), b.shape().str());
  const std::int64_t ka = attrs.trans_a ? a.dim(-2) : a.dim(-1), kb = attrs.trans_b ? b.dim(-1) : b.dim(-2);
  ENCORE_CHECK(ka == kb, invalid_argument, "matmul: a {} (trans_a {}) has K = {} but b {} (trans_b {}) has K = {}",
               a.shape().str(), attrs.trans_a, ka, b.shape().str(), attrs.trans_b, kb);
  const int R = std::max(a.rank(), b.rank());
  Shape expect;
  for (int i = 0; i < R - 2; ++i) {
    const int ia = i - (R - a.rank()), ib = i - (R - b.rank());
    const std::int64_t ea = ia >= 0 ? a.shape()[ia] : 1, eb = ib >= 0 ? b.shape()[ib] : 1;
    ENCORE_CHECK(ea == eb || ea == 1 || eb == 1, invalid_argument,
                 "matmul: batch dims of a {} and b {} do not broadcast", a.shape().str(), b.shape().str());
    expect.push_back(std::max(ea, eb));
  }
  expect.push_back(attrs.trans_a ? a.dim(-1) : a.dim(-2));
  expect.push_back(attrs.trans_b ? b.dim(-2) : b.dim(-1));
  ENCORE_CHECK(y.shape() == expect, invalid_argument, "matmul: y {} should be {} for a {} and b {}", y.shape().str(),
               expect.str(), a.shape().str(), b.shape().str());
  ENCORE_CHECK(y.is_contiguous(), invalid_argument, "matmul: y {} must be contiguous", y.shape().str());
  auto floating = [](const Tensor& t) { return t.dtype() == DType::F32 || t.dtype() == DType::BF16; };
  ENCORE_CHECK(floating(a) && floating(b) && floating(y), unsupported,
               "matmul: dtypes a {}, b {}, y {} are not supported (f32 or bf16 each)", dtype_name(a.dtype()),
               dtype_name(b.dtype()), dtype_name(y.dtype()));
}

void matmul_impl(const Tensor& a, const Tensor& b, const MatMulAttrs& attrs, const Tensor& y, const CpuContext& ctx) {
  check_args(a, b, attrs, y);
  const std::int64_t K = attrs.trans_a ? a.dim(-2) : a.dim(-1);
  if (y.numel() == 0) return;
  if (K == 0) {
    Tensor(y).fill(0.0);  // an empty sum
    return;
  }
  const int threads = resolve_threads(ctx, call_work(double(y.numel()) * K, double(a.numel()) + b.numel() + y.numel()));
  ThreadScope scope(threads);

  const std::int64_t M = attrs.trans_a ? a.dim(-1) : a.dim(-2);
  const bool native = a.dtype() == DType::BF16 && b.dtype() == DType::BF16 && native_bf16(M);
  const auto cdt = to_dnnl(native ? DType::BF16 : DType::F32);
  const DType ddt = native ? y.dtype() : DType::F32;  // no f32 -> bf16 matmul in oneDNN 2.6

  const int R = y.rank();
  Operand oa = operand(a, R, attrs.trans_a), ob = operand(b, R, attrs.trans_b);
  for (int i = 0; i < R - 2; ++i) {  // both expanded along one dim: keep one as a stride-0 operand
    const auto j = static_cast<std::size_t>(i);
    if (y.shape()[i] > 1 && oa.d[j] == 1 && ob.d[j] == 1) {
      oa.d[j] = y.shape()[i];
      oa.s[j] = 0;
    }
  }
  const dnnl::memory::desc a_md(oa.d, to_dnnl(a.dtype()), oa.s), b_md(ob.d, to_dnnl(b.dtype()), ob.s);
  const dnnl::memory::desc y_md = dense_md(dims(y.shape().begin(), y.shape().end()), to_dnnl(ddt));

  const std::string key = KeyBuilder("matmul")
                              .add(a_md)
                              .add(b_md)
                              .add(y_md)
                              .add(static_cast<std::int64_t>(cdt))
                              .add(static_cast<std::int64_t>(std::bit_cast<std::uint32_t>(attrs.alpha)))
                              .add(threads)
                              .str();
  auto plan = PrimitiveCache::instance().get<MatmulPlan>(key, [&] {
    MatmulPlan p;
    p.a_from = a_md;
    p.b_from = b_md;
    p.copy_a = a.dtype() != (native ? DType::BF16 : DType::F32);
    p.copy_b = b.dtype() != (native ? DType::BF16 : DType::F32);
    p.y = y_md;
    dnnl::primitive_attr attr = user_scratchpad_attr();
    if (attrs.alpha != 1.0f) attr.set_output_scales(0, {attrs.alpha});
    auto make = [&] {
      p.a = p.copy_a ? dense_md(oa.d, cdt) : a_md;
      p.b = p.copy_b ? dense_md(ob.d, cdt) : b_md;
      return dnnl::matmul::primitive_desc(dnnl::matmul::desc(p.a, p.b, p.y), attr, engine());
    };
    auto pd = make();
    // Only the reference kernel takes this layout (e.g. stride-0 rows): dense copies are faster.
    if (std::string_view(pd.impl_info_str()).starts_with("ref") && (!is_dense(p.a) || !is_dense(p.b))) {
      p.copy_a = p.copy_a || !is_dense(p.a);
      p.copy_b = p.copy_b || !is_dense(p.b);
      pd = make();
    }
    p.primitive = dnnl::matmul(pd);
    return p;
  });

  std::optional<Scratch> a_copy, b_copy, y_tmp;
  const void* ap = a.data();
  const void* bp = b.data();
  if (plan->copy_a) {
    a_copy.emplace(plan->a.get_size());
    reorder(plan->a_from, ap, plan->a, a_copy->data(), threads);
    ap = a_copy->data();
  }
  if (plan->copy_b) {
    b_copy.emplace(plan->b.get_size());
    reorder(plan->b_from, bp, plan->b, b_copy->data(), threads);
    bp = b_copy->data();
  }
  if (ddt != y.dtype()) y_tmp.emplace(plan->y.get_size());
  void* yp = y_tmp ? y_tmp->data() : y.data();
  execute(plan->primitive, {{DNNL_ARG_SRC, wrap_cached(plan, 0, plan->a, ap)},
                            {DNNL_ARG_WEIGHTS, wrap_cached(plan, 1, plan->b, bp)},
                            {DNNL_ARG_DST, wrap_cached(plan, 2, plan->y, yp)}});
  if (y_tmp) reorder(plan->y, yp, dense_md(plan->y.dims(), to_dnnl(y.dtype())), y.data(), threads);
}

}  // namespace

void matmul(const Tensor& a, const Tensor& b, const MatMulAttrs& attrs, const Tensor& y, const CpuContext& ctx) {
  try {
    matmul_impl(a, b, attrs, y, ctx);
  } catch (const dnnl::error& e) {
    detail::fail(ErrorCode::backend, "matmul: oneDNN failed for a {} ({}), b {} ({}): {}", a.shape().str(),
                 dtype_name(a.dtype()), b.shape().str(), dtype_name(b.dtype()), e.what());
  }
}

}  // namespace encore::cpu
