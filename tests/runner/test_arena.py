"""The per-instance arena: aligned, separate, zeroed buffers at fixed offsets; a plain allocation past
its capacity."""

from __future__ import annotations

import numpy as np

from runner.arena import ALIGN, Arena, capacity
from runner.presets import get_preset


def test_buffers_are_aligned_disjoint_and_at_the_same_offsets_every_time():
    def layout() -> tuple[Arena, list[np.ndarray]]:
        mem = Arena(np, 1 << 16)
        return mem, [mem.zeros(3, np.float16), mem.zeros((2, 5), np.float32), mem.zeros(1, np.int64)]

    mem, bufs = layout()
    offsets = [b.__array_interface__["data"][0] - mem.buf.__array_interface__["data"][0] for b in bufs]
    assert offsets == [0, ALIGN, 2 * ALIGN] and all(o % ALIGN == 0 for o in offsets)
    assert bufs[1].shape == (2, 5) and bufs[1].dtype == np.float32 and not bufs[1].any()
    bufs[0][:] = 1
    assert not bufs[1].any() and not bufs[2].any()  # writing one buffer leaves the others alone
    mem2, bufs2 = layout()
    assert [b.__array_interface__["data"][0] - mem2.buf.__array_interface__["data"][0] for b in bufs2] == offsets


def test_past_capacity_it_falls_back_and_a_preset_fits():
    mem = Arena(np, 512)
    mem.zeros(100, np.float32)
    big = mem.zeros(1000, np.float32)
    assert big.shape == (1000,) and mem.fallbacks == 1
    p = get_preset("tiny")
    kv = 2 * p.n_layers * p.n_kv_heads * p.max_ctx * p.head_dim * 2
    assert capacity(p) > kv


def test_a_pipeline_instance_fits_its_arena():
    from runner import config as cfg
    from runner.loop import Session

    session = Session("tiny", "cpu", seed=0)
    pipe, _ = session.pipeline(cfg.resolve("baseline"), "tokens")
    assert pipe.arena.fallbacks == 0 and pipe.arena.used > 2 * pipe.cache_k.nbytes - 1
    assert np.shares_memory(pipe.cache_k, pipe.arena.buf)  # carved from the arena


def _at(mem: Arena, a: np.ndarray) -> int:
    return a.__array_interface__["data"][0] - mem.buf.__array_interface__["data"][0]


def test_buffers_carved_from_the_end_leave_the_start_where_it_was():
    mem = Arena(np, 4096)
    tail = mem.zeros_at_end(1000, np.uint8)
    below = mem.zeros_at_end(3, np.float32)
    first = mem.zeros(3, np.float16)
    assert _at(mem, first) == 0 and _at(mem, tail) == (4096 - 1000) // ALIGN * ALIGN
    assert _at(mem, below) % ALIGN == 0 and _at(mem, below) + below.nbytes <= _at(mem, tail)
    mem.zeros(_at(mem, below) - ALIGN, np.uint8)  # up to the buffers at the end: fits
    assert mem.fallbacks == 0
    mem.zeros(1, np.uint8)  # would overlap them: a plain allocation
    assert mem.zeros_at_end(ALIGN, np.uint8).shape == (ALIGN,) and mem.fallbacks == 2


def test_buffers_first_puts_the_caches_at_the_end_and_changes_no_token():
    from runner import config as cfg
    from runner.loop import Session, generate

    session = Session("tiny", "cpu", seed=0)
    tokens = {}
    for side in ("baseline", "baseline,buffers_first=on"):
        pipe, _ = session.pipeline(cfg.parse_side(side), "tokens")
        tokens[side] = generate(pipe, session.prompt(8), 6)
        mem = pipe.arena
        assert mem.fallbacks == 0
        if "buffers_first" in side:
            assert _at(mem, pipe.d_tok) == 0 and _at(mem, pipe.cache_v) + pipe.cache_v.nbytes <= mem.buf.size
            assert _at(mem, pipe.cache_k) + pipe.cache_k.nbytes <= _at(mem, pipe.cache_v)
            assert _at(mem, pipe.cache_k) >= mem.used  # every token buffer below the caches
        else:
            assert _at(mem, pipe.cache_k) == 0
    assert tokens["baseline"] == tokens["baseline,buffers_first=on"]


def test_kv_caches_are_the_first_buffers_or_the_last_with_v_above_k():
    from runner.arena import kv_caches

    mem = Arena(np, 8192)
    k, v = kv_caches(mem, (2, 100), np.float16)
    assert _at(mem, k) == 0 and _at(mem, v) == -(-k.nbytes // ALIGN) * ALIGN and k.shape == v.shape == (2, 100)
    end = Arena(np, 8192)
    k, v = kv_caches(end, (2, 100), np.float16, at_end=True)
    assert _at(end, v) + v.nbytes <= 8192 and _at(end, k) + k.nbytes <= _at(end, v) and end.used == 0
