// Runs every registered op case on every backend compiled in.
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>

#include "encore/core/build_info.h"
#include "graph/op_harness.h"

namespace encore::harness {

std::vector<OpCase>& registry() {
  static std::vector<OpCase> cases;
  return cases;
}

namespace {

// Every backend compiled in whose device is present here (CI has no GPU: CPU only there).
std::vector<Device> backends() {
  std::vector<Device> devices{Device::cpu()};
  if (!build_info().cuda_devices.empty()) devices.push_back(Device::cuda(0));
  return devices;
}

class OpHarness : public ::testing::TestWithParam<std::size_t> {};

TEST_P(OpHarness, MatchesDoubleReference) {
  const OpCase& c = registry()[GetParam()];
  for (const Device& device : backends()) {
    std::mt19937 rng(static_cast<unsigned>(GetParam() * 7919 + 17));
    Graph g;
    CaseInputs in;
    c.build(g, in, rng);
    Plan plan(g, {.device = device});
    std::map<std::string, Tensor> inputs;
    for (const auto& [name, t] : in.tensors) inputs.emplace(name, t.to(device));
    auto outs = plan.run(inputs, {.poison_arena = true});
    const std::vector<ref::RefTensor> expected = c.reference(in);
    ASSERT_EQ(expected.size(), g.outputs().size()) << c.name;
    const double tol = c.tolerance > 0 ? c.tolerance : ref::tolerance_for(c.dtype);
    for (std::size_t i = 0; i < expected.size(); ++i) {
      const auto& [name, id] = g.outputs()[i];
      const Tensor got = outs.at(name).to(Device::cpu());
      ASSERT_EQ(got.shape(), expected[i].shape) << c.name << " output " << name;
      const ref::RefTensor actual = ref::from_tensor(got);
      for (double v : actual.data) ASSERT_FALSE(std::isnan(v)) << c.name << ": NaN in output " << name;
      EXPECT_LE(ref::relative_error(actual, expected[i]), tol) << c.name << " on " << device.str() << ", output " << name;
    }
  }
}

std::string case_name(const ::testing::TestParamInfo<std::size_t>& info) {
  std::string n = registry()[info.param].name;
  for (char& ch : n)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n;
}

INSTANTIATE_TEST_SUITE_P(AllOps, OpHarness, ::testing::Range<std::size_t>(0, registry().size()), case_name);

}  // namespace
}  // namespace encore::harness
