"""The launches of our forward (runner/pipeline.py Pipeline._forward_own), recorded from a stand-in for
OwnForward: which RMSNorms are launches of their own in each build."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest

from runner.pipeline import Pipeline


class _Own:
    def __init__(self, in_proj: bool, in_resid: bool, merge: bool) -> None:
        self.norm_in_proj, self.norm_in_resid = in_proj, in_resid
        self.norm_in_oproj = in_resid and not merge
        self.calls: list[tuple[str, object]] = []

    def __getattr__(self, name):
        return lambda *a: self.calls.append((name, a[0] if a and isinstance(a[0], str) else None))


def _launches(in_proj: bool = False, in_resid: bool = False, merge: bool = False) -> list[tuple[str, object]]:
    own = _Own(in_proj, in_resid, merge)
    rec = SimpleNamespace(span=lambda *a, **k: contextlib.nullcontext())
    fake = SimpleNamespace(rec=rec, main=None, own=own, delay_ns=0, qkv_streams=False, run_ahead=False,
                           layers=[{"attn_norm": "attn", "ffn_norm": "ffn"}] * 3, w={"final_norm": "final"})
    Pipeline._forward_own(fake)
    return own.calls


@pytest.mark.parametrize("in_proj,in_resid,merge,norms", [
    (False, False, False, ["attn", "ffn"] * 3 + ["final"]),
    (True, False, False, ["final"]),  # the QKV and gate/up GEMVs compute theirs
    (False, True, False, ["attn"]),  # o_proj and down leave theirs: only the norm after the embedding
    (False, True, True, ["attn", "ffn", "ffn", "ffn"]),  # the merge in o_proj has no norm tail: down's only
])
def test_norms_launched_are_the_ones_no_kernel_computes(in_proj, in_resid, merge, norms):
    calls = _launches(in_proj, in_resid, merge)
    assert [g for name, g in calls if name == "rmsnorm"] == norms
    names = [name for name, _ in calls]
    assert names.count("qkv") == names.count("o_proj") == names.count("ffn") == 3
    assert names[-2:] == ["lm_head", "sample"]
