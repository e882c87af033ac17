"""``perfreview``: argument parsing only; the work is done by the modules it calls.

Every subcommand takes ``--json``. Errors print one line (``perfreview: error: ...``) and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

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


def _run_options(p: argparse.ArgumentParser, repeats: int) -> None:
    p.add_argument("--preset", default="tiny", help="tiny, small, 1b or 8b (default tiny)")
    p.add_argument("--tokens", type=int, default=32, help="decode tokens per repeat (default 32)")
    p.add_argument("--repeats", type=int, default=repeats, help=f"repeats per side (default {repeats})")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--timing", default="tokens", choices=["tokens", "functions"],
                   help="tokens: 3 events per token; functions: an event pair per function (costs more)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--warmup-tokens", type=int, default=8)
    p.add_argument("--out", type=Path, default=Path("runs"), help="folder of runs and the results store")
    p.add_argument("--build", default="", help="a label for this build (stored; 'compare --a build=...')")


def _spec(args: argparse.Namespace, config: Any) -> Any:
    from runner.session import RunSpec

    return RunSpec(preset=args.preset, config=config, tokens=args.tokens, repeats=args.repeats,
                   device=args.device, timing=args.timing, seed=args.seed, prompt_tokens=args.prompt_tokens,
                   warmup_tokens=args.warmup_tokens, build=args.build)


@command("run")
def cmd_run(args: argparse.Namespace) -> int:
    from perfreview import measure
    from runner import config as cfg

    overrides = {}
    for item in args.set:
        if "=" not in item:
            raise UsageError(f"--set {item!r}: expected NAME=VALUE, e.g. async_copies=on")
        key, value = item.split("=", 1)
        overrides[key.strip()] = value.strip()
    config = cfg.resolve(args.config, overrides)
    stored = measure.measure(_spec(args, config), [config], args.out)
    _emit(args, measure.summary(stored[0]), measure.table(stored) + f"\nstored: {stored[0].path}")
    return 0


@command("list")
def cmd_list(args: argparse.Namespace) -> int:
    from perfreview.trace import store

    filters = dict(_parse_filters(args.filter))
    found = store.find(store.store_path(args.out), **filters)
    lines = [f"{r['run']}  {r['preset']}  {r['config_label']}  {r['device']}  {r['timing']}  "
             f"tg{r['tokens']} x{r['repeats']}  {(r['git_commit'] or '')[:10]}" for r in found]
    _emit(args, found, "\n".join(lines) or "no runs")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perfreview", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the decode workload in one config and store the run")
    _run_options(p, repeats=10)
    p.add_argument("--config", default="baseline", help="baseline or optimized (default baseline)")
    p.add_argument("--set", action="append", default=[], metavar="SWITCH=VALUE",
                   help="override a switch, e.g. --set async_copies=on (repeatable)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("list", help="list stored runs")
    p.add_argument("filter", nargs="*", help="KEY=VALUE filters: build, commit, config, preset, device...")
    p.add_argument("--out", type=Path, default=Path("runs"))
    p.add_argument("--json", action="store_true")

    for extra in EXTRA_PARSERS:
        extra(sub)
    return parser


EXTRA_PARSERS: list[Callable[[Any], None]] = []


def main(argv: list[str] | None = None) -> int:
    from perfreview.trace.runs import RunError
    from perfreview.trace.schema import SchemaError
    from perfreview.trace.store import StoreError
    from runner.config import NotBuiltError
    from runner.device import DeviceError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args) or 0
    except (UsageError, RunError, SchemaError, StoreError, DeviceError, NotBuiltError, ValueError,
            FileNotFoundError) as exc:
        print(f"perfreview: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
