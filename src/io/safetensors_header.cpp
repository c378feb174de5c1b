// The safetensors header parser: reads the tensor table and __metadata__ straight from nlohmann's
// SAX events, without a DOM. DOM nodes cost 10-40x the bytes of the JSON they hold, so a hostile
// header of ~100 MB could take gigabytes; here memory stays a small multiple of the header size
// (the keys of each object kept compactly to find duplicates, each valid entry as a 24-byte record
// until the TensorEntry vector is made, metadata only as the map returned, the content of other
// values not at all).
//
// Which defect a message names is kept as it was with the DOM: JSON defects (syntax, duplicate
// keys, nesting) first, in file order, where the parse stops; then, as the DOM reader walked its
// std::map, the first defect of the entry whose key sorts first. So the defects of entries are
// recorded as they are found (only the one of the smallest key is kept, and the other entries are
// dropped once one is), but raised once the whole text has parsed.
#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cstring>
#include <deque>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/check.h"
#include "io/safetensors_json.h"

namespace encore::io::detail {

using encore::detail::fail;

namespace {

using json = nlohmann::json;

// ---- keys of one object --------------------------------------------------------------------------

// SipHash-1-3 under a per-process random key: the table below probes linearly, and a key set an
// attacker could make collide (with a fixed, known hash) would turn it quadratic.
std::uint64_t keyed_hash(std::string_view s) {
  static const std::array<std::uint64_t, 2> key = [] {
    // Without an entropy source, per-process values not known in advance (the clock, an ASLR
    // address): weaker, but not a constant an attacker can build collisions against offline.
    static const int anchor = 0;
    std::array<std::uint64_t, 2> k{
        static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^ 0x0706050403020100ULL,
        reinterpret_cast<std::uintptr_t>(&anchor) ^ 0x0f0e0d0c0b0a0908ULL};
    try {
      std::random_device rd;
      for (auto& w : k) w ^= (std::uint64_t{rd()} << 32) ^ rd();
    } catch (const std::exception&) {
    }
    return k;
  }();
  std::uint64_t v0 = 0x736f6d6570736575ULL ^ key[0], v1 = 0x646f72616e646f6dULL ^ key[1];
  std::uint64_t v2 = 0x6c7967656e657261ULL ^ key[0], v3 = 0x7465646279746573ULL ^ key[1];
  const auto round = [&] {
    v0 += v1, v1 = std::rotl(v1, 13), v1 ^= v0, v0 = std::rotl(v0, 32);
    v2 += v3, v3 = std::rotl(v3, 16), v3 ^= v2;
    v0 += v3, v3 = std::rotl(v3, 21), v3 ^= v0;
    v2 += v1, v1 = std::rotl(v1, 17), v1 ^= v2, v2 = std::rotl(v2, 32);
  };
  std::size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    std::uint64_t m = 0;
    std::memcpy(&m, s.data() + i, 8);
    v3 ^= m, round(), v0 ^= m;
  }
  std::uint64_t last = std::uint64_t{s.size()} << 56;
  for (std::size_t j = 0; i + j < s.size(); ++j) last |= std::uint64_t{static_cast<unsigned char>(s[i + j])} << (8 * j);
  v3 ^= last, round(), v0 ^= last;
  v2 ^= 0xff, round(), round(), round();
  return v0 ^ v1 ^ v2 ^ v3;
}

// The keys of one JSON object, to find duplicates: the keys back to back in one buffer, and an
// open-addressing table of their indices. About len + 12 bytes a key, where a node-based set costs
// 80 and more (a header of millions of tiny keys is the hostile case).
class KeySet {
 public:
  // Adds `key`; false when it was already there. Keys are numbered from 0 in insertion order.
  bool insert(std::string_view key) {
    if ((ends_.size() + 1) * 4 > slots_.size() * 3) grow();  // load at most 3/4
    std::uint32_t& slot = slots_[find(key, keyed_hash(key))];
    if (slot != 0) return false;
    // The header is at most kMaxSafetensorsHeaderBytes, far below 4 GiB; refuse rather than wrap.
    if (arena_.size() + key.size() > std::numeric_limits<std::uint32_t>::max())
      throw Error(ErrorCode::bad_model_file, "JSON object keys exceed 4 GiB");
    arena_.append(key);
    ends_.push_back(static_cast<std::uint32_t>(arena_.size()));
    slot = static_cast<std::uint32_t>(ends_.size());  // index + 1; 0 marks an empty slot
    return true;
  }

  std::size_t size() const { return ends_.size(); }
  std::string_view operator[](std::size_t i) const { return key(static_cast<std::uint32_t>(i + 1)); }
  // Frees the lookup table once no more keys will come; the keys stay readable.
  void seal() { slots_ = {}; }

  // Empties the set for the next object; a large table is released rather than cleared, so that
  // one huge object followed by many small ones does not cost a full clear each.
  void clear() {
    arena_.clear();
    ends_.clear();
    if (slots_.size() > 64) {
      slots_ = {};
      arena_.shrink_to_fit();
      ends_.shrink_to_fit();
    } else {
      std::fill(slots_.begin(), slots_.end(), 0);
    }
  }

 private:
  std::string_view key(std::uint32_t index) const {  // index + 1, as in slots_
    const std::uint32_t begin = index > 1 ? ends_[index - 2] : 0;
    return std::string_view(arena_).substr(begin, ends_[index - 1] - begin);
  }
  std::size_t find(std::string_view k, std::uint64_t hash) const {
    const std::size_t mask = slots_.size() - 1;
    std::size_t i = hash & mask;
    while (slots_[i] != 0 && key(slots_[i]) != k) i = (i + 1) & mask;
    return i;
  }
  void grow() {
    std::vector<std::uint32_t> old = std::exchange(slots_, std::vector<std::uint32_t>(std::max<std::size_t>(8, slots_.size() * 2)));
    for (const std::uint32_t index : old)
      if (index != 0) slots_[find(key(index), keyed_hash(key(index)))] = index;
  }

  std::string arena_;
  std::vector<std::uint32_t> ends_;   // end of key i in arena_
  std::vector<std::uint32_t> slots_;  // power-of-two size
};

// ---- one tensor entry ----------------------------------------------------------------------------

constexpr std::string_view kFieldsExpected = "(expected dtype, shape and data_offsets)";

// A JSON value's kind as nlohmann's type_name() says it.
const char* type_name(json::value_t t) { return json(t).type_name(); }

// What an entry's "shape" or "data_offsets" field held. Counts are checked as they arrive; the
// first bad element's message is kept, to be raised only if the checks before it pass.
struct CountsField {
  const char* type = nullptr;  // the JSON type when it is not an array; null when absent
  bool present = false;
  std::uint64_t count = 0;
  std::array<std::uint64_t, kMaxDims> values{};
  std::string bad_element;  // message for the first element that is no valid count
};

// The fields of the entry being read. Messages are formatted when a defect is found (rare); a
// valid entry formats nothing.
struct EntryState {
  std::string name;           // printable, for messages
  std::string unknown_field;  // the smallest field name other than the three expected
  bool has_unknown = false;
  bool has_dtype = false;
  const char* dtype_type = nullptr;  // the JSON type when it is not a string
  std::optional<DType> dtype;
  std::string dtype_spelling;  // as written, when not a dtype encore reads
  CountsField shape, offsets;

  void reset(std::string printable_name) {
    *this = EntryState{};
    name = std::move(printable_name);
  }
};

// dtypes of the safetensors format that encore does not read: a valid file it cannot use
// (unsupported), unlike a name the format does not have (a malformed file).
bool format_only_dtype(std::string_view name) {
  constexpr std::string_view kFormatOnly[] = {"F64", "I16", "U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0",
                                              "F4", "F6_E2M3", "F6_E3M2", "C64"};
  return std::find(std::begin(kFormatOnly), std::end(kFormatOnly), name) != std::end(kFormatOnly);
}

// A valid entry until the parse ends: 24 bytes and its dims, where a TensorEntry takes 128. The
// TensorEntry vector is made once the count is known; building it as the parse goes would hold
// up to 3x its size while it grows.
struct PendingEntry {
  std::uint64_t begin = 0, end = 0;
  std::uint32_t key = 0;  // index in the root's KeySet
  DType dtype = DType::F32;
  std::uint8_t rank = 0;
};

// A string from the lexer, whose buffer grows by doubling: copied to fit when much is unused.
std::string fitted(std::string&& s) {
  if (s.capacity() - s.size() > s.size() / 2) s.shrink_to_fit();
  return std::move(s);
}

// A recorded defect of a top-level key.
struct Defect {
  std::string key;
  ErrorCode code;
  std::string message;
};

// ---- the SAX builder -----------------------------------------------------------------------------

class HeaderBuilder {
 public:
  using string_t = json::string_t;
  HeaderBuilder(std::string_view source, int max_depth) : source_(source), levels_(max_depth) {}

  bool null() { return scalar(json(nullptr)); }
  bool boolean(bool v) { return scalar(json(v)); }
  bool number_integer(json::number_integer_t v) { return scalar(json(v)); }
  bool number_unsigned(json::number_unsigned_t v) { return scalar(json(v)); }
  bool number_float(json::number_float_t v, const string_t&) { return scalar(json(v)); }
  bool string(string_t& v) { return scalar(json(std::move(v))); }
  bool binary(json::binary_t&) { return reject("contains binary data"); }
  bool start_object(std::size_t) { return open(true); }
  bool start_array(std::size_t) { return open(false); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::json::exception& ex) {
    return reject(json_syntax_error(position, ex));
  }
  bool key(string_t& k);

  const std::string& error() const { return error_; }
  ParsedHeader finish();

 private:
  // What a container is, which says what its values mean.
  enum class Role { root, entry, metadata, shape, offsets, other };
  struct Level {
    bool object = false;
    Role role = Role::other;
    std::string key;  // for objects: the key whose value comes next
    KeySet keys;      // for objects other than __metadata__ (its map finds its own duplicates)
  };

  bool reject(std::string message) {
    error_ = std::move(message);
    return false;
  }
  // " in 'a' > 'b'": the keys leading to the defect. A duplicate key is reported in its object
  // (`innermost` false), a value nested too deep under its own key.
  std::string location(bool innermost) const {
    std::string path;
    const std::size_t n = depth_ - (innermost || depth_ == 0 ? 0 : 1);
    for (std::size_t i = 0; i < n; ++i) {
      if (!levels_[i].object) continue;
      path += fmt::format("{}'{}'", path.empty() ? " in " : " > ", printable(levels_[i].key, 60));
    }
    return path;
  }
  // Whether a defect of top-level `key` would be reported before the one recorded (if any).
  bool precedes_recorded(std::string_view key) const { return !defect_ || key < defect_->key; }
  void record(std::string_view key, ErrorCode code, std::string message) {
    defect_ = Defect{std::string(key), code, std::move(message)};
    entries_ = {};  // the parse fails now: the entries are not needed
    dims_ = {};
  }

  bool scalar(json&& v);
  bool open(bool object);
  bool close();
  Role top_level_value(json::value_t type);
  void field_value(const json& v);
  void count_element(CountsField& field, const char* name, std::uint64_t max, const json& v);
  void finish_entry();
  std::optional<Defect> entry_defect(const EntryState& e) const;

  std::string_view source_;
  std::vector<Level> levels_;  // the open containers are levels_[0, depth_); reused, keeping their tables
  std::size_t depth_ = 0;
  const char* root_type_ = nullptr;  // the root's JSON type when it is not an object
  EntryState entry_;
  std::deque<PendingEntry> entries_;  // a deque, so that growing it copies nothing
  std::deque<std::int64_t> dims_;      // the entries' shapes, back to back
  std::map<std::string, std::string> metadata_;
  std::string metadata_bad_key;  // the smallest __metadata__ key with a value that is not a string
  const char* metadata_bad_type = nullptr;
  std::optional<Defect> defect_;
  std::string error_;
};

bool HeaderBuilder::key(string_t& k) {
  Level& level = levels_[depth_ - 1];
  const bool seen = level.role == Role::metadata ? metadata_.contains(k) : !level.keys.insert(k);
  if (seen) return reject(fmt::format("has duplicate key '{}'{}", printable(k), location(false)));
  if (level.role == Role::entry && k != "dtype" && k != "shape" && k != "data_offsets" &&
      (!entry_.has_unknown || k < entry_.unknown_field)) {
    entry_.unknown_field = k;
    entry_.has_unknown = true;
  }
  level.key = std::move(k);
  return true;
}

// A value starts in the current container: what it is there, and any defect its type already shows.
HeaderBuilder::Role HeaderBuilder::top_level_value(json::value_t type) {
  const std::string& name = levels_[0].key;
  const bool object = type == json::value_t::object;
  if (name == "__metadata__") {
    if (object) return Role::metadata;
    if (precedes_recorded(name))
      record(name, ErrorCode::bad_model_file,
             fmt::format("{}: __metadata__ is a JSON {}, expected an object of string values", source_,
                         type_name(type)));
    return Role::other;
  }
  if (!precedes_recorded(name)) return Role::other;  // a smaller key already failed: only parse it
  if (name.empty()) {
    record(name, ErrorCode::bad_model_file, fmt::format("{}: header has a tensor with an empty name", source_));
    return Role::other;
  }
  if (!object) {
    record(name, ErrorCode::bad_model_file,
           fmt::format("{}: tensor '{}' is a JSON {}, expected an object with dtype, shape and data_offsets",
                       source_, printable(name), type_name(type)));
    return Role::other;
  }
  entry_.reset(printable(name));
  return Role::entry;
}

bool HeaderBuilder::scalar(json&& v) {
  if (depth_ == 0) {
    root_type_ = v.type_name();
    return true;
  }
  Level& level = levels_[depth_ - 1];
  switch (level.role) {
    case Role::root:
      top_level_value(v.type());
      break;
    case Role::entry:
      field_value(v);
      break;
    case Role::metadata:
      if (!v.is_string() && (metadata_bad_type == nullptr || level.key < metadata_bad_key)) {
        metadata_bad_key = level.key;
        metadata_bad_type = v.type_name();
      }
      // Kept for duplicate keys even when the header already failed.
      metadata_.emplace(fitted(std::move(level.key)), v.is_string() ? fitted(std::move(v.get_ref<std::string&>())) : "");
      break;
    case Role::shape:
      count_element(entry_.shape, "shape", std::numeric_limits<std::int64_t>::max(), v);
      break;
    case Role::offsets:
      count_element(entry_.offsets, "data_offsets", std::numeric_limits<std::uint64_t>::max(), v);
      break;
    case Role::other:
      break;
  }
  return true;
}

bool HeaderBuilder::open(bool object) {
  if (depth_ >= levels_.size())
    return reject(fmt::format("nests deeper than {} levels{}", levels_.size(), location(true)));
  const auto type = object ? json::value_t::object : json::value_t::array;
  Role role = Role::other;
  if (depth_ == 0) {
    role = object ? Role::root : Role::other;
    if (!object) root_type_ = "array";
  } else {
    Level& parent = levels_[depth_ - 1];
    if (parent.role == Role::root) {
      role = top_level_value(type);
    } else if (parent.role == Role::entry) {
      field_value(json(type));
      if (!object && parent.key == "shape") role = Role::shape;
      if (!object && parent.key == "data_offsets") role = Role::offsets;
    } else if (parent.role == Role::metadata) {
      if (metadata_bad_type == nullptr || parent.key < metadata_bad_key) {
        metadata_bad_key = parent.key;
        metadata_bad_type = type_name(type);
      }
      metadata_.emplace(parent.key, "");  // a copy: the key names this level in messages until it closes
    }
  }
  Level& level = levels_[depth_++];
  level.object = object;
  level.role = role;
  level.keys.clear();
  return true;
}

bool HeaderBuilder::close() {
  const Role role = levels_[--depth_].role;
  if (role == Role::entry) finish_entry();
  if (role == Role::metadata && metadata_bad_type != nullptr && precedes_recorded("__metadata__"))
    record("__metadata__", ErrorCode::bad_model_file,
           fmt::format("{}: __metadata__ key '{}' has a JSON {} value, expected a string", source_,
                       printable(metadata_bad_key), metadata_bad_type));
  return true;
}

// A value of the entry being read, under the field levels_[depth_ - 1].key. Containers come with
// no content (json(value_t)): only their type matters here.
void HeaderBuilder::field_value(const json& v) {
  const std::string& field = levels_[depth_ - 1].key;
  if (field == "dtype") {
    entry_.has_dtype = true;
    if (!v.is_string()) {
      entry_.dtype_type = v.type_name();
      return;
    }
    const auto& spelling = v.get_ref<const std::string&>();
    entry_.dtype = parse_safetensors_dtype(spelling);
    if (!entry_.dtype) entry_.dtype_spelling = spelling;
  } else if (field == "shape" || field == "data_offsets") {
    CountsField& f = field == "shape" ? entry_.shape : entry_.offsets;
    f.present = true;
    if (!v.is_array()) f.type = v.type_name();
  }
}

// One element of a shape or data_offsets array: a non-negative integer up to `max`.
void HeaderBuilder::count_element(CountsField& f, const char* field, std::uint64_t max, const json& v) {
  const std::uint64_t index = f.count++;
  if (!f.bad_element.empty()) return;
  const std::string& name = entry_.name;
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > max)
      f.bad_element = fmt::format("{}: tensor '{}' has {}[{}] = {}, which exceeds the largest supported value {}",
                                  source_, name, field, index, u, max);
    else if (index < f.values.size())
      f.values[index] = u;
  } else if (v.is_number_integer()) {
    const auto s = v.get<std::int64_t>();
    if (s < 0)
      f.bad_element = fmt::format("{}: tensor '{}' has negative {}[{}] = {}, expected a non-negative integer",
                                  source_, name, field, index, s);
    else if (index < f.values.size())
      f.values[index] = static_cast<std::uint64_t>(s);  // "-0" parses as a signed zero
  } else {
    f.bad_element = fmt::format("{}: tensor '{}' has {}[{}] = {}, expected a non-negative integer", source_, name,
                                field, index, printable(v.dump(-1, ' ', false, json::error_handler_t::replace), 40));
  }
}

void HeaderBuilder::finish_entry() {
  const std::string& name = levels_[0].key;
  if (std::optional<Defect> defect = entry_defect(entry_)) {
    if (precedes_recorded(name)) record(name, defect->code, std::move(defect->message));
    return;
  }
  if (defect_) return;  // the header fails anyway
  const auto rank = static_cast<std::uint8_t>(entry_.shape.count);
  const auto key = static_cast<std::uint32_t>(levels_[0].keys.size() - 1);  // this entry's name
  entries_.push_back({entry_.offsets.values[0], entry_.offsets.values[1], key, *entry_.dtype, rank});
  for (std::uint8_t i = 0; i < rank; ++i) dims_.push_back(static_cast<std::int64_t>(entry_.shape.values[i]));
}

// The first defect of an entry, in the order the checks have always run.
std::optional<Defect> HeaderBuilder::entry_defect(const EntryState& e) const {
  const auto bad = [](std::string message) { return Defect{{}, ErrorCode::bad_model_file, std::move(message)}; };
  const std::string_view src = source_;
  const std::string& name = e.name;
  if (e.has_unknown)
    return bad(fmt::format("{}: tensor '{}' has unknown field '{}': expected only dtype, shape and data_offsets", src,
                           name, printable(e.unknown_field)));
  if (!e.has_dtype)
    return bad(fmt::format("{}: tensor '{}' has no 'dtype' field {}", src, name, kFieldsExpected));
  if (e.dtype_type != nullptr)
    return bad(fmt::format("{}: tensor '{}' field 'dtype' is a JSON {}, expected a string such as \"F32\"", src,
                           name, e.dtype_type));
  if (!e.dtype)
    return Defect{{},
                  format_only_dtype(e.dtype_spelling) ? ErrorCode::unsupported : ErrorCode::bad_model_file,
                  fmt::format("{}: unsupported dtype '{}' for tensor '{}': encore reads F32, F16, BF16, I8, U8, I32, "
                              "I64, BOOL",
                              src, printable(e.dtype_spelling, 40), name)};
  for (const auto& [field, f] : {std::pair{"shape", &e.shape}, std::pair{"data_offsets", &e.offsets}}) {
    if (!f->present) return bad(fmt::format("{}: tensor '{}' has no '{}' field {}", src, name, field, kFieldsExpected));
    if (f->type != nullptr)
      return bad(fmt::format("{}: tensor '{}' field '{}' is a JSON {}, expected an array of integers", src, name,
                             field, f->type));
    if (f == &e.shape && f->count > static_cast<std::uint64_t>(kMaxDims))  // valid in the format, beyond encore's tensors
      return Defect{{}, ErrorCode::unsupported,
                    fmt::format("{}: tensor '{}' has rank {}: encore supports at most {} dimensions", src, name,
                                f->count, kMaxDims)};
    if (f == &e.offsets && f->count != 2)
      return bad(fmt::format("{}: tensor '{}' has {} data_offsets, expected 2 ([begin, end])", src, name, f->count));
    if (!f->bad_element.empty()) return bad(f->bad_element);
  }
  const std::uint64_t begin = e.offsets.values[0], end = e.offsets.values[1];
  if (begin > end)
    return bad(fmt::format("{}: tensor '{}' has data_offsets [{}, {}]: begin is after end", src, name, begin, end));
  // The byte size of shape × dtype must fit 64 bits; so must the product with zeros counted as 1,
  // which is what a view's strides multiply.
  Shape shape;
  for (std::uint64_t i = 0; i < e.shape.count; ++i) shape.push_back(static_cast<std::int64_t>(e.shape.values[i]));
  const std::uint64_t limit = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  std::uint64_t n = 1, span = 1;
  for (const std::int64_t d : shape) {
    const auto du = static_cast<std::uint64_t>(d);
    if (__builtin_mul_overflow(n, du, &n) || n > limit || __builtin_mul_overflow(span, du == 0 ? 1 : du, &span) ||
        span > limit)
      return bad(fmt::format("{}: tensor '{}' has shape {} whose element count overflows 64 bits (with zero "
                             "dimensions counted as 1, as a view's strides count them)",
                             src, name, shape.str()));
  }
  std::uint64_t needed = 0;
  if (__builtin_mul_overflow(n, dtype_size(*e.dtype), &needed))
    return bad(fmt::format("{}: tensor '{}' has shape {} of {} whose byte size overflows 64 bits", src, name,
                           shape.str(), safetensors_dtype_name(*e.dtype)));
  if (end - begin != needed)
    return bad(fmt::format("{}: tensor '{}' has data_offsets [{}, {}] ({} bytes) but shape {} of {} needs {} bytes",
                           src, name, begin, end, end - begin, shape.str(), safetensors_dtype_name(*e.dtype), needed));
  return std::nullopt;
}

ParsedHeader HeaderBuilder::finish() {
  if (root_type_ != nullptr)
    fail(ErrorCode::bad_model_file, "{}: header is a JSON {}, expected an object", source_, root_type_);
  if (defect_) throw Error(defect_->code, std::move(defect_->message));
  ParsedHeader out;
  KeySet& names = levels_[0].keys;
  names.seal();
  out.entries.reserve(entries_.size());
  for (; !entries_.empty(); entries_.pop_front()) {  // freeing the deques as the vector fills
    const PendingEntry& p = entries_.front();
    TensorEntry& e = out.entries.emplace_back();
    e.name = names[p.key];
    e.dtype = p.dtype;
    for (std::uint8_t i = 0; i < p.rank; ++i, dims_.pop_front()) e.shape.push_back(dims_.front());
    e.begin = p.begin;
    e.end = p.end;
  }
  out.metadata = std::move(metadata_);
  return out;
}

}  // namespace

ParsedHeader parse_header(std::string_view header, std::string_view source) {
  HeaderBuilder builder(source, kHeaderMaxDepth);
  run_sax<json>(header, {source, "header"}, builder);
  return builder.finish();
}

}  // namespace encore::io::detail
