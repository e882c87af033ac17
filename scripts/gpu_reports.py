"""GPU task for the committed reviews (issues 4, 5, 13), in one device call: each seed switch alone
against the graph-path baseline (where llama.cpp has PR 17795's sync pattern), and optimized
against it, each as ``perfreview ab --aa`` runs it: rounds of A, B and A' in a random order,
sequential looks at 10, 20, 40 ... rounds until decode throughput is decided or the budget would
be passed; then the review (markdown, JSON, timeline, deltas and latency pictures).
Works on the CPU too (--device cpu --preset tiny) for a dry run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perfreview.flows import ab, review  # noqa: E402
from perfreview.report import console, render  # noqa: E402
from perfreview.trace import runs  # noqa: E402
from runner.spec import RunSpec  # noqa: E402

REVIEWS = [  # (file stem, side B on top of the base)
    ("async_copies-vs-baseline", "async_copies=on"),
    ("qkv_streams-vs-baseline", "qkv_streams=on"),
    ("optimized-vs-baseline", None),
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="1b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--base", default="baseline,cuda_graph=on", help="side A")
    ap.add_argument("--budget", type=float, default=100.0, help="seconds of measuring per review")
    ap.add_argument("--cpu", type=int, help="pin the measuring process to this CPU")
    ap.add_argument("--only", default="", help="comma-separated stems to run")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    runs_dir, rep_dir = args.out / "runs", args.out / "reports"
    rep_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    summary = {}
    for stem, switch in REVIEWS:
        if args.only and stem not in args.only.split(","):
            continue
        b = f"{args.base},{switch}" if switch else "config=optimized"
        spec = RunSpec(preset=args.preset, tokens=args.tokens, repeats=10, device=args.device,
                       prompt_tokens=args.prompt_tokens, warmup_tokens=16, cpu=args.cpu)
        sides = ab.run_sides(args.base, b, spec, runs_dir, aa=True, sequential=True, budget_s=args.budget,
                             progress=lambda look: print(f"  {stem}: {console.look_line(look)}", flush=True))
        a_runs, b_runs, aa_runs = ([runs.read_run(p) for p in paths] for paths in sides.paths)
        payload = review.review(a_runs, b_runs, rep_dir / f"{stem}.md", aa_pair=(a_runs, aa_runs),
                                alpha_primary=sides.alpha_primary, look=sides.look,
                                stopped_because=sides.stopped_because)
        summary[stem] = {"b": b, "verdict": payload["verdict"], "design": payload["design"],
                         "warnings": payload["warnings"],
                         "headlines": [r for r in payload["rows"] if r["kind"] == "headline"],
                         "negative_control": payload["negative_control"]}
        print(f"[{time.time() - t0:.0f}s] {stem}: {payload['verdict']} ({sides.stopped_because})", flush=True)
    (rep_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print("| review | verdict | rounds | tokens/s B vs A [interval] | GPU compute per token | A vs A' |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for stem, s in summary.items():
        heads = {r["name"]: r for r in s["headlines"]}

        def ci(name: str) -> str:
            r = heads.get(name)
            return f"{render.pct_ci(r['ratio'], r['ci_low'], r['ci_high'])} {r['verdict']}" if r else "n/a"

        control = s["negative_control"]["primary"]
        print(f"| {stem} | {s['verdict']} | {heads['tokens_per_s']['n']} | {ci('tokens_per_s')} | "
              f"{ci('median_gpu_compute_ms')} | {control['verdict'] if control else 'n/a'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
