"""The one place that renders markdown: jinja2 templates from ``templates/`` plus the filters
they need (escaping trace names, formatting numbers to the precision an interval supports)."""

from __future__ import annotations

import collections
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import jinja2

from perfreview.compare import stats
from perfreview.trace import figures
from perfreview.trace.files import written_whole


def _templates() -> Path:
    """The repo's templates/ (editable install), else the copy a wheel installs under share/."""
    if os.environ.get("PERFREVIEW_TEMPLATES"):
        return Path(os.environ["PERFREVIEW_TEMPLATES"])
    repo = Path(__file__).resolve().parents[2] / "templates"
    return repo if repo.is_dir() else Path(sys.prefix) / "share" / "perfreview" / "templates"


TEMPLATES = _templates()

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|#~$])")  # $: GitHub renders $...$ as math


def md(text: Any) -> str:
    """Escape a name from a trace for a markdown table cell: C++ templates, pipes, backticks."""
    s = str(text).replace("\r", " ").replace("\n", " ")
    s = _MD_SPECIAL.sub(r"\\\1", s)
    return s.replace("&", "&amp;")


def code(text: Any) -> str:
    """A name from a trace (a path, a marker, a build) as a code span in prose. Backslash escapes do not work inside
    one (``md`` would show its backslashes), so the fence is one backtick longer than any run inside the name."""
    s = str(text).replace("\r", " ").replace("\n", " ")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""  # a fence must not touch a backtick of the name
    return f"{fence}{pad}{s}{pad}{fence}"


def num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def decimals_for(half_width: float) -> int:
    """Decimals an interval supports: one significant digit of its half-width, two when that digit
    is 1 or 2 (rounding 0.15 to 0.2 would misstate it by a third)."""
    if not half_width or not math.isfinite(half_width) or half_width <= 0:
        return 2
    exponent = int(math.floor(math.log10(abs(half_width))))
    leading = int(abs(half_width) / 10 ** exponent)
    sig = 2 if leading in (1, 2) else 1
    return max(0, sig - 1 - exponent)


def with_ci(value: float, low: float, high: float) -> str:
    """``12.41 [12.35, 12.48]``: digits limited by the interval."""
    if value is None or not math.isfinite(value):
        return "n/a"
    d = decimals_for((high - low) / 2 if math.isfinite(low) and math.isfinite(high) else 0)
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{value:,.{d}f}"
    return f"{value:,.{d}f} [{low:,.{d}f}, {high:,.{d}f}]"


SINGULAR = {"runs": "run", "rounds": "round", "processes": "process", "blocks": "block", "repeats": "repeat"}


def count(n: int, unit: str) -> str:
    """``1 run``, ``12 runs``: the comparison's units (rounds, processes, runs, blocks) counted."""
    return f"{n} {SINGULAR.get(unit, unit) if n == 1 else unit}"


def pct(ratio: float, digits: int | None = None) -> str:
    if ratio is None or not math.isfinite(ratio):
        return "n/a"
    change = (ratio - 1) * 100
    return f"{change:+.{1 if digits is None else digits}f}%"


def pct_ci(ratio: float, low: float, high: float) -> str:
    """``+1.4% [+0.9, +1.9]``, decimals from the interval's width."""
    if not all(map(_finite, (ratio, low, high))):
        return "n/a"
    d = min(2, decimals_for((high - low) * 50))
    return f"{(ratio - 1) * 100:+.{d}f}% [{(low - 1) * 100:+.{d}f}, {(high - 1) * 100:+.{d}f}]"


def _finite(x: Any) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def cell(row: Any, which: str) -> str:
    """Median of side ``which`` ("a" or "b") of a comparison row, with the digits its interval supports."""
    value = getattr(row, which)
    half = abs(value) * (row.ci_high - row.ci_low) / 2 if _finite(row.ci_high) and _finite(row.ci_low) else 0
    return f"{value:,.{decimals_for(half)}f}"


def change(row: Any) -> str:
    """``+1.4% [+0.9, +1.9]``; a "no change" row says only how tightly it is bounded."""
    if row.verdict == stats.NO_CHANGE:
        bound = max(abs(row.ci_low - 1), abs(row.ci_high - 1)) * 100
        return f"within ±{bound:.1f}%"
    return pct_ci(row.ratio, row.ci_low, row.ci_high)


def verdict_text(row: Any) -> str:
    """The verdict with what qualifies it: the units that would decide it, or that it may be small."""
    if row.verdict == stats.INCONCLUSIVE and row.units_needed:
        need = row.units_needed
        return f"inconclusive (≈{need} units would decide)" if need <= 100_000 else "inconclusive"
    if row.verdict in (stats.IMPROVED, stats.REGRESSED) and row.smaller_than_threshold:
        return f"{row.verdict} (may be smaller than the threshold)"
    return row.verdict


def figure_label(row: Any) -> str:
    """``decode throughput (t/s)`` or ``attention (GPU)``."""
    return figures.title(row.name) + (f" ({row.metric})" if row.metric else "")


def design_text(design: Any) -> str:
    """How the comparison decided, in one sentence."""
    unit = {"rounds": "paired by round (Hodges-Lehmann on the log-differences, signed-rank interval)",
            "processes": "paired by process (Hodges-Lehmann on the log-differences of per-process means)",
            "runs": "per run (Welch's t on the logs of per-run values; the sides were not interleaved)",
            "blocks": "per block of tokens (Welch's t on the logs of block values; one trace per side)"}[design.unit]
    look = (f"; sequential look {design.look} of {len(stats.LOOKS)} (Pocock α' = {design.alpha_primary:g} per look)"
            if design.look else "")
    return (f"{unit}; Δ = ±{design.threshold:.1%}; primary figure at α = {design.alpha_primary:g}{look}; "
            f"other figures one Benjamini-Hochberg family at α = {design.alpha_family:g}")


def known(info: dict[str, Any]) -> dict[str, Any]:
    """A free-form metadata group (device, host) for a template: a key it lacks reads "n/a" (an
    imported or older run records fewer), where a missing template variable still fails loudly."""
    return collections.defaultdict(lambda: "n/a", info)


def commit(git: dict[str, Any]) -> str:
    """``0123456789`` or ``0123456789-dirty`` or ``unknown``."""
    return (git.get("commit") or "unknown")[:10] + ("-dirty" if git.get("dirty") else "")


def model_label(meta: Any) -> str:
    """llama-bench's model column: what ran, or where an imported trace came from."""
    return f"imported {meta.format} trace" if meta.imported else f"llama {meta.preset} F16"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # markdown, not HTML: names are escaped with the md filter instead
    )
    env.filters.update(md=md, code=code, num=num, with_ci=with_ci, pct=pct, count=count, pct_ci=pct_ci, cell=cell,
                       change=change, verdict_txt=verdict_text, title=figures.title, label=figure_label,
                       design=design_text)
    return env


def render(template: str, **context: Any) -> str:
    try:
        return environment().get_template(template).render(**context)
    except jinja2.TemplateNotFound:
        raise FileNotFoundError(f"{TEMPLATES / template}: template not found") from None


class OutputError(ValueError):
    """An output file that cannot be written where asked (the message names it)."""


def check_output(path: Path | None) -> None:
    """Fail before any work when an output file's folder is missing or read-only."""
    if path is None:
        return
    folder = Path(path).parent
    if not folder.is_dir():
        raise OutputError(f"{path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{path}: folder {folder} is not writable")
    if os.path.lexists(path) and (Path(path).is_symlink() or not Path(path).is_file()):
        # a symlink, FIFO or device node would be replaced by a regular file: refuse
        raise OutputError(f"{path}: exists and is not a regular file; refusing to replace it")


def write(path: Path, text: str) -> Path:
    """``text`` written whole (trace.files): never half-written."""
    with written_whole(path) as fh:
        fh.write(text)
    return Path(path)
