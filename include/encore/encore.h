// encore — umbrella header: includes the whole public API.
#pragma once

#include "encore/core/allocator.h"
#include "encore/core/build_info.h"
#include "encore/core/device.h"
#include "encore/core/dtype.h"
#include "encore/core/error.h"
#include "encore/core/logging.h"
#include "encore/core/shape.h"
#include "encore/core/tensor.h"
#include "encore/core/threads.h"
#include "encore/graph/graph.h"
#include "encore/graph/op_attrs.h"
#include "encore/graph/plan.h"
#include "encore/io/model_files.h"
#include "encore/io/safetensors.h"
#include "encore/version.h"
