# Writes reference_numpy.safetensors with the reference implementation (pip install safetensors numpy).
# Run from this directory: python3 make_reference.py
import numpy as np
from safetensors.numpy import save
tensors = {
    "z.u8": np.array([[1, 2, 3]], dtype=np.uint8),
    "a.f32": np.arange(6, dtype=np.float32).reshape(2, 3) * 0.5 - 1,
    "m.f16": np.array([1.0, -2.5, 65504.0], dtype=np.float16),
    "b.i64": np.array([-(2**40), 7], dtype=np.int64),
    "c.i32": np.array([[-1], [2**31 - 1]], dtype=np.int32),
    "d.i8": np.array([-128, 127, 0], dtype=np.int8),
    "e.bool": np.array([True, False, True], dtype=np.bool_),
    "f.empty": np.zeros((0, 4), dtype=np.float32),
    "g.scalar": np.array(3.5, dtype=np.float32),
}
open("reference_numpy.safetensors", "wb").write(save(tensors, metadata={"format": "np", "made_by": "safetensors 0.8.0 (python, numpy)"}))
