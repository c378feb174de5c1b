// Tensor copies and dtype conversion on the host (strided, any dtype pair).
#include <cmath>
#include <cstring>
#include <limits>

#include "core/check.h"
#include "core/device_lock.h"
#include "encore/core/tensor.h"

namespace encore {
namespace {

double load_double(const std::byte* p, DType t) {
  switch (t) {
    case DType::F32: { float v; std::memcpy(&v, p, 4); return v; }
    case DType::F16: { Half v; std::memcpy(&v, p, 2); return half_to_float(v); }
    case DType::BF16: { BFloat16 v; std::memcpy(&v, p, 2); return bfloat16_to_float(v); }
    case DType::I8: return static_cast<double>(static_cast<std::int8_t>(*p));
    case DType::U8: return static_cast<double>(static_cast<std::uint8_t>(*p));
    case DType::I32: { std::int32_t v; std::memcpy(&v, p, 4); return v; }
    case DType::I64: { std::int64_t v; std::memcpy(&v, p, 8); return static_cast<double>(v); }
    case DType::Bool: return *p != std::byte{0} ? 1.0 : 0.0;
  }
  return 0;
}

std::int64_t load_int(const std::byte* p, DType t) {
  switch (t) {
    case DType::I32: { std::int32_t v; std::memcpy(&v, p, 4); return v; }
    case DType::I64: { std::int64_t v; std::memcpy(&v, p, 8); return v; }
    case DType::I8: return static_cast<std::int8_t>(*p);
    case DType::U8: return static_cast<std::uint8_t>(*p);
    case DType::Bool: return *p != std::byte{0};
    default: return 0;
  }
}

template <typename I>
I saturate(double v) {
  if (std::isnan(v)) return 0;
  if (v <= static_cast<double>(std::numeric_limits<I>::min())) return std::numeric_limits<I>::min();
  if (v >= static_cast<double>(std::numeric_limits<I>::max())) return std::numeric_limits<I>::max();
  return static_cast<I>(v);  // truncates toward zero
}

template <typename I>
I saturate_int(std::int64_t v) {
  if (v < static_cast<std::int64_t>(std::numeric_limits<I>::min())) return std::numeric_limits<I>::min();
  if (v > static_cast<std::int64_t>(std::numeric_limits<I>::max())) return std::numeric_limits<I>::max();
  return static_cast<I>(v);
}

void store(std::byte* p, DType t, double v) {
  switch (t) {
    case DType::F32: { const float f = static_cast<float>(v); std::memcpy(p, &f, 4); return; }
    case DType::F16: { const Half h = float_to_half(static_cast<float>(v)); std::memcpy(p, &h, 2); return; }
    case DType::BF16: { const BFloat16 b = float_to_bfloat16(static_cast<float>(v)); std::memcpy(p, &b, 2); return; }
    case DType::I8: { const auto x = saturate<std::int8_t>(v); std::memcpy(p, &x, 1); return; }
    case DType::U8: { const auto x = saturate<std::uint8_t>(v); std::memcpy(p, &x, 1); return; }
    case DType::I32: { const auto x = saturate<std::int32_t>(v); std::memcpy(p, &x, 4); return; }
    case DType::I64: { const auto x = saturate<std::int64_t>(v); std::memcpy(p, &x, 8); return; }
    case DType::Bool: *p = std::byte{v != 0.0}; return;
  }
}

void store_int(std::byte* p, DType t, std::int64_t v) {
  switch (t) {
    case DType::I8: { const auto x = saturate_int<std::int8_t>(v); std::memcpy(p, &x, 1); return; }
    case DType::U8: { const auto x = saturate_int<std::uint8_t>(v); std::memcpy(p, &x, 1); return; }
    case DType::I32: { const auto x = saturate_int<std::int32_t>(v); std::memcpy(p, &x, 4); return; }
    case DType::I64: std::memcpy(p, &v, 8); return;
    case DType::Bool: *p = std::byte{v != 0}; return;
    default: store(p, t, static_cast<double>(v)); return;
  }
}

// Calls fn(src_offset_elems, dst_offset_elems) for every element in row-major order.
template <typename Fn>
void for_each_element(const Shape& shape, const Shape& a_strides, const Shape& b_strides, Fn&& fn) {
  const int rank = shape.rank();
  if (shape.numel() == 0) return;
  std::array<std::int64_t, kMaxDims> index{};
  std::int64_t a = 0, b = 0;
  while (true) {
    fn(a, b);
    int d = rank - 1;
    for (; d >= 0; --d) {
      if (++index[static_cast<std::size_t>(d)] < shape[d]) {
        a += a_strides[d];
        b += b_strides[d];
        break;
      }
      a -= a_strides[d] * (shape[d] - 1);
      b -= b_strides[d] * (shape[d] - 1);
      index[static_cast<std::size_t>(d)] = 0;
    }
    if (d < 0) return;
  }
}

void copy_host(const Tensor& src, const Tensor& dst) {
  auto* s = static_cast<const std::byte*>(src.data());
  auto* d = static_cast<std::byte*>(dst.data());
  const std::size_t ss = dtype_size(src.dtype()), ds = dtype_size(dst.dtype());
  if (src.dtype() == dst.dtype()) {
    if (src.is_contiguous() && dst.is_contiguous()) {
      if (src.nbytes() != 0) std::memmove(d, s, src.nbytes());
      return;
    }
    for_each_element(src.shape(), src.strides(), dst.strides(), [&](std::int64_t a, std::int64_t b) {
      std::memcpy(d + b * static_cast<std::int64_t>(ds), s + a * static_cast<std::int64_t>(ss), ss);
    });
    return;
  }
  const bool integral = !is_floating(src.dtype()) && !is_floating(dst.dtype());
  for_each_element(src.shape(), src.strides(), dst.strides(), [&](std::int64_t a, std::int64_t b) {
    const std::byte* from = s + a * static_cast<std::int64_t>(ss);
    std::byte* to = d + b * static_cast<std::int64_t>(ds);
    if (integral) store_int(to, dst.dtype(), load_int(from, src.dtype()));
    else store(to, dst.dtype(), load_double(from, src.dtype()));
  });
}

/// Whether the bytes two tensors may touch intersect (strides are never negative; views are
/// bounds-checked, so the extent stays inside the storage). By address, not by storage object: two
/// tensors borrowed over one user buffer are two storages over the same bytes.
bool overlapping(const Tensor& a, const Tensor& b) {
  if (!a.defined() || !b.defined() || a.device() != b.device() || a.numel() == 0 || b.numel() == 0) return false;
  auto span = [](const Tensor& t) {
    std::int64_t last = 0;
    for (int i = 0; i < t.rank(); ++i) last += (t.dim(i) - 1) * t.strides()[i];
    const auto* begin = static_cast<const std::byte*>(t.data());
    return std::pair{begin, begin + (last + 1) * static_cast<std::int64_t>(dtype_size(t.dtype()))};
  };
  const auto [a0, a1] = span(a);
  const auto [b0, b1] = span(b);
  return a0 < b1 && b0 < a1;
}

}  // namespace

void Tensor::copy_from(const Tensor& src) {
  ENCORE_CHECK(defined() && src.defined(), invalid_argument, "copy_from needs two defined tensors");
  ENCORE_CHECK(src.shape() == shape(), invalid_argument, "copy_from: source shape {} differs from destination {}",
               src.shape().str(), shape().str());
  // Overlapping views of one buffer (e.g. a square matrix and its transpose): the source is read
  // whole before anything is written. The same view onto itself copies nothing.
  if (overlapping(src, *this)) {
    if (src.data() == data() && src.strides() == strides() && src.dtype() == dtype()) return;
    return copy_from(src.clone());
  }
  if (device().is_cpu() && src.device().is_cpu()) return copy_host(src, *this);
  ENCORE_CHECK(src.dtype() == dtype(), unsupported,
               "copy_from between {} and {} must keep the dtype (got {} -> {})", src.device().str(),
               device().str(), dtype_name(src.dtype()), dtype_name(dtype()));
  // Across devices the bytes move in one block: a strided side is first made contiguous where it
  // lives (on the host by copy_host, on a device by its allocator's copy_view kernel).
  if (!src.is_contiguous() && src.device().is_cpu()) return copy_from(src.contiguous());
  if (!is_contiguous() && device().is_cpu()) {
    Tensor staged = empty(shape(), dtype(), Device::cpu());
    staged.copy_from(src);
    return copy_from(staged);
  }
  if (!src.is_contiguous() || !is_contiguous()) {  // a strided view on a device
    // to <- from, both on from's device: its backend's kernel, under the device's lock.
    const auto view_copy = [](const Tensor& to, const Tensor& from) {
      const auto lock = detail::lock_device(from.device());
      allocator_for(from.device().type).copy_view(to, from, from.device());
    };
    if (src.device() == device()) return view_copy(*this, src);
    if (!src.is_contiguous()) {  // gathered on its device, then moved as one block
      Tensor packed = empty(src.shape(), src.dtype(), src.device());
      view_copy(packed, src);
      return copy_from(packed);
    }
    Tensor staged = empty(shape(), dtype(), device());  // moved as one block, then scattered
    staged.copy_from(src);
    return view_copy(*this, staged);
  }
  Allocator& a = allocator_for(device().is_cpu() ? src.device().type : device().type);
  // The devices' locks (core/device_lock.h), the lower ordinal first when both are CUDA devices.
  const bool swap = src.device().is_cuda() && device().is_cuda() && src.device().index > device().index;
  const Device& first = swap ? device() : src.device();
  const Device& second = swap ? src.device() : device();
  const auto lock_first = detail::lock_device(first);
  const auto lock_second = detail::lock_device(second);  // recursive: the same device twice is fine
  a.copy(data(), device(), src.data(), src.device(), nbytes());
}

Tensor Tensor::contiguous() const {
  ENCORE_CHECK(defined(), invalid_argument, "contiguous() of an undefined tensor");
  return is_contiguous() ? *this : clone();
}

Tensor Tensor::clone() const {
  ENCORE_CHECK(defined(), invalid_argument, "clone() of an undefined tensor");
  Tensor out = empty(shape(), dtype(), device());
  out.copy_from(*this);
  return out;
}

Tensor Tensor::to(DType target) const {
  ENCORE_CHECK(defined(), invalid_argument, "to({}) of an undefined tensor", dtype_name(target));
  ENCORE_CHECK(device().is_cpu(), unsupported, "dtype conversion on {} is done by its backend, not Tensor::to",
               device().str());
  Tensor out = empty(shape(), target, device());
  out.copy_from(*this);
  return out;
}

Tensor Tensor::to(Device target) const {
  ENCORE_CHECK(defined(), invalid_argument, "to({}) of an undefined tensor", target.str());
  const Tensor src = device().is_cpu() ? contiguous() : *this;
  Tensor out = empty(shape(), dtype(), target);
  out.copy_from(src);
  return out;
}

void Tensor::fill(double value) {
  ENCORE_CHECK(defined() && device().is_cpu(), invalid_argument, "fill() needs a defined CPU tensor, got {}", str());
  std::byte tmp[8];
  store(tmp, dtype_, value);
  auto* d = static_cast<std::byte*>(data());
  const std::size_t es = dtype_size(dtype_);
  for_each_element(shape_, strides_, strides_, [&](std::int64_t, std::int64_t b) {
    std::memcpy(d + b * static_cast<std::int64_t>(es), tmp, es);
  });
}

double Tensor::get(std::int64_t flat_index) const {
  ENCORE_CHECK(defined() && device().is_cpu(), invalid_argument, "get() needs a defined CPU tensor, got {}", str());
  ENCORE_CHECK(flat_index >= 0 && flat_index < numel_, invalid_argument, "flat index {} is out of range for {}",
               flat_index, str());
  std::int64_t off = 0, rem = flat_index;
  for (int i = rank() - 1; i >= 0; --i) {
    off += (rem % shape_[i]) * strides_[i];
    rem /= shape_[i];
  }
  return load_double(static_cast<const std::byte*>(data()) + off * static_cast<std::int64_t>(dtype_size(dtype_)),
                     dtype_);
}

std::vector<float> Tensor::to_float_vector() const {
  ENCORE_CHECK(defined() && device().is_cpu(), invalid_argument,
               "to_float_vector() needs a defined CPU tensor, got {} (copy it to the CPU first)", str());
  const Tensor f = dtype_ == DType::F32 ? contiguous() : to(DType::F32);
  const float* p = f.data_ptr<float>();
  return std::vector<float>(p, p + f.numel());
}

}  // namespace encore
