"""GPU task (issue 12), one device call: our decode against the memory-bandwidth limit and against
PyTorch, on the same shapes and random weights, in one process.

Per preset (1b, 8b; fp16, batch 1, 128 tokens after a 32-token prompt):
- the device-copy bandwidth, measured in this run (the roofline's ceiling);
- tokens/s of our baseline, own_kernels, cuda_graph, cuda_graph + pdl, optimized and optimized with the
  per-token loop instead of run_ahead (the host waiting for each token), with qkv_streams, with
  attn_group_heads, with attn_fill_split, with attn_fit_wave, with attn_share_kv, with attn_merge_last, with
  attn_four_blocks, with attn_merge_ahead, with sm_config_reset, with own_reset and without early_loads,
  overlap_tuning, smem_carveout or norm_as_scale (OURS: the runner's interleaved rounds; --configs picks some) and of
  PyTorch eager and PyTorch CUDA graph (bench/torch_decode.py), one repeat of each per round:
  median [95% CI of the median, order statistics] over the rounds; with --isolate each row of ours in a worker
  process of its own (PyTorch's in baseline's), its fraction of the copy bandwidth read against its own process's
  copy (a kernel from outside our token's module slows every later token of a process by 1.5% on the H100);
- bytes per token (weights + the KV cache read at the mean context) and the fraction of the copy
  bandwidth that reaches;
- GPU time per token at positions 32, 96, 160 and 512 (CUDA events around the token), of optimized
  and the rows of LATENCY_CONFIGS (optimized with or without one kernel-tuning switch) and PyTorch
  graph, 15 samples each in paired rounds: median [95% CI], and the growth from position 32 as a paired ratio [95% CI]
  against what the extra KV-cache bytes explain at the copy bandwidth ("flat", "grows", "undecided");
- where the optimized token's time goes: GPU time per kernel, from CUPTI when cupti-python is
  importable (the graph path has no events inside the token), else omitted; beside each kernel the
  bytes it must read and the time those take at the copy bandwidth (its floor); and the same at
  positions 512-543 against 32-63, kernel by kernel: where the growth with position goes.
Also checks that PyTorch picks the same greedy tokens as our baseline (reported, not required).
Writes decode.json and decode.md under --out; prints the table. --traced-only: the CUPTI tables alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.outputs import save  # noqa: E402
from perfreview.analysis import headline, traced  # noqa: E402
from perfreview.compare import stats  # noqa: E402
from perfreview.trace import schema  # noqa: E402
from perfreview.trace.meta import git_info  # noqa: E402
from runner import config as cfg  # noqa: E402
from runner.loop import Interleaved, Session  # noqa: E402
from runner.own_kernels import OPROJ_SHORT_DEFINE, function_kernel_bytes, kernel_bytes, oproj_kernel  # noqa: E402
from runner.spec import RunSpec  # noqa: E402
from scripts.gpu_runner import copy_bandwidth_gbs  # noqa: E402

OURS = {"baseline": "baseline", "own_kernels": "baseline,own_kernels=on", "cuda_graph": "baseline,cuda_graph=on",
        "graph_pdl": "baseline,cuda_graph=on,pdl=on", "optimized": "optimized",
        "optimized_token_loop": "optimized,run_ahead=off",
        "optimized+qkv_streams": "optimized,qkv_streams=on",
        "optimized+attn_group_heads": "optimized,attn_group_heads=on",
        "optimized+attn_fill_split": "optimized,attn_fill_split=on",
        "optimized+attn_fit_wave": "optimized,attn_fit_wave=on",
        "optimized+attn_share_kv": "optimized,attn_share_kv=on",
        "optimized-early_loads": "optimized,early_loads=off",
        "optimized-overlap_tuning": "optimized,overlap_tuning=off",
        "optimized-smem_carveout": "optimized,smem_carveout=off",
        "optimized+attn_merge_last": "optimized,attn_merge_last=on",
        "optimized-norm_as_scale": "optimized,norm_as_scale=off",
        "optimized+oproj_short_prefetch": "optimized,oproj_short_prefetch=on",
        "optimized+resid_short_prefetch": "optimized,resid_short_prefetch=on",
        "optimized+attn_four_blocks": "optimized,attn_four_blocks=on",
        "optimized+attn_four_blocks+attn_merge_last": "optimized,attn_four_blocks=on,attn_merge_last=on",
        "optimized+attn_merge_ahead": "optimized,attn_merge_ahead=on",
        # configure_sms at every sequence's start, after CuPy's fills (which step every later token of the
        # process: drift_which_fills_h100_b5e2899); each row's own reset runs before its tokens, so beside
        # optimized in one process it is a fair test of the switch. No gain: decode_reset_h100_0aa491b
        "optimized+sm_config_reset": "optimized,sm_config_reset=on",
        # the KV cache emptied by our own kernel, not CuPy's memset: whether that keeps optimized's tokens from the
        # step a foreign operation brings (to read with --isolate: in one process baseline's and PyTorch's kernels
        # bring it to every row)
        "optimized+own_reset": "optimized,own_reset=on"}
LATENCY_CONFIGS = ("optimized", "optimized+attn_fill_split", "optimized+attn_fit_wave",
                   "optimized-early_loads", "optimized-overlap_tuning", "optimized-smem_carveout",
                   "optimized-norm_as_scale", "optimized+attn_four_blocks",
                   "optimized+attn_merge_ahead", "optimized+sm_config_reset",
                   "optimized+own_reset")  # ours, by position
POSITIONS = (32, 96, 160, 512)
GROWTH_TOKENS = 32  # traced tokens at each end of growth_by_kernel: positions 32-63 and 512-543


def median_ci(x: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Median and a distribution-free interval for it (binomial order statistics)."""
    s = np.sort(np.asarray(x, float))
    n = len(s)
    lo = int(sps.binom.ppf((1 - level) / 2, n, 0.5))
    hi = max(min(n - 1, n - 1 - lo), lo)
    lo = max(0, lo - 1)
    return float(np.median(s)), float(s[lo]), float(s[hi])


def torch_repeat(model, prompt: list[int], tokens: int, graph: bool) -> tuple[float, list[int]]:
    """One repeat: prefill, then the decode timed by the host clock (as the runner times tg)."""
    import torch

    model.reset()
    nxt = 0
    for pos, tok in enumerate(prompt):
        nxt = model.step(tok, pos, graph)
    torch.cuda.synchronize()
    out = []
    t0 = time.perf_counter()
    for i in range(tokens):
        nxt = model.step(nxt, len(prompt) + i, graph)
        out.append(nxt)
    return tokens / (time.perf_counter() - t0), out


def latency_by_position(step, cp, stream_of, rounds: int, seed: int = 0) -> dict[int, list[float]]:
    """GPU ms per token at each of POSITIONS, ``rounds`` samples each: ``step(pos)`` runs token ``pos``.
    The sequence is run to the last position first, so every cache row is written; then each round
    replays the token at every position, in a random order. A replayed token computes what it computed
    the first time (the same input, the cache rows before it unchanged, its own row rewritten with the
    same values), so the samples are repeats of one token, and a round pairs the positions (one
    sample per position, close in time): the growth with position is a paired comparison."""
    for pos in range(POSITIONS[-1] + 1):
        step(pos)
    out: dict[int, list[float]] = {p: [] for p in POSITIONS}
    order = np.random.default_rng(seed)
    for _ in range(rounds):
        for pos in order.permutation(POSITIONS):
            s = stream_of()
            e0, e1 = cp.cuda.Event(), cp.cuda.Event()
            e0.record(s)
            step(int(pos))
            e1.record(s)
            e1.synchronize()
            out[int(pos)].append(cp.cuda.get_elapsed_time(e0, e1))
    return out


# the device copy read after every round (bench/drift.py reads the same beside its token)
ROUND_COPY_BYTES, ROUND_COPY_REPS = 1 << 30, 5
CARD_READS = (("sm_clock_mhz", "SM", "MHz"), ("mem_clock_mhz", "memory", "MHz"), ("temperature_c", "GPU", "°C"),
              ("memory_temperature_c", "HBM", "°C"), ("power_w", "board", "W"))


def card_ranges(rounds: list[dict]) -> list[str]:
    """NVML's reads after each round as ranges ("HBM 81-88 °C"), and the clock event reasons seen: what state of
    the card the table ran in. Reads no round had are left out."""
    out = []
    for key, name, unit in CARD_READS:
        vals = [r[key] for r in rounds if r.get(key) is not None]
        if vals:
            lo, hi = min(vals), max(vals)
            out.append(f"{name} {lo:.0f} {unit}" if round(lo) == round(hi) else f"{name} {lo:.0f}-{hi:.0f} {unit}")
    reasons = sorted({int(r["clock_event_reasons"]) for r in rounds if r.get("clock_event_reasons") is not None})
    if reasons:
        out.append("clock event reasons " + ", ".join(f"{x:#x}" for x in reasons))
    return out


def flatness(samples: dict[int, list[float]], kv_bytes_per_pos: float, copy_bw_gbs: float,
             allowance: float = stats.DEFAULT_THRESHOLD) -> dict[int, dict]:
    """Is the token's latency flat in position up to the KV-cache bytes? Per position: the median [95%
    CI], and against the first position the paired ratio [95% CI] (rounds as units, the review's
    statistics) beside ``kv_share``, the growth the extra KV-cache bytes alone explain at the copy
    bandwidth. "flat": the interval's top lies within kv_share + ``allowance`` (0.5%, the review's
    smallest change that matters); "grows": its bottom lies above that; else "undecided"."""
    first = min(samples)
    base = np.asarray(samples[first], float)
    base_ms = float(np.median(base))
    out = {}
    for pos in sorted(samples):
        x = np.asarray(samples[pos], float)
        med, lo, hi = median_ci(list(x))
        row = {"median_ms": med, "ci95": [lo, hi], "samples": len(x)}
        if pos != first:
            est = stats.paired(base, x, 0.05)
            kv_share = kv_bytes_per_pos * (pos - first) / (copy_bw_gbs * 1e9) / (base_ms / 1e3)
            limit = kv_share + allowance
            verdict = ("flat" if est.ci_high - 1 <= limit else "grows" if est.ci_low - 1 > limit else "undecided")
            row.update(vs_first={"position": first, "ratio": est.ratio, "ci95": [est.ci_low, est.ci_high],
                                 "method": est.method}, kv_share=kv_share, verdict=verdict)
        out[pos] = row
    return out


def where_time_goes(session: Session, tokens: int, prompt_tokens: int = 32) -> list[dict]:
    """The optimized token's kernels from CUPTI records (decode tokens only, ``tokens`` after a prompt
    of ``prompt_tokens``): per function and kernel (o_proj's GEMV apart from the down projection's),
    the stream time it adds per token (its duration less any wait for the kernel before it: under PDL a
    kernel starts early and waits inside) and the share of the token's kernel time."""
    try:
        import cupti  # noqa: F401
    except ImportError:
        return []
    spec = RunSpec(preset=session.preset.name, tokens=tokens, repeats=1, device="cuda",
                   prompt_tokens=prompt_tokens, warmup_tokens=8, trace="cupti")
    rounds = Interleaved(spec, [cfg.parse_side("optimized")], session)
    rounds.run(1)
    res = [r for r in rounds.results() if r.meta.trace == "cupti"][0]
    events = schema.from_records(res.rows, res.run_id)
    decode = events[(events["phase"] == "decode") & (events["token"] >= 0)]
    n_tok = max(1, decode.loc[decode["kind"] == "token", "token"].nunique())
    kern = traced.kernel_summary(decode, by_function=True)
    return [{"kernel": r.name, "count_per_token": r.count / n_tok,
             "gpu_us_per_token": r.added_ns / n_tok / 1e3, "share": r.added_share,
             "duration_us_per_token": r.total_ns / n_tok / 1e3}
            for r in kern.sort_values("added_ns", ascending=False).itertuples()]


def with_floors(rows: list[dict], preset: Any, n_ctx: int, copy_bw_gbs: float) -> list[dict]:
    """``rows`` (where_time_goes) with, per kernel, the megabytes it must read per token and the
    stream time those take at the copy bandwidth (``floor_us``): what is over the floor is the
    kernel's own loss (launch boundaries, latency, a wave too many), not the bytes."""
    need = {**kernel_bytes(preset, n_ctx), **function_kernel_bytes(preset, n_ctx),  # o_proj by either kernel
            **function_kernel_bytes(preset, n_ctx, oproj_kernel((OPROJ_SHORT_DEFINE,)))}
    out = []
    for r in rows:
        r = dict(r)
        if r["kernel"] in need:
            r["mb_per_token"] = need[r["kernel"]] / 1e6
            r["floor_us"] = need[r["kernel"]] / (copy_bw_gbs * 1e3)
        out.append(r)
    return out


def growth_by_kernel(short: list[dict], long: list[dict]) -> list[dict]:
    """Where the token's growth with position goes: per kernel (rows of where_time_goes, with_floors'
    floors where known) the stream µs it adds per token at the short and at the long contexts, the
    difference, and the part of it the kernel's extra bytes explain at the copy bandwidth; the
    largest differences first. A kernel seen at one context only counts 0 at the other."""
    a, b = {r["kernel"]: r for r in short}, {r["kernel"]: r for r in long}
    rows = []
    for name in [*a, *(k for k in b if k not in a)]:
        s_us = a[name]["gpu_us_per_token"] if name in a else 0.0
        l_us = b[name]["gpu_us_per_token"] if name in b else 0.0
        row = {"kernel": name, "short_us": s_us, "long_us": l_us, "delta_us": l_us - s_us}
        if "floor_us" in a.get(name, {}) and "floor_us" in b.get(name, {}):
            row["floor_delta_us"] = b[name]["floor_us"] - a[name]["floor_us"]
        rows.append(row)
    return sorted(rows, key=lambda r: -abs(r["delta_us"]))


def run_preset(name: str, rounds_n: int, tokens: int, torch_ok: bool, device: str = "cuda",
               lat_rounds: int = 15, fresh_every: int = 1, keys: tuple[str, ...] = tuple(OURS)) -> dict:
    """One preset's table: ``keys``, the rows of OURS to run (baseline and optimized among them)."""
    ours_specs = {k: OURS[k] for k in keys}
    session = Session(name, device, seed=0)
    p = session.preset
    gpu = session.device.is_gpu  # cpu: a dry run of this script (no bandwidth, PyTorch or latency)
    cp = session.device.cp if gpu else None
    # the copy bandwidth at the start, and once after every round beside the configs: the token is read against the
    # copy measured in the same state of the card (a 1b token stepped from 969 to 984 µs a few seconds into a
    # process under load: footprint_h100_7437051), not against one read while it was fresh
    bw_start = copy_bandwidth_gbs(cp) if gpu else float("nan")
    bw_rounds: list[float] = []
    card_rounds: list[dict] = []  # NVML after each round: clocks, temperatures (the HBM's too), power, reasons
    torch_ok = torch_ok and gpu
    n_ctx_mean = 32 + tokens // 2
    bytes_per_token = p.weight_bytes_per_token() + p.kv_bytes_per_token(n_ctx_mean)
    # fresh_every: each config on new pipeline instances (memory, graph) every block of rounds, made in a
    # random order, so where a config's buffers landed is part of its interval, not a fixed offset
    # (three runs put the same build 1.2% apart by its place in the list: decode_h200_0467384.md)
    spec = RunSpec(preset=name, tokens=tokens, repeats=1, device=device, prompt_tokens=32, warmup_tokens=16,
                   fresh_every=fresh_every)
    ours = Interleaved(spec, [cfg.parse_side(v) for v in ours_specs.values()], session)
    prompt = session.prompt(32)
    tps: dict[str, list[float]] = {k: [] for k in ours_specs}
    gen: dict[str, list[int]] = {}
    model = None
    if torch_ok:
        from bench.torch_decode import TorchDecode

        model = TorchDecode(p, session.weights)
        for graph in (False, True):  # warm-up and capture
            torch_repeat(model, prompt, 8, graph)
        tps.update(torch_eager=[], torch_graph=[])
    for _ in range(rounds_n):
        ours.run(1)
        if gpu:
            bw_rounds.append(copy_bandwidth_gbs(cp, nbytes=ROUND_COPY_BYTES, reps=ROUND_COPY_REPS))
            card_rounds.append({**session.device.clocks(), **session.device.power_state()})
        if model is not None:
            for graph, key in ((False, "torch_eager"), (True, "torch_graph")):
                rate, gen[key] = torch_repeat(model, prompt, tokens, graph)
                tps[key].append(rate)
    for res in ours.results():
        events = schema.from_records(res.rows, res.run_id)
        label = next(k for k, v in ours_specs.items() if cfg.parse_side(v).label == res.meta.config_label)
        tps[label] = [h["tokens_per_s"] for h in headline.records(events, res.meta)]
        gen[label] = list(res.meta.generated or [])
    bw = float(np.median(bw_rounds)) if bw_rounds else bw_start
    configs = {}
    for key, values in tps.items():
        med, lo, hi = median_ci(values)
        configs[key] = {"tokens_per_s": med, "ci95": [lo, hi], "repeats": values,
                        "copy_bw_fraction": bytes_per_token * med / (bw * 1e9)}
    # latency by position: ours optimized (graph) and torch graph, one sequence to the last position,
    # then rounds of replays at each position
    samples: dict[str, dict[int, list[float]]] = {}
    seq = prompt + list(range(1000, 1000 + POSITIONS[-1]))
    labels = [s.spec.config.label for s in ours.sides]
    for key in [k for k in LATENCY_CONFIGS if k in ours_specs] if gpu else ():
        pipe = ours.sides[labels.index(cfg.parse_side(OURS[key]).label)].pipe
        pipe.reset()
        samples[key] = latency_by_position(lambda pos: pipe.step(seq[pos], pos), cp, lambda: pipe.main, lat_rounds)
    if model is not None:
        import torch

        for pos in range(POSITIONS[-1] + 1):  # capture every context bucket's graph before timing
            model.step(seq[pos], pos, True)
        model.reset()
        ts = model.stream
        torch_stream = cupy_stream_of(cp, ts.cuda_stream)
        samples["torch_graph"] = latency_by_position(lambda pos: model.step(seq[pos], pos, True), cp,
                                                     lambda: torch_stream, lat_rounds)
        torch.cuda.synchronize()
    kv_per_pos = p.kv_bytes_per_token(1)
    flat = {k: flatness(v, kv_per_pos, bw) for k, v in samples.items()}
    lat = {k: {pos: r["median_ms"] for pos, r in v.items()} for k, v in flat.items()}
    out = {"bytes_per_token": bytes_per_token, "weight_bytes_per_token": p.weight_bytes_per_token(),
           "kv_bytes_per_token_at_mean_ctx": p.kv_bytes_per_token(n_ctx_mean), "mean_ctx": n_ctx_mean,
           "copy_bw_gbs": bw, "copy_bw_gbs_at_start": bw_start, "copy_bw_gbs_rounds": bw_rounds,
           "card_rounds": card_rounds, "card_ranges": card_ranges(card_rounds),
           "configs": configs, "latency_ms_by_position": lat, "latency_by_position": flat,
           "latency_samples_ms": samples, "latency_rounds": lat_rounds,
           "token_agreement_with_baseline": agreement(gen), "generated": gen}
    return out


def agreement(gen: dict[str, list[int]]) -> dict[str, float | None]:
    """Per row, the share of its greedy tokens that baseline's run picked too (None without both)."""
    first = gen.get("baseline", [])
    return {k: float(np.mean([a == b for a, b in zip(first, v)])) if first and v else None for k, v in gen.items()}


# --isolate: each row of ours in a process of its own, PyTorch's rows in baseline's (they run other libraries'
# kernels anyway). On the H100 a kernel from outside our token's module between its launches slows every later token
# of the process by 1.5% (CuPy's fills, a fill of another module: drift_carveout_*_h100_0aa491b), so in one
# process the rows run after baseline's and PyTorch's kernels all carry it.
WORKER_FILE = "worker.json"
MERGED_BY_KEY = ("configs", "latency_ms_by_position", "latency_by_position", "latency_samples_ms", "generated")


def rounds_of(spec: str, preset: str, default: int = 5) -> int:
    """The rounds ``--rounds`` (``1b=7,8b=5``) gives ``preset``."""
    return dict((k, int(v)) for k, v in (x.split("=") for x in spec.split(","))).get(preset, default)


def worker_argv(args: argparse.Namespace, preset: str, key: str, out: Path) -> list[str]:
    """The command line of the worker that measures row ``key`` of ``preset`` alone (the one place it is built)."""
    return [sys.executable, str(Path(__file__).resolve()), "--worker", key, "--presets", preset,
            "--rounds", f"{preset}={rounds_of(args.rounds, preset)}", "--tokens", str(args.tokens),
            "--fresh-every", str(args.fresh_every), "--latency-rounds", str(args.latency_rounds),
            "--device", args.device, "--out", str(out)]


def merge_isolated(parts: dict[str, dict]) -> dict:
    """One preset's table from rows measured each in a worker process: each row keeps the fraction of the copy
    bandwidth its own process measured (beside it as ``copy_bw_gbs``); the preset's copy is the median of the
    processes'. ``parts``: worker outputs by row, baseline's (with PyTorch's rows) first."""
    out = {k: v for k, v in next(iter(parts.values())).items() if k not in MERGED_BY_KEY}
    for field in MERGED_BY_KEY:
        out[field] = {}
        for part in parts.values():
            out[field].update(part.get(field, {}))
    out["configs"] = {label: {**c, "copy_bw_gbs": part["copy_bw_gbs"]}
                      for part in parts.values() for label, c in part["configs"].items()}
    ours = [k for k in out["configs"] if not k.startswith("torch_")]
    out["configs"] = {k: out["configs"][k] for k in [*ours, *(k for k in out["configs"] if k not in ours)]}
    out["copy_bw_gbs_by_process"] = {k: part["copy_bw_gbs"] for k, part in parts.items()}
    out["copy_bw_gbs"] = float(np.median(list(out["copy_bw_gbs_by_process"].values())))
    out["copy_bw_gbs_rounds"] = [bw for part in parts.values() for bw in part.get("copy_bw_gbs_rounds", [])]
    out["card_rounds"] = [c for part in parts.values() for c in part.get("card_rounds", [])]
    out["card_ranges"] = card_ranges(out["card_rounds"])
    out["token_agreement_with_baseline"] = agreement(out["generated"])
    out["isolated"] = True
    return out


def run_isolated(args: argparse.Namespace, preset: str, keys: tuple[str, ...]) -> dict:
    """``preset``'s rows, each measured by a worker process of its own (worker_argv), merged."""
    import subprocess
    import tempfile

    parts = {}
    with tempfile.TemporaryDirectory(prefix="decode_worker_") as tmp:
        for key in keys:
            out = Path(tmp) / key
            subprocess.run(worker_argv(args, preset, key, out), check=True)
            parts[key] = json.loads((out / WORKER_FILE).read_text())
    return merge_isolated(parts)


class _RawStream:
    """A stream handle in the CUDA stream protocol, which CuPy 14 takes in place of ExternalStream."""

    def __init__(self, ptr: int) -> None:
        self.ptr = ptr

    def __cuda_stream__(self) -> tuple[int, int]:
        return (0, self.ptr)


def cupy_stream_of(cp, ptr: int):
    """CuPy's view of a stream that another library made (torch's), without ExternalStream's
    deprecation warning where Stream.from_external exists (CuPy 14)."""
    if hasattr(cp.cuda.Stream, "from_external"):
        return cp.cuda.Stream.from_external(_RawStream(ptr))
    return cp.cuda.ExternalStream(ptr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", help="comma-separated (default 1b,8b; tiny with --device cpu)")
    ap.add_argument("--rounds", default="1b=7,8b=5", help="rounds per preset (each config once per round)")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--fresh-every", type=int, default=1,
                    help="new pipeline instances every N rounds (0: one instance a config for the run)")
    ap.add_argument("--latency-rounds", type=int, default=15, help="samples of the token at each position")
    ap.add_argument("--configs", help="comma-separated rows of ours to run (default: all; baseline and optimized "
                    "always run): a shorter call where device time is short")
    ap.add_argument("--traced-only", action="store_true",
                    help="only the CUPTI tables (where the time goes, where the growth goes): a short call")
    ap.add_argument("--isolate", action="store_true",
                    help="each row of ours in a process of its own (PyTorch's in baseline's): on the H100 a kernel "
                    "from outside our token's module slows every later token of a process by 1.5%%")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # --isolate's: this row alone, its numbers to worker.json
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the script (tiny preset)")
    args = ap.parse_args()
    # on the CPU the 1b alone takes over 24 GB in NumPy: the dry run is the tiny preset unless asked
    args.presets = args.presets or ("tiny" if args.device == "cpu" else "1b,8b")
    try:
        rounds_of(args.rounds, "")
    except ValueError:
        ap.error(f"--rounds: PRESET=N pairs, comma-separated (e.g. 1b=7,8b=5), got {args.rounds!r}")
    try:
        import torch  # noqa: F401

        torch_ok = True
    except ImportError:
        torch_ok = False
    if args.worker:
        if args.worker not in OURS:
            ap.error(f"--worker: unknown row {args.worker}")
        args.out.mkdir(parents=True, exist_ok=True)
        part = run_preset(args.presets, rounds_of(args.rounds, args.presets), args.tokens, torch_ok and args.worker ==
                          "baseline", args.device, args.latency_rounds, args.fresh_every, (args.worker,))
        (args.out / WORKER_FILE).write_text(json.dumps(part, default=str))
        return 0
    wanted = {"baseline", "optimized", *(args.configs.split(",") if args.configs else OURS)}
    if unknown := sorted(wanted - OURS.keys()):
        ap.error(f"--configs: unknown {', '.join(unknown)} (known: {', '.join(OURS)})")
    keys = tuple(k for k in OURS if k in wanted)  # in the table's order
    if args.fresh_every < 0:
        ap.error(f"--fresh-every must be 0 or more, got {args.fresh_every}")
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    report: dict = {"git": git_info(), "tokens": args.tokens, "prompt": 32, "fresh_every": args.fresh_every,
                    "presets": {}, **({"traced_only": True} if args.traced_only else {}),
                    **({"isolated": True} if args.isolate else {})}
    for name in args.presets.split(",") if not args.traced_only else ():
        if args.isolate:
            report["presets"][name] = run_isolated(args, name, keys)
        else:
            report["presets"][name] = run_preset(name, rounds_of(args.rounds, name), args.tokens, torch_ok, args.device,
                                                   args.latency_rounds, args.fresh_every, keys)
        print(f"[{time.time() - t0:.0f}s] {name} done", flush=True)
    for name in args.presets.split(","):  # traced last: CUPTI stays loaded in the process once used
        session = Session(name, args.device, seed=0)
        gpu, pr = session.device.is_gpu, report["presets"].setdefault(name, {})
        if "copy_bw_gbs" not in pr:  # --traced-only: no table measured it
            pr["copy_bw_gbs"] = copy_bandwidth_gbs(session.device.cp) if gpu else float("nan")
        bw = pr["copy_bw_gbs"]
        # traced from the first and from the last of POSITIONS: where the time goes, and where the growth the
        # latency table shows goes, kernel by kernel (the floors at each end's mean context)
        first, last = POSITIONS[0], POSITIONS[-1]
        kernels = where_time_goes(session, GROWTH_TOKENS, first) if gpu else []
        pr["where_time_goes_optimized"] = with_floors(kernels, session.preset, first + GROWTH_TOKENS // 2, bw)
        at_end = where_time_goes(session, GROWTH_TOKENS, last) if gpu else []
        if kernels and at_end:
            pr["growth_by_kernel"] = {
                "short_positions": [first, first + GROWTH_TOKENS - 1],
                "long_positions": [last, last + GROWTH_TOKENS - 1],
                "rows": growth_by_kernel(pr["where_time_goes_optimized"],
                                         with_floors(at_end, session.preset, last + GROWTH_TOKENS // 2, bw))}
        report["device"] = session.device.info()  # the device every preset ran on (one per process)
        print(f"[{time.time() - t0:.0f}s] {name} traced", flush=True)
    report["copy_bw_gbs"] = float(np.median([v["copy_bw_gbs"] for v in report["presets"].values()]))
    save(args.out, "decode", report, positions=POSITIONS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
