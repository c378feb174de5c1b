// Reading safetensors: framing (length prefix, header bounds), layout of the data section, and
// zero-copy tensors. Per-entry header checks are in safetensors_json.cpp.
#include <algorithm>
#include <bit>
#include <cstring>
#include <tuple>

#include "core/check.h"
#include "encore/io/safetensors.h"
#include "io/mapped_file.h"
#include "io/safetensors_json.h"

namespace encore::io {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

using encore::detail::fail;
using detail::printable;

struct SafetensorsFile::State {
  std::string source;
  std::shared_ptr<Storage> data;       // the data section, borrowed; keeps the buffer's owner alive
  std::uint64_t data_bytes = 0;
  std::vector<TensorEntry> entries;    // sorted by data offset
  std::vector<std::size_t> by_name;    // indices into entries, sorted by name
  std::map<std::string, std::string> metadata;
};

namespace {

constexpr std::size_t kPrefixBytes = 8;

// The header text, after checking the length prefix against the buffer and the size cap.
std::string_view header_text(std::span<const std::byte> bytes, std::string_view source) {
  if (bytes.size() < kPrefixBytes)
    fail(ErrorCode::bad_model_file,
         "{}: file is {} bytes, too short for a safetensors file (expected at least the 8-byte header length)",
         source, bytes.size());
  std::uint64_t n = 0;
  for (std::size_t i = 0; i < kPrefixBytes; ++i) n |= std::to_integer<std::uint64_t>(bytes[i]) << (8 * i);
  if (n > kMaxSafetensorsHeaderBytes)
    fail(ErrorCode::bad_model_file, "{}: header length {} exceeds the limit of {} bytes", source, n,
         kMaxSafetensorsHeaderBytes);
  const std::uint64_t available = bytes.size() - kPrefixBytes;
  if (n > available)
    fail(ErrorCode::bad_model_file,
         "{}: header length {} is larger than the {} bytes that follow the length prefix (file truncated?)",
         source, n, available);
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()) + kPrefixBytes, n);
  if (text.empty()) fail(ErrorCode::bad_model_file, "{}: header is empty, expected a JSON object", source);
  if (text.front() != '{')
    fail(ErrorCode::bad_model_file, "{}: header starts with '{}', expected '{{' (a JSON object)", source,
         printable(text.substr(0, 1)));
  return text;
}

bool by_offset(const TensorEntry& a, const TensorEntry& b) {
  return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
}

// Of several tensors past the end, the one whose name sorts first is named, whatever the order of
// `entries`.
void check_in_bounds(const std::vector<TensorEntry>& entries, std::uint64_t data_bytes, std::string_view source) {
  const TensorEntry* outside = nullptr;
  for (const TensorEntry& e : entries)
    if (e.end > data_bytes && (outside == nullptr || e.name < outside->name)) outside = &e;
  if (outside != nullptr)
    fail(ErrorCode::bad_model_file,
         "{}: tensor '{}' has data_offsets [{}, {}] but the data section holds only {} bytes (file truncated?)",
         source, printable(outside->name), outside->begin, outside->end, data_bytes);
}

// Tensors sorted by offset must tile the data section exactly: no hole, no overlap, no tail.
void check_tiling(const std::vector<TensorEntry>& entries, std::uint64_t data_bytes, std::string_view source) {
  const TensorEntry* prev = nullptr;
  for (const TensorEntry& e : entries) {
    const std::uint64_t expected = prev ? prev->end : 0;
    if (e.begin > expected && prev == nullptr)
      fail(ErrorCode::bad_model_file,
           "{}: hole of {} bytes at the start of the data section: first tensor '{}' begins at byte {}, expected 0",
           source, e.begin, printable(e.name), e.begin);
    if (e.begin > expected)
      fail(ErrorCode::bad_model_file,
           "{}: hole of {} bytes in the data section between tensor '{}' (ends at {}) and tensor '{}' (begins at {})",
           source, e.begin - expected, printable(prev->name), expected, printable(e.name), e.begin);
    if (e.begin < expected)
      fail(ErrorCode::bad_model_file,
           "{}: tensor '{}' with data_offsets [{}, {}] overlaps tensor '{}' with data_offsets [{}, {}]", source,
           printable(e.name), e.begin, e.end, printable(prev->name), prev->begin, prev->end);
    prev = &e;
  }
  const std::uint64_t covered = prev ? prev->end : 0;
  if (covered != data_bytes)
    fail(ErrorCode::bad_model_file,
         "{}: the data section holds {} bytes but the tensors cover {}: {} trailing bytes after the last tensor",
         source, data_bytes, covered, data_bytes - covered);
}

std::vector<std::size_t> name_order(const std::vector<TensorEntry>& entries) {
  std::vector<std::size_t> order(entries.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return entries[a].name < entries[b].name; });
  return order;
}

}  // namespace

SafetensorsFile::SafetensorsFile(std::shared_ptr<const State> state) : state_(std::move(state)) {}

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  auto mapping = detail::MappedFile::open(path);
  const std::span<const std::byte> bytes(mapping->data(), mapping->size());
  return from_view(bytes, std::move(mapping), path.string(), true);
}

SafetensorsFile SafetensorsFile::from_bytes(std::vector<std::byte> bytes, std::string source) {
  auto owned = std::make_shared<std::vector<std::byte>>(std::move(bytes));  // tensors may write to it
  const std::span<const std::byte> view(*owned);
  return from_buffer(view, std::move(owned), std::move(source));
}

SafetensorsFile SafetensorsFile::from_buffer(std::span<const std::byte> bytes, std::shared_ptr<const void> owner,
                                             std::string source) {
  return from_view(bytes, std::move(owner), std::move(source), false);
}

SafetensorsFile SafetensorsFile::from_view(std::span<const std::byte> bytes, std::shared_ptr<const void> owner,
                                           std::string source, bool file_mapping) {
  // Everything is validated here, before any tensor data is read or handed out.
  const std::string_view header = header_text(bytes, source);
  detail::ParsedHeader parsed = detail::parse_header(header, source);
  const std::uint64_t data_bytes = bytes.size() - kPrefixBytes - header.size();
  check_in_bounds(parsed.entries, data_bytes, source);
  std::sort(parsed.entries.begin(), parsed.entries.end(), by_offset);
  check_tiling(parsed.entries, data_bytes, source);

  auto state = std::make_shared<State>();
  // Tensors are mutable views: for open() the mapping is private copy-on-write, for from_buffer
  // writes land in the caller's buffer (see the header).
  auto* data = const_cast<std::byte*>(bytes.data()) + kPrefixBytes + header.size();
  state->data = file_mapping ? Storage::borrow_file_mapping(data, data_bytes, std::move(owner))
                             : Storage::borrow(data, data_bytes, Device::cpu(), std::move(owner));
  state->data_bytes = data_bytes;
  state->by_name = name_order(parsed.entries);
  state->entries = std::move(parsed.entries);
  state->metadata = std::move(parsed.metadata);
  state->source = std::move(source);
  return SafetensorsFile(std::move(state));
}

const std::vector<TensorEntry>& SafetensorsFile::entries() const noexcept { return state_->entries; }
const std::map<std::string, std::string>& SafetensorsFile::metadata() const noexcept { return state_->metadata; }
const std::string& SafetensorsFile::source() const noexcept { return state_->source; }
std::uint64_t SafetensorsFile::data_bytes() const noexcept { return state_->data_bytes; }

const TensorEntry* SafetensorsFile::find(std::string_view name) const noexcept {
  const auto& entries = state_->entries;
  const auto it = std::lower_bound(state_->by_name.begin(), state_->by_name.end(), name,
                                   [&](std::size_t i, std::string_view n) { return entries[i].name < n; });
  if (it == state_->by_name.end() || entries[*it].name != name) return nullptr;
  return &entries[*it];
}

Tensor SafetensorsFile::tensor(std::string_view name) const {
  const TensorEntry* e = find(name);
  if (e == nullptr)
    fail(ErrorCode::invalid_argument, "{}: no tensor named '{}' (the file holds {} tensors)", state_->source,
         printable(name), state_->entries.size());
  const Shape strides = contiguous_strides(e->shape);
  const auto* address = static_cast<const std::byte*>(state_->data->data()) + e->begin;
  if (reinterpret_cast<std::uintptr_t>(address) % dtype_size(e->dtype) == 0)
    return Tensor::from_storage(state_->data, e->begin, e->shape, strides, e->dtype);
  // A header whose length is not a multiple of 8 can misalign the data; copy into aligned memory.
  // Each call copies again: such files are rare (every known writer pads the header).
  Tensor copy = Tensor::empty(e->shape, e->dtype);
  if (e->end != e->begin) std::memcpy(copy.data(), address, e->end - e->begin);
  return copy;
}

}  // namespace encore::io
