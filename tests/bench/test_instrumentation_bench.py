"""bench/instrumentation.py's within-repeat cost of sampled function events (no GPU)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from bench.instrumentation import sampled_token_cost


def rounds_with(latency_ns, every: int, repeats: int = 3, tokens: range = range(32, 160)):
    rows = [{"kind": "token", "phase": "decode", "source": "host", "repeat": r, "token": t, "start_ns": 0,
             "end_ns": latency_ns(r, t, t % every == 0)} for r in range(repeats) for t in tokens]
    rows += [{"kind": "range", "phase": "decode", "source": "host", "repeat": 0, "token": 40, "start_ns": 0,
              "end_ns": 10**9}]  # not a token row: ignored
    return SimpleNamespace(sides=[SimpleNamespace(twin_of=None, rows=rows)])


def test_cost_is_the_sampled_tokens_extra_over_the_decode():
    # 128 tokens of 1000 ns; the 4 sampled ones (32, 64, 96, 128) take 220 ns more: 880 / 128880
    cost = sampled_token_cost(rounds_with(lambda r, t, s: 1000 + (220 if s else 0), 32), 32)
    assert cost.shape == (3,)
    np.testing.assert_allclose(cost, 4 * 220 / (128 * 1000 + 4 * 220))


def test_a_stall_in_one_unsampled_token_does_not_count():
    cost = sampled_token_cost(rounds_with(lambda r, t, s: 1000 + (220 if s else 0) + (10**6 if t == 33 else 0), 32),
                              32)
    assert np.all(cost < 4 * 220 / (128 * 1000))  # the median ignores the stall; only the span grows
