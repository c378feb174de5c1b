// encore — tensors: a typed, strided view of shared storage.
//
// A Tensor is cheap to copy (it shares its Storage). Views (slice, select, reshape/view, permute,
// transpose, squeeze, unsqueeze, expand) never copy memory; contiguous(), clone() and to() do.
// Strides are counted in elements and may be 0 (expand) but never negative.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "encore/core/allocator.h"
#include "encore/core/device.h"
#include "encore/core/dtype.h"
#include "encore/core/error.h"
#include "encore/core/shape.h"

namespace encore {

class Tensor {
 public:
  /// An undefined tensor (no storage); defined() is false.
  Tensor() = default;

  /// A new contiguous tensor with uninitialised contents. Throws Error(invalid_argument) for a
  /// negative extent or a byte size that overflows, Error(out_of_memory) when allocation fails.
  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::cpu());
  /// A new contiguous tensor filled with zeros.
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::cpu());
  /// A tensor over caller memory (not copied). `owner`, if given, is kept alive by the tensor;
  /// otherwise the caller keeps `data` alive for as long as any view exists.
  static Tensor from_blob(void* data, const Shape& shape, DType dtype,
                          std::shared_ptr<const void> owner = {}, Device device = Device::cpu());
  /// A view of `storage` at `offset_bytes` with explicit strides (in elements). Checks that every
  /// addressable element lies inside the storage and is aligned for the dtype.
  static Tensor from_storage(std::shared_ptr<Storage> storage, std::size_t offset_bytes,
                             const Shape& shape, const Shape& strides, DType dtype);
  /// A new CPU tensor holding a copy of `values` with the given shape (numel must match).
  template <typename T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape);

  bool defined() const noexcept { return storage_ != nullptr; }
  DType dtype() const noexcept { return dtype_; }
  Device device() const noexcept;
  const Shape& shape() const noexcept { return shape_; }
  const Shape& strides() const noexcept { return strides_; }
  int rank() const noexcept { return shape_.rank(); }
  /// Extent of dimension `i` (negative counts from the back).
  std::int64_t dim(int i) const { return shape_.dim(i); }
  std::int64_t numel() const noexcept { return numel_; }
  /// numel × element size: the bytes of the elements, not of the storage.
  std::size_t nbytes() const noexcept { return static_cast<std::size_t>(numel_) * dtype_size(dtype_); }
  std::size_t offset_bytes() const noexcept { return offset_; }
  const std::shared_ptr<Storage>& storage() const noexcept { return storage_; }

  /// Address of element (0, …, 0). Throws Error(invalid_argument) on an undefined tensor.
  void* data() const;
  /// Typed address of element (0, …, 0); throws Error(invalid_argument) if T does not match dtype.
  template <typename T> T* data_ptr() const;

  /// True when the elements are laid out densely in row-major order.
  bool is_contiguous() const noexcept;

  // ---- views (no copies) -------------------------------------------------------------------
  /// Elements start, start+step, … < end along `dim`. start/end are clamped to [0, dim] like
  /// Python slices (negative values count from the back); step must be >= 1.
  Tensor slice(int dim, std::int64_t start, std::int64_t end, std::int64_t step = 1) const;
  /// Index `index` of `dim`, which is removed.
  Tensor select(int dim, std::int64_t index) const;
  /// Same elements, new shape (one extent may be -1). Throws Error(invalid_argument) when the
  /// strides do not allow a view; use reshape() to copy in that case.
  Tensor view(const Shape& shape) const;
  /// view() when possible, otherwise a contiguous copy reshaped.
  Tensor reshape(const Shape& shape) const;
  /// Reorders dimensions: result dim i is input dim order[i]. order must be a permutation.
  Tensor permute(std::initializer_list<int> order) const;
  Tensor permute(std::span<const int> order) const;
  /// Swaps two dimensions.
  Tensor transpose(int dim0, int dim1) const;
  /// Removes `dim`, which must have extent 1.
  Tensor squeeze(int dim) const;
  /// Inserts an extent-1 dimension before position `dim` (0 … rank).
  Tensor unsqueeze(int dim) const;
  /// Broadcasts extent-1 dimensions (and new leading ones) to `shape` with stride 0. -1 keeps an
  /// extent.
  Tensor expand(const Shape& shape) const;

  // ---- copies ------------------------------------------------------------------------------
  /// This tensor if contiguous, else a contiguous copy on the same device.
  Tensor contiguous() const;
  /// A contiguous copy.
  Tensor clone() const;
  /// A contiguous copy converted to `dtype` (CPU). Floats round to nearest even; float →
  /// integer truncates toward zero and saturates; bool is value != 0. Integers convert to floats
  /// through double: exact up to 2^53, then rounded twice (to double, then to the float type).
  Tensor to(DType dtype) const;
  /// A contiguous copy on `device`.
  Tensor to(Device device) const;
  /// Copies `src` into this tensor's elements (shapes must match; dtypes may differ, CPU only
  /// when they do). Either side may be a strided view on any device (a device's views are
  /// gathered or scattered by its backend, Allocator::copy_view). Overlapping views of one buffer
  /// are allowed: the source is read whole before anything is written.
  void copy_from(const Tensor& src);
  /// Sets every element to `value` converted to the dtype (CPU).
  void fill(double value);

  // ---- element access (tests, tools) ---------------------------------------------------------
  /// Reference to one element by index; checks rank, bounds, dtype and device (CPU only).
  template <typename T> T& at(std::initializer_list<std::int64_t> index) const;
  /// Element `i` of the row-major enumeration, converted to double (CPU only).
  double get(std::int64_t flat_index) const;
  /// All elements in row-major order, converted to float (CPU only).
  std::vector<float> to_float_vector() const;

  /// "Tensor(f32, [2, 3], cpu)".
  std::string str() const;

 private:
  std::size_t element_offset_bytes(std::span<const std::int64_t> index) const;
  void* element_address(std::initializer_list<std::int64_t> index, DType expected) const;
  Tensor with_layout(const Shape& shape, const Shape& strides, std::size_t offset) const;

  std::shared_ptr<Storage> storage_;
  std::size_t offset_ = 0;
  Shape shape_;
  Shape strides_;
  std::int64_t numel_ = 0;
  DType dtype_ = DType::F32;
};

/// Row-major (contiguous) strides for a shape, in elements.
Shape contiguous_strides(const Shape& shape);

template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape) {
  Tensor t = empty(shape, dtype_of<T>());
  if (static_cast<std::int64_t>(values.size()) != t.numel())
    throw Error(ErrorCode::invalid_argument,
                "Tensor::from_vector: " + std::to_string(values.size()) +
                    " values given for shape " + shape.str() + " which holds " +
                    std::to_string(t.numel()));
  T* out = t.data_ptr<T>();
  for (std::size_t i = 0; i < values.size(); ++i) out[i] = values[i];
  return t;
}

template <typename T>
T* Tensor::data_ptr() const {
  if (defined() && dtype_of<T>() != dtype_)
    throw Error(ErrorCode::invalid_argument, std::string("Tensor::data_ptr: tensor is ") +
                                                 dtype_name(dtype_) + ", accessed as " +
                                                 dtype_name(dtype_of<T>()));
  return static_cast<T*>(data());
}

template <typename T>
T& Tensor::at(std::initializer_list<std::int64_t> index) const {
  return *static_cast<T*>(element_address(index, dtype_of<T>()));
}

}  // namespace encore
