"""One allocation per pipeline instance for its device buffers (KV cache, inputs, activations).

Measured on the H100 (bench/instance_order.py, reports/h100-instances/): pipeline instances made one
after another from CuPy's pool differ by about 0.5% in GPU time per token, by where each small buffer
landed relative to the others (the second instance of three was consistently the fast one); with every
buffer carved from one allocation at the same offsets, instances differ by 0.16%. A comparison of
two configs then sees less of the instance it happened to get.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ALIGN = 256  # bytes: every buffer starts on a 256-byte boundary, as cudaMalloc's do


class Arena:
    """A bump allocator over one zeroed buffer of ``xp`` (NumPy or CuPy); past its capacity it
    falls back to plain allocations (never an error). ``zeroed=False``: the buffer is left as allocated, for
    an owner that zeroes it itself before any read (own_reset: by a kernel of the token's module, not a memset)."""

    def __init__(self, xp: Any, capacity: int, zeroed: bool = True) -> None:
        self.xp = xp
        self.buf = (xp.zeros if zeroed else xp.empty)(int(capacity), dtype=np.uint8)
        self.used = 0  # bytes carved from the start
        self.top = self.buf.size  # where the buffers carved from the end begin
        self.fallbacks = 0

    def zeros(self, shape: Any, dtype: Any) -> Any:
        """The next buffer from the start."""
        shape, dt, nbytes = _layout(shape, dtype)
        at = -(-self.used // ALIGN) * ALIGN
        if at + nbytes > self.top:
            self.fallbacks += 1
            return self.xp.zeros(shape, dtype=dt)
        self.used = at + nbytes
        return self.buf[at: at + nbytes].view(dt).reshape(shape)

    def zeros_at_end(self, shape: Any, dtype: Any) -> Any:
        """The next buffer from the end (below the ones carved there before), so that what is carved from the
        start later keeps the offsets it has without it."""
        shape, dt, nbytes = _layout(shape, dtype)
        at = (self.top - nbytes) // ALIGN * ALIGN
        if at < self.used:
            self.fallbacks += 1
            return self.xp.zeros(shape, dtype=dt)
        self.top = at
        return self.buf[at: at + nbytes].view(dt).reshape(shape)


def kv_caches(mem: Arena, shape: Any, dtype: Any, at_end: bool = False) -> tuple[Any, Any]:
    """One instance's K and V caches: the first buffers from the arena's start, or (the buffers_first switch) the
    last ones at its end, V above K, so that every buffer carved after them starts where it would without them."""
    if at_end:
        v = mem.zeros_at_end(shape, dtype)
        return mem.zeros_at_end(shape, dtype), v
    k = mem.zeros(shape, dtype)
    return k, mem.zeros(shape, dtype)


def _layout(shape: Any, dtype: Any) -> tuple[tuple[int, ...], np.dtype, int]:
    dt = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return shape, dt, int(np.prod(shape, dtype=np.int64)) * dt.itemsize


def capacity(preset: Any) -> int:
    """Bytes for one pipeline instance: both KV caches plus room for the per-token buffers."""
    p = preset
    kv = 2 * p.n_layers * p.n_kv_heads * p.max_ctx * p.head_dim * 2
    return kv + token_buffers_capacity(p)


def token_buffers_capacity(preset: Any) -> int:
    """Bytes for the per-token buffers of one instance (activations, logits, attention partials), with room
    to spare."""
    p = preset
    small = 4 * (p.vocab + 8 * p.hidden + 4 * p.ffn + 4 * p.max_ctx) + 64 * p.n_heads * p.head_dim * 4
    return 2 * small + (1 << 20)
