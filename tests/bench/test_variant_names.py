"""--variants names that a probe does not have are refused before anything runs or is written: one
line, exit 2 (bench.pdl_variants.chosen_variants, used by pdl_variants and persistent_chain)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("args", [["bench/pdl_variants.py", "--variants", "plain;no such variant"],
                                  ["bench/pdl_variants.py", "--before", ".", "--before-variants", "nor this"],
                                  ["bench/persistent_chain.py", "--variants", "one launch a projection;nope"]])
def test_unknown_variant_is_one_line_exit_2_and_nothing_written(tmp_path, args):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, *args, "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].endswith("error: unknown variants: " + repr([args[-1].split(";")[-1]]))
    assert "Traceback" not in done.stderr and not out.exists()


def test_known_variants_keep_their_order():
    import argparse

    from bench.pdl_variants import VARIANTS, chosen_variants

    names = list(VARIANTS)[:3][::-1]
    assert chosen_variants(argparse.ArgumentParser(), ";".join(names), VARIANTS) == names


def test_decode_task_names_only_variants_that_exist_and_refuses_unknown_stages(tmp_path):
    """scripts/decode_task.sh's variants and coresidency stages ask pdl_variants for names it has (a typo would cost a
    device call), and an unknown stage is one line, exit 2, before anything runs."""
    import re

    from bench.pdl_variants import VARIANTS

    text = (ROOT / "scripts" / "decode_task.sh").read_text()
    names = [n for part in re.findall(r'V="(?:\$V;)?([^"]*)"', text) for n in part.split(";")]
    assert len(set(names)) == 10 and set(names) <= set(VARIANTS)  # variants and coresidency (A/A rows in both)
    done = subprocess.run(["bash", "scripts/decode_task.sh", "checks", "bogus"], cwd=ROOT, capture_output=True,
                          text=True, env={"OUT": str(tmp_path / "out"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2 and done.stderr.strip() == "decode_task: error: unknown stage bogus"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("in_proj,in_resid,scale", [(False, False, False), (True, False, False),
                                                   (False, True, False), (False, False, True)])
def test_token_leaves_out_the_norm_launches_the_projections_compute(in_proj, in_resid, scale):
    """bench.pdl_variants.token (the cuda_graph config's launches): with norm_in_proj the QKV and gate/up
    launches compute their RMSNorm, so no norm launch precedes them; the final norm before the LM head stays.
    With norm_in_residual o_proj and down leave it, so only the norm after the embedding is launched; with
    norm_as_scale they leave x * gain and its sums of squares, which the norm after the embedding writes too."""
    from bench.pdl_variants import token

    calls = []

    class Own:
        norm_in_proj, fold_norm = in_proj, False
        norm_in_resid = norm_in_oproj = in_resid
        norm_as_scale = scale
        ahead = None

        def __getattr__(self, name):
            return lambda *a: calls.append((name, a[0] if a and isinstance(a[0], str) else None))

    layers = [{"attn_norm": "attn", "ffn_norm": "ffn"}] * 2
    token(Own(), layers, {"final_norm": "final"})
    norms = [g for name, g in calls if name == "rmsnorm"]
    assert norms == (["final"] if in_proj else ["attn"] if in_resid else ["attn", "final"] if scale
                     else ["attn", "ffn", "attn", "ffn", "final"])
    assert [n for n, _ in calls].count("qkv") == 2 and [n for n, _ in calls][-2:] == ["lm_head", "sample"]
