"""GPU task for the CUPTI collector (issue 9), one device call:

1. a fixture: the raw CUPTI records (plain field lists) of a few tokens, eager and graph path, with
   the host rows and capture log they are converted against (tests/runner/ reads it on the CPU);
2. 1b runs with ``--trace cupti``: baseline, optimized, cuda_graph alone, qkv_streams alone, and
   baseline with ``inject_delay_us=15``; each one's run report (kernel table, functions with GPU
   time on the graph path too, the gap from CUPTI records beside the CUDA-event one) and timeline;
3. the overhead of tracing: optimized with and without ``--trace cupti``, runs alternating (runs
   are the units: Welch on per-run tokens/s).
Writes cupti.tgz (reports, pictures, fixture) and cupti.json; prints the summary table last.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perfreview.analysis import gaps, samples, summary  # noqa: E402
from perfreview.compare import stats  # noqa: E402
from perfreview.flows import measure, pictures  # noqa: E402
from perfreview.report import render  # noqa: E402
from perfreview.trace import runs  # noqa: E402
from perfreview.trace.meta import git_info  # noqa: E402
from runner import config as cfg  # noqa: E402
from runner.loop import Session, generate  # noqa: E402
from runner.spec import RunSpec  # noqa: E402

CONFIGS = {"baseline": "baseline", "optimized": "optimized", "cuda_graph": "baseline,cuda_graph=on",
           "qkv_streams": "baseline,qkv_streams=on", "delay15": "baseline,cuda_graph=on,inject_delay_us=15"}


def fixture(session: Session, config: str, tokens: int) -> dict:
    """Raw records of ``tokens`` decode tokens after a 2-token prompt, as the collector keeps them."""
    pipe, rec = session.pipeline(cfg.parse_side(config), "tokens", "cupti")
    generate(pipe, session.prompt(2), 4)  # warm-up and capture
    rec.start_repeat()
    rec.token, rec.phase = 0, "decode"
    generate(pipe, session.prompt(2), tokens, rec)
    session.device.synchronize_all()
    raw = rec.cupti.take()
    offset, residual = rec.cupti.clock_offset()
    rec.cupti.raw = list(raw)  # give them back: finish_repeat converts them as usual
    rows = rec.finish_repeat(0)
    host = [r for r in rows if r["source"] == "host"]
    return {"config": config, "raw": [list(r) for r in raw], "offset_ns": offset, "residual_ns": residual,
            "host_rows": host, "capture_log": [list(x) for x in rec.capture_log],
            "converted": sum(r["source"] == "cupti" for r in rows)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="1b", help="model preset")
    ap.add_argument("--tokens", type=int, default=32, help="decode tokens per repeat")
    ap.add_argument("--repeats", type=int, default=3, help="repeats per traced run")
    ap.add_argument("--overhead-runs", type=int, default=6, help="runs per side for the tracing overhead")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    args = ap.parse_args()
    out, t0 = args.out, time.time()
    (out / "reports").mkdir(parents=True, exist_ok=True)
    session = Session(args.preset, "cuda", seed=0)
    result: dict = {"device": session.device.info(), "git": git_info(), "preset": args.preset, "tokens": args.tokens}
    fx = {"eager": fixture(session, "baseline", 2), "graph": fixture(session, "optimized", 2)}
    (out / "reports" / "cupti_fixture.json").write_text(json.dumps(fx))
    print(f"[{time.time() - t0:.0f}s] fixture: " + ", ".join(f"{k} {len(v['raw'])} records" for k, v in fx.items()))
    spec = RunSpec(preset=args.preset, tokens=args.tokens, repeats=args.repeats, device="cuda", prompt_tokens=16,
                   warmup_tokens=8, trace="cupti")
    result["runs"] = {}
    for name, side in CONFIGS.items():
        stored = measure.measure(spec, [cfg.parse_side(side)], out / "runs", session)[0]
        run = runs.read_run(stored.path)
        pictures.run_report(run, out / "reports" / f"{name}.md")
        ev = run.events
        kern = ev[(ev["kind"] == "kernel") & (ev["phase"] == "decode")]
        dur = (kern["end_ns"] - kern["start_ns"]).groupby(kern["name"].astype(str)).agg(["count", "sum", "median"])
        per_token = len(kern) / max(1, ev[(ev["kind"] == "token") & (ev["phase"] == "decode")].shape[0])
        g = summary.gap_summary([run])
        fn = summary.function_table(run)
        fn = fn[fn["gpu_median_ns"].notna()][["name", "gpu_median_ns", "calls_per_token"]]
        spin = kern[kern["name"] == "spin_ns"]
        result["runs"][name] = {
            "config": run.meta.config_label, "kernels_per_token": per_token,
            "top_kernels": dur.sort_values("sum", ascending=False).head(8).reset_index().to_dict("records"),
            "gap_cuda_event_us": g.gap_us, "gap_cupti_us": g.traced_gap_us, "gap_source": g.source,
            "functions_gpu_us": {r.name: r.gpu_median_ns / 1e3 for r in fn.itertuples()},
            "spin_kernel_us_median": float((spin["end_ns"] - spin["start_ns"]).median() / 1e3) if len(spin) else None,
            "tokens_per_s": float(np.median(samples.headlines(run)["tokens_per_s"])),
            "pageable_copies_per_token": float((ev[(ev["kind"] == "memcpy") & (ev["phase"] == "decode")]["mem_kind"]
                                                .astype(str).str.startswith("pageable")).sum() / max(1, args.repeats *
                                                                                                      args.tokens)),
            "sync_calls_per_token": float(gaps.counts_per_token(ev)["syncs"].iloc[0]),
        }
        print(f"[{time.time() - t0:.0f}s] {name}: {per_token:.0f} kernels/token", flush=True)
    # overhead: alternating runs with and without tracing (the untraced process pauses CUPTI)
    tps = {"off": [], "cupti": []}
    plain = RunSpec(**{**spec.__dict__, "trace": "", "repeats": 3})
    traced = RunSpec(**{**spec.__dict__, "repeats": 3})
    for i in range(args.overhead_runs):
        for key, sp in (("off", plain), ("cupti", traced)) if i % 2 == 0 else (("cupti", traced), ("off", plain)):
            s = measure.measure(sp, [cfg.resolve("optimized")], out / "runs", session)[0]
            tps[key].append(float(np.exp(np.mean(np.log([h["tokens_per_s"] for h in s.headlines])))))
    est = stats.unpaired(np.array(tps["off"]), np.array(tps["cupti"]), 0.05)
    result["overhead"] = {"runs_per_side": args.overhead_runs, "tokens_per_s_off": tps["off"],
                          "tokens_per_s_cupti": tps["cupti"], "ratio": est.ratio, "ci": [est.ci_low, est.ci_high]}
    (out / "reports" / "cupti.json").write_text(json.dumps(result, indent=1, default=str))
    with tarfile.open(out / "cupti.tgz", "w:gz") as tar:
        for f in sorted((out / "reports").iterdir()):
            tar.add(f, arcname=f.name)
    dev = result["device"]
    print(f"\n{dev['name']} driver {dev.get('driver')} CUDA {dev['cuda_runtime']} commit {result['git'].get('commit')}")
    print("| config | kernels/token | t/s | gap CUDA events (µs) | gap CUPTI (µs) | pageable copies/token "
          "| syncs/token |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in result["runs"].items():
        print(f"| {name} | {r['kernels_per_token']:.0f} | {r['tokens_per_s']:.1f} | {r['gap_cuda_event_us']:.1f} | "
              f"{r['gap_cupti_us']:.1f} | {r['pageable_copies_per_token']:.1f} | {r['sync_calls_per_token']:.0f} |")
    print(f"tracing overhead (optimized): tokens/s {render.pct_ci(est.ratio, est.ci_low, est.ci_high)} "
          f"({args.overhead_runs} runs per side, Welch)")
    print("graph path GPU per function (µs/token):", {k: round(v, 1) for k, v in
                                                        result["runs"]["optimized"]["functions_gpu_us"].items()})
    print("inject_delay_us=15: spin kernel", result["runs"]["delay15"]["spin_kernel_us_median"], "µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
