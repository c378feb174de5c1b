#include "encore/core/shape.h"

#include <algorithm>

#include "core/check.h"

namespace encore {

Shape::Shape(std::initializer_list<std::int64_t> dims) : Shape(std::span(dims.begin(), dims.size())) {}

Shape::Shape(std::span<const std::int64_t> dims) {
  ENCORE_CHECK(dims.size() <= static_cast<std::size_t>(kMaxDims), invalid_argument,
               "shape has {} dimensions, at most {} are supported", dims.size(), kMaxDims);
  std::copy(dims.begin(), dims.end(), dims_.begin());
  rank_ = static_cast<int>(dims.size());
}

std::int64_t Shape::dim(int i) const { return dims_[static_cast<std::size_t>(normalize_axis(i, rank_, "dimension"))]; }

void Shape::push_back(std::int64_t d) {
  ENCORE_CHECK(rank_ < kMaxDims, invalid_argument,
               "cannot add a dimension to {}: at most {} are supported", str(), kMaxDims);
  dims_[static_cast<std::size_t>(rank_++)] = d;
}

void Shape::insert(int pos, std::int64_t d) {
  ENCORE_CHECK(pos >= 0 && pos <= rank_, invalid_argument,
               "cannot insert a dimension at {} into {}: expected 0..{}", pos, str(), rank_);
  push_back(0);
  for (int i = rank_ - 1; i > pos; --i) dims_[static_cast<std::size_t>(i)] = dims_[static_cast<std::size_t>(i - 1)];
  dims_[static_cast<std::size_t>(pos)] = d;
}

void Shape::erase(int pos) {
  ENCORE_CHECK(pos >= 0 && pos < rank_, invalid_argument,
               "cannot remove dimension {} of {}: expected 0..{}", pos, str(), rank_ - 1);
  for (int i = pos; i + 1 < rank_; ++i) dims_[static_cast<std::size_t>(i)] = dims_[static_cast<std::size_t>(i + 1)];
  --rank_;
}

std::int64_t Shape::numel() const {
  std::int64_t n = 1;
  for (int i = 0; i < rank_; ++i) {
    const std::int64_t d = dims_[static_cast<std::size_t>(i)];
    ENCORE_CHECK(d >= 0, invalid_argument, "shape {} has negative extent {} at dimension {}", str(), d, i);
    ENCORE_CHECK(!__builtin_mul_overflow(n, d, &n), invalid_argument,
                 "shape {} has more elements than fit in a 64-bit count", str());
  }
  return n;
}

std::string Shape::str() const { return fmt::format("[{}]", fmt::join(span(), ", ")); }

bool operator==(const Shape& a, const Shape& b) noexcept {
  return a.rank_ == b.rank_ && std::equal(a.begin(), a.end(), b.begin());
}

int normalize_axis(int axis, int rank, const char* what) {
  const int a = axis < 0 ? axis + rank : axis;
  ENCORE_CHECK(a >= 0 && a < rank, invalid_argument, "{} {} is out of range for rank {}: expected {}..{}",
               what, axis, rank, -rank, rank - 1);
  return a;
}

}  // namespace encore
