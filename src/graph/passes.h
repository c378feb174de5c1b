// Graph passes: dead-node removal and fusions. Each returns a new graph; the input is unchanged.
#pragma once

#include "encore/graph/graph.h"

namespace encore::detail {

/// Removes nodes whose results reach no output; with `fuse`, folds an activation into the linear
/// that feeds it (when the linear result has no other use) and a residual add followed by a
/// layer norm into one add_layer_norm node (both results kept).
Graph optimise_graph(const Graph& graph, bool fuse);

}  // namespace encore::detail
