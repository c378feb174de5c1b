// Safetensors test corpus: valid file images and malformed ones, each malformed case with the
// error it must raise. Shared by the tests, and dumped as files (ENCORE_WRITE_CORPUS) to seed the
// fuzzer and to check the committed copies under tests/data/.
#pragma once

#include <cstddef>
#include <filesystem>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "encore/core/error.h"
#include "temp_dir.h"  // TempDir, used with the corpus by the io tests

namespace encore::test {

using Bytes = std::vector<std::byte>;

/// A file image: the 8-byte little-endian length of `header`, `header`, then `data_bytes` bytes
/// of data (a counting pattern).
Bytes image(std::string_view header, std::size_t data_bytes);
/// Same with an explicit (possibly lying) header length.
Bytes image_with_length(std::uint64_t header_length, std::string_view header, std::size_t data_bytes);

struct ValidCase {
  std::string name;
  Bytes bytes;
};

struct MalformedCase {
  std::string name;
  Bytes bytes;
  ErrorCode code;
  std::string expect;  ///< substring the message must contain
};

/// A model directory: files by name (an index and shards), and the error opening it raises.
struct IndexCase {
  std::string name;
  std::vector<std::pair<std::string, Bytes>> files;
  ErrorCode code;
  std::string expect;
};

// gtest prints parameters through these (instead of a byte dump).
inline void PrintTo(const MalformedCase& c, std::ostream* os) { *os << c.name; }
inline void PrintTo(const IndexCase& c, std::ostream* os) { *os << c.name; }

std::vector<ValidCase> valid_cases();
std::vector<MalformedCase> malformed_cases();
std::vector<IndexCase> index_cases();

/// Writes `bytes` to `path` (throws std::runtime_error on failure).
void write_file(const std::filesystem::path& path, const Bytes& bytes);
/// Reads a whole file (throws std::runtime_error on failure).
Bytes read_file(const std::filesystem::path& path);
Bytes to_bytes(std::string_view text);

}  // namespace encore::test
