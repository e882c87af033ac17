"""Where the A/A spread of an ``ab`` run comes from, from its stored runs (CPU): each round's sides
relative to the round's mean, by side and by position in the round, and the histogram of those
relative values (two clusters = an instance effect: each fresh pipeline instance lands fast or slow).
Usage: bench/aa_instances.py RUN_DIR [RUN_DIR ...] (runs of one ``ab`` invocation)"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perfreview.analysis import samples  # noqa: E402
from perfreview.trace import runs  # noqa: E402


def main(paths: list[str]) -> int:
    rows = []
    for side, path in enumerate(paths):
        run = runs.read_run(Path(path))
        heads = samples.headlines(run).set_index("repeat")
        for info in run.meta.per_repeat:
            rows.append({"side": side, "round": info.round, "order": info.order,
                         "tokens_per_s": heads.loc[info.repeat, "tokens_per_s"],
                         "gpu_compute_ms": heads.loc[info.repeat, "median_gpu_compute_ms"]})
    d = pd.DataFrame(rows)
    for fig in ("tokens_per_s", "gpu_compute_ms"):
        rel = (d[fig] / d.groupby("round")[fig].transform("mean") - 1) * 100
        print(f"{fig}: relative to the round's mean (%), {d['round'].nunique()} rounds")
        print("  by side:", ", ".join(f"{s}: {m:+.3f} (sd {v:.3f})" for s, (m, v) in
                                      rel.groupby(d["side"]).agg(["mean", "std"]).iterrows()))
        print("  by position:", ", ".join(f"{o}: {m:+.3f}" for o, m in rel.groupby(d["order"]).mean().items()))
        counts, edges = np.histogram(rel, bins=12)
        print("  histogram:", " ".join(f"[{a:+.2f},{b:+.2f}):{c}" for a, b, c in zip(edges, edges[1:], counts)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
