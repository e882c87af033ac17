"""``run.json``: the metadata of one run, typed. The only module that writes or reads its keys.

Every producer (the runner, the importers, the tests' synthetic runs) builds a :class:`RunMeta`;
:mod:`perfreview.trace.runs` stores it with :meth:`RunMeta.to_json` and reads it back with
:meth:`RunMeta.from_json`, which checks each key's type so that a hand-edited or foreign file fails
with one line naming the key. Provenance (git commit, host, creation time) is collected here too,
so every run says the same things about where it came from.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import getpass
import os
import platform
import secrets
import socket
import subprocess
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfreview import __version__
from perfreview.trace.schema import SCHEMA_VERSION

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class MetaError(ValueError):
    """A run.json whose keys or types are not what this version reads (the message names the key)."""


@dataclass
class RepeatInfo:
    """What one repeat recorded besides its events."""

    repeat: int
    wall_ns: int | None = None
    energy_j: float | None = None
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    temperature_c: float | None = None
    round: int | None = None  # the round of interleaved sides this repeat ran in
    order: int | None = None  # its position inside the round (0 = first)
    decode_ns: int | None = None  # first decode token's start to the last one's end (host clock)
    untraced_decode_ns: int | None = None  # --trace cupti: the same config untraced, in the same round
    instance: int | None = None  # which pipeline instance of its config ran it (fresh_every: 0, 1, ...)


@dataclass
class RunMeta:
    """The keys of run.json. Free-form groups (device, host, model, git) stay dicts: they hold what
    the backend or the importer could find, and readers use ``.get`` on them."""

    run: str
    preset: str = ""
    config: str = ""
    config_label: str = ""
    tokens: int = 0
    prompt_tokens: int = 0
    warmup_tokens: int = 0
    repeats: int = 0
    timing: str = ""
    function_every: int = 0  # --timing functions: GPU event pairs in one token of every N (0: none recorded)
    build: str = ""
    seed: int = 0
    device: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    git: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    switches: dict[str, Any] = field(default_factory=dict)
    switches_in_effect: dict[str, Any] = field(default_factory=dict)
    switches_without_effect: list[str] = field(default_factory=list)
    per_repeat: list[RepeatInfo] = field(default_factory=list)
    not_measured: list[dict[str, str]] = field(default_factory=list)
    prompt: list[int] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)
    interleaved_with: list[str] = field(default_factory=list)
    interleaving: str = ""  # how the sides alternated ("rounds in a seeded random order", ...)
    graph_captures: int = 0
    host_wait: str = ""  # how the host waited for the GPU at each synchronize (block or spin)
    trace: str = ""  # "cupti": kernels, copies, calls and syncs recorded through CUPTI
    injected: dict[str, Any] = field(default_factory=dict)  # a calibrated slowdown: pct, token_us, delay_us
    clock: str = ""
    clock_alignment: str = ""
    gc: str = ""
    # imported traces
    imported_from: str = ""
    format: str = ""
    token_marker: str | None = None
    repeats_are: str = "separate repeats of the workload in one process"
    # provenance
    created: str = field(default_factory=lambda: now())
    tool: str = "perfreview"
    tool_version: str = __version__
    schema_version: int = SCHEMA_VERSION

    # --- dict-like access for templates and free-form readers --------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    @property
    def imported(self) -> bool:
        return bool(self.format)

    @property
    def gpu(self) -> bool:
        return self.device.get("backend") == "cupy"

    @property
    def runs_ahead(self) -> bool:
        """run_ahead: the host queued the decode tokens and waited once; a token's host range is its
        launch only, so its latency is the device's time for it."""
        return bool(self.switches_in_effect.get("run_ahead"))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str = "run.json") -> "RunMeta":
        """Check every known key's type; unknown keys (a newer writer's) are ignored."""
        if not isinstance(data, dict) or not isinstance(data.get("run"), str):
            raise MetaError(f"{where}: not a perfreview run.json (no 'run' field)")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise MetaError(f"{where}: schema version {data.get('schema_version')!r}, "
                            f"this perfreview reads {SCHEMA_VERSION}")
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in data or data[f.name] is None and not _optional(_HINTS[f.name]):
                continue
            value = data[f.name]
            if f.name == "per_repeat":
                value = _repeats(value, where)
            elif not _fits(value, _HINTS[f.name]):
                raise MetaError(f"{where}: key {f.name!r} is {type(value).__name__}, "
                                f"expected {_type_name(_HINTS[f.name])}")
            elif f.name in _REQUIRED_KEYS and not all(set(_REQUIRED_KEYS[f.name]) <= set(v) for v in value):
                raise MetaError(f"{where}: every entry of {f.name!r} needs {', '.join(_REQUIRED_KEYS[f.name])}")
            kwargs[f.name] = value
        return cls(**kwargs)


def _repeats(value: Any, where: str) -> list[RepeatInfo]:
    if not isinstance(value, list):
        raise MetaError(f"{where}: key 'per_repeat' is {type(value).__name__}, expected a list")
    known = {f.name for f in dataclasses.fields(RepeatInfo)}
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("repeat"), int):
            raise MetaError(f"{where}: per_repeat[{i}] is not an object with an integer 'repeat'")
        kept = {k: v for k, v in item.items() if k in known}
        for k, v in kept.items():
            if not _fits(v, _REPEAT_HINTS[k]):
                raise MetaError(f"{where}: per_repeat[{i}].{k} is {type(v).__name__}")
        out.append(RepeatInfo(**kept))
    return out


_HINTS = typing.get_type_hints(RunMeta)
_REQUIRED_KEYS = {"not_measured": ("what", "why")}  # list-of-object keys whose entries the reports read
_REPEAT_HINTS = typing.get_type_hints(RepeatInfo)


def _optional(hint: Any) -> bool:
    return type(None) in typing.get_args(hint)


def _fits(value: Any, hint: Any) -> bool:
    """isinstance against a simple type hint (``int``, ``str | None``, ``dict[str, Any]`` ...)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is Any:
        return True
    if not isinstance(value, origin or hint):
        return False
    args = typing.get_args(hint)
    if origin is list and args:  # every element too: a report iterates them
        return all(_fits(v, args[0]) for v in value)
    if origin is dict and len(args) == 2:
        return all(_fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items())
    return True


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


# --- provenance ---------------------------------------------------------------------------------
def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id(preset: str, label: str) -> str:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    safe = "".join(c if c.isalnum() or c in "._+=-" else "_" for c in label)
    return f"{stamp}-{preset}-{safe}-{secrets.token_hex(2)}"


def git_info(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """Commit and dirty flag of the code that ran. ``PERFREVIEW_GIT_COMMIT``, when set, says it instead:
    a tree copied to a remote GPU machine may carry no .git, or a stale one."""
    if os.environ.get("PERFREVIEW_GIT_COMMIT"):
        return {"commit": os.environ["PERFREVIEW_GIT_COMMIT"],
                "dirty": os.environ.get("PERFREVIEW_GIT_DIRTY", "0") == "1", "from": "PERFREVIEW_GIT_COMMIT"}

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    return {"commit": commit or None, "dirty": dirty if commit else None}


def host_info(pinned_cpu: int | None = None) -> dict[str, Any]:
    """What pyperf records too: a loaded host makes a noisy host-bound run."""
    return {"hostname": socket.gethostname(), "platform": platform.platform(),
            "python": platform.python_version(), "user": _user(), "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "pinned_cpu": pinned_cpu}


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return os.environ.get("USER", "")
