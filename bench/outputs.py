"""Where every benchmark puts its results: ``<stem>.json`` (the numbers) and ``<stem>.md`` (the
table, rendered from ``templates/<stem>.md.j2`` like every other markdown of the project), each
written whole or not at all; the table is printed too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from perfreview.report import render


def save(out: Path, stem: str, report: dict[str, Any], **context: Any) -> str:
    """Write ``report`` and its table under ``out``; ``context``: what the template needs besides it
    (the template sees the report as ``r``). Returns the markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    render.write(out / f"{stem}.json", json.dumps(report, indent=1, default=str))
    text = render.render(f"{stem}.md.j2", r=report, **context)
    render.write(out / f"{stem}.md", text)
    print(text)
    return text
