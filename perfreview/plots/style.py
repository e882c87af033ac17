"""What every picture shares: the headless backend, names from traces drawn as plain text (never
parsed as math: a clang lambda ``$_0`` or a ``$`` pair would otherwise crash or garble the text),
and long names shortened so a 20,000-character template cannot push the legend off the picture;
pictures saved whole or not at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

from perfreview.trace.files import written_whole

matplotlib.use("Agg")
matplotlib.rcParams["text.parse_math"] = False

MAX_LABEL = 60


def short(name: str, limit: int = MAX_LABEL) -> str:
    """``name`` cut to ``limit`` characters with an ellipsis in the middle (both ends say the most)."""
    name = " ".join(str(name).split())
    if len(name) <= limit:
        return name
    keep = (limit - 1) // 2
    return name[:keep] + "…" + name[-(limit - 1 - keep):]


def save(fig: Any, out: Path, dpi: int) -> Path:
    """The figure in the format its name says (PNG when it says none), written whole."""
    fmt = Path(out).suffix.lstrip(".").lower() or "png"
    with written_whole(out, "wb") as fh:
        fig.savefig(fh, dpi=dpi, format=fmt)
    return Path(out)
