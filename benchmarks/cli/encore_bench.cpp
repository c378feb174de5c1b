// encore-bench: end-to-end benchmarks through encore's public API.
//
//   encore-bench caption [--model DIR | --random-model base|tiny [--model-cache DIR]] [--device cpu|cuda[:N]]
//                        [--dtype f32|f16|bf16] [--batch N] [--beams N] [--new-tokens N] [--threads N]
//                        [--warmup N] [--iters N] [--breakdown] [--json FILE]
//
// caption times preprocessed pixels -> token ids (VitGpt2::caption) with exactly --new-tokens new
// tokens per caption, and compares each decode step with the memory floor measured in the same run.
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "caption_report.h"
#include "decode_breakdown.h"
#include "encore/encore.h"
#include "encore/models/vit_gpt2.h"
#include "random_model.h"
#include "system_probe.h"

namespace fs = std::filesystem;
using namespace encore;
using namespace encore::bench;

namespace {

constexpr const char* kUsage =
    "usage: encore-bench caption [--model DIR | --random-model base|tiny [--model-cache DIR]]\n"
    "                            [--device cpu|cuda[:N]] [--dtype f32|f16|bf16] [--batch N] [--beams N]\n"
    "                            [--new-tokens N] [--threads N] [--warmup N] [--iters N] [--breakdown]\n"
    "                            [--json FILE]\n"
    "  Times VitGpt2::caption on random preprocessed pixels [batch, 3, S, S], generating exactly\n"
    "  --new-tokens tokens (default 16) per caption; reports p50/p90 latency, encode/decode split,\n"
    "  tokens/s, peak RSS, and (CPU) each decode step against its memory-bandwidth floor.\n"
    "  Without --model, a random ViT-B/16 + GPT-2 small (--random-model base) is written once to\n"
    "  --model-cache (default " ENCORE_BENCH_MODEL_CACHE ") and reused.\n"
    "  --breakdown also times the encoder alone and every decode-step projection at its shape.\n";

// A bad command line: message on stderr, exit status 2.
[[noreturn]] void usage_error(const std::string& message) {
  fmt::print(stderr, "encore-bench: {}\n", message);
  std::exit(2);
}

int parse_int(const std::string& flag, const std::string& text, int lo, int hi) {
  char* end = nullptr;
  const long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || v < lo || v > hi)
    usage_error(fmt::format("{} expects an integer in [{}, {}], got '{}'", flag, lo, hi, text));
  return static_cast<int>(v);
}

struct CaptionArgs {
  CaptionSettings settings;
  std::string random_size;  // empty when --model is given
  fs::path model_cache = ENCORE_BENCH_MODEL_CACHE;
  bool model_cache_given = false;
  fs::path json_path;
};

DType parse_compute_dtype(const std::string& text) {
  if (text == "f32") return DType::F32;
  if (text == "f16") return DType::F16;
  if (text == "bf16") return DType::BF16;
  usage_error(fmt::format("--dtype expects f32, f16 or bf16, got '{}'", text));
}

void check_json_path(const fs::path& path) {
  // Fail now, not after minutes of measuring; a file the probe made is removed again (the report
  // writes it at the end, and a failed run must not leave an empty one behind).
  std::error_code ec;
  const bool existed = fs::exists(path, ec);
  bool ok = false;
  {
    std::ofstream probe(path, std::ios::app);
    ok = static_cast<bool>(probe);
  }
  if (!existed) fs::remove(path, ec);
  if (!ok) usage_error(fmt::format("--json: cannot write '{}'", path.string()));
}

CaptionArgs parse_caption(int argc, char** argv) {
  CaptionArgs a;
  CaptionSettings& s = a.settings;
  int threads = 0;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(fmt::format("{} needs a value", arg));
      if (argv[i + 1][0] == '\0') usage_error(fmt::format("{} needs a non-empty value", arg));
      return argv[++i];
    };
    if (arg == "-h" || arg == "--help") fmt::print("{}", kUsage), std::exit(0);
    else if (arg == "--model") s.model_dir = value();
    else if (arg == "--random-model") a.random_size = value();
    else if (arg == "--model-cache") a.model_cache = value(), a.model_cache_given = true;
    else if (arg == "--device") s.device = value();
    else if (arg == "--dtype") s.dtype = parse_compute_dtype(value());
    else if (arg == "--batch") s.batch = parse_int(arg, value(), 1, 4096);
    else if (arg == "--beams") s.beams = parse_int(arg, value(), 1, 64);
    else if (arg == "--new-tokens") s.new_tokens = parse_int(arg, value(), 1, 1 << 20);
    else if (arg == "--threads") threads = parse_int(arg, value(), 1, 4096);
    else if (arg == "--warmup") s.warmup = parse_int(arg, value(), 0, 10000);
    else if (arg == "--iters") s.iters = parse_int(arg, value(), 1, 1000000);
    else if (arg == "--breakdown") s.breakdown = true;
    else if (arg == "--json") a.json_path = value();
    else usage_error(fmt::format("caption: unknown option '{}' (try encore-bench caption --help)", arg));
  }
  if (!s.model_dir.empty() && !a.random_size.empty()) usage_error("--model and --random-model exclude each other");
  if (!s.model_dir.empty() && a.model_cache_given) usage_error("--model-cache only applies to --random-model");
  if (s.model_dir.empty() && a.random_size.empty()) a.random_size = "base";
  if (!a.random_size.empty() && a.random_size != "base" && a.random_size != "tiny")
    usage_error(fmt::format("--random-model expects base or tiny, got '{}'", a.random_size));
  if (!s.model_dir.empty() && !fs::is_directory(s.model_dir))
    usage_error(fmt::format("--model: '{}' is not a directory", s.model_dir));
  try {
    s.device = Device::parse(s.device).str();
  } catch (const Error& e) {
    usage_error(fmt::format("--device: {}", e.what()));
  }
  s.threads = threads;
  if (!a.json_path.empty()) check_json_path(a.json_path);
  return a;
}

// Written in a child process so that generating ~1 GB of random weights does not count towards
// the benchmark's peak RSS (ru_maxrss of this process).
void prepare_random_model(const fs::path& dir, const RandomModelSpec& spec) {
  if (fs::exists(dir / "config.json") && fs::exists(dir / "model.safetensors")) return;
  fmt::print(stderr, "encore-bench: writing random model '{}' to {} (once; reused afterwards)\n", spec.name,
             dir.string());
  std::fflush(stdout), std::fflush(stderr);
  const pid_t child = fork();
  if (child < 0) throw Error(ErrorCode::io, "fork failed while preparing the random model");
  if (child == 0) {
    try {
      fs::create_directories(dir.parent_path());
      ensure_random_model(dir, spec);
      std::fflush(stderr);
      _exit(0);
    } catch (const std::exception& e) {
      fmt::print(stderr, "encore-bench: error: {}\n", e.what());
      std::fflush(stderr);
      _exit(1);
    }
  }
  int status = 0;
  if (waitpid(child, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw Error(ErrorCode::io, fmt::format("could not write the random model to {}", dir.string()));
}

// Preprocessed pixels are in [-1, 1] after ViT normalisation (mean = std = 0.5); the values do not
// change the work done, only which tokens come out.
Tensor random_pixels(int batch, std::int64_t image_size) {
  Tensor t = Tensor::empty({batch, 3, image_size, image_size}, DType::F32);
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  float* p = t.data_ptr<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return t;
}

std::string today() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[16] = {};
  std::strftime(text, sizeof(text), "%Y-%m-%d", &utc);
  return text;
}

// Exactly `new_tokens` tokens: end-of-sequence is masked until max_length (min_length == max_length),
// so random weights can neither stop early nor run on.
GenerationOptions fixed_length_options(const VitGpt2Config& c, const CaptionSettings& s) {
  GenerationOptions g;
  g.max_length = 1 + s.new_tokens;
  g.min_length = 1 + s.new_tokens;
  g.num_beams = s.beams;
  g.length_penalty = c.length_penalty;
  g.early_stopping = c.early_stopping;
  g.start_token_id = c.decoder_start_token_id;
  g.eos_token_id = c.eos_token_id;
  g.pad_token_id = c.pad_token_id;
  return g;
}

// Times between consecutive tokens, stamped by the token callback (it fires for each item; the
// first callback of a new length marks the step).
struct TokenClock {
  std::vector<std::chrono::steady_clock::time_point> stamps;
  std::size_t last_length = 0;

  bool on_token(const TokenEvent& e) {
    if (e.ids.size() != last_length) stamps.push_back(std::chrono::steady_clock::now()), last_length = e.ids.size();
    return true;
  }
  // Appends the intervals; returns their sum (the decode time of every step but the first).
  double append_intervals(std::vector<double>& out) const {
    double sum = 0;
    for (std::size_t i = 1; i < stamps.size(); ++i) {
      out.push_back(std::chrono::duration<double, std::milli>(stamps[i] - stamps[i - 1]).count());
      sum += out.back();
    }
    return sum;
  }
};

void check_lengths(const std::vector<Caption>& captions, const CaptionSettings& s) {
  for (std::size_t i = 0; i < captions.size(); ++i)
    if (static_cast<int>(captions[i].ids.size()) != s.new_tokens + 1)
      throw Error(ErrorCode::backend, fmt::format("caption {} has {} new tokens, expected exactly {}", i,
                                                  captions[i].ids.size() - 1, s.new_tokens));
}

void time_captions(const VitGpt2& model, const Tensor& pixels, CaptionResult& r) {
  const CaptionSettings& s = r.settings;
  GenerationOptions gen = fixed_length_options(r.config, s);
  std::uint64_t faults_before = minor_page_faults();
  for (int i = 0; i < s.warmup + s.iters; ++i) {
    if (i == s.warmup) {
      faults_before = minor_page_faults();
      reset_peak_memory(Device::parse(s.device));
    }
    TokenClock clock;
    gen.on_token = [&clock](const TokenEvent& e) { return clock.on_token(e); };
    CaptionTimings timings;
    const auto start = std::chrono::steady_clock::now();
    const auto captions = model.caption(pixels, gen, &timings);
    const double total = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    check_lengths(captions, s);
    if (i < s.warmup) continue;
    r.total_ms.push_back(total);
    r.encode_ms.push_back(timings.encode_ms);
    r.decode_ms.push_back(timings.decode_ms);
    r.first_step_ms.push_back(timings.decode_ms - clock.append_intervals(r.step_interval_ms));
  }
  r.page_faults_per_caption = static_cast<double>(minor_page_faults() - faults_before) / s.iters;
  const Allocator::Usage usage = memory_usage(Device::parse(s.device));
  r.device_peak_bytes = usage.peak_allocated_bytes;
  r.device_reserved_bytes = usage.reserved_bytes;
}

int run_caption(CaptionArgs a) {
  CaptionSettings& s = a.settings;
  if (!a.random_size.empty()) {
    const RandomModelSpec spec = random_model_spec(a.random_size);
    const fs::path dir = a.model_cache / random_model_dir_name(spec);
    prepare_random_model(dir, spec);
    s.model_dir = dir.string();
    s.model_label = "random-" + spec.name;
  } else {
    s.model_label = fs::path(s.model_dir).lexically_normal().filename().string();
    if (s.model_label.empty()) s.model_label = fs::path(s.model_dir).lexically_normal().parent_path().filename().string();
  }
  if (s.threads > 0) set_num_threads(s.threads);  // also the OpenMP default oneDNN uses
  s.threads = num_threads();
  VitGpt2 model = VitGpt2::load(s.model_dir, {.device = s.device, .dtype = s.dtype, .num_threads = s.threads});
  CaptionResult r;
  r.settings = s;
  r.config = model.config();
  // N positions take N + 1 ids: the last token is never fed back (VitGpt2::caption's rule).
  if (s.new_tokens > r.config.max_positions)
    usage_error(fmt::format("--new-tokens {} does not fit the model's {} positions", s.new_tokens,
                            r.config.max_positions));
  r.parameters = parameter_count(r.config);
  r.weight_bytes = static_cast<double>(r.parameters) * static_cast<double>(dtype_size(s.dtype));
  r.cpu = cpu_model_name(), r.host = host_name(), r.date = today();

  const Tensor pixels = random_pixels(s.batch, r.config.image_size);
  time_captions(model, pixels, r);
  r.peak_rss_bytes = peak_rss_bytes();  // before the probes below allocate their own buffers
  if (s.breakdown)
    r.breakdown = measure_decode_breakdown(model, pixels, s.dtype, s.batch, s.beams, fixed_length_options(r.config, s),
                                           s.iters);
  if (model.device().is_cpu()) {
    const double bandwidth = measure_read_bandwidth(s.threads, std::size_t{1} << 30, 3);
    const double gemm_flops = measure_gemm_flops(model.device(), s.dtype);
    const double step_ms = percentile(r.decode_ms, 0.5) / s.new_tokens;
    r.floor = decode_floor(r.config, s.dtype, s.batch, s.beams, s.new_tokens, bandwidth, gemm_flops, step_ms);
  }
  print_caption_report(r);
  if (!a.json_path.empty()) write_caption_json(r, a.json_path);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "-h" || std::string(argv[1]) == "--help") {
    fmt::print(argc < 2 ? stderr : stdout, "{}", kUsage);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  if (command != "caption") usage_error(fmt::format("unknown command '{}' (expected caption)", command));
  int status = 0;
  try {
    status = run_caption(parse_caption(argc, argv));
  } catch (const Error& e) {
    fmt::print(stderr, "encore-bench: error: {}\n", e.what());
    // An option the library rejects (a dtype the device lacks, a bad device) is a usage error too.
    const bool usage = e.code() == ErrorCode::invalid_argument || e.code() == ErrorCode::unsupported;
    status = usage ? 2 : 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "encore-bench: error: {}\n", e.what());
    status = 1;
  }
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {  // a full disk must not look like success
    fmt::print(stderr, "encore-bench: error: writing the report failed: {}\n", std::strerror(errno));
    return 1;
  }
  return status;
}
