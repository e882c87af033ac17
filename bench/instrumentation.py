"""GPU task (issue 12), one device call: what each timing level costs in decode tokens/s.

For each config asked (default: the eager baseline and the graph-path optimized config; 1b, tg32
after a 32-token prompt):
``--timing tokens`` (NVTX ranges and three CUDA events a token) against ``--timing functions``
(an event pair around every device function as well, in one token of every 32: the default), on
the eager path also against ``--timing functions --function-every 1`` (every token, as before the
sampling), and ``--trace cupti`` against the same
config untraced (the runner's twin, in the same rounds). Every variant runs once per round in a
random order; the cost is the paired Hodges-Lehmann ratio over rounds with its 95% interval
(perfreview.compare.stats, the review's rule). Writes instrumentation.json/.md under --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.outputs import save  # noqa: E402
from perfreview.compare import stats  # noqa: E402
from perfreview.trace.meta import git_info  # noqa: E402
from runner import config as cfg  # noqa: E402
from runner.loop import Interleaved, Session  # noqa: E402
from runner.spec import RunSpec  # noqa: E402


def tokens_per_s(rounds: Interleaved, untraced: bool = False) -> np.ndarray:
    """Per round: decode tokens / decode span of the (one) side, or of its untraced twin."""
    side = next(s for s in rounds.sides if s.twin_of is None)
    spans = [r.untraced_decode_ns if untraced else r.decode_ns for r in side.repeats]
    return rounds.spec.tokens / (np.asarray(spans, float) / 1e9)


def sampled_token_cost(rounds: Interleaved, every: int) -> np.ndarray:
    """Per repeat of a ``--timing functions`` side that samples one token of ``every``: what its
    sampled tokens' event pairs cost the repeat, read off its own tokens: (median host latency of the
    sampled decode tokens - median of the others) x the sampled count / the decode span. The tokens
    of one repeat ran next to each other, so host stalls that swamp the between-run comparison on a
    host-bound loop mostly cancel here."""
    side = next(s for s in rounds.sides if s.twin_of is None)
    by_repeat: dict[int, list[tuple[int, int]]] = {}
    for r in side.rows:
        if r["kind"] == "token" and r["phase"] == "decode" and r["source"] == "host":
            by_repeat.setdefault(r["repeat"], []).append((r["token"], r["end_ns"] - r["start_ns"]))
    out = []
    for toks in by_repeat.values():
        lat = np.array([ns for _, ns in toks], float)
        sampled = np.array([t % every == 0 for t, _ in toks])
        if sampled.any() and (~sampled).any():
            extra = (np.median(lat[sampled]) - np.median(lat[~sampled])) * sampled.sum()
            out.append(extra / lat.sum())
    return np.asarray(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="1b")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--configs", default="baseline;optimized",
                    help="configs separated by ';', each as `ab` takes it, e.g. 'optimized;baseline,own_kernels=on' "
                         "(the eager baseline is slow)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the script")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    session = Session(args.preset, args.device, seed=0)
    try:
        import cupti  # noqa: F401

        cupti_ok = True
    except ImportError:
        cupti_ok = False
    configs = [c.strip() for c in args.configs.split(";") if c.strip()]
    variants: dict[tuple[str, str], Interleaved] = {}
    for config in configs:
        # CUPTI on the eager baseline (1285 kernels a token) costs ~50% and takes minutes: graph path only
        graph = bool(cfg.effective(cfg.parse_side(config), gpu=True)["cuda_graph"])
        levels = ("tokens", "functions", *(("cupti",) if cupti_ok and graph else ("functions_every_token",)))
        for level in levels:
            spec = RunSpec(preset=args.preset, tokens=args.tokens, repeats=1, device=args.device, prompt_tokens=32,
                           warmup_tokens=16, timing="tokens" if level == "cupti" else level.split("_")[0],
                           trace="cupti" if level == "cupti" else "",
                           function_every=1 if level == "functions_every_token" else RunSpec.function_every)
            variants[(config, level)] = Interleaved(spec, [cfg.parse_side(config)], session)
    order = np.random.default_rng(0)
    keys = list(variants)
    for r in range(args.rounds):
        for i in order.permutation(len(keys)):
            variants[keys[int(i)]].run(1)
        print(f"round {r + 1}/{args.rounds}", flush=True)
    rows = []
    for config in configs:
        base = tokens_per_s(variants[(config, "tokens")])
        for level in ("functions", "functions_every_token", "cupti"):
            if (config, level) not in variants:
                continue
            v = variants[(config, level)]
            with_it = tokens_per_s(v)
            # cupti: against its own untraced twin (same rounds, same pipeline settings)
            without = tokens_per_s(v, untraced=True) if level == "cupti" else base
            est = stats.paired(without, with_it, 0.05)
            rows.append({"config": config, "level": level, "tokens_per_s_without": float(np.median(without)),
                         "tokens_per_s_with": float(np.median(with_it)), "cost_pct": (1 - est.ratio) * 100,
                         "ci95_pct": [(1 - est.ci_high) * 100, (1 - est.ci_low) * 100], "rounds": est.n,
                         "method": est.method, "function_every": v.spec.function_every})
        every = variants[(config, "functions")].spec.function_every
        graph = bool(cfg.effective(cfg.parse_side(config), gpu=True)["cuda_graph"])
        cost = sampled_token_cost(variants[(config, "functions")], every) if every > 1 and not graph else []
        if len(cost):  # as ratios so the one statistics module gives the interval: t/s without / with
            est = stats.paired(np.ones(len(cost)), 1 / (1 - cost), 0.05)
            rows.append({"config": config, "level": "functions_sampled_tokens", "tokens_per_s_without": None,
                         "tokens_per_s_with": None, "cost_pct": (1 - 1 / est.ratio) * 100,
                         "ci95_pct": [(1 - 1 / est.ci_low) * 100, (1 - 1 / est.ci_high) * 100], "rounds": est.n,
                         "method": est.method, "function_every": every})
    dev = session.device.info()
    report = {"device": dev, "git": git_info(), "preset": args.preset, "tokens": args.tokens, "rows": rows}
    save(args.out, "instrumentation", {**report, "rounds": args.rounds})
    return 0


if __name__ == "__main__":
    sys.exit(main())
