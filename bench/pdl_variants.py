"""GPU task (issue 12), one device call: what programmatic dependent launch and the GEMV's weight
prefetch do to one token of our kernels, without the runner's host loop.

Per preset (random fp16 weights, every layer): the token's launches (the ``cuda_graph`` config's
sequence: embed, per layer norm+QKV, RoPE+KV write+attention split, combine, o_proj, norm+SwiGLU,
down; norm+lm_head, argmax) captured once as a CUDA graph for each variant of the kernel source
and launch, then replayed back to back: GPU µs per token = time of REPLAYS replays / REPLAYS, median
over ROUNDS rounds in which the variants take turns. Weight bytes per token over that time gives
the fraction of the device-copy bandwidth measured in the same run. Also per variant: the token
when the host waits for each one (launch, synchronize; host clock), as a decode loop must, and the
host time of the launch call itself.
``--before DIR``: DIR holds own_kernels.py and kernels/decode.cu of an earlier commit (``git show
REV:runner/own_kernels.py``...); its token runs as more variants in the same rounds, so a kernel
change is measured against what it replaced on the same device, in one call.
Writes pdl_variants.json/.md under --out; prints the table.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.outputs import save  # noqa: E402
from perfreview.trace.meta import git_info  # noqa: E402
from runner import config as cfg  # noqa: E402
from runner.arena import Arena, token_buffers_capacity  # noqa: E402
from runner.device import capture_graph  # noqa: E402
from runner.own_kernels import (  # noqa: E402
    ATT_FILL_DEFINE, ATT_FIT_DEFINES, ATT_FOUR_BLOCKS_DEFINE, ATT_SHARE_DEFINES, EARLY_DEFINE, HOIST_DEFINE,
    MERGE_AHEAD_DEFINE, MERGE_DEFINE, MERGE_LAST_DEFINE, NORM_DEFINE, NORM_DOT_DEFINE, NORM_RESID_DEFINE,
    NORM_SCALE_DEFINE, OPROJ_SHORT_DEFINE, OVERLAP_DEFINES, RESID_SHORT_DEFINE, NormPlacement, OwnForward, without)
from runner.presets import get_preset  # noqa: E402
from scripts.gpu_runner import copy_bandwidth_gbs  # noqa: E402

# optimized's decode.cu build (its kernel-tuning switches), for the rows that start from it
OPTIMIZED_DEFINES = cfg.gpu_kernel_defines("optimized")
# ... with the norm launches it had before norm_as_scale (the rows that place the norm otherwise)
OPTIMIZED_WITH_NORMS = without(OPTIMIZED_DEFINES, NORM_SCALE_DEFINE)
EARLY_BUILD = (ATT_FILL_DEFINE, EARLY_DEFINE, HOIST_DEFINE)  # optimized from early_loads to overlap_tuning
DEEP_QKV_SWIGLU, NORM_MERGE_START = OVERLAP_DEFINES[:3], OVERLAP_DEFINES[3:]  # overlap_tuning's two parts

TOKENS_A_GRAPH = "tokens_a_graph"  # a variant's tokens captured in one graph (1 unless it says), not OwnForward's
VARIANTS = {  # name: OwnForward keyword arguments (launch with PDL, -D defines of decode.cu)
    "plain": {"pdl": False},
    "pdl, trigger at start": {"pdl": True, "defines": ("-DPDL_TRIGGER=1",)},
    "pdl, trigger after wait": {"pdl": True, "defines": ("-DPDL_TRIGGER=2",)},
    # the same again, built and placed on its own: the A/A control for the differences between rows
    "pdl, trigger after wait (A/A)": {"pdl": True, "defines": ("-DPDL_TRIGGER=2",)},
    "pdl, no trigger": {"pdl": True, "defines": ("-DPDL_TRIGGER=0",)},
    "plain, prefetch 1": {"pdl": False, "defines": ("-DPRE=1", "-DPRE_QKV=1", "-DPRE_SWIGLU=1")},
    "pdl at start, prefetch 1": {"pdl": True, "defines": ("-DPRE=1", "-DPRE_QKV=1", "-DPRE_SWIGLU=1",
                                                         "-DPDL_TRIGGER=1")},
    "pdl, no attention prefetch": {"pdl": True, "defines": ("-DATT_PREFETCH=0",)},
    "pdl, swiglu 3 blocks an SM": {"pdl": True, "defines": ("-DSWIGLU_MIN_BLOCKS=3",)},
    # prefetch depth per GEMV kernel and the QKV's launch bounds (defaults: qkv 4 + 6 blocks, swiglu 4, rest 8)
    "pdl, prefetch 8 everywhere, qkv unbounded": {
        "pdl": True, "defines": ("-DPRE_QKV=8", "-DPRE_SWIGLU=8", "-DQKV_MIN_BLOCKS=0")},
    "pdl, qkv unbounded": {"pdl": True, "defines": ("-DQKV_MIN_BLOCKS=0",)},
    "pdl, swiglu prefetch 2": {"pdl": True, "defines": ("-DPRE_SWIGLU=2",)},
    "pdl, swiglu prefetch 3": {"pdl": True, "defines": ("-DPRE_SWIGLU=3",)},
    "pdl, residual prefetch 4": {"pdl": True, "defines": ("-DPRE_RESID=4",)},
    "pdl, swiglu prefetch 2, residual prefetch 4": {"pdl": True, "defines": ("-DPRE_SWIGLU=2", "-DPRE_RESID=4")},
    "pdl, lm_head prefetch 4": {"pdl": True, "defines": ("-DPRE_GEMV=4",)},
    # launch bounds of o_proj/down and gate+up, the next kernel launched at a norm's or merge's start,
    # and attention grids of fewer blocks a head than splits (blocks take turns over the splits)
    "pdl, residual 5 blocks an SM": {"pdl": True, "defines": ("-DRESID_MIN_BLOCKS=5",)},
    "pdl, residual prefetch 12": {"pdl": True, "defines": ("-DPRE_RESID=12",)},
    "pdl, residual prefetch 16": {"pdl": True, "defines": ("-DPRE_RESID=16",)},
    "pdl, swiglu 5 blocks an SM": {"pdl": True, "defines": ("-DSWIGLU_MIN_BLOCKS=5",)},
    "pdl, norm triggers at start": {"pdl": True, "defines": ("-DNORM_TRIGGER_START=1",)},
    "pdl, merge triggers at start": {"pdl": True, "defines": ("-DCOMBINE_TRIGGER_START=1",)},
    "pdl, norm and merge trigger at start": {"pdl": True, "defines": ("-DNORM_TRIGGER_START=1",
                                                                     "-DCOMBINE_TRIGGER_START=1")},
    "pdl, attention grid 4 a head": {"pdl": True, "att_grid_splits": 4},
    "pdl, attention grid 8 a head": {"pdl": True, "att_grid_splits": 8},
    "pdl, attention grid 16 a head": {"pdl": True, "att_grid_splits": 16},
    "pdl, attention 3 blocks an SM": {"pdl": True, "defines": ("-DATT_MIN_BLOCKS=3",)},
    "pdl, attention unbounded": {"pdl": True, "defines": ("-DATT_MIN_BLOCKS=0",)},
    # attn_split built to group a KV head's query heads in one block past one wave (attn_group_heads), or always
    "pdl, attention heads grouped past a wave": {"pdl": True, "defines": ("-DATT_GROUP=1",)},
    "pdl, attention heads always grouped": {"pdl": True, "defines": ("-DATT_GROUP=1",), "att_slots": 1},
    # a split as long as the block's threads hold (ATT_FILL=1): 128 positions at head_dim 64, 64 at 128
    "pdl, attention split fills the block": {"pdl": True, "defines": ("-DATT_FILL=1",)},
    "pdl, split fills the block, heads grouped past a wave": {"pdl": True, "defines": ("-DATT_FILL=1",
                                                                                       "-DATT_GROUP=1")},
    # filled only past one wave (ATT_FILL=2, attn_fill_split): 64-position splits while they fit
    "pdl, attention split filled past a wave": {"pdl": True, "defines": ("-DATT_FILL=2",)},
    "pdl, split filled past a wave, heads grouped past a wave": {"pdl": True, "defines": ("-DATT_FILL=2",
                                                                                          "-DATT_GROUP=1")},
    # attn_split at 3 blocks an SM (396 resident on an H200) with the default's fill: the 80-register
    # build with both defines gave the 8b +1.37% growth to 512 instead of +2.9% (def9a77)
    "pdl, attention 3 blocks an SM, filled past a wave": {"pdl": True, "defines": ("-DATT_MIN_BLOCKS=3",
                                                                                   "-DATT_FILL=2")},
    # past one wave, the shortest split that keeps one (ATT_FILL=3, 5 positions a thread, attn_fit_wave):
    # 80 positions at 513 for the 8b (224 blocks, not 288), 96 for the 1b
    "pdl, attention split fits one wave": {"pdl": True, "defines": ATT_FIT_DEFINES},
    # a KV head's query heads in one block, about a block an SM at every context (attn_share, attn_share_kv)
    "pdl, KV heads shared in a block": {"pdl": True, "defines": ATT_SHARE_DEFINES},
    # the same with 8 or 32 splits a KV head where the SMs over the KV heads give 16 (132 SMs, 8 KV heads)
    "pdl, KV heads shared, 8 splits a KV head": {"pdl": True, "defines": ATT_SHARE_DEFINES, "att_slots": 8},
    "pdl, KV heads shared, 32 splits a KV head": {"pdl": True, "defines": ATT_SHARE_DEFINES, "att_slots": 32},
    # the optimized build with the merge done by o_proj's blocks (attn_merge_in_oproj): no attn_combine launch
    "pdl, filled past a wave, merge in o_proj": {"pdl": True, "defines": ("-DATT_FILL=2", MERGE_DEFINE)},
    # 128 positions a split (8 a thread): half the attention blocks at a context, one wave to 1024 positions
    "pdl, attention splits of 128": {"pdl": True, "defines": ("-DSPLIT=128", "-DATT_POS=8", "-DATT_MIN_BLOCKS=2")},
    # optimized's build with the GEMVs pulling later weights into L2 (l2_ahead), N MB a site, bulk prefetches
    # (one a warp and range) or one prefetch a line (L2_AHEAD_MODE=2)
    **{f"pdl, filled past a wave, l2 ahead {mb} MB": {"pdl": True, "defines": (ATT_FILL_DEFINE,), "l2_ahead_mb": mb}
       for mb in (2, 4, 8, 16)},
    "pdl, filled past a wave, l2 ahead 16 MB by lines": {"pdl": True, "defines": (ATT_FILL_DEFINE, "-DL2_AHEAD_MODE=2"),
                                                          "l2_ahead_mb": 16},
    # x read by each warp from global memory (X_STAGE=0), as before the GEMVs staged it in shared memory
    "pdl, x read from global memory": {"pdl": True, "defines": ("-DX_STAGE=0",)},
    "pdl, filled past a wave, x read from global memory": {"pdl": True, "defines": (ATT_FILL_DEFINE, "-DX_STAGE=0")},
    # the QKV and gate/up GEMVs compute the RMSNorm from the residual, a block each, no norm launch before them
    "pdl, filled past a wave, norm in the projections": {"pdl": True, "defines": (ATT_FILL_DEFINE, NORM_DEFINE)},
    # the row heads, rmsnorm's gain (and combine's pos) as coherent loads, which ptxas keeps before the wait
    "pdl, filled past a wave, early loads": {"pdl": True, "defines": (ATT_FILL_DEFINE, EARLY_DEFINE)},
    # resid[row] beside the products, attention's RoPE table before the wait, combine's loads in one trip
    "pdl, filled past a wave, hoisted loads": {"pdl": True, "defines": (ATT_FILL_DEFINE, HOIST_DEFINE)},
    "pdl, filled past a wave, early and hoisted loads": {"pdl": True, "defines": EARLY_BUILD},
    # the prefetch depths were chosen with the weights loaded after the wait: with them before it, deeper
    # (the QKV at 4 blocks an SM: 8 a lane spill under the 6-block bound)
    "pdl, filled past a wave, early and hoisted loads, qkv and gate/up prefetch 8": {
        "pdl": True, "defines": (*EARLY_BUILD, *DEEP_QKV_SWIGLU)},
    # optimized's build since early_loads (filled past a wave, early and hoisted loads) with the triggers
    # measured slower while no weight load came before a wait: a kernel that lets the next launch at its
    # start now lets it load weights under its own run
    "optimized, early and hoisted (A/A)": {"pdl": True, "defines": EARLY_BUILD},
    "optimized, early and hoisted, norm and merge trigger at start": {
        "pdl": True, "defines": (*EARLY_BUILD, *NORM_MERGE_START)},
    "optimized, early and hoisted, trigger at start": {"pdl": True, "defines": (*EARLY_BUILD, "-DPDL_TRIGGER=1")},
    "optimized, early and hoisted, residual prefetch 16": {"pdl": True,
                                                           "defines": (*EARLY_BUILD, "-DPRE_RESID=16")},
    # H200 (b266cd2): qkv and gate/up prefetch 8, the norm and merge triggering at start and residual prefetch 16
    # each faster than the A/A pair on the 1b, the first two on the 8b too (prefetch 16 slower there): together
    "optimized, qkv and gate/up prefetch 8": {"pdl": True, "defines": (*EARLY_BUILD, *DEEP_QKV_SWIGLU)},
    "optimized, prefetch 8, norm and merge trigger at start": {
        "pdl": True, "defines": (*EARLY_BUILD, *DEEP_QKV_SWIGLU, *NORM_MERGE_START)},
    "optimized, prefetch 8, residual prefetch 16": {
        "pdl": True, "defines": (*EARLY_BUILD, *DEEP_QKV_SWIGLU, "-DPRE_RESID=16")},
    "optimized, prefetch 8, triggers at start, residual prefetch 16": {
        "pdl": True, "defines": (*EARLY_BUILD, *DEEP_QKV_SWIGLU, *NORM_MERGE_START, "-DPRE_RESID=16")},
    # optimized as it stands (overlap_tuning: resid_depth gives the 1b's residual GEMVs 16 a lane), with an A/A row
    "optimized": {"pdl": True, "defines": OPTIMIZED_DEFINES},
    "optimized (A/A)": {"pdl": True, "defines": OPTIMIZED_DEFINES},
    # H100 (e0546e4): overlap_tuning saves the 1b 42 µs a token at 96 but 16 at 512; optimized without each
    # of its parts in turn, to find the one that loses at long contexts
    "optimized, merge triggers after its wait": {
        "pdl": True, "defines": without(OPTIMIZED_DEFINES, "-DCOMBINE_TRIGGER_START=1")},
    "optimized, norm triggers after its wait": {
        "pdl": True, "defines": without(OPTIMIZED_DEFINES, "-DNORM_TRIGGER_START=1")},
    "optimized, qkv and gate/up prefetch 4": {"pdl": True, "defines": without(OPTIMIZED_DEFINES, *DEEP_QKV_SWIGLU)},
    # norm_in_proj was slower while the weights loaded after the wait (the norm's reduction stood alone
    # between a block's wait and its first product); with the row heads in flight it may hide under them
    "optimized, early and hoisted, norm in the projections": {"pdl": True,
                                                              "defines": (*EARLY_BUILD, NORM_DEFINE)},
    # the norm after o_proj and down written by their last block (norm_in_residual): 32 launches fewer a 1b token
    # (slower: reports/bench/pdl_variants_norm_in_residual_pos*_h100_6675751.md)
    "optimized, norm in the residual GEMVs": {"pdl": True, "defines": (*OPTIMIZED_WITH_NORMS, NORM_RESID_DEFINE)},
    # H100 (6675751): 1b 1052.2 against 996.4 µs at 96 (8b 5374.1 against 5144.3): the same with one release
    # atomic a block in place of a fence in every thread
    "optimized, norm in the residual GEMVs, one atomic a block": {
        "pdl": True, "defines": (*OPTIMIZED_WITH_NORMS, NORM_RESID_DEFINE, "-DNORM_TICKET=1")},
    # the norm before QKV and gate/up applied as a scale of their products, each warp summing the residual's
    # squares as its row reads it (norm_in_dot): 32 launches fewer a 1b token, no block reduction in their place
    "optimized, norm in the dot products": {"pdl": True, "defines": (*OPTIMIZED_WITH_NORMS, NORM_DOT_DEFINE)},
    # H100 (9bfb441): norm_in_dot 1b 1221.8 against 1009.3 µs at 96. Without PDL (each kernel's cost alone), and
    # with every kernel preferring the most shared memory (one shared-memory configuration for all, so blocks
    # of different kernels may share an SM: the folded GEMVs take 12 KB a block where x took 4)
    "optimized, no pdl": {"pdl": False, "defines": OPTIMIZED_DEFINES},
    "optimized, norm in the dot products, no pdl": {"pdl": False, "defines": (*OPTIMIZED_WITH_NORMS, NORM_DOT_DEFINE)},
    "optimized, shared memory preferred": {"pdl": True, "defines": OPTIMIZED_DEFINES, "carveout": 100},
    "optimized, norm in the dot products, shared memory preferred": {
        "pdl": True, "defines": (*OPTIMIZED_WITH_NORMS, NORM_DOT_DEFINE), "carveout": 100},
    # H100 (23630ff): every kernel preferring the most shared memory, 1b 976.6 against 1009.6 / 1005.1 (A/A) µs at
    # 96, but 8b 5334.5 against 5230.1 / 5231.3: other shares, and the most shared memory for some kernels only
    **{f"optimized, shared memory {pct}%": {"pdl": True, "defines": OPTIMIZED_DEFINES, "carveout": pct}
       for pct in (25, 50, 75)},
    "optimized, shared memory preferred by the GEMVs": {
        "pdl": True, "defines": OPTIMIZED_DEFINES, "carveout": 100,
        "carveout_kernels": ("gemv", "gemv_qkv", "gemv_residual", "gemv_swiglu")},
    "optimized, shared memory preferred but by attention": {
        "pdl": True, "defines": OPTIMIZED_DEFINES, "carveout": 100,
        "carveout_kernels": ("gemv", "gemv_qkv", "gemv_residual", "gemv_swiglu", "rmsnorm", "attn_combine", "embed",
                             "argmax_partial", "argmax_final", "advance")},
    # H100 (9a03e5e): the attention merge is the token's third loss over its floor (48 µs of the 1b's stream,
    # 16 launches). Merged by attn_split's block that writes a head's last split instead (attn_merge_last), and
    # optimized without attn_fill_split (tg128 1b +0.56% without it at 9a03e5e, and faster at 512 too)
    "optimized, merge in the split's last block": {"pdl": True, "defines": (*OPTIMIZED_DEFINES, MERGE_LAST_DEFINE)},
    "optimized, no fill split": {"pdl": True, "defines": without(OPTIMIZED_DEFINES, ATT_FILL_DEFINE)},
    "optimized, no fill split, merge in the split's last block": {
        "pdl": True, "defines": (*without(OPTIMIZED_DEFINES, ATT_FILL_DEFINE), MERGE_LAST_DEFINE)},
    # H100 (8232160): the 33 norms are the token's largest loss over its floor (72.6 µs of the 1b's stream). The
    # norm as a scale with nothing added to the products' loop (norm_as_scale): o_proj and down leave x * gain
    # and their blocks' sums of squares, QKV and gate/up add those and scale at the end; 31 launches fewer
    "optimized, norm as a scale": {"pdl": True, "defines": (*OPTIMIZED_WITH_NORMS, NORM_SCALE_DEFINE)},
    "optimized, norm as a scale, merge in the split's last block": {
        "pdl": True, "defines": (*OPTIMIZED_WITH_NORMS, NORM_SCALE_DEFINE, MERGE_LAST_DEFINE)},
    # H100 (1dd0343): with the norm launches gone (norm_as_scale) gate/up is the 1b's largest loss over its floor (45.8
    # µs a token): o_proj's two blocks an SM at 16 chunks a lane (112 registers; its 2048-wide rows need 8) leave no
    # room for a gate/up block (96 registers allocated) until they end, and down's none for a QKV block. o_proj at 8 a
    # lane (64 registers: a gate/up block fits beside two), or both residual GEMVs at 8 (QKV and down blocks fit too)
    # (oproj_short_prefetch, resid_short_prefetch)
    "optimized, o_proj 8 a lane": {"pdl": True, "defines": (*OPTIMIZED_DEFINES, OPROJ_SHORT_DEFINE)},
    "optimized, residual GEMVs 8 a lane": {"pdl": True, "defines": (*OPTIMIZED_DEFINES, RESID_SHORT_DEFINE)},
    "optimized, o_proj 8 a lane, merge in the split's last block": {
        "pdl": True, "defines": (*OPTIMIZED_DEFINES, OPROJ_SHORT_DEFINE, MERGE_LAST_DEFINE)},
    "optimized, residual GEMVs 8 a lane, merge in the split's last block": {
        "pdl": True, "defines": (*OPTIMIZED_DEFINES, RESID_SHORT_DEFINE, MERGE_LAST_DEFINE)},
    # the same for the attention after the QKV: attn_split's 77 registers (80 allocated) leave it no room beside the
    # 1b's three QKV blocks an SM (64 each), so its cache rows load only once they end; at 4 blocks an SM ptxas gives
    # it 64, no spills (ptxas -v at 43dc820), and one fits beside them
    "optimized, attention 4 blocks an SM": {"pdl": True, "defines": (*OPTIMIZED_DEFINES, ATT_FOUR_BLOCKS_DEFINE)},
    "optimized, residual GEMVs 8 a lane, attention 4 blocks an SM": {
        "pdl": True, "defines": (*OPTIMIZED_DEFINES, RESID_SHORT_DEFINE, ATT_FOUR_BLOCKS_DEFINE)},
    # H100 (b0c30be): the residual GEMVs at 8 slower (1b 994.5 against 969.5 µs at 96), attention at 4 blocks faster at
    # 512 (1b 999.7 against 1010.7, 8b 5315.0 against 5358.2): attn_four_blocks. With the merge in the split's last
    # block as well (attn_merge_last, the 1b's +0.96% at tg128): ptxas then spills 8 bytes in attn_split at 64
    "optimized, attention 4 blocks an SM, merge in the split's last block": {
        "pdl": True, "defines": (*OPTIMIZED_DEFINES, MERGE_LAST_DEFINE, ATT_FOUR_BLOCKS_DEFINE)},
    # H100 (84a617c, CUPTI): the growth from 32 to 512 is the merge's (attn_combine 25.3 -> 69.8 µs a 1b token), where
    # a head's 9 splits at 512 pass the 8 outputs it loads beside their (m, l): 16 (attn_merge_ahead)
    "optimized, merge loads 16 ahead": {"pdl": True, "defines": (*OPTIMIZED_DEFINES, MERGE_AHEAD_DEFINE)},
    "optimized, attention 4 blocks an SM, merge loads 16 ahead": {
        "pdl": True, "defines": (*OPTIMIZED_DEFINES, ATT_FOUR_BLOCKS_DEFINE, MERGE_AHEAD_DEFINE)},
    # H100 (8232160): tg128 (a graph a token, queued back to back) 987 µs a 1b token where one token's graph
    # replayed back to back takes 960: what a graph boundary costs, measured as graphs of 2 and 4 tokens (the
    # same token again: same position, same output), the time per token (no PDL edge crosses a graph boundary)
    **{f"optimized, {n} tokens a graph": {"pdl": True, "defines": OPTIMIZED_WITH_NORMS, TOKENS_A_GRAPH: n}
       for n in (2, 4)},
    "optimized, norm as a scale, 4 tokens a graph": {
        "pdl": True, "defines": (*OPTIMIZED_WITH_NORMS, NORM_SCALE_DEFINE), TOKENS_A_GRAPH: 4},
}
REPLAYS = 50


def weights(cp, p):
    """Random fp16 weights of every layer (std 1/sqrt(fan-in), so activations stay finite)."""
    rng = cp.random.default_rng(0)

    def mat(r, c):
        return (rng.standard_normal((r, c), dtype=cp.float32) * c ** -0.5).astype(cp.float16)

    h, kv, f = p.hidden, p.kv_dim, p.ffn
    layers = [{"wq": mat(h, h), "wk": mat(kv, h), "wv": mat(kv, h), "wo": mat(h, h), "w_gate": mat(f, h),
               "w_up": mat(f, h), "w_down": mat(h, f), "attn_norm": cp.ones(h, cp.float16),
               "ffn_norm": cp.ones(h, cp.float16)} for _ in range(p.n_layers)]
    emb = mat(p.vocab, h)
    w = {"embed": emb, "lm_head": emb if p.tied_embeddings else mat(p.vocab, h), "final_norm": cp.ones(h, cp.float16)}
    nbytes = sum(int(a.nbytes) for layer in layers for k, a in layer.items() if k.startswith("w"))
    return w, layers, nbytes + int(w["lm_head"].nbytes)


def token(own, layers, w) -> None:
    """The cuda_graph config's launches (runner/pipeline.py _forward_own without the Q/K/V fork). A
    --before tree may be from when RoPE had a launch of its own (rope_kv), or from when the RMSNorm could
    be folded into the projections (fold_norm, before it was removed)."""
    fold = getattr(own, "fold_norm", False)
    place = NormPlacement(in_proj=fold or getattr(own, "norm_in_proj", False),  # older trees lack the flags
                          in_resid=getattr(own, "norm_in_resid", False),
                          in_oproj=getattr(own, "norm_in_oproj", False), scale=getattr(own, "norm_as_scale", False))
    own.embed()
    for li, layer in enumerate(layers):
        at = (li,) if hasattr(own, "ahead") else ()  # the layer, for its l2_ahead ranges (older trees take none)
        if (scaled := place.before_qkv(li)) is not None:
            own.rmsnorm(layer["attn_norm"], *((True,) if scaled else ()))  # older trees' rmsnorm takes the gain
        own.qkv(layer, *at)
        if hasattr(own, "rope_kv"):
            own.rope_kv(li)
        own.attention(li)
        own.o_proj(layer, *at)
        if place.before_ffn():
            own.rmsnorm(layer["ffn_norm"])
        own.ffn(layer, *at)
    if not fold and place.final():
        own.rmsnorm(w["final_norm"])
    own.lm_head()
    own.sample()


def load_forward(tree: Path):
    """OwnForward of the own_kernels.py in ``tree`` (its decode.cu beside it, in kernels/)."""
    spec = importlib.util.spec_from_file_location("before_own_kernels", tree / "own_kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.OwnForward


def graph_replay_us(cp, graph, stream, replays: int, warmup: int) -> float:
    """GPU µs per replay of ``graph``: ``warmup`` replays, then ``replays`` back to back between two
    events on ``stream``."""
    for _ in range(warmup):
        graph.launch(stream)
    e0, e1 = cp.cuda.Event(), cp.cuda.Event()
    e0.record(stream)
    for _ in range(replays):
        graph.launch(stream)
    e1.record(stream)
    e1.synchronize()
    return cp.cuda.get_elapsed_time(e0, e1) * 1e3 / replays


def token_inputs(cp, p, pos: int) -> tuple:
    """A token's inputs besides the weights: random K and V caches (every layer), RoPE's inverse
    frequencies, and the token id, position and cache slot in device memory (position ``pos``)."""
    shape = (p.n_layers, p.n_kv_heads, p.max_ctx, p.head_dim)
    ck = cp.random.default_rng(1).standard_normal(shape, dtype=cp.float32).astype(cp.float16)
    cv = cp.random.default_rng(2).standard_normal(shape, dtype=cp.float32).astype(cp.float16)
    inv = cp.asarray((1.0 / p.rope_theta ** (np.arange(0, p.head_dim, 2) / p.head_dim)).astype(np.float32))
    d_tok, d_pos, d_slot = (cp.full(1, v, cp.int32) for v in (7, pos, pos))
    return ck, cv, inv, d_tok, d_pos, d_slot


def tokens_in_a_row(own, layers, w, count: int) -> None:
    """``count`` tokens' launches, one after another (what a variant's graph holds)."""
    for _ in range(count):
        token(own, layers, w)


def run_preset(cp, name: str, rounds: int, pos: int, variants: dict) -> dict:
    """``variants``: label -> (OwnForward class, its keyword arguments)."""
    p = get_preset(name)
    w, layers, wbytes = weights(cp, p)
    ck, cv, inv, d_tok, d_pos, d_slot = token_inputs(cp, p, pos)
    stream = cp.cuda.Stream(non_blocking=True)
    cp.cuda.Device().synchronize()  # the inputs were written on the legacy stream, which this one does not wait for
    graphs, outputs, owners = {}, {}, []  # owners: a graph needs its module loaded and buffers alive
    tokens: dict[str, int] = {}
    for label, (forward, kwargs) in variants.items():
        kwargs = dict(kwargs)
        tokens[label] = kwargs.pop(TOKENS_A_GRAPH, 1)
        # each instance's buffers from one allocation at the same offsets, as the pipeline's (runner/arena.py):
        # from CuPy's pool an A/A pair sat 18.7 µs apart on the 1b (H200, b266cd2) by where its buffers landed
        if "zeros" in inspect.signature(forward).parameters:  # a --before tree may predate the argument
            kwargs = {**kwargs, "zeros": Arena(cp, token_buffers_capacity(p)).zeros}
        own = forward(cp, p, w, layers, None, inv, ck, cv, d_tok, d_pos, d_slot, **kwargs)
        owners.append(own)
        with stream:
            graphs[label] = capture_graph(stream, partial(tokens_in_a_row, own, layers, w, tokens[label]))
            graphs[label].launch(stream)
        stream.synchronize()
        outputs[label] = (own.logits.get(), int(own.next_id.get()[0]))
    ref_logits, ref_id = outputs[next(iter(variants))]
    per_token: dict[str, list[float]] = {k: [] for k in variants}
    waited: dict[str, list[float]] = {k: [] for k in variants}
    launch_us: dict[str, list[float]] = {k: [] for k in variants}
    order = np.random.default_rng(3)
    for _ in range(rounds):
        for label in order.permutation(list(variants)):
            g = graphs[label]
            n = tokens[label]
            per_token[label].append(graph_replay_us(cp, g, stream, REPLAYS // n, warmup=5) / n)
            # the same with the host waiting for each token (as a decode loop must), host clock
            t0 = time.perf_counter()
            for _ in range(REPLAYS // n):
                g.launch(stream)
                stream.synchronize()
            waited[label].append((time.perf_counter() - t0) * 1e6 / (REPLAYS // n * n))
            t0 = time.perf_counter()
            g.launch(stream)
            launch_us[label].append((time.perf_counter() - t0) * 1e6)
            stream.synchronize()
    kv_bytes = 2 * p.n_layers * p.n_kv_heads * (pos + 1) * p.head_dim * 2
    out = {"weights_mb": wbytes / 1e6, "kv_mb": kv_bytes / 1e6, "position": pos, "variants": {}}
    for label in variants:
        us = float(np.median(per_token[label]))
        logits, nid = outputs[label]
        out["variants"][label] = {
            "us_per_token": us, "us_host_waits": float(np.median(waited[label])),
            "launch_call_us": float(np.median(launch_us[label])), "min_us": float(np.min(per_token[label])),
            "max_us": float(np.max(per_token[label])),
            "gbs": (wbytes + kv_bytes) / us / 1e3, "same_token": nid == ref_id, "tokens_a_graph": tokens[label],
            "max_logit_diff": float(np.max(np.abs(logits.astype(np.float32) - ref_logits.astype(np.float32))))}
    del graphs, owners, layers, w
    cp.get_default_memory_pool().free_all_blocks()
    return out


def chosen_variants(ap: argparse.ArgumentParser, names: str, known: dict) -> list[str]:
    """The ';'-separated ``names`` of a --variants option, each one of ``known``; an unknown one is
    refused by ``ap`` (one line, exit 2) before anything runs or is written."""
    picked = names.split(";")
    unknown = [v for v in picked if v not in known]
    if unknown:
        ap.error(f"unknown variants: {unknown}")
    return picked


def probe_parser(doc: str, variants: dict, rounds: int, position: bool) -> argparse.ArgumentParser:
    """The options every GPU probe of bench/ takes (pdl_variants, persistent_chain, persistent_token):
    presets, rounds, the token's position where it has one, the variants to run, the output folder."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--presets", default="1b,8b")
    ap.add_argument("--rounds", type=int, default=rounds)
    if position:
        ap.add_argument("--position", type=int, default=96, help="the token's position (context = position + 1)")
    ap.add_argument("--variants", default=";".join(variants), help="';'-separated names of VARIANTS to run")
    ap.add_argument("--out", type=Path, required=True)
    return ap


def probe_header(cp, replays: int, rounds: int) -> dict:
    """What every probe's report says about its run: commit, device, the copy bandwidth measured now."""
    from runner.device import CudaDevice

    return {"git": git_info(), "device": CudaDevice().info(), "copy_bw_gbs": copy_bandwidth_gbs(cp),
            "replays": replays, "rounds": rounds}


def run_probe(out: Path, stem: str, report: dict, presets: list[str], run) -> None:
    """``run(preset)`` for each preset into ``report["presets"]``, a line as each is done, then the
    report and its table under ``out`` (bench/outputs.save)."""
    report["presets"] = {}
    for name in presets:
        report["presets"][name] = run(name)
        print(f"{name} done", flush=True)
    save(out, stem, report)


def main() -> int:
    ap = probe_parser(__doc__, VARIANTS, 15, position=True)
    ap.add_argument("--before", type=Path, help="a tree with own_kernels.py + kernels/decode.cu to compare with")
    ap.add_argument("--before-variants", default="pdl, trigger after wait", help="';'-separated, run on --before")
    args = ap.parse_args()
    variants = {k: (OwnForward, VARIANTS[k]) for k in chosen_variants(ap, args.variants, VARIANTS)}
    if args.before:
        before_names = chosen_variants(ap, args.before_variants, VARIANTS)
        before = load_forward(args.before)
        variants.update({f"before: {k}": (before, VARIANTS[k]) for k in before_names})
    import cupy as cp

    report = {**probe_header(cp, REPLAYS, args.rounds), "before": str(args.before or "")}
    run_probe(args.out, "pdl_variants", report, args.presets.split(","),
              lambda name: run_preset(cp, name, args.rounds, args.position, variants))
    return 0


if __name__ == "__main__":
    sys.exit(main())
