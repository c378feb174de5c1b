// A read-only file mapped into memory as a private copy-on-write mapping.
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>

namespace encore::io::detail {

/// The whole content of a file, mapped MAP_PRIVATE with PROT_READ|PROT_WRITE: pages are shared
/// with the page cache until written, and a write copies the page, so tensors viewing the mapping
/// may be modified without changing the file (and without a segfault). Unmapped on destruction.
/// Like every mmap, truncating the file while it is mapped makes later reads raise SIGBUS.
class MappedFile {
 public:
  /// Maps `path`. Throws Error(io) naming the path and the system error when it cannot be
  /// opened, is not a regular file, or cannot be mapped. A 0-byte file gives an empty mapping.
  static std::shared_ptr<MappedFile> open(const std::filesystem::path& path);

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }

 private:
  MappedFile(std::byte* data, std::size_t size) noexcept : data_(data), size_(size) {}
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace encore::io::detail
