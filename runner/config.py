"""Configurations: named sets of switches, each switch one seed optimization.

A config changes scheduling, never math: every config must generate the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from runner.own_kernels import (ATT_FILL_DEFINE, ATT_FIT_DEFINES, ATT_FOUR_BLOCKS_DEFINE, ATT_GROUP_DEFINE,
                                ATT_SHARE_DEFINES, EARLY_DEFINE, HOIST_DEFINE, MERGE_AHEAD_DEFINE, MERGE_DEFINE,
                                MERGE_LAST_DEFINE, NORM_DEFINE, NORM_DOT_DEFINE, NORM_RESID_DEFINE, NORM_SCALE_DEFINE,
                                OPROJ_SHORT_DEFINE, OVERLAP_DEFINES, RESID_DEEP_WHERE_ONE_WAVE, RESID_SHORT_DEFINE,
                                SMEM_CARVEOUT_DEFINE)


@dataclass(frozen=True)
class Switch:
    kind: type  # bool or int
    default: object
    gpu_only: bool  # no effect on the CPU backend
    built: bool  # reserved names may exist before their implementation
    help: str


SWITCHES: dict[str, Switch] = {
    "async_copies": Switch(bool, False, True, True,
                           "PR 17795: inputs from pinned staging buffers, async copies on the compute "
                           "stream, one synchronization per token"),
    "qkv_streams": Switch(bool, False, True, True,
                          "PR 16991: Q, K and V projections on three streams, forked and joined with events"),
    "own_kernels": Switch(bool, False, True, True,
                          "our own fused CUDA kernels (RawKernel) instead of cuBLAS + CuPy elementwise ops"),
    "cuda_graph": Switch(bool, False, True, True,
                         "capture one token as a CUDA graph once and replay it every token (implies own_kernels)"),
    "pdl": Switch(bool, False, True, True,
                  "programmatic dependent launch: each of our kernels may start while the previous one drains, "
                  "its weight loads issued before it waits for that kernel's output (implies own_kernels)"),
    "run_ahead": Switch(bool, False, True, True,
                        "the host queues decode tokens ahead of the device: each token's greedy pick becomes the "
                        "next token's input on the device, so no input copies and no wait per token; the host "
                        "waits once, after the last (implies cuda_graph)"),
    "attn_one_wave": Switch(bool, False, True, True,
                            "our attention kernel bounded to 3 blocks an SM (76 registers instead of 84), so "
                            "its blocks fit one wave up to 768 positions: flatter token latency at long "
                            "contexts for fewer tokens/s at short ones (H200: 8b growth 32->512 +0.8% instead "
                            "of +2.9%; implies own_kernels)"),
    "attn_group_heads": Switch(bool, False, True, True,
                               "our attention kernel gives one block several query heads of a KV head once a "
                               "block per head and split is past one wave (from 513 positions on an H200), "
                               "so it stays one wave to 4x the context (H200: the 8b's token at 512 0.3-1.5% "
                               "faster, the 1b's tokens/s at tg128 0.6-1.1% lower; implies own_kernels)"),
    "attn_fill_split": Switch(bool, False, True, True,
                              "once a block per head and split is past one wave, our attention kernel's split "
                              "covers every position its block's threads hold (128 at head_dim 64 instead of 64; "
                              "unchanged at 128): half the 1b's attention blocks from position 512 on an H200, "
                              "one wave to 1024 positions. On the H100 with smem_carveout, tg128 1b 0.56% slower "
                              "with it and one token at 512 no faster: out of optimized (implies own_kernels)"),
    "attn_fit_wave": Switch(bool, False, True, True,
                            "once a block per head and split is past one wave, our attention kernel's split is "
                            "the shortest that keeps one wave (whole rows of its threads, up to 5 positions a "
                            "thread instead of 4): the 8b's splits grow too (80 positions at 513, 224 blocks "
                            "instead of 288; H200: its growth 32->512 +1.6% instead of +2.6%, tg128 undecided; "
                            "the 1b no better); replaces attn_fill_split's rule (implies own_kernels)"),
    "attn_merge_in_oproj": Switch(bool, False, True, True,
                                  "the attention's split outputs merged by every block of the o_proj GEMV into "
                                  "shared memory before its products, instead of a merge launch of its own "
                                  "(16 launches fewer a 1b token). Measured slower on an H200: every block merges "
                                  "every head (8b at 512: 4564 against 4312 µs a token); implies own_kernels)"),
    "attn_merge_last": Switch(bool, False, True, True,
                              "the attention's split outputs merged by our attention kernel's block that writes a "
                              "head's last split (a ticket counter a head), instead of a merge launch of its own: "
                              "16 launches and kernel boundaries fewer a 1b token, 32 an 8b one; the merge's "
                              "arithmetic in its order, so the same tokens (implies own_kernels). H100: tg128 1b "
                              "+0.96% [+0.90, +1.00], 8b no change; one token at 96 1b 972.6 against 976.4 / 972.7 "
                              "(A/A) µs, but at 512 8b 5420.4 against 5335.4 / 5334.5: not in optimized "
                              "(reports/bench/pdl_variants_merge_last_pos*_h100_31b68ef)"),
    "attn_share_kv": Switch(bool, False, True, True,
                            "our attention kernel gives a block a KV head's query heads together (attn_share): "
                            "each cache row is read once a token, not once per query head, and the splits are "
                            "sized to about one block an SM at every context; replaces the other attn_* split "
                            "rules (implies own_kernels)"),
    "l2_ahead": Switch(bool, False, True, True,
                       "our GEMVs pull the weights of the kernels after them into L2 once their own rows are "
                       "read (o_proj's during the attention, the first gate/up rows during the norm, the next "
                       "layer's QKV rows), so the memory works while the latency-bound kernels run "
                       "(implies own_kernels). Measured no faster: one token at position 96, H100 1b 1144.2-1194.7 "
                       "µs at 4-16 MB against 1146.7 without, slower on the H200 (reports/bench/"
                       "pdl_variants_l2_ahead_*)"),
    "norm_in_proj": Switch(bool, False, True, True,
                           "our QKV and gate/up GEMVs compute the RMSNorm they read, each block from the fp32 "
                           "residual into shared memory (rmsnorm's arithmetic, bit for bit), so the 32 norm "
                           "launches before them go; the final norm before the LM head stays (implies own_kernels). "
                           "Measured slower on an H200: one token at position 96, 1b 1005.5 against 877.4 µs, 8b "
                           "4385.9 against 3992.9 (reports/bench/pdl_variants_x_stage_pos96_h200_271324e.md)"),
    "norm_in_dot": Switch(bool, False, True, True,
                          "our QKV and gate/up GEMVs apply the RMSNorm they read as a scale of their products: each "
                          "warp reads the residual times the gain (staged in shared memory once its PDL wait "
                          "returns), sums the residual's squares as it goes and scales its row's product by "
                          "rsqrt(mean + eps) at the end, so the 32 norm launches before them go and no block-wide "
                          "reduction takes their place (norm_in_proj's cost); the final norm before the LM head "
                          "stays. Not rmsnorm's bits: the normalised vector is not rounded to fp16 (the float64 "
                          "checks decide); replaces norm_in_proj (implies own_kernels)"),
    "norm_as_scale": Switch(bool, False, True, True,
                            "the RMSNorm before our QKV and gate/up GEMVs as a scale of their products with nothing "
                            "added to their loops: o_proj and down (and the norm after the embedding) leave the "
                            "residual times the gain in fp16 and their blocks' sums of squares, and QKV and gate/up "
                            "stage both as they stage x, add the sums in a fixed order and scale each row's product "
                            "by rsqrt(mean + eps), so 31 norm launches go (the final norm stays). Not rmsnorm's bits: "
                            "the vector is rounded to fp16 before the norm's scale (the float64 checks decide); "
                            "H100 tg128 (perfreview ab): 1b +0.74% [+0.64, +0.81], 8b -0.1% [-0.7, -0.0]. Left "
                            "out where norm_in_proj, norm_in_dot, norm_in_residual or attn_merge_in_oproj is on "
                            "(in optimized; implies own_kernels)"),
    "early_loads": Switch(bool, False, True, True,
                          "our kernels' loads in the order they were written for (decode.cu's EARLY_LOADS and "
                          "HOIST_LOADS): the weights a GEMV (and rmsnorm's gain) reads before its PDL wait as "
                          "coherent loads, which ptxas keeps before the wait (it moves __ldg loads after it), and "
                          "one trip to memory after the wait where the SASS showed two or three (the residual "
                          "GEMVs, attention, the merge). The same arithmetic. H100, one token at position 96: 1b "
                          "1033.3 against 1085.3 µs, 8b 5277.5 against 5294.0 (in optimized; implies own_kernels)"),
    "overlap_tuning": Switch(bool, False, True, True,
                             "our kernels' prefetch depths and triggers chosen for weights that load before the "
                             "PDL wait (with early_loads): the QKV and gate/up GEMVs load 8 chunks a lane before it, "
                             "the RMSNorm and the attention merge let the next projection launch at their start, "
                             "the residual GEMVs load 16 a lane where their blocks fit one wave (the 1b). The same "
                             "arithmetic. H200, one token at position 96: 1b 777.7 against 851.3 µs, 8b 3820.1 "
                             "against 3955.1 with 8 a lane; H100 tg128: 1b 978.4 against 946.0 t/s, 8b 189.8 "
                             "against 185.1 (in optimized; implies own_kernels)"),
    "smem_carveout": Switch(bool, False, True, True,
                            "every one of our kernels prefers 75% of the SM's unified L1 as shared memory, one "
                            "configuration for all where the driver otherwise sizes each kernel's from its own need, "
                            "so blocks of consecutive kernels can share SMs under PDL. The same code and arithmetic. "
                            "H100, one token at position 96: 1b 973.0 against 1009.6 µs (A/A 1004.8), 8b 5216.4 "
                            "against 5228.5 (in optimized; implies own_kernels)"),
    "norm_in_residual": Switch(bool, False, True, True,
                               "our o_proj and down GEMVs also write the RMSNorm of the residual they leave, in "
                               "the block that finishes last (a ticket counter), so the 32 norm launches after "
                               "them go and with them a kernel boundary each; the norm after the embedding stays, "
                               "and with attn_merge_in_oproj the one after o_proj (rmsnorm's arithmetic, bit for "
                               "bit; implies own_kernels). Measured slower on the H100: one token at position 96, 1b "
                               "1052.2 against 999.4 µs (A/A 993.3), 8b 5374.1 against 5143.6 (5145.0); tg128 with "
                               "perfreview ab 1b -6.07% [-6.31, -5.87], 8b -4.8% [-5.7, -4.7] (reports/bench/"
                               "pdl_variants_norm_*_h100_*, reports/h100-review-norm-in-residual/)"),
    "oproj_short_prefetch": Switch(bool, False, True, True,
                                   "our o_proj GEMV loads 8 chunks a lane before its PDL wait (its 2048-wide 1b rows "
                                   "whole) where overlap_tuning gives the residual GEMVs 16: 64 registers instead of "
                                   "112, so a block of gate/up fits on an SM beside two of o_proj and loads its rows "
                                   "before o_proj ends; down keeps 16. The same arithmetic (implies own_kernels). "
                                   "H100, one token: 1b 969.6 against 969.5 µs (A/A 966.3) at 96, slower at 512 "
                                   "(1027.9 against 1010.7 / 1006.1); 8b within the A/A pair (reports/bench/"
                                   "pdl_variants_coresidency_pos*_h100_b0c30be)"),
    "resid_short_prefetch": Switch(bool, False, True, True,
                                   "our o_proj and down GEMVs load 8 chunks a lane before their PDL wait, not the 16 "
                                   "overlap_tuning gives them where their blocks fit one wave (the 1b): 64 registers "
                                   "instead of 112, so blocks of gate/up, of down and of the next QKV fit on an SM "
                                   "beside the kernel before them and load their rows before it ends. The same "
                                   "arithmetic (implies own_kernels). Measured slower on the H100: one token, 1b "
                                   "994.5 against 969.5 µs (A/A 966.3) at 96, 1053.9 against 1010.7 (1006.1) at 512; "
                                   "8b within the A/A pair (reports/bench/pdl_variants_coresidency_pos*_h100_b0c30be)"),
    "attn_four_blocks": Switch(bool, False, True, True,
                               "our attention split kernel compiled for 4 blocks an SM (__launch_bounds__; 64 "
                               "registers, no spill, where it takes 77 for 2), so one of its blocks fits on an SM "
                               "beside the 1b's three QKV blocks and starts before the QKV ends. The same "
                               "arithmetic. H100, one token at 512: 1b 999.7 against 1010.7 µs (A/A 1006.1), 8b "
                               "5315.0 against 5358.2 (5341.6); at 96 within the A/A pair (reports/bench/"
                               "pdl_variants_coresidency_pos*_h100_b0c30be). perfreview ab (reports/h100-review-"
                               "four-blocks): tg128 1b -0.01% [-0.17, +0.09], 8b -0.15% [-0.42, +0.17], no change; "
                               "after 448 (positions 448-511, 8 splits: the blocks fit at 2 an SM) 1b -0.28% "
                               "[-0.37, -0.22] no change, 8b inconclusive; after 512 (9-10 splits a head, 288-320 "
                               "blocks past the 264 slots) 1b +0.76% [+0.56, +0.94] improved, 8b +0.5% [-0.4, +1.0] "
                               "inconclusive (84a617c): a long-context switch, not in optimized, whose workload is "
                               "tg128 after 32 (replaces attn_one_wave; implies own_kernels)"),
    "attn_merge_ahead": Switch(bool, False, True, True,
                               "our attention merge (attn_combine) loads 16 splits' outputs beside their maxima and "
                               "sums, not 8, so it makes one memory trip after its wait up to 1024 positions; from "
                               "512 on (9 splits of 64 a head) it made two. Written for the growth to 512, which "
                               "CUPTI puts in the merge (H100, 84a617c: attn_combine 25.3 -> 69.8 µs a 1b token from "
                               "positions 32-63 to 512-543, 8b 71.2 -> 134.2). The same arithmetic in the same order "
                               "(the same tokens). No faster: one token at 512 on the H100, 1b 1006.9 µs against "
                               "1010.5 (A/A 1006.1), 8b within its A/A pair (reports/bench/pdl_variants_merge_ahead_*"
                               "_774b7b8); the merge's CUPTI time is its wait for attn_split's second wave "
                               "(implies own_kernels)"),
    "buffers_first": Switch(bool, False, False, True,
                            "the pipeline's one allocation (runner/arena.py) holds the token's small buffers (its "
                            "inputs, the mask, our kernels' activations and attention partials) from its start and "
                            "the KV caches at its end, not the caches first. Written for the gap between one "
                            "token's graph on the pipeline's memory (991 µs, H100 1b at 96, 774b7b8) and the same "
                            "token in bench/pdl_variants.py (967). No gain: H100 one token at 96, 1b 979.3 against "
                            "978.6 µs, 8b 5164.6 against 5147.0, and in one process no memory the token reads "
                            "separates the two (reports/bench/token_gap_h100_cc618b3; implies own_kernels)"),
    "sm_config_reset": Switch(bool, False, True, True,
                              "at each sequence's start (after the KV cache is emptied), one launch of our "
                              "configure_sms: two blocks an SM, each needing 64 KB of shared memory and preferring "
                              "our kernels' carveout, so every SM is in the configuration they prefer whatever "
                              "another library's kernel left. Written for the step drift_which_fills_h100_b5e2899 "
                              "found (CuPy's fills between our tokens slow every later token of the process by "
                              "1.5%). No gain: it does not set a stepped token back, and the 1b gives 1021.5 t/s "
                              "with it, 1021.9 without (H100, drift_carveout_*_h100_0aa491b, "
                              "decode_reset_h100_0aa491b; implies own_kernels; nothing without smem_carveout)"),
    "own_reset": Switch(bool, False, True, True,
                        "the KV cache emptied at each sequence's start by our own kernel (decode.cu's fill_words, "
                        "a kernel of the token's module) launched as a graph, instead of CuPy's fill (a memset), and "
                        "a new instance's memory zeroed by it too (not by a memset at its making), so that nothing "
                        "but the token's module runs between its launches: a kernel of "
                        "another module between them slowed every later token of the process by 1.5% on the H100 "
                        "(drift_carveout_*_h100_0aa491b). No arithmetic changes. Not measured on a GPU yet (scripts/"
                        "decode_task.sh foreign, and decode with DECODE_ISOLATE=1); not in optimized (implies "
                        "own_kernels)"),
    "inject_delay_us": Switch(int, 0, False, True,
                              "a busy wait of N us added to every token on the device "
                              "(sensitivity checks, known regressions)"),
    "inject_slowdown_pct": Switch(float, 0.0, False, True,
                                  "a busy wait per token sized to N percent of the token time measured on this "
                                  "device just before the run (calibrated; the run records the delay it chose)"),
}

OPTIMIZATIONS = ("async_copies", "qkv_streams", "own_kernels", "cuda_graph", "pdl", "run_ahead")
# Switches that tune our kernels for another workload than the reviews' (tg128 after 32), not in
# ``optimized`` unless TUNING_IN_OPTIMIZED says so; checked like the optimizations (perfreview check).
KERNEL_TUNING = ("attn_one_wave", "attn_group_heads", "attn_fill_split", "attn_fit_wave", "attn_merge_in_oproj",
                 "attn_merge_last", "attn_share_kv", "l2_ahead", "norm_in_proj", "norm_in_dot", "early_loads",
                 "overlap_tuning", "norm_in_residual", "smem_carveout", "norm_as_scale", "oproj_short_prefetch",
                 "resid_short_prefetch", "attn_four_blocks", "attn_merge_ahead", "buffers_first", "sm_config_reset",
                 "own_reset")
KERNEL_DEFINES: dict[str, tuple[str, ...]] = {  # decode.cu's compile-time tunables each switch sets
    "attn_one_wave": ("-DATT_MIN_BLOCKS=3",), "attn_group_heads": (ATT_GROUP_DEFINE,),
    "attn_fill_split": (ATT_FILL_DEFINE,), "attn_fit_wave": ATT_FIT_DEFINES, "attn_merge_in_oproj": (MERGE_DEFINE,),
    "attn_merge_last": (MERGE_LAST_DEFINE,), "attn_share_kv": ATT_SHARE_DEFINES, "norm_in_proj": (NORM_DEFINE,),
    "norm_in_dot": (NORM_DOT_DEFINE,),
    "norm_in_residual": (NORM_RESID_DEFINE,), "early_loads": (EARLY_DEFINE, HOIST_DEFINE),
    "overlap_tuning": (*OVERLAP_DEFINES, RESID_DEEP_WHERE_ONE_WAVE), "smem_carveout": (SMEM_CARVEOUT_DEFINE,),
    "norm_as_scale": (NORM_SCALE_DEFINE,), "oproj_short_prefetch": (OPROJ_SHORT_DEFINE,),
    "resid_short_prefetch": (RESID_SHORT_DEFINE,), "attn_four_blocks": (ATT_FOUR_BLOCKS_DEFINE,),
    "attn_merge_ahead": (MERGE_AHEAD_DEFINE,)}
# attn_fit_wave's split rule (ATT_FILL=3) includes attn_fill_split's, and attn_share_kv (ATT_FILL=4) sizes
# every split itself: with several on, one ATT_FILL (a switch is left out when one that supersedes it is on);
# norm_in_proj, norm_in_dot and norm_as_scale are three modes of one define (NORM_IN_PROJ 1, 2 and 3);
# norm_as_scale (in optimized) also cannot run with norm_in_residual or attn_merge_in_oproj
SUPERSEDED = {"attn_fill_split": ("attn_fit_wave", "attn_share_kv"), "attn_fit_wave": ("attn_share_kv",),
              "attn_one_wave": ("attn_four_blocks",),  # one ATT_MIN_BLOCKS
              "norm_in_proj": ("norm_in_dot",),
              # optimized has norm_as_scale: another placement of the norm (or a merge in o_proj, which leaves no
              # sums of squares) asked for on top of it replaces it
              "norm_as_scale": ("norm_in_proj", "norm_in_dot", "norm_in_residual", "attn_merge_in_oproj")}

# Optimizations that slow our fastest path down, measured: left out of ``optimized`` (each stays a
# switch of its own, and a review of it alone is still the seed PR's question). qkv_streams: on our
# kernels, Q, K and V as three launches on forked streams are slower than one fused launch
# (bench/decode.md: 8b optimized with it vs without).
NOT_IN_OPTIMIZED = ("qkv_streams",)

# Kernel tuning that ``optimized`` turns on. attn_fill_split (past one wave of attention blocks, at head_dim 64)
# was in it from the H200 (the 1b's token at 512 949.5 against 995.1 µs: pdl_variants_att_fill2_pos*_h200_def9a77)
# and left it on the H100 with smem_carveout in (9a03e5e, 31b68ef): tg128 1b +0.56% [+0.53, +0.62] without it
# (perfreview ab, A/A no change; 8b the same build), one token at 96 967.8 against 976.4 / 972.7 (A/A) µs and at
# 512 1025.6 against 1024.6 / 1022.2 (reports/bench/pdl_variants_merge_last_pos*_h100_31b68ef).
# early_loads: the weights loaded under the kernel before as the PDL code meant; on the H100
# (reports/bench/pdl_variants_early_pos*_h100_57f0958) the 1b's token at position 96 1033.3 against 1085.3 µs,
# at 512 1049.8 against 1102.4; the 8b's 5277.5 against 5294.0 and 5322.8 against 5420.6.
# overlap_tuning: with the weights before the wait, deeper prefetch and the norm and merge triggering at their
# start pay (reports/bench/pdl_variants_combined_pos*_h200_4d83b68, A/A rows 851.3 / 860.1 µs on the 1b at 96):
# 1b 777.7 at 96, 818.1 at 512 (A/A 866.8 / 876.2); 8b 3820.1 against 3955.1 / 3952.0 at 96, 3928.2 against
# 3988.9 / 3988.2 at 512 (16 a lane in the residual GEMVs only where one wave holds them: resid_depth).
# smem_carveout: one shared-memory configuration for every kernel
# (reports/bench/pdl_variants_carveout_pos*_h100_38707b2): the 1b's token 3.5% shorter at 96 and 2.7% at 512,
# the 8b's within 0.3% either way.
# norm_as_scale: 31 norm launches fewer, nothing added to the products (H100, c16c6c6 / 8aeb2bf): tg128 perfreview ab
# 1b +0.74% [+0.64, +0.81], 8b -0.1% [-0.7, -0.0] (under the 0.5% threshold; A/A controls no change); decode table
# 1b 1017.2 [1016.0, 1022.6] t/s against 1013.4 [1010.5, 1014.1], 8b 193.5 against 193.4; one token at 96 as a graph
# 1b 956.1 against 965.4 / 959.9 (A/A) µs, 8b 5115.7 against 5131.8 / 5137.2 (reports/bench/pdl_variants_*_c16c6c6).
TUNING_IN_OPTIMIZED = ("early_loads", "overlap_tuning", "smem_carveout", "norm_as_scale")

CONFIGS: dict[str, dict[str, object]] = {
    "baseline": {},
    # Every optimization that is built and measured to help, the delay off.
    "optimized": {k: True for k in OPTIMIZATIONS + TUNING_IN_OPTIMIZED
                  if SWITCHES[k].built and k not in NOT_IN_OPTIMIZED},
}


def not_built(switches: dict[str, object]) -> list[str]:
    """Switches turned on that are reserved but not built yet."""
    return [k for k, v in switches.items() if v not in (False, 0) and not SWITCHES[k].built]


class NotBuiltError(RuntimeError):
    """A reserved switch that is not built yet was turned on where it would act."""


@dataclass(frozen=True)
class Config:
    """A named config plus its switches (every switch present, defaults filled)."""

    base: str
    switches: dict[str, object] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``baseline``, or ``baseline+async_copies`` when switches differ from the named config."""
        named = resolve(self.base).switches
        extra = [
            k if v is True else f"{k}={v}"
            for k, v in self.switches.items()
            if v != named.get(k) and v not in (False, 0)
        ]
        off = [f"no_{k}" for k, v in self.switches.items() if v in (False, 0) and named.get(k) not in (False, 0)]
        return "+".join([self.base, *extra, *off])

    def with_switches(self, **changes: object) -> "Config":
        merged = dict(self.switches)
        for key, value in changes.items():
            merged[key] = parse_switch(key, value)
        return replace(self, switches=merged)


def defaults() -> dict[str, object]:
    return {name: spec.default for name, spec in SWITCHES.items()}


def parse_switch(name: str, value: object) -> object:
    """Parse one switch value (``on``/``off``/``true``/``1``/numbers); errors name the switch."""
    if name not in SWITCHES:
        raise ValueError(f"unknown switch {name!r} (known: {', '.join(SWITCHES)})")
    kind = SWITCHES[name].kind
    text = str(value).strip().lower()
    if kind is bool:
        if text in ("on", "true", "1", "yes"):
            return True
        if text in ("off", "false", "0", "no"):
            return False
        raise ValueError(f"switch {name!r} takes on/off, not {value!r}")
    if kind is float:
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"switch {name!r} takes a number, not {value!r}") from None
        if not (0 <= number < 100):
            raise ValueError(f"switch {name!r} must be between 0 and 100, not {number}")
        return number
    try:
        number = int(text)
    except ValueError:
        raise ValueError(f"switch {name!r} takes a whole number, not {value!r}") from None
    if number < 0:
        raise ValueError(f"switch {name!r} must be >= 0, not {number}")
    return number


def resolve(name: str, overrides: dict[str, object] | None = None) -> Config:
    """The config ``name`` with ``overrides`` (``{"async_copies": "on"}``) applied."""
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r} (known: {', '.join(CONFIGS)})")
    switches = defaults()
    switches.update(CONFIGS[name])
    config = Config(name, switches)
    return config.with_switches(**(overrides or {}))


def parse_side(text: str) -> Config:
    """``config=baseline,async_copies=on`` or ``baseline,inject_delay_us=300`` -> Config."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("empty config")
    head = parts[0]
    name = head.split("=", 1)[1] if head.startswith("config=") else head
    overrides: dict[str, object] = {}
    for part in parts[1:]:
        if "=" not in part:
            raise ValueError(f"switch {part!r} needs a value, e.g. {part}=on")
        key, value = part.split("=", 1)
        overrides[key.strip()] = value.strip()
    return resolve(name, overrides)


def effective(config: Config, gpu: bool) -> dict[str, object]:
    """Switches as they act on this backend; GPU-only switches have no effect on the CPU."""
    out = dict(config.switches)
    if config.switches.get("run_ahead"):  # queued tokens need the token as one graph of our kernels
        out["cuda_graph"] = True
    if out.get("cuda_graph") or config.switches.get("pdl") or any(config.switches.get(k) for k in KERNEL_TUNING):
        out["own_kernels"] = True
    if not gpu:
        for name, spec in SWITCHES.items():
            if spec.gpu_only:
                out[name] = spec.default
    return out


def kernel_family(config: Config, gpu: bool) -> str:
    """Configs of one family run the same arithmetic and must give identical tokens; across
    families (cuBLAS + CuPy ops vs our kernels) the summation order differs, so only the fp16
    tolerance against the float64 reference applies."""
    eff = effective(config, gpu)
    return "own_kernels" if eff.get("own_kernels") else "eager"


def not_in_effect(config: Config, gpu: bool) -> list[str]:
    """Switches set in ``config`` that this backend ignores (recorded in the run metadata)."""
    eff = effective(config, gpu)
    return [k for k, v in config.switches.items() if v != eff[k] and v not in (False, 0)]


def kernel_defines(switches: dict[str, object]) -> tuple[str, ...]:
    """The -D defines of decode.cu that the effective ``switches`` ask for (its compile-time tunables)."""
    on = [name for name in KERNEL_DEFINES
          if switches.get(name) and not any(switches.get(k) for k in SUPERSEDED.get(name, ()))]
    return tuple(define for name in on for define in KERNEL_DEFINES[name])


def gpu_kernel_defines(name: str, overrides: dict[str, object] | None = None) -> tuple[str, ...]:
    """The -D defines the config ``name`` (with ``overrides``, as :func:`resolve` takes them) builds decode.cu
    with on a GPU (as the pipeline compiles it)."""
    return kernel_defines(effective(resolve(name, overrides), gpu=True))
