// Shared by the attention kernels (attention.cu: CUDA-core and mma.sync kernels, sm_90;
// attention_hopper.cu: the wgmma kernel, sm_90a): the parameter block, the head mapping, the mask
// semantics, and the entry point of the Hopper kernel.
#pragma once

#include <cstdint>

#include "kernels/cuda/kernel_common.cuh"

namespace encore::cuda::attn {

using kc::i64;

/// Everything the attention kernels need (element strides; head h of a token row starts at h*D).
struct AttnParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* y = nullptr;  // contiguous [B, Tq, Ho*D]
  int dt_in = 0, dt_out = 0;
  i64 B = 0, Tq = 0, Tk = 0;
  int Hq = 1, Hkv = 1, Ho = 1, D = 0;
  i64 q_sb = 0, q_st = 0, q_se = 1, k_sb = 0, k_st = 0, k_se = 1, v_sb = 0, v_st = 0, v_se = 1;
  float scale = 1.0f;
  bool causal = false;
  i64 causal_offset = 0;  // query t sees keys j <= t + causal_offset
  float fill = 0.0f;      // value of a masked score: float lowest or -inf
  bool fill_neg_inf = false;
  const std::uint8_t* kpm = nullptr;  // key padding [B, Tk], nonzero = attend
  i64 kpm_sb = 0, kpm_st = 0;
  const void* add = nullptr;  // additive mask, strides for [B, H, Tq, Tk] (0 = broadcast)
  int add_dt = 0;
  i64 add_sb = 0, add_sh = 0, add_sq = 0, add_sk = 0;
  bool add_by_out = false;  // the mask's head dim is Ho (reverse SQA) rather than Hq
};

/// Query and kv head of output head oh: GQA/MQA repeat-interleave, or reverse SQA tiling.
__device__ __forceinline__ void map_heads(const AttnParams& p, int oh, int& qh, int& kvh) {
  if (p.Hq >= p.Hkv) {
    qh = oh;
    kvh = oh / (p.Hq / p.Hkv);
  } else {
    qh = oh % p.Hq;
    kvh = oh;
  }
}

/// A scaled score after masking (query qi < Tq, key kj < Tk): causal and key padding replace it
/// with the fill value, then the additive mask is added in f32 (GPT-2: where(tril, s, lowest) + m).
__device__ __forceinline__ float mask_score(const AttnParams& p, float s, i64 b, int qh, int oh, i64 qi, i64 kj) {
  if (p.causal && kj > qi + p.causal_offset) s = p.fill;
  if (p.kpm != nullptr && p.kpm[b * p.kpm_sb + kj * p.kpm_st] == 0) s = p.fill;
  if (p.add != nullptr)
    s += kc::load_f(p.add, b * p.add_sb + (p.add_by_out ? oh : qh) * p.add_sh + qi * p.add_sq + kj * p.add_sk,
                    p.add_dt);
  return s;
}

/// The wgmma/TMA kernel (attention_hopper.cu, compiled for sm_90a only; present when the build
/// defines ENCORE_ATTN_SM90A). Takes f16/bf16 with D in {64, 128}, unit element strides, rows and
/// the base 16-byte aligned (the caller checks these). Launches on `stream` and returns true, or
/// returns false having launched nothing when this device or build cannot run it (then `why` says
/// why). `device_sm` is major * 10 + minor; `num_sms` sizes the grid choice; `pdl`: launch with
/// programmatic dependent launch (kernels/cuda/pdl.cuh).
bool launch_hopper(const AttnParams& p, int device_sm, int num_sms, bool pdl, cudaStream_t stream, const char** why);

/// The wgmma kernel's launch shape when forced (set_hopper_shape_for_testing, else the environment
/// variable ENCORE_ATTN_HOPPER_SHAPE read at first use): 0 = the kernel's own choice, otherwise
/// groups (1 or 2) | blocks per multiprocessor (1 or 2) << 2 | persistent << 4.
int hopper_shape_override();

}  // namespace encore::cuda::attn
