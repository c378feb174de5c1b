// encore — tensor shapes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>

namespace encore {

/// Most dimensions a tensor may have.
inline constexpr int kMaxDims = 8;

/// A list of up to kMaxDims extents (or strides), stored inline: building shapes never allocates.
/// Extents are int64 and must be >= 0 where a tensor is created from them.
class Shape {
 public:
  Shape() = default;
  /// Throws Error(invalid_argument) when more than kMaxDims values are given.
  Shape(std::initializer_list<std::int64_t> dims);
  explicit Shape(std::span<const std::int64_t> dims);

  int rank() const noexcept { return rank_; }
  bool empty() const noexcept { return rank_ == 0; }
  std::size_t size() const noexcept { return static_cast<std::size_t>(rank_); }

  /// Extent of dimension `i`; negative i counts from the back. Throws on out-of-range i.
  std::int64_t dim(int i) const;
  std::int64_t operator[](int i) const noexcept { return dims_[static_cast<std::size_t>(i)]; }
  std::int64_t& operator[](int i) noexcept { return dims_[static_cast<std::size_t>(i)]; }

  const std::int64_t* begin() const noexcept { return dims_.data(); }
  const std::int64_t* end() const noexcept { return dims_.data() + rank_; }
  std::span<const std::int64_t> span() const noexcept { return {dims_.data(), size()}; }

  /// Appends a dimension; throws Error(invalid_argument) past kMaxDims.
  void push_back(std::int64_t d);
  /// Inserts `d` before position `pos` (0..rank).
  void insert(int pos, std::int64_t d);
  /// Removes dimension `pos`.
  void erase(int pos);

  /// Product of the extents (1 for rank 0). Throws Error(invalid_argument) on a negative extent
  /// or when the product overflows int64.
  std::int64_t numel() const;

  /// "[2, 3, 4]".
  std::string str() const;

  friend bool operator==(const Shape& a, const Shape& b) noexcept;

 private:
  std::array<std::int64_t, kMaxDims> dims_{};
  int rank_ = 0;
};

/// Maps a possibly negative axis to [0, rank); throws Error(invalid_argument) naming `what`.
int normalize_axis(int axis, int rank, const char* what = "axis");

}  // namespace encore
