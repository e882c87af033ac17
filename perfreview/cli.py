"""``perfreview``: argument parsing only; the work is done by the modules it calls.

Every subcommand takes ``--json``. Errors print one line (``perfreview: error: ...``) and exit 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn

from perfreview import __version__
from perfreview.report.render import check_output

COMMANDS: dict[str, Callable[[argparse.Namespace], Any]] = {}


class UsageError(Exception):
    pass


def command(name: str) -> Callable:
    def register(fn: Callable) -> Callable:
        COMMANDS[name] = fn
        return fn
    return register


def _emit(args: argparse.Namespace, payload: Any, text: str) -> None:
    if args.json:
        print(json.dumps(payload, indent=1, default=str))
    else:
        print(text)


def _run_options(p: argparse.ArgumentParser, repeats: int | None, out_flag: bool = True) -> None:
    p.add_argument("--preset", default="auto",
                   help="tiny, small, 1b or 8b; auto (default): 1b where a GPU is usable, else tiny")
    p.add_argument("--tokens", type=int, default=32, help="decode tokens per repeat (default 32)")
    p.add_argument("--repeats", type=int, default=repeats,
                   help=f"repeats per side (default {repeats})" if repeats else
                   "rounds per side, fixed; default: sequential looks at 10, 20, 40 ... rounds until decided")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--timing", default="tokens", choices=["tokens", "functions"],
                   help="tokens: 3 events per token; functions: also an event pair per function in one token "
                   "of every --function-every")
    p.add_argument("--function-every", type=int, default=32, metavar="N",
                   help="--timing functions: GPU event pairs around the functions of one token in N (default 32; "
                   "1: every token, which costs the eager loop ~20%% of tokens/s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--warmup-tokens", type=int, default=8)
    if out_flag:
        _runs_dir_option(p)
    p.add_argument("--build", default="", help="a label for this build (stored; 'compare --a build=...')")
    p.add_argument("--cpu", type=int, help="pin the process to this CPU while measuring (less host jitter)")
    p.add_argument("--trace", default="", choices=["", "cupti"],
                   help="cupti: record every kernel, copy, runtime/driver call and sync of each token through "
                   "CUPTI (needs the cupti extra: pip install -e '.[cupti]')")
    p.add_argument("--host-wait", default="block", choices=["block", "spin"],
                   help="how the host waits for the GPU at a synchronize: the driver's wait (default) or a spin "
                   "on an event (no wake-up latency)")
    fresh = 0 if repeats else 1  # run: one config, nothing to randomise; ab: every round
    p.add_argument("--fresh-every", type=int, default=fresh, metavar="ROUNDS",
                   help=f"new pipeline instances (buffers, streams, graph) for every side every ROUNDS rounds, made "
                   f"in a random order, so a config's memory placement is not fixed for the run (default {fresh}; "
                   "0: never)")


def _preset(args: argparse.Namespace) -> str:
    """``auto``: the 1b model where a GPU is usable, tiny on the CPU backend."""
    from runner.device import gpu_available

    if args.preset != "auto":
        return args.preset
    return "1b" if args.device != "cpu" and gpu_available() else "tiny"


def _spec(args: argparse.Namespace, config: Any) -> Any:
    from runner.spec import RunSpec

    return RunSpec(preset=_preset(args), config=config, tokens=args.tokens, repeats=args.repeats,
                   device=args.device, timing=args.timing, seed=args.seed, prompt_tokens=args.prompt_tokens,
                   warmup_tokens=args.warmup_tokens, build=args.build, cpu=args.cpu, host_wait=args.host_wait,
                   trace=args.trace, fresh_every=args.fresh_every, function_every=args.function_every)


@command("run")
def cmd_run(args: argparse.Namespace) -> int:
    from perfreview.flows import measure
    from perfreview.report import console
    from runner import config as cfg

    overrides = {}
    for item in args.set:
        if "=" not in item:
            raise UsageError(f"--set {item!r}: expected NAME=VALUE, e.g. async_copies=on")
        key, value = item.split("=", 1)
        overrides[key.strip()] = value.strip()
    config = cfg.resolve(args.config, overrides)
    progress = console.Progress("repeat", args.quiet or args.json)
    stored = measure.measure(_spec(args, config), [config], args.out, progress=progress)
    _emit(args, measure.summary(stored[0]), console.stored_runs(stored))
    return 0


@command("check")
def cmd_check(args: argparse.Namespace) -> int:
    """Every config against the float64 reference (teacher forced) and against each other."""
    from perfreview.flows.check import check
    from perfreview.report import console

    if args.steps < 1:  # 0 steps failed inside the model, fewer "passed" with nothing checked
        raise UsageError(f"--steps {args.steps}: at least 1")
    if args.seed < 0:
        raise UsageError(f"--seed {args.seed}: must be 0 or more")
    res = check(_preset(args), args.device, args.seed, args.steps,
                console.Progress("check: configs checked", args.quiet or args.json))
    _emit(args, res, console.check_lines(res))
    return 0 if res["ok"] else 1


@command("doctor")
def cmd_doctor(args: argparse.Namespace) -> int:
    """This machine's state that makes measurements noisy, and what to change."""
    from dataclasses import asdict

    from perfreview.flows.doctor import doctor
    from perfreview.report import console

    checks = doctor()
    _emit(args, [asdict(c) for c in checks], console.doctor_lines(checks))
    return 0


@command("list")
def cmd_list(args: argparse.Namespace) -> int:
    from perfreview.report import console
    from perfreview.trace import store

    from perfreview.flows.store import reconcile

    reconcile(args.out)  # a run a crash left unregistered is listed too
    found = store.find(store.store_path(args.out), **dict(_parse_filters(args.filter)))
    _emit(args, found, console.run_list(found))
    return 0


@command("store")
def cmd_store(args: argparse.Namespace) -> int:
    """``store check``: adopt runs a crash left unregistered, remove half-written folders of dead
    writers, report store rows whose folders are gone; ``store prune`` also removes those rows."""
    from dataclasses import asdict

    from perfreview.flows.store import reconcile
    from perfreview.report import console

    report = reconcile(args.out, prune=args.action == "prune")
    _emit(args, asdict(report), console.store_report(report))
    return 0


def _parse_filters(items: list[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        for part in item.split(","):
            if "=" not in part:
                raise UsageError(f"filter {part!r}: expected KEY=VALUE, e.g. build=main")
            key, value = part.split("=", 1)
            out.append((key.strip(), value.strip()))
    return out


def _load(paths: list[Path]) -> list[Any]:
    from perfreview.trace import runs

    return [runs.read_run(p) for p in paths]


def _side_runs(args: argparse.Namespace, which: str) -> list[Any]:
    """Runs of one side of ``compare``: ``--a build=X`` (the store) or positional run folders."""
    from perfreview.trace import store

    spec = getattr(args, which)
    if spec:
        found = store.find(store.store_path(args.out), **dict(_parse_filters([spec])))
        if not found:
            raise UsageError(f"--{which} {spec}: no stored run matches (see 'perfreview list')")
        return _load([Path(r["path"]) for r in found])
    return []


def _control_pair(args: argparse.Namespace) -> tuple | None:
    """``--aa-from RUN RUN2``: an A/A pair, reported as the negative control."""
    return tuple([r] for r in _load(args.aa_from)) if args.aa_from else None


def _threshold(args: argparse.Namespace) -> float:
    if not (0 < args.threshold < 100):
        raise UsageError(f"--threshold {args.threshold}: a percentage above 0 and below 100, e.g. 0.5")
    return args.threshold / 100


def _fail_on(args: argparse.Namespace) -> set[str]:
    """``--fail-on regressed``: the primary verdicts that make the exit code 1 (checked before any work)."""
    wanted = {v.strip() for v in (args.fail_on or "").split(",") if v.strip()}
    if wanted - {"improved", "regressed", "no change", "inconclusive"}:
        raise UsageError(f"--fail-on {args.fail_on!r}: use improved, regressed, 'no change' or inconclusive")
    return wanted


@command("compare")
def cmd_compare(args: argparse.Namespace) -> int:
    from perfreview.flows import review
    from perfreview.report import console

    check_output(args.report_out)
    review.check_review_out(args.report_out)
    progress = console.Progress("compare", args.quiet or args.json)
    progress.step("reading the runs")
    a = _side_runs(args, "a") or _load(args.runs[:1])
    b = _side_runs(args, "b") or _load(args.runs[1:2])
    if not a or not b:
        raise UsageError("compare needs two run folders, or --a KEY=VALUE and --b KEY=VALUE")
    same = {r.id for r in a} & {r.id for r in b}
    if same:
        raise UsageError(f"run {sorted(same)[0]} is on both sides: a run compared with itself says nothing")
    fail_on = _fail_on(args)
    progress.step("comparing")
    if any(r.meta.format == "llama-bench" for r in a + b):
        return _compare_llama_bench_runs(args, a, b, fail_on)
    payload = review.review(a, b, args.report_out, threshold=_threshold(args), aa_pair=_control_pair(args),
                            force=args.force, plots=not args.no_plots, step=progress.step)
    _emit(args, payload, console.review_summary(payload))
    return 1 if payload["verdict"] in fail_on else 0


def _compare_llama_bench_runs(args: argparse.Namespace, a: list[Any], b: list[Any], fail_on: set[str]) -> int:
    """Two imported llama-bench results: the llama-bench comparison (each test its own verdict)."""
    from perfreview.flows.llama_bench import compare_files

    if len(a) != 1 or len(b) != 1 or not all(r.meta.format == "llama-bench" for r in a + b):
        raise UsageError("an imported llama-bench result compares only with one other llama-bench result")
    payload, text = compare_files(a[0].path, b[0].path, args.report_out, _threshold(args))
    _emit(args, payload, text)
    return 1 if any(r["verdict"] in fail_on for r in payload["rows"]) else 0


@command("ab")
def cmd_ab(args: argparse.Namespace) -> int:
    from perfreview.compare import stats
    from perfreview.flows import ab, review
    from perfreview.report import console
    from perfreview.trace import runs

    review.check_review_out(args.report_out)
    runs.check_writable(args.out)  # the runs folder may also hold the review (--out runs/review.md)
    check_output(args.report_out)
    fail_on = _fail_on(args)
    if args.aa and args.aa_from:
        raise UsageError("--aa runs its own A/A pair; leave out --aa-from")
    if not 0 < args.budget < math.inf:  # nan and inf too: a look would never pass the budget
        raise UsageError(f"--budget {args.budget}: a number of seconds above 0")
    threshold = _threshold(args)
    quiet = args.quiet or args.json

    def progress(look: Any) -> None:
        if not quiet:
            print(console.look_line(look), file=sys.stderr, flush=True)

    sequential = args.repeats is None
    spec = _spec(args, None)
    if sequential:
        spec.repeats = stats.LOOKS[0]
    if args.processes < 2:
        raise UsageError(f"--processes {args.processes}: at least 2 (10 or more to decide 1%)")
    sides = ab.run_sides(args.a, args.b, spec, args.out, aa=args.aa, sequential=sequential, threshold=threshold,
                         budget_s=args.budget, progress=progress, processes=args.processes)
    paths = sides.paths
    a, b = _load(paths[0]), _load(paths[1])
    aa_pair = (a, _load(paths[2])) if args.aa else _control_pair(args)
    payload = review.review(a, b, args.report_out, threshold=threshold, aa_pair=aa_pair, force=args.force,
                            plots=not args.no_plots, processes=sides.processes, alpha_primary=sides.alpha_primary,
                            look=sides.look, stopped_because=sides.stopped_because,
                            extra={"aa_runs": [str(p) for p in paths[2]] if args.aa else []})
    _emit(args, payload, console.review_summary(payload))
    return 1 if payload["verdict"] in fail_on else 0


@command("compare-llama-bench")
def cmd_compare_llama_bench(args: argparse.Namespace) -> int:
    from perfreview.flows.llama_bench import compare_files

    check_output(args.report_out)
    payload, text = compare_files(args.a_file, args.b_file, args.report_out, _threshold(args))
    _emit(args, payload, text)
    return 0


@command("import")
def cmd_import(args: argparse.Namespace) -> int:
    """Another tool's trace -> a stored run, so report/plot/export/compare work on it."""
    from perfreview.flows.imports import import_trace, summary
    from perfreview.report import console
    from perfreview.trace import schema
    from perfreview.trace.runs import check_run_id

    if args.name is not None:  # before reading a trace that may take minutes
        check_run_id(args.out, args.name)
    if args.format == "llama-bench":
        from perfreview.flows.imports import import_llama_bench

        if args.token_marker or args.blocks is not None:
            raise UsageError("a llama-bench result has no timeline: leave out --token-marker and --blocks")
        s, records = import_llama_bench(args.file, args.out, args.name)
        payload = summary(s, schema.empty(), records)
        _emit(args, payload, console.imported_llama_bench(s.path, payload["tests"]))
        return 0
    progress = console.Progress("import: MiB read", args.quiet or args.json, every_s=2.0)
    s, events = import_trace(args.format, args.file, args.out, args.token_marker, args.blocks, args.name, progress)
    _emit(args, summary(s, events), console.imported(s.path, len(events), s.meta.tokens))
    return 0


@command("report")
def cmd_report(args: argparse.Namespace) -> int:
    from perfreview.flows import pictures
    from perfreview.report import console

    check_output(args.report_out)
    progress = console.Progress("report", args.quiet or args.json)
    progress.step("reading the run")
    run = _load([args.run])[0]
    plots = pictures.run_report(run, args.report_out, plots=not args.no_plots, step=progress.step)
    _emit(args, {"run": str(args.run), "report": str(args.report_out), "plots": plots},
          console.wrote("report", args.report_out))
    return 0


def _token_range(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        a, _, b = text.partition(":")
        return int(a), int(b or a)
    except ValueError:
        raise UsageError(f"--tokens {text!r}: expected A:B, e.g. 5:7") from None


PLOT_DPI = 100


def _size(text: str | None) -> tuple[float, float] | None:
    """``1200x600`` (pixels) -> inches at PLOT_DPI."""
    if not text:
        return None
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 1200x600") from None
    if w < 100 or h < 100:
        raise UsageError(f"--size {text!r}: at least 100x100 pixels")
    return w / PLOT_DPI, h / PLOT_DPI


@command("plot")
def cmd_plot(args: argparse.Namespace) -> int:
    from perfreview.flows import pictures
    from perfreview.report import console

    check_output(args.plot_out)
    size = _size(args.size)
    if args.what == "deltas" and len(args.inputs) != 1:
        raise UsageError("plot deltas takes one review JSON (written by compare/ab --out)")
    progress = console.Progress("plot", args.quiet or args.json)
    progress.step("reading")
    runs = _load(args.inputs) if args.what != "deltas" else None
    review_json = args.inputs[0] if args.what == "deltas" else None
    progress.step("drawing")
    out = pictures.plot(args.what, runs, review_json, args.plot_out, _token_range(args.tokens), args.repeat,
                        size=size, dpi=PLOT_DPI)
    _emit(args, {"plot": str(out)}, console.wrote("plot", out))
    return 0


@command("export")
def cmd_export(args: argparse.Namespace) -> int:
    from perfreview.flows import pictures
    from perfreview.report import console

    check_output(args.export_out)
    progress = console.Progress("export: rows written", args.quiet or args.json, every_s=2.0)
    progress.step("reading the run")
    run = _load([args.run])[0]
    out = pictures.export_perfetto(run, args.export_out, progress)
    _emit(args, {"trace": str(out)}, console.wrote("trace", out, "open in https://ui.perfetto.dev"))
    return 0


def _quiet_taken(p: argparse.ArgumentParser) -> None:
    """``--quiet`` on a command with no progress lines: taken, so that a script can pass it to every command."""
    p.add_argument("--quiet", action="store_true", help="(this command prints no progress lines)")


def _runs_dir_option(p: argparse.ArgumentParser) -> None:
    """``--runs-dir``: the folder of runs and the results store, in every command that has one
    (``--out`` still works here for commands that write no other file)."""
    p.add_argument("--runs-dir", "--out", dest="out", type=Path, default=Path("runs"),
                   help="folder of runs and the results store (default runs)")


def _threshold_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold", type=float, default=0.5, metavar="PCT",
                   help="the smallest change that matters, in percent (default 0.5): 'no change' means an interval "
                   "inside ±PCT")


def _compare_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", dest="report_out", type=Path, help="write the markdown review here (plus .json, PNGs)")
    _threshold_option(p)
    p.add_argument("--aa-from", "--noise-from", dest="aa_from", nargs=2, type=Path, metavar=("RUN_A", "RUN_A2"),
                   help="an A/A pair of runs (same config), compared as a negative control: any decided figure there "
                   "is a loud warning")
    p.add_argument("--fail-on", metavar="VERDICTS",
                   help="exit 1 when decode throughput's verdict is one of these (comma-separated), e.g. regressed")
    p.add_argument("--force", action="store_true", help="compare runs whose preset/tokens/device/timing differ")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--json", action="store_true")


class OneLineParser(argparse.ArgumentParser):
    """argparse's own errors (a bad value, an unknown option, a missing argument) as every other error of the CLI:
    one line on stderr (a JSON object under --json), exit 2, where argparse printed its usage block first;
    ``--help`` still prints the usage. Subcommands' parsers are of this class too (add_subparsers makes them so)."""

    json_errors = False  # set by main from its argv: a failing parse has not read --json yet

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("perfreview").strip()
        _print_error(f"{message} (perfreview {command + ' ' if command else ''}--help)", OneLineParser.json_errors)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="perfreview", description="Measure a GPU decode workload in two configurations or builds, decide "
        "whether the change is real, explain where the time went, and write the PR review.")
    parser.add_argument("--version", action="version", version=f"perfreview {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the decode workload in one config and store the run")
    _run_options(p, repeats=10)
    p.add_argument("--config", default="baseline", help="baseline or optimized (default baseline)")
    p.add_argument("--set", action="append", default=[], metavar="SWITCH=VALUE",
                   help="override a switch, e.g. --set async_copies=on (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("check", help="every config against the float64 reference and each other")
    p.add_argument("--preset", default="auto", help="tiny, small, 1b or 8b; auto: 1b on a GPU, else tiny")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--steps", type=int, default=16, help="teacher-forced steps and generated tokens")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress lines")

    p = sub.add_parser("doctor", help="report what on this machine makes measurements noisy (clocks, governor, "
                       "load, GPU state) and what to change; changes nothing")
    p.add_argument("--json", action="store_true")
    _quiet_taken(p)

    p = sub.add_parser("store", help="check the runs folder against its store after a crash, or prune rows "
                       "whose folders are gone")
    p.add_argument("action", choices=["check", "prune"])
    p.add_argument("--runs-dir", dest="out", type=Path, default=Path("runs"), help="the runs folder (default runs)")
    p.add_argument("--json", action="store_true")
    _quiet_taken(p)

    p = sub.add_parser("list", help="list stored runs")
    p.add_argument("filter", nargs="*", help="KEY=VALUE filters: build, commit, config, preset, device...")
    _runs_dir_option(p)
    p.add_argument("--json", action="store_true")
    _quiet_taken(p)

    p = sub.add_parser("compare", help="compare two runs (or two groups from the store) and write the review")
    p.add_argument("runs", nargs="*", type=Path, help="run folders: A then B")
    p.add_argument("--a", help="side A from the store, e.g. build=main or config_label=baseline")
    p.add_argument("--b", help="side B from the store")
    p.add_argument("--runs-dir", dest="out", type=Path, default=Path("runs"), help="where the store is")
    _compare_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines")

    p = sub.add_parser("ab", help="run two sides interleaved (A B A B ...) and compare them")
    p.add_argument("--a", required=True, help="config=NAME[,switch=value...] or rev=<git rev>")
    p.add_argument("--b", required=True, help="config=NAME[,switch=value...] or rev=<git rev>")
    _run_options(p, repeats=None, out_flag=False)
    p.add_argument("--runs-dir", dest="out", type=Path, default=Path("runs"), help="where runs are stored")
    p.add_argument("--budget", type=float, default=300.0, metavar="SECONDS",
                   help="sequential: stop before a look that would pass this much measuring time (default 300)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--processes", type=int, default=10,
                   help="rev= sides: processes per side, the units compared (default 10)")
    p.add_argument("--aa", action="store_true",
                   help="also run A a second time in every round (A B A' in a random order): the negative control")
    _compare_options(p)

    p = sub.add_parser("compare-llama-bench", help="compare two llama-bench results (json, jsonl, csv, sql, md) "
                       "with intervals")
    p.add_argument("a_file", type=Path, help="baseline build's llama-bench result: -o json, jsonl, csv, sql or the "
                   "md table (json/jsonl carry every repetition; the others only mean ± SD: approximate intervals), "
                   "or a run folder made by 'perfreview import llama-bench'")
    p.add_argument("b_file", type=Path, help="compared build's llama-bench result (any of those formats)")
    p.add_argument("--out", dest="report_out", type=Path, help="write the markdown here")
    _threshold_option(p)
    p.add_argument("--json", action="store_true")
    _quiet_taken(p)

    p = sub.add_parser("import", help="import another tool's trace or result as a run (Kineto/Chrome JSON, nsys "
                       "SQLite export, llama-bench result)")
    p.add_argument("format", choices=["kineto", "chrome", "nsys", "llama-bench"],
                   help="kineto (or chrome): a PyTorch profiler / Chrome trace .json or .json.gz, or a folder of them "
                   "(one per rank); nsys: an 'nsys export --type sqlite' file; llama-bench: its -o json, jsonl, csv, "
                   "sql or md output (kept as tests; no timeline)")
    p.add_argument("file", type=Path, help="the trace file (kineto: or a folder of rank traces)")
    p.add_argument("--token-marker", help="NVTX range or API name that occurs once per token, e.g. cudaGraphLaunch")
    p.add_argument("--blocks", type=int, help="cut the tokens into N blocks used as repeats (batch means), "
                   "so two imported traces can be compared")
    p.add_argument("--name", help="run id (default: the file's name)")
    _runs_dir_option(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress lines")

    p = sub.add_parser("report", help="markdown report of one run")
    p.add_argument("run", type=Path)
    p.add_argument("--out", dest="report_out", type=Path, required=True)
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress lines")

    p = sub.add_parser("plot", help="pictures: timeline, deltas, latency")
    p.add_argument("what", choices=["timeline", "deltas", "latency"])
    p.add_argument("inputs", nargs="+", type=Path, help="run folders (timeline, latency) or a review JSON (deltas)")
    p.add_argument("--out", dest="plot_out", type=Path, required=True, help=".png or .svg")
    p.add_argument("--tokens", help="decode tokens A:B to draw (default: zoom on one token boundary)")
    p.add_argument("--repeat", type=int, help="which repeat (default: the middle one)")
    p.add_argument("--size", help="WIDTHxHEIGHT in pixels (default: sized to the content)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress lines")

    p = sub.add_parser("export", help="export a run")
    p.add_argument("format", choices=["perfetto"])
    p.add_argument("run", type=Path)
    p.add_argument("--out", dest="export_out", type=Path, required=True)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def main(argv: list[str] | None = None) -> int:
    from perfreview.trace.runs import RunError
    from perfreview.trace.store import StoreError
    from runner.config import NotBuiltError
    from runner.device import DeviceError

    parser = build_parser()
    OneLineParser.json_errors = "--json" in (sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args) or 0
    # Every bad-input error of ours subclasses one of these (schema, importers, configs: ValueError).
    except (UsageError, RunError, StoreError, DeviceError, NotBuiltError, ValueError) as exc:
        return _fail(args, str(exc))
    except OSError as exc:  # a file that could not be read or written: name it
        return _fail(args, f"{exc.filename or ''}: {exc.strerror or exc}")


def _fail(args: argparse.Namespace, message: str) -> int:
    """One line on stderr (a JSON object under --json), exit code 2."""
    _print_error(message, getattr(args, "json", False))
    return 2


def _print_error(message: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"error": message, "exit": 2}), file=sys.stderr)
    else:
        print(f"perfreview: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
