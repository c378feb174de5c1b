// The differential op harness (after ggml's test-backend-ops): one table of op cases, each building
// a small graph on random, odd-sized, often non-contiguous inputs, run on every backend compiled in
// and compared with a plain double-precision reference.
#pragma once

#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "encore/graph/plan.h"
#include "reference/ref_tensor.h"

namespace encore::harness {

/// What a case's build function fills in: graph inputs with the random tensors bound to them.
struct CaseInputs {
  std::map<std::string, Tensor> tensors;   ///< by graph input name (what Plan::run gets)
  std::map<std::string, Tensor> logical;   ///< the logical (possibly strided-view) values, by name
};

/// Declares graph input `name` holding random values of logical `shape`. With `strided`, the input
/// is laid out with dims 0 and 1 swapped and the last dim padded, and the graph takes a view of it,
/// so kernels receive non-contiguous operands.
inline Value random_input(Graph& g, CaseInputs& in, std::mt19937& rng, const std::string& name, const Shape& shape,
                          DType dtype, bool strided, double lo = -1.0, double hi = 1.0) {
  if (!strided || shape.rank() == 0) {
    Tensor t = ref::random_tensor(shape, dtype, rng, lo, hi);
    in.tensors[name] = t;
    in.logical[name] = t;
    return g.input(name, dtype, shape);
  }
  const int r = shape.rank();
  Shape memory = shape;
  if (r >= 2) std::swap(memory[0], memory[1]);
  const std::int64_t last = memory[r - 1];
  memory[r - 1] += 3;
  Tensor base = ref::random_tensor(memory, dtype, rng, lo, hi);
  in.tensors[name] = base;
  Tensor view = base.slice(r - 1, 1, 1 + last);
  Value v = g.slice(g.input(name, dtype, memory), r - 1, 1, 1 + last);
  if (r >= 2) {
    view = view.transpose(0, 1);
    v = g.transpose(v, 0, 1);
  }
  in.logical[name] = view;
  return v;
}

/// A constant (weight) of random values, also recorded in `in.logical` for the reference.
inline Value constant(Graph& g, CaseInputs& in, std::mt19937& rng, const std::string& name, const Shape& shape,
                      DType dtype, double lo = -1.0, double hi = 1.0) {
  Tensor t = ref::random_tensor(shape, dtype, rng, lo, hi);
  in.logical[name] = t;
  return g.constant(t, name);
}

/// The logical value of an input or constant, in doubles.
inline ref::RefTensor get(const CaseInputs& in, const std::string& name) { return ref::from_tensor(in.logical.at(name)); }

struct OpCase {
  std::string name;
  DType dtype = DType::F32;
  /// Builds the graph (outputs named "y", "y1", ...) and its inputs.
  std::function<void(Graph&, CaseInputs&, std::mt19937&)> build;
  /// The double-precision result for each output, in the order the outputs were declared.
  std::function<std::vector<ref::RefTensor>(const CaseInputs&)> reference;
  double tolerance = 0;  ///< 0 = ref::tolerance_for(dtype)
};

/// All registered cases (test_op_harness.cpp and friends add to it at static-init time).
std::vector<OpCase>& registry();

struct Register {
  explicit Register(std::vector<OpCase> cases) {
    for (auto& c : cases) registry().push_back(std::move(c));
  }
};

}  // namespace encore::harness
