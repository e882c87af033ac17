"""bench/persistent_chain.py without a GPU: its plan holds a token's projection weights, each phase
reads what the one before it wrote, the phase table has chain.cu's layout, the float64 reference
is the chain of products, and chain.cu compiles with coherent loads of what other blocks wrote."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from bench.persistent_chain import (CHAIN_SOURCE, PHASE_DTYPE, RING_CHUNK_BYTES, RING_COLS, VARIANTS, buffer_sizes,
                                    chain_reference, phase_table, plan, plan_bytes, ring_copy_order,
                                    ring_reduce_order)
from runner.own_kernels import SOURCE
from runner.presets import get_preset


@pytest.mark.parametrize("name", ["tiny", "1b", "8b"])
def test_plan_reads_every_projection_weight_once(name):
    p = get_preset(name)
    h = p.hidden
    norms_and_embedding_row = 2 * (h + p.n_layers * 2 * h + h)
    assert plan_bytes(plan(p)) == p.weight_bytes_per_token() - norms_and_embedding_row


@pytest.mark.parametrize("name", ["tiny", "1b"])
def test_each_phase_reads_what_the_one_before_wrote(name):
    p = get_preset(name)
    phases, sizes = plan(p), buffer_sizes(p)
    assert phases[0].x == "a"
    for before, ph in zip(phases, phases[1:]):
        assert ph.x == before.y
        assert ph.cols <= before.rows  # it reads only what was written
    for ph in phases:
        assert ph.rows <= sizes[ph.y] and ph.cols <= sizes[ph.x]
    assert phases[-1].rows == p.vocab


def test_phase_table_has_the_layout_of_chain_cu():
    assert PHASE_DTYPE.itemsize == 32
    assert [PHASE_DTYPE.fields[f][1] for f in ("W", "x", "y", "rows", "cols")] == [0, 8, 16, 24, 28]
    phases = plan(get_preset("tiny"))[:2]
    t = phase_table(phases, {ph.weight: 1000 + i for i, ph in enumerate(phases)}, {"a": 1, "b": 2, "c": 3})
    assert t[1]["W"] == 1001 and t[1]["x"] == 2 and t[1]["y"] == 1 and t[1]["rows"] == phases[1].rows
    assert "struct ChainPhase" in CHAIN_SOURCE.read_text()


def test_reference_is_the_chain_of_products_rounded_like_the_kernels():
    p = get_preset("tiny")
    phases = plan(p)[:4]  # one layer
    rng = np.random.default_rng(0)
    w = {ph.weight: (rng.standard_normal((ph.rows, ph.cols)) / np.sqrt(ph.cols)).astype(np.float16)
         for ph in phases}
    x = rng.standard_normal(p.hidden).astype(np.float16)
    b = (w[phases[0].weight].astype(np.float64) @ x).astype(np.float16)
    a = (w[phases[1].weight].astype(np.float64) @ b[: p.hidden]).astype(np.float16)
    c = (w[phases[2].weight].astype(np.float64) @ a).astype(np.float16)
    want = (w[phases[3].weight].astype(np.float64) @ c[: p.ffn]).astype(np.float16)
    np.testing.assert_array_equal(chain_reference(phases, w, x), want)


def test_every_ring_variant_sizes_the_ring_its_build_has_and_fits_an_sm():
    """The host sizes chain_ring's shared memory from ``ring`` and ``threads``; the kernel indexes it
    by its RING define: the two must agree, and ring + x must fit the 227 KB an H100/H200 block may ask."""
    widest_x = 2 * max(ph.cols for ph in plan(get_preset("8b")))
    default = int(re.search(r"#define RING (\d+)", CHAIN_SOURCE.read_text()).group(1))
    for label, v in VARIANTS.items():
        if v.kernel != "chain_ring":
            continue
        rings = [int(d.split("=")[1]) for d in v.defines if d.startswith("-DRING=")]
        assert v.ring == (rings[0] if rings else default), label
        assert v.threads // 32 * v.ring * RING_CHUNK_BYTES + widest_x <= 227 * 1024, label


@pytest.mark.parametrize("shapes, warps", [
    ([(3072, 2048), (2048, 2048), (16384, 2048), (2048, 8192), (128256, 2048)], 1056),  # a 1b layer + LM head
    ([(5, 2048), (0, 2048), (12, 4096), (3, 6144)], 8),  # warps without rows in a phase, phases without rows
    ([(0, 2048), (0, 8192)], 4),  # the boundaries-only rows: nothing copied, nothing reduced
])
def test_ring_copies_chunks_in_the_order_they_are_reduced(shapes, warps):
    for warp in range(min(warps, 40)):
        assert ring_copy_order(shapes, warp, warps) == ring_reduce_order(shapes, warp, warps)
    assert RING_COLS * 2 // 16 // 32 == 8  # a chunk: 8 16-byte pieces a lane, as chain.cu copies it
    assert f"#define RING_COLS {RING_COLS}" in CHAIN_SOURCE.read_text()


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed on this machine")
@pytest.mark.parametrize("defines", [[], ["-DCHAIN_MIN_BLOCKS=4"], ["-DCHAIN_X_SMEM=0"], ["-DCHAIN_AHEAD=1"],
                                     ["-DRING=2"], ["-DRING=6"], ["-DRING=24"], ["-DBARRIER_FLAGS=1"],
                                     ["-DBARRIER_FLAGS=2"], ["-DCHAIN_AHEAD=1", "-DBARRIER_FLAGS=2"]])
def test_chain_compiles_with_coherent_loads_and_a_barrier(tmp_path, defines):
    src = tmp_path / "chain_all.cu"
    src.write_text(SOURCE.read_text() + CHAIN_SOURCE.read_text())  # as the bench compiles it
    out = tmp_path / "chain.ptx"
    done = subprocess.run(["nvcc", "--ptx", "-arch=sm_90", *defines, "-o", str(out), str(src)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    bodies = dict(re.findall(r"\.entry\s+(\w+)(.*?)(?=\.entry|\Z)", out.read_text(), flags=re.S))
    body = bodies["chain"]
    # x is written by other blocks of the same launch: loaded through L2, never the non-coherent path
    assert "ld.global.cg.v4" in body
    assert "ld.acquire.gpu.global" in body  # the barrier polls with acquire loads
    ring = bodies["chain_ring"]  # weights copied ahead into shared memory, x staged through L2
    assert "cp.async.cg.shared.global" in ring and "cp.async.wait_group" in ring and "ld.global.cg.v4" in ring
    # both persistent kernels pass their phases through the barrier BARRIER_FLAGS names
    for k in (body, ring):
        if "-DBARRIER_FLAGS=1" in defines:  # a flag a block: released stores, no counter
            assert "st.release.gpu.global.u32" in k and "atom.global.add.u32" not in k
        elif "-DBARRIER_FLAGS=2" in defines:  # one growing counter, added to without a reply
            assert "red.release.gpu.global.add.u64" in k and "atom.global.add.u32" not in k
        else:  # one counter: the last block to arrive flips the generation
            assert "atom.global.add.u32" in k
