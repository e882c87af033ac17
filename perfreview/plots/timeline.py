"""Timeline picture: the host thread and each GPU stream over a few tokens, or zoomed on the gap
between two tokens (as the seed PRs' Nsight screenshots are); before/after stacked on one scale."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from perfreview.plots.style import save, short  # noqa: E402  (sets the backend and plain-text labels first)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from perfreview.analysis import gaps  # noqa: E402
from perfreview.analysis import samples  # noqa: E402
from perfreview.trace.runs import Run  # noqa: E402

SPECIAL_COLORS = {"sync": "#d62728", "memcpy_h2d": "#2ca02c", "memcpy_d2h": "#98df8a",
                  "input_copy": "#c7e9c0", "output_copy": "#c7e9c0", "inject_delay": "#8c564b"}
FRAME = "#e8e8e8"
UNCUT_SPAN_NS = 5_000_000  # what a trace without tokens shows: its first 5 ms


# tab20 without its greens, reds and greys: those mean copies, syncs and idle here.
_PALETTE = [plt.get_cmap("tab20")(i) for i in (0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 16, 17, 18, 19)]


def _colors(names: list[str]) -> dict[str, str]:
    """Syncs red and copies green whoever named them (our ranges, CUDA API calls, nsys copies)."""
    unique = pd.Series(sorted(set(names) - {"token"}), dtype=str)
    sync, copy = gaps.is_sync(unique), gaps.is_copy(unique) | unique.str.startswith("memcpy").to_numpy()
    out = {n: SPECIAL_COLORS["sync"] for n in unique[sync]}
    out.update({n: SPECIAL_COLORS["memcpy_h2d"] for n in unique[copy & ~sync]})
    others = [n for n in unique[~(sync | copy)] if n not in SPECIAL_COLORS]
    out.update({n: matplotlib.colors.to_hex(_PALETTE[i % len(_PALETTE)]) for i, n in enumerate(others)})
    out.update(SPECIAL_COLORS)
    return out


def typical_boundary(run: Run) -> tuple[int, int] | None:
    """(repeat, token) of the boundary to show by default: in the repeat whose median gap is the
    median over repeats, the boundary whose gap is nearest that median: the picture shows the same
    gap the table reports, not an accident of one boundary."""
    g = samples.sync_gaps(run)
    if g.empty:
        return None
    per_rep = g.groupby("repeat")["gap_ns"].median().sort_values(kind="stable")
    rep = int(per_rep.index[(len(per_rep) - 1) // 2])
    mine = g[g["repeat"] == rep]
    target = float(g["gap_ns"].median())
    row = mine.iloc[int(np.argmin(np.abs(mine["gap_ns"].to_numpy() - target)))]
    return rep, int(row["token"])


def window(run: Run, tokens: tuple[int, int] | None, repeat: int | None) -> tuple[int, int, int, list, str]:
    """(repeat, t0_ns, t1_ns, gaps, why) for decode tokens [a, b] (relative to the first decode token),
    or, with ``tokens`` None, zoomed on the typical boundary (:func:`typical_boundary`)."""
    toks = samples.token_table(run)
    dec = toks[toks["phase"] == "decode"]
    reps = sorted(dec["repeat"].unique())
    if not reps:  # a trace imported without a token marker: its first milliseconds
        if run.events.empty:
            raise ValueError(f"{run.path}: no events to draw")
        rep = int(run.events["repeat"].mode().iloc[0])
        t0 = int(run.events["start_ns"].min())
        t1 = min(int(run.events["end_ns"].max()), t0 + UNCUT_SPAN_NS)
        return rep, t0, t1, [], f"the first {(t1 - t0) / 1e3:.0f} µs (no tokens: import with --token-marker)"
    typical = typical_boundary(run) if tokens is None else None
    rep = repeat if repeat is not None else (typical[0] if typical else reps[len(reps) // 2])
    if rep not in reps:
        raise ValueError(f"{run.path}: no repeat {rep} (has {reps[0]}..{reps[-1]})")
    d = dec[dec["repeat"] == rep].sort_values("token").reset_index(drop=True)
    gaps = [(int(d["compute_end"][i - 1]), int(d["compute_start"][i])) for i in range(1, len(d))
            if np.isfinite(d["compute_end"][i - 1]) and np.isfinite(d["compute_start"][i])]
    if tokens is None:
        if not gaps:  # no boundary with both windows known (tokens without GPU work): the first tokens
            lo, hi = int(d["host_start"][0]), int(d["host_end"][min(1, len(d) - 1)])
            return rep, lo, hi, gaps, "first tokens (no token boundary with known compute windows)"
        i = 4
        why = "boundary before the 5th decode token"
        if typical and typical[0] == rep:
            i = int(np.flatnonzero(d["token"].to_numpy() == typical[1])[0]) - 1
            why = "the boundary nearest the median gap, in the repeat with the median gap"
        lo, hi = gaps[min(max(i, 0), len(gaps) - 1)]
        pad = max(hi - lo, 20_000)
        return rep, lo - pad, hi + pad, gaps, why
    a, b = tokens
    if not (0 <= a <= b < len(d)):
        raise ValueError(f"{run.path}: tokens {a}:{b} outside the {len(d)} decode tokens")
    return rep, int(d["host_start"][a]), int(max(d["host_end"][b], d["compute_end"][b])), gaps, f"tokens {a}:{b}"


def _in_window(ev: pd.DataFrame, rep: int, t0: int, t1: int) -> pd.DataFrame:
    return ev[(ev["repeat"] == rep) & (ev["end_ns"] >= t0) & (ev["start_ns"] <= t1)]


def _tracks(ev: pd.DataFrame) -> list[str]:
    tracks = sorted(ev["track"].astype(str).unique(), key=lambda t: (not t.startswith("host"), t))
    return tracks


def draw(ax: plt.Axes, run: Run, rep: int, t0: int, t1: int, token_gaps: list, span_us: float,
         colors: dict[str, str], title: str) -> None:
    ev = run.events
    ev = _in_window(ev, rep, t0, t1)
    ev = ev.sort_values(["depth", "start_ns"], kind="stable")  # parents under their children
    tracks = _tracks(ev)
    for y, track in enumerate(tracks):
        rows = ev[ev["track"].astype(str) == track]
        for depth_rows, height in ((rows[rows["name"] == "token"], 0.9), (rows[rows["name"] != "token"], 0.6)):
            for name, s, e, depth in zip(depth_rows["name"].astype(str), depth_rows["start_ns"],
                                         depth_rows["end_ns"], depth_rows["depth"]):
                x0 = (max(s, t0) - t0) / 1e3
                w = max((min(e, t1) - max(s, t0)) / 1e3, span_us * 1e-4)
                shrink = 0.12 * max(int(depth) - 1, 0)
                ax.broken_barh([(x0, w)], (y - height / 2 + shrink / 2, height - shrink),
                               facecolors=FRAME if name == "token" else colors.get(name, "#7f7f7f"),
                               edgecolor="none")
    for lo, hi in token_gaps:
        if hi > t0 and lo < t1 and hi > lo:
            x0, x1 = (max(lo, t0) - t0) / 1e3, (min(hi, t1) - t0) / 1e3
            ax.axvspan(x0, x1, color="#ffdd57", alpha=0.35, zorder=0)
            ax.annotate(f"gap {(hi - lo) / 1e3:.1f} µs", ((x0 + x1) / 2, len(tracks) - 0.45), ha="center",
                        va="bottom", fontsize=8, color="#7a5c00")
    ax.set_yticks(range(len(tracks)))
    ax.set_yticklabels(tracks, fontsize=8)
    ax.set_ylim(-0.6, len(tracks) + 0.1)
    ax.invert_yaxis()
    ax.set_xlim(0, span_us)
    ax.set_title(title, fontsize=10 if len(title) <= 120 else 8.5, loc="left")  # 12 in fit ~120 chars at 10 pt
    ax.grid(axis="x", alpha=0.3)


def timeline(runs: list[Run], out: Path, tokens: tuple[int, int] | None = None, repeat: int | None = None,
             size: tuple[float, float] | None = None, dpi: int = 110) -> Path:
    """One panel per run, stacked, on the same time scale (µs from each panel's window start)."""
    wins = [window(r, tokens, repeat) for r in runs]
    span_us = max((t1 - t0) / 1e3 for _, t0, t1, _, _ in wins)
    # colours for the names drawn (not every name of the run): fewer names, no palette wrapping over
    drawn = {str(n) for r, w in zip(runs, wins) for n in _in_window(r.events, *w[:3])["name"].unique()}
    colors = _colors(sorted(drawn))
    rows = [len(_tracks(_in_window(r.events, *w[:3]))) for r, w in zip(runs, wins)]
    figsize = size or (12.0, 1.2 + sum(0.45 * n + 0.6 for n in rows))
    fig, axes = plt.subplots(len(runs), 1, figsize=figsize, sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [max(n, 1) for n in rows]})
    for ax, run, (rep, t0, t1, token_gaps, why) in zip(axes[:, 0], runs, wins):
        m = run.meta
        title = short(f"{m.config_label}  ·  {m.preset}  ·  {m.device.get('name')}  ·  repeat {rep}: {why}", 160)
        draw(ax, run, rep, t0, t1, token_gaps, span_us, colors, title)
    axes[-1, 0].set_xlabel("time (µs)")
    used = sorted(drawn - {"token"})
    handles = [Patch(color=colors.get(n, "#7f7f7f"), label=short(n)) for n in used]
    if any(w[3] for w in wins):  # token boundaries drawn: say what the shading is
        handles.append(Patch(color="#ffdd57", alpha=0.35, label="gap between tokens' compute"))
    ncol = min(6, len(handles))
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    legend_rows = 1 + (len(handles) - 1) // ncol
    fig.tight_layout(rect=(0, min(0.5, (0.15 + 0.16 * legend_rows) / fig.get_figheight()), 1, 1))  # inches
    save(fig, out, dpi)
    plt.close(fig)
    return Path(out)
