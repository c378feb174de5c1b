// AVX-512 pointwise rows: activations, binary ops, scale, GLUs and 16-bit float conversions.
// Called only after has_avx512() (see simd_avx512.h).
// GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_*: GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include "kernels/cpu/simd_avx512.h"
#include "kernels/cpu/simd_vec_math_avx512.h"

namespace encore::cpu::ewk::avx512 {

using namespace v512;

namespace {

// Element formats a row can be stored in; all compute is f32.
struct F32 {
  using T = float;
  static __m512 load(const T* p) { return _mm512_loadu_ps(p); }
  static __m512 load(const T* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
  static void store(T* p, __m512 v) { _mm512_storeu_ps(p, v); }
  static void store(T* p, __m512 v, __mmask16 m) { _mm512_mask_storeu_ps(p, m, v); }
  static float scalar(const T* p) { return *p; }
};
struct BF16 {
  using T = std::uint16_t;
  static __m512 load(const T* p) { return load_bf16(p); }
  static __m512 load(const T* p, __mmask16 m) { return load_bf16(p, m); }
  static void store(T* p, __m512 v) { store_bf16(p, v); }
  static void store(T* p, __m512 v, __mmask16 m) { store_bf16(p, v, m); }
  static float scalar(const T* p) { return _mm512_cvtss_f32(load(p, 1)); }
};
struct F16 {
  using T = std::uint16_t;
  static __m512 load(const T* p) { return load_f16(p); }
  static __m512 load(const T* p, __mmask16 m) { return load_f16(p, m); }
  static void store(T* p, __m512 v) { store_f16(p, v); }
  static void store(T* p, __m512 v, __mmask16 m) { store_f16(p, v, m); }
  static float scalar(const T* p) { return _mm512_cvtss_f32(load(p, 1)); }
};

// Applies f to 16-lane vectors of x, with a masked tail.
template <typename IO, typename F>
inline void map(const typename IO::T* x, typename IO::T* y, i64 n, F f) {
  i64 i = 0;
  for (; i + 32 <= n; i += 32) {  // two vectors per step hide the polynomial latency
    const __m512 a = f(IO::load(x + i));
    const __m512 b = f(IO::load(x + i + 16));
    IO::store(y + i, a);
    IO::store(y + i + 16, b);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    IO::store(y + i, f(IO::load(x + i, m)), m);
  }
}

template <typename IO, typename F>
inline void map2(const typename IO::T* a, const typename IO::T* b, typename IO::T* y, i64 n, F f) {
  i64 i = 0;
  for (; i + 16 <= n; i += 16) IO::store(y + i, f(IO::load(a + i), IO::load(b + i)));
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    IO::store(y + i, f(IO::load(a + i, m), IO::load(b + i, m)), m);
  }
}

template <typename IO, typename F>
void binary_with(const typename IO::T* a, i64 sa, const typename IO::T* b, i64 sb, typename IO::T* y, i64 n, F f) {
  if (sa == 1 && sb == 1) {
    map2<IO>(a, b, y, n, f);
  } else if (sa == 1) {  // one operand a broadcast scalar; f keeps the operand order
    const __m512 s = _mm512_set1_ps(IO::scalar(b));
    map<IO>(a, y, n, [&](__m512 v) { return f(v, s); });
  } else if (sb == 1) {
    const __m512 s = _mm512_set1_ps(IO::scalar(a));
    map<IO>(b, y, n, [&](__m512 v) { return f(s, v); });
  } else {
    const __m512 r = f(_mm512_set1_ps(IO::scalar(a)), _mm512_set1_ps(IO::scalar(b)));
    for (i64 i = 0; i < n; i += 16) IO::store(y + i, r, tail_mask(n - i));
  }
}

template <typename IO>
void activation_io(const typename IO::T* x, typename IO::T* y, i64 n, Activation act) {
  switch (act) {
    case Activation::none: return map<IO>(x, y, n, [](__m512 v) { return v; });
    case Activation::gelu: return map<IO>(x, y, n, [](__m512 v) { return gelu(v); });
    case Activation::gelu_tanh: return map<IO>(x, y, n, [](__m512 v) { return gelu_tanh(v); });
    // max(0, NaN) keeps the NaN, like torch.relu
    case Activation::relu: return map<IO>(x, y, n, [](__m512 v) { return _mm512_max_ps(_mm512_setzero_ps(), v); });
    case Activation::silu: return map<IO>(x, y, n, [](__m512 v) { return _mm512_mul_ps(v, sigmoid(v)); });
    case Activation::sigmoid: return map<IO>(x, y, n, [](__m512 v) { return sigmoid(v); });
    case Activation::tanh: return map<IO>(x, y, n, [](__m512 v) { return v512::tanh(v); });
  }
}

template <typename IO>
void binary_io(const typename IO::T* a, i64 sa, const typename IO::T* b, i64 sb, typename IO::T* y, i64 n,
               BinaryOp op) {
  switch (op) {
    case BinaryOp::add: return binary_with<IO>(a, sa, b, sb, y, n, [](__m512 u, __m512 v) { return _mm512_add_ps(u, v); });
    case BinaryOp::sub: return binary_with<IO>(a, sa, b, sb, y, n, [](__m512 u, __m512 v) { return _mm512_sub_ps(u, v); });
    case BinaryOp::mul: return binary_with<IO>(a, sa, b, sb, y, n, [](__m512 u, __m512 v) { return _mm512_mul_ps(u, v); });
    case BinaryOp::div: return binary_with<IO>(a, sa, b, sb, y, n, [](__m512 u, __m512 v) { return _mm512_div_ps(u, v); });
  }
}

template <typename IO>
void scale_io(const typename IO::T* x, typename IO::T* y, i64 n, float s, float shift) {
  const __m512 vs = _mm512_set1_ps(s), vb = _mm512_set1_ps(shift);
  map<IO>(x, y, n, [&](__m512 v) { return _mm512_fmadd_ps(v, vs, vb); });
}

}  // namespace

void bf16_to_f32(const std::uint16_t* x, float* y, i64 n) {
  i64 i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, load_bf16(x + i));
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, load_bf16(x + i, m));
  }
}

void f32_to_bf16(const float* x, std::uint16_t* y, i64 n) {
  i64 i = 0;
  for (; i + 16 <= n; i += 16) store_bf16(y + i, _mm512_loadu_ps(x + i));
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    store_bf16(y + i, _mm512_maskz_loadu_ps(m, x + i), m);
  }
}

void f16_to_f32(const std::uint16_t* x, float* y, i64 n) {
  i64 i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, load_f16(x + i));
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, load_f16(x + i, m));
  }
}

void f32_to_f16(const float* x, std::uint16_t* y, i64 n) {
  i64 i = 0;
  for (; i + 16 <= n; i += 16) store_f16(y + i, _mm512_loadu_ps(x + i));
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    store_f16(y + i, _mm512_maskz_loadu_ps(m, x + i), m);
  }
}

void activation(const float* x, float* y, i64 n, Activation act) { activation_io<F32>(x, y, n, act); }

void activation16(const std::uint16_t* x, std::uint16_t* y, i64 n, Activation act, bool bf16) {
  if (bf16) activation_io<BF16>(x, y, n, act);
  else activation_io<F16>(x, y, n, act);
}

void binary(const float* a, i64 sa, const float* b, i64 sb, float* y, i64 n, BinaryOp op) {
  binary_io<F32>(a, sa, b, sb, y, n, op);
}

void binary16(const std::uint16_t* a, i64 sa, const std::uint16_t* b, i64 sb, std::uint16_t* y, i64 n, BinaryOp op,
              bool bf16) {
  if (bf16) binary_io<BF16>(a, sa, b, sb, y, n, op);
  else binary_io<F16>(a, sa, b, sb, y, n, op);
}

void scale(const float* x, float* y, i64 n, float s, float shift) { scale_io<F32>(x, y, n, s, shift); }

void scale16(const std::uint16_t* x, std::uint16_t* y, i64 n, float s, float shift, bool bf16) {
  if (bf16) scale_io<BF16>(x, y, n, s, shift);
  else scale_io<F16>(x, y, n, s, shift);
}

void glu(const float* a, const float* b, float* y, i64 n, GluKind kind) {
  if (kind == GluKind::glu)
    map2<F32>(a, b, y, n, [](__m512 u, __m512 v) { return _mm512_mul_ps(u, sigmoid(v)); });
  else
    map2<F32>(a, b, y, n, [](__m512 u, __m512 v) { return _mm512_mul_ps(_mm512_mul_ps(u, sigmoid(u)), v); });
}

}  // namespace encore::cpu::ewk::avx512
