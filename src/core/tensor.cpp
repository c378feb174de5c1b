// Tensor construction and views. Copies and conversions live in tensor_copy.cpp.
#include "encore/core/tensor.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "core/check.h"

namespace encore {

Shape contiguous_strides(const Shape& shape) {
  Shape strides = shape;
  std::int64_t s = 1;
  for (int i = shape.rank() - 1; i >= 0; --i) {
    strides[i] = s;
    s *= std::max<std::int64_t>(shape[i], 1);
  }
  return strides;
}

namespace {
std::size_t checked_bytes(const Shape& shape, DType dtype) {
  const std::int64_t n = shape.numel();
  std::size_t bytes = 0;
  ENCORE_CHECK(!__builtin_mul_overflow(static_cast<std::size_t>(n), dtype_size(dtype), &bytes),
               invalid_argument, "tensor of shape {} and dtype {} is too large to address", shape.str(),
               dtype_name(dtype));
  return bytes;
}
}  // namespace

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  const std::size_t bytes = checked_bytes(shape, dtype);
  return from_storage(Storage::allocate(bytes, device), 0, shape, contiguous_strides(shape), dtype);
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, Device::cpu());
  if (t.nbytes() != 0) std::memset(t.data(), 0, t.nbytes());
  return device.is_cpu() ? t : t.to(device);
}

Tensor Tensor::from_blob(void* data, const Shape& shape, DType dtype, std::shared_ptr<const void> owner,
                         Device device) {
  const std::size_t bytes = checked_bytes(shape, dtype);
  return from_storage(Storage::borrow(data, bytes, device, std::move(owner)), 0, shape,
                      contiguous_strides(shape), dtype);
}

Tensor Tensor::from_storage(std::shared_ptr<Storage> storage, std::size_t offset_bytes, const Shape& shape,
                            const Shape& strides, DType dtype) {
  ENCORE_CHECK(storage != nullptr, invalid_argument, "cannot make a tensor over null storage");
  ENCORE_CHECK(strides.rank() == shape.rank(), invalid_argument,
               "strides {} do not match the rank of shape {}", strides.str(), shape.str());
  const std::int64_t n = shape.numel();
  // The furthest element addressed, checked for overflow, must lie inside the storage.
  std::size_t span_bytes = 0;
  if (n > 0) {
    std::int64_t last = 0;
    for (int i = 0; i < shape.rank(); ++i) {
      ENCORE_CHECK(strides[i] >= 0, invalid_argument, "negative stride {} in {}", strides[i], strides.str());
      std::int64_t step = 0;
      ENCORE_CHECK(!__builtin_mul_overflow(shape[i] - 1, strides[i], &step) &&
                       !__builtin_add_overflow(last, step, &last),
                   invalid_argument, "shape {} with strides {} overflows", shape.str(), strides.str());
    }
    ENCORE_CHECK(!__builtin_mul_overflow(static_cast<std::size_t>(last) + 1, dtype_size(dtype), &span_bytes),
                 invalid_argument, "shape {} with strides {} overflows", shape.str(), strides.str());
  }
  std::size_t end = 0;
  ENCORE_CHECK(!__builtin_add_overflow(offset_bytes, span_bytes, &end) && end <= storage->bytes(),
               invalid_argument,
               "a {} tensor of shape {} with strides {} at byte offset {} needs {} bytes, but its storage "
               "holds {}",
               dtype_name(dtype), shape.str(), strides.str(), offset_bytes, end, storage->bytes());
  const auto address = reinterpret_cast<std::uintptr_t>(storage->data()) + offset_bytes;
  ENCORE_CHECK(n == 0 || address % dtype_size(dtype) == 0, invalid_argument,
               "{} tensor data at byte offset {} is not aligned to {} bytes", dtype_name(dtype), offset_bytes,
               dtype_size(dtype));
  Tensor t;
  t.storage_ = std::move(storage);
  t.offset_ = offset_bytes;
  t.shape_ = shape;
  t.strides_ = strides;
  t.numel_ = n;
  t.dtype_ = dtype;
  return t;
}

Device Tensor::device() const noexcept { return storage_ ? storage_->device() : Device::cpu(); }

void* Tensor::data() const {
  ENCORE_CHECK(defined(), invalid_argument, "cannot access the data of an undefined tensor");
  return static_cast<std::byte*>(storage_->data()) + offset_;
}

bool Tensor::is_contiguous() const noexcept {
  if (numel_ == 0) return true;  // nothing to lay out
  std::int64_t expected = 1;
  for (int i = rank() - 1; i >= 0; --i) {
    if (shape_[i] == 1) continue;
    if (strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

Tensor Tensor::with_layout(const Shape& shape, const Shape& strides, std::size_t offset) const {
  ENCORE_CHECK(defined(), invalid_argument, "cannot take a view of an undefined tensor");
  return from_storage(storage_, offset, shape, strides, dtype_);
}

Tensor Tensor::slice(int dim, std::int64_t start, std::int64_t end, std::int64_t step) const {
  const int d = normalize_axis(dim, rank(), "slice dimension");
  ENCORE_CHECK(step >= 1, invalid_argument, "slice step {} is not valid: expected >= 1", step);
  const std::int64_t extent = shape_[d];
  auto clamp = [extent](std::int64_t v) { return std::clamp(v < 0 ? v + extent : v, std::int64_t{0}, extent); };
  start = clamp(start);
  end = std::max(clamp(end), start);
  Shape shape = shape_, strides = strides_;
  shape[d] = (end - start) / step + ((end - start) % step != 0 ? 1 : 0);  // ceil, without overflow
  // A stride of an extent-1 axis is never applied, so a huge step needs no product there.
  if (shape[d] > 1)
    ENCORE_CHECK(!__builtin_mul_overflow(strides_[d], step, &strides[d]), invalid_argument,
                 "slice step {} of dimension {} (stride {}) overflows", step, d, strides_[d]);
  // A view without elements addresses nothing: it keeps this tensor's offset (a start past the end
  // of the storage is then no error, e.g. slicing a batch of 0 along another axis).
  const std::size_t offset = offset_ + static_cast<std::size_t>(start * strides_[d]) * dtype_size(dtype_);
  return with_layout(shape, strides, shape.numel() == 0 ? offset_ : offset);
}

Tensor Tensor::select(int dim, std::int64_t index) const {
  const int d = normalize_axis(dim, rank(), "select dimension");
  const std::int64_t i = index < 0 ? index + shape_[d] : index;
  ENCORE_CHECK(i >= 0 && i < shape_[d], invalid_argument, "index {} is out of range for dimension {} of {}",
               index, d, shape_.str());
  Shape shape = shape_, strides = strides_;
  shape.erase(d);
  strides.erase(d);
  return with_layout(shape, strides, offset_ + static_cast<std::size_t>(i * strides_[d]) * dtype_size(dtype_));
}

namespace {
// Resolves one -1 extent and checks that the element count is preserved.
Shape infer_shape(const Shape& requested, std::int64_t numel, const Shape& from) {
  Shape shape = requested;
  int infer = -1;
  std::int64_t known = 1;
  for (int i = 0; i < shape.rank(); ++i) {
    if (shape[i] == -1) {
      ENCORE_CHECK(infer < 0, invalid_argument, "shape {} has more than one -1", requested.str());
      infer = i;
    } else {
      ENCORE_CHECK(shape[i] >= 0, invalid_argument, "shape {} has negative extent {}", requested.str(), shape[i]);
      ENCORE_CHECK(!__builtin_mul_overflow(known, shape[i], &known), invalid_argument,
                   "shape {} overflows", requested.str());
    }
  }
  if (infer >= 0) {
    ENCORE_CHECK(known != 0 && numel % known == 0, invalid_argument,
                 "cannot reshape {} ({} elements) to {}", from.str(), numel, requested.str());
    shape[infer] = numel / known;
  }
  ENCORE_CHECK(shape.numel() == numel, invalid_argument, "cannot reshape {} ({} elements) to {} ({} elements)",
               from.str(), numel, requested.str(), shape.numel());
  return shape;
}

// Strides that view `old` (with `old_strides`) as `shape`, if the memory layout allows it: each
// group of old dimensions merged or split must be contiguous among itself (PyTorch's rule).
bool view_strides(const Shape& old, const Shape& old_strides, const Shape& shape, Shape& out) {
  out = shape;
  if (old.numel() == 0 || old.rank() == 0) {
    out = contiguous_strides(shape);
    return true;
  }
  int view_d = shape.rank() - 1;
  std::int64_t chunk_base_stride = old.rank() > 0 ? old_strides[old.rank() - 1] : 1;
  std::int64_t tensor_numel = 1, view_numel = 1;
  for (int d = old.rank() - 1; d >= 0; --d) {
    tensor_numel *= old[d];
    if (d == 0 || (old[d - 1] != 1 && old_strides[d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
        out[view_d] = view_numel * chunk_base_stride;
        view_numel *= shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return false;
      if (d > 0) {
        chunk_base_stride = old_strides[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  return view_d == -1;
}
}  // namespace

Tensor Tensor::view(const Shape& requested) const {
  const Shape shape = infer_shape(requested, numel_, shape_);
  Shape strides;
  ENCORE_CHECK(view_strides(shape_, strides_, shape, strides), invalid_argument,
               "cannot view a tensor of shape {} with strides {} as {} without a copy; use reshape()",
               shape_.str(), strides_.str(), shape.str());
  return with_layout(shape, strides, offset_);
}

Tensor Tensor::reshape(const Shape& requested) const {
  const Shape shape = infer_shape(requested, numel_, shape_);
  Shape strides;
  if (view_strides(shape_, strides_, shape, strides)) return with_layout(shape, strides, offset_);
  return contiguous().view(shape);
}

Tensor Tensor::permute(std::initializer_list<int> order) const {
  return permute(std::span<const int>(order.begin(), order.size()));
}

Tensor Tensor::permute(std::span<const int> order) const {
  ENCORE_CHECK(static_cast<int>(order.size()) == rank(), invalid_argument,
               "permute order has {} entries for a tensor of rank {}", order.size(), rank());
  Shape shape = shape_, strides = strides_;
  std::array<bool, kMaxDims> seen{};
  for (int i = 0; i < rank(); ++i) {
    const int src = normalize_axis(order[static_cast<std::size_t>(i)], rank(), "permute dimension");
    ENCORE_CHECK(!seen[static_cast<std::size_t>(src)], invalid_argument,
                 "permute order [{}] repeats dimension {}", fmt::join(order, ", "), src);
    seen[static_cast<std::size_t>(src)] = true;
    shape[i] = shape_[src];
    strides[i] = strides_[src];
  }
  return with_layout(shape, strides, offset_);
}

Tensor Tensor::transpose(int dim0, int dim1) const {
  const int a = normalize_axis(dim0, rank(), "transpose dimension");
  const int b = normalize_axis(dim1, rank(), "transpose dimension");
  Shape shape = shape_, strides = strides_;
  std::swap(shape[a], shape[b]);
  std::swap(strides[a], strides[b]);
  return with_layout(shape, strides, offset_);
}

Tensor Tensor::squeeze(int dim) const {
  const int d = normalize_axis(dim, rank(), "squeeze dimension");
  ENCORE_CHECK(shape_[d] == 1, invalid_argument, "cannot squeeze dimension {} of {}: its extent is {}, not 1", d,
               shape_.str(), shape_[d]);
  Shape shape = shape_, strides = strides_;
  shape.erase(d);
  strides.erase(d);
  return with_layout(shape, strides, offset_);
}

Tensor Tensor::unsqueeze(int dim) const {
  const int d = normalize_axis(dim, rank() + 1, "unsqueeze dimension");
  Shape shape = shape_, strides = strides_;
  const std::int64_t stride = d < rank() ? strides_[d] * shape_[d] : 1;
  shape.insert(d, 1);
  strides.insert(d, stride);
  return with_layout(shape, strides, offset_);
}

Tensor Tensor::expand(const Shape& target) const {
  ENCORE_CHECK(target.rank() >= rank(), invalid_argument, "cannot expand {} to {}: the target has fewer dimensions",
               shape_.str(), target.str());
  Shape shape = target, strides = target;
  const int lead = target.rank() - rank();
  for (int i = target.rank() - 1; i >= 0; --i) {
    const int src = i - lead;
    if (src < 0) {
      ENCORE_CHECK(target[i] >= 0, invalid_argument, "cannot expand {} to {}: new dimension {} is {}",
                   shape_.str(), target.str(), i, target[i]);
      strides[i] = 0;
      continue;
    }
    const std::int64_t want = target[i] == -1 ? shape_[src] : target[i];
    ENCORE_CHECK(want == shape_[src] || shape_[src] == 1, invalid_argument,
                 "cannot expand {} to {}: dimension {} has extent {}, which is neither {} nor 1", shape_.str(),
                 target.str(), src, shape_[src], want);
    shape[i] = want;
    strides[i] = (want == shape_[src]) ? strides_[src] : 0;
  }
  return with_layout(shape, strides, offset_);
}

std::size_t Tensor::element_offset_bytes(std::span<const std::int64_t> index) const {
  ENCORE_CHECK(static_cast<int>(index.size()) == rank(), invalid_argument,
               "index has {} entries for a tensor of shape {}", index.size(), shape_.str());
  std::int64_t off = 0;
  for (int i = 0; i < rank(); ++i) {
    const std::int64_t v = index[static_cast<std::size_t>(i)];
    ENCORE_CHECK(v >= 0 && v < shape_[i], invalid_argument, "index [{}] is out of bounds for shape {}",
                 fmt::join(index, ", "), shape_.str());
    off += v * strides_[i];
  }
  return offset_ + static_cast<std::size_t>(off) * dtype_size(dtype_);
}

void* Tensor::element_address(std::initializer_list<std::int64_t> index, DType expected) const {
  ENCORE_CHECK(defined(), invalid_argument, "cannot access an element of an undefined tensor");
  ENCORE_CHECK(expected == dtype_, invalid_argument, "tensor is {}, accessed as {}", dtype_name(dtype_),
               dtype_name(expected));
  ENCORE_CHECK(device().is_cpu(), invalid_argument, "element access needs a CPU tensor, this one is on {}",
               device().str());
  const std::size_t off = element_offset_bytes(std::span(index.begin(), index.size()));
  return static_cast<std::byte*>(storage_->data()) + off;
}

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  return fmt::format("Tensor({}, {}, {})", dtype_name(dtype_), shape_.str(), device().str());
}

}  // namespace encore
