"""GPU task (issue 13, "a quieter runner"), one device call: where the per-repeat noise of the 1b
graph path comes from. Measures, on one session and one config:

1. the floor: the captured token graph replayed back to back (no host loop), timed by events;
2. the runner's decode loop under each host variant: the driver's wait or a spin on an event at
   each synchronize, unpinned or pinned to one CPU (variants alternate in rounds);

and prints the per-repeat CV of tokens/s (host wall) and of GPU time per token (events) for each,
writing noise.json with the variant to use (the lowest tokens/s CV).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perfreview.analysis import samples  # noqa: E402
from perfreview.flows.ab import in_memory  # noqa: E402
from perfreview.trace.meta import git_info  # noqa: E402
from runner import config as cfg  # noqa: E402
from runner.affinity import pinned  # noqa: E402
from runner.loop import Interleaved, Session  # noqa: E402
from runner.spec import RunSpec  # noqa: E402


def cv(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1) / np.mean(x))


def replay_floor(session: Session, config: cfg.Config, tokens: int, repeats: int) -> list[float]:
    """Per-repeat time (s) of ``tokens`` back-to-back replays of the captured token graph (each
    repeat starts from position 0: under run_ahead the replays move the position on themselves)."""
    pipe, _ = session.pipeline(config, "tokens")
    return [replay_s(session, pipe, tokens) for _ in range(repeats + 2)][2:]


def replay_s(session: Session, pipe, tokens: int) -> float:
    """Seconds for ``tokens`` back-to-back replays of ``pipe``'s token graph from position 0 (the
    first call captures the graph), timed by events."""
    cp, s = session.device.cp, pipe.main
    pipe.reset()
    pipe.step(1, 0)  # inputs of position 0
    e0, e1 = cp.cuda.Event(), cp.cuda.Event()
    e0.record(s)
    for _ in range(tokens):
        pipe.graph.launch(s)
    e1.record(s)
    e1.synchronize()
    return cp.cuda.get_elapsed_time(e0, e1) / 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="1b", help="model preset (default 1b)")
    ap.add_argument("--config", action="append",
                    help="a config whose noise is measured (repeat the flag for several: their repeats "
                         "alternate in the same rounds; default baseline,cuda_graph=on)")
    ap.add_argument("--tokens", type=int, default=128, help="decode tokens per repeat")
    ap.add_argument("--repeats", type=int, default=30, help="repeats per variant (rounds)")
    ap.add_argument("--out", type=Path, required=True, help="folder for noise.json")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    configs = [cfg.parse_side(c) for c in (args.config or ["baseline,cuda_graph=on"])]
    session = Session(args.preset, "cuda", seed=0)
    cpu = sorted(os.sched_getaffinity(0))[-1]
    rows = []
    for config in configs:
        floor = replay_floor(session, config, args.tokens, args.repeats)
        per_token_ms, floor_cv = float(np.median(floor) / args.tokens * 1e3), cv(np.asarray(floor))
        rows.append({"config": config.label, "variant": "graph replays back to back (floor)", "host_wait": "-",
                     "pinned_cpu": None, "tokens_per_s_cv": floor_cv, "gpu_token_ms_cv": floor_cv,
                     "gpu_compute_ms_cv": floor_cv, "tokens_per_s_median": float(args.tokens / np.median(floor)),
                     "gpu_token_ms_median": per_token_ms, "gpu_compute_ms_median": per_token_ms})
    variants = [(config, wait, pin) for config in configs
                for wait, pin in (("block", None), ("spin", None), ("block", cpu), ("spin", cpu))]
    spec = RunSpec(preset=args.preset, tokens=args.tokens, repeats=1, device="cuda", prompt_tokens=32,
                   warmup_tokens=16)
    runners = [Interleaved(spec, [config], session) for config, _, _ in variants]
    order = np.random.default_rng(0)
    t0 = time.time()
    for _ in range(args.repeats):  # rounds: every variant once, in a random order
        for i in order.permutation(len(variants)):
            _, wait, pin = variants[int(i)]
            session.device.spin_wait = wait == "spin"  # the device's wait mode, switched between repeats
            with pinned(pin):
                runners[int(i)].run(1)
    session.device.spin_wait = False
    for (config, wait, pin), rounds in zip(variants, runners):
        run = in_memory(rounds)[0]
        heads = samples.headlines(run)
        tps, gpu = heads["tokens_per_s"].to_numpy(float), heads["median_gpu_token_ms"].to_numpy(float)
        comp = heads["median_gpu_compute_ms"].to_numpy(float)
        where = f"pinned to CPU {pin}" if pin is not None else "unpinned"
        rows.append({"config": config.label, "variant": f"decode loop, wait={wait}, {where}",
                     "host_wait": wait, "pinned_cpu": pin, "tokens_per_s_cv": cv(tps), "gpu_token_ms_cv": cv(gpu),
                     "tokens_per_s_median": float(np.median(tps)), "gpu_token_ms_median": float(np.median(gpu)),
                     "gpu_compute_ms_median": float(np.median(comp)), "gpu_compute_ms_cv": cv(comp),
                     "tokens_per_s": tps.tolist()})
    best = min((r for r in rows if r["host_wait"] != "-"), key=lambda r: r["tokens_per_s_cv"])
    report = {"device": session.device.info(), "git": git_info(), "preset": args.preset,
              "configs": [c.label for c in configs],
              "tokens": args.tokens, "repeats": args.repeats, "seconds": time.time() - t0, "rows": rows,
              "best": {"config": best["config"], "host_wait": best["host_wait"], "pinned_cpu": best["pinned_cpu"]}}
    (args.out / "noise.json").write_text(json.dumps(report, indent=1, default=str))
    dev = report["device"]
    commit = report["git"].get("commit")
    print(f"{dev['name']}  driver {dev.get('driver')}  CUDA {dev['cuda_runtime']}  commit {commit}")
    print(f"{args.preset}, tg{args.tokens}, {args.repeats} repeats per variant (rounds)")
    print("| config | variant | t/s median | CV t/s | GPU ms/token | CV | GPU compute ms/token | CV |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['config']} | {r['variant']} | {r['tokens_per_s_median']:.1f} | {r['tokens_per_s_cv']:.3%} | "
              f"{r['gpu_token_ms_median']:.4f} | {r['gpu_token_ms_cv']:.3%} | {r['gpu_compute_ms_median']:.4f} | "
              f"{r['gpu_compute_ms_cv']:.3%} |")
    print(f"best: {report['best']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
