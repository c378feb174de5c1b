// encore — safetensors reading and writing.
//
// The reader validates the whole header before any tensor is handed out: header length cap,
// UTF-8 JSON object, dtype allow-list, shapes, end-begin == numel*size (overflow-checked),
// offsets sorted, non-overlapping and covering the data section exactly, no duplicate names,
// string-only __metadata__. Any defect throws Error(bad_model_file) naming the file, the tensor
// (where there is one) and what was expected; a valid file encore cannot read (a dtype of the format
// it does not support, such as F64 or F8, or more than 8 dimensions) throws Error(unsupported).
// Tensors are zero-copy views of the mapped file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "encore/core/tensor.h"

namespace encore::io {

/// Largest header accepted, in bytes (the reference implementation's limit).
inline constexpr std::uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

/// One tensor as described by a safetensors header.
struct TensorEntry {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  std::uint64_t begin = 0;  ///< Byte offset of the first element within the data section.
  std::uint64_t end = 0;    ///< One past the last byte, within the data section.
};

/// A validated safetensors file (memory-mapped, or a buffer in memory). Cheap to copy: copies
/// share the mapping, which stays alive while any tensor taken from it lives.
class SafetensorsFile {
 public:
  /// Maps and validates `path`. Throws Error(io) when it cannot be opened or mapped,
  /// Error(bad_model_file) when its content is malformed, Error(unsupported) when it is valid but
  /// holds what encore cannot read.
  static SafetensorsFile open(const std::filesystem::path& path);
  /// Validates a file image held in caller memory (not copied). `owner`, if given, is kept alive
  /// as long as the SafetensorsFile or any of its tensors; `source` names it in messages.
  static SafetensorsFile from_buffer(std::span<const std::byte> bytes, std::shared_ptr<const void> owner = {},
                                     std::string source = "<buffer>");
  /// Validates a file image, taking ownership of the bytes.
  static SafetensorsFile from_bytes(std::vector<std::byte> bytes, std::string source = "<buffer>");

  /// The tensors, in data-offset order.
  const std::vector<TensorEntry>& entries() const noexcept;
  /// The entry called `name`, or nullptr.
  const TensorEntry* find(std::string_view name) const noexcept;
  bool contains(std::string_view name) const noexcept { return find(name) != nullptr; }
  /// A CPU tensor viewing the data of `name` (no copy unless the data is misaligned for its
  /// dtype, in which case it is copied into aligned memory on each call). For open() the memory is
  /// a private copy-on-write mapping: writing to it never changes the file; for from_buffer() and
  /// from_bytes() the tensors view the given bytes. Throws
  /// Error(invalid_argument) naming the tensor and the file when there is no such tensor.
  Tensor tensor(std::string_view name) const;
  /// The `__metadata__` map (empty when absent).
  const std::map<std::string, std::string>& metadata() const noexcept;
  /// The path or the name given to from_buffer.
  const std::string& source() const noexcept;
  /// Size of the data section in bytes.
  std::uint64_t data_bytes() const noexcept;

 private:
  struct State;
  explicit SafetensorsFile(std::shared_ptr<const State> state);
  // from_buffer, with the storage marked as a file mapping when `file_mapping` (open()).
  static SafetensorsFile from_view(std::span<const std::byte> bytes, std::shared_ptr<const void> owner,
                                   std::string source, bool file_mapping);
  std::shared_ptr<const State> state_;
};

/// A tensor to write, with its name.
struct NamedTensor {
  std::string name;
  Tensor tensor;  ///< CPU tensor; any strides (written in row-major order).
};

/// The bytes of a safetensors file holding `tensors` and `metadata`. The header lists the tensors
/// in the given order; their data is laid out by decreasing element size (ties in the given
/// order), like the reference writer, so that every tensor is aligned for its dtype.
/// Throws Error(invalid_argument) for an empty or duplicate name, an undefined or non-CPU tensor,
/// or a name starting with "__" (reserved).
std::vector<std::byte> serialize_safetensors(std::span<const NamedTensor> tensors,
                                             const std::map<std::string, std::string>& metadata = {});

/// Writes serialize_safetensors(...) to `path` (replacing it). Throws Error(io) on write failure.
void save_safetensors(const std::filesystem::path& path, std::span<const NamedTensor> tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace encore::io
