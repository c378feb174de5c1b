#include "io/safetensors_json.h"

#include <array>
#include <cstdint>
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

std::string json_syntax_error(std::size_t position, const nlohmann::json::exception& ex) {
  // ex.what() is "[json.exception.parse_error.101] parse error at line 1, column 2: ..."
  std::string_view detail = ex.what();
  if (const auto colon = detail.find(": "); colon != std::string_view::npos) detail.remove_prefix(colon + 2);
  return fmt::format("is not valid JSON (at byte {}): {}", position, printable(detail, 300));
}

void check_no_nul(std::string_view text, const JsonOrigin& origin) {
  // nlohmann stops at a NUL byte as if the input ended there, which would accept garbage after
  // it; a NUL is never valid JSON (raw control bytes are not allowed in strings either).
  if (const auto nul = text.find('\0'); nul != std::string_view::npos)
    fail(ErrorCode::bad_model_file, "{}: {} is not valid JSON (at byte {}): it contains a NUL byte", origin.source,
         origin.what, nul);
}

void fail_json(const JsonOrigin& origin, std::string_view defect) {
  fail(ErrorCode::bad_model_file, "{}: {} {}", origin.source, origin.what, defect);
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
    return reject(json_syntax_error(position, ex));
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
  DomBuilder<Json> builder(max_depth);
  run_sax<Json>(text, origin, builder);
  return std::move(builder.root());
}

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

}  // namespace

nlohmann::json parse_json(std::string_view text, int max_depth, const JsonOrigin& origin) {
  return parse_json_as<nlohmann::json>(text, max_depth, origin);
}

nlohmann::ordered_json parse_ordered_json(std::string_view text, int max_depth, const JsonOrigin& origin) {
  return parse_json_as<nlohmann::ordered_json>(text, max_depth, origin);
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
