"""What every picture shares: the headless backend, names from traces drawn as plain text (never
parsed as math: a clang lambda ``$_0`` or a ``$`` pair would otherwise crash or garble the text),
and long names shortened so a 20,000-character template cannot push the legend off the picture."""

from __future__ import annotations

import matplotlib

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
