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


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # markdown, not HTML: names are escaped with the md filter instead
    )
    env.filters.update(md=md, num=num, with_ci=with_ci, pct=pct, pct_ci=pct_ci)
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
