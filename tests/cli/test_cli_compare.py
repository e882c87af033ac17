"""compare / ab / report / list from the command line, with --json."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from perfreview.cli import main


def test_compare_json_contract(cpu_runs, capsys, tmp_path):
    md = tmp_path / "r.md"
    assert main(["compare", str(cpu_runs["baseline"]), str(cpu_runs["optimized"]), "--out", str(md),
                 "--no-plots", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["report"] == str(md) and md.is_file()
    assert obj["threshold"] == pytest.approx(0.005)
    assert obj["design"]["unit"] == "rounds"  # the two runs were interleaved: paired by round
    kinds = {r["kind"] for r in obj["rows"]}
    assert kinds == {"headline", "function"}
    for r in obj["rows"]:
        assert {"name", "kind", "a", "b", "ratio", "ci_low", "ci_high", "verdict", "role", "n"} <= set(r)
        assert r["verdict"] in ("improved", "regressed", "no change", "inconclusive", "shown, not tested")
    assert obj["verdict"] == next(r for r in obj["rows"] if r["role"] == "primary")["verdict"]


def test_compare_from_store_by_label(cpu_runs, capsys):
    root = str(cpu_runs["root"])
    assert main(["compare", "--a", "config_label=baseline", "--b", "config_label=optimized", "--runs-dir", root,
                 "--no-plots", "--json", "--force"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert len(obj["a"]) >= 2 and len(obj["b"]) == 1  # every stored baseline run of that label is a unit
    assert obj["design"]["unit"] == "runs" and obj["verdict"] == "inconclusive"  # one run on a side: no verdict
    assert any("not interleaved" in w for w in obj["warnings"])


def test_one_run_a_side_reviews_without_a_deltas_picture(cpu_runs, capsys, tmp_path):
    # one run a side has no interval: the review, its timeline and latency pictures are written, the deltas
    # picture (intervals only) is left out, and the llama-bench row says it has no interval, not [nan, nan]
    md = tmp_path / "one.md"
    root = str(cpu_runs["root"])
    assert main(["compare", "--a", "config_label=baseline", "--b", "config_label=optimized", "--runs-dir", root,
                 "--out", str(md), "--force", "--quiet"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.json", "one.md", "one_latency.png",
                                                         "one_timeline.png"]
    text = md.read_text()
    assert "[no interval]" in text and "nan" not in text and "with no interval (1 run)" in text
    assert "- deltas: not drawn, no figure has an interval" in text
    assert json.loads((tmp_path / "one.json").read_text())["plots"] == {"timeline": "one_timeline.png",
                                                                      "latency": "one_latency.png"}
    assert main(["plot", "deltas", str(tmp_path / "one.json"), "--out", str(tmp_path / "d.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"perfreview: error: {tmp_path / 'one.json'}: no figure")
    assert not (tmp_path / "d.png").exists()


def test_a_review_that_fails_part_way_leaves_nothing(cpu_runs, capsys, tmp_path, monkeypatch):
    from perfreview.plots import charts

    def broken(*args, **kwargs):
        raise ValueError("latency picture failed")
    monkeypatch.setattr(charts, "latency", broken)  # the last picture, after the timeline and deltas are written
    assert main(["compare", str(cpu_runs["baseline"]), str(cpu_runs["optimized"]), "--out",
                 str(tmp_path / "r.md"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == "perfreview: error: latency picture failed"
    assert list(tmp_path.iterdir()) == []


def test_aa_pair_is_a_negative_control(cpu_runs, capsys):
    assert main(["compare", str(cpu_runs["baseline"]), str(cpu_runs["optimized"]), "--aa-from",
                 str(cpu_runs["aa1"]), str(cpu_runs["aa2"]), "--json", "--no-plots"]) == 0
    obj = json.loads(capsys.readouterr().out)
    control = obj["negative_control"]
    assert control["primary"]["name"] == "tokens_per_s"
    assert control["decided"] == [] or any("NEGATIVE CONTROL" in w for w in obj["warnings"])


def test_mismatch_refused_on_command_line(cpu_runs, tmp_path, capsys):
    assert main(["run", "--tokens", "5", "--repeats", "2", "--device", "cpu", "--prompt-tokens", "2",
                 "--out", str(tmp_path), "--json"]) == 0
    other = json.loads(capsys.readouterr().out)["run"]
    assert main(["compare", str(cpu_runs["baseline"]), other, "--no-plots"]) == 2
    assert "differ in tokens" in capsys.readouterr().err


def test_ab_configs_end_to_end(tmp_path, capsys):
    md = tmp_path / "review.md"
    assert main(["ab", "--a", "config=baseline", "--b", "config=baseline,inject_delay_us=3000", "--tokens", "4",
                 "--repeats", "10", "--prompt-tokens", "2", "--device", "cpu", "--runs-dir", str(tmp_path / "runs"),
                 "--out", str(md), "--json", "--fail-on", "improved"]) == 0
    obj = json.loads(capsys.readouterr().out)
    tps = next(r for r in obj["rows"] if r["name"] == "tokens_per_s")
    assert tps["verdict"] == "regressed" and tps["ci_high"] < 1
    assert "regressed" in md.read_text()


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_ab_two_revisions(tmp_path, capsys):
    from perfreview.trace.meta import PROJECT_ROOT

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout with commits")
    assert main(["ab", "--a", "rev=HEAD", "--b", "rev=HEAD,inject_delay_us=0", "--tokens", "3", "--repeats", "2",
                 "--processes", "2", "--prompt-tokens", "2", "--device", "cpu", "--runs-dir", str(tmp_path / "runs"),
                 "--json", "--no-plots"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert len(obj["a"]) == 2 and len(obj["b"]) == 2  # two processes per side, alternating
    assert obj["design"]["unit"] == "processes"
    assert main(["ab", "--a", "rev=no-such-rev", "--b", "rev=HEAD", "--processes", "2", "--device", "cpu",
                 "--runs-dir", str(tmp_path / "runs2")]) == 2
    err = capsys.readouterr().err.strip()  # git's own line, not a Python list's repr of it
    assert err.startswith("perfreview: error: rev=no-such-rev: cannot check it out (") and "['" not in err


def test_report_and_list(cpu_runs, tmp_path, capsys):
    out = tmp_path / "run.md"
    assert main(["report", str(cpu_runs["functions"]), "--out", str(out)]) == 0
    assert "## Run report" in out.read_text() and (tmp_path / "run_timeline.png").is_file()
    capsys.readouterr()
    assert main(["list", "--out", str(cpu_runs["root"]), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) >= 5


def test_sequential_ab_with_its_own_aa_pair_stops_when_decided(tmp_path, capsys):
    """No --repeats: looks at 10, 20 ... rounds; a 20 ms delay per token is decided at the first look,
    the exit code follows --fail-on, and progress goes to stderr."""
    code = main(["ab", "--a", "config=baseline", "--b", "config=baseline,inject_delay_us=20000", "--aa",
                 "--tokens", "4", "--prompt-tokens", "2", "--device", "cpu", "--runs-dir", str(tmp_path / "runs"),
                 "--out", str(tmp_path / "r.md"), "--no-plots", "--fail-on", "regressed"])
    out, err = capsys.readouterr()
    assert code == 1 and "verdict: regressed" in out
    assert "look 1: 10 rounds" in err
    review = json.loads((tmp_path / "r.json").read_text())
    assert review["design"]["look"] == 1 and "decided at look 1" in review["design"]["stopped_because"]
    assert len(review["aa_runs"]) == 1 and review["negative_control"]["primary"] is not None


@pytest.mark.parametrize("budget", ["0", "-5", "nan", "inf"])
def test_ab_refuses_a_budget_that_is_not_seconds(tmp_path, capsys, budget):
    # nan passed every "would the next look pass the budget" test as False: the run went on to its last look
    assert main(["ab", "--a", "config=baseline", "--b", "config=optimized", "--device", "cpu", "--tokens", "2",
                 "--budget", budget, "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"perfreview: error: --budget {float(budget)}: a number of seconds above 0"
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_review_named_json_is_refused_before_any_work(cpu_runs, tmp_path, capsys):
    # the review's JSON goes to <out>.json: an --out of r.json had it written over the markdown
    out = tmp_path / "r.json"
    assert main(["compare", str(cpu_runs["baseline"]), str(cpu_runs["optimized"]), "--out", str(out)]) == 2
    assert main(["ab", "--a", "config=baseline", "--b", "config=optimized", "--device", "cpu", "--tokens", "2",
                 "--runs-dir", str(tmp_path / "runs"), "--out", str(out)]) == 2
    expected = f"perfreview: error: {out}: the review is markdown and its JSON is written beside it: name it r.md"
    assert capsys.readouterr().err.strip().splitlines() == [expected, expected]
    assert list(tmp_path.iterdir()) == []  # no review, no pictures, no runs folder
