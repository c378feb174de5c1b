#include "caption_report.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "encore/core/error.h"
#include "system_probe.h"

namespace encore::bench {
namespace {

using json = nlohmann::json;

constexpr double kMiB = 1024.0 * 1024.0;

double p50(const std::vector<double>& v) { return percentile(v, 0.5); }
double p90(const std::vector<double>& v) { return percentile(v, 0.9); }

// Per decoder block: LayerNorms, self-attention QKV + out, cross-attention Q + out, MLP. The cross
// K/V projection is separate because it runs once per image, not once per step.
std::uint64_t decoder_block_step_parameters(const VitGpt2Config& c) {
  const std::uint64_t d = c.dec_hidden, ff = c.dec_intermediate;
  const std::uint64_t layer_norms = 3 * 2 * d;
  const std::uint64_t self_attention = (d * 3 * d + 3 * d) + (d * d + d);
  const std::uint64_t cross_q_out = 2 * (d * d + d);
  const std::uint64_t mlp = (d * ff + ff) + (ff * d + d);
  return layer_norms + self_attention + cross_q_out + mlp;
}

std::uint64_t cross_kv_projection_parameters(const VitGpt2Config& c) {
  const std::uint64_t d = c.dec_hidden;
  return d * 2 * d + 2 * d;
}

std::uint64_t encoder_parameters(const VitGpt2Config& c) {
  const std::uint64_t d = c.enc_hidden, ff = c.enc_intermediate, p = c.patch_size;
  const std::uint64_t tokens = 1 + static_cast<std::uint64_t>(c.num_patches());
  const std::uint64_t embeddings = d * c.num_channels * p * p + d + d + tokens * d;
  const std::uint64_t layer = 4 * (d * d + d) + 2 * 2 * d + (ff * d + ff) + (d * ff + d);
  return embeddings + c.enc_layers * layer + 2 * d;
}

}  // namespace

std::uint64_t parameter_count(const VitGpt2Config& c) {
  const std::uint64_t d = c.dec_hidden;
  const std::uint64_t decoder = (c.vocab_size + c.max_positions) * d +
                                c.dec_layers * (decoder_block_step_parameters(c) + cross_kv_projection_parameters(c)) +
                                2 * d;
  return encoder_parameters(c) + decoder;
}

DecodeFloor decode_floor(const VitGpt2Config& c, DType dtype, int batch, int beams, int new_tokens, double bandwidth,
                         double gemm_flops_per_s, double step_ms) {
  const double elem = static_cast<double>(dtype_size(dtype));
  const double d = static_cast<double>(c.dec_hidden), layers = static_cast<double>(c.dec_layers);
  const double encoder_tokens = 1.0 + static_cast<double>(c.num_patches());
  const double rows = static_cast<double>(batch) * beams;
  DecodeFloor f;
  const double step_params = layers * static_cast<double>(decoder_block_step_parameters(c)) + 2 * d +
                             static_cast<double>(c.vocab_size) * d;
  f.weight_bytes = step_params * elem;
  // Step s (1-based) attends over s cached positions: the mean over N steps is (N + 1) / 2.
  f.self_kv_bytes = rows * layers * 2 * d * (new_tokens + 1) / 2.0 * elem;
  f.cross_kv_bytes = static_cast<double>(batch) * layers * encoder_tokens * 2 * d * elem;
  f.cross_kv_bytes_as_run = rows * layers * encoder_tokens * 2 * d * elem;
  f.bytes = f.weight_bytes + f.self_kv_bytes + f.cross_kv_bytes;
  f.bandwidth = bandwidth;
  f.floor_ms = f.bytes / bandwidth * 1e3;
  const double mean_length = (new_tokens + 1) / 2.0;
  f.flops = 2 * rows * step_params + 2 * 2 * rows * layers * d * (mean_length + encoder_tokens);  // QK^T and PV
  f.gemm_flops_per_s = gemm_flops_per_s;
  f.compute_floor_ms = f.flops / gemm_flops_per_s * 1e3;
  f.step_ms = step_ms;
  f.ratio = step_ms / f.floor_ms;
  f.ratio_to_max_floor = step_ms / std::max(f.floor_ms, f.compute_floor_ms);
  return f;
}

double tokens_per_second(const CaptionResult& r) {
  const double seconds = p50(r.total_ms) / 1e3;
  return static_cast<double>(r.settings.batch) * r.settings.new_tokens / seconds;
}

namespace {

void print_breakdown(const CaptionResult& r) {
  const DecodeBreakdown& b = *r.breakdown;
  const double encode = p50(r.encode_ms), step = p50(r.decode_ms) / r.settings.new_tokens;
  fmt::print("\nbreakdown (medians)\n");
  fmt::print("  encoder only (VitGpt2::encode)            {:10.2f} ms\n", b.encoder_only_ms);
  fmt::print("  caption setup (cross K/V + step plan)     {:10.2f} ms  (encode {:.2f} - encoder only)\n",
             encode - b.encoder_only_ms, encode);
  fmt::print("  decode step                               {:10.2f} ms\n", step);
  fmt::print("  {:<16} {:>4} x {:<22} {:>8} {:>9} {:>7} {:>8}\n", "part", "n", "shape", "MiB", "ms/step", "GB/s",
             "of step");
  double parts_ms = 0;
  for (const StepPart& p : b.parts) {
    parts_ms += p.ms_per_step;
    const std::string rate = p.bytes > 0 ? fmt::format("{:.1f}", p.bytes / (p.ms_per_step / 1e3) / 1e9) : "";
    fmt::print("  {:<16} {:>4} x {:<22} {:>8.1f} {:>9.2f} {:>7} {:>7.1f}%\n", p.name, p.per_step, p.shape,
               p.bytes / kMiB, p.ms_per_step, rate, 100.0 * p.ms_per_step / step);
  }
  fmt::print("  {:<54} {:>9.2f} {:>7} {:>7.1f}%\n", "all parts above", parts_ms, "", 100.0 * parts_ms / step);
  fmt::print("  {:<54} {:>9.2f} {:>7} {:>7.1f}%\n", "rest (self-attention, norms, residuals, logits copy, ...)",
             step - parts_ms, "", 100.0 * (step - parts_ms) / step);
}

void print_floor(const DecodeFloor& f, int rows, int batch) {
  fmt::print("\ndecode memory floor (per step, read bandwidth {:.1f} GB/s, best of 3 over 1 GiB)\n", f.bandwidth / 1e9);
  fmt::print("  decoder weights read per step             {:10.1f} MiB\n", f.weight_bytes / kMiB);
  fmt::print("  self-attention K/V (mean length)          {:10.1f} MiB\n", f.self_kv_bytes / kMiB);
  fmt::print("  cross-attention K/V (per image)           {:10.1f} MiB", f.cross_kv_bytes / kMiB);
  if (rows != batch) fmt::print("  (a per-row copy reads {:.1f} MiB)", f.cross_kv_bytes_as_run / kMiB);
  fmt::print("\n  memory floor = bytes / bandwidth          {:10.2f} ms\n", f.floor_ms);
  fmt::print("  measured step / memory floor              {:10.2f} x   (target <= 1.25)\n", f.ratio);
  fmt::print("  compute floor = {:.2f} GFLOP / {:.0f} GFLOP/s {:8.2f} ms   (large-GEMM throughput, same threads)\n",
             f.flops / 1e9, f.gemm_flops_per_s / 1e9, f.compute_floor_ms);
  fmt::print("  measured step / max(memory, compute)      {:10.2f} x\n", f.ratio_to_max_floor);
}

}  // namespace

void print_caption_report(const CaptionResult& r) {
  const CaptionSettings& s = r.settings;
  const VitGpt2Config& c = r.config;
  fmt::print("encore-bench caption: {} (ViT {}x{} @{}px/{}, GPT-2 {}x{}, vocab {})\n", s.model_label, c.enc_layers,
             c.enc_hidden, c.image_size, c.patch_size, c.dec_layers, c.dec_hidden, c.vocab_size);
  fmt::print("  {} {}, {} threads, batch {}, beams {}, {} new tokens, warmup {}, iters {}\n", s.device,
             dtype_name(s.dtype), s.threads, s.batch, s.beams, s.new_tokens, s.warmup, s.iters);
  fmt::print("  {} on {}, {}\n\n", r.cpu, r.host, r.date);
  fmt::print("  {:<42} {:>10} {:>10}\n", "", "p50", "p90");
  auto row = [](const char* name, double a, double b) { fmt::print("  {:<42} {:>10.2f} {:>10.2f}\n", name, a, b); };
  row("total: pixels -> token ids (ms)", p50(r.total_ms), p90(r.total_ms));
  row("encode: encoder + cross K/V + plan (ms)", p50(r.encode_ms), p90(r.encode_ms));
  row("decode: all steps + search (ms)", p50(r.decode_ms), p90(r.decode_ms));
  row("decode per step = decode / new tokens (ms)", p50(r.decode_ms) / s.new_tokens, p90(r.decode_ms) / s.new_tokens);
  row("first decode step (ms)", p50(r.first_step_ms), p90(r.first_step_ms));
  row("time between later tokens (ms)", p50(r.step_interval_ms), p90(r.step_interval_ms));
  fmt::print("  {:<42} {:>10.1f}\n", "tokens/s (batch x new tokens / p50 total)", tokens_per_second(r));
  fmt::print("  {:<42} {:>10.1f} MiB\n", "peak RSS of the process (incl. weights)", r.peak_rss_bytes / kMiB);
  fmt::print("  {:<42} {:>10.0f}   ({:.1f} MiB of fresh pages)\n", "minor page faults per caption",
             r.page_faults_per_caption, r.page_faults_per_caption * 4096 / kMiB);
  fmt::print("  {:<42} {:>10.1f} MiB ({:.1f} M parameters)\n", fmt::format("model weights ({})", dtype_name(s.dtype)),
             r.weight_bytes / kMiB, r.parameters / 1e6);
  if (s.device != "cpu")
    fmt::print("  {:<42} {:>10.1f} MiB ({:.1f} MiB reserved)\n", "device memory peak (encore, incl. weights)",
               r.device_peak_bytes / kMiB, r.device_reserved_bytes / kMiB);
  else
    fmt::print("  {:<42} {:>10.1f} MiB\n", "encore's host tensors + arenas, peak", r.device_peak_bytes / kMiB);
  if (r.floor) print_floor(*r.floor, s.batch * s.beams, s.batch);
  if (r.breakdown) print_breakdown(r);
}

void write_caption_json(const CaptionResult& r, const std::filesystem::path& path) {
  const CaptionSettings& s = r.settings;
  json j = {{"engine", "encore"},
            {"task", "caption"},
            {"model", s.model_label},
            {"model_dir", s.model_dir},
            {"device", s.device},
            {"dtype", dtype_name(s.dtype)},
            {"threads", s.threads},
            {"batch", s.batch},
            {"beams", s.beams},
            {"new_tokens", s.new_tokens},
            {"warmup", s.warmup},
            {"iters", s.iters},
            {"total_ms", r.total_ms},
            {"encode_ms", r.encode_ms},
            {"decode_ms", r.decode_ms},
            {"p50_ms", p50(r.total_ms)},
            {"p90_ms", p90(r.total_ms)},
            {"encode_p50_ms", p50(r.encode_ms)},
            {"decode_p50_ms", p50(r.decode_ms)},
            {"decode_step_ms", p50(r.decode_ms) / s.new_tokens},
            {"token_interval_p50_ms", p50(r.step_interval_ms)},
            {"first_step_p50_ms", p50(r.first_step_ms)},
            {"tokens_per_s", tokens_per_second(r)},
            // Like the Hugging Face peer: device memory on a GPU (its torch.cuda.max_memory_allocated;
            // ours counts allocator blocks, sizes rounded up), the process's RSS on the CPU.
            {"peak_mem_bytes", s.device == "cpu" ? r.peak_rss_bytes : r.device_peak_bytes},
            {"peak_mem_kind", s.device == "cpu" ? "cpu_rss_incl_weights" : "encore_device_peak_allocated"},
            {"cpu_peak_rss_bytes", r.peak_rss_bytes},
            {"device_peak_bytes", r.device_peak_bytes},
            {"device_reserved_bytes", r.device_reserved_bytes},
            {"page_faults_per_caption", r.page_faults_per_caption},
            {"parameters", r.parameters},
            {"weight_bytes", r.weight_bytes},
            {"cpu", r.cpu},
            {"host", r.host},
            {"date", r.date}};
  if (r.floor) {
    const DecodeFloor& f = *r.floor;
    j["floor"] = {{"weight_bytes", f.weight_bytes},   {"self_kv_bytes", f.self_kv_bytes},
                  {"cross_kv_bytes", f.cross_kv_bytes}, {"cross_kv_bytes_as_run", f.cross_kv_bytes_as_run},
                  {"bytes", f.bytes},                 {"read_bandwidth_bytes_per_s", f.bandwidth},
                  {"floor_ms", f.floor_ms},           {"step_ms", f.step_ms},
                  {"ratio", f.ratio},                 {"flops", f.flops},
                  {"gemm_flops_per_s", f.gemm_flops_per_s}, {"compute_floor_ms", f.compute_floor_ms},
                  {"ratio_to_max_floor", f.ratio_to_max_floor}};
  }
  if (r.breakdown) {
    json parts = json::array();
    for (const StepPart& p : r.breakdown->parts)
      parts.push_back({{"name", p.name}, {"shape", p.shape}, {"per_step", p.per_step}, {"bytes", p.bytes},
                       {"ms_per_step", p.ms_per_step}});
    j["breakdown"] = {{"encoder_only_ms", r.breakdown->encoder_only_ms}, {"step_parts", parts}};
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";  // non-UTF-8 paths
  out.close();
  if (!out) throw Error(ErrorCode::io, fmt::format("--json: cannot write {}", path.string()));
}

}  // namespace encore::bench
