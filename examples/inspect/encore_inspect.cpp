// encore-inspect: lists the tensors of a safetensors file, index or model directory.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "encore/io/model_files.h"

namespace {

constexpr const char* kUsage =
    "usage: encore-inspect [--json] PATH\n"
    "  Lists the tensors of PATH (a .safetensors file, a model.safetensors.index.json, or a model\n"
    "  directory): name, dtype, shape and bytes, then the totals.\n"
    "options:\n"
    "  --json      print the same as one JSON object\n"
    "  -h, --help  print this help\n"
    "exit status: 0 on success, 1 when PATH cannot be read or is malformed, 2 on bad usage\n";

struct Options {
  std::string path;
  bool json = false;
};

// One listed tensor; `file` indexes ModelWeights::files().
struct Row {
  const encore::io::TensorEntry* entry;
  std::size_t file;
};

// Tensor names come from the file: keep control bytes off the terminal.
std::string printable(std::string_view text) {
  std::string out;
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) out += fmt::format("\\x{:02x}", u);
    else out += c;
  }
  return out;
}

// Columns are padded by code points, so UTF-8 names line up (wide CJK glyphs still count as one).
std::size_t text_width(std::string_view text) {
  return static_cast<std::size_t>(
      std::count_if(text.begin(), text.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xc0) != 0x80; }));
}

std::string pad(std::string text, std::size_t width) {
  const std::size_t w = text_width(text);
  if (w < width) text.append(width - w, ' ');
  return text;
}

/// Length of the well-formed UTF-8 sequence at text[i] (RFC 3629: no overlong forms, surrogates
/// or code points past U+10FFFF), or 0.
std::size_t utf8_sequence(std::string_view text, std::size_t i) {
  const auto at = [&](std::size_t k) { return k < text.size() ? static_cast<unsigned char>(text[k]) : 0u; };
  const unsigned c = at(i);
  const auto cont = [&](std::size_t k, unsigned lo = 0x80, unsigned hi = 0xbf) { return at(k) >= lo && at(k) <= hi; };
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) return cont(i + 1) ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    const bool second = c == 0xe0 ? cont(i + 1, 0xa0) : c == 0xed ? cont(i + 1, 0x80, 0x9f) : cont(i + 1);
    return second && cont(i + 2) ? 3 : 0;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    const bool second = c == 0xf0 ? cont(i + 1, 0x90) : c == 0xf4 ? cont(i + 1, 0x80, 0x8f) : cont(i + 1);
    return second && cont(i + 2) && cont(i + 3) ? 4 : 0;
  }
  return 0;
}

// A JSON string; bytes that are not UTF-8 (file names may hold any) become U+FFFD, as JSON must be
// UTF-8.
std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (std::size_t i = 0; i < text.size();) {
    const char c = text[i];
    const auto u = static_cast<unsigned char>(c);
    const std::size_t n = utf8_sequence(text, i);
    if (n == 0) out += "\\ufffd", i += 1;
    else if (n > 1) out.append(text.substr(i, n)), i += n;
    else if (c == '"' || c == '\\') out += {'\\', c}, i += 1;
    else if (u < 0x20 || u == 0x7f) out += fmt::format("\\u{:04x}", u), i += 1;
    else out += c, i += 1;
  }
  return out + '"';
}

std::string dtype_label(encore::DType t) {
  std::string s = encore::dtype_name(t);
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return s;
}

std::string human_bytes(std::uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  std::size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(units)) v /= 1024, ++u;
  return u == 0 ? fmt::format("{} B", n) : fmt::format("{:.1f} {}", v, units[u]);
}

std::vector<Row> rows_by_name(const encore::io::ModelWeights& w) {
  std::vector<Row> rows;
  for (std::size_t f = 0; f < w.files().size(); ++f)
    for (const auto& e : w.files()[f].entries()) rows.push_back({&e, f});
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.entry->name < b.entry->name; });
  return rows;
}

void print_table(const encore::io::ModelWeights& w) {
  const std::vector<Row> rows = rows_by_name(w);
  const bool sharded = w.files().size() > 1;
  std::size_t name_w = 4, shape_w = 5, bytes_w = 5;
  for (const Row& r : rows) {
    name_w = std::max(name_w, text_width(printable(r.entry->name)));
    shape_w = std::max(shape_w, r.entry->shape.str().size());
    bytes_w = std::max(bytes_w, fmt::formatted_size("{}", r.entry->end - r.entry->begin));
  }
  fmt::print("{}  DTYPE  {}  {:>{}}{}\n", pad("NAME", name_w), pad("SHAPE", shape_w), "BYTES", bytes_w,
             sharded ? "  FILE" : "");
  for (const Row& r : rows) {
    const auto& e = *r.entry;
    fmt::print("{}  {}  {}  {:>{}}{}\n", pad(printable(e.name), name_w), pad(dtype_label(e.dtype), 5),
               pad(e.shape.str(), shape_w), e.end - e.begin, bytes_w,
               sharded ? "  " + printable(w.files()[r.file].source()) : std::string());
  }
  fmt::print("\ntensors     {}\nparameters  {}\nbytes       {} ({})\nfiles       {}\n", rows.size(),
             w.parameter_count(), w.data_bytes(), human_bytes(w.data_bytes()), w.files().size());
  for (const auto& f : w.files()) fmt::print("  {}\n", printable(f.source()));
}

void print_json(const encore::io::ModelWeights& w) {
  std::vector<std::string> tensors, files;
  for (const Row& r : rows_by_name(w)) {
    const auto& e = *r.entry;
    tensors.push_back(fmt::format("{{\"name\":{},\"dtype\":\"{}\",\"shape\":[{}],\"bytes\":{},\"file\":{}}}",
                                  json_string(e.name), dtype_label(e.dtype), fmt::join(e.shape.span(), ","),
                                  e.end - e.begin, r.file));
  }
  for (const auto& f : w.files()) files.push_back(json_string(f.source()));
  fmt::print("{{\"files\":[{}],\"tensors\":[{}],\"tensor_count\":{},\"parameters\":{},\"bytes\":{}}}\n",
             fmt::join(files, ","), fmt::join(tensors, ","), tensors.size(), w.parameter_count(), w.data_bytes());
}

// Returns the exit status to use now, or -1 to go on.
int parse_args(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      fmt::print("{}", kUsage);
      return 0;
    }
    if (a == "--json") {
      o.json = true;
    } else if (a.starts_with("-") && a != "-") {
      fmt::print(stderr, "encore-inspect: unknown option '{}'\n{}", printable(a), kUsage);
      return 2;
    } else if (!o.path.empty()) {
      fmt::print(stderr, "encore-inspect: expected one PATH, got '{}' and '{}'\n{}", printable(o.path),
                 printable(a), kUsage);
      return 2;
    } else {
      o.path = a;
    }
  }
  if (o.path.empty()) {
    fmt::print(stderr, "encore-inspect: missing PATH\n{}", kUsage);
    return 2;
  }
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);  // `encore-inspect … | head` must end with a status, not a signal
  Options options;
  if (const int status = parse_args(argc, argv, options); status >= 0) return status;
  try {
    const auto weights = encore::io::ModelWeights::open(options.path);
    if (options.json) print_json(weights);
    else print_table(weights);
  } catch (const std::exception& e) {
    fmt::print(stderr, "encore-inspect: error: {}\n", e.what());
    return 1;
  }
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {  // a full disk must not look like success
    if (errno != EPIPE) fmt::print(stderr, "encore-inspect: error: writing the output failed: {}\n", std::strerror(errno));
    return 1;
  }
  return 0;
}
