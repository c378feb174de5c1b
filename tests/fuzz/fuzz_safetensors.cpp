// libFuzzer target: SafetensorsFile::from_buffer on arbitrary bytes. Malformed input must end in
// encore::Error(bad_model_file), or Error(unsupported) for a valid file encore cannot use; anything
// else (a crash, a sanitizer report, another exception) is a bug. Accepted input must yield tensors whose every byte can be read, and must survive a
// write/read round trip unchanged.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

#include "encore/io/safetensors.h"

namespace {

using encore::io::NamedTensor;
using encore::io::SafetensorsFile;

// An invariant of the reader broke: stop here so libFuzzer saves the input.
void require(bool ok) {
  if (!ok) __builtin_trap();
}

// Reads every byte of every tensor (ASan flags any byte outside the buffer) and checks the views.
std::vector<NamedTensor> touch_all(const SafetensorsFile& file) {
  std::vector<NamedTensor> tensors;
  std::uint64_t covered = 0;
  for (const auto& e : file.entries()) {
    require(file.find(e.name) == &e);
    const encore::Tensor t = file.tensor(e.name);
    require(t.nbytes() == e.end - e.begin && t.shape() == e.shape && t.dtype() == e.dtype);
    const auto* p = static_cast<const unsigned char*>(t.data());
    unsigned sum = 0;
    for (std::size_t i = 0; i < t.nbytes(); ++i) sum += p[i];  // bytes, not typed values (BOOL may hold 2..255)
    volatile unsigned sink = sum;
    (void)sink;
    covered += e.end - e.begin;
    tensors.push_back({e.name, t});
  }
  require(covered == file.data_bytes());
  return tensors;
}

// What the reader accepted, the writer must reproduce and the reader accept again.
void round_trip(const SafetensorsFile& file, const std::vector<NamedTensor>& tensors) {
  for (const auto& t : tensors)
    if (t.name.starts_with("__")) return;  // readable, but reserved for the writer
  const SafetensorsFile again = SafetensorsFile::from_bytes(encore::io::serialize_safetensors(tensors, file.metadata()));
  require(again.entries().size() == tensors.size() && again.metadata() == file.metadata());
  for (const auto& t : tensors) {
    const encore::Tensor u = again.tensor(t.name);
    require(u.shape() == t.tensor.shape() && u.dtype() == t.tensor.dtype());
    require(u.nbytes() == 0 || std::memcmp(u.data(), t.tensor.data(), u.nbytes()) == 0);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  std::optional<SafetensorsFile> file;
  try {
    file.emplace(SafetensorsFile::from_buffer(bytes, {}, "fuzz"));
  } catch (const encore::Error& e) {
    // An image in memory has no I/O to fail; a valid file encore cannot use (an F64 tensor, rank 9)
    // is unsupported.
    require(e.code() == encore::ErrorCode::bad_model_file || e.code() == encore::ErrorCode::unsupported);
    return 0;
  }
  round_trip(*file, touch_all(*file));
  return 0;
}
