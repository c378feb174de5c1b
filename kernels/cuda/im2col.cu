// im2col for convolutions run as GEMMs: col[img, (c, i, j), (oh, ow)] = x[img, c, oh*sh - ph + i*dh,
// ow*sw - pw + j*dw] (0 outside). One thread per col element, so writes are coalesced along
// (oh, ow); x is read through its strides (any view). The patch variant (kernel == stride, no
// padding or dilation: ViT/Segmenter patch embeddings) drops the bounds checks and multiplies.
// Index math runs in 32 bits when the problem fits (integer division is the cost here).
#include <cstdint>

#include "kernels/cuda/gemm_kernels.h"

namespace encore::cuda::kernels {
namespace {

constexpr int kBlock = 256;

template <typename E, typename I, bool kPatch>
__global__ void im2col_kernel(const E* __restrict__ x, E* __restrict__ col, I total, Im2colGeometry g) {
  const I P = static_cast<I>(g.OH * g.OW), KK = static_cast<I>(g.kh * g.kw), R = static_cast<I>(g.C) * KK;
  const I step = static_cast<I>(gridDim.x) * blockDim.x;
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const I p = i % P, rest = i / P;
    const I r = rest % R, img = rest / R;
    const I c = r / KK, k = r % KK;
    const I ki = k / static_cast<I>(g.kw), kj = k % static_cast<I>(g.kw);
    const I oh = p / static_cast<I>(g.OW), ow = p % static_cast<I>(g.OW);
    std::int64_t h, w;
    if constexpr (kPatch) {
      h = static_cast<std::int64_t>(oh) * g.kh + ki;
      w = static_cast<std::int64_t>(ow) * g.kw + kj;
    } else {
      h = static_cast<std::int64_t>(oh) * g.sh - g.ph + static_cast<std::int64_t>(ki) * g.dh;
      w = static_cast<std::int64_t>(ow) * g.sw - g.pw + static_cast<std::int64_t>(kj) * g.dw;
      if (h < 0 || h >= g.H || w < 0 || w >= g.W) {
        col[i] = E{0};  // +0.0 in every float format
        continue;
      }
    }
    col[i] = x[img * g.xs_n + c * g.xs_c + h * g.xs_h + w * g.xs_w];
  }
}

template <typename E, bool kPatch>
cudaError_t launch_typed(const void* x, void* col, std::int64_t total, const Im2colGeometry& g, cudaStream_t stream) {
  const std::int64_t blocks = (total + kBlock - 1) / kBlock;
  const unsigned grid = static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
  // 32-bit indices only while the last grid-stride step cannot pass INT32_MAX (i + step would wrap
  // to a negative index that still compares below total).
  if (total + static_cast<std::int64_t>(grid) * kBlock <= INT32_MAX)
    im2col_kernel<E, std::int32_t, kPatch><<<grid, kBlock, 0, stream>>>(
        static_cast<const E*>(x), static_cast<E*>(col), static_cast<std::int32_t>(total), g);
  else
    im2col_kernel<E, std::int64_t, kPatch><<<grid, kBlock, 0, stream>>>(static_cast<const E*>(x),
                                                                         static_cast<E*>(col), total, g);
  return cudaGetLastError();
}

template <bool kPatch>
cudaError_t launch(const void* x, void* col, std::int64_t elem_size, std::int64_t images, const Im2colGeometry& g,
                   cudaStream_t stream) {
  const std::int64_t total = images * g.C * g.kh * g.kw * g.OH * g.OW;
  if (total <= 0) return cudaSuccess;
  switch (elem_size) {
    case 2: return launch_typed<std::uint16_t, kPatch>(x, col, total, g, stream);
    case 4: return launch_typed<std::uint32_t, kPatch>(x, col, total, g, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t launch_im2col(const void* x, void* col, std::int64_t elem_size, std::int64_t images,
                          const Im2colGeometry& g, cudaStream_t stream) {
  return launch<false>(x, col, elem_size, images, g, stream);
}

cudaError_t launch_patchify(const void* x, void* col, std::int64_t elem_size, std::int64_t images,
                            const Im2colGeometry& g, cudaStream_t stream) {
  if (g.sh != g.kh || g.sw != g.kw || g.ph != 0 || g.pw != 0 || g.dh != 1 || g.dw != 1) return cudaErrorInvalidValue;
  return launch<true>(x, col, elem_size, images, g, stream);
}

}  // namespace encore::cuda::kernels
