#include "corpus.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <stdlib.h>

#include <fstream>
#include <stdexcept>

#include "encore/core/tensor.h"
#include "encore/io/safetensors.h"

namespace encore::test {

namespace fs = std::filesystem;

Bytes to_bytes(std::string_view text) {
  Bytes out(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) out[i] = static_cast<std::byte>(text[i]);
  return out;
}

Bytes image_with_length(std::uint64_t header_length, std::string_view header, std::size_t data_bytes) {
  Bytes out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>((header_length >> (8 * i)) & 0xff));
  const Bytes h = to_bytes(header);
  out.insert(out.end(), h.begin(), h.end());
  for (std::size_t i = 0; i < data_bytes; ++i) out.push_back(static_cast<std::byte>(i % 251));
  return out;
}

Bytes image(std::string_view header, std::size_t data_bytes) {
  std::string padded(header);
  padded.resize((padded.size() + 7) / 8 * 8, ' ');  // like real writers: data 8-byte aligned
  return image_with_length(padded.size(), padded, data_bytes);
}

namespace {

// "name":{"dtype":..,"shape":..,"data_offsets":..} with the JSON fragments given verbatim.
std::string entry(std::string_view name, std::string_view dtype, std::string_view shape, std::string_view offsets) {
  return fmt::format(R"("{}":{{"dtype":"{}","shape":{},"data_offsets":{}}})", name, dtype, shape, offsets);
}

std::string object(std::initializer_list<std::string> members) {
  return fmt::format("{{{}}}", fmt::join(members, ","));
}

// A header whose one tensor 'w' has the given raw fields.
std::string one_tensor(std::string_view fields) { return fmt::format(R"({{"w":{{{}}}}})", fields); }

// A valid shard holding U8 tensors of 4 bytes each, one per name.
Bytes shard(std::initializer_list<std::string> names) {
  std::vector<std::string> entries;
  std::size_t offset = 0;
  for (const auto& n : names) {
    entries.push_back(entry(n, "U8", "[4]", fmt::format("[{},{}]", offset, offset + 4)));
    offset += 4;
  }
  return image(fmt::format("{{{}}}", fmt::join(entries, ",")), offset);
}

std::string weight_map(std::string_view members) {
  return fmt::format(R"({{"metadata":{{"total_size":8}},"weight_map":{{{}}}}})", members);
}

// A header of 8k+1 bytes leaves the F32 data misaligned: the reader must copy it.
Bytes misaligned_image() {
  std::string header = object({entry("w", "F32", "[2]", "[0,8]")});
  while (header.size() % 8 != 1) header += ' ';
  return image_with_length(header.size(), header, 8);
}

constexpr const char* kIndex = "model.safetensors.index.json";
constexpr ErrorCode kBad = ErrorCode::bad_model_file;

}  // namespace

std::vector<ValidCase> valid_cases() {
  using io::NamedTensor;
  const Tensor f32 = Tensor::from_vector<float>({1.5f, -2.f, 3.25f, 0.f, 5.f, -6.5f}, {2, 3});
  const std::vector<NamedTensor> all = {
      {"i64", Tensor::from_vector<std::int64_t>({-1, 1LL << 40}, {2})},
      {"f32", f32},
      {"i32", Tensor::from_vector<std::int32_t>({7, -7, 1 << 30}, {3})},
      {"f16", Tensor::from_vector<Half>({float_to_half(1.f), float_to_half(-0.5f)}, {1, 2})},
      {"bf16", Tensor::from_vector<BFloat16>({float_to_bfloat16(3.f)}, {1})},
      {"i8", Tensor::from_vector<std::int8_t>({-128, 0, 127}, {3})},
      {"u8", Tensor::from_vector<std::uint8_t>({0, 255}, {2})},
      {"bool", Tensor::from_vector<bool>({true, false, true}, {3})},
  };
  const std::vector<NamedTensor> sized = {{"empty", Tensor::zeros({0, 3}, DType::F32)},
                                          {"scalar", Tensor::from_vector<float>({42.f}, {})},
                                          {"weight", f32}};
  const std::vector<NamedTensor> unicode = {{"d\xc3\xa9" "coder.\xe6\x9d\x83\xe9\x87\x8d", f32}};
  return {
      {"single_f32", io::serialize_safetensors(std::vector<NamedTensor>{{"weight", f32}})},
      {"all_dtypes", io::serialize_safetensors(all, {{"format", "pt"}, {"note", "all encore dtypes"}})},
      {"zero_size_and_scalar", io::serialize_safetensors(sized)},
      {"no_tensors", io::serialize_safetensors({})},
      {"metadata_only", io::serialize_safetensors({}, {{"format", "pt"}})},
      {"unicode_name", io::serialize_safetensors(unicode)},
      {"padded_header", image(object({entry("w", "U8", "[4]", "[0,4]")}) + std::string(200, ' '), 4)},
      {"misaligned", misaligned_image()},
  };
}

std::vector<MalformedCase> malformed_cases() {
  const std::string w24 = entry("w", "F32", "[2,3]", "[0,24]");
  const std::string deep = R"({"w":)" + std::string(100000, '[');
  return {
      // framing
      {"empty_file", {}, kBad, "is 0 bytes, too short"},
      {"seven_bytes", to_bytes(std::string_view("\x02\0\0\0\0\0\0", 7)), kBad, "is 7 bytes, too short"},
      {"header_length_past_end", image_with_length(1000, "{}", 0), kBad,
       "header length 1000 is larger than the 2 bytes"},
      {"header_length_near_2_64", image_with_length(0xFFFFFFFFFFFFFFF8ULL, "{}", 0), kBad,
       "header length 18446744073709551608 exceeds the limit of 100000000 bytes"},
      {"header_length_over_cap", image_with_length(100'000'001, "{}", 0), kBad, "header length 100000001 exceeds"},
      {"header_length_zero", image_with_length(0, "", 0), kBad, "header is empty"},
      {"header_not_json", image("xyz", 0), kBad, "header starts with 'x', expected '{'"},
      {"header_json_array", image(R"([{"w":1}])", 0), kBad, "header starts with '[', expected '{'"},
      {"header_leading_space", image(" {}", 0), kBad, "header starts with ' '"},
      // JSON syntax
      {"invalid_json", image(R"({"w":{"dtype":"F32",)", 0), kBad, "header is not valid JSON"},
      {"trailing_garbage", image("{} x", 0), kBad, "header is not valid JSON"},
      {"nul_padding", image_with_length(8, std::string("{}\0\0\0\0\0\0", 8), 0), kBad, "header is not valid JSON"},
      {"invalid_utf8", image(one_tensor("\"dtype\":\"F\xff\""), 0), kBad, "ill-formed UTF-8"},
      {"overlong_utf8", image("{\"w\xc0\xaf\":1}", 0), kBad, "ill-formed UTF-8"},
      {"control_char_in_name", image("{\"w\x01\":1}", 0), kBad, "header is not valid JSON"},
      {"duplicate_tensor", image(object({w24, w24}), 24), kBad, "duplicate key 'w'"},
      {"duplicate_field", image(one_tensor(R"("dtype":"F32","dtype":"F32","shape":[2,3],"data_offsets":[0,24])"), 24),
       kBad, "duplicate key 'dtype' in 'w'"},
      {"deep_nesting", image(deep, 0), kBad, "nests deeper than 3 levels"},
      {"deep_nesting_objects", image(R"({"a":{"b":{"c":{}}}})", 0), kBad, "nests deeper than 3 levels in 'a' > 'b' > 'c'"},
      // entries
      {"empty_name", image(object({entry("", "F32", "[2,3]", "[0,24]")}), 24), kBad, "tensor with an empty name"},
      {"entry_not_object", image(R"({"w":5})", 0), kBad, "tensor 'w' is a JSON number, expected an object"},
      {"missing_dtype", image(one_tensor(R"("shape":[2,3],"data_offsets":[0,24])"), 24), kBad,
       "tensor 'w' has no 'dtype' field"},
      {"missing_data_offsets", image(one_tensor(R"("dtype":"F32","shape":[2,3])"), 24), kBad,
       "has no 'data_offsets' field"},
      {"extra_field", image(one_tensor(R"("dtype":"F32","shape":[2,3],"data_offsets":[0,24],"extra":1)"), 24), kBad,
       "tensor 'w' has unknown field 'extra'"},
      {"dtype_unknown", image(object({entry("w", "Q4", "[2,3]", "[0,24]")}), 24), kBad,
       "unsupported dtype 'Q4' for tensor 'w'"},
      {"dtype_f64", image(object({entry("w", "F64", "[3]", "[0,24]")}), 24), ErrorCode::unsupported,
       "unsupported dtype 'F64' for tensor 'w': encore reads F32, F16, BF16, I8, U8, I32, I64, BOOL"},
      {"dtype_f8", image(object({entry("w", "F8_E4M3", "[24]", "[0,24]")}), 24), ErrorCode::unsupported,
       "unsupported dtype 'F8_E4M3'"},
      {"dtype_lowercase", image(object({entry("w", "f32", "[2,3]", "[0,24]")}), 24), kBad, "unsupported dtype 'f32'"},
      {"dtype_not_string", image(one_tensor(R"("dtype":7,"shape":[2,3],"data_offsets":[0,24])"), 24), kBad,
       "field 'dtype' is a JSON number, expected a string"},
      {"shape_negative_dim", image(object({entry("w", "F32", "[-2,3]", "[0,24]")}), 24), kBad,
       "negative shape[0] = -2"},
      {"shape_float_dim", image(object({entry("w", "F32", "[2,2.5]", "[0,20]")}), 20), kBad,
       "shape[1] = 2.5, expected a non-negative integer"},
      {"shape_string_dim", image(object({entry("w", "F32", "[\"6\"]", "[0,24]")}), 24), kBad,
       "shape[0] = \"6\", expected a non-negative integer"},
      {"shape_dim_too_large", image(object({entry("w", "U8", "[9223372036854775808]", "[0,0]")}), 0), kBad,
       "shape[0] = 9223372036854775808, which exceeds the largest supported value 9223372036854775807"},
      {"shape_rank_9", image(object({entry("w", "F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]")}), 4), ErrorCode::unsupported,
       "tensor 'w' has rank 9: encore supports at most 8 dimensions"},
      {"shape_not_array", image(one_tensor(R"("dtype":"F32","shape":6,"data_offsets":[0,24])"), 24), kBad,
       "field 'shape' is a JSON number, expected an array"},
      {"shape_dtype_mismatch", image(object({entry("w", "F32", "[2,3]", "[0,10]")}), 10), kBad,
       "tensor 'w' has data_offsets [0, 10] (10 bytes) but shape [2, 3] of F32 needs 24 bytes"},
      {"numel_overflow", image(object({entry("w", "F32", "[1099511627776,1099511627776]", "[0,0]")}), 0), kBad,
       "element count overflows 64 bits"},
      {"nbytes_overflow", image(object({entry("w", "F32", "[4611686018427387904]", "[0,0]")}), 0), kBad,
       "byte size overflows 64 bits"},
      {"offsets_begin_after_end", image(object({entry("w", "F32", "[2,3]", "[24,0]")}), 24), kBad,
       "data_offsets [24, 0]: begin is after end"},
      {"offsets_three", image(object({entry("w", "F32", "[2,3]", "[0,24,24]")}), 24), kBad,
       "has 3 data_offsets, expected 2"},
      {"offsets_negative", image(object({entry("w", "U8", "[4]", "[-1,3]")}), 4), kBad, "negative data_offsets[0] = -1"},
      {"offsets_not_array", image(one_tensor(R"("dtype":"U8","shape":[4],"data_offsets":"0-4")"), 4), kBad,
       "field 'data_offsets' is a JSON string"},
      // layout of the data section
      {"offsets_past_end", image(object({w24}), 16), kBad,
       "tensor 'w' has data_offsets [0, 24] but the data section holds only 16 bytes (file truncated?)"},
      {"offsets_near_2_64",
       image(object({entry("w", "U8", "[15]", "[18446744073709551600,18446744073709551615]")}), 16), kBad,
       "holds only 16 bytes"},
      {"hole", image(object({entry("a", "U8", "[8]", "[0,8]"), entry("b", "U8", "[8]", "[12,20]")}), 20), kBad,
       "hole of 4 bytes in the data section between tensor 'a' (ends at 8) and tensor 'b' (begins at 12)"},
      {"overlap", image(object({entry("a", "U8", "[8]", "[0,8]"), entry("b", "U8", "[8]", "[4,12]")}), 12), kBad,
       "tensor 'b' with data_offsets [4, 12] overlaps tensor 'a' with data_offsets [0, 8]"},
      {"overlap_identical", image(object({entry("a", "U8", "[8]", "[0,8]"), entry("b", "U8", "[8]", "[0,8]")}), 8),
       kBad, "overlaps tensor 'a'"},
      {"first_not_at_zero", image(object({entry("a", "U8", "[8]", "[8,16]")}), 16), kBad,
       "hole of 8 bytes at the start of the data section: first tensor 'a' begins at byte 8"},
      {"trailing_bytes", image(object({entry("a", "U8", "[8]", "[0,8]")}), 12), kBad,
       "the data section holds 12 bytes but the tensors cover 8: 4 trailing bytes"},
      {"trailing_bytes_no_tensors", image("{}", 4), kBad, "4 trailing bytes"},
      // __metadata__
      {"metadata_non_string", image(R"({"__metadata__":{"k":1}})", 0), kBad,
       "__metadata__ key 'k' has a JSON number value, expected a string"},
      {"metadata_not_object", image(R"({"__metadata__":["a"]})", 0), kBad,
       "__metadata__ is a JSON array, expected an object"},
      {"metadata_null", image(R"({"__metadata__":null})", 0), kBad, "__metadata__ is a JSON null"},
  };
}

std::vector<IndexCase> index_cases() {
  const Bytes a = shard({"w"});
  return {
      {"index_parent_path", {{kIndex, to_bytes(weight_map(R"("w":"../a.safetensors")"))}}, kBad,
       "shard path '../a.safetensors' for tensor 'w' has a '..' component"},
      {"index_inner_parent_path", {{kIndex, to_bytes(weight_map(R"("w":"sub/../../a.safetensors")"))}}, kBad,
       "has a '..' component"},
      {"index_absolute_path", {{kIndex, to_bytes(weight_map(R"("w":"/etc/passwd")"))}}, kBad,
       "shard path '/etc/passwd' for tensor 'w' is an absolute path"},
      {"index_backslash", {{kIndex, to_bytes(weight_map(R"("w":"..\\a.safetensors")"))}}, kBad,
       "contains a backslash"},
      {"index_empty_shard_name", {{kIndex, to_bytes(weight_map(R"("w":"")"))}}, kBad, "shard path '' for tensor 'w' is empty"},
      {"index_nul_in_shard_name", {{kIndex, to_bytes(weight_map(R"("w":"a.safetensors\u0000x")"))}}, kBad,
       "contains a NUL byte"},
      {"index_not_object", {{kIndex, to_bytes("[]")}}, kBad, "index is a JSON array, expected an object"},
      {"index_invalid_json", {{kIndex, to_bytes(R"({"weight_map":)")}}, kBad, "index is not valid JSON"},
      {"index_no_weight_map", {{kIndex, to_bytes(R"({"metadata":{}})")}}, kBad, "index has no weight_map"},
      {"index_weight_map_not_object", {{kIndex, to_bytes(R"({"weight_map":["a.safetensors"]})")}}, kBad,
       "index weight_map is a JSON array, expected an object"},
      {"index_shard_not_string", {{kIndex, to_bytes(weight_map(R"("w":1)"))}}, kBad,
       "weight_map gives tensor 'w' a JSON number, expected a shard file name"},
      {"index_duplicate_tensor", {{kIndex, to_bytes(weight_map(R"("w":"a.safetensors","w":"a.safetensors")"))}, {"a.safetensors", a}},
       kBad, "duplicate key 'w' in 'weight_map'"},
      {"index_tensor_missing_in_shard",
       {{kIndex, to_bytes(weight_map(R"("w":"a.safetensors","v":"a.safetensors")"))}, {"a.safetensors", a}}, kBad,
       "weight_map puts tensor 'v' in shard 'a.safetensors', but"},
      {"index_tensor_in_wrong_shard",
       {{kIndex, to_bytes(weight_map(R"("w":"b.safetensors","v":"b.safetensors")"))},
        {"a.safetensors", a},
        {"b.safetensors", shard({"v"})}},
       kBad, "weight_map puts tensor 'w' in shard 'b.safetensors'"},
      {"index_tensor_in_two_shards",
       {{kIndex, to_bytes(weight_map(R"("w":"a.safetensors","v":"b.safetensors")"))},
        {"a.safetensors", a},
        {"b.safetensors", shard({"v", "w"})}},
       kBad, "tensor 'w' is in two shards"},
      {"index_missing_shard_file", {{kIndex, to_bytes(weight_map(R"("w":"gone.safetensors")"))}}, ErrorCode::io,
       "cannot load shard 'gone.safetensors'"},
      {"index_malformed_shard",
       {{kIndex, to_bytes(weight_map(R"("w":"a.safetensors")"))}, {"a.safetensors", image("{}", 3)}}, kBad,
       "cannot load shard 'a.safetensors'"},
      {"dir_pytorch_only", {{"pytorch_model.bin", to_bytes("PK")}, {"config.json", to_bytes("{}")}}, ErrorCode::io,
       "convert the directory with tools/convert_to_safetensors.py"},
      {"dir_without_weights", {{"config.json", to_bytes("{}")}}, ErrorCode::io,
       "no model.safetensors or model.safetensors.index.json in this directory"},
  };
}

void write_file(const fs::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out.flush()) throw std::runtime_error("cannot write " + path.string());
}

Bytes read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return to_bytes(text);
}

}  // namespace encore::test
