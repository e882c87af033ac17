"""A stored run's derived tables, each computed once per run (see ``Run.derived``)."""

from __future__ import annotations

import pandas as pd

from perfreview.analysis import functions, gaps, headline, tokens
from perfreview.trace.runs import Run


def token_table(run: Run) -> pd.DataFrame:
    return run.derived("tokens", lambda: tokens.token_table(run.events))


def sync_gaps(run: Run) -> pd.DataFrame:
    return run.derived("gaps", lambda: gaps.sync_gaps(run.events, token_table(run)))


def headlines(run: Run) -> pd.DataFrame:
    return run.derived("headline", lambda: headline.per_repeat(run.events, run.meta, token_table(run),
                                                               sync_gaps(run)))


def functions_per_token(run: Run) -> pd.DataFrame:
    return run.derived("functions", lambda: functions.per_token(run.events))
