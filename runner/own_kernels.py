"""Our own decode kernels (runner/kernels/decode.cu) and the forward pass built from them.

Every buffer is allocated once and every per-token length is read from device memory, so the
whole token can be captured as one CUDA graph and replayed (``cuda_graph``); without the graph the
same launches run eagerly (``own_kernels``), so the kernels' gain and the graph's can be told
apart. Below the GPU code: NumPy versions of the kernels' algorithms (split attention, fused
SwiGLU, argmax tie rule) that the CPU tests check against the plain math.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SOURCE = Path(__file__).with_name("kernels") / "decode.cu"
CHUNK = 64  # attention positions per split (decode.cu's SPLIT)
ATT_THREADS = 256  # threads per attention split block (decode.cu's ATT_THREADS)
ATT_POS = 4  # positions per thread in attn_split (decode.cu's ATT_POS)
MAX_SPLITS = 64  # attention splits attn_combine can merge (decode.cu's MAX_SPLITS)
ATT_GROUP_DEFINE = "-DATT_GROUP=1"  # decode.cu built so attn_split groups query heads (attn_group_heads)
ATT_FILL_DEFINE = "-DATT_FILL=2"  # decode.cu built so a split fills attn_split's block past a wave (attn_fill_split)
# decode.cu built so a split past a wave is the shortest that keeps one wave, 5 positions a thread (attn_fit_wave)
ATT_FIT_DEFINES = ("-DATT_FILL=3", "-DATT_POS=5")
# the attention merge done by o_proj's blocks (gemv_residual_merge), no attn_combine launch (attn_merge_in_oproj)
MERGE_DEFINE = "-DMERGE_IN_OPROJ=1"
# the attention merge done by attn_split's block that writes a head's last split (a ticket a head), no
# attn_combine launch (attn_merge_last)
MERGE_LAST_DEFINE = "-DMERGE_LAST=1"
# decode.cu built with attn_share (a KV head's query heads share its rows, a block an SM) and its split
# rule (attn_share_kv); OwnForward sets ATT_SHARE_KV to the preset's query heads a KV head
ATT_SHARE_DEFINES = ("-DATT_SHARE_KV=1", "-DATT_FILL=4")
ROWS_PER_BLOCK = 8  # gemv: one warp per row, 256 threads
X_STAGE = 1  # decode.cu's X_STAGE: the GEMVs stage x in dynamic shared memory (x_stage_bytes) once they may read it
# decode.cu built so the QKV and gate/up GEMVs compute the RMSNorm they read, a block each from the residual,
# and no norm launch precedes them (norm_in_proj; the final norm before the LM head stays a launch)
NORM_DEFINE = "-DNORM_IN_PROJ=1"
# the same launches left out, each warp of QKV and gate/up summing the residual's squares as its row reads x * gain
# and scaling its product at the end (norm_in_dot: no block reduction before the products; not rmsnorm's bits)
NORM_DOT_DEFINE = "-DNORM_IN_PROJ=2"
# the norm as a scale with nothing added to the products: o_proj and down (and the first norm) leave x * gain in
# fp16 and their blocks' sums of squares, QKV and gate/up scale their products by the norm's inv at the end
# (norm_as_scale: 31 norm launches fewer; not rmsnorm's bits)
NORM_SCALE_DEFINE = "-DNORM_IN_PROJ=3"
# decode.cu built so o_proj's and down's GEMV write the next norm's output in the block that finishes last, and
# no norm launch follows them (norm_in_residual; the norm after the embedding stays a launch)
NORM_RESID_DEFINE = "-DNORM_IN_RESID=1"
# decode.cu's load order (the early_loads switch, in optimized): the loads meant to run before a kernel's
# PDL wait made coherent, so ptxas keeps them there (EARLY_LOADS); the dependent trips after the wait
# issued together (HOIST_LOADS)
EARLY_DEFINE, HOIST_DEFINE = "-DEARLY_LOADS=1", "-DHOIST_LOADS=1"
# decode.cu tuned for weights that load before the wait (the overlap_tuning switch, in optimized): the QKV and
# gate/up GEMVs load 8 chunks a lane before it (the QKV at 4 blocks an SM: 8 spill under 6), the RMSNorm and
# the attention merge let the next projection launch (and load) at their start, and the residual GEMVs
# (o_proj, down) load 16 a lane where their blocks still fit one wave (RESID_DEEP_WHERE_ONE_WAVE)
OVERLAP_DEFINES = ("-DPRE_QKV=8", "-DQKV_MIN_BLOCKS=4", "-DPRE_SWIGLU=8", "-DNORM_TRIGGER_START=1",
                   "-DCOMBINE_TRIGGER_START=1")
RESID_DEEP_WHERE_ONE_WAVE = "-DRESID_DEEP_WHERE_ONE_WAVE=1"  # OwnForward's rule, not decode.cu's: resid_depth
RESID_DEEP, RESID_DEEP_BLOCKS_PER_SM = "-DPRE_RESID=16", 2  # 16 a lane: 112 registers, 2 blocks an SM
# Two ways back from 16 a lane, so that a block of the next projection fits beside two of a residual GEMV (registers
# are allocated 8 a thread: gate/up's 90 take 96, 24576 a block; the QKV's 64; the residual GEMV's 112 at 16 a lane,
# 64 at 8, of an SM's 65536): OPROJ_SHORT, o_proj alone at 8 (its 2048-wide rows need 8; decode.cu's
# gemv_residual_short), down keeping 16; RESID_SHORT, both at 8 (OwnForward's rule, not decode.cu's: resid_depth
# leaves RESID_DEEP out), so blocks of gate/up, of down and of the next QKV fit beside the kernel before them too
OPROJ_SHORT_DEFINE, RESID_SHORT_DEFINE = "-DPRE_OPROJ=8", "-DRESID_SHORT=1"
# attn_split bounded to 4 blocks an SM (the attn_four_blocks switch): 64 registers, no spill, so one of its blocks
# fits on an SM beside the 1b's three QKV blocks
ATT_FOUR_BLOCKS_DEFINE = "-DATT_MIN_BLOCKS=4"
# attn_combine loads 16 splits' outputs beside their (m, l), not 8 (the attn_merge_ahead switch): one trip after its
# wait up to 1024 positions, where from 512 on (9 splits of 64) it made two. No faster on the H100 (774b7b8)
MERGE_AHEAD_DEFINE = "-DCOMBINE_AHEAD=16"
# Every kernel prefers 75% of its SM's unified L1 as shared memory (the smem_carveout switch, in optimized): one
# shared-memory configuration for all of them, where the driver otherwise sizes each kernel's from its own need.
# OwnForward's rule, not decode.cu's (the macro is unused there: the same PTX). Measured on the H100 (one token as a
# graph, reports/bench/pdl_variants_carveout_pos*_h100_38707b2): the 1b at position 96 973.0 µs against 1009.6 and
# 1004.8 (A/A), at 512 1022.9 against 1052.6 / 1049.3; the 8b 5216.4 against 5228.5 / 5228.7 and 5338.6 against
# 5330.1 / 5330.4. 100% gives the 1b as much and costs the 8b 2% (an L1 of 28 KB); 25% and 50% give the 1b less.
SMEM_CARVEOUT_DEFINE = "-DSMEM_CARVEOUT=75"
# sm_config_reset: shared memory each block of configure_sms takes (two blocks an SM), more than a configuration the
# driver picks for a kernel that needs none can hold, so every SM changes to the one our kernels prefer
CONFIGURE_SMEM = 64 * 1024
FILL_THREADS, FILL_BLOCKS = 256, 1024  # own_reset's fill_words: a grid-stride loop over at most this many blocks
NORM_THREADS, NORM_PER_THREAD = 1024, 8  # rmsnorm: one block, each thread's values in registers
# The RMSNorm is a launch of its own. Folded into the projection that reads it (the residual's writer
# leaving partial sums of squares) it measured slower and was removed (bench/pdl_variants_fold_norm_5601ba5.md,
# PDL: 1b 1211.9 against 1192.9 µs a token, 8b 5793.1 against 5640.6): the one-block norm kernel costs
# little, because the next projection loads its weights while it runs, and folded, every warp of the
# projection waits for the partials and the residual before its first product.
AHEAD_RANGES = 3  # (address, bytes) pairs a GEMV takes as arguments for l2_ahead (decode.cu's AHEAD_RANGES)
AHEAD_SITES = ("qkv", "o_proj", "down")  # the GEMVs that pull later weights into L2 (l2_ahead)
L2_AHEAD_MB = 16  # the l2_ahead switch: MB each site pulls ahead (bench/pdl_variants.py compares others)
ARGMAX_BLOCKS = 264  # two blocks per SM of an H100 read the vocabulary in argmax_partial
ARGMAX_THREADS = 256


class OwnForward:
    """Preallocated buffers + launches for one token on the GPU."""

    def __init__(self, cp: Any, preset: Any, w: dict[str, Any], layers: list[dict[str, Any]],
                 lm_scale: float | None, inv_freq: Any, cache_k: Any, cache_v: Any,
                 d_tok: Any, d_pos: Any, d_slot: Any, pdl: bool = False, defines: tuple[str, ...] = (),
                 zeros: Any = None, att_grid_splits: int = 0, att_slots: int = 0,
                 l2_ahead_mb: float = 0.0, carveout: int | None = None,
                 carveout_kernels: tuple[str, ...] = ()) -> None:
        p = preset
        for n in (p.hidden, p.ffn):
            if n % 8:
                raise ValueError(f"own kernels need widths divisible by 8, got {n}")
        if p.hidden > NORM_THREADS * NORM_PER_THREAD:
            raise ValueError(f"own kernels need hidden at most {NORM_THREADS * NORM_PER_THREAD}, got {p.hidden}")
        lanes = p.head_dim // 8  # attn_split: 16-byte loads, a row's lanes inside one warp, RoPE pairs in two
        self.att_pos = att_pos(defines)
        if p.head_dim % 16 or 32 % lanes or CHUNK * lanes > self.att_pos * ATT_THREADS:
            raise ValueError(f"own kernels need head_dim a multiple of 16 with head_dim/8 dividing 32 and at most "
                             f"{self.att_pos * ATT_THREADS * 8 // CHUNK}, got {p.head_dim}")
        # decode.cu's ATT_FILL (-DATT_FILL=N among ``defines``; 0 without): 1 fills every split, 2 past one
        # wave, 3 fits one wave past it; ``chunk``: the shortest split it can use, which sizes the
        # partial-output buffers
        self.fill = att_fill(p.head_dim, defines)
        self.share = define_value(defines, "ATT_SHARE_KV", 0) > 0  # attn_share in place of attn_split
        if self.share:
            group = p.n_heads // p.n_kv_heads
            if p.n_heads % p.n_kv_heads or group > 8 or self.fill != 4:
                raise ValueError(f"attn_share needs at most 8 query heads a KV head and ATT_FILL=4, got "
                                 f"{p.n_heads} / {p.n_kv_heads} with ATT_FILL={self.fill}")
            defines = (*(x for x in defines if not x.startswith("-DATT_SHARE_KV=")), f"-DATT_SHARE_KV={group}")
        if not self.fill:  # where filling changes no split (head_dim 128), the build that was measured
            defines = tuple(x for x in defines if not x.startswith("-DATT_FILL="))
        # a filled split holds exactly what the block's threads do, so the head_dim check above covers it
        self.chunk = positions_per_split(p.head_dim, self.fill == 1, self.att_pos)
        self.cp, self.p, self.w, self.layers = cp, p, w, layers
        self.merge_in_oproj = define_value(defines, "MERGE_IN_OPROJ", 0) == 1
        if self.merge_in_oproj and p.n_heads * p.head_dim != p.hidden:
            raise ValueError(f"the merge in o_proj needs n_heads * head_dim == hidden, got {p.n_heads} x "
                             f"{p.head_dim} and {p.hidden}")
        self.merge_last = define_value(defines, "MERGE_LAST", 0) == 1
        if self.merge_last and (self.share or self.merge_in_oproj):
            raise ValueError("the merge in attn_split's last block needs attn_split and attn_combine's output "
                             "(not attn_share, not the merge in o_proj)")
        self.lm_scale = np.float32(lm_scale if lm_scale is not None else 1.0)
        self.inv_freq, self.cache_k, self.cache_v = inv_freq, cache_k, cache_v
        self.d_tok, self.d_pos, self.d_slot = d_tok, d_pos, d_slot
        if RESID_DEEP_WHERE_ONE_WAVE in defines:
            defines = resid_depth(defines, p.hidden, sm_count(cp))
        # ``defines``: -DNAME=VALUE for the source's tunables (bench/pdl_variants.py compares them)
        mod = cp.RawModule(code=SOURCE.read_text(), options=("--std=c++17", *defines))
        names = ("gemv", "gemv_qkv", "gemv_residual", "gemv_residual_short", "gemv_residual_merge", "gemv_swiglu",
                 "rmsnorm", "embed", "attn_split", "attn_combine", "argmax", "argmax_partial", "argmax_final",
                 "spin_ns", "advance", "configure_sms", "fill_words", *(("attn_share",) if self.share else ()))
        self.k = {n: mod.get_function(n) for n in names}  # loads the module now, not inside a capture
        self.defines = defines
        # o_proj at a depth of its own (decode.cu's gemv_residual_short) where the build sets PRE_OPROJ
        self.oproj_kernel = oproj_kernel(defines)
        # norm_in_proj: QKV and gate/up compute the RMSNorm of the residual themselves (NORM_DEFINE, or
        # NORM_DOT_DEFINE: norm_in_dot); the forward leaves out the norm launches before them
        self.norm_in_proj = define_value(defines, "NORM_IN_PROJ", 0) in (1, 2)
        # norm_in_residual: o_proj and down write hn (the norm of the residual they leave) themselves; the
        # forward leaves out the norm launches after them. The merge in o_proj (gemv_residual_merge) has no
        # such tail: with it the norm after o_proj stays a launch.
        self.norm_in_resid = define_value(defines, "NORM_IN_RESID", 0) == 1
        self.norm_in_oproj = self.norm_in_resid and not self.merge_in_oproj
        # norm_as_scale: o_proj and down leave hn = x * gain and ``parts`` (their blocks' sums of squares), which
        # QKV and gate/up read in place of the norm's output; the first norm writes the same (rmsnorm, fold)
        self.norm_as_scale = define_value(defines, "NORM_IN_PROJ", 0) == 3
        if self.norm_as_scale and (self.norm_in_resid or self.merge_in_oproj):
            raise ValueError("norm_as_scale needs o_proj and down as gemv_residual (not the merge in o_proj) "
                             "and the norm after them left to it (not norm_in_residual)")
        if self.norm_as_scale and p.hidden % (4 * ROWS_PER_BLOCK):  # the partials copied 16 bytes at a time
            raise ValueError(f"norm_as_scale needs hidden a multiple of {4 * ROWS_PER_BLOCK}, got {p.hidden}")
        widest = max(x_stage_bytes(defines, p.ffn), x_stage_bytes(defines, p.hidden, normed=True))
        if widest > 48 * 1024:  # past the default limit of dynamic shared memory a block
            for n in ("gemv", "gemv_qkv", "gemv_residual", "gemv_residual_short", "gemv_swiglu"):
                self.k[n].max_dynamic_shared_size_bytes = widest
        if carveout is None:  # the smem_carveout switch's define (SMEM_CARVEOUT_DEFINE); -1: the driver's choice
            carveout = define_value(defines, "SMEM_CARVEOUT", -1)
        if carveout >= 0:  # the percent of L1 the kernels prefer as shared memory. Kernels whose
            # shared-memory configurations differ may not share an SM, so under PDL one kernel's blocks launched
            # early could wait for SMs that the kernel before it holds to drain (the reason we suppose, not one we
            # saw). ``carveout_kernels``: only these (all by default; a probe's knob)
            for n, f in self.k.items():
                if not carveout_kernels or n in carveout_kernels:
                    f.preferred_shared_memory_carveout = carveout
        self.carveout = carveout
        # sm_config_reset's kernel, launched as it is (not with PDL: nothing of ours runs beside it)
        self.configure = self.k["configure_sms"]
        self.configure.max_dynamic_shared_size_bytes = CONFIGURE_SMEM
        self.filler = self.k["fill_words"]  # own_reset's, launched as it is too
        if pdl:  # the same kernels, launched so that each may start while the previous one drains
            self.k = {n: PdlKernel(cp, f) for n, f in self.k.items()}
        f16, f32 = cp.float16, cp.float32
        zeros = zeros or cp.zeros  # ``zeros``: the pipeline's arena (runner/arena.py)
        # configure_sms's never-taken store: made at its first launch, from CuPy's pool, not the arena, so that the
        # buffers carved after it keep the offsets optimized was measured with
        self.sink = None
        # attn_share (ATT_FILL=4): ``att_slots`` is the splits a KV head gets, a block an SM (the SMs over
        # the KV heads); the partial buffers hold the most splits any context uses under that rule
        # (``att_slots`` sets another count: bench/pdl_variants.py compares them)
        sms = sm_count(cp) if self.share else 0
        share_slots = att_slots or max(1, sms // p.n_kv_heads)
        self.splits = (most_splits(p.head_dim, p.max_ctx, share_slots, self.att_pos) if self.share
                       else -(-p.max_ctx // self.chunk))
        if self.splits > MAX_SPLITS:
            raise ValueError(f"own kernels combine at most {MAX_SPLITS} attention splits ({MAX_SPLITS * self.chunk} "
                             f"positions), max_ctx is {p.max_ctx}")
        # attn_split's grid: a block per split, or ``att_grid_splits`` blocks a head that take turns
        self.att_grid = min(self.splits, att_grid_splits) if att_grid_splits > 0 else self.splits
        # built with -DATT_GROUP=1 (attn_group_heads), attn_split groups a KV head's query heads once
        # its blocks are past the ones the GPU holds at once (heads_per_block); ``att_slots`` sets that
        # count by hand (1: always grouped). attn_fill_split (ATT_FILL=2) fills the splits past that count.
        # Unused without the defines.
        self.adaptive = ATT_GROUP_DEFINE in defines or self.fill in (2, 3, 4)  # decides from the position
        self.att_slots = att_slots or (share_slots if self.share else
                                       resident_blocks(cp, mod.get_function("attn_split"), ATT_THREADS)
                                       if self.adaptive else 1 << 30)
        self.x = zeros(p.hidden, f32)  # the residual stream
        self.hn = zeros(p.hidden, f16)  # the normalised residual (rmsnorm's output)
        self.q = zeros(p.hidden, f16)
        self.kk = zeros(p.kv_dim, f16)
        self.v = zeros(p.kv_dim, f16)
        self.attn = zeros(p.hidden, f16)
        self.ff = zeros(p.ffn, f16)
        self.logits = zeros(p.vocab, f16)
        self.part_o = zeros(p.n_heads * self.splits * p.head_dim, f32)
        self.part_ml = zeros(p.n_heads * self.splits * 2, f32)
        self.next_id = zeros(1, cp.int64)
        self.hist = zeros(p.max_ctx, cp.int64)  # run_ahead: the pick made at each position
        self.arg_v = zeros(ARGMAX_BLOCKS, f32)
        self.arg_i = zeros(ARGMAX_BLOCKS, cp.int32)
        # norm_as_scale: the residual's sums of squares, a float a block of gemv_residual (rows hidden)
        self.parts = zeros(-(-p.hidden // ROWS_PER_BLOCK), f32)
        self.ticket = zeros(1, cp.uint32)  # norm_in_residual: blocks of a residual GEMV done (its last resets it)
        # attn_merge_last: splits of each query head written (the block that merges resets its counter)
        self.att_tickets = zeros(p.n_heads, cp.uint32)
        # l2_ahead: per layer and site, the ranges that GEMV's warps pull into L2 once their rows are read (0: none)
        self.ahead = ahead_args(ahead_plan(layers, w["lm_head"], int(l2_ahead_mb * 2 ** 20)) if l2_ahead_mb > 0
                                else [dict.fromkeys(AHEAD_SITES, []) for _ in layers])

    # one launch each; ``i32``/``f32`` keep argument types exact for the C signatures
    def _gemv(self, W: Any, x: Any, y: Any, rows: int, cols: int, scale: float = 1.0) -> None:
        """y = W x * scale."""
        self.k["gemv"](((rows + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK,), (32 * ROWS_PER_BLOCK,),
                       (W, x, y, np.int32(rows), np.int32(cols), np.float32(scale)),
                       shared_mem=x_stage_bytes(self.defines, cols))

    def rmsnorm(self, gain: Any, scale: bool = False) -> None:
        """hn = RMSNorm(x) * gain: what the next projection reads; with ``scale`` (norm_as_scale's first norm)
        hn = x * gain and the sum of the squares in ``parts`` (the next QKV applies the norm)."""
        self.k["rmsnorm"]((1,), (NORM_THREADS,), (self.x, gain, self.hn, np.int32(self.p.hidden),
                                          np.float32(self.p.norm_eps), self.parts if scale else np.uint64(0)))

    @property
    def _norm_source(self) -> Any:
        """What QKV and gate/up read as ``resid``: the residual (norm_in_proj, norm_in_dot) or, with
        norm_as_scale, the partial sums of squares its writer left."""
        return self.parts if self.norm_as_scale else self.x

    def qkv(self, layer: dict[str, Any], li: int) -> None:
        """The Q, K, V projections of ``hn`` in one launch (``li``: the layer, for its ahead table); with
        ``norm_in_proj``, of RMSNorm(x) * attn_norm computed by the launch."""
        p = self.p
        rows = p.hidden + 2 * p.kv_dim
        self.k["gemv_qkv"](((rows + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK,), (32 * ROWS_PER_BLOCK,),
                           (layer["wq"], layer["wk"], layer["wv"], self.hn, self.q, self.kk, self.v,
                            np.int32(p.hidden), np.int32(p.kv_dim), np.int32(p.kv_dim), np.int32(p.hidden),
                            self._norm_source, layer["attn_norm"], np.float32(p.norm_eps), *self.ahead[li]["qkv"]),
                           shared_mem=x_stage_bytes(self.defines, p.hidden, normed=True))

    def proj(self, which: str, layer: dict[str, Any]) -> None:
        """One of q/k/v alone, of ``hn`` (the ``qkv_streams`` fork runs these on three streams)."""
        p = self.p
        out, rows = {"wq": (self.q, p.hidden), "wk": (self.kk, p.kv_dim), "wv": (self.v, p.kv_dim)}[which]
        self._gemv(layer[which], self.hn, out, rows, p.hidden)

    def embed(self) -> None:
        self.k["embed"](((self.p.hidden + 255) // 256,), (256,), (self.w["embed"], self.d_tok, self.x,
                                                                  np.int32(self.p.hidden)))

    def attention(self, li: int) -> None:
        """RoPE, this token's KV-cache write and split attention in one launch, then the merge (or, with
        ``merge_in_oproj``, the merge left to o_proj's blocks: ``attn`` is written by o_proj; with
        ``merge_last``, done by attn_split's block that writes a head's last split)."""
        p = self.p
        kernel, heads = ("attn_share", p.n_kv_heads) if self.share else ("attn_split", p.n_heads)
        self.k[kernel]((heads, self.att_grid), (ATT_THREADS,),
                             (self.q, self.kk, self.v, self.cache_k[li], self.cache_v[li], self.d_pos, self.d_slot,
                              self.inv_freq, self.part_o, self.part_ml,
                              np.int32(p.n_heads), np.int32(p.n_kv_heads), np.int32(p.head_dim),
                              np.int32(p.max_ctx), np.float32(p.head_dim ** -0.5), np.int32(self.splits),
                              np.int32(self.att_slots), *((self.attn, self.att_tickets) if self.merge_last else ())))
        if self.merge_in_oproj or self.merge_last:
            return
        self.k["attn_combine"]((p.n_heads,), (p.head_dim,),
                               (self.part_o, self.part_ml, self.attn, np.int32(self.splits), np.int32(p.head_dim),
                                self.d_pos, np.int32(self.att_slots)))

    def _residual(self, W: Any, x: Any, cols: int, ahead: list, gain: Any, kernel: str = "gemv_residual") -> None:
        """resid += W x (o_proj, down); with ``norm_in_resid`` also hn = RMSNorm(resid) * ``gain``, with
        ``norm_as_scale`` hn = resid * ``gain`` and the blocks' sums of squares in ``parts``."""
        p = self.p
        self.k[kernel](((p.hidden + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK,), (32 * ROWS_PER_BLOCK,),
                       (W, x, self.x, np.int32(p.hidden), np.int32(cols), *ahead,
                        gain, self.hn, np.float32(p.norm_eps), self.ticket, self.parts),
                       shared_mem=x_stage_bytes(self.defines, cols))

    def gain_after(self, li: int) -> Any:
        """The gain of the norm after layer ``li``'s down projection: the next layer's, or the final one."""
        return self.layers[li + 1]["attn_norm"] if li + 1 < len(self.layers) else self.w["final_norm"]

    def o_proj(self, layer: dict[str, Any], li: int) -> None:
        p = self.p
        if self.merge_in_oproj:  # every block merges the splits' partials into shared memory first
            self.k["gemv_residual_merge"](((p.hidden + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK,), (32 * ROWS_PER_BLOCK,),
                                          (layer["wo"], self.part_o, self.part_ml, self.attn, self.x,
                                           np.int32(p.hidden), np.int32(p.hidden), np.int32(p.head_dim),
                                           np.int32(self.splits), self.d_pos, np.int32(self.att_slots)),
                                          shared_mem=2 * p.hidden)
            return
        self._residual(layer["wo"], self.attn, p.hidden, self.ahead[li]["o_proj"], layer["ffn_norm"], self.oproj_kernel)

    def ffn(self, layer: dict[str, Any], li: int) -> None:
        p = self.p
        grid_f = ((p.ffn + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK,)
        self.k["gemv_swiglu"](grid_f, (32 * ROWS_PER_BLOCK,),
                              (layer["w_gate"], layer["w_up"], self.hn, self.ff, np.int32(p.ffn), np.int32(p.hidden),
                               self._norm_source, layer["ffn_norm"], np.float32(p.norm_eps)),
                              shared_mem=x_stage_bytes(self.defines, p.hidden, normed=True))
        self._residual(layer["w_down"], self.ff, p.ffn, self.ahead[li]["down"], self.gain_after(li))

    def lm_head(self) -> None:
        """The vocabulary projection of ``hn`` (the final RMSNorm's output)."""
        self._gemv(self.w["lm_head"], self.hn, self.logits, self.p.vocab, self.p.hidden, float(self.lm_scale))

    def sample(self) -> None:
        """Two stages (ARGMAX_BLOCKS partial maxima, then one block): the vocabulary is read by many SMs."""
        self.k["argmax_partial"]((ARGMAX_BLOCKS,), (ARGMAX_THREADS,),
                                 (self.logits, np.int32(self.p.vocab), self.arg_v, self.arg_i))
        self.k["argmax_final"]((1,), (ARGMAX_THREADS,), (self.arg_v, self.arg_i, np.int32(ARGMAX_BLOCKS),
                                                          self.next_id))

    def advance(self) -> None:
        """run_ahead: the pick becomes the next token's input on the device (advance_reference)."""
        self.k["advance"]((1,), (32,), (self.next_id, self.d_tok, self.d_pos, self.d_slot, self.hist,
                                        np.int32(self.p.max_ctx)))

    def spin_ns(self, ns: int) -> None:
        self.k["spin_ns"]((1,), (1,), (np.uint64(ns),))

    def configure_sms(self) -> None:
        """sm_config_reset: two blocks an SM of configure_sms, each taking CONFIGURE_SMEM of shared memory with our
        kernels' carveout preference, so every SM is in the configuration they prefer (decode.cu says why);
        nothing where the build prefers none."""
        if self.carveout < 0:
            return
        if self.sink is None:  # its first launch: the sink and the grid (the runtime asked once, not each sequence)
            self.sink, self.configure_grid = self.cp.zeros(1, self.cp.int32), (2 * sm_count(self.cp),)
        self.configure(self.configure_grid, (256,), (self.sink,), shared_mem=CONFIGURE_SMEM)

    def zero(self, arr: Any) -> None:
        """own_reset: ``arr`` (contiguous, its bytes a whole number of 32-bit words) set to zero by decode.cu's
        fill_words, a kernel of the token's own module, on the current stream."""
        words, rest = divmod(arr.nbytes, 4)
        if rest:
            raise ValueError(f"fill_words writes 32-bit words; {arr.nbytes} bytes is not a whole number of them")
        if not arr.flags.c_contiguous:  # the kernel writes nbytes from the first element on
            raise ValueError("fill_words writes one contiguous run of words; the array is a strided view")
        grid = (max(1, min(FILL_BLOCKS, -(-words // FILL_THREADS))),)
        self.filler(grid, (FILL_THREADS,), (arr, np.uint32(0), np.int64(words)))


class _LaunchAttribute(ctypes.Structure):  # CUlaunchAttribute (cuda.h): id, pad to 8, a 64-byte union
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_int),
                ("value_pad", ctypes.c_char * 60)]


class _LaunchConfig(ctypes.Structure):  # CUlaunchConfig (cuda.h)
    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3), ("shared_mem", ctypes.c_uint),
                ("stream", ctypes.c_void_p), ("attrs", ctypes.POINTER(_LaunchAttribute)), ("n_attrs", ctypes.c_uint)]


PROGRAMMATIC_STREAM_SERIALIZATION = 6  # CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION


class PdlKernel:
    """A RawKernel launched through the driver's cuLaunchKernelEx with programmatic stream
    serialization allowed (CuPy has no launch attributes): the kernel may start while the previous
    kernel of the stream drains, and waits for it in the code (decode.cu's pdl_wait). A captured
    graph keeps the launches as programmatic edges. Called like the RawKernel it wraps."""

    _launch = None

    def __init__(self, cp: Any, kernel: Any) -> None:
        if PdlKernel._launch is None:
            PdlKernel._launch = ctypes.CDLL("libcuda.so.1").cuLaunchKernelEx
        self.cp, self.fn = cp, kernel.kernel.ptr  # the CUfunction of the loaded module
        self.attr = _LaunchAttribute(id=PROGRAMMATIC_STREAM_SERIALIZATION, value=1)

    def __call__(self, grid: tuple, block: tuple, args: tuple, shared_mem: int = 0) -> None:
        values = [_c_arg(a) for a in args]  # kept alive until the call returns
        params = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
        g, b = (tuple(grid) + (1, 1))[:3], (tuple(block) + (1, 1))[:3]
        config = _LaunchConfig((ctypes.c_uint * 3)(*g), (ctypes.c_uint * 3)(*b), shared_mem,
                               self.cp.cuda.get_current_stream().ptr, ctypes.pointer(self.attr), 1)
        err = self._launch(ctypes.byref(config), ctypes.c_void_p(self.fn), params, None)
        if err:
            raise RuntimeError(f"cuLaunchKernelEx failed with CUresult {err}")


def sm_count(cp: Any) -> int:
    """The current GPU's streaming multiprocessors."""
    return cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["multiProcessorCount"]


def resident_blocks(cp: Any, kernel: Any, threads: int, shared_mem: int = 0) -> int:
    """How many blocks of ``kernel`` (a RawKernel, ``threads`` and ``shared_mem`` bytes of dynamic
    shared memory each) the current GPU holds at once: the driver's occupancy for its registers and
    shared memory, times the SMs."""
    per_sm = ctypes.c_int(0)
    err = ctypes.CDLL("libcuda.so.1").cuOccupancyMaxActiveBlocksPerMultiprocessor(
        ctypes.byref(per_sm), ctypes.c_void_p(kernel.kernel.ptr), ctypes.c_int(threads), ctypes.c_size_t(shared_mem))
    if err:
        raise RuntimeError(f"cuOccupancyMaxActiveBlocksPerMultiprocessor failed with CUresult {err}")
    return max(1, per_sm.value * sm_count(cp))


def _c_arg(a: Any) -> ctypes._SimpleCData:
    """One kernel argument as the C value its parameter expects (arrays by their device pointer)."""
    if hasattr(a, "data") and hasattr(a.data, "ptr"):
        return ctypes.c_void_p(a.data.ptr)
    for np_type, c_type in ((np.int32, ctypes.c_int32), (np.float32, ctypes.c_float), (np.uint64, ctypes.c_uint64),
                            (np.int64, ctypes.c_int64)):
        if isinstance(a, np_type):
            return c_type(a.item())
    raise TypeError(f"kernel argument of type {type(a).__name__}: pass a device array or a sized numpy scalar")


# ---- NumPy versions of the kernels' algorithms (checked on the CPU, compared on the GPU) ------

def advance_reference(next_id: int, tok: np.ndarray, pos: np.ndarray, slot: np.ndarray,
                      hist: np.ndarray) -> None:
    """decode.cu's ``advance`` in place: hist[pos] = pick, token = pick, position and slot + 1."""
    p = int(pos[0])
    if 0 <= p < hist.size:
        hist[p] = next_id
    tok[0], pos[0], slot[0] = next_id, p + 1, slot[0] + 1


def without(defines: tuple[str, ...], *drop: str) -> tuple[str, ...]:
    """``defines`` less those in ``drop``."""
    return tuple(d for d in defines if d not in drop)


def resid_depth(defines: tuple[str, ...], rows: int, sms: int) -> tuple[str, ...]:
    """``defines`` with RESID_DEEP_WHERE_ONE_WAVE resolved: RESID_DEEP where the residual GEMVs' ``rows``
    (a warp each) fit one wave at RESID_DEEP_BLOCKS_PER_SM blocks an SM of ``sms``, else nothing. Measured on
    an H200 (reports/bench/pdl_variants_combined_pos*_h200_4d83b68): 16 a lane took the 1b's token (2048 rows,
    256 blocks on 132 SMs) from 805.7 to 777.7 µs at position 96, but the 8b's (4096 rows: two waves) from
    3820.1 to 3882.3."""
    rest = without(defines, RESID_DEEP_WHERE_ONE_WAVE)
    if len(rest) == len(defines):
        return defines
    if RESID_SHORT_DEFINE in defines:  # resid_short_prefetch: 8 a lane wherever the blocks fall
        return rest
    fits = -(-rows // ROWS_PER_BLOCK) <= RESID_DEEP_BLOCKS_PER_SM * sms
    return (*rest, RESID_DEEP) if fits else rest


def oproj_kernel(defines: tuple[str, ...]) -> str:
    """decode.cu's kernel for o_proj: gemv_residual_short (PRE_OPROJ chunks a lane) where the build sets
    PRE_OPROJ (oproj_short_prefetch), else gemv_residual, as down."""
    return "gemv_residual_short" if define_value(defines, "PRE_OPROJ", 0) else "gemv_residual"


@dataclass(frozen=True)
class NormPlacement:
    """Where a build of our kernels leaves each RMSNorm (OwnForward's flags), so that a forward launches the
    others: runner/pipeline.py's and bench/pdl_variants.py's (which also reads older trees' OwnForward)."""
    in_proj: bool = False  # QKV and gate/up compute theirs (norm_in_proj, norm_in_dot)
    in_resid: bool = False  # o_proj and down leave the next norm's output (norm_in_residual)
    in_oproj: bool = False  # ... o_proj among them (not with the merge in o_proj)
    scale: bool = False  # they leave x * gain and their sums of squares, as the first norm does (norm_as_scale)
    fork: bool = False  # the Q/K/V fork (qkv_streams): plain GEMVs that read a launched norm

    def before_qkv(self, li: int) -> bool | None:
        """Layer ``li``'s attention norm: None where none is launched, else its ``scale`` argument (True:
        norm_as_scale's first norm, writing x * gain and the sum of squares)."""
        if (self.fork or not (self.in_proj or self.scale)) and not (self.in_resid and li > 0):
            return False
        return True if self.scale and li == 0 else None

    def before_ffn(self) -> bool:
        """Whether the ffn norm is a launch."""
        return not (self.in_proj or self.in_oproj or self.scale)

    def final(self) -> bool:
        """Whether the final norm is a launch."""
        return not self.in_resid


def define_value(defines: tuple[str, ...], name: str, default: int) -> int:
    """The integer value ``defines`` give decode.cu's ``name`` (-DNAME=V; the last one wins), else ``default``."""
    values = [int(x.split("=", 1)[1]) for x in defines if x.startswith(f"-D{name}=")]
    return values[-1] if values else default


def x_stage_bytes(defines: tuple[str, ...], cols: int, normed: bool = False) -> int:
    """The dynamic shared memory a GEMV of decode.cu built with ``defines`` needs for an x of ``cols``
    halves: all of it where it stages x (X_STAGE, the default), none where it reads x from global memory.
    ``normed``: a GEMV that reads RMSNorm's output (QKV, gate/up), which with NORM_IN_PROJ 1 also holds the
    gain (fp16) and the residual (fp32) it computes x from, with 2 (norm_in_dot) those two alone, and with 3
    (norm_as_scale) x and the residual's partial sums of squares (a float a block of 8 rows)."""
    if not define_value(defines, "X_STAGE", X_STAGE):
        return 0
    mode = define_value(defines, "NORM_IN_PROJ", 0) if normed else 0
    return {1: 8 * cols, 2: 6 * cols, 3: 2 * cols + 4 * (cols // ROWS_PER_BLOCK)}.get(mode, 2 * cols)


def att_pos(defines: tuple[str, ...]) -> int:
    """Positions a thread of attn_split holds in the build ``defines`` ask for (decode.cu's ATT_POS)."""
    return define_value(defines, "ATT_POS", ATT_POS)


def positions_per_split(head_dim: int, fill: bool = False, positions: int = ATT_POS) -> int:
    """decode.cu's att_chunk: CHUNK, or (``fill``) every position attn_split's block holds,
    ATT_THREADS / (head_dim / 8) * ``positions`` a thread: at 4, the same 64 at head_dim 128, 128 at 64."""
    return ATT_THREADS // (head_dim // 8) * positions if fill else CHUNK


def att_fill(head_dim: int, defines: tuple[str, ...]) -> int:
    """The ATT_FILL mode ``defines`` ask for (0 without), or 0 where a filled split is CHUNK anyway
    (head_dim 128 at 4 positions a thread: the 8b would only get attn_split's larger register count)."""
    fill = define_value(defines, "ATT_FILL", 0)
    if fill == 4:  # attn_share's rule sizes the splits at every head_dim
        return fill
    return fill if positions_per_split(head_dim, True, att_pos(defines)) != CHUNK else 0


def split_at(head_dim: int, n_heads: int, position: int, slots: int, fill: int, positions: int = ATT_POS) -> int:
    """The split length attn_split and attn_combine use at ``position`` (decode.cu's att_chunk) for
    ATT_FILL ``fill`` with ``positions`` a thread: 0 CHUNK, 1 filled, 2 (attn_fill_split) CHUNK while a
    block per head and split fits ``slots`` (the resident blocks), filled past that, 3 (attn_fit_wave)
    past that the shortest split in whole rows of the block's threads that fits them, at most filled."""
    full = positions_per_split(head_dim, True, positions)
    rows = ATT_THREADS // (head_dim // 8)
    if fill == 4:  # attn_share_kv: ``slots`` is the splits a KV head gets; at least a row, at most full
        shortest = -(-(position + 1) // max(1, slots))
        return min(full, -(-shortest // rows) * rows)
    if fill == 3:
        per_head = max(1, slots // n_heads)
        shortest = -(-(position + 1) // per_head)
        return min(full, max(CHUNK, -(-shortest // rows) * rows))
    past_a_wave = n_heads * -(-(position + 1) // CHUNK) > slots
    return full if fill == 1 or (fill == 2 and past_a_wave) else CHUNK


def most_splits(head_dim: int, max_ctx: int, slots: int, positions: int = ATT_POS) -> int:
    """The most splits attn_share's rule (split_at's mode 4, ``slots`` a KV head) uses at any context up
    to ``max_ctx``: the stride of its partial outputs, as ceil(max_ctx / CHUNK) is attn_split's."""
    return max(-(-n // split_at(head_dim, 0, n - 1, slots, 4, positions)) for n in range(1, max_ctx + 1))


def kernel_bytes(p: Any, n_ctx: int) -> dict[str, int]:
    """What each of our kernels must read per decode token at context ``n_ctx`` (fp16 weights and
    KV cache; activations, a few KB, left out): the floor its stream time has at the copy bandwidth.
    They add up to the preset's weight bytes plus its KV bytes per token."""
    h, kv, f, L = p.hidden, p.kv_dim, p.ffn, p.n_layers
    return {"gemv_qkv": 2 * L * h * (h + 2 * kv), "gemv_residual": 2 * L * (h * h + f * h),
            "gemv_swiglu": 2 * L * 2 * f * h, "gemv": 2 * p.vocab * h, "attn_split": p.kv_bytes_per_token(n_ctx),
            "rmsnorm": 2 * (2 * L + 1) * h, "embed": 2 * h}


def function_kernel_bytes(p: Any, n_ctx: int, oproj_name: str = "gemv_residual") -> dict[str, int]:
    """:func:`kernel_bytes` per function and kernel (``function: kernel``, as
    perfreview.analysis.traced.kernel_summary(by_function=True) names them; the functions are
    runner/pipeline.py's ranges): o_proj's GEMV (``oproj_name``: :func:`oproj_kernel` of the build) reads Wo,
    ffn's gemv_residual the down projection."""
    k, oproj = kernel_bytes(p, n_ctx), 2 * p.n_layers * p.hidden * p.hidden
    return {"qkv: gemv_qkv": k["gemv_qkv"], "rope_kv_attention: attn_split": k["attn_split"],
            f"o_proj: {oproj_name}": oproj, "ffn: gemv_swiglu": k["gemv_swiglu"],
            "ffn: gemv_residual": k["gemv_residual"] - oproj, "lm_head: gemv": k["gemv"],
            "rmsnorm: rmsnorm": k["rmsnorm"], "embedding: embed": k["embed"]}


def ahead_plan(layers: list[dict[str, Any]], lm_head: Any, budget: int) -> list[dict[str, list[tuple[int, int]]]]:
    """l2_ahead: per layer, the (address, bytes) ranges each site's GEMV pulls into L2 for the kernels
    after it, at most ``budget`` bytes a site, in whole rows: the QKV GEMV o_proj's rows (the attention
    runs between them); o_proj the first rows of gate and up, as many of each (the SwiGLU reads them
    together, its first blocks first, after the norm); down the next layer's Q, K, V rows in the order the
    QKV GEMV reads them (the LM head's first rows after the last layer). Weights are device arrays (or
    anything with ``.data.ptr``, ``.nbytes`` and ``.shape``)."""
    def rows(a: Any, n: int) -> tuple[int, int]:
        return int(a.data.ptr), min(int(a.shape[0]), n) * int(a.nbytes) // int(a.shape[0])

    def in_order(mats: list[Any]) -> list[tuple[int, int]]:
        out, left = [], budget
        for a in mats:
            row = int(a.nbytes) // int(a.shape[0])
            ptr, n = rows(a, left // row)
            if n:
                out.append((ptr, n))
            left -= n
        return out

    def in_step(mats: list[Any]) -> list[tuple[int, int]]:
        n = budget // sum(int(a.nbytes) // int(a.shape[0]) for a in mats)
        return [r for r in (rows(a, n) for a in mats) if r[1]]

    plan = []
    for li, layer in enumerate(layers):
        nxt = [layers[li + 1][k] for k in ("wq", "wk", "wv")] if li + 1 < len(layers) else [lm_head]
        plan.append({"qkv": in_order([layer["wo"]]), "o_proj": in_step([layer["w_gate"], layer["w_up"]]),
                     "down": in_order(nxt)})
    return plan


def ahead_args(plan: list[dict[str, list[tuple[int, int]]]]) -> list[dict[str, tuple[np.uint64, ...]]]:
    """``ahead_plan`` as decode.cu's AHEAD_PARAMS: per layer and site, AHEAD_RANGES (address, bytes)
    pairs as kernel arguments, unused ranges 0."""
    out = []
    for sites in plan:
        layer = {}
        for site in AHEAD_SITES:
            ranges = sites[site]
            if len(ranges) > AHEAD_RANGES:
                raise ValueError(f"{site} pulls {len(ranges)} ranges ahead, the kernels take {AHEAD_RANGES}")
            pairs = [*ranges, *[(0, 0)] * (AHEAD_RANGES - len(ranges))]
            layer[site] = tuple(np.uint64(v) for pair in pairs for v in pair)
        out.append(layer)
    return out


def ahead_slices(ranges: list[tuple[int, int]], warps: int) -> list[tuple[int, int, int]]:
    """decode.cu's l2_ahead for a grid of ``warps`` warps: the (warp, address, bytes) prefetches its
    warps issue for the (address, bytes) ``ranges`` (each warp a share of whole 128-byte lines of their
    concatenation, cut where a range ends)."""
    total = sum(n for _, n in ranges)
    if not total:
        return []
    share = (-(-total // warps) + 127) & ~127
    out = []
    for warp in range(warps):
        lo, hi, base = warp * share, min(warp * share + share, total), 0
        for ptr, n in ranges:
            a, b = max(lo, base), min(hi, base + n)
            if a < b:
                out.append((warp, ptr + a - base, b - a))
            base += n
    return out


def heads_per_block(n_heads: int, n_kv: int, position: int, grid_splits: int, slots: int,
                    chunk: int = CHUNK) -> int:
    """attn_split's choice: how many query heads of a KV head one block takes at ``position``. One
    while a block per head and split (at most ``grid_splits`` a head) fits in ``slots``; else the
    smallest power of two dividing the group that makes the blocks fit, or the whole group."""
    group = n_heads // n_kv
    working = min(-(-(position + 1) // chunk), grid_splits)
    hpb = 1
    while 2 * hpb <= group and group % (2 * hpb) == 0 and (n_heads // hpb) * working > slots:
        hpb *= 2
    return hpb


def split_partials(q: np.ndarray, keys: np.ndarray, vals: np.ndarray, n: int,
                   chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """attn_split for one head: each chunk's max score m, sum l and unnormalised output o (what
    part_ml and part_o hold). q (d,), keys/vals (max_ctx, d); positions [0, n) are attended."""
    d = q.shape[0]
    ms, ls, os_ = [], [], []
    for start in range(0, keys.shape[0], chunk):
        end = min(n, start + chunk)
        if start >= n:
            ms.append(-np.inf)
            ls.append(0.0)
            os_.append(np.zeros(d))
            continue
        s = keys[start:end] @ q * d ** -0.5
        m = s.max()
        p = np.exp(s - m)
        ms.append(m)
        ls.append(p.sum())
        os_.append(p @ vals[start:end])
    return np.array(ms), np.array(ls), np.array(os_)


def merge_reference(ms: np.ndarray, ls: np.ndarray, os_: np.ndarray) -> np.ndarray:
    """attn_combine (and gemv_residual_merge's prologue) for one head: the log-sum-exp merge of the
    splits' (m, l, o)."""
    w = np.where(np.isfinite(ms), np.exp(ms - ms.max()), 0.0)
    return (w[:, None] * os_).sum(0) / (w * ls).sum()


def attention_split_reference(q: np.ndarray, keys: np.ndarray, vals: np.ndarray, n: int,
                              chunk: int = CHUNK) -> np.ndarray:
    """attn_split + attn_combine for one head: per-chunk max/sum/partial output, then the
    log-sum-exp merge. q (d,), keys/vals (max_ctx, d); positions [0, n) are attended."""
    return merge_reference(*split_partials(q, keys, vals, n, chunk))


def gemv_residual_merge_reference(w: np.ndarray, partials: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                                  resid: np.ndarray) -> np.ndarray:
    """gemv_residual_merge: every head's splits merged (``partials``: per head, its (m, l, o)), the
    heads' outputs rounded to fp16 (as attn_combine stores them) and concatenated, then o_proj
    added to the residual as gemv_residual does."""
    a = np.concatenate([merge_reference(*hp) for hp in partials]).astype(np.float16)
    return gemv_residual_reference(w, a, resid)


def gemv_residual_reference(w: np.ndarray, x: np.ndarray, resid: np.ndarray) -> np.ndarray:
    """gemv_residual: the product rounded to fp16 (as cuBLAS's fp16 output is) added in fp32."""
    return resid + (w.astype(np.float32) @ x.astype(np.float32)).astype(np.float16).astype(np.float32)


def rmsnorm_reference(x: np.ndarray, gain: np.ndarray, eps: float) -> np.ndarray:
    return (x / np.sqrt((x * x).mean() + eps) * gain).astype(np.float16)


def norm_in_dot_reference(w: np.ndarray, resid: np.ndarray, gain: np.ndarray, eps: float) -> np.ndarray:
    """W RMSNorm(resid) * gain as gemv_qkv and gemv_swiglu compute it with NORM_IN_PROJ 2 (norm_in_dot), in
    fp32: each of a warp's 32 lanes takes the 8-column chunks lane, lane + 32, ... of its row, adds
    w * (x * gain) and x * x over them, the lanes' sums are added, and the product is scaled by
    rsqrt(mean of the squares + eps) at the end; the normalised x is never rounded to fp16."""
    x, g = resid.astype(np.float32), gain.astype(np.float32)
    wf = w.astype(np.float32)
    chunks = x.size // 8
    lanes = [np.concatenate([np.arange(c * 8, c * 8 + 8) for c in range(lane, chunks, 32)]).astype(int)
             for lane in range(min(32, chunks))]
    acc = sum((wf[:, cols] @ (x[cols] * g[cols])).astype(np.float32) for cols in lanes)
    ss = np.float32(sum(np.float32(x[cols] @ x[cols]) for cols in lanes))
    return (acc * (np.float32(1) / np.sqrt(ss / np.float32(x.size) + np.float32(eps)))).astype(np.float32)


def scale_parts_reference(resid: np.ndarray, rows_per_block: int = ROWS_PER_BLOCK) -> np.ndarray:
    """The partial sums of squares gemv_residual leaves with NORM_IN_PROJ 3 (norm_as_scale): per block of
    ``rows_per_block`` rows, its rows' squares added in order, in fp32."""
    x = resid.astype(np.float32)
    parts = np.zeros(-(-x.size // rows_per_block), np.float32)
    for b in range(parts.size):
        for v in x[b * rows_per_block:(b + 1) * rows_per_block]:
            parts[b] = np.float32(parts[b] + v * v)
    return parts


def parts_inv_reference(parts: np.ndarray, cols: int, eps: float) -> np.float32:
    """The norm's inv as a GEMV of the norm_as_scale build makes it from the partials: lane l adds partials
    l, l + 32, ... in order, the 32 lanes' sums are added by a butterfly (xor 16, 8, 4, 2, 1), then rsqrt."""
    lanes = np.zeros(32, np.float32)
    for i, v in enumerate(parts.astype(np.float32)):
        lanes[i % 32] = np.float32(lanes[i % 32] + v)
    for o in (16, 8, 4, 2, 1):
        lanes = (lanes + lanes[np.arange(32) ^ o]).astype(np.float32)
    return np.float32(1) / np.sqrt(np.float32(lanes[0] / np.float32(cols) + np.float32(eps)), dtype=np.float32)


def norm_as_scale_reference(w: np.ndarray, resid: np.ndarray, gain: np.ndarray, eps: float) -> np.ndarray:
    """W RMSNorm(resid) * gain as the norm_as_scale build computes it (NORM_IN_PROJ 3): the residual's writer
    leaves x * gain in fp16 and its blocks' sums of squares; the GEMV's fp32 product of that vector is scaled
    by the inv made from the partials. The vector is rounded to fp16 before the norm's scale, not after it."""
    x = resid.astype(np.float32)
    xg = (x * gain.astype(np.float32)).astype(np.float16).astype(np.float32)
    inv = parts_inv_reference(scale_parts_reference(x), x.size, eps)
    return ((w.astype(np.float32) @ xg).astype(np.float32) * inv).astype(np.float32)


def residual_norm_reference(w: np.ndarray, x: np.ndarray, resid: np.ndarray, gain: np.ndarray,
                            eps: float) -> tuple[np.ndarray, np.ndarray]:
    """gemv_residual built with NORM_IN_RESID (norm_in_residual): the residual it leaves and the next
    norm's output, which its last block writes."""
    after = gemv_residual_reference(w, x, resid)
    return after, rmsnorm_reference(after, gain, eps)


def rope_chunks_reference(v: np.ndarray, pos: int, inv_freq: np.ndarray) -> np.ndarray:
    """decode.cu's rope_chunk over every chunk of one head (d,): chunk c (dims 8c..8c+7) is rotated
    with chunk c ^ (lpr/2), lpr = d/8, the first half as a cos - b sin, the second as a sin + b cos."""
    d = v.shape[0]
    lpr, half = d // 8, d // 2
    cos, sin = np.cos(pos * inv_freq), np.sin(pos * inv_freq)
    out = np.empty(d)
    for c in range(lpr):
        partner = c ^ (lpr // 2)
        for e in range(8):
            j, jp = 8 * c + e, 8 * partner + e
            if c < lpr // 2:
                out[j] = v[j] * cos[j] - v[jp] * sin[j]
            else:
                out[j] = v[jp] * sin[j - half] + v[j] * cos[j - half]
    return out


def attention_rope_reference(q: np.ndarray, k: np.ndarray, v: np.ndarray, cache_k: np.ndarray,
                             cache_v: np.ndarray, pos: int, slot: int, inv_freq: np.ndarray) -> np.ndarray:
    """attn_split (RoPE and the cache write folded in) + attn_combine: q (heads, d), k, v (kv_heads, d)
    the projections' raw outputs; the row at ``slot`` is this token's k (rotated) and v, written into
    the caches (kv_heads, max_ctx, d) in place; returns the attention output (heads, d)."""
    heads, kv = q.shape[0], k.shape[0]
    group = heads // kv
    for g in range(kv):
        cache_k[g, slot] = rope_chunks_reference(k[g], pos, inv_freq)
        cache_v[g, slot] = v[g]
    return np.stack([attention_split_reference(rope_chunks_reference(q[h], pos, inv_freq), cache_k[h // group],
                                               cache_v[h // group], pos + 1) for h in range(heads)])


def swiglu_reference(wg: np.ndarray, wu: np.ndarray, x: np.ndarray) -> np.ndarray:
    g, u = wg @ x, wu @ x
    return g / (1.0 + np.exp(-g)) * u


def argmax_two_stage_reference(x: np.ndarray, blocks: int = ARGMAX_BLOCKS, threads: int = ARGMAX_THREADS) -> int:
    """argmax_partial + argmax_final: each block's grid-strided share reduced to (value, lowest index),
    then the blocks' results merged the same way."""
    stride = blocks * threads
    parts = []
    for b in range(blocks):
        idx = np.concatenate([np.arange(b * threads + t, len(x), stride) for t in range(threads)])
        if len(idx) == 0:
            parts.append((-np.inf, 2**31 - 1))
            continue
        v = x[idx].astype(np.float32)
        top = v.max()
        parts.append((top, int(idx[v == top].min())))
    return min(parts, key=lambda p: (-p[0], p[1]))[1]


def argmax_reference(x: np.ndarray, threads: int = 1024) -> int:
    """The kernel's reduction: per-thread strided maxima, then (value, lowest index) merging."""
    best = [(-np.inf, 2**31 - 1)] * threads
    for i, v in enumerate(x):
        t = i % threads
        if v > best[t][0]:
            best[t] = (v, i)
    return min(best, key=lambda b: (-b[0], b[1]))[1]
