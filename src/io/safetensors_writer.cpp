// Writing safetensors: the header JSON (padded so the data section starts 8-byte aligned) and the
// tensors in row-major order.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include "core/check.h"
#include "encore/io/safetensors.h"
#include "io/safetensors_json.h"

namespace encore::io {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

using encore::detail::fail;
using detail::printable;

namespace {

// What is written: the padded header and the tensors made contiguous.
struct Plan {
  std::string header;
  std::vector<Tensor> tensors;
  std::uint64_t data_bytes = 0;
};

// A JSON string literal; names and metadata must be valid UTF-8 to be readable again.
std::string json_string(const std::string& text, std::string_view what) {
  try {
    return nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
  } catch (const nlohmann::json::exception&) {
    fail(ErrorCode::invalid_argument, "cannot write {} '{}' to safetensors: it is not valid UTF-8", what,
         printable(text));
  }
}

void check_tensor(const NamedTensor& t, std::set<std::string_view>& seen) {
  if (t.name.empty()) fail(ErrorCode::invalid_argument, "cannot write a tensor with an empty name to safetensors");
  if (t.name.starts_with("__"))
    fail(ErrorCode::invalid_argument, "cannot write tensor '{}': names starting with \"__\" are reserved",
         printable(t.name));
  if (!seen.insert(t.name).second)
    fail(ErrorCode::invalid_argument, "cannot write tensor '{}' twice to one safetensors file", printable(t.name));
  if (!t.tensor.defined())
    fail(ErrorCode::invalid_argument, "cannot write tensor '{}': it is undefined", printable(t.name));
  if (!t.tensor.device().is_cpu())
    fail(ErrorCode::invalid_argument, "cannot write tensor '{}': it is on {}, expected a CPU tensor",
         printable(t.name), t.tensor.device().str());
}

std::string metadata_json(const std::map<std::string, std::string>& metadata) {
  std::string out = "\"__metadata__\":{";
  for (const auto& [key, value] : metadata) {
    if (out.back() != '{') out += ',';
    out += json_string(key, "metadata key") + ':' + json_string(value, "metadata value");
  }
  return out + '}';
}

std::string entry_json(const NamedTensor& t, std::uint64_t begin, std::uint64_t end) {
  return fmt::format("{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
                     json_string(t.name, "tensor name"), detail::safetensors_dtype_name(t.tensor.dtype()),
                     fmt::join(t.tensor.shape().span(), ","), begin, end);
}

// Data is laid out by decreasing element size, ties in the given order (as the reference writer
// does): with the data section 8-byte aligned, every tensor is then aligned for its dtype and the
// reader can hand out views instead of copies.
std::vector<std::size_t> layout_order(std::span<const NamedTensor> tensors) {
  std::vector<std::size_t> order(tensors.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return dtype_size(tensors[a].tensor.dtype()) > dtype_size(tensors[b].tensor.dtype());
  });
  return order;
}

Plan make_plan(std::span<const NamedTensor> tensors, const std::map<std::string, std::string>& metadata) {
  std::set<std::string_view> seen;
  for (const NamedTensor& t : tensors) check_tensor(t, seen);
  Plan plan;
  std::vector<std::uint64_t> begin(tensors.size());
  for (const std::size_t i : layout_order(tensors)) {
    begin[i] = plan.data_bytes;
    if (__builtin_add_overflow(begin[i], tensors[i].tensor.nbytes(), &plan.data_bytes))
      fail(ErrorCode::invalid_argument, "cannot write tensor '{}': the data section would exceed 2^64 bytes",
           printable(tensors[i].name));
    plan.tensors.push_back(tensors[i].tensor.contiguous());
  }
  plan.header = "{";
  if (!metadata.empty()) plan.header += metadata_json(metadata);  // first, like the reference writer
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    if (plan.header.size() > 1) plan.header += ',';
    plan.header += entry_json(tensors[i], begin[i], begin[i] + tensors[i].tensor.nbytes());
  }
  plan.header += '}';
  plan.header.resize((plan.header.size() + 7) / 8 * 8, ' ');  // data section 8-byte aligned
  if (plan.header.size() > kMaxSafetensorsHeaderBytes)
    fail(ErrorCode::invalid_argument, "safetensors header would be {} bytes, more than the {} byte limit",
         plan.header.size(), kMaxSafetensorsHeaderBytes);
  return plan;
}

std::array<std::byte, 8> length_prefix(std::uint64_t n) {
  std::array<std::byte, 8> out{};
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::byte>((n >> (8 * i)) & 0xff);
  return out;
}

// ---- files ------------------------------------------------------------------------------------

class OutputFile {
 public:
  explicit OutputFile(std::string path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail_errno("create");
  }
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;
  ~OutputFile() {
    if (fd_ >= 0) {
      ::close(fd_);
      ::unlink(path_.c_str());  // not committed: don't leave a partial file behind
    }
  }

  void write(const void* data, std::size_t bytes) {
    const auto* p = static_cast<const char*>(data);
    while (bytes > 0) {
      const ssize_t n = ::write(fd_, p, bytes);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail_errno("write");
      p += n;
      bytes -= static_cast<std::size_t>(n);
    }
  }

  // Flushes, closes and renames onto `target`, so readers never see a half-written file.
  void commit(const std::filesystem::path& target) {
    if (::fsync(fd_) != 0) fail_errno("flush");
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) {
      const int err = errno;
      ::unlink(path_.c_str());
      fail(ErrorCode::io, "{}: cannot close the file: {}", path_, std::strerror(err));
    }
    if (::rename(path_.c_str(), target.c_str()) != 0) {
      const int err = errno;
      ::unlink(path_.c_str());
      fail(ErrorCode::io, "{}: cannot rename to {}: {}", path_, target.string(), std::strerror(err));
    }
  }

 private:
  [[noreturn]] void fail_errno(const char* what) const {
    fail(ErrorCode::io, "{}: cannot {} the file: {}", path_, what, std::strerror(errno));
  }
  std::string path_;
  int fd_ = -1;
};

}  // namespace

std::vector<std::byte> serialize_safetensors(std::span<const NamedTensor> tensors,
                                             const std::map<std::string, std::string>& metadata) {
  const Plan plan = make_plan(tensors, metadata);
  std::vector<std::byte> out(8 + plan.header.size() + plan.data_bytes);
  const auto prefix = length_prefix(plan.header.size());
  std::memcpy(out.data(), prefix.data(), prefix.size());
  std::memcpy(out.data() + 8, plan.header.data(), plan.header.size());
  std::byte* p = out.data() + 8 + plan.header.size();
  for (const Tensor& t : plan.tensors) {
    if (t.nbytes() != 0) std::memcpy(p, t.data(), t.nbytes());
    p += t.nbytes();
  }
  return out;
}

void save_safetensors(const std::filesystem::path& path, std::span<const NamedTensor> tensors,
                      const std::map<std::string, std::string>& metadata) {
  const Plan plan = make_plan(tensors, metadata);  // invalid input fails before any file is touched
  OutputFile out(path.string() + ".tmp");
  const auto prefix = length_prefix(plan.header.size());
  out.write(prefix.data(), prefix.size());
  out.write(plan.header.data(), plan.header.size());
  for (const Tensor& t : plan.tensors)
    if (t.nbytes() != 0) out.write(t.data(), t.nbytes());
  out.commit(path);
}

}  // namespace encore::io
