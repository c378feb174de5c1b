// Runtime CPU feature checks that pick between the *_avx512.cpp, *_avx2.cpp and portable kernels.
#pragma once

namespace encore::cpu {

/// AVX-512 F/BW/VL/DQ (the set *_avx512.cpp files are compiled for).
inline bool has_avx512() noexcept {
  static const bool v = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return v;
}

/// AVX2 + FMA (*_avx2.cpp files are compiled with F16C too, which every AVX2 CPU has, but use no
/// F16C instruction).
inline bool has_avx2() noexcept {
  static const bool v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return v;
}

}  // namespace encore::cpu
