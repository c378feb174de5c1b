// JSON handling for safetensors headers and index files: a hardened parser (nesting cap,
// duplicate keys rejected, every failure an Error(bad_model_file)) and the per-tensor checks of
// a header. Layout checks that span several tensors live in safetensors_reader.cpp.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "encore/core/dtype.h"
#include "encore/io/safetensors.h"

namespace encore::io::detail {

/// Where a JSON document came from, for messages: "{source}: {what} ...".
struct JsonOrigin {
  std::string_view source;  ///< file path or buffer name
  std::string_view what;    ///< "header", "index"
};

/// Parses one JSON document. Rejects invalid JSON or UTF-8, trailing non-whitespace, duplicate
/// keys in any object and nesting deeper than `max_depth` (so hostile input cannot exhaust
/// memory or stack). Throws Error(bad_model_file) naming the origin and the defect; no nlohmann
/// exception escapes.
nlohmann::json parse_json(std::string_view text, int max_depth, const JsonOrigin& origin);
/// Same, keeping object keys in file order.
nlohmann::ordered_json parse_ordered_json(std::string_view text, int max_depth, const JsonOrigin& origin);

/// Nesting of a safetensors header: the object, a tensor entry, its shape array.
inline constexpr int kHeaderMaxDepth = 3;

/// The content of a header that passed the per-tensor checks.
struct ParsedHeader {
  std::vector<TensorEntry> entries;  ///< in no particular order
  std::map<std::string, std::string> metadata;
};

/// Parses `header` (the JSON text after the length prefix) and checks each entry on its own:
/// fields, dtype allow-list, shape, data_offsets and their size against shape × dtype.
ParsedHeader parse_header(std::string_view header, std::string_view source);

/// The safetensors spelling of a dtype: "F32", "F16", "BF16", "I8", "U8", "I32", "I64", "BOOL".
const char* safetensors_dtype_name(DType dtype) noexcept;
/// The dtype spelled `name` in a header, if encore reads it.
std::optional<DType> parse_safetensors_dtype(std::string_view name) noexcept;

/// Text taken from a file, made safe to embed in a message: printable ASCII is kept, other
/// bytes become \xNN, and long text is cut to `max_chars` with "...".
std::string printable(std::string_view text, std::size_t max_chars = 120);

}  // namespace encore::io::detail
