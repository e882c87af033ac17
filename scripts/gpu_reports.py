"""GPU task for the review reports (issues 4 and 5), in one device call:

one interleaved measurement (A B C D E A B C D E ...) of baseline, a second baseline (the A/A
pair), each seed switch alone and optimized; then, through the review flow that `perfreview compare`
runs, the reviews: (1) baseline vs optimized, (2) each seed switch alone vs baseline, with θ
raised by the A/A pair, and (3) the A/A comparison itself, each with its timeline, delta and
latency pictures. Works on the CPU too (--device cpu --preset tiny) for a dry run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perfreview.flows import measure, review  # noqa: E402
from perfreview.report import render  # noqa: E402
from perfreview.trace import runs  # noqa: E402
from runner import config as cfg  # noqa: E402
from runner.spec import RunSpec  # noqa: E402

def sides(base: str) -> dict[str, cfg.Config]:
    """The measured sides on top of ``base`` (``baseline``, or e.g. ``baseline,cuda_graph=on`` to
    measure the seed switches where llama.cpp has them: on a graph-replayed token)."""
    b = cfg.parse_side(base)
    return {
        "baseline": b,
        "baseline_aa": b,
        "async_copies": b.with_switches(async_copies="on"),
        "qkv_streams": b.with_switches(qkv_streams="on"),
        "optimized": cfg.resolve("optimized"),
    }
REVIEWS = [  # (file stem, A, B, use the A/A pair for θ)
    ("baseline-vs-optimized", "baseline", "optimized", True),
    ("async_copies-vs-baseline", "baseline", "async_copies", True),
    ("qkv_streams-vs-baseline", "baseline", "qkv_streams", True),
    ("aa-baseline-vs-baseline", "baseline", "baseline_aa", False),
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="1b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--base", default="baseline", help="side A's config, e.g. baseline,cuda_graph=on")
    ap.add_argument("--prefix", default="", help="prefix of the report file names")
    args = ap.parse_args()
    SIDES = sides(args.base)
    runs_dir, rep_dir = args.out / "runs", args.out / "reports"
    rep_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    spec = RunSpec(preset=args.preset, tokens=args.tokens, repeats=args.repeats, device=args.device,
                   timing="tokens", build="")
    stored = measure.measure(spec, list(SIDES.values()), runs_dir)
    paths = dict(zip(SIDES, (s.path for s in stored)))
    print(f"[{time.time() - t0:.0f}s] measured {len(stored)} sides x {args.repeats} repeats", flush=True)
    summary = {"runs": {k: p.name for k, p in paths.items()}, "reviews": {}}
    for stem, a, b, use_aa in REVIEWS:
        md = rep_dir / f"{args.prefix}{stem}.md"
        side = {k: [runs.read_run(p)] for k, p in paths.items()}
        aa_pair = (side["baseline"], side["baseline_aa"]) if use_aa else None
        payload = review.review(side[a], side[b], md, aa_pair=aa_pair)
        heads = {r["name"]: r for r in payload.get("rows", []) if r["kind"] == "headline"}
        summary["reviews"][stem] = {"verdict": payload.get("verdict"),
                                    "headlines": heads,
                                    "findings": [r for r in payload.get("rows", [])
                                                 if r["verdict"] in ("improved", "regressed")]}
        print(f"[{time.time() - t0:.0f}s] {stem}: written", flush=True)
    (rep_dir / f"{args.prefix}summary.json").write_text(json.dumps(summary, indent=1, default=str))
    for stem, rev in summary["reviews"].items():
        print(f"\n== {stem} (verdict: {rev['verdict']})")
        for name, r in rev["headlines"].items():
            ci = render.pct_ci(r["ratio"], r["ci_low"], r["ci_high"]) if r["ci_low"] is not None else "n/a"
            print(f"  {name}: {r['a']:.4g} -> {r['b']:.4g}  {ci}  q={r['q']:.2g}  {r['verdict']}")
        print(f"  improved/regressed rows: {len(rev['findings'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
