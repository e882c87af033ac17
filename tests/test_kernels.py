"""Our CUDA kernels: the source compiles for sm_90, and their algorithms (as NumPy) match the math."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from runner import own_kernels as ok

KERNELS = ("gemv", "gemv_qkv", "gemv_residual", "gemv_swiglu", "rmsnorm", "embed", "rope_kv", "attn_split",
           "attn_combine", "argmax", "spin_ns")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed on this machine")
def test_source_compiles_for_sm90(tmp_path):
    out = tmp_path / "decode.ptx"
    done = subprocess.run(["nvcc", "--ptx", "-arch=sm_90", "-o", str(out), str(ok.SOURCE)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    entries = set(re.findall(r"\.entry\s+(\w+)", out.read_text()))
    assert entries == set(KERNELS)


def direct_attention(q, keys, vals, n):
    s = keys[:n] @ q / np.sqrt(q.shape[0])
    p = np.exp(s - s.max())
    return (p / p.sum()) @ vals[:n]


@pytest.mark.parametrize("n", [1, 7, 255, 256, 257, 700, 2048])
def test_split_attention_matches_softmax(n):
    rng = np.random.default_rng(n)
    d, ctx = 64, 2048
    q, keys, vals = rng.standard_normal(d), rng.standard_normal((ctx, d)), rng.standard_normal((ctx, d))
    keys[n:] = 1e3  # positions past n must not leak in, whatever they hold
    np.testing.assert_allclose(ok.attention_split_reference(q, keys, vals, n), direct_attention(q, keys, vals, n),
                               rtol=1e-10, atol=1e-12)


def test_fused_swiglu_matches_unfused():
    rng = np.random.default_rng(0)
    wg, wu, x = rng.standard_normal((40, 16)), rng.standard_normal((40, 16)), rng.standard_normal(16)
    g = wg @ x
    np.testing.assert_allclose(ok.swiglu_reference(wg, wu, x), (g * (1 / (1 + np.exp(-g)))) * (wu @ x))


def test_argmax_reduction_picks_first_of_ties_like_numpy():
    rng = np.random.default_rng(1)
    for _ in range(20):
        x = rng.integers(0, 5, size=3000).astype(np.float16)  # many ties
        assert ok.argmax_reference(x) == int(np.argmax(x))
