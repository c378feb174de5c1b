// JSON handling for safetensors headers and index files: a hardened DOM parser (nesting cap,
// duplicate keys rejected, every failure an Error(bad_model_file)) for index, config and tokenizer
// files, and the header parser (safetensors_header.cpp), which reads the tensor table straight from
// SAX events. Layout checks that span several tensors live in safetensors_reader.cpp.
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

/// Text taken from a file, made safe to embed in a message: printable ASCII is kept, other
/// bytes become \xNN, and long text is cut to `max_chars` with "...".
std::string printable(std::string_view text, std::size_t max_chars = 120);

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

/// "is not valid JSON (at byte N): ..." for a syntax error reported by nlohmann's SAX parser.
std::string json_syntax_error(std::size_t position, const nlohmann::json::exception& ex);
/// Throws Error(bad_model_file) when `text` holds a NUL byte (nlohmann would stop there).
void check_no_nul(std::string_view text, const JsonOrigin& origin);
/// Throws Error(bad_model_file) "{source}: {what} {defect}".
[[noreturn]] void fail_json(const JsonOrigin& origin, std::string_view defect);

/// Runs nlohmann's SAX parser over `text` into `sax`, which stops it by returning false from an
/// event and says why through `sax.error()`. Every failure throws Error(bad_model_file).
template <typename Json, typename Sax>
void run_sax(std::string_view text, const JsonOrigin& origin, Sax& sax) {
  check_no_nul(text, origin);
  bool ok = false;
  try {
    ok = Json::sax_parse(text.begin(), text.end(), &sax);
  } catch (const nlohmann::json::exception& e) {  // not expected from the SAX driver; never leak one
    fail_json(origin, "cannot be parsed: " + printable(e.what(), 300));
  }
  if (!ok) fail_json(origin, sax.error());
}

/// Nesting of a safetensors header: the object, a tensor entry, its shape array.
inline constexpr int kHeaderMaxDepth = 3;

/// The content of a header that passed the per-tensor checks.
struct ParsedHeader {
  std::vector<TensorEntry> entries;  ///< in no particular order
  std::map<std::string, std::string> metadata;
};

/// Parses `header` (the JSON text after the length prefix) and checks each entry on its own:
/// fields, dtype allow-list, shape, data_offsets and their size against shape × dtype. Memory is
/// a small multiple of the header size whatever it holds (no DOM is built).
ParsedHeader parse_header(std::string_view header, std::string_view source);

/// The safetensors spelling of a dtype: "F32", "F16", "BF16", "I8", "U8", "I32", "I64", "BOOL".
const char* safetensors_dtype_name(DType dtype) noexcept;
/// The dtype spelled `name` in a header, if encore reads it.
std::optional<DType> parse_safetensors_dtype(std::string_view name) noexcept;

}  // namespace encore::io::detail
