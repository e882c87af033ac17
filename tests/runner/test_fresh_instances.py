"""Fresh pipeline instances per block of rounds (RunSpec.fresh_every): the design randomises which
instance (memory, streams, graph) a config runs on, without changing what it computes."""

from __future__ import annotations

from runner import config as cfg
from runner.loop import Interleaved
from runner.spec import RunSpec, check_spec

import pytest


def test_sides_get_new_instances_every_block_and_compute_the_same():
    spec = RunSpec(preset="tiny", tokens=4, repeats=1, device="cpu", prompt_tokens=3, warmup_tokens=2,
                   fresh_every=2)
    rounds = Interleaved(spec, [cfg.resolve("baseline"), cfg.resolve("baseline", {"async_copies": "on"})])
    first = [s.pipe for s in rounds.sides]
    rounds.run(5)
    assert all(s.pipe is not p for s, p in zip(rounds.sides, first))
    for side in rounds.sides:
        assert [r.instance for r in side.repeats] == [0, 0, 1, 1, 2]
        assert [r.round for r in side.repeats] == [0, 1, 2, 3, 4]
    runs = rounds.results()
    assert runs[0].meta.generated == runs[1].meta.generated  # scheduling changes, never the math
    assert "fresh pipeline instances every 2 rounds" in runs[0].meta.interleaving


def test_a_negative_block_size_is_refused():
    with pytest.raises(ValueError, match="fresh-every"):
        check_spec(RunSpec(fresh_every=-1))
