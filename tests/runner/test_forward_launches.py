"""The launches of our forward (runner/pipeline.py Pipeline._forward_own), recorded from a stand-in for
OwnForward: which RMSNorms are launches of their own in each build."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest

from runner.pipeline import Pipeline


class _Own:
    def __init__(self, in_proj: bool, in_resid: bool, merge: bool, scale: bool = False) -> None:
        self.norm_in_proj, self.norm_in_resid, self.norm_as_scale = in_proj, in_resid, scale
        self.norm_in_oproj = in_resid and not merge
        self.calls: list[tuple[str, object]] = []
        self.scaled: list[bool] = []  # rmsnorm's ``scale`` argument, a call each

    def rmsnorm(self, gain, scale=False):
        self.calls.append(("rmsnorm", gain))
        self.scaled.append(scale)

    def __getattr__(self, name):
        return lambda *a: self.calls.append((name, a[0] if a and isinstance(a[0], str) else None))


def _own_launches(in_proj: bool = False, in_resid: bool = False, merge: bool = False, scale: bool = False,
                  streams: bool = False) -> _Own:
    own = _Own(in_proj, in_resid, merge, scale)
    rec = SimpleNamespace(span=lambda *a, **k: contextlib.nullcontext())
    fake = SimpleNamespace(rec=rec, main=None, own=own, delay_ns=0, qkv_streams=streams, run_ahead=False,
                           _fork_join=lambda launch: [launch(n, w) for n, w in (("q_proj", "wq"), ("k_proj", "wk"),
                                                                               ("v_proj", "wv"))],
                           layers=[{"attn_norm": "attn", "ffn_norm": "ffn"}] * 3, w={"final_norm": "final"})
    Pipeline._forward_own(fake)
    return own


def _launches(in_proj: bool = False, in_resid: bool = False, merge: bool = False) -> list[tuple[str, object]]:
    return _own_launches(in_proj, in_resid, merge).calls


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


def test_norm_as_scale_launches_the_first_norm_as_a_scale_and_the_final_norm():
    """norm_as_scale: o_proj and down leave x * gain and their sums of squares, so of the 2L + 1 norms only the
    one after the embedding (writing the same: ``scale``) and the final one (a true norm for the LM head's
    plain GEMV) are launches."""
    own = _own_launches(scale=True)
    assert [g for name, g in own.calls if name == "rmsnorm"] == ["attn", "final"]
    assert own.scaled == [True, False]
    names = [name for name, _ in own.calls]
    assert names.count("qkv") == names.count("o_proj") == names.count("ffn") == 3


def test_norm_as_scale_with_the_qkv_fork_launches_a_true_norm_before_each_fork():
    """The Q/K/V fork's plain GEMVs read a norm's output: with qkv_streams each layer's attention norm is a
    launch of its own (a true norm), while gate/up still take o_proj's x * gain and sums."""
    own = _own_launches(scale=True, streams=True)
    assert [g for name, g in own.calls if name == "rmsnorm"] == ["attn"] * 3 + ["final"]
    assert own.scaled == [False] * 4


def test_the_qkv_fork_reads_the_norm_the_residual_gemvs_leave():
    """norm_in_residual with the Q/K/V fork: down leaves the next layer's norm in hn, which the fork's plain
    GEMVs read as they are, so only the norm after the embedding is launched (as without the fork)."""
    own = _own_launches(in_resid=True, streams=True)
    assert [g for name, g in own.calls if name == "rmsnorm"] == ["attn"]
    assert own.scaled == [False]
