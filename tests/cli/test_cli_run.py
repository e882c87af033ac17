"""``perfreview run``: the JSON contract and one-line errors with nothing half-written."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from perfreview.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perfreview.cli", *args], capture_output=True, text=True)


def test_run_json_contract(tmp_path):
    out = tmp_path / "runs"
    done = run_cli("run", "--tokens", "6", "--repeats", "2", "--device", "cpu",
                   "--prompt-tokens", "3", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    obj = json.loads(done.stdout)
    for key in ("run", "preset", "config", "switches", "device", "generated", "tokens_per_s", "sync_gap_us_median"):
        assert key in obj, key
    assert obj["preset"] == "tiny" and obj["config"] == "baseline"
    assert len(obj["tokens_per_s"]) == 2 and all(t > 0 for t in obj["tokens_per_s"])
    assert len(obj["generated"]) == 6
    assert obj["sync_gap_us_median"] > 0
    assert obj["preset"] == "tiny"  # --preset auto with --device cpu
    assert len(obj["time_to_first_token_ms"]) == 2 and all(t > 0 for t in obj["time_to_first_token_ms"])
    assert (out / "results.sqlite").is_file()


def test_run_prints_llama_bench_table(tmp_path):
    done = run_cli("run", "--tokens", "4", "--repeats", "2", "--device", "cpu", "--prompt-tokens", "2",
                   "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "| model | size | params | backend | config | timing | test | t/s |" in done.stdout
    assert "tg4" in done.stdout and " ± " in done.stdout


@pytest.mark.parametrize("args, message", [
    (["--preset", "70b"], "unknown preset"),
    (["--config", "fastest"], "unknown config"),
    (["--set", "warp=on"], "unknown switch"),
    (["--set", "async_copies"], "expected NAME=VALUE"),
    (["--tokens", "0"], "at least 1"),
    (["--seed", "-1"], "--seed -1: must be 0 or more"),  # NumPy's refusal named no option
])
def test_bad_arguments_one_line_exit_2(tmp_path, capsys, args, message):
    out = tmp_path / "runs"
    code = main(["run", "--device", "cpu", "--out", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("args, message", [(["--steps", "0"], "--steps 0: at least 1"),  # was a traceback
                                           (["--steps", "-2"], "--steps -2: at least 1"),  # "passed", none checked
                                           (["--seed", "-1"], "--seed -1: must be 0 or more")])
def test_check_refuses_steps_and_seeds_it_cannot_use(capsys, args, message):
    assert main(["check", "--device", "cpu", *args]) == 2
    assert capsys.readouterr().err.strip() == f"perfreview: error: {message}"


def test_cuda_without_gpu_is_an_error(tmp_path, capsys):
    from runner.device import gpu_available

    if gpu_available():
        pytest.skip("a GPU is present")
    code = main(["run", "--device", "cuda", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("perfreview: error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["run", "--device", "cpu", "--tokens", "2", "--repeats", "1", "--out", str(blocker / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and str(blocker) in err and len(err.strip().splitlines()) == 1


def test_check_command_passes_on_cpu(capsys):
    assert main(["check", "--device", "cpu", "--steps", "8", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["ok"] and obj["same_tokens"] and len(obj["configs"]) >= 5


def test_pinned_cpu_is_recorded_and_checked(tmp_path, capsys):
    import os

    cpu = sorted(os.sched_getaffinity(0))[0]
    assert main(["run", "--device", "cpu", "--tokens", "3", "--repeats", "1", "--prompt-tokens", "2", "--cpu", str(cpu),
                 "--out", str(tmp_path), "--json"]) == 0
    path = json.loads(capsys.readouterr().out)["run"]
    meta = json.loads((tmp_path / path.split("/")[-1] / "run.json").read_text())
    assert meta["host"]["pinned_cpu"] == cpu
    assert os.sched_getaffinity(0) != {cpu} or os.cpu_count() == 1  # restored afterwards
    assert main(["run", "--device", "cpu", "--cpu", "9999", "--out", str(tmp_path / "x")]) == 2
    assert "--cpu 9999" in capsys.readouterr().err


def test_doctor_reports_and_changes_nothing(capsys):
    assert main(["doctor", "--json"]) == 0
    checks = json.loads(capsys.readouterr().out)
    whats = {c["what"] for c in checks}
    assert {"load average (1 min)", "GPU"} <= whats
    assert all(c["ok"] in (True, False, None) and isinstance(c["value"], str) for c in checks)


def test_version_flag(capsys):
    import pytest

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("perfreview ")


def test_progress_lines_only_after_a_second_and_never_when_quiet(capsys):
    from perfreview.report.console import Progress

    now = [0.0]
    p = Progress("repeat", quiet=False)
    p.t0, p.clock = 0.0, lambda: now[0]
    p(1, 10)
    now[0] = 1.5
    p(2, 10)
    q = Progress("repeat", quiet=True)
    q.t0, q.clock = 0.0, lambda: 5.0
    q(3, 10)
    assert capsys.readouterr().err.splitlines() == ["repeat 2/10 (1.5 s)"]


def test_runs_dir_is_the_runs_folder_everywhere(tmp_path, capsys):
    assert main(["run", "--device", "cpu", "--tokens", "2", "--repeats", "1", "--prompt-tokens", "2",
                 "--runs-dir", str(tmp_path), "--json"]) == 0
    capsys.readouterr()
    assert main(["list", "--runs-dir", str(tmp_path), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1


def test_python_dash_m_runs_the_cli(tmp_path):
    """``python -m perfreview`` (a copied tree without the entry point, as on the lent device): the
    same CLI, its bad-input rule included."""
    from perfreview.trace.meta import PROJECT_ROOT

    ok = subprocess.run([sys.executable, "-m", "perfreview", "--version"], cwd=PROJECT_ROOT,
                        capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("perfreview ")
    bad = subprocess.run([sys.executable, "-m", "perfreview", "report", str(tmp_path / "none"), "--out",
                          str(tmp_path / "r.md")], cwd=PROJECT_ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr == f"perfreview: error: {tmp_path / 'none'}: no such run folder\n"


def test_every_command_takes_json_and_quiet():
    # a script passes --quiet to every command: list, store, doctor and compare-llama-bench refused it
    from perfreview.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in commands.items():
        flags = {f for a in sub._actions for f in a.option_strings}
        assert {"--json", "--quiet"} <= flags, name


@pytest.mark.parametrize("argv, message", [
    (["run", "--tokens", "x"], "argument --tokens: invalid int value: 'x' (perfreview run --help)"),
    (["report"], "the following arguments are required: run, --out (perfreview report --help)"),
    (["nosuch"], "argument command: invalid choice: 'nosuch'"),
])
def test_argument_errors_are_one_line_too(capsys, argv, message):
    # argparse printed its usage block before its error: every bad input is now one line (JSON under --json)
    with pytest.raises(SystemExit) as done:
        main(argv)
    err = capsys.readouterr().err
    assert done.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"perfreview: error: {message}")
    with pytest.raises(SystemExit):
        main([*argv, "--json"])
    assert json.loads(capsys.readouterr().err)["error"].startswith(message)


def test_help_still_prints_the_usage(capsys):
    with pytest.raises(SystemExit) as done:
        main(["run", "--help"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("usage: perfreview run")
