#include "io/safetensors_json.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <set>

#include "core/check.h"

namespace encore::io::detail {

using encore::detail::fail;

std::string printable(std::string_view text, std::size_t max_chars) {
  std::string out;
  for (const char c : text.substr(0, max_chars)) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) out += c;
    else out += fmt::format("\\x{:02x}", u);
  }
  if (text.size() > max_chars) out += "...";
  return out;
}

namespace {

// Builds a DOM through nlohmann's SAX interface so that the parse can be stopped at the first
// duplicate key or at excessive nesting (nlohmann's own DOM parser keeps the last duplicate and
// has no depth limit). nlohmann's SAX driver is iterative, so deep input cannot recurse.
template <typename Json>
class DomBuilder {
 public:
  using string_t = typename Json::string_t;
  explicit DomBuilder(int max_depth) : max_depth_(max_depth) {}

  bool null() { return add(Json(nullptr)); }
  bool boolean(bool v) { return add(Json(v)); }
  bool number_integer(typename Json::number_integer_t v) { return add(Json(v)); }
  bool number_unsigned(typename Json::number_unsigned_t v) { return add(Json(v)); }
  bool number_float(typename Json::number_float_t v, const string_t&) { return add(Json(v)); }
  bool string(string_t& v) { return add(Json(std::move(v))); }
  bool binary(typename Json::binary_t&) { return reject("contains binary data"); }
  bool start_object(std::size_t) { return open(Json::object()); }
  bool start_array(std::size_t) { return open(Json::array()); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }

  bool key(string_t& k) {
    Level& level = levels_.back();
    // A map-backed object finds its own keys (no second copy of every key: a hostile header of
    // many entries costs half the memory); an ordered object's linear search would be quadratic,
    // so it keeps a set.
    bool seen = false;
    if constexpr (kOrdered) seen = !level.keys.insert(k).second;
    else seen = level.value->contains(k);
    if (seen) return reject(fmt::format("has duplicate key '{}'{}", printable(k), location(false)));
    level.key = std::move(k);
    return true;
  }

  bool parse_error(std::size_t position, const std::string&, const nlohmann::json::exception& ex) {
    // ex.what() is "[json.exception.parse_error.101] parse error at line 1, column 2: ..."
    std::string_view detail = ex.what();
    if (const auto colon = detail.find(": "); colon != std::string_view::npos) detail.remove_prefix(colon + 2);
    return reject(fmt::format("is not valid JSON (at byte {}): {}", position, printable(detail, 300)));
  }

  Json& root() { return root_; }
  const std::string& error() const { return error_; }

 private:
  static constexpr bool kOrdered = requires { typename Json::object_t::Container; };
  struct Level {
    Json* value;
    std::set<string_t> keys;  // keys seen so far, for ordered objects
    string_t key;             // the key whose value comes next, for objects
  };

  bool reject(std::string message) {
    error_ = std::move(message);
    return false;
  }

  // " in 'a' > 'b'": the keys leading to the defect, to say where it is. A duplicate key is
  // reported in its object (`innermost` false), a value nested too deep under its own key.
  std::string location(bool innermost) const {
    std::string path;
    const std::size_t n = levels_.size() - (innermost || levels_.empty() ? 0 : 1);
    for (std::size_t i = 0; i < n; ++i) {
      if (!levels_[i].value->is_object()) continue;
      path += fmt::format("{}'{}'", path.empty() ? " in " : " > ", printable(levels_[i].key, 60));
    }
    return path;
  }

  Json* insert(Json&& v) {
    if (levels_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    Level& level = levels_.back();
    if (level.value->is_array()) {
      level.value->push_back(std::move(v));
      return &level.value->back();
    }
    return &insert_member(*level.value, string_t(level.key), std::move(v));  // key kept for messages
  }

  // key() has checked that the key is new, so an ordered object can append directly instead of
  // taking ordered_map's linear search (quadratic over a hostile index with many keys).
  static Json& insert_member(Json& object, string_t&& key, Json&& v) {
    auto& members = object.template get_ref<typename Json::object_t&>();
    if constexpr (requires { typename Json::object_t::Container; }) {
      auto& list = static_cast<typename Json::object_t::Container&>(members);
      return list.emplace_back(std::move(key), std::move(v)).second;
    } else {
      return members.emplace(std::move(key), std::move(v)).first->second;
    }
  }
  bool add(Json v) {
    insert(std::move(v));
    return true;
  }

  bool open(Json&& container) {
    if (static_cast<int>(levels_.size()) >= max_depth_)
      return reject(fmt::format("nests deeper than {} levels{}", max_depth_, location(true)));
    Json* slot = insert(std::move(container));
    levels_.push_back(Level{slot, {}, {}});
    return true;
  }
  bool close() {
    levels_.pop_back();
    return true;
  }

  int max_depth_;
  Json root_;
  std::vector<Level> levels_;  // the open containers; pointers stay valid as they are only appended to
  std::string error_;
};

template <typename Json>
Json parse_json_as(std::string_view text, int max_depth, const JsonOrigin& origin) {
  // nlohmann stops at a NUL byte as if the input ended there, which would accept garbage after
  // it; a NUL is never valid JSON (raw control bytes are not allowed in strings either).
  if (const auto nul = text.find('\0'); nul != std::string_view::npos)
    fail(ErrorCode::bad_model_file, "{}: {} is not valid JSON (at byte {}): it contains a NUL byte", origin.source,
         origin.what, nul);
  DomBuilder<Json> builder(max_depth);
  bool ok = false;
  try {
    ok = Json::sax_parse(text.begin(), text.end(), &builder);
  } catch (const nlohmann::json::exception& e) {  // not expected from the SAX driver; never leak one
    fail(ErrorCode::bad_model_file, "{}: {} cannot be parsed: {}", origin.source, origin.what,
         printable(e.what(), 300));
  }
  if (!ok) fail(ErrorCode::bad_model_file, "{}: {} {}", origin.source, origin.what, builder.error());
  return std::move(builder.root());
}

// ---- header entries ---------------------------------------------------------------------------

constexpr std::array<std::pair<std::string_view, DType>, kNumDTypes> kDTypeNames{{
    {"F32", DType::F32},
    {"F16", DType::F16},
    {"BF16", DType::BF16},
    {"I8", DType::I8},
    {"U8", DType::U8},
    {"I32", DType::I32},
    {"I64", DType::I64},
    {"BOOL", DType::Bool},
}};

using json = nlohmann::json;

// Context for the messages about one tensor entry.
struct EntryContext {
  std::string_view source;
  std::string name;  // printable
};

// Reads a non-negative integer that fits int64 (shape extents) or uint64 (offsets).
std::uint64_t read_count(const json& v, std::uint64_t max, const EntryContext& ctx, const char* field,
                         std::size_t index) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > max)
      fail(ErrorCode::bad_model_file, "{}: tensor '{}' has {}[{}] = {}, which exceeds the largest supported value {}",
           ctx.source, ctx.name, field, index, u, max);
    return u;
  }
  if (v.is_number_integer()) {
    const auto s = v.get<std::int64_t>();
    if (s >= 0) return static_cast<std::uint64_t>(s);  // "-0" parses as a signed zero
    fail(ErrorCode::bad_model_file, "{}: tensor '{}' has negative {}[{}] = {}, expected a non-negative integer",
         ctx.source, ctx.name, field, index, s);
  }
  fail(ErrorCode::bad_model_file, "{}: tensor '{}' has {}[{}] = {}, expected a non-negative integer", ctx.source,
       ctx.name, field, index, printable(v.dump(-1, ' ', false, json::error_handler_t::replace), 40));
}

const json& require_field(const json& entry, const char* field, const EntryContext& ctx) {
  const auto it = entry.find(field);
  if (it == entry.end())
    fail(ErrorCode::bad_model_file, "{}: tensor '{}' has no '{}' field (expected dtype, shape and data_offsets)",
         ctx.source, ctx.name, field);
  return *it;
}

const json& require_array(const json& entry, const char* field, const EntryContext& ctx) {
  const json& v = require_field(entry, field, ctx);
  if (!v.is_array())
    fail(ErrorCode::bad_model_file, "{}: tensor '{}' field '{}' is a JSON {}, expected an array of integers",
         ctx.source, ctx.name, field, v.type_name());
  return v;
}

void check_fields(const json& entry, const EntryContext& ctx) {
  for (const auto& [key, value] : entry.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      fail(ErrorCode::bad_model_file,
           "{}: tensor '{}' has unknown field '{}': expected only dtype, shape and data_offsets", ctx.source,
           ctx.name, printable(key));
  }
}

DType read_dtype(const json& entry, const EntryContext& ctx) {
  const json& v = require_field(entry, "dtype", ctx);
  if (!v.is_string())
    fail(ErrorCode::bad_model_file, "{}: tensor '{}' field 'dtype' is a JSON {}, expected a string such as \"F32\"",
         ctx.source, ctx.name, v.type_name());
  const auto& name = v.get_ref<const std::string&>();
  if (const auto dtype = parse_safetensors_dtype(name)) return *dtype;
  // dtypes of the safetensors format that encore does not read: a valid file it cannot use
  // (unsupported), unlike a name the format does not have (a malformed file).
  constexpr std::string_view kFormatOnly[] = {"F64", "I16", "U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0",
                                              "F4", "F6_E2M3", "F6_E3M2", "C64"};
  const bool format_dtype = std::find(std::begin(kFormatOnly), std::end(kFormatOnly), name) != std::end(kFormatOnly);
  fail(format_dtype ? ErrorCode::unsupported : ErrorCode::bad_model_file,
       "{}: unsupported dtype '{}' for tensor '{}': encore reads F32, F16, BF16, I8, U8, I32, I64, BOOL", ctx.source,
       printable(name, 40), ctx.name);
}

Shape read_shape(const json& entry, const EntryContext& ctx) {
  const json& v = require_array(entry, "shape", ctx);
  if (v.size() > static_cast<std::size_t>(kMaxDims))  // valid in the format, beyond encore's tensors
    fail(ErrorCode::unsupported, "{}: tensor '{}' has rank {}: encore supports at most {} dimensions",
         ctx.source, ctx.name, v.size(), kMaxDims);
  Shape shape;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const auto max = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    shape.push_back(static_cast<std::int64_t>(read_count(v[i], max, ctx, "shape", i)));
  }
  return shape;
}

// The byte size of shape × dtype, or a message when it does not fit 64 bits.
std::uint64_t checked_nbytes(const Shape& shape, DType dtype, const EntryContext& ctx) {
  std::uint64_t n = 1, span = 1;  // span: the product with zeros counted as 1, what strides multiply
  for (const std::int64_t d : shape) {
    const auto du = static_cast<std::uint64_t>(d);
    const std::uint64_t limit = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    if (__builtin_mul_overflow(n, du, &n) || n > limit || __builtin_mul_overflow(span, du == 0 ? 1 : du, &span) ||
        span > limit)
      fail(ErrorCode::bad_model_file,
           "{}: tensor '{}' has shape {} whose element count overflows 64 bits (with zero dimensions counted "
           "as 1, as a view's strides count them)",
           ctx.source, ctx.name, shape.str());
  }
  std::uint64_t bytes = 0;
  if (__builtin_mul_overflow(n, dtype_size(dtype), &bytes))
    fail(ErrorCode::bad_model_file, "{}: tensor '{}' has shape {} of {} whose byte size overflows 64 bits",
         ctx.source, ctx.name, shape.str(), safetensors_dtype_name(dtype));
  return bytes;
}

TensorEntry read_entry(const std::string& name, const json& value, std::string_view source) {
  const EntryContext ctx{source, printable(name)};
  if (name.empty()) fail(ErrorCode::bad_model_file, "{}: header has a tensor with an empty name", source);
  if (!value.is_object())
    fail(ErrorCode::bad_model_file,
         "{}: tensor '{}' is a JSON {}, expected an object with dtype, shape and data_offsets", source, ctx.name,
         value.type_name());
  check_fields(value, ctx);
  TensorEntry e;
  e.name = name;
  e.dtype = read_dtype(value, ctx);
  e.shape = read_shape(value, ctx);
  const json& offsets = require_array(value, "data_offsets", ctx);
  if (offsets.size() != 2)
    fail(ErrorCode::bad_model_file, "{}: tensor '{}' has {} data_offsets, expected 2 ([begin, end])", source,
         ctx.name, offsets.size());
  const auto max = std::numeric_limits<std::uint64_t>::max();
  e.begin = read_count(offsets[0], max, ctx, "data_offsets", 0);
  e.end = read_count(offsets[1], max, ctx, "data_offsets", 1);
  if (e.begin > e.end)
    fail(ErrorCode::bad_model_file, "{}: tensor '{}' has data_offsets [{}, {}]: begin is after end", source,
         ctx.name, e.begin, e.end);
  const std::uint64_t needed = checked_nbytes(e.shape, e.dtype, ctx);
  if (e.end - e.begin != needed)
    fail(ErrorCode::bad_model_file,
         "{}: tensor '{}' has data_offsets [{}, {}] ({} bytes) but shape {} of {} needs {} bytes", source,
         ctx.name, e.begin, e.end, e.end - e.begin, e.shape.str(), safetensors_dtype_name(e.dtype), needed);
  return e;
}

std::map<std::string, std::string> read_metadata(const json& value, std::string_view source) {
  if (!value.is_object())
    fail(ErrorCode::bad_model_file, "{}: __metadata__ is a JSON {}, expected an object of string values", source,
         value.type_name());
  std::map<std::string, std::string> out;
  for (const auto& [key, v] : value.items()) {
    if (!v.is_string())
      fail(ErrorCode::bad_model_file, "{}: __metadata__ key '{}' has a JSON {} value, expected a string", source,
           printable(key), v.type_name());
    out.emplace(key, v.get<std::string>());
  }
  return out;
}

}  // namespace

nlohmann::json parse_json(std::string_view text, int max_depth, const JsonOrigin& origin) {
  return parse_json_as<nlohmann::json>(text, max_depth, origin);
}

nlohmann::ordered_json parse_ordered_json(std::string_view text, int max_depth, const JsonOrigin& origin) {
  return parse_json_as<nlohmann::ordered_json>(text, max_depth, origin);
}

ParsedHeader parse_header(std::string_view header, std::string_view source) {
  const json root = parse_json(header, kHeaderMaxDepth, {source, "header"});
  if (!root.is_object())
    fail(ErrorCode::bad_model_file, "{}: header is a JSON {}, expected an object", source, root.type_name());
  ParsedHeader out;
  out.entries.reserve(root.size());
  for (const auto& [name, value] : root.items()) {
    if (name == "__metadata__") out.metadata = read_metadata(value, source);
    else out.entries.push_back(read_entry(name, value, source));
  }
  return out;
}

const char* safetensors_dtype_name(DType dtype) noexcept {
  for (const auto& [name, t] : kDTypeNames)
    if (t == dtype) return name.data();
  return "?";
}

std::optional<DType> parse_safetensors_dtype(std::string_view name) noexcept {
  for (const auto& [spelling, t] : kDTypeNames)
    if (spelling == name) return t;
  return std::nullopt;
}

}  // namespace encore::io::detail
