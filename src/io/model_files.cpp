// ModelWeights: one safetensors file, or the shards named by a Hugging Face index file.
#include "encore/io/model_files.h"

#include <algorithm>
#include <system_error>

#include "core/check.h"
#include "io/mapped_file.h"
#include "io/safetensors_json.h"

namespace encore::io {

namespace fs = std::filesystem;
using encore::detail::fail;
using detail::printable;

namespace {

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";
constexpr int kIndexMaxDepth = 16;  // the object, weight_map or metadata, and some room in metadata
constexpr std::uint64_t kMaxIndexBytes = 100'000'000;

bool present(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

// The weights file of a model directory, or Error(io) saying what was looked for.
fs::path weights_in_directory(const fs::path& dir) {
  if (present(dir / kSingleFile)) return dir / kSingleFile;
  if (present(dir / kIndexFile)) return dir / kIndexFile;
  if (present(dir / "pytorch_model.bin") || present(dir / "pytorch_model.bin.index.json"))
    fail(ErrorCode::io,
         "{}: holds PyTorch weights (pytorch_model.bin) but no {} or {}; encore reads only safetensors: "
         "convert the directory with tools/convert_to_safetensors.py",
         dir.string(), kSingleFile, kIndexFile);
  fail(ErrorCode::io, "{}: no {} or {} in this directory", dir.string(), kSingleFile, kIndexFile);
}

// ---- index files ------------------------------------------------------------------------------

struct WeightMapEntry {
  std::string tensor;
  std::string shard;
};

std::vector<WeightMapEntry> read_weight_map(const fs::path& index) {
  const std::string source = index.string();
  const auto file = detail::MappedFile::open(index);
  if (file->size() > kMaxIndexBytes)
    fail(ErrorCode::bad_model_file, "{}: index is {} bytes, more than the {} byte limit", source, file->size(),
         kMaxIndexBytes);
  const std::string_view text(reinterpret_cast<const char*>(file->data()), file->size());
  const auto root = detail::parse_ordered_json(text, kIndexMaxDepth, {source, "index"});
  if (!root.is_object())
    fail(ErrorCode::bad_model_file, "{}: index is a JSON {}, expected an object with a weight_map", source,
         root.type_name());
  if (const auto m = root.find("metadata"); m != root.end() && !m->is_object())
    fail(ErrorCode::bad_model_file, "{}: index metadata is a JSON {}, expected an object", source, m->type_name());
  const auto map = root.find("weight_map");
  if (map == root.end())
    fail(ErrorCode::bad_model_file, "{}: index has no weight_map (expected an object of tensor name -> shard file)",
         source);
  if (!map->is_object())
    fail(ErrorCode::bad_model_file, "{}: index weight_map is a JSON {}, expected an object of tensor name -> shard file",
         source, map->type_name());
  std::vector<WeightMapEntry> out;
  for (const auto& [tensor, shard] : map->items()) {
    if (!shard.is_string())
      fail(ErrorCode::bad_model_file, "{}: weight_map gives tensor '{}' a JSON {}, expected a shard file name", source,
           printable(tensor), shard.type_name());
    out.push_back({tensor, shard.get<std::string>()});
  }
  return out;
}

// Rejects shard names that could point outside the model directory, before touching the disk.
void check_shard_name(const WeightMapEntry& w, const std::string& source) {
  const char* problem = nullptr;
  if (w.shard.empty()) problem = "is empty";
  else if (w.shard.find('\0') != std::string::npos) problem = "contains a NUL byte";
  else if (w.shard.find('\\') != std::string::npos) problem = "contains a backslash";
  else if (w.shard.front() == '/') problem = "is an absolute path";
  else {
    const fs::path p(w.shard);
    if (std::any_of(p.begin(), p.end(), [](const fs::path& c) { return c == ".."; })) problem = "has a '..' component";
  }
  if (problem != nullptr)
    fail(ErrorCode::bad_model_file,
         "{}: shard path '{}' for tensor '{}' {}: expected a relative path inside the model directory", source,
         printable(w.shard), printable(w.tensor), problem);
}

// The real path of a shard. The index's text cannot leave the directory (check_shard_name: no
// absolute path, no '..'), but symlinks in the directory are followed wherever they point, as for a
// single model.safetensors: the Hugging Face hub cache links snapshots/<rev>/<shard> to
// ../../blobs/<hash>, the most common layout of a downloaded sharded checkpoint.
fs::path resolve_shard(const fs::path& dir, const WeightMapEntry& w, const std::string& source) {
  std::error_code ec;
  const fs::path real = fs::weakly_canonical(dir / w.shard, ec);
  if (ec) fail(ErrorCode::io, "{}: cannot resolve shard '{}': {}", source, printable(w.shard), ec.message());
  return real;
}

SafetensorsFile open_shard(const fs::path& real, const WeightMapEntry& w, const std::string& source) {
  try {
    return SafetensorsFile::open(real);
  } catch (const Error& e) {
    throw Error(e.code(), fmt::format("{}: cannot load shard '{}': {}", source, printable(w.shard), e.what()));
  }
}

// Every shard once, in order of first mention; `shard_of[i]` is the file of weight_map entry i.
struct Shards {
  std::vector<SafetensorsFile> files;
  std::vector<std::size_t> shard_of;
};

Shards open_shards(const fs::path& index, const std::vector<WeightMapEntry>& weight_map) {
  const std::string source = index.string();
  const fs::path dir = index.has_parent_path() ? index.parent_path() : fs::path(".");
  Shards out;
  std::map<std::string, std::size_t> by_name;  // each shard name is checked and resolved once
  std::map<fs::path, std::size_t> by_real;     // by real path, so "a" and "./a" are one shard
  for (const WeightMapEntry& w : weight_map) {
    auto named = by_name.find(w.shard);
    if (named == by_name.end()) {
      check_shard_name(w, source);
      const fs::path real = resolve_shard(dir, w, source);
      const auto [it, added] = by_real.emplace(real, out.files.size());
      if (added) out.files.push_back(open_shard(real, w, source));
      named = by_name.emplace(w.shard, it->second).first;
    }
    out.shard_of.push_back(named->second);
  }
  return out;
}

// ---- the name index ---------------------------------------------------------------------------

struct NamedEntry {
  std::string_view name;
  std::size_t file;
  const TensorEntry* entry;
};

// All entries of all files sorted by name; a name in two files is an error.
std::vector<NamedEntry> all_entries(const std::vector<SafetensorsFile>& files, const fs::path& source) {
  std::vector<NamedEntry> out;
  for (std::size_t f = 0; f < files.size(); ++f)
    for (const TensorEntry& e : files[f].entries()) out.push_back({e.name, f, &e});
  std::sort(out.begin(), out.end(), [](const NamedEntry& a, const NamedEntry& b) { return a.name < b.name; });
  const auto dup = std::adjacent_find(out.begin(), out.end(),
                                      [](const NamedEntry& a, const NamedEntry& b) { return a.name == b.name; });
  if (dup != out.end())
    fail(ErrorCode::bad_model_file, "{}: tensor '{}' is in two shards: {} and {}", source.string(), printable(dup->name),
         files[dup->file].source(), files[(dup + 1)->file].source());
  return out;
}

}  // namespace

ModelWeights ModelWeights::from_files(std::vector<SafetensorsFile> files) {
  ENCORE_CHECK(!files.empty(), invalid_argument, "ModelWeights::from_files: no file given");
  ModelWeights w;
  w.files_ = std::move(files);
  for (const NamedEntry& e : all_entries(w.files_, "ModelWeights::from_files"))
    w.index_.push_back({std::string(e.name), {e.file, e.entry}});
  return w;
}

ModelWeights ModelWeights::open(const fs::path& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st))
    fail(ErrorCode::io, "{}: no such file or directory (expected a .safetensors file, an index .json or a model "
         "directory)", path.string());
  const fs::path target = fs::is_directory(st) ? weights_in_directory(path) : path;
  const bool is_index = target.extension() == ".json";

  ModelWeights w;
  std::vector<WeightMapEntry> weight_map;
  std::vector<std::size_t> shard_of;
  if (is_index) {
    weight_map = read_weight_map(target);
    Shards shards = open_shards(target, weight_map);
    w.files_ = std::move(shards.files);
    shard_of = std::move(shards.shard_of);
  } else {
    w.files_.push_back(SafetensorsFile::open(target));
  }
  for (const NamedEntry& e : all_entries(w.files_, target)) w.index_.push_back({std::string(e.name), {e.file, e.entry}});

  // Each tensor of the weight_map must be in the shard it names (shards may hold extra tensors).
  for (std::size_t i = 0; i < weight_map.size(); ++i) {
    const Location* loc = w.locate(weight_map[i].tensor);
    if (loc == nullptr || loc->file != shard_of[i])
      fail(ErrorCode::bad_model_file, "{}: weight_map puts tensor '{}' in shard '{}', but {} has no such tensor{}",
           target.string(), printable(weight_map[i].tensor), printable(weight_map[i].shard),
           w.files_[shard_of[i]].source(),
           loc ? fmt::format(" (it is in {})", w.files_[loc->file].source()) : std::string());
  }
  return w;
}

const ModelWeights::Location* ModelWeights::locate(std::string_view name) const noexcept {
  const auto it = std::lower_bound(index_.begin(), index_.end(), name,
                                   [](const auto& item, std::string_view n) { return item.first < n; });
  return it != index_.end() && it->first == name ? &it->second : nullptr;
}

std::vector<std::string> ModelWeights::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& item : index_) out.push_back(item.first);
  return out;
}

bool ModelWeights::contains(std::string_view name) const noexcept { return locate(name) != nullptr; }

const TensorEntry& ModelWeights::entry(std::string_view name) const {
  const Location* loc = locate(name);
  if (loc == nullptr)
    fail(ErrorCode::invalid_argument, "no tensor named '{}' in the model weights ({} tensors in {} files)",
         printable(name), index_.size(), files_.size());
  return *loc->entry;
}

Tensor ModelWeights::tensor(std::string_view name) const {
  const TensorEntry& e = entry(name);
  return files_[locate(name)->file].tensor(e.name);
}

std::uint64_t ModelWeights::parameter_count() const noexcept {
  std::uint64_t n = 0;
  for (const auto& item : index_) n += (item.second.entry->end - item.second.entry->begin) / dtype_size(item.second.entry->dtype);
  return n;
}

std::uint64_t ModelWeights::data_bytes() const noexcept {
  std::uint64_t n = 0;
  for (const auto& item : index_) n += item.second.entry->end - item.second.entry->begin;
  return n;
}

}  // namespace encore::io
