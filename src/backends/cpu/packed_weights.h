// Prepacked GEMM/convolution weights: each constant weight is reordered once into the blocked
// layout the oneDNN primitive prefers (the primitive is created with format_tag::any for its
// weights) and reused by every later call, whatever M is.
#pragma once

#include <cstddef>
#include <oneapi/dnnl/dnnl.hpp>

#include "encore/core/tensor.h"

namespace encore::cpu {

/// The process-wide cache of packed weights. An entry is keyed by the weight's identity (storage
/// pointer, byte offset, shape, strides, dtype, and the source descriptor, which encodes the
/// layout) and by the packed layout. Cached weights are treated as immutable constants: a caller
/// that rewrites one in place must call evict(). A weight that is not a constant (a plan's
/// intermediate value, or an input refilled between runs: same address, new contents) is packed
/// per call instead (`cache` false; the graph runner knows which is which). An entry whose
/// storage has died is never reused (it holds only a weak reference), so a new tensor at a
/// recycled address is packed afresh. The memory returned keeps the packed copy alive even if
/// another thread evicts its entry meanwhile.
class PackedWeights {
 public:
  static PackedWeights& instance();

  /// `w`, read through `user_md` (its layout as stored, in the primitive's dimension order),
  /// reordered into `packed_md` (converting the data type if they differ). Packs on the first
  /// call for this identity and layout (on `threads` threads); later calls return the same
  /// memory without touching the weight.
  dnnl::memory get(const Tensor& w, const dnnl::memory::desc& user_md, const dnnl::memory::desc& packed_md,
                   int threads, bool cache = true);

  /// `w` (f32; [K, N], or [N, K] when `out_in`; any strides) in the block layout of
  /// the decode-sized linear (kernels/cpu/linear_rows.h), 64-byte aligned (its data handle). Packs
  /// on the first call for this identity (on `threads` threads), like get().
  dnnl::memory rows_layout(const Tensor& w, bool out_in, int threads, bool cache = true);

  /// Forgets every packed copy of the weights in `w`'s storage.
  void evict(const Tensor& w);
  /// Forgets everything.
  void clear();
  /// Entries held now.
  std::size_t size() const;
  /// Packings performed since the process started (a steady-state call adds none).
  std::size_t packs() const;
  /// Maximum entries (LRU beyond it; default 65536 or $ENCORE_PACKED_WEIGHTS_CAPACITY).
  void set_capacity(std::size_t entries);

 private:
  PackedWeights();
  struct Impl;
  Impl* impl_;
};

}  // namespace encore::cpu
