"""GPU task for the runner (issue 2), in one device call:

1. correctness: every config vs the float64 reference (teacher forced) and vs each other;
2. a device-to-device copy bandwidth measurement (the roofline's ceiling);
3. runs of baseline, optimized and each switch alone (interleaved), plus the instrumentation
   cost (tokens vs functions timing level);
4. a table with t/s, sync gap, syncs/copies per token and the bytes-per-token roofline.

Writes markdown + JSON under --out (and the runs under --out/runs). Prints the table last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perfreview import measure  # noqa: E402
from perfreview.analysis import gaps  # noqa: E402
from perfreview.trace import runs  # noqa: E402
from runner import config as cfg  # noqa: E402
from runner.check import check_configs  # noqa: E402
from runner.session import RunSpec, Session  # noqa: E402


def copy_bandwidth_gbs(cp, nbytes: int = 2 << 30, reps: int = 20) -> float:
    """Device-to-device copy, bytes read + written, median of ``reps`` (GB/s)."""
    a = cp.empty(nbytes // 2, dtype=cp.float16)
    a[:] = 1
    b = cp.empty_like(a)
    times = []
    for i in range(reps + 3):
        s, e = cp.cuda.Event(), cp.cuda.Event()
        s.record()
        b[...] = a
        e.record()
        e.synchronize()
        if i >= 3:
            times.append(cp.cuda.get_elapsed_time(s, e) / 1e3)
    return 2 * a.nbytes / float(np.median(times)) / 1e9


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="1b")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--check-steps", type=int, default=24)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"preset": args.preset}

    t0 = time.time()
    session = Session(args.preset, "cuda", seed=0)
    cp = session.device.cp
    report["device"] = session.device.info()
    print("device:", report["device"], flush=True)

    singles = [cfg.resolve("baseline", {k: "on"}) for k in ("async_copies", "qkv_streams")]
    delay = cfg.resolve("baseline", {"inject_delay_us": "100"})
    configs = [cfg.resolve("baseline"), cfg.resolve("optimized"), *singles, delay]

    # 1. correctness (tiny too: a cheap sanity line)
    for preset in dict.fromkeys(["tiny", args.preset]):
        sess = session if preset == args.preset else Session(preset, "cuda", seed=0)
        res = check_configs(sess, configs, n_steps=args.check_steps, n_generate=32, prompt_tokens=8)
        report[f"check_{preset}"] = res
        print(f"check {preset}: ok={res['ok']} same_tokens={res['same_tokens']} "
              + ", ".join(f"{k}: err/std={v['max_err_over_std']:.2e} rel_l2={v['rel_l2']:.2e}"
                          for k, v in res["configs"].items()), flush=True)
    print(f"[{time.time() - t0:.0f}s] checks done", flush=True)

    # 2. copy bandwidth
    bw = copy_bandwidth_gbs(cp)
    report["copy_bandwidth_gbs"] = bw
    print(f"device copy bandwidth: {bw:.0f} GB/s", flush=True)

    # 3. runs: all configs interleaved at the tokens level; baseline+optimized at functions level
    spec = RunSpec(preset=args.preset, tokens=args.tokens, repeats=args.repeats, device="cuda",
                   timing="tokens", build="gpu_runner")
    runs_dir = args.out / "runs"
    stored = measure.measure(spec, configs, runs_dir, session)
    spec_f = RunSpec(**{**spec.__dict__, "timing": "functions"})
    stored += measure.measure(spec_f, [cfg.resolve("baseline"), cfg.resolve("optimized")], runs_dir, session)
    print(f"[{time.time() - t0:.0f}s] runs done", flush=True)

    # 4. table
    preset = session.preset
    n_ctx = args.tokens // 2 + 16  # mean context over the decode
    bytes_per_token = preset.weight_bytes_per_token() + preset.kv_bytes_per_token(n_ctx)
    rows = []
    for s in stored:
        ev = runs.read_run(s.path).events
        counts = gaps.counts_per_token(ev).iloc[0]
        tps = np.array([h["tokens_per_s"] for h in s.headlines])
        gap = np.median([h["median_sync_gap_us"] for h in s.headlines])
        energy = [h["energy_j_per_token"] for h in s.headlines if h["energy_j_per_token"] is not None]
        achieved = bytes_per_token * np.median(tps) / 1e9
        rows.append({
            "config": s.meta["config_label"], "timing": s.meta["timing"],
            "tps_median": float(np.median(tps)), "tps_mean": float(tps.mean()), "tps_std": float(tps.std(ddof=1)),
            "sync_gap_us": float(gap), "syncs_per_token": float(counts["syncs"]),
            "copies_per_token": float(counts["copies"]),
            "energy_j_per_token": float(np.median(energy)) if energy else None,
            "achieved_gbs": achieved, "fraction_of_copy_bw": achieved / bw,
            "sm_clock_mhz": [r.get("sm_clock_mhz") for r in s.meta["per_repeat"]],
            "run": s.path.name,
        })
    report["rows"] = rows
    report["bytes_per_token"] = bytes_per_token
    report["generated_first"] = stored[0].meta["generated"]
    report["git"] = stored[0].meta["git"]
    (args.out / "gpu_runner.json").write_text(json.dumps(report, indent=1, default=str))
    lines = [
        f"device: {report['device'].get('name')}, driver {report['device'].get('driver')}, "
        f"CUDA runtime {report['device'].get('cuda_runtime')}, CuPy {report['device'].get('cupy')}",
        f"commit: {report['git']}",
        f"preset {args.preset}: {bytes_per_token / 1e9:.3f} GB read per token (weights + KV at ctx {n_ctx}); "
        f"device copy {bw:.0f} GB/s -> roofline {bw * 1e9 / bytes_per_token:.0f} t/s",
        "",
        "| config | timing | t/s median | t/s mean ± std | sync gap µs (median) | syncs/token | copies/token "
        "| J/token | GB/s achieved | of copy BW |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        e = f"{r['energy_j_per_token']:.3f}" if r["energy_j_per_token"] is not None else "n/a"
        lines.append(f"| {r['config']} | {r['timing']} | {r['tps_median']:.2f} | {r['tps_mean']:.2f} ± "
                     f"{r['tps_std']:.2f} | {r['sync_gap_us']:.1f} | {r['syncs_per_token']:.0f} | "
                     f"{r['copies_per_token']:.0f} | {e} | {r['achieved_gbs']:.0f} | {r['fraction_of_copy_bw']:.1%} |")
    text = "\n".join(lines)
    (args.out / "gpu_runner.md").write_text(text + "\n")
    print(text)
    ok = all(report[k]["ok"] for k in report if k.startswith("check_"))
    print("CORRECTNESS", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
