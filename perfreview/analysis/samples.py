"""A run's derived tables, each computed once per run (see ``Run.derived``), and its samples: the
long table of one value per (repeat, figure) that the comparison tests."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from perfreview.analysis import functions, gaps, headline, tokens
from perfreview.trace import figures
from perfreview.trace.runs import Run

SAMPLE_COLUMNS = ["run", "repeat", "name", "kind", "metric", "value", "unit", "higher_is_better", "resolution"]


def token_table(run: Run) -> pd.DataFrame:
    return run.derived("tokens", lambda: tokens.token_table(run.events))


def sync_gaps(run: Run) -> pd.DataFrame:
    return run.derived("gaps", lambda: gaps.sync_gaps(run.events, token_table(run)))


def headlines(run: Run) -> pd.DataFrame:
    return run.derived("headline", lambda: headline.per_repeat(run.events, run.meta, token_table(run),
                                                               sync_gaps(run)))


def functions_per_token(run: Run) -> pd.DataFrame:
    return run.derived("functions", lambda: functions.per_token(run.events))


def samples(run: Run) -> pd.DataFrame:
    """One row per (repeat, figure): every headline, and per function the median over the repeat's
    tokens of its host, self and GPU time per token (µs)."""
    return run.derived("samples", lambda: _samples(run))


def _samples(run: Run) -> pd.DataFrame:
    rows = []
    heads = headlines(run)
    for name, fig in figures.HEADLINES.items():
        res = fig.resolution(run.meta.gpu)
        for rep, value in zip(heads["repeat"], heads[name]):
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                rows.append((run.id, rep, name, "headline", "", float(value), fig.unit, fig.higher_is_better, res))
    per_rep = functions.per_repeat(functions_per_token(run))
    # A leaf range's self time is its inclusive time: one row for it, not two (and one test fewer).
    leaf = per_rep.groupby("name")[["host_ns", "self_ns"]].apply(lambda g: bool((g["host_ns"] == g["self_ns"]).all()))
    per_rep.loc[per_rep["name"].map(leaf).astype(bool), "self_ns"] = np.nan
    for metric, label in figures.FUNCTION_METRICS.items():
        res = figures.function_resolution(metric)
        sub = per_rep[["repeat", "name", metric]].dropna()
        for rep, name, value in sub.itertuples(index=False):
            rows.append((run.id, rep, name, "function", label, float(value) / 1e3, figures.FUNCTION_UNIT, False, res))
    return pd.DataFrame(rows, columns=SAMPLE_COLUMNS)
