// encore — the weights of a model directory, as Hugging Face `save_pretrained` writes them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "encore/io/safetensors.h"

namespace encore::io {

/// All tensors of a checkpoint, which may be one safetensors file or several shards listed by
/// `model.safetensors.index.json`. Shard paths in the index must stay inside the directory (no
/// absolute paths, no `..` components); symlinks in it are followed wherever they point, as the
/// Hugging Face hub cache's snapshots link to its blobs. The files must not be truncated or
/// rewritten while tensors of them are alive: they are memory-mapped (a truncated file faults on
/// access, SIGBUS; one rewritten in place changes the weights).
class ModelWeights {
 public:
  /// Opens `path`: a `.safetensors` file, a `.safetensors.index.json` file, or a directory holding
  /// `model.safetensors` or `model.safetensors.index.json`. Throws Error(io) when nothing
  /// loadable is found (naming what was looked for; a directory with only `pytorch_model.bin`
  /// gets a message pointing to tools/convert_to_safetensors.py), Error(bad_model_file) for a
  /// malformed index or shard, or a tensor name present in two shards or missing from the shard
  /// the index names.
  static ModelWeights open(const std::filesystem::path& path);
  /// The tensors of files already open (e.g. SafetensorsFile::from_bytes of a model held in
  /// memory): one file, or the shards of a checkpoint in any order. Throws
  /// Error(bad_model_file) when a tensor name is in two files, Error(invalid_argument) when no
  /// file is given.
  static ModelWeights from_files(std::vector<SafetensorsFile> files);

  /// Every tensor name, sorted.
  std::vector<std::string> names() const;
  bool contains(std::string_view name) const noexcept;
  /// The entry of `name`; throws Error(invalid_argument) naming it when absent.
  const TensorEntry& entry(std::string_view name) const;
  /// The tensor `name` (zero-copy); throws Error(invalid_argument) naming it when absent.
  Tensor tensor(std::string_view name) const;
  /// The files opened (one, or the shards in index order).
  const std::vector<SafetensorsFile>& files() const noexcept { return files_; }
  /// Total number of elements over all tensors.
  std::uint64_t parameter_count() const noexcept;
  /// Total bytes of tensor data.
  std::uint64_t data_bytes() const noexcept;

 private:
  struct Location { std::size_t file; const TensorEntry* entry; };
  std::vector<SafetensorsFile> files_;
  std::vector<std::pair<std::string, Location>> index_;  // sorted by name
  const Location* locate(std::string_view name) const noexcept;
};

}  // namespace encore::io
