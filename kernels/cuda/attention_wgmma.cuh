// PTX wrappers of the Hopper attention kernel (attention_hopper.cu, compiled for sm_90a only):
// TMA tile loads (completing on the mbarriers of mbarrier.cuh), wgmma descriptors and the three
// warpgroup MMAs it issues.
//
// Shared-memory tiles are stored as TMA writes them with CU_TENSOR_MAP_SWIZZLE_128B: 128-byte rows
// (64 f16/bf16), the 16-byte chunk c of row r at chunk c ^ (r % 8), atoms of 8 rows (1024 bytes,
// 1024-byte aligned). A head dim of 128 is two such column blocks, one after the other. wgmma
// reads that layout through a descriptor (PTX ISA, "Matrix Descriptor Format"):
//   start address >> 4 (bits 0-13), leading byte offset >> 4 (16-29), stride byte offset >> 4
//   (32-45), swizzle mode 1 = 128B (bits 62-63).
// - K-major operands (Q as A, K as B: 16 reduction elements of a 128-byte row): the stride offset
//   is 1024 (the next 8 rows), the leading offset is unused; k-step kk starts 32 * (kk % 4) bytes
//   into the row of column block kk / 4.
// - V as the MN-major B of P V (imm-trans-b = 1; N = head dim contiguous): the stride offset is
//   1024 (the next 8 keys), the leading offset is the distance to the next 64-column block.
#pragma once

#include <cuda.h>  // CUtensorMap (the type only: encoding goes through the runtime's driver entry point)

#include <cstdint>

#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/mbarrier.cuh"

namespace encore::cuda::attn::hop {

using sm90::mbar_arrive;
using sm90::mbar_expect_tx;
using sm90::mbar_fence_init;
using sm90::mbar_init;
using sm90::mbar_try_wait;
using sm90::mbar_wait;
using sm90::smem_u32;

// ---- TMA ---------------------------------------------------------------------------------------------

/// A box of the 3-d tensor map {column, row, batch} -> shared memory, completing on `bar`.
/// Rows or columns outside the tensor are written as zeros (and still count as transaction bytes).
__device__ __forceinline__ void tma_load(void* dst, const CUtensorMap* map, std::uint64_t* bar, int c0, int c1,
                                         int c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5}], [%2];\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2)
      : "memory");
}

// ---- wgmma -------------------------------------------------------------------------------------------

/// Descriptor of a 128B-swizzled operand (see the header comment), in two words: the low word
/// (start address and leading offset) changes from one operand to the next, by (bytes moved) / 16
/// as long as the address stays below 256 KB (all of shared memory), so that a k-step is one add;
/// the high word (stride 1024, 128B swizzle) is the same for every operand of these kernels.
__device__ __forceinline__ std::uint32_t desc_lo(std::uint32_t addr, std::uint32_t lead) {
  return ((addr & 0x3FFFF) >> 4) | ((lead >> 4) << 16);
}
constexpr std::uint32_t kDescHi = (1024u >> 4) | (1u << 30);
__device__ __forceinline__ std::uint64_t desc_of(std::uint32_t lo) {
  return (static_cast<std::uint64_t>(kDescHi) << 32) | lo;
}

/// Orders this thread's register writes before the next wgmma reads them (wgmma.fence).
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
/// Waits until at most N committed groups of this warpgroup are still running.
template <int N>
__device__ __forceinline__ void wg_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
/// Pins a register the asynchronous wgmma reads or writes: the compiler may neither move its uses
/// above the preceding wg_wait nor reuse its register before it.
__device__ __forceinline__ void pin(float& r) { asm volatile("" : "+f"(r)::"memory"); }
__device__ __forceinline__ void pin(unsigned& r) { asm volatile("" : "+r"(r)::"memory"); }

/// The warpgroup MMAs (f32 accumulators): ss_nN is D[64xN] (+)= A[64x16] B[16xN] with both
/// operands in shared memory, K-major (S = Q K^T; N < 128 for a narrow last key tile; scale_d = 0
/// overwrites D); rs_nN is
/// D[64xN] += A[64x16] B[16xN] with A in registers (the mma.m16n8k16 A layout per warp, warp w of
/// the group holding rows 16w..16w+15) and B MN-major in shared memory (O += P V).
template <typename T>
struct Wgmma;

// The f16 and bf16 instructions differ only in their type suffix: one body, TY = "f16" / "bf16".
// Accumulator operand lists (d[0..N)) and their %-placeholders are spelled once here.
#define ENCORE_WG_REGS16                                                                           \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
#define ENCORE_WG_D16                                                                              \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),              \
  "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),          \
  "+f"(d[14]), "+f"(d[15])
#define ENCORE_WG_REGS32                                                                           \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19,"      \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define ENCORE_WG_D32                                                                              \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),              \
  "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),          \
  "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),       \
  "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),       \
  "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define ENCORE_WG_REGS48                                                                           \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19,"      \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37,"      \
  "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47"
#define ENCORE_WG_D48                                                                              \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),              \
  "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),          \
  "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),       \
  "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),       \
  "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),       \
  "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),       \
  "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47])
#define ENCORE_WG_REGS64                                                                           \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19,"      \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37,"      \
  "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55,"      \
  "%56, %57, %58, %59, %60, %61, %62, %63"
#define ENCORE_WG_D64                                                                              \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),              \
  "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),          \
  "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),       \
  "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),       \
  "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),       \
  "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),       \
  "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),       \
  "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),       \
  "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),       \
  "+f"(d[63])
// D (+)= A B of width N, both operands in shared memory (a, b: descriptors; scale_d 0 overwrites d):
// REGS/DREGS list the N / 2 accumulators; A, B, P are the operand numbers after them.
#define ENCORE_WG_SS(TY, N, REGS, DREGS, A, B, P)                                                  \
  static __device__ __forceinline__ void ss_n##N(float (&d)[N / 2], std::uint64_t a, std::uint64_t b, \
                                                 int scale_d) {                                    \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" #P ", 0;\n"                                  \
                 "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TY "." TY " {" REGS              \
                 "}, %" #A ", %" #B ", p, 1, 1, 0, 0;\n}\n"                                       \
                 : DREGS                                                                           \
                 : "l"(a), "l"(b), "r"(scale_d));                                                  \
  }
#define ENCORE_WG_OPS(TY)                                                                          \
  ENCORE_WG_SS(TY, 32, ENCORE_WG_REGS16, ENCORE_WG_D16, 16, 17, 18)                                \
  ENCORE_WG_SS(TY, 64, ENCORE_WG_REGS32, ENCORE_WG_D32, 32, 33, 34)                                \
  ENCORE_WG_SS(TY, 96, ENCORE_WG_REGS48, ENCORE_WG_D48, 48, 49, 50)                                \
  ENCORE_WG_SS(TY, 128, ENCORE_WG_REGS64, ENCORE_WG_D64, 64, 65, 66)                               \
  static __device__ __forceinline__ void rs_n64(float (&d)[32], const unsigned (&a)[4], std::uint64_t b) { \
    asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " {" ENCORE_WG_REGS32      \
                 "}, {%32, %33, %34, %35}, %36, 1, 1, 1, 1;\n"                                      \
                 : ENCORE_WG_D32                                                                   \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));                            \
  }                                                                                                \
  static __device__ __forceinline__ void rs_n128(float (&d)[64], const unsigned (&a)[4], std::uint64_t b) { \
    asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " {" ENCORE_WG_REGS64     \
                 "}, {%64, %65, %66, %67}, %68, 1, 1, 1, 1;\n"                                      \
                 : ENCORE_WG_D64                                                                   \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));                            \
  }

template <>
struct Wgmma<__half> {
  ENCORE_WG_OPS("f16")
};
template <>
struct Wgmma<__nv_bfloat16> {
  ENCORE_WG_OPS("bf16")
};

#undef ENCORE_WG_OPS
#undef ENCORE_WG_SS
#undef ENCORE_WG_D64
#undef ENCORE_WG_D48
#undef ENCORE_WG_D32
#undef ENCORE_WG_D16
#undef ENCORE_WG_REGS64
#undef ENCORE_WG_REGS48
#undef ENCORE_WG_REGS32
#undef ENCORE_WG_REGS16

}  // namespace encore::cuda::attn::hop
