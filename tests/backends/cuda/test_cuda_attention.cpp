// CUDA attention, relative-position attention and rotary embedding against the CPU kernels on the
// same inputs (the CPU runs in f32 on the already rounded f16/bf16 values). The attention kernels
// (mma.sync tensor cores, CUDA cores) are exercised: head dims 24..160, causal with Tq != Tk, key
// padding and additive masks with both fills (fully masked rows included), GQA/MQA/reverse SQA,
// fused-QKV slices, decode-sized and empty problems; outputs poisoned before each launch. The
// wgmma kernel (Path::hopper, sm_90 only) is checked against the double reference (ref::attention)
// on odd sizes, every mask, head mapping and aligned strided layout.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <tuple>
#include <limits>
#include <random>
#include <string>

#include "backends/cpu/kernels.h"
#include "backends/cuda/cuda_test_util.h"
#include "kernels/cuda/attention_internal.h"
#include "reference/ref_attention.h"

using namespace encore;
using namespace encore::cuda::test;
using encore::cuda::attn::Path;

namespace {

const cpu::CpuContext kCpu{4};

struct Case {
  std::int64_t B = 2, Tq = 33, Tk = 33;
  int Hq = 3, Hkv = 3, D = 64;
  DType dt = DType::F16;
  bool causal = false;
  MaskKind mask = MaskKind::none;
  MaskFill fill = MaskFill::lowest;
  Shape add_shape;  // additive mask shape (empty: [B, 1, Tq, Tk])
  bool fused = false;
  Path path = Path::automatic;

  std::string str() const {
    return "B " + std::to_string(B) + " Tq " + std::to_string(Tq) + " Tk " + std::to_string(Tk) + " Hq " +
           std::to_string(Hq) + " Hkv " + std::to_string(Hkv) + " D " + std::to_string(D) + " " + dtype_name(dt) +
           (causal ? " causal" : "") + " mask " + std::to_string(static_cast<int>(mask)) +
           (fill == MaskFill::neg_infinity ? " -inf" : "") + (fused ? " fused" : "") + " path " +
           std::to_string(static_cast<int>(path));
  }
};

// The mask operand of a case: key padding (batch item 1 fully masked) or an additive mask with
// ~20 % of entries at float lowest; undefined for the other kinds.
Tensor random_mask(MaskKind kind, std::int64_t B, std::int64_t Tq, std::int64_t Tk, const Shape& add_shape,
                   std::mt19937& rng) {
  Tensor mask;
  if (kind == MaskKind::key_padding) {
    mask = Tensor::empty({B, Tk}, DType::Bool);
    std::bernoulli_distribution keep(0.7);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t j = 0; j < Tk; ++j) mask.at<bool>({b, j}) = b != 1 && keep(rng);  // batch 1: all masked
  } else if (kind == MaskKind::additive) {
    const Shape s = add_shape.empty() ? Shape{B, 1, Tq, Tk} : add_shape;
    mask = ref::random_tensor(s, DType::F32, rng, -4.0, 0.0);
    std::bernoulli_distribution hide(0.2);
    float* m = mask.data_ptr<float>();
    for (std::int64_t i = 0; i < mask.numel(); ++i)
      if (hide(rng)) m[i] = std::numeric_limits<float>::lowest();
  }
  return mask;
}

void check(const Case& c, std::mt19937& rng) {
  const std::int64_t qw = c.Hq * c.D, kw = c.Hkv * c.D;
  Tensor q, k, v;
  if (c.fused) {  // slices of one [B, T, (Hq + 2 Hkv) D] projection (self-attention)
    const Tensor qkv = ref::random_tensor({c.B, c.Tq, qw + 2 * kw}, c.dt, rng);
    q = qkv.slice(2, 0, qw), k = qkv.slice(2, qw, qw + kw), v = qkv.slice(2, qw + kw, qw + 2 * kw);
  } else {
    q = ref::random_strided({c.B, c.Tq, qw}, c.dt, rng);
    k = ref::random_strided({c.B, c.Tk, kw}, c.dt, rng);
    v = ref::random_tensor({c.B, c.Tk, kw}, c.dt, rng);
  }
  const Tensor mask = random_mask(c.mask, c.B, c.Tq, c.Tk, c.add_shape, rng);
  const AttentionAttrs attrs{.num_heads = c.Hq, .num_kv_heads = c.Hkv, .causal = c.causal, .mask = c.mask,
                             .fill = c.fill};
  const int Ho = std::max(c.Hq, c.Hkv);
  Tensor want = Tensor::empty({c.B, c.Tq, Ho * c.D}, DType::F32);
  cpu::attention(as_f32(q), as_f32(k), as_f32(v), mask, attrs, want, kCpu);
  Tensor y = poisoned({c.B, c.Tq, Ho * c.D}, c.dt);
  cuda::attn::attention_impl(upload_view(q), upload_view(k), upload_view(v), mask.defined() ? upload(mask) : Tensor(),
                             attrs, y, context(), c.path);
  EXPECT_TRUE(close_to(y, want, c.dt == DType::F32 ? 2e-5 : 1e-2)) << c.str();
}

TEST(CudaAttention, HeadDimsAndDtypes) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(41);
  for (int D : {24, 32, 40, 64, 80, 96, 128, 160})
    for (DType dt : {DType::F32, DType::F16, DType::BF16})
      for (Path path : {Path::automatic, Path::generic}) {
        if (dt == DType::F32 && path == Path::automatic && D != 64) continue;  // the same kernel twice
        check({.Tq = 77, .Tk = 77, .D = D, .dt = dt, .path = path}, rng);
      }
}

TEST(CudaAttention, TensorCorePathIsTakenWhenEligible) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(42);
  for (int D : {32, 40, 64, 72, 80, 96, 128})
    for (DType dt : {DType::F16, DType::BF16})  // fused QKV slices: 16-byte aligned rows, as the kernel needs
      check({.Tq = 130, .Tk = 130, .D = D, .dt = dt, .fused = true, .path = Path::tensor_core}, rng);
  // f32 and D = 160 are refused by the tensor-core kernel.
  const Tensor q = upload(Tensor::zeros({1, 4, 64}, DType::F32));
  Tensor y = poisoned({1, 4, 64}, DType::F32);
  EXPECT_THROW(cuda::attn::attention_impl(q, q, q, {}, {.num_heads = 1}, y, context(), Path::tensor_core), Error);
}

TEST(CudaAttention, CausalAndCrossAttention) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(43);
  // Tq == Tk; decode-like Tq < Tk (offset Tk - Tq); Tq > Tk (leading rows fully masked).
  const std::pair<std::int64_t, std::int64_t> sizes[] = {{130, 130}, {1, 200}, {5, 77}, {70, 50}, {200, 65}};
  for (const auto& [tq, tk] : sizes)
    for (DType dt : {DType::F32, DType::BF16, DType::F16})
      for (MaskFill fill : {MaskFill::lowest, MaskFill::neg_infinity})
        for (Path path : {Path::automatic, Path::generic})
          check({.Tq = tq, .Tk = tk, .D = 64, .dt = dt, .causal = true, .fill = fill, .path = path}, rng);
  // Cross-attention without a causal mask, Tk not a multiple of the tiles.
  for (DType dt : {DType::F32, DType::F16}) check({.Tq = 45, .Tk = 301, .D = 64, .dt = dt}, rng);
}

TEST(CudaAttention, KeyPaddingMasks) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(44);
  for (DType dt : {DType::F32, DType::BF16, DType::F16})
    for (MaskFill fill : {MaskFill::lowest, MaskFill::neg_infinity})
      for (bool causal : {false, true})
        for (Path path : {Path::automatic, Path::generic})
          check({.B = 3, .Tq = 67, .Tk = 67, .D = 64, .dt = dt, .causal = causal, .mask = MaskKind::key_padding,
                 .fill = fill, .path = path},
                rng);
}

TEST(CudaAttention, AdditiveMasks) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(45);
  const std::int64_t B = 2, T = 40;
  for (const Shape& s : {Shape{B, 1, T, T}, Shape{T, T}, Shape{B, 4, T, T}, Shape{1, 1, 1, T}, Shape{B, 1, 1, T}})
    for (DType dt : {DType::F32, DType::BF16})
      for (bool causal : {false, true})
        for (Path path : {Path::automatic, Path::generic})
          check({.B = B, .Tq = T, .Tk = T, .Hq = 4, .Hkv = 4, .D = 32, .dt = dt, .causal = causal,
                 .mask = MaskKind::additive, .add_shape = s, .path = path},
                rng);
}

TEST(CudaAttention, GroupedAndReverseSparseQueryHeads) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(46);
  const std::pair<int, int> heads[] = {{8, 2}, {6, 1}, {2, 4}, {1, 3}};
  for (const auto& [hq, hkv] : heads)
    for (DType dt : {DType::F32, DType::F16, DType::BF16})
      for (Path path : {Path::automatic, Path::generic}) {
        check({.Tq = 50, .Tk = 70, .Hq = hq, .Hkv = hkv, .D = 64, .dt = dt, .path = path}, rng);
        // Reverse SQA with a per-output-head additive mask [B, Ho, Tq, Tk].
        if (hq < hkv)
          check({.Tq = 20, .Tk = 20, .Hq = hq, .Hkv = hkv, .D = 32, .dt = dt, .mask = MaskKind::additive,
                 .add_shape = Shape{2, hkv, 20, 20}, .path = path},
                rng);
      }
}

TEST(CudaAttention, FusedQkvSlices) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(47);
  for (DType dt : {DType::F32, DType::F16, DType::BF16})
    for (int D : {64, 128, 80})
      for (bool causal : {false, true})
        check({.B = 2, .Tq = 197, .Tk = 197, .Hq = 4, .Hkv = 4, .D = D, .dt = dt, .causal = causal, .fused = true},
              rng);
}

TEST(CudaAttention, EmptyAndTinyProblems) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(48);
  for (DType dt : {DType::F32, DType::BF16}) check({.B = 1, .Tq = 1, .Tk = 1, .D = 64, .dt = dt}, rng);
  // No keys: zeros.
  const Tensor q = upload(ref::random_tensor({2, 3, 64}, DType::F16, rng));
  const Tensor kv = upload(Tensor::zeros({2, 0, 64}, DType::F16));
  Tensor y = poisoned({2, 3, 64}, DType::F16);
  cuda::attention(q, kv, kv, {}, {.num_heads = 1}, y, context());
  EXPECT_TRUE(close_to(y, Tensor::zeros({2, 3, 64}, DType::F32), 0.0));
}

// A NaN score makes its query row NaN on every kernel, as on the CPU (Attention.NaNScoresMakeTheir-
// RowsNaN) and in torch; rows that never see the NaN key stay finite.
TEST(CudaAttention, NaNScoresMakeTheirRowsNaN) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(49);
  const std::int64_t T = 300, D = 64;
  for (DType dt : {DType::F32, DType::F16})
    for (Path path : {Path::generic, Path::tensor_core, Path::hopper, Path::automatic})
      for (const bool causal : {false, true}) {
        if (dt == DType::F32 && path != Path::generic) continue;
        if (path == Path::hopper && runtime().sm() < 90) continue;
        SCOPED_TRACE(std::string(dtype_name(dt)) + " path " + std::to_string(static_cast<int>(path)) +
                     (causal ? " causal" : ""));
        Tensor q = ref::random_tensor({1, T, 2 * D}, DType::F32, rng), k = ref::random_tensor({1, T, 2 * D}, DType::F32, rng);
        const Tensor v = ref::random_tensor({1, T, 2 * D}, DType::F32, rng);
        k.at<float>({0, 200, D + 3}) = std::numeric_limits<float>::quiet_NaN();  // head 1, key 200
        q.at<float>({0, 7, 2}) = std::numeric_limits<float>::quiet_NaN();        // head 0, row 7
        Tensor sentinel = Tensor::empty({1, T, 2 * D}, DType::F32);
        sentinel.fill(1000.0);  // exact in f16/bf16; an unwritten row is neither NaN nor a plausible output
        Tensor y = upload(sentinel.to(dt));
        const AttentionAttrs a{.num_heads = 2, .causal = causal};
        cuda::attn::attention_impl(upload(q.to(dt)), upload(k.to(dt)), upload(v.to(dt)), {}, a, y, context(), path);
        const Tensor got = download(y).to(DType::F32);
        for (std::int64_t t = 0; t < T; ++t)
          for (int h = 0; h < 2; ++h) {
            const bool nan_row = (h == 0 && t == 7) || (h == 1 && (!causal || t >= 200));
            const float x = got.at<float>({0, t, h * D + 1});
            if (nan_row) ASSERT_TRUE(std::isnan(x)) << "row " << t << " head " << h;
            else ASSERT_TRUE(std::isfinite(x) && x != 1000.0f) << "row " << t << " head " << h << " " << x;
          }
      }
}

// ---- the wgmma kernel (Path::hopper) ----------------------------------------------------------------

// How q/k/v lie in memory. Every layout keeps rows 16-byte aligned, as the kernel needs.
enum class Layout { contiguous, fused, padded, time_major };

struct HopCase {
  std::int64_t B = 2, Tq = 77, Tk = 77;
  int Hq = 2, Hkv = 2, D = 64;
  DType dt = DType::F16;
  bool causal = false;
  MaskKind mask = MaskKind::none;
  MaskFill fill = MaskFill::lowest;
  Shape add_shape;  // additive mask shape (empty: [B, 1, Tq, Tk])
  Layout layout = Layout::contiguous;
  double range = 1.0;  // inputs uniform in [-range, range): larger is a peakier softmax
  bool f32_out = false;  // output in f32 rather than the input dtype

  std::string str() const {
    return "B " + std::to_string(B) + " Tq " + std::to_string(Tq) + " Tk " + std::to_string(Tk) + " Hq " +
           std::to_string(Hq) + " Hkv " + std::to_string(Hkv) + " D " + std::to_string(D) + " " + dtype_name(dt) +
           (causal ? " causal" : "") + " mask " + std::to_string(static_cast<int>(mask)) +
           (fill == MaskFill::neg_infinity ? " -inf" : "") + " layout " + std::to_string(static_cast<int>(layout)) +
           " range " + std::to_string(range) + (f32_out ? " f32 out" : "");
  }
};

/// A random [B, T, W] view in `layout` (fused: the slice [off, off + W) of a [B, T, total] buffer).
Tensor laid_out(std::int64_t B, std::int64_t T, std::int64_t W, DType dt, Layout layout, std::mt19937& rng,
                double range) {
  switch (layout) {
    case Layout::padded:  // rows of W + 24 elements, the view 8 elements in
      return ref::random_tensor({B, T, W + 24}, dt, rng, -range, range).slice(2, 8, 8 + W);
    case Layout::time_major:  // [T, B, W + 8] in memory: batch stride < token stride
      return ref::random_tensor({T, B, W + 8}, dt, rng, -range, range).slice(2, 8, 8 + W).transpose(0, 1);
    default: return ref::random_tensor({B, T, W}, dt, rng, -range, range);
  }
}

/// Runs `c` on Path::hopper against the double reference; also checks that Path::automatic takes
/// the same kernel (bit-identical output) when `check_auto`.
void check_hopper(const HopCase& c, std::mt19937& rng, bool check_auto = false) {
  const std::int64_t qw = c.Hq * c.D, kw = c.Hkv * c.D;
  Tensor q, k, v;
  if (c.layout == Layout::fused) {
    if (c.Tq == c.Tk) {  // self-attention: one [B, T, qw + 2 kw] projection
      const Tensor qkv = ref::random_tensor({c.B, c.Tq, qw + 2 * kw}, c.dt, rng, -c.range, c.range);
      q = qkv.slice(2, 0, qw), k = qkv.slice(2, qw, qw + kw), v = qkv.slice(2, qw + kw, qw + 2 * kw);
    } else {  // cross-attention: q alone, k and v from one [B, Tk, 2 kw] projection
      q = ref::random_tensor({c.B, c.Tq, qw}, c.dt, rng, -c.range, c.range);
      const Tensor kv = ref::random_tensor({c.B, c.Tk, 2 * kw}, c.dt, rng, -c.range, c.range);
      k = kv.slice(2, 0, kw), v = kv.slice(2, kw, 2 * kw);
    }
  } else {
    q = laid_out(c.B, c.Tq, qw, c.dt, c.layout, rng, c.range);
    k = laid_out(c.B, c.Tk, kw, c.dt, c.layout, rng, c.range);
    v = laid_out(c.B, c.Tk, kw, c.dt, c.layout == Layout::time_major ? Layout::padded : c.layout, rng, c.range);
  }
  const Tensor mask = random_mask(c.mask, c.B, c.Tq, c.Tk, c.add_shape, rng);
  const AttentionAttrs attrs{.num_heads = c.Hq, .num_kv_heads = c.Hkv, .causal = c.causal, .mask = c.mask,
                             .fill = c.fill};
  const ref::RefTensor mref = mask.defined() ? ref::from_tensor(mask) : ref::RefTensor();
  const ref::RefTensor want = ref::attention(ref::from_tensor(q), ref::from_tensor(k), ref::from_tensor(v),
                                             mask.defined() ? &mref : nullptr, attrs);
  const int Ho = std::max(c.Hq, c.Hkv);
  const DType out = c.f32_out ? DType::F32 : c.dt;
  const Tensor qd = upload_view(q), kd = upload_view(k), vd = upload_view(v);
  const Tensor md = mask.defined() ? upload(mask) : Tensor();
  Tensor y = poisoned({c.B, c.Tq, Ho * c.D}, out);
  cuda::attn::attention_impl(qd, kd, vd, md, attrs, y, context(), Path::hopper);
  EXPECT_TRUE(close_to(y, want, 1e-2)) << c.str();
  if (check_auto) {
    Tensor ya = poisoned({c.B, c.Tq, Ho * c.D}, out);
    cuda::attn::attention_impl(qd, kd, vd, md, attrs, ya, context(), Path::automatic);
    const Tensor a = download(ya), h = download(y);
    EXPECT_EQ(std::memcmp(a.data(), h.data(), static_cast<std::size_t>(a.nbytes())), 0)
        << "Path::automatic did not take the wgmma kernel: " << c.str();
  }
}

#define ENCORE_REQUIRE_HOPPER()                                                                    \
  do {                                                                                             \
    ENCORE_REQUIRE_GPU();                                                                          \
    if (!cuda::attn::hopper_available(context())) GTEST_SKIP() << "no sm_90 device or no sm_90a build"; \
  } while (0)

TEST(CudaAttentionHopper, OddSizesAndLayouts) {
  ENCORE_REQUIRE_HOPPER();
  std::mt19937 rng(71);
  const std::tuple<std::int64_t, std::int64_t, std::int64_t> sizes[] = {
      {1, 1, 1}, {2, 77, 77}, {1, 197, 197}, {2, 130, 300}, {3, 300, 45}, {1, 64, 128}, {2, 129, 257}};
  const Layout layouts[] = {Layout::contiguous, Layout::fused, Layout::padded, Layout::time_major};
  int n = 0;
  for (int D : {64, 128})
    for (DType dt : {DType::F16, DType::BF16})
      for (const auto& [B, tq, tk] : sizes) {
        const Layout layout = layouts[n++ % 4];
        check_hopper({.B = B, .Tq = tq, .Tk = tk, .D = D, .dt = dt, .layout = layout}, rng, /*check_auto=*/true);
      }
  // A peaky softmax (scores up to ~100): the running max moves a lot between tiles.
  for (DType dt : {DType::F16, DType::BF16})
    check_hopper({.B = 2, .Tq = 200, .Tk = 400, .D = 64, .dt = dt, .range = 3.0}, rng);
  // f32 output from f16 inputs.
  check_hopper({.B = 1, .Tq = 70, .Tk = 140, .D = 128, .dt = DType::F16, .f32_out = true}, rng);
}

// D = 64 computes a last key tile only as wide as its keys rounded up to 32 (S = Q K^T of width
// 32, 64 or 96, and P V over as many keys): every width, with the end of the keys at different
// places inside it, and a tail of a full 128 keys less one.
TEST(CudaAttentionHopper, NarrowLastTileOfEveryWidth) {
  ENCORE_REQUIRE_HOPPER();
  std::mt19937 rng(91);
  int n = 0;
  for (int r : {1, 17, 32, 34, 50, 69, 80, 90, 100, 113, 127}) {
    const DType dt = n++ % 2 == 0 ? DType::F16 : DType::BF16;
    check_hopper({.B = 2, .Tq = 70, .Tk = 128 + r, .D = 64, .dt = dt}, rng, /*check_auto=*/true);
  }
  check_hopper({.B = 1, .Tq = 100, .Tk = 3 * 128 + 69, .D = 64, .dt = DType::F16, .range = 3.0}, rng);
}

TEST(CudaAttentionHopper, Causal) {
  ENCORE_REQUIRE_HOPPER();
  std::mt19937 rng(72);
  // Tq == Tk; decode-like Tq < Tk (offset Tk - Tq); Tq > Tk (leading rows fully masked).
  const std::pair<std::int64_t, std::int64_t> sizes[] = {{130, 130}, {1, 200}, {5, 77},
                                                         {70, 50},   {200, 65}, {333, 333}};
  for (const auto& [tq, tk] : sizes)
    for (DType dt : {DType::BF16, DType::F16})
      for (MaskFill fill : {MaskFill::lowest, MaskFill::neg_infinity})
        for (int D : {64, 128})
          check_hopper({.Tq = tq, .Tk = tk, .D = D, .dt = dt, .causal = true, .fill = fill,
                        .layout = tq == tk ? Layout::fused : Layout::padded},
                       rng);
}

TEST(CudaAttentionHopper, KeyPaddingMasks) {
  ENCORE_REQUIRE_HOPPER();
  std::mt19937 rng(73);
  for (DType dt : {DType::BF16, DType::F16})
    for (MaskFill fill : {MaskFill::lowest, MaskFill::neg_infinity})
      for (bool causal : {false, true})
        for (std::int64_t tk : {67, 190})
          check_hopper({.B = 3, .Tq = 67, .Tk = tk, .D = 64, .dt = dt, .causal = causal, .mask = MaskKind::key_padding,
                        .fill = fill},
                       rng);
}

TEST(CudaAttentionHopper, AdditiveMasks) {
  ENCORE_REQUIRE_HOPPER();
  std::mt19937 rng(74);
  const std::int64_t B = 2, T = 150, H = 3;
  for (const Shape& s : {Shape{B, 1, T, T}, Shape{T, T}, Shape{B, H, T, T}, Shape{1, 1, 1, T}, Shape{B, 1, 1, T}})
    for (DType dt : {DType::F16, DType::BF16})
      for (bool causal : {false, true})
        check_hopper({.B = B, .Tq = T, .Tk = T, .Hq = H, .Hkv = H, .D = 64, .dt = dt, .causal = causal,
                      .mask = MaskKind::additive, .add_shape = s, .layout = Layout::fused},
                     rng);
  check_hopper({.B = B, .Tq = 90, .Tk = 260, .Hq = 2, .Hkv = 2, .D = 128, .dt = DType::BF16,
                .mask = MaskKind::additive, .fill = MaskFill::neg_infinity},
               rng);
}

TEST(CudaAttentionHopper, GroupedAndReverseSparseQueryHeads) {
  ENCORE_REQUIRE_HOPPER();
  std::mt19937 rng(75);
  const std::pair<int, int> heads[] = {{8, 2}, {6, 1}, {2, 4}, {1, 3}};
  for (const auto& [hq, hkv] : heads)
    for (DType dt : {DType::F16, DType::BF16}) {
      check_hopper({.Tq = 150, .Tk = 170, .Hq = hq, .Hkv = hkv, .D = 64, .dt = dt, .layout = Layout::padded}, rng);
      if (hq < hkv)  // a per-output-head additive mask [B, Ho, Tq, Tk]
        check_hopper({.Tq = 40, .Tk = 40, .Hq = hq, .Hkv = hkv, .D = 128, .dt = dt, .mask = MaskKind::additive,
                      .add_shape = Shape{2, hkv, 40, 40}},
                     rng);
    }
}

TEST(CudaAttentionHopper, ManyBlocks) {
  ENCORE_REQUIRE_HOPPER();
  std::mt19937 rng(76);
  // Enough blocks for the two-warpgroup configuration (>= half the multiprocessors), several
  // K/V tiles per block (the ring wraps), causal blocks scheduled longest first.
  for (bool causal : {false, true})
    for (int D : {64, 128})
      check_hopper({.B = 3, .Tq = 500, .Tk = 500, .Hq = 6, .Hkv = 6, .D = D, .dt = causal ? DType::BF16 : DType::F16,
                    .causal = causal, .layout = D == 64 ? Layout::fused : Layout::time_major},
                   rng, /*check_auto=*/true);
}

TEST(CudaAttentionHopper, PersistentBlocksTakeSeveralItems) {
  ENCORE_REQUIRE_HOPPER();
  std::mt19937 rng(79);
  // The default grid is persistent (two blocks per multiprocessor at D = 64, one at D = 128): on
  // the H200's 132 multiprocessors 720 work items at D = 64 (264 blocks) and 360 at D = 128 (132
  // blocks) give blocks two and three items, one after the other, on a K/V ring and a Q barrier
  // whose phases run on across them. In turn: items with different numbers of key tiles (causal),
  // items with none at all (causal with Tq > Tk and -inf fill: the first query blocks see no key),
  // cross-attention with a key-padding mask (every tile on the per-element path). The automatic
  // path must take the same kernel.
  for (int D : {64, 128}) {
    check_hopper({.B = 12, .Tq = 600, .Tk = 600, .Hq = 6, .Hkv = 6, .D = D, .dt = DType::F16,
                  .layout = Layout::fused}, rng, /*check_auto=*/true);
    check_hopper({.B = 12, .Tq = 600, .Tk = 600, .Hq = 6, .Hkv = 3, .D = D, .dt = DType::BF16, .causal = true},
                 rng, /*check_auto=*/true);
    check_hopper({.B = 12, .Tq = 600, .Tk = 100, .Hq = 6, .Hkv = 6, .D = D, .dt = DType::F16, .causal = true,
                  .fill = MaskFill::neg_infinity}, rng, /*check_auto=*/true);
    check_hopper({.B = 12, .Tq = 600, .Tk = 333, .Hq = 6, .Hkv = 6, .D = D, .dt = DType::F16,
                  .mask = MaskKind::key_padding, .layout = Layout::fused}, rng);
    // Keys a multiple of the 128-key tile, no mask: every tile after the first (which has code of
    // its own), the last one and its release of Q included, runs in the unmasked loop; also with
    // exactly two tiles per item.
    check_hopper({.B = 12, .Tq = 512, .Tk = 512, .Hq = 6, .Hkv = 6, .D = D, .dt = DType::BF16,
                  .layout = Layout::fused}, rng, /*check_auto=*/true);
    check_hopper({.B = 12, .Tq = 300, .Tk = 256, .Hq = 6, .Hkv = 6, .D = D, .dt = DType::F16}, rng);
  }
}

TEST(CudaAttentionHopper, EveryLaunchShapeAgrees) {
  ENCORE_REQUIRE_HOPPER();
  // The shapes the kernel does not choose by default stay correct (they are kept for exploration
  // through ENCORE_ATTN_HOPPER_SHAPE): one or two groups, one or two blocks per multiprocessor,
  // persistent or one item per block. Restores the default choice whatever happens.
  struct Restore {
    ~Restore() { cuda::attn::set_hopper_shape_for_testing(""); }
  } restore;
  std::mt19937 rng(83);
  for (const char* shape : {"1", "2", "1x2", "1+p", "2+p", "1x2+p"}) {
    SCOPED_TRACE(shape);
    cuda::attn::set_hopper_shape_for_testing(shape);
    for (int D : {64, 128}) {
      check_hopper({.B = 6, .Tq = 300, .Tk = 300, .Hq = 12, .Hkv = 4, .D = D, .dt = DType::BF16, .causal = true,
                    .layout = Layout::fused}, rng);
      check_hopper({.B = 5, .Tq = 257, .Tk = 130, .Hq = 12, .Hkv = 12, .D = D, .dt = DType::F16,
                    .mask = MaskKind::additive}, rng);
      check_hopper({.B = 4, .Tq = 256, .Tk = 384, .Hq = 12, .Hkv = 12, .D = D, .dt = DType::F16}, rng);
    }
  }
  EXPECT_THROW(cuda::attn::set_hopper_shape_for_testing("3"), Error);
  EXPECT_THROW(cuda::attn::set_hopper_shape_for_testing("1x3"), Error);
  EXPECT_THROW(cuda::attn::set_hopper_shape_for_testing("2+q"), Error);
}

TEST(CudaAttentionHopper, RefusesWhatItCannotTake) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(77);
  // D = 80 takes the mma.sync kernel; f32 the CUDA-core one; both refuse Path::hopper.
  for (const auto& [D, dt] : {std::pair{80, DType::F16}, std::pair{64, DType::F32}}) {
    const Tensor q = upload(ref::random_tensor({1, 8, D}, dt, rng));
    Tensor y = poisoned({1, 8, D}, dt);
    EXPECT_THROW(cuda::attn::attention_impl(q, q, q, {}, {.num_heads = 1}, y, context(), Path::hopper), Error);
    cuda::attn::attention_impl(q, q, q, {}, {.num_heads = 1}, y, context(), Path::automatic);
    const ref::RefTensor r = ref::from_tensor(q.to(Device::cpu()));
    EXPECT_TRUE(close_to(y, ref::attention(r, r, r, nullptr, {.num_heads = 1}), dt == DType::F32 ? 1e-5 : 1e-2));
  }
}

// ---- relative-position attention ------------------------------------------------------------------------

void check_rel_pos(std::int64_t T, std::int64_t K, int D, bool masked, DType dt, std::mt19937& rng) {
  const int H = 4;
  const std::int64_t B = 2, HD = H * D;
  const Tensor qkv = ref::random_tensor({B, T, 3 * HD}, dt, rng);
  const Tensor q = qkv.slice(2, 0, HD), k = qkv.slice(2, HD, 2 * HD), v = qkv.slice(2, 2 * HD, 3 * HD);
  const Tensor pos = ref::random_tensor({2 * K + 1, HD}, dt, rng);
  const Tensor bu = ref::random_tensor({H, D}, dt, rng, -0.5, 0.5), bv = ref::random_tensor({H, D}, dt, rng, -0.5, 0.5);
  Tensor mask;
  if (masked) {
    mask = Tensor::empty({B, 1, T}, DType::U8);
    for (std::int64_t j = 0; j < T; ++j) {
      mask.at<std::uint8_t>({0, 0, j}) = j < T - T / 3 ? 1 : 0;  // padded tail
      mask.at<std::uint8_t>({1, 0, j}) = T == 1 ? 0 : (j % 5 != 2);
    }
  }
  const RelPosAttentionAttrs attrs{.num_heads = H, .max_relative = static_cast<int>(K),
                                   .mask = masked ? MaskKind::key_padding : MaskKind::none};
  Tensor want = Tensor::empty({B, T, HD}, DType::F32);
  cpu::rel_pos_attention(as_f32(q), as_f32(k), as_f32(v), as_f32(pos), as_f32(bu), as_f32(bv), mask, attrs, want,
                         kCpu);
  Tensor y = poisoned({B, T, HD}, dt);
  cuda::rel_pos_attention(upload_view(q), upload_view(k), upload_view(v), upload(pos), upload(bu), upload(bv),
                          masked ? upload(mask) : Tensor(), attrs, y, context());
  EXPECT_TRUE(close_to(y, want, dt == DType::F32 ? 2e-5 : 1e-2))
      << "T " << T << " K " << K << " D " << D << " masked " << masked << " " << dtype_name(dt);
}

TEST(CudaRelPosAttention, MatchesCpu) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(51);
  for (std::int64_t T : {1, 37, 100})
    for (std::int64_t K : {0, 3, 200})
      for (bool masked : {false, true})
        for (DType dt : {DType::F32, DType::F16, DType::BF16}) check_rel_pos(T, K, 64, masked, dt, rng);
  for (int D : {16, 80}) check_rel_pos(45, 8, D, true, DType::F32, rng);
}

// ---- rotary embedding ----------------------------------------------------------------------------------

TEST(CudaRope, MatchesCpu) {
  ENCORE_REQUIRE_GPU();
  std::mt19937 rng(61);
  const int H = 3;
  const std::int64_t B = 2, T = 37, D = 32, HD = H * D;
  for (RopeLayout layout : {RopeLayout::half_split, RopeLayout::interleaved})
    for (int R : {0, 32, 16, 8})
      for (std::int64_t offset : {0, 5, 1000})
        for (bool strided : {false, true})
          for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
            // Strided: the q slice of a fused [B, T, 3 HD] projection.
            const Tensor x = strided ? ref::random_tensor({B, T, 3 * HD}, dt, rng).slice(2, HD, 2 * HD)
                                     : ref::random_tensor({B, T, HD}, dt, rng);
            const RopeAttrs a{.num_heads = H, .rotary_dim = R, .base = 10000.0f, .layout = layout,
                              .position_offset = offset};
            Tensor want = Tensor::empty({B, T, HD}, DType::F32);
            cpu::rope(as_f32(x), a, want, kCpu);
            const std::string what = "layout " + std::to_string(static_cast<int>(layout)) + " R " +
                                     std::to_string(R) + " offset " + std::to_string(offset) +
                                     (strided ? " strided " : " ") + dtype_name(dt);
            Tensor y = poisoned({B, T, HD}, dt);
            const Tensor xd = upload_view(x);
            cuda::rope(xd, a, y, context());
            EXPECT_TRUE(close_to(y, want, dt == DType::F32 ? 1e-5 : 1e-2)) << what;
            cuda::rope(xd, a, xd, context());  // in place on the (strided) input
            EXPECT_TRUE(close_to(xd, want, dt == DType::F32 ? 1e-5 : 1e-2)) << what << " in place";
          }
}

}  // namespace
