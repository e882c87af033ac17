"""GPU task (issue 12), one device call: a whole decode token as ONE persistent launch
(runner/kernels/token.cu) against the same token as one launch a kernel, on the same weights.

bench/persistent_chain.py found that a grid barrier on a growing counter costs less than a launch
(1.77 µs a boundary on the H200's 1b) but measured the projections alone; this runs every phase of
the token (RMSNorm, QKV, attention with RoPE and the cache write, the merge, o_proj, SwiGLU, down,
LM head, argmax) in one launch with 6 barriers a layer. Its attention is attn_share's, so the
comparison rows are OwnForward with that build (``attn_share_kv``) and with ``optimized``'s.
Per preset (random fp16 weights, every layer, context position + 1):
- check: the persistent token's logits and greedy pick against OwnForward's with the attn_share build
  (the same arithmetic in the same order: the logits should match to the last bit); a variant that
  gives another pick, or whose barrier gave up, is reported and not timed;
- each variant captured as a CUDA graph and replayed back to back: µs per token, median over the rounds
  (variants in a random order each round, an A/A pair of the persistent launch that loads ahead), and the bytes the
  token reads (weights + KV cache) over that time against the copy bandwidth of the same run;
- a build with phase stamps (token.cu's TOKEN_STAMPS), launched eagerly after the timing: each kind of
  phase's µs a token, split into the slowest block's work and the barrier, with its GB/s.
Writes persistent_token.json/.md under --out; prints the table.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.pdl_variants import (chosen_variants, graph_replay_us, probe_header, probe_parser,  # noqa: E402
                                run_probe, token, token_inputs, weights)
from runner.own_kernels import (ATT_FILL_DEFINE, ATT_SHARE_DEFINES, ATT_THREADS, SOURCE, OwnForward,  # noqa: E402
                                resident_blocks)
from runner.device import capture_graph  # noqa: E402
from runner.presets import get_preset  # noqa: E402

CHAIN_SOURCE = SOURCE.parent / "chain.cu"
TOKEN_SOURCE = SOURCE.parent / "token.cu"
THREADS = 256  # token.cu's TOKEN_THREADS
REPLAYS = 20
BLOCKS_MAX = 2048  # chain.cu's barrier words
# clocks a block waits at a barrier before it gives up (about 10 ms: a phase takes at most ~0.2 ms, and a
# token whose every barrier gave up still ends within a second or two)
SPIN_LIMIT = 20_000_000
# token.cu's TokenLayer and TokenArgs, field for field (tests/bench/test_persistent_token.py reads the C)
LAYER_FIELDS = ("wq", "wk", "wv", "wo", "wg", "wu", "wd", "attn_norm", "ffn_norm", "cache_k", "cache_v")
LAYER_DTYPE = np.dtype([(f, np.uint64) for f in LAYER_FIELDS])
WEIGHT_KEYS = {"wg": "w_gate", "wu": "w_up", "wd": "w_down"}  # bench/pdl_variants.weights' names, where they differ
ARG_POINTERS = ("layers", "embed", "lm_head", "final_norm", "inv_freq", "tok", "pos", "slot", "x", "q", "k", "v",
                "attn", "ff", "logits", "part_o", "part_ml", "arg_v", "arg_i", "next_id", "stamps")
ARG_INTS = ("n_layers", "hidden", "kv_dim", "ffn", "vocab", "n_heads", "n_kv", "d", "max_ctx", "splits", "per_kv",
            "pad")
ARG_FLOATS = ("eps", "scale", "lm_scale", "pad2")
ARGS_DTYPE = np.dtype([(f, np.uint64) for f in ARG_POINTERS] + [(f, np.int32) for f in ARG_INTS]
                      + [(f, np.float32) for f in ARG_FLOATS])


@dataclass(frozen=True)
class Variant:
    persistent: bool
    defines: tuple[str, ...] = ()  # decode.cu's (OwnForward) or the persistent build's extra defines


VARIANTS = {
    "one launch a kernel, optimized's build": Variant(False, (ATT_FILL_DEFINE,)),
    "one launch a kernel, attn_share build": Variant(False, ATT_SHARE_DEFINES),
    "persistent, 1 block an SM": Variant(True, ("-DTOKEN_MIN_BLOCKS=1",)),
    "persistent, 2 blocks an SM": Variant(True, ("-DTOKEN_MIN_BLOCKS=2",)),
    # the warp's next row loaded before it reduces the current one (token.cu's TOKEN_AHEAD), with an A/A pair
    "persistent, next row loaded ahead": Variant(True, ("-DTOKEN_MIN_BLOCKS=1", "-DTOKEN_AHEAD=1")),
    "persistent, next row loaded ahead (A/A)": Variant(True, ("-DTOKEN_MIN_BLOCKS=1", "-DTOKEN_AHEAD=1")),
    # twice the warps an SM: the row heads at 4 loads a lane so that 128 registers spill less (260 bytes)
    "persistent, 2 blocks an SM, next row ahead, 4 loads a lane": Variant(True, ("-DTOKEN_MIN_BLOCKS=2",
                                                                                 "-DTOKEN_AHEAD=1", "-DPRE_GEMV=4")),
    # the same with the global timer read at each barrier: its phase table says where the time goes
    "persistent, next row loaded ahead, phase stamps": Variant(True, ("-DTOKEN_MIN_BLOCKS=1", "-DTOKEN_AHEAD=1",
                                                                      "-DTOKEN_STAMPS=1")),
}
STAMPED_LAUNCHES = 20  # eager launches of a stamped build whose phase times are medians
REFERENCE = "one launch a kernel, attn_share build"


LAYER_PHASES = ("RMSNorm + QKV", "attention", "merge", "o_proj + residual", "RMSNorm + gate/up + SwiGLU",
                "down + residual")
PHASE_NAMES_END = ("final RMSNorm + LM head", "argmax per block", "argmax merge")


def phase_kinds(n_layers: int) -> list[str]:
    """The name of each of token.cu's phases, in launch order."""
    return ["embed", *LAYER_PHASES * n_layers, *PHASE_NAMES_END]


def phases(n_layers: int) -> int:
    """token.cu's token_phases: embed, 6 a layer, the LM head, the argmax's two."""
    return len(phase_kinds(n_layers))


def phase_mb(p, kv_bytes: int) -> dict[str, float]:
    """MB each kind of phase must read per token (weights; the attention's KV cache)."""
    h, kv, f = p.hidden, p.kv_dim, p.ffn
    per_layer = {"RMSNorm + QKV": (h + 2 * kv) * h, "o_proj + residual": h * h, "RMSNorm + gate/up + SwiGLU": 2 * f * h,
                 "down + residual": h * f}
    mb = {k: 2 * v * p.n_layers / 1e6 for k, v in per_layer.items()}
    return {**mb, "attention": kv_bytes / 1e6, "final RMSNorm + LM head": 2 * p.vocab * h / 1e6}


def phase_table(stamps: np.ndarray, n_layers: int) -> list[dict]:
    """Where a persistent token's time goes, from token.cu's stamps (launches x phases x blocks x 2, ns).

    Per phase and launch: ``us`` from the first block's leaving the barrier before it (the first
    block's start, for the embed) to the first block's leaving the barrier after it (the last block's
    end, for the argmax merge); ``work_us`` to the last block's arrival at that barrier; ``barrier_us``
    the rest; ``spread_us`` the last block's arrival after the median block's. Medians over the launches,
    summed over the layers, one row a kind of phase.
    """
    t = stamps.astype(np.int64)
    arrive, leave = t[..., 0], t[..., 1]  # launches x slots x blocks; the last slot: end (0), start (1)
    start = np.concatenate([leave[:, -1:].min(axis=2), leave[:, :-1].min(axis=2)], axis=1)
    last = arrive.max(axis=2)
    end = np.concatenate([leave[:, :-1].min(axis=2), last[:, -1:]], axis=1)
    cols = {"us": end - start, "work_us": last - start, "barrier_us": end - last,
            "spread_us": last - np.median(arrive, axis=2)}
    rows: dict[str, dict] = {}
    for i, kind in enumerate(phase_kinds(n_layers)):
        row = rows.setdefault(kind, {"phase": kind, "count": 0, **{c: 0.0 for c in cols}})
        row["count"] += 1
        for c, v in cols.items():
            row[c] += float(np.median(v[:, i])) / 1e3
    return list(rows.values())


def timer_step_ns(stamps: np.ndarray) -> int:
    """The smallest step between distinct stamps of one launch: the global timer's resolution, as seen."""
    steps = np.diff(np.unique(stamps[0].astype(np.int64)))
    return int(steps.min()) if steps.size else 0


def smem_bytes(p, group: int) -> int:
    """token.cu's dynamic shared memory: the widest staged vector or attention's ShareSmem."""
    share = 4 * (group * ATT_THREADS * 8 + 2 * group * (ATT_THREADS // 32) + 128)
    return max(2 * p.hidden, 2 * p.ffn, share)


class PersistentToken:
    """token_persistent's module, buffers and argument table for one preset (OwnForward's caches)."""

    def __init__(self, cp, p, w, layers, inv, ck, cv, d_tok, d_pos, d_slot, splits: int, per_kv: int,
                 defines: tuple[str, ...]) -> None:
        group = p.n_heads // p.n_kv_heads
        source = SOURCE.read_text() + CHAIN_SOURCE.read_text() + TOKEN_SOURCE.read_text()
        opts = ("--std=c++17", f"-DATT_SHARE_KV={group}", "-DATT_FILL=4", "-DBARRIER_FLAGS=2", *defines)
        self.mod = cp.RawModule(code=source, options=opts)
        self.fn = self.mod.get_function("token_persistent")
        self.smem = smem_bytes(p, group)
        self.fn.max_dynamic_shared_size_bytes = self.smem
        self.grid = resident_blocks(cp, self.fn, THREADS, self.smem)  # every block resident: the barrier needs it
        if self.grid > BLOCKS_MAX:
            raise RuntimeError(f"{self.grid} blocks, the barrier words hold {BLOCKS_MAX}")
        f16, f32 = cp.float16, cp.float32
        self.bufs = {"x": cp.zeros(p.hidden, f32), "q": cp.zeros(p.hidden, f16), "k": cp.zeros(p.kv_dim, f16),
                     "v": cp.zeros(p.kv_dim, f16), "attn": cp.zeros(p.hidden, f16), "ff": cp.zeros(p.ffn, f16),
                     "logits": cp.zeros(p.vocab, f16), "part_o": cp.zeros(p.n_heads * splits * p.head_dim, f32),
                     "part_ml": cp.zeros(p.n_heads * splits * 2, f32), "arg_v": cp.zeros(self.grid, f32),
                     "arg_i": cp.zeros(self.grid, cp.int32), "next_id": cp.zeros(1, cp.int64),
                     "stamps": cp.zeros((phases(p.n_layers), self.grid, 2), cp.uint64)}
        table = np.zeros(p.n_layers, LAYER_DTYPE)
        for li, layer in enumerate(layers):
            for f in LAYER_FIELDS[:9]:
                table[f][li] = layer[WEIGHT_KEYS.get(f, f)].data.ptr
            table["cache_k"][li], table["cache_v"][li] = ck[li].data.ptr, cv[li].data.ptr
        self.layer_table = cp.asarray(table.view(np.uint8))
        a = np.zeros(1, ARGS_DTYPE)
        ptrs = {"layers": self.layer_table, "embed": w["embed"], "lm_head": w["lm_head"],
                "final_norm": w["final_norm"], "inv_freq": inv, "tok": d_tok, "pos": d_pos, "slot": d_slot,
                **self.bufs}
        for f in ARG_POINTERS:
            a[f][0] = ptrs[f].data.ptr
        for f, v in (("n_layers", p.n_layers), ("hidden", p.hidden), ("kv_dim", p.kv_dim), ("ffn", p.ffn),
                     ("vocab", p.vocab), ("n_heads", p.n_heads), ("n_kv", p.n_kv_heads), ("d", p.head_dim),
                     ("max_ctx", p.max_ctx), ("splits", splits), ("per_kv", per_kv)):
            a[f][0] = v
        a["eps"][0], a["scale"][0], a["lm_scale"][0] = p.norm_eps, p.head_dim ** -0.5, 1.0
        self.args = cp.asarray(a.view(np.uint8))
        self.bar = cp.zeros(32 * (BLOCKS_MAX + 1), cp.uint32)
        self.logits, self.next_id = self.bufs["logits"], self.bufs["next_id"]

    def __call__(self) -> None:
        self.fn((self.grid,), (THREADS,), (self.args, self.bar, np.int64(SPIN_LIMIT)), shared_mem=self.smem)

    def stamps(self, cp, stream, launches: int) -> np.ndarray:
        """token.cu's stamps of ``launches`` eager launches (a TOKEN_STAMPS build): launches x phases x blocks x 2."""
        out = []
        for _ in range(launches):
            with stream:
                self()
            stream.synchronize()
            out.append(self.bufs["stamps"].get())
        return np.stack(out)

    def gave_up(self) -> bool:
        return bool(int(self.bar[2].get()))


class LaunchedToken:
    """OwnForward's token (bench/pdl_variants.py's launches), called like PersistentToken."""

    def __init__(self, own, layers, w) -> None:
        self.own, self.layers, self.w = own, layers, w
        self.logits, self.next_id = own.logits, own.next_id

    def __call__(self) -> None:
        token(self.own, self.layers, self.w)


def run_preset(cp, name: str, rounds: int, pos: int, variants: list[str]) -> dict:
    p = get_preset(name)
    w, layers, wbytes = weights(cp, p)
    ck, cv, inv, d_tok, d_pos, d_slot = token_inputs(cp, p, pos)
    sms = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["multiProcessorCount"]
    per_kv = max(1, sms // p.n_kv_heads)  # attn_share's splits a KV head, as OwnForward picks them
    stream = cp.cuda.Stream(non_blocking=True)
    cp.cuda.Device().synchronize()
    ref = OwnForward(cp, p, w, layers, None, inv, ck, cv, d_tok, d_pos, d_slot, pdl=True,
                     defines=VARIANTS[REFERENCE].defines, att_slots=per_kv)
    runs, owners, graphs, outputs, info = {}, [ref], {}, {}, {}
    for label in variants:
        v = VARIANTS[label]
        if v.persistent:
            pt = PersistentToken(cp, p, w, layers, inv, ck, cv, d_tok, d_pos, d_slot, ref.splits, per_kv, v.defines)
            runs[label], info[label] = pt, {"grid": pt.grid, "shared_mem": pt.smem}
        else:
            own = ref if label == REFERENCE else OwnForward(cp, p, w, layers, None, inv, ck, cv, d_tok, d_pos, d_slot,
                                                            pdl=True, defines=v.defines)
            runs[label], info[label] = LaunchedToken(own, layers, w), {"grid": None, "shared_mem": 0}
            owners.append(own)
    cp.cuda.Device().synchronize()  # the tables and buffers were written on the legacy stream
    for label in variants:  # each once, eagerly, for the check
        run = runs[label]
        with stream:
            run.logits.fill(np.nan)
            run.next_id.fill(-1)
            run()
        stream.synchronize()
        outputs[label] = (run.logits.get().astype(np.float32), int(run.next_id.get()[0]))
        if VARIANTS[label].persistent and run.gave_up():
            info[label]["barrier_gave_up"] = True
    if REFERENCE not in outputs:
        with stream:
            LaunchedToken(ref, layers, w)()
        stream.synchronize()
        outputs[REFERENCE] = (ref.logits.get().astype(np.float32), int(ref.next_id.get()[0]))
    ref_logits, ref_id = outputs[REFERENCE]
    for label in variants:
        logits, nid = outputs[label]
        finite = bool(np.isfinite(logits).all())
        info[label].update(same_pick=nid == ref_id, finite=finite,
                           max_logit_diff=float(np.max(np.abs(logits - ref_logits))) if finite else float("inf"),
                           barrier_gave_up=info[label].get("barrier_gave_up", False))
        # timed only when it computes the token (a wrong one's time says nothing) and never hangs
        info[label]["timed"] = finite and nid == ref_id and not info[label]["barrier_gave_up"]
        if info[label]["timed"]:
            with stream:
                graphs[label] = capture_graph(stream, runs[label])
    times: dict[str, list[float]] = {k: [] for k in variants}
    order = np.random.default_rng(3)
    for _ in range(rounds):
        for label in order.permutation([k for k in variants if k in graphs]):
            times[label].append(graph_replay_us(cp, graphs[label], stream, REPLAYS, warmup=3))
    kv_bytes = p.kv_bytes_per_token(pos + 1)
    mb = phase_mb(p, kv_bytes)
    for label in graphs:  # after the timing: the stamped builds' phase tables
        if "-DTOKEN_STAMPS=1" in VARIANTS[label].defines:
            stamps = runs[label].stamps(cp, stream, STAMPED_LAUNCHES)
            info[label]["phases"] = [{**r, "mb": mb.get(r["phase"])} for r in phase_table(stamps, p.n_layers)]
            info[label]["timer_step_ns"] = timer_step_ns(stamps)
    out = {"weights_mb": wbytes / 1e6, "kv_mb": kv_bytes / 1e6, "position": pos, "phases": phases(p.n_layers),
           "per_kv": per_kv, "variants": {}}
    for label in variants:
        t = times[label] or [float("nan")]
        us = float(np.median(t))
        out["variants"][label] = {**info[label], "us": us, "min_us": float(np.min(t)), "max_us": float(np.max(t)),
                                  "gbs": (wbytes + kv_bytes) / us / 1e3,
                                  "barrier_gave_up": info[label]["barrier_gave_up"]
                                  or (VARIANTS[label].persistent and runs[label].gave_up())}
    del graphs, runs, owners, layers, w
    cp.get_default_memory_pool().free_all_blocks()
    return out


def main() -> int:
    ap = probe_parser(__doc__, VARIANTS, 9, position=True)
    args = ap.parse_args()
    variants = chosen_variants(ap, args.variants, VARIANTS)
    presets = args.presets.split(",")
    for name in presets:
        try:
            ctx = get_preset(name).max_ctx
        except (KeyError, ValueError) as e:
            ap.error(str(e))
        if not 0 <= args.position < ctx:
            ap.error(f"--position must be in [0, {ctx}) for {name}, got {args.position}")
    import cupy as cp

    run_probe(args.out, "persistent_token", {**probe_header(cp, REPLAYS, args.rounds),
                                             "stamped_launches": STAMPED_LAUNCHES}, presets,
              lambda name: run_preset(cp, name, args.rounds, args.position, variants))
    return 0


if __name__ == "__main__":
    sys.exit(main())
