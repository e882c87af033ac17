"""GPU task for the runner (issue 2), in one device call:

1. correctness: every config vs the float64 reference (teacher forced) and vs each other
   (tiny, 1b and 8b; 8b's float64 reference runs through CuPy, 64 GB would not fit the host);
2. a device-to-device copy bandwidth measurement (the roofline's ceiling);
3. runs of baseline, each switch alone, optimized and a 100 µs injected delay (interleaved), plus
   functions-level runs (instrumentation cost, and GPU time per function: where the time goes);
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

from perfreview.flows import measure  # noqa: E402
from perfreview.analysis import gaps  # noqa: E402
from perfreview.report import render  # noqa: E402
from perfreview.trace import runs  # noqa: E402
from runner import config as cfg  # noqa: E402
from runner.check import check_configs  # noqa: E402
from runner.loop import Session  # noqa: E402
from runner.spec import RunSpec  # noqa: E402


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


ALONE = ("async_copies", "qkv_streams", "own_kernels", "cuda_graph")


ONLY: list[str] = []  # --configs: a subset of the table's labels (a quick re-measure)


def configs_for_table() -> list[cfg.Config]:
    every = [cfg.resolve("baseline"), *(cfg.resolve("baseline", {k: "on"}) for k in ALONE), cfg.resolve("optimized"),
             cfg.resolve("baseline", {"inject_delay_us": "100"})]
    return [c for c in every if not ONLY or c.label in ONLY]


def check(preset: str, session: Session | None, steps: int, report: dict) -> bool:
    sess = session or Session(preset, "cuda", seed=0)
    xp = sess.device.cp if preset == "8b" else None  # 8b: float64 weights would be 64 GB on the host
    res = check_configs(sess, configs_for_table(), n_steps=steps, n_generate=32, prompt_tokens=8, ref_xp=xp)
    report[f"check_{preset}"] = {k: v for k, v in res.items()}
    print(f"check {preset}: ok={res['ok']} same_tokens(within kernel family)={res['same_tokens']}", flush=True)
    for k, v in res["configs"].items():
        print(f"   {k}: ok={v['ok']} max_err/std={v['max_err_over_std']:.2e} rel_l2={v['rel_l2']:.2e} "
              f"decisive={v['decisive_steps']}/{v['steps']} agree_with_baseline={res['agreement_with_first'][k]:.0%}",
              flush=True)
    return res["ok"]


def table_rows(stored, preset, bw: float, tokens: int) -> list[dict]:
    n_ctx = tokens // 2 + 16  # mean context over the decode
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
            "preset": s.meta.preset, "config": s.meta.config_label, "timing": s.meta.timing,
            "tps_median": float(np.median(tps)), "tps_mean": float(tps.mean()),
            "tps_std": float(tps.std(ddof=1)) if len(tps) > 1 else 0.0,
            "sync_gap_us": float(gap), "syncs_per_token": float(counts["syncs"]),
            "copies_per_token": float(counts["copies"]),
            "energy_j_per_token": float(np.median(energy)) if energy else None,
            "bytes_per_token": bytes_per_token, "achieved_gbs": achieved, "fraction_of_copy_bw": achieved / bw,
            "graph_captures": s.meta.graph_captures,
            "sm_clock_mhz": [r.sm_clock_mhz for r in s.meta.per_repeat], "run": s.path.name,
        })
    return rows


def per_function_gpu(stored) -> list[dict]:
    """GPU time per token per function (functions-level runs): where the time goes."""
    from perfreview.analysis import functions

    out = []
    for s in stored:
        summ = functions.summary(functions.per_token(runs.read_run(s.path).events))
        for r in summ.itertuples():
            out.append({"config": s.meta.config_label, "preset": s.meta.preset, "name": r.name,
                        "gpu_us_per_token": None if np.isnan(r.gpu_median_ns) else r.gpu_median_ns / 1e3,
                        "host_us_per_token": r.median_ns / 1e3, "calls": r.calls_per_token})
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="1b,8b")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", default="1b=5,8b=3")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--check-steps", type=int, default=24)
    ap.add_argument("--configs", default="", help="only these config labels, comma-separated")
    ap.add_argument("--no-functions", action="store_true", help="skip the functions-level runs")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ONLY.extend(c for c in args.configs.split(",") if c)
    repeats = dict(item.split("=") for item in args.repeats.split(","))
    report: dict = {"tokens": args.tokens}
    t0 = time.time()
    ok = check("tiny", None, args.check_steps, report)
    bw = None
    rows, fn_rows = [], []
    for preset_name in args.presets.split(","):
        session = Session(preset_name, "cuda", seed=0)
        cp = session.device.cp
        report["device"] = session.device.info()
        ok &= check(preset_name, session, args.check_steps if preset_name != "8b" else 12, report)
        print(f"[{time.time() - t0:.0f}s] {preset_name} checks done", flush=True)
        if bw is None:
            bw = copy_bandwidth_gbs(cp)
            report["copy_bandwidth_gbs"] = bw
        spec = RunSpec(preset=preset_name, tokens=args.tokens, repeats=int(repeats.get(preset_name, 3)),
                       device="cuda", timing="tokens", build="gpu_runner")
        stored = measure.measure(spec, configs_for_table(), args.out / "runs", session)
        rows += table_rows(stored, session.preset, bw, args.tokens)
        if args.no_functions:
            print(f"[{time.time() - t0:.0f}s] {preset_name} runs done", flush=True)
            del session, cp
            continue
        # instrumentation cost, and where the time goes per function (event pairs)
        spec_f = RunSpec(**{**spec.__dict__, "timing": "functions"})
        fconfigs = [cfg.resolve("baseline"), cfg.resolve("baseline", {"own_kernels": "on"}), cfg.resolve("optimized")]
        fstored = measure.measure(spec_f, fconfigs, args.out / "runs", session)
        rows += table_rows(fstored, session.preset, bw, args.tokens)
        fn_rows += per_function_gpu(fstored[:2])
        print(f"[{time.time() - t0:.0f}s] {preset_name} runs done", flush=True)
        del session, cp
    report["rows"] = rows
    report["functions"] = fn_rows
    report["git"] = stored[0].meta.git
    (args.out / "gpu_runner.json").write_text(json.dumps(report, indent=1, default=str))
    text = render.render("gpu_runner.md.j2", dev=report["device"], git=report["git"], bw=bw, tokens=args.tokens,
                         rows=rows, functions=fn_rows)
    render.write(args.out / "gpu_runner.md", text)
    print(text)
    print("CORRECTNESS", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
