#include "io/small_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>

#include "core/check.h"

namespace encore::io::detail {

std::string read_small_file(const std::filesystem::path& path, std::uintmax_t max_bytes, std::string_view what) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec) encore::detail::fail(ErrorCode::io, "{}: cannot read {}: {}", path.string(), what, ec.message());
  if (!fs::is_regular_file(status))
    encore::detail::fail(ErrorCode::io, "{}: cannot read {}: not a regular file", path.string(), what);
  const std::uintmax_t size = fs::file_size(path, ec);
  if (ec) encore::detail::fail(ErrorCode::io, "{}: cannot read {}: {}", path.string(), what, ec.message());
  if (size > max_bytes)
    encore::detail::fail(ErrorCode::bad_model_file, "{}: {} bytes, more than the {} byte limit for a {}",
                         path.string(), size, max_bytes, what);
  std::ifstream in(path, std::ios::binary);
  if (!in) encore::detail::fail(ErrorCode::io, "{}: cannot open {}: {}", path.string(), what, std::strerror(errno));
  std::string text(static_cast<std::size_t>(size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(size));
  if (in.gcount() != static_cast<std::streamsize>(size))
    encore::detail::fail(ErrorCode::io, "{}: read {} of {} bytes", path.string(), in.gcount(), size);
  return text;
}

}  // namespace encore::io::detail
