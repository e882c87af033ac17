from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

from perfreview.flows import measure  # noqa: E402
from runner import config as cfg  # noqa: E402
from runner.spec import RunSpec  # noqa: E402


def small_spec(**kw) -> RunSpec:
    base = dict(preset="tiny", tokens=8, repeats=3, device="cpu", prompt_tokens=4, warmup_tokens=2)
    base.update(kw)
    return RunSpec(**base)


@pytest.fixture(scope="session")
def cpu_runs(tmp_path_factory) -> dict[str, Path]:
    """Real CPU runs shared by the tests: baseline and optimized interleaved, plus a functions-level
    baseline and an A/A partner."""
    out = tmp_path_factory.mktemp("runs")
    ab = measure.measure(small_spec(repeats=10), [cfg.resolve("baseline"), cfg.resolve("optimized")], out)
    aa = measure.measure(small_spec(repeats=10), [cfg.resolve("baseline"), cfg.resolve("baseline")], out)
    fn = measure.measure(small_spec(timing="functions"), [cfg.resolve("baseline")], out)
    return {"root": out, "baseline": ab[0].path, "optimized": ab[1].path,
            "aa1": aa[0].path, "aa2": aa[1].path, "functions": fn[0].path}
