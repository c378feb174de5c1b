// encore's CPU convolutions on the model shapes that matter, against raw oneDNN.
//
//   BM_Conv/<case>/<path>       encore::cpu::conv2d / conv1d; path 0 = the default strategy,
//                               1 = patch embedding through oneDNN's convolution (no im2col +
//                               linear), 2 = plain NCHW oneDNN convolution, 3 = oneDNN's preferred
//                               activation layout with relayouts in and out (Tuning)
//   BM_OneDnnConv/<case>/<any>  raw oneDNN convolution_forward, weights packed once; any = 0: plain
//                               NCHW src/dst (what encore's callers hold), 1: src/dst in the layout
//                               oneDNN picks (reorders to/from NCHW not counted: a lower bound)
// Cases: 0 ViT patch embedding 1x3x224x224 -> 768, 16x16 stride 16
//        1 CASS-NAT subsampling conv 1: 1x1x1000x80 -> 256, 3x3 stride 2
//        2 CASS-NAT subsampling conv 2: 1x256x499x39 -> 256, 3x3 stride 2
//        3 Conformer depthwise conv1d: 1x256x1000, k 31, pad 15, groups 256 (as 2-D, height 1)
//        4 Conformer pointwise conv1d: 1x256x1000 -> 512, k 1
//        5 case 0 in bf16 (encore only)
// Threads: $ENCORE_BENCH_THREADS or 2.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstdlib>
#include <oneapi/dnnl/dnnl.hpp>
#include <random>

#include "backends/cpu/kernels.h"
#include "backends/cpu/onednn_context.h"

using namespace encore;

namespace {

struct Case {
  std::int64_t N, C, H, W, O, kh, kw;
  int stride, pad, groups;
  bool one_d;
};

const Case kCases[] = {
    {1, 3, 224, 224, 768, 16, 16, 16, 0, 1, false}, {1, 1, 1000, 80, 256, 3, 3, 2, 0, 1, false},
    {1, 256, 499, 39, 256, 3, 3, 2, 0, 1, false},   {1, 256, 1, 1000, 256, 1, 31, 1, 15, 256, true},
    {1, 256, 1, 1000, 512, 1, 1, 1, 0, 1, true},    {1, 3, 224, 224, 768, 16, 16, 16, 0, 1, false},
};

int bench_threads() {
  const char* env = std::getenv("ENCORE_BENCH_THREADS");
  return env && std::atoi(env) > 0 ? std::atoi(env) : 2;
}

Tensor random(const Shape& shape, DType dtype, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  Tensor t = Tensor::empty(shape, DType::F32);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data_ptr<float>()[i] = dist(rng);
  return dtype == DType::F32 ? t : t.to(dtype);
}

// Uniform values in [-1, 1) over the whole buffer, whatever its layout.
void fill(const dnnl::memory& m) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  auto* p = static_cast<float*>(m.get_data_handle());
  for (std::size_t i = 0; i < m.get_desc().get_size() / sizeof(float); ++i) p[i] = dist(rng);
}

std::int64_t out_extent(std::int64_t in, std::int64_t k, int stride, int pad) {
  return (in + 2 * pad - k) / stride + 1;
}

void set_flops(benchmark::State& state, const Case& c) {
  const std::int64_t Ho = c.one_d ? 1 : out_extent(c.H, c.kh, c.stride, c.pad);
  const std::int64_t Wo = out_extent(c.W, c.kw, c.stride, c.pad);
  const double flops = 2.0 * static_cast<double>(c.N * c.O * Ho * Wo * (c.C / c.groups) * c.kh * c.kw);
  state.counters["GFLOPS"] =
      benchmark::Counter(flops * 1e-9 * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

void BM_Conv(benchmark::State& state) {
  const int index = static_cast<int>(state.range(0));
  const Case& c = kCases[index];
  const DType dt = index == 5 ? DType::BF16 : DType::F32;
  using Layout = cpu::onednn::Tuning::ConvLayout;
  const std::int64_t path = state.range(1);
  cpu::onednn::tuning().conv_patch_as_linear = path == 0;
  cpu::onednn::tuning().conv_layout = path == 2 ? Layout::plain : path == 3 ? Layout::preferred : Layout::automatic;
  const cpu::CpuContext ctx{bench_threads()};
  Tensor x, w, y;
  const Tensor b = random({c.O}, DType::F32, 3);
  if (c.one_d) {
    const Conv1dAttrs a{.stride = c.stride, .padding = c.pad, .groups = c.groups};
    x = random({c.N, c.C, c.W}, dt, 1);
    w = random({c.O, c.C / c.groups, c.kw}, dt, 2);
    y = Tensor::empty({c.N, c.O, out_extent(c.W, c.kw, c.stride, c.pad)}, dt);
    cpu::conv1d(x, w, b, a, y, ctx);
    for (auto _ : state) cpu::conv1d(x, w, b, a, y, ctx);
  } else {
    const Conv2dAttrs a{.stride = {c.stride, c.stride}, .padding = {c.pad, c.pad}, .groups = c.groups};
    x = random({c.N, c.C, c.H, c.W}, dt, 1);
    w = random({c.O, c.C / c.groups, c.kh, c.kw}, dt, 2);
    y = Tensor::empty({c.N, c.O, out_extent(c.H, c.kh, c.stride, c.pad), out_extent(c.W, c.kw, c.stride, c.pad)}, dt);
    cpu::conv2d(x, w, b, a, y, ctx);
    for (auto _ : state) cpu::conv2d(x, w, b, a, y, ctx);
  }
  cpu::onednn::tuning() = cpu::onednn::Tuning{};
  set_flops(state, c);
}

void BM_OneDnnConv(benchmark::State& state) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  const Case& c = kCases[state.range(0)];
  const bool any = state.range(1) != 0;
  const int saved = omp_get_max_threads();
  omp_set_num_threads(bench_threads());
  {
    dnnl::engine eng(dnnl::engine::kind::cpu, 0);
    dnnl::stream s(eng);
    const std::int64_t Ho = c.one_d ? 1 : out_extent(c.H, c.kh, c.stride, c.pad);
    const std::int64_t Wo = out_extent(c.W, c.kw, c.stride, c.pad);
    const dnnl::memory::dims xd{c.N, c.C, c.H, c.W}, yd{c.N, c.O, Ho, Wo};
    const dnnl::memory::dims wd = c.groups > 1
                                      ? dnnl::memory::dims{c.groups, c.O / c.groups, c.C / c.groups, c.kh, c.kw}
                                      : dnnl::memory::dims{c.O, c.C, c.kh, c.kw};
    const dnnl::memory::desc src(xd, dt::f32, any ? tag::any : tag::nchw), dst(yd, dt::f32, any ? tag::any : tag::nchw);
    const dnnl::memory::desc w_any(wd, dt::f32, tag::any), bias({c.O}, dt::f32, tag::a);
    const dnnl::memory::dims strides{c.one_d ? 1 : c.stride, c.stride}, pads{c.one_d ? 0 : c.pad, c.pad};
    dnnl::convolution_forward::primitive_desc pd(
        dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src,
                                        w_any, bias, dst, strides, {0, 0}, pads, pads),
        eng);
    dnnl::memory xm(pd.src_desc(), eng), wm(pd.weights_desc(), eng), bm(bias, eng), ym(pd.dst_desc(), eng);
    for (const dnnl::memory* m : {&xm, &wm, &bm}) fill(*m);  // garbage could hold denormals
    dnnl::convolution_forward prim(pd);
    const std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_BIAS, bm}, {DNNL_ARG_DST, ym}};
    prim.execute(s, args);
    s.wait();
    for (auto _ : state) {
      prim.execute(s, args);
      s.wait();
    }
    state.SetLabel(pd.impl_info_str());
  }
  omp_set_num_threads(saved);
  set_flops(state, c);
}

}  // namespace

BENCHMARK(BM_Conv)
    ->Args({0, 0})
    ->Args({0, 2})
    ->Args({0, 3})
    ->ArgsProduct({{1, 2, 3, 4}, {0, 2, 3}})
    ->Args({5, 0})
    ->Args({5, 2})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_OneDnnConv)->ArgsProduct({{0, 1, 2, 3, 4}, {0, 1}})->UseRealTime()->Unit(benchmark::kMicrosecond);
