"""How small a change can perfreview decide on this GPU, and how often is it wrong? (issue 13)

``record`` (one device call): one long interleaved sequence of rounds on the 1b graph path; each
round runs, in a random order, A, A' (the same config again), A slowed by 1% and A slowed by 0.5%
(``inject_slowdown_pct``, calibrated against the token time measured just before). Every figure of
every repeat is saved (rounds.json).

``analyse`` (CPU, from rounds.json): the review's sequential rule (perfreview.compare.sequential:
looks at 10, 20, 40 ... rounds, Pocock α', budget 300 s) applied to
- live trials: consecutive, disjoint stretches of the recorded rounds, each trial starting where the
  last one stopped (what ``perfreview ab`` would have seen, one trial after another);
- replay trials: rounds drawn with replacement from the whole recording (thousands of trials from
  the real per-repeat values); for A/A, A and A' are also swapped at random in each drawn round, so
  the replayed world has no difference at all (the recording's own small A-A' difference would
  otherwise become a "true" effect of the bootstrap world).
Cases: ``aa`` (A vs A'), ``slow_1pct`` (A vs A-1%), ``slow_0.5pct``; for each, the verdicts with
binomial intervals, the rounds and GPU-seconds per trial, and the measured size of the slowdown.
Writes sensitivity.json and sensitivity.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats as sps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.outputs import save  # noqa: E402
from perfreview.compare import stats  # noqa: E402
from perfreview.compare.sequential import review  # noqa: E402

PRIMARY = "tokens_per_s|headline|"
GPU_PRIMARY = "median_gpu_compute_ms|headline|"  # the device's own part of the token (CUDA events)
CASES = {"aa": "A2", "slow_1pct": "S1", "slow_0.5pct": "S05"}
BUDGET_S = 300.0


def record(args: argparse.Namespace) -> int:
    from perfreview.analysis import samples
    from perfreview.flows.ab import in_memory
    from perfreview.trace.meta import git_info
    from runner import config as cfg
    from runner.loop import Interleaved
    from runner.spec import RunSpec

    wait, cpu = args.host_wait, args.cpu
    if args.noise_json and Path(args.noise_json).is_file():  # the quietest variant bench/noise.py found
        best = json.loads(Path(args.noise_json).read_text())["best"]
        wait, cpu = best["host_wait"], best["pinned_cpu"]
    base = cfg.parse_side(args.config)
    sides = {"A": base, "A2": base, "S1": base.with_switches(inject_slowdown_pct="1"),
             "S05": base.with_switches(inject_slowdown_pct="0.5")}
    spec = RunSpec(preset=args.preset, tokens=args.tokens, repeats=1, device=args.device, prompt_tokens=args.prompt,
                   warmup_tokens=16, cpu=cpu, host_wait=wait, order_seed=args.order_seed,
                   fresh_every=args.fresh_every)
    rounds = Interleaved(spec, list(sides.values()))
    t0 = time.time()
    while time.time() - t0 < args.seconds and rounds.rounds < args.max_rounds:
        rounds.run(10)
        print(f"[{time.time() - t0:.0f}s] {rounds.rounds} rounds", flush=True)
    runs = dict(zip(sides, in_memory(rounds)))
    out = {"device": rounds.session.device.info(), "git": git_info(), "preset": args.preset, "config": base.label,
           "tokens": args.tokens, "host_wait": wait, "pinned_cpu": cpu, "rounds": rounds.rounds,
           "fresh_every": args.fresh_every, "sides": {}}
    for name, run in runs.items():
        s = samples.samples(run)
        table = s.pivot_table(index="repeat", columns=["name", "kind", "metric"], values="value")
        out["sides"][name] = {
            "label": run.meta.config_label, "injected": run.meta.injected,
            "wall_s": [r.wall_ns / 1e9 for r in run.meta.per_repeat],
            "figures": {"|".join(map(str, k)): table[k].tolist() for k in table.columns},
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rounds.json").write_text(json.dumps(out, default=str))
    print(f"recorded {rounds.rounds} rounds in {time.time() - t0:.0f} s -> {args.out / 'rounds.json'}")
    return 0


def arrays(side: dict, keys: list[str], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.asarray(side["figures"][k], float)[idx] for k in keys}


def usable_keys(a: dict, b: dict) -> list[str]:
    """Figures both sides have in every round, positive (ratios)."""
    keys = []
    for k in a["figures"]:
        if k not in b["figures"]:
            continue
        va, vb = np.asarray(a["figures"][k], float), np.asarray(b["figures"][k], float)
        if np.all(np.isfinite(va)) and np.all(np.isfinite(vb)) and np.all(va > 0) and np.all(vb > 0):
            keys.append(k)
    return keys


def binom_ci(k: int, n: int) -> list[float]:
    if n == 0:
        return [float("nan"), float("nan")]
    ci = sps.binomtest(k, n).proportion_ci(0.95, method="exact")
    return [float(ci.low), float(ci.high)]


def summarise(outcomes: list, seconds_per_round: float) -> dict:
    n = len(outcomes)
    count = {v: sum(o.verdict == v for o in outcomes) for v in
             (stats.REGRESSED, stats.IMPROVED, stats.NO_CHANGE, stats.INCONCLUSIVE)}
    anyd = sum(o.any_decided for o in outcomes)
    rounds = [o.rounds for o in outcomes]
    return {"trials": n, "regressed": count[stats.REGRESSED], "improved": count[stats.IMPROVED],
            "no_change": count[stats.NO_CHANGE], "inconclusive": count[stats.INCONCLUSIVE],
            "any_verdict_trials": anyd, "regressed_rate_ci": binom_ci(count[stats.REGRESSED], n),
            "any_verdict_rate_ci": binom_ci(anyd, n),
            "rounds_median": float(np.median(rounds)) if rounds else None,
            "gpu_s_median": float(np.median(rounds) * seconds_per_round) if rounds else None,
            "gpu_s_max": float(np.max(rounds) * seconds_per_round) if rounds else None}


def higher_is_better(keys: list[str]) -> dict[str, bool]:
    from perfreview.trace import figures

    out = {}
    for k in keys:
        name, kind, _ = k.split("|")
        out[k] = figures.HEADLINES[name].higher_is_better if kind == "headline" and name in figures.HEADLINES else False
    return out


def merged(paths: list[str]) -> dict:
    """Several recordings of the same setup as one: every side's per-round values concatenated in
    recording order (live trials stay consecutive stretches; a stretch may span two recordings)."""
    recs = [json.loads(Path(p).read_text()) for p in paths]
    out = recs[0]
    for rec in recs[1:]:
        same = ("preset", "config", "tokens", "fresh_every")
        if any(rec.get(k) != out.get(k) for k in same):
            raise SystemExit(f"recordings differ in {[k for k in same if rec.get(k) != out.get(k)]}")
        out["rounds"] += rec["rounds"]
        for name, side in rec["sides"].items():
            into = out["sides"][name]
            into["wall_s"] += side["wall_s"]
            for k, v in side["figures"].items():
                into["figures"][k] = into["figures"].get(k, []) + v
        out.setdefault("recordings", [recs[0]["git"].get("commit")]).append(rec["git"].get("commit"))
    return out


def analyse(args: argparse.Namespace) -> int:
    rec = merged(args.rounds)
    a = rec["sides"]["A"]
    n_rounds = rec["rounds"]
    rng = np.random.default_rng(0)
    result = {"device": rec["device"], "git": rec["git"], "preset": rec["preset"], "config": rec["config"],
              "tokens": rec["tokens"], "host_wait": rec["host_wait"], "pinned_cpu": rec["pinned_cpu"],
              "rounds_recorded": n_rounds, "budget_s": BUDGET_S, "threshold": stats.DEFAULT_THRESHOLD,
              "fresh_every": rec.get("fresh_every", 0), "recordings": rec.get("recordings")}
    wall = {k: float(np.median(v["wall_s"])) for k, v in rec["sides"].items()}
    a_tps = np.asarray(a["figures"][PRIMARY], float)
    result["per_repeat_cv_tokens_per_s"] = float(np.std(a_tps, ddof=1) / np.mean(a_tps))
    for key, name in (("median_gpu_token_ms|headline|", "gpu_token_ms"), (GPU_PRIMARY, "gpu_compute_ms")):
        if key in a["figures"]:
            g = np.asarray(a["figures"][key], float)
            result[f"per_repeat_cv_{name}"] = float(np.std(g, ddof=1) / np.mean(g))
    for prefix, primary in (("", PRIMARY), ("gpu_primary_", GPU_PRIMARY)):
        if primary in a["figures"]:
            _cases(result, rec, prefix, primary, args, rng, wall)
    cases = [f"{p}{r}{c}" for p in ("", "gpu_primary_") for r in ("", "replay_") for c in CASES]
    save(Path(args.out), "sensitivity", result, cases=[c for c in cases if c in result])
    return 0


def _cases(result: dict, rec: dict, prefix: str, primary: str, args: argparse.Namespace, rng: np.random.Generator,
           wall: dict[str, float]) -> None:
    """Live and replay trials of every case with ``primary`` as the review's primary figure."""
    a, n_rounds = rec["sides"]["A"], rec["rounds"]
    for case, other in CASES.items():
        b = rec["sides"][other]
        keys = usable_keys(a, b)
        hib = higher_is_better(keys)
        per_round = wall["A"] + wall[other] + wall["A2"]  # what one round of `ab --aa` takes
        whole = stats.paired(np.asarray(a["figures"][primary], float), np.asarray(b["figures"][primary], float), 0.05)
        sign = 1 if hib[primary] else -1  # a slowdown lowers t/s and raises a time
        measured = {"primary": primary.split("|")[0], "measured_slowdown_pct": sign * (1 - whole.ratio) * 100,
                    "measured_slowdown_ci_pct": sorted(sign * (1 - x) * 100 for x in (whole.ci_low, whole.ci_high)),
                    "injected": b.get("injected") or {}}
        live, start = [], 0
        while n_rounds - start >= stats.LOOKS[0] and len(live) < args.max_live:
            idx = np.arange(start, n_rounds)
            o = review(arrays(a, keys, idx), arrays(b, keys, idx), primary, seconds_per_round=per_round,
                       budget_s=BUDGET_S, higher_is_better=hib)
            live.append(o)
            start += o.rounds
        replay = []
        for _ in range(args.replays):
            idx = rng.integers(0, n_rounds, max(stats.LOOKS))
            ra, rb = arrays(a, keys, idx), arrays(b, keys, idx)
            if case == "aa":  # A and A' swapped at random per round: a world where the null holds exactly
                swap = rng.random(len(idx)) < 0.5
                ra, rb = ({k: np.where(swap, rb[k], ra[k]) for k in keys},
                          {k: np.where(swap, ra[k], rb[k]) for k in keys})
            replay.append(review(ra, rb, primary, seconds_per_round=per_round, budget_s=BUDGET_S,
                                 higher_is_better=hib))
        result[f"{prefix}{case}"] = {**summarise(live, per_round), **measured, "figures": len(keys)}
        result[f"{prefix}replay_{case}"] = {**summarise(replay, per_round), **measured, "figures": len(keys)}
        print(f"{prefix}{case}: live {len(live)} trials, replay {len(replay)}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("record")
    p.add_argument("--preset", default="1b")
    p.add_argument("--config", default="baseline,cuda_graph=on")
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--device", default="cuda", help="cuda; cpu for a dry run of the script")
    p.add_argument("--seconds", type=float, default=330)
    p.add_argument("--max-rounds", type=int, default=2000)
    p.add_argument("--host-wait", default="block")
    p.add_argument("--cpu", type=int)
    p.add_argument("--noise-json", help="bench/noise.py's output: use its quietest variant")
    p.add_argument("--fresh-every", type=int, default=1,
                   help="new pipeline instances for every side every this many rounds (0: one instance per side)")
    p.add_argument("--order-seed", type=int, default=1, help="seed of the order inside each round")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("analyse")
    p.add_argument("rounds", nargs="+", help="rounds.json from record (several: one recording after another)")
    p.add_argument("--replays", type=int, default=1000)
    p.add_argument("--max-live", type=int, default=100)
    p.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    return record(args) if args.what == "record" else analyse(args)


if __name__ == "__main__":
    sys.exit(main())
