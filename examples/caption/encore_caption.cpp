// encore-caption: captions images with a ViT-GPT2 model (Hugging Face VisionEncoderDecoder
// directory). Without --model it uses the tiny random model shipped with encore, which shows the
// whole pipeline working but produces no meaningful text.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <system_error>
#include <vector>

#include "encore/encore.h"
#include "encore/io/image.h"
#include "encore/io/tokenizer.h"
#include "encore/models/vit_gpt2.h"

namespace fs = std::filesystem;

namespace {

struct Args {
  fs::path model;
  fs::path tokenizer;
  std::string device = "cpu";
  std::string dtype = "f32";
  int beams = -1;       // -1: the model's generation config
  int max_length = -1;  // -1: the model's generation config
  int max_new_tokens = -1;
  int captions = -1;  // per image (num_return_sequences); -1: the model's
  bool sample = false, greedy = false;
  std::optional<std::uint64_t> seed;
  float temperature = -1.0f;
  double top_p = -1.0;  // a double, as GenerationOptions::top_p (HF's cut-off is float32(1 - top_p))
  int top_k = -1;
  int threads = 0;
  int batch = 8;  // images decoded and captioned together
  bool json = false;
  std::vector<std::string> images;
};

[[noreturn]] void usage(int status) {
  fmt::print(status == 0 ? stdout : stderr,
             "usage: encore-caption [--model DIR] [--tokenizer DIR] [--device cpu|cuda[:N]] [--dtype f32|f16|bf16]\n"
             "                      [--beams N] [--max-length N | --max-new-tokens N] [--captions N]\n"
             "                      [--sample [--seed N] [--temperature T] [--top-k K] [--top-p P] | --greedy]\n"
             "                      [--batch N] [--threads N] [--json] [--] IMAGE...\n"
             "  Captions each IMAGE (JPEG, PNG, BMP). Without --model, the tiny random demo model shipped\n"
             "  with encore is used (its captions are not meaningful). The tokenizer (vocab.json +\n"
             "  merges.txt) is read from the model directory, else from --tokenizer or encore's copy.\n"
             "  --beams and the length default to the model's generation config (as Hugging Face);\n"
             "  --max-length counts the start token, --max-new-tokens does not (give one of them).\n"
             "  --captions N: N captions per image, the best N of the beams (N <= --beams) or N samples.\n"
             "  --sample draws tokens (temperature, top-k, top-p as Hugging Face); without --seed the seed\n"
             "  is random and printed on stderr, --seed N repeats a run. --greedy: no sampling even where\n"
             "  the model's generation config asks for it.\n"
             "  --batch N: images decoded and captioned together (8); results are printed per batch.\n"
             "  --json prints {{\"captions\":[{{\"image\",\"text\",\"ids\",\"score\",\"token_scores\"}}...],\n"
             "  \"timings_ms\":{{...}}}}; token_scores are the log-probabilities of the generated tokens, score\n"
             "  their sum (beams: divided by the length to the power length_penalty, as Hugging Face's\n"
             "  sequences_scores).\n");
  std::exit(status);
}

[[noreturn]] void usage_error(const std::string& message) {
  fmt::print(stderr, "encore-caption: {}\n", message);
  std::exit(2);
}

int parse_int(const char* flag, const char* text, int lo, int hi = 1'000'000) {
  char* end = nullptr;
  const long v = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || v < lo || v > hi)
    usage_error(fmt::format("{} expects an integer in [{}, {}], got '{}'", flag, lo, hi, text));
  return static_cast<int>(v);
}

std::uint64_t parse_seed(const char* text) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text, &end, 10);
  if (end == text || *end != '\0' || errno == ERANGE || text[0] == '-' || text[0] == '+')
    usage_error(fmt::format("--seed expects an integer in [0, 2^64), got '{}'", text));
  return static_cast<std::uint64_t>(v);
}

double parse_number(const char* flag, const char* text, double lo, double hi) {
  char* end = nullptr;
  const double v = std::strtod(text, &end);
  if (end == text || *end != '\0' || !(v >= lo && v <= hi))
    usage_error(fmt::format("{} expects a number in [{}, {}], got '{}'", flag, lo, hi, text));
  return v;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage_error(arg + " needs a value");
      if (argv[i + 1][0] == '\0') usage_error(arg + " needs a non-empty value");
      return argv[++i];
    };
    if (arg == "--") {  // the rest are images, even names that start with '-'
      a.images.insert(a.images.end(), argv + i + 1, argv + argc);
      break;
    }
    if (arg == "-h" || arg == "--help") usage(0);
    else if (arg == "--model") a.model = value();
    else if (arg == "--tokenizer") a.tokenizer = value();
    else if (arg == "--device") a.device = value();
    else if (arg == "--dtype") a.dtype = value();
    else if (arg == "--beams") a.beams = parse_int("--beams", value(), 1, 1024);
    else if (arg == "--max-length") a.max_length = parse_int("--max-length", value(), 2);
    else if (arg == "--max-new-tokens") a.max_new_tokens = parse_int("--max-new-tokens", value(), 1);
    else if (arg == "--captions") a.captions = parse_int("--captions", value(), 1);
    else if (arg == "--sample") a.sample = true;
    else if (arg == "--greedy") a.greedy = true;
    else if (arg == "--seed") a.seed = parse_seed(value());
    else if (arg == "--temperature") a.temperature = static_cast<float>(parse_number("--temperature", value(), 1e-6, 1e6));
    else if (arg == "--top-k") a.top_k = parse_int("--top-k", value(), 0);
    else if (arg == "--top-p") a.top_p = parse_number("--top-p", value(), 0.0, 1.0);
    else if (arg == "--threads") a.threads = parse_int("--threads", value(), 1);
    else if (arg == "--batch") a.batch = parse_int("--batch", value(), 1);
    else if (arg == "--json") a.json = true;
    else if (!arg.empty() && arg[0] == '-') usage_error(fmt::format("unknown option '{}' (try --help)", arg));
    else a.images.push_back(arg);
  }
  if (a.images.empty()) usage(2);
  if (a.max_length > 0 && a.max_new_tokens > 0) usage_error("--max-length and --max-new-tokens exclude each other");
  if (a.sample && a.greedy) usage_error("--sample and --greedy exclude each other");
  if (a.sample && a.beams > 1) usage_error(fmt::format("--sample with --beams {}: beam sampling is not supported", a.beams));
  if (a.dtype != "f32" && a.dtype != "f16" && a.dtype != "bf16")
    usage_error(fmt::format("--dtype expects f32, f16 or bf16, got '{}'", a.dtype));
  try {
    (void)encore::Device::parse(a.device);
  } catch (const encore::Error& e) {
    usage_error(fmt::format("--device: {}", e.what()));
  }
  return a;
}

// The first of encore's source tree and install prefix that holds `name`/`marker` (a directory this
// user may not read, e.g. a source tree in another user's home, is skipped).
fs::path builtin(const char* name, const char* marker) {
  for (const fs::path base : {fs::path(ENCORE_SOURCE_DATA_DIR), fs::path(ENCORE_INSTALL_DATA_DIR)}) {
    std::error_code ec;
    if (fs::is_regular_file(base / name / marker, ec)) return base / name;
  }
  return fs::path(ENCORE_INSTALL_DATA_DIR) / name;
}

fs::path tokenizer_dir(const Args& a) {
  if (!a.tokenizer.empty()) return a.tokenizer;
  std::error_code ec;
  if (fs::exists(a.model / "vocab.json", ec) || fs::exists(a.model / "tokenizer.json", ec)) return a.model;
  return builtin("gpt2-tokenizer", "vocab.json");
}

// A JSON string literal (quotes and escapes); invalid UTF-8 is replaced rather than rejected.
std::string json_quote(const std::string& s) {
  return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

/// The model's generation settings (as Hugging Face generate() would use them) with the flags on
/// top; exits 2 for sampling flags when the result does not sample.
encore::GenerationOptions generation_options(const Args& a, const encore::VitGpt2& model) {
  encore::GenerationOptions gen = model.generation_options();
  if (a.beams > 0) gen.num_beams = a.beams;
  if (a.max_length > 0) gen.max_length = a.max_length, gen.max_new_tokens = -1;  // the model's would win
  if (a.max_new_tokens > 0) gen.max_new_tokens = a.max_new_tokens;
  if (a.captions > 0) gen.num_return_sequences = a.captions;
  if (a.sample) gen.do_sample = true, gen.num_beams = a.beams > 0 ? a.beams : 1;
  if (a.greedy) gen.do_sample = false, gen.num_beams = a.beams > 0 ? a.beams : 1;
  if (!gen.do_sample && (a.seed || a.temperature > 0 || a.top_k >= 0 || a.top_p >= 0))
    usage_error("--seed, --temperature, --top-k and --top-p need --sample");
  if (gen.do_sample) {
    if (a.seed) {
      gen.seed = *a.seed;
    } else {  // as Hugging Face: a different draw each run unless seeded; printed to repeat it
      std::random_device rd;
      gen.seed = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
      fmt::print(stderr, "encore-caption: sampling with --seed {}\n", gen.seed);
    }
  }
  if (a.temperature > 0) gen.temperature = a.temperature;
  if (a.top_k >= 0) gen.top_k = a.top_k;
  if (a.top_p >= 0) gen.top_p = a.top_p;
  return gen;
}

int run(Args& a) {
  if (a.model.empty()) a.model = builtin("vit_gpt2_tiny", "config.json");
  auto t = std::chrono::steady_clock::now();
  auto model = encore::VitGpt2::load(a.model, {.device = a.device, .dtype = encore::parse_dtype(a.dtype),
                                               .num_threads = a.threads});
  const auto tokenizer = encore::io::Gpt2Tokenizer::from_directory(tokenizer_dir(a));
  const double load_ms = ms_since(t);
  const encore::GenerationOptions gen = generation_options(a, model);
  const auto& c = model.config();
  const encore::io::VitPreprocessOptions prep{.height = static_cast<std::int32_t>(c.image_size),
                                              .width = static_cast<std::int32_t>(c.image_size)};

  double preprocess_ms = 0.0, encode_ms = 0.0, decode_ms = 0.0;
  std::vector<std::string> items;  // --json: one object per caption
  const std::size_t batch = static_cast<std::size_t>(a.batch);
  for (std::size_t first = 0; first < a.images.size(); first += batch) {  // a batch at a time: bounded memory
    const std::size_t count = std::min(batch, a.images.size() - first);
    t = std::chrono::steady_clock::now();
    std::vector<encore::io::Image> images;
    for (std::size_t i = 0; i < count; ++i) images.push_back(encore::io::load_image(a.images[first + i]));
    const encore::Tensor pixels = encore::io::preprocess_vit_batch(images, prep);
    images.clear();
    preprocess_ms += ms_since(t);
    encore::CaptionTimings timings;
    const auto captions = model.caption(pixels, gen, &timings);
    encode_ms += timings.encode_ms, decode_ms += timings.decode_ms;

    // A model whose generation config asks for several sequences gives that many per image.
    const std::size_t per_image = captions.size() / count;
    for (std::size_t i = 0; i < captions.size(); ++i) {
      const std::string& image = a.images[first + i / per_image];
      // Non-finite scores come from weights (or a dtype) that overflow: the tokens mean nothing.
      if (!std::isfinite(captions[i].score)) {
        fmt::print(stderr, "encore-caption: error: the caption score of {} is not finite ({}): the model's weights "
                   "or its dtype ({}) overflow\n", image, captions[i].score, a.dtype);
        return 1;
      }
      const std::string text = tokenizer.decode(captions[i].ids, true);
      if (a.json) {
        items.push_back(fmt::format(R"({{"image":{},"text":{},"ids":[{}],"score":{},"token_scores":[{}]}})",
                                    json_quote(image), json_quote(text), fmt::join(captions[i].ids, ","),
                                    captions[i].score, fmt::join(captions[i].token_scores, ",")));
      } else {  // one line per caption; several per image are numbered
        if (per_image > 1 && i % per_image == 0) fmt::print("{}:\n", image);
        fmt::print("{}{}\n", per_image > 1 ? fmt::format("  {}. ", i % per_image + 1) : std::string(), text);
      }
    }
    if (!a.json) std::fflush(stdout);
  }
  if (a.json)
    fmt::print(R"({{"captions":[{}],"timings_ms":{{"load":{:.3f},"preprocess":{:.3f},"encode":{:.3f},"decode":{:.3f}}}}})"
               "\n",
               fmt::join(items, ","), load_ms, preprocess_ms, encode_ms, decode_ms);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a = parse(argc, argv);
  int status = 0;
  try {
    status = run(a);
  } catch (const std::exception& e) {  // encore::Error and the standard library's (bad_alloc, filesystem)
    fmt::print(stderr, "encore-caption: error: {}\n", e.what());
    status = 1;
  }
  // A full disk or a closed pipe must not look like success.
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    fmt::print(stderr, "encore-caption: error: writing the output failed: {}\n", std::strerror(errno));
    return 1;
  }
  return status;
}
