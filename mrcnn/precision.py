"""Compute precision of the model: float32, or bfloat16 where the CPU multiplies it natively.

With config.COMPUTE_DTYPE = "bfloat16" the convolutions and dense layers compute in bfloat16
(Keras' "mixed_bfloat16" policy: weights, their gradients and the optimizer stay float32, so
checkpoints are the same float32 files). Boxes, proposals, ROIAlign, targets, detections,
the final prediction layers and the losses stay float32. "auto" picks bfloat16 on CPUs with
native bfloat16 dot products (AVX512_BF16 or AMX), where oneDNN runs those layers about twice
as fast, and float32 everywhere else.
"""
import contextlib
import functools

import keras

FLOAT32_LAYER = {"dtype": "float32"}   # keyword for layers that must stay float32


@functools.lru_cache(maxsize=1)
def cpu_has_native_bfloat16(cpuinfo="/proc/cpuinfo"):
    """True if the CPU flags list avx512_bf16 or amx_bf16 (Linux); False if unknown."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def compute_dtype(config):
    """"float32" or "bfloat16" for config.COMPUTE_DTYPE ("auto", "float32" or "bfloat16")."""
    value = getattr(config, "COMPUTE_DTYPE", "float32") or "float32"
    if value == "auto":
        return "bfloat16" if cpu_has_native_bfloat16() else "float32"
    if value not in ("float32", "bfloat16"):
        raise ValueError(f"COMPUTE_DTYPE must be 'auto', 'float32' or 'bfloat16', not {value!r}")
    return value


@contextlib.contextmanager
def layer_policy(dtype):
    """Within the block, new Keras layers compute in `dtype` (weights float32)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16" if dtype == "bfloat16" else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


class Float32Layer(keras.layers.Layer):
    """Base of the layers that work on boxes, scores and losses: float32 under any policy
    (floating inputs are cast to float32 on the way in)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
