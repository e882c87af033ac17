"""What instrumentation costs: a traced run's rounds against the untraced twin that ran beside it in
every round (same config, same process), with the rule's paired interval."""

from __future__ import annotations

import numpy as np

from perfreview.compare import stats
from perfreview.trace.runs import Run


def tracing(run: Run, alpha: float = 0.05) -> stats.Estimate | None:
    """Decode throughput traced / untraced (ratio below 1: tracing slows the token), or None when the
    run has no untraced twin."""
    pairs = [(r.untraced_decode_ns, r.decode_ns) for r in run.meta.per_repeat
             if r.untraced_decode_ns and r.decode_ns]
    if len(pairs) < 2:
        return None
    untraced, traced = (np.array(x, float) for x in zip(*pairs))
    return stats.paired(1 / untraced, 1 / traced, alpha)  # throughput is tokens over the decode span
