"""The one place that renders markdown: jinja2 templates from ``templates/`` plus the filters
they need (escaping trace names, formatting numbers to the precision an interval supports)."""

from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import jinja2

from perfreview.compare import stats
from perfreview.trace import figures


def _templates() -> Path:
    """The repo's templates/ (editable install), else the copy a wheel installs under share/."""
    if os.environ.get("PERFREVIEW_TEMPLATES"):
        return Path(os.environ["PERFREVIEW_TEMPLATES"])
    repo = Path(__file__).resolve().parents[2] / "templates"
    return repo if repo.is_dir() else Path(sys.prefix) / "share" / "perfreview" / "templates"


TEMPLATES = _templates()

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|#~])")


def md(text: Any) -> str:
    """Escape a name from a trace for a markdown table cell: C++ templates, pipes, backticks."""
    s = str(text).replace("\r", " ").replace("\n", " ")
    s = _MD_SPECIAL.sub(r"\\\1", s)
    return s.replace("&", "&amp;")


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
    need = row.repeats_needed
    if row.verdict == stats.INCONCLUSIVE and need:
        return f"inconclusive (needs ≈{need} repeats)" if need <= 1000 else "inconclusive (needs > 1000 repeats)"
    return row.verdict


def noise_source(noise: Any) -> str:
    """Where θ came from, in words."""
    if noise.aa_row is None and not noise.per_figure:
        return f"default {noise.floor:.1%}"
    row = noise.aa_row
    where = f"A/A tokens/s interval {pct_ci(row.ratio, row.ci_low, row.ci_high)}" if row else "A/A pair"
    return f"per figure from the A/A pair, never below {noise.floor:.1%}; tokens/s: {where} -> θ = {noise.theta:.2%}"


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
    env.filters.update(md=md, num=num, with_ci=with_ci, pct=pct, pct_ci=pct_ci, cell=cell, change=change,
                       verdict_txt=verdict_text, title=figures.title, noise_source=noise_source)
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


def write(path: Path, text: str) -> Path:
    """Write atomically: a temporary file renamed into place, so nothing is ever half-written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
