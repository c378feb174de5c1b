// Whole small files read into memory (configs, tokenizer vocabularies and merges): checked to be
// regular files (a FIFO or device behind the name would block or never end) of bounded size.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace encore::io::detail {

/// The contents of `path`. Throws Error(io) when it cannot be read or is not a regular file, and
/// Error(bad_model_file) when it is larger than `max_bytes`; messages name `what` ("tokenizer
/// file", "config file").
std::string read_small_file(const std::filesystem::path& path, std::uintmax_t max_bytes, std::string_view what);

}  // namespace encore::io::detail
