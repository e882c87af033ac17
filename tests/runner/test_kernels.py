"""Our CUDA kernels: the source compiles for sm_90, and their algorithms (as NumPy) match the math."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from runner import own_kernels as ok

def _source_define(name: str) -> int:
    """decode.cu's default for one of its -D options."""
    return int(re.search(rf"#define {name} (\d+)", ok.SOURCE.read_text()).group(1))


KERNELS = ("gemv", "gemv_qkv", "gemv_residual", "gemv_residual_short", "gemv_residual_merge", "gemv_swiglu",
           "rmsnorm", "embed", "attn_split", "attn_combine", "argmax", "argmax_partial", "argmax_final", "spin_ns",
           "advance", "configure_sms", "fill_words")


def _ptx_bodies(tmp_path, defines) -> dict[str, str]:
    """decode.cu compiled to PTX for sm_90 with ``defines``: each kernel's PTX body by name."""
    out = tmp_path / "decode.ptx"
    done = subprocess.run(["nvcc", "--ptx", "-arch=sm_90", *defines, "-o", str(out), str(ok.SOURCE)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return dict(re.findall(r"\.entry\s+(\w+)(.*?)(?=\.entry|\Z)", out.read_text(), flags=re.S))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed on this machine")
def test_source_compiles_for_sm90(tmp_path):
    assert set(_ptx_bodies(tmp_path, ())) == set(KERNELS)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed on this machine")
@pytest.mark.parametrize("defines", [["-DPDL_TRIGGER=0"], ["-DPDL_TRIGGER=1"], ["-DPRE=1"],
                                     ["-DNORM_TRIGGER_START=1", "-DCOMBINE_TRIGGER_START=1", "-DRESID_MIN_BLOCKS=5"],
                                     ["-DATT_GROUP=1"], ["-DATT_GROUP=1", "-DATT_MIN_BLOCKS=3"], ["-DATT_FILL=1"],
                                     ["-DATT_FILL=2"], ["-DATT_FILL=2", "-DATT_GROUP=1"],
                                     ["-DATT_FILL=2", "-DATT_MIN_BLOCKS=3"], list(ok.ATT_FIT_DEFINES),
                                     ["-DATT_FILL=2", ok.MERGE_DEFINE], ["-DATT_SHARE_KV=4", "-DATT_FILL=4"],
                                     ["-DATT_SHARE_KV=2", "-DATT_FILL=4", "-DPDL_TRIGGER=1"],
                                     ["-DATT_FILL=2", ok.EARLY_DEFINE, ok.HOIST_DEFINE],
                                     [ok.HOIST_DEFINE, "-DPDL_TRIGGER=1"],
                                     ["-DATT_FILL=2", ok.EARLY_DEFINE, ok.HOIST_DEFINE, *ok.OVERLAP_DEFINES,
                                      ok.RESID_DEEP], ["-DATT_FILL=2", ok.MERGE_LAST_DEFINE],
                                     [ok.MERGE_LAST_DEFINE, ok.ATT_GROUP_DEFINE, ok.HOIST_DEFINE]])
def test_pdl_variants_compile_and_every_kernel_waits(tmp_path, defines):
    """Every kernel waits for the previous one (griddepcontrol.wait) whatever the variant: a kernel
    launched with PDL that did not would race with the kernel before it."""
    bodies = _ptx_bodies(tmp_path, defines)
    kernels = set(KERNELS) | ({"attn_share"} if any(x.startswith("-DATT_SHARE_KV=") for x in defines) else set())
    assert set(bodies) == kernels
    assert all("griddepcontrol.wait" in body for body in bodies.values())
    triggers = sum("griddepcontrol.launch_dependents" in body for body in bodies.values())
    assert triggers == (0 if "-DPDL_TRIGGER=0" in defines else len(kernels))


def _switch_builds() -> dict[str, tuple[str, ...]]:
    """decode.cu's defines for optimized, for our kernels without tuning, and for optimized with each
    kernel-tuning switch on (attn_share's query heads a KV head: the presets' 4)."""
    from runner import config as cfg

    builds = {"optimized": cfg.gpu_kernel_defines("optimized"), "plain": ()}
    for name in cfg.KERNEL_TUNING:
        defines = cfg.gpu_kernel_defines("optimized", {name: "on"})
        builds[name] = tuple("-DATT_SHARE_KV=4" if x.startswith("-DATT_SHARE_KV=") else x for x in defines)
    return builds


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed on this machine")
@pytest.mark.parametrize("build", list(_switch_builds()))
def test_every_switch_build_keeps_its_registers_without_spills(tmp_path, build):
    """ptxas for sm_90: no kernel of any switch's build spills registers to local memory (a spill is a
    memory trip per use, on a path that is latency-bound), and the attention kernels keep the
    occupancy their comments rely on: two blocks an SM (at most 128 registers at 256 threads)."""
    kernels = _ptxas(tmp_path, _switch_builds()[build])
    expected = set(KERNELS) | ({"attn_share"} if "attn_share" in build else set())
    assert set(kernels) == expected
    assert {name: v[:2] for name, v in kernels.items() if v[:2] != (0, 0)} == {}
    assert kernels["attn_split"][2] <= 128 and kernels.get("attn_share", (0, 0, 0))[2] <= 128


def _ptxas(tmp_path, defines) -> dict[str, tuple[int, int, int]]:
    """ptxas -v for sm_90 on decode.cu built with ``defines``: each kernel's bytes of spill stores, of spill loads
    and its registers a thread."""
    done = subprocess.run(["nvcc", "-arch=sm_90", "-cubin", "--std=c++17", *defines, "-Xptxas", "-v",
                           "-o", str(tmp_path / "decode.cubin"), str(ok.SOURCE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    found = re.findall(r"entry function '(\w+)'.*?(\d+) bytes spill stores, (\d+) bytes spill loads\s+"
                       r"ptxas info\s+: Used (\d+) registers", done.stderr, flags=re.S)
    return {name: (int(st), int(ld), int(regs)) for name, st, ld, regs in found}


def _allocated(kernels: dict[str, tuple[int, int, int]]) -> dict[str, int]:
    """The registers a thread each kernel allocates: ptxas's count (:func:`_ptxas`) rounded up to the 8 a thread
    the SM allocates in."""
    return {name: -(-regs // 8) * 8 for name, (_, _, regs) in kernels.items()}


def _registers(tmp_path, defines) -> dict[str, int]:
    """:func:`_allocated` of the build with ``defines``."""
    return _allocated(_ptxas(tmp_path, defines))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed on this machine")
def test_short_residual_prefetch_leaves_room_for_the_next_projections_block(tmp_path):
    """What oproj_short_prefetch and resid_short_prefetch are for, in registers (an SM's 65536, blocks of 256
    threads): with overlap_tuning's 16 a lane (the 1b's build) two blocks of the residual GEMV leave no room for a
    block of gate/up or of the QKV; at 8 a lane one fits beside them (o_proj before gate/up, down before the QKV),
    and a down block beside two of gate/up."""
    def fit(*kernels):
        return sum(regs * 256 for regs in kernels) <= 65536

    deep = _registers(tmp_path, _cfg_defines("optimized"))
    assert not fit(deep["gemv_residual"], deep["gemv_residual"], deep["gemv_swiglu"])
    assert not fit(deep["gemv_residual"], deep["gemv_residual"], deep["gemv_qkv"])
    oproj = _registers(tmp_path, _cfg_defines("optimized", oproj_short_prefetch="on"))
    assert fit(oproj["gemv_residual_short"], oproj["gemv_residual_short"], oproj["gemv_swiglu"])
    assert oproj["gemv_residual"] == deep["gemv_residual"]  # down keeps 16 a lane
    short = _registers(tmp_path, _cfg_defines("optimized", resid_short_prefetch="on"))
    assert fit(short["gemv_residual"], short["gemv_residual"], short["gemv_swiglu"])
    assert fit(short["gemv_residual"], short["gemv_residual"], short["gemv_qkv"])
    assert fit(short["gemv_swiglu"], short["gemv_swiglu"], short["gemv_residual"])


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed on this machine")
def test_attention_at_four_blocks_an_sm_fits_beside_three_qkv_blocks_without_spills(tmp_path):
    """The attn_four_blocks switch (bench/pdl_variants.py's row "optimized, attention 4 blocks an SM"): at
    optimized's 77 registers (80 allocated) attn_split has no room beside the 1b's three QKV blocks an SM;
    bounded to 4 blocks an SM it takes 64 with no spill, and one fits."""
    defines = _cfg_defines("optimized", attn_four_blocks="on")
    assert set(defines) == {*_cfg_defines("optimized"), "-DATT_MIN_BLOCKS=4"}
    kernels = _ptxas(tmp_path, defines)
    assert kernels["attn_split"][:2] == (0, 0)  # no spill stores or loads
    regs = _allocated(kernels)
    plain = _registers(tmp_path, _cfg_defines("optimized"))
    assert 3 * plain["gemv_qkv"] * 256 + plain["attn_split"] * 256 > 65536
    assert 3 * regs["gemv_qkv"] * 256 + regs["attn_split"] * 256 <= 65536


def _cfg_defines(name: str, **switches: str) -> tuple[str, ...]:
    """decode.cu's defines of config ``name`` with ``switches`` as the 1b builds them (resid_depth resolved on 132
    SMs)."""
    from runner import config as cfg

    return ok.resid_depth(cfg.gpu_kernel_defines(name, switches), rows=2048, sms=132)


def test_oproj_launches_the_short_kernel_only_where_the_build_sets_its_depth():
    """OwnForward's o_proj kernel: gemv_residual_short where PRE_OPROJ is among the defines, else gemv_residual
    (which resid_short_prefetch shortens for down and o_proj alike, through resid_depth)."""
    from runner import config as cfg

    short = cfg.gpu_kernel_defines("optimized", {"resid_short_prefetch": "on"})
    assert ok.resid_depth(short, rows=2048, sms=132) == ok.without(short, ok.RESID_DEEP_WHERE_ONE_WAVE)
    assert ok.oproj_kernel(short) == ok.oproj_kernel(cfg.gpu_kernel_defines("optimized")) == "gemv_residual"
    oproj = cfg.gpu_kernel_defines("optimized", {"oproj_short_prefetch": "on"})
    assert ok.define_value(oproj, "PRE_OPROJ", 0) == 8 and ok.oproj_kernel(oproj) == "gemv_residual_short"


def test_pdl_launch_structures_match_cuda_h():
    """CUlaunchAttribute is 72 bytes (id, pad to 8, a 64-byte union); CUlaunchConfig holds the stream
    at byte 32, the attribute pointer at 40 and their count at 48 (cuda.h, x86-64)."""
    import ctypes

    assert ctypes.sizeof(ok._LaunchAttribute) == 72 and ok._LaunchAttribute.value.offset == 8
    assert (ok._LaunchConfig.stream.offset, ok._LaunchConfig.attrs.offset, ok._LaunchConfig.n_attrs.offset) == \
        (32, 40, 48)
    assert ok.PROGRAMMATIC_STREAM_SERIALIZATION == 6


def test_pdl_kernel_arguments_keep_their_c_types():
    import ctypes

    class Array:  # a device array as the kernel sees it: its pointer
        class data:
            ptr = 0x7F00_0000_1000

    assert ok._c_arg(Array()).value == 0x7F00_0000_1000
    assert isinstance(ok._c_arg(np.int32(5)), ctypes.c_int32) and ok._c_arg(np.int32(5)).value == 5
    assert isinstance(ok._c_arg(np.float32(0.5)), ctypes.c_float) and ok._c_arg(np.float32(0.5)).value == 0.5
    assert isinstance(ok._c_arg(np.uint64(2**40)), ctypes.c_uint64)
    with pytest.raises(TypeError, match="sized numpy scalar"):
        ok._c_arg(5)  # a bare int has no C width: refused, never guessed


def direct_attention(q, keys, vals, n):
    s = keys[:n] @ q / np.sqrt(q.shape[0])
    p = np.exp(s - s.max())
    return (p / p.sum()) @ vals[:n]


@pytest.mark.parametrize("n", [1, 7, 255, 256, 257, 700, 2048])
def test_split_attention_matches_softmax(n):
    rng = np.random.default_rng(n)
    d, ctx = 64, 2048
    q, keys, vals = rng.standard_normal(d), rng.standard_normal((ctx, d)), rng.standard_normal((ctx, d))
    keys[n:] = 1e3  # positions past n must not leak in, whatever they hold
    np.testing.assert_allclose(ok.attention_split_reference(q, keys, vals, n), direct_attention(q, keys, vals, n),
                               rtol=1e-10, atol=1e-12)


def test_attention_groups_query_heads_only_past_one_wave():
    """32 query heads on 8 KV heads, 264 resident blocks (2 an SM of an H200): a block per head and
    split up to 512 positions (256 blocks); at 513 (9 splits, 288 blocks) two heads a block; the whole
    group of 4 once even that is past a wave; a group of 1 (no GQA) is never grouped."""
    def hpb(position, heads=32, kv=8, grid=64, slots=264):
        return ok.heads_per_block(heads, kv, position, grid, slots)

    assert [hpb(p) for p in (0, 95, 159, 511)] == [1, 1, 1, 1]
    assert hpb(512) == 2 and hpb(1023) == 2  # 16 heads' blocks x 16 splits = 256
    assert hpb(1024) == 4 and hpb(4000) == 4  # 16 x 17 = 272 > 264
    assert hpb(512, grid=8) == 1  # blocks taking turns over the splits: 32 x 8 fit
    assert hpb(4000, kv=32) == 1 and hpb(4000, heads=12, kv=4) == 1  # a group of 3 cannot be halved
    assert hpb(0, slots=1) == 4  # att_slots=1: always the whole group (scripts/gpu_kernels.py checks it)


def test_filled_split_covers_what_the_block_holds():
    """attn_fill_split: a split as long as attn_split's threads hold (256 threads, head_dim/8 lanes a
    row, 4 positions a thread): 128 at head_dim 64 (the 1b, whose 64-position splits left half the
    threads idle), 64 at 128 (the 8b, unchanged); 160 blocks at 512 positions for the 1b, one wave on
    an H200, so no grouping; the split attention is the softmax at any split length."""
    assert ok.positions_per_split(64) == ok.CHUNK == ok.positions_per_split(128, fill=True) == 64
    assert ok.positions_per_split(64, fill=True) == 128 and ok.positions_per_split(16, fill=True) == 512
    chunk = ok.positions_per_split(64, fill=True)
    assert 32 * -(-513 // chunk) == 160 and ok.heads_per_block(32, 8, 512, 64, 264, chunk) == 1
    assert ok.heads_per_block(32, 8, 512, 64, 264) == 2  # 64-position splits: 288 blocks, grouped
    # ATT_FILL=2 (attn_fill_split): 64-position splits while 32 heads' blocks fit 264, filled past that
    assert [ok.split_at(64, 32, p, 264, 2) for p in (0, 96, 511, 512, 1000)] == [64, 64, 64, 128, 128]
    assert ok.split_at(128, 32, 512, 264, 2) == 64 and ok.split_at(64, 32, 0, 1, 2) == 128  # slots=1: filled
    assert ok.split_at(64, 32, 0, 264, 1) == 128 and ok.split_at(64, 32, 4000, 264, 0) == 64
    # the 8b's head_dim 128 fills a block with 64 positions already: it keeps the measured build
    assert ok.att_fill(64, ("-DATT_FILL=2",)) == 2 and ok.att_fill(64, ("-DPDL_TRIGGER=2",)) == 0
    assert ok.att_fill(128, ("-DATT_FILL=2", "-DATT_GROUP=1")) == 0
    rng = np.random.default_rng(3)
    q, keys, vals = rng.standard_normal(64), rng.standard_normal((1024, 64)), rng.standard_normal((1024, 64))
    for n in (1, 128, 129, 513, 1024):
        np.testing.assert_allclose(ok.attention_split_reference(q, keys, vals, n, chunk=chunk),
                                   direct_attention(q, keys, vals, n), rtol=1e-10, atol=1e-12)


def test_merge_in_oproj_is_the_combine_then_oproj():
    """gemv_residual_merge's reference (every head's splits merged, rounded to fp16, then o_proj added to
    the residual) is o_proj of the attention computed directly, head by head, and the same as
    attn_combine's merge followed by gemv_residual."""
    rng = np.random.default_rng(5)
    heads, d, n, chunk = 4, 64, 150, 64
    q = rng.standard_normal((heads, d))
    keys, vals = rng.standard_normal((heads, 256, d)), rng.standard_normal((heads, 256, d))
    partials = [ok.split_partials(q[h], keys[h], vals[h], n, chunk) for h in range(heads)]
    assert all(np.isinf(m[-1]) and len(m) == 4 for m, _, _ in partials)  # the split past n exits at once
    w = (rng.standard_normal((heads * d, heads * d)) / 16).astype(np.float16)
    resid = rng.standard_normal(heads * d).astype(np.float32)
    got = ok.gemv_residual_merge_reference(w, partials, resid)
    direct = np.concatenate([direct_attention(q[h], keys[h], vals[h], n) for h in range(heads)]).astype(np.float16)
    np.testing.assert_allclose(got, ok.gemv_residual_reference(w, direct, resid), rtol=1e-2, atol=1e-2)
    combined = np.concatenate([ok.attention_split_reference(q[h], keys[h], vals[h], n, chunk)
                               for h in range(heads)]).astype(np.float16)
    np.testing.assert_array_equal(got, ok.gemv_residual_reference(w, combined, resid))


def test_fit_wave_split_is_the_shortest_that_keeps_one_wave():
    """attn_fit_wave (ATT_FILL=3, 5 positions a thread): CHUNK while a block per head and split fits the
    resident blocks; past that, the shortest split in whole rows of the block's threads (16 at head_dim
    128, 32 at 64) that fits them, at most what the threads hold; the split attention is the softmax
    at those lengths too."""
    assert ok.att_pos(ok.ATT_FIT_DEFINES) == 5 and ok.att_pos(("-DATT_FILL=2",)) == ok.ATT_POS == 4
    assert ok.att_pos(("-DATT_POS=5", "-DATT_POS=8")) == 8  # the last -D wins, as in the compiler
    # the 8b keeps its build (80 positions a block at head_dim 128), the 1b fills to 160
    assert ok.att_fill(128, ok.ATT_FIT_DEFINES) == 3 and ok.positions_per_split(64, True, 5) == 160

    def fit(head_dim, position, slots=264, heads=32):
        return ok.split_at(head_dim, heads, position, slots, 3, 5)

    assert [fit(128, p) for p in (0, 96, 511)] == [64, 64, 64]  # 32 x 8 = 256 blocks fit 264
    assert fit(128, 512) == 80 and 32 * -(-513 // 80) == 224  # 288 blocks at 64 did not
    assert fit(128, 639) == 80 and fit(128, 640) == 80 and fit(128, 4000) == 80  # at most 16 rows x 5
    assert 32 * -(-640 // 80) == 256 and 32 * -(-641 // 80) == 288  # past 640 positions: two waves again
    assert fit(64, 511) == 64 and fit(64, 512) == 96 and fit(64, 767) == 96 and fit(64, 768) == 128
    assert fit(64, 4000) == 160 and fit(64, 300, slots=1) == 160  # slots=1: past a wave at once, the longest
    # mode 2 is unchanged by the helper's new parameter
    assert [ok.split_at(64, 32, p, 264, 2) for p in (511, 512)] == [64, 128]
    rng = np.random.default_rng(4)
    q, keys, vals = rng.standard_normal(128), rng.standard_normal((1024, 128)), rng.standard_normal((1024, 128))
    for chunk, n in ((80, 513), (80, 1024), (96, 513), (160, 4)):
        np.testing.assert_allclose(ok.attention_split_reference(q, keys, vals, n, chunk=chunk),
                                   direct_attention(q, keys, vals, n), rtol=1e-10, atol=1e-12)


def test_share_kv_splits_keep_about_a_block_an_sm():
    """attn_share_kv (ATT_FILL=4, ``slots`` = the splits a KV head gets: 132 SMs / 8 KV heads = 16): the
    shortest split in whole rows of the block's threads (16 at head_dim 128, 32 at 64) that keeps to
    16 a KV head, at most what the threads hold; the partial buffers' stride is the most splits any
    context uses; every query head of a group, computed from those splits, is its softmax."""
    assert ok.att_fill(128, ok.ATT_SHARE_DEFINES) == 4 and ok.att_fill(64, ok.ATT_SHARE_DEFINES) == 4

    def share(head_dim, position, slots=16):
        return ok.split_at(head_dim, 0, position, slots, 4)

    assert [share(128, p) for p in (0, 31, 95, 511, 1023, 2047)] == [16, 16, 16, 32, 64, 64]
    assert [share(64, p) for p in (0, 95, 511, 512, 2047)] == [32, 32, 32, 64, 128]
    assert 8 * -(-512 // share(128, 511)) == 128 and 8 * -(-96 // share(128, 95)) == 48  # blocks of 8 KV heads
    assert all(-(-(p + 1) // share(128, p)) <= 16 for p in range(1024))  # one an SM to 1024 positions
    assert ok.most_splits(128, 2048, 16) == 32 and ok.most_splits(64, 2048, 16) == 16
    assert ok.most_splits(128, 4096, 16) == ok.MAX_SPLITS
    rng = np.random.default_rng(6)
    group, d = 4, 128
    q = rng.standard_normal((group, d))
    keys, vals = rng.standard_normal((1024, d)), rng.standard_normal((1024, d))
    for n in (1, 17, 96, 513, 1024):
        chunk = share(d, n - 1)
        for h in range(group):  # one block's heads: the same rows, each head's own partials
            np.testing.assert_allclose(ok.attention_split_reference(q[h], keys, vals, n, chunk=chunk),
                                       direct_attention(q[h], keys, vals, n), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["tiny", "1b", "8b"])
def test_kernel_bytes_add_up_to_the_token(name):
    """The per-kernel floors of bench/decode.py's table cover every byte the token reads, once."""
    from runner.presets import get_preset

    p = get_preset(name)
    parts = ok.kernel_bytes(p, 96)
    assert sum(parts.values()) == p.weight_bytes_per_token() + p.kv_bytes_per_token(96)
    assert parts["gemv"] == 2 * p.vocab * p.hidden and parts["attn_split"] == p.kv_bytes_per_token(96)
    by_function = ok.function_kernel_bytes(p, 96)  # the same bytes, o_proj's and down's GEMV apart
    assert sum(by_function.values()) == sum(parts.values())
    assert by_function["o_proj: gemv_residual"] == 2 * p.n_layers * p.hidden ** 2
    assert by_function["ffn: gemv_residual"] == 2 * p.n_layers * p.ffn * p.hidden
    short = ok.function_kernel_bytes(p, 96, ok.oproj_kernel((ok.OPROJ_SHORT_DEFINE,)))  # oproj_short_prefetch
    assert short["o_proj: gemv_residual_short"] == by_function["o_proj: gemv_residual"]
    assert sum(short.values()) == sum(parts.values())


def test_fused_swiglu_matches_unfused():
    rng = np.random.default_rng(0)
    wg, wu, x = rng.standard_normal((40, 16)), rng.standard_normal((40, 16)), rng.standard_normal(16)
    g = wg @ x
    np.testing.assert_allclose(ok.swiglu_reference(wg, wu, x), (g * (1 / (1 + np.exp(-g)))) * (wu @ x))


def test_argmax_reduction_picks_first_of_ties_like_numpy():
    rng = np.random.default_rng(1)
    for _ in range(20):
        x = rng.integers(0, 5, size=3000).astype(np.float16)  # many ties
        assert ok.argmax_reference(x) == int(np.argmax(x))


def test_two_stage_argmax_picks_first_of_ties_like_numpy():
    """argmax_partial over grid-strided shares, then argmax_final: the same index as numpy, ties included,
    on vocabularies smaller and larger than one pass of the grid."""
    rng = np.random.default_rng(2)
    for n in (100, 5_000, 70_000):
        for _ in range(3):
            x = rng.integers(0, 7, size=n).astype(np.float16)
            assert ok.argmax_two_stage_reference(x, blocks=33, threads=64) == int(np.argmax(x))
    x = rng.standard_normal(128_256).astype(np.float16)
    assert ok.argmax_two_stage_reference(x) == int(np.argmax(x))


@pytest.mark.parametrize("d", [16, 64, 128])
def test_rope_by_chunks_is_rotate_half(d):
    """rope_chunk pairs chunk c with c ^ (d/16): the same rotation as rotate-half RoPE (the model's)."""
    rng = np.random.default_rng(d)
    v = rng.standard_normal(d)
    inv_freq = 1.0 / 500000.0 ** (np.arange(0, d, 2) / d)
    pos = 301
    cos, sin = np.cos(pos * inv_freq), np.sin(pos * inv_freq)
    a, b = v[: d // 2], v[d // 2:]
    np.testing.assert_allclose(ok.rope_chunks_reference(v, pos, inv_freq),
                               np.concatenate([a * cos - b * sin, a * sin + b * cos]), rtol=1e-12, atol=1e-12)


def test_attention_with_rope_and_cache_write_matches_separate_steps():
    """attn_split with RoPE and the cache write folded in: the same output as rotating q and k, writing
    the cache row, then attending; and the cache row written as the separate steps wrote it."""
    rng = np.random.default_rng(5)
    heads, kv, d, ctx, pos = 8, 2, 64, 300, 137
    q, k, v = rng.standard_normal((heads, d)), rng.standard_normal((kv, d)), rng.standard_normal((kv, d))
    ck, cv = rng.standard_normal((kv, ctx, d)), rng.standard_normal((kv, ctx, d))
    ck2, cv2 = ck.copy(), cv.copy()
    inv_freq = 1.0 / 10000.0 ** (np.arange(0, d, 2) / d)
    out = ok.attention_rope_reference(q, k, v, ck, cv, pos, pos, inv_freq)
    cos, sin = np.cos(pos * inv_freq), np.sin(pos * inv_freq)

    def rot(z):
        a, b = z[..., : d // 2], z[..., d // 2:]
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)

    ck2[:, pos], cv2[:, pos] = rot(k), v
    np.testing.assert_allclose(ck, ck2, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(cv, cv2)
    want = np.stack([direct_attention(rot(q[h]), ck2[h // (heads // kv)], cv2[h // (heads // kv)], pos + 1)
                     for h in range(heads)])
    np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("norm_in_resid,norm_in_dot,norm_as_scale",
                         [(False, False, False), (True, False, False), (False, True, False), (False, False, True)])
def test_fused_kernel_math_matches_the_model(norm_in_resid, norm_in_dot, norm_as_scale):
    """The kernels' per-step math as our forward runs it (rmsnorm, then the projections; RoPE and the
    cache write folded into attention; with norm_in_resid the norms after o_proj and down written by
    them; with norm_in_dot the QKV and gate/up products scaled by the norm's inv at the end; with norm_as_scale
    those products of x * gain in fp16, scaled by the inv of the partial sums of squares), fed the
    pipeline's shapes, equals the float64 reference model on the same tiny model (one layer, one position)."""
    from runner.model import init_weights, reference_logits, rope_inv_freq
    from runner.presets import get_preset

    p = get_preset("tiny")
    w = init_weights(p, seed=3)
    layer = {k: v.astype(np.float64) for k, v in w["layers"][0].items()}
    tok, pos = 7, 0
    x = w["embed"][tok].astype(np.float64)  # embed: the residual

    def norm(x, gain):
        return ok.rmsnorm_reference(x, gain, p.norm_eps).astype(np.float64)

    hn = norm(x, layer["attn_norm"])
    folded = ok.norm_in_dot_reference if norm_in_dot else ok.norm_as_scale_reference if norm_as_scale else None
    q, k, v = (folded(w["layers"][0][m], x, w["layers"][0]["attn_norm"], p.norm_eps).astype(
        np.float16).astype(np.float64) if folded else layer[m] @ hn for m in ("wq", "wk", "wv"))
    ck = np.zeros((p.n_kv_heads, p.max_ctx, p.head_dim))
    cv = np.zeros_like(ck)
    attn = ok.attention_rope_reference(q.reshape(p.n_heads, -1), k.reshape(p.n_kv_heads, -1),
                                       v.reshape(p.n_kv_heads, -1), ck, cv, pos, pos, rope_inv_freq(p)).ravel()
    final = w["final_norm"].astype(np.float64)
    if norm_in_resid:  # o_proj and down leave the next norm's output beside the residual
        x, hn = ok.residual_norm_reference(layer["wo"], attn, x, layer["ffn_norm"], p.norm_eps)
        x, hn = ok.residual_norm_reference(layer["w_down"], ok.swiglu_reference(layer["w_gate"], layer["w_up"], hn),
                                           x, final, p.norm_eps)
    elif folded:  # gate and up of the residual, each scaled at the end and rounded to fp16 before SwiGLU
        x = x + layer["wo"] @ attn
        g, u = (folded(w["layers"][0][m], x, w["layers"][0]["ffn_norm"], p.norm_eps).astype(
            np.float16).astype(np.float64) for m in ("w_gate", "w_up"))
        x = x + layer["w_down"] @ (g / (1 + np.exp(-g)) * u)
        hn = norm(x, final)  # the final norm stays a launch
    else:
        x = x + layer["wo"] @ attn  # gemv_residual
        x = x + layer["w_down"] @ ok.swiglu_reference(layer["w_gate"], layer["w_up"], norm(x, layer["ffn_norm"]))
        hn = norm(x, final)
    one = dict(w, layers=[w["layers"][0]])
    ref = reference_logits(p.__class__(**{**p.__dict__, "n_layers": 1}), one, np.array([tok]))[0]
    ours = w["lm_head"].astype(np.float64) @ hn.astype(np.float64)
    assert np.abs(ours - ref).max() / ref.std() < 2e-2  # the fp16 rounding of the normalised vector
    assert int(ours.argmax()) == int(ref.argmax())


def test_gemv_residual_rounds_the_product_like_the_eager_path():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((8, 16)).astype(np.float16)
    x = rng.standard_normal(16).astype(np.float16)
    resid = rng.standard_normal(8).astype(np.float32)
    eager = resid + (x @ w.T).astype(np.float16).astype(np.float32)  # what pipeline.py computes
    np.testing.assert_allclose(ok.gemv_residual_reference(w, x, resid), eager, rtol=1e-3, atol=1e-3)


class _Weight:  # what ahead_plan reads of a device array: its pointer, size and rows
    def __init__(self, ptr: int, rows: int, cols: int) -> None:
        self.data = type("Data", (), {"ptr": ptr})()
        self.shape, self.nbytes = (rows, cols), rows * cols * 2


def _layers(n: int, h: int = 64, kv: int = 16, f: int = 256) -> list[dict]:
    shapes = {"wq": (h, h), "wk": (kv, h), "wv": (kv, h), "wo": (h, h), "w_gate": (f, h), "w_up": (f, h),
              "w_down": (h, f)}
    return [{k: _Weight(1 << 20 * (li + 1) | i << 16, *rc) for i, (k, rc) in enumerate(shapes.items())}
            for li in range(n)]


def test_l2_ahead_plan_takes_whole_rows_of_the_next_kernels_weights():
    layers, lm = _layers(2), _Weight(0x7000_0000, 1000, 64)
    row = 64 * 2  # bytes a row at hidden 64
    plan = ok.ahead_plan(layers, lm, budget=40 * row + 50)  # 40 rows and a part of one: whole rows only
    first, last = plan
    assert first["qkv"] == [(layers[0]["wo"].data.ptr, 40 * row)]  # o_proj's first 40 of 64 rows
    # gate and up in step: 20 rows of each, read together by the SwiGLU
    assert first["o_proj"] == [(layers[0]["w_gate"].data.ptr, 20 * row), (layers[0]["w_up"].data.ptr, 20 * row)]
    assert first["down"] == [(layers[1]["wq"].data.ptr, 40 * row)]  # the next layer's QKV, in its order
    assert last["down"] == [(lm.data.ptr, 40 * row)]  # after the last layer: the LM head's first rows
    # a budget past Q spills into K and V, in the order the QKV GEMV reads them; whole matrices at most
    big = ok.ahead_plan(layers, lm, budget=10 * 2 ** 20)[0]
    assert big["down"] == [(layers[1][k].data.ptr, layers[1][k].nbytes) for k in ("wq", "wk", "wv")]
    assert big["qkv"] == [(layers[0]["wo"].data.ptr, layers[0]["wo"].nbytes)]


def test_l2_ahead_arguments_pad_to_the_kernels_ranges():
    plan = ok.ahead_plan(_layers(1), _Weight(0x7000_0000, 1000, 64), budget=4096)
    args = ok.ahead_args(plan)[0]
    assert set(args) == set(ok.AHEAD_SITES)
    assert all(len(v) == 2 * ok.AHEAD_RANGES and all(isinstance(x, np.uint64) for x in v) for v in args.values())
    assert args["qkv"][2:] == (0, 0, 0, 0)  # one range; the rest 0 bytes (unused)
    with pytest.raises(ValueError, match="ranges ahead"):
        ok.ahead_args([{"qkv": [(1, 16)] * 4, "o_proj": [], "down": []}])


@pytest.mark.parametrize("warps", [1, 7, 3072])
def test_l2_ahead_slices_cover_the_ranges_once_in_aligned_lines(warps):
    ranges = [(0x1000_0000, 2048 * 4096), (0x2000_0000, 512 * 4096), (0x3000_0000, 48)]
    slices = ok.ahead_slices(ranges, warps)
    covered = sorted((a, a + n) for _, a, n in slices)
    expected = [(p, p + n) for p, n in ranges]
    merged = []  # the slices, joined where one ends as the next begins
    for a, b in covered:
        if merged and merged[-1][1] == a:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    assert merged == expected  # every byte once, nothing outside the ranges
    assert all(a % 16 == 0 and n % 16 == 0 and n < 2 ** 32 for _, a, n in slices)  # bulk prefetch's rules
    assert {w for w, _, _ in slices} <= set(range(warps))


GEMVS = ("gemv", "gemv_qkv", "gemv_residual", "gemv_swiglu")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed on this machine")
@pytest.mark.parametrize("stage", [0, 1])
def test_gemvs_stage_x_in_shared_memory_once_the_wait_returns(tmp_path, stage):
    """X_STAGE=1 (the default, what OwnForward's launches size shared memory for): every GEMV copies x
    into shared memory with cp.async after griddepcontrol.wait, then a block barrier; X_STAGE=0 reads x
    from global memory and has neither. Both keep the wait before any read of x."""
    bodies = _ptx_bodies(tmp_path, () if stage else ("-DX_STAGE=0",))
    for name in GEMVS:
        body = bodies[name]
        copies = body.find("cp.async.cg.shared.global")
        if stage:
            assert 0 <= body.index("griddepcontrol.wait") < copies < body.index("cp.async.wait_all") \
                < body.index("bar.sync"), name
        else:
            assert copies < 0 and "bar.sync" not in body, name


def test_x_stage_bytes_follow_the_build():
    """The launch gives a staging GEMV all of x (2 bytes a half) and a reading one nothing; the mirror of
    decode.cu's default is the source's."""
    assert ok.X_STAGE == _source_define("X_STAGE") == 1
    assert ok.x_stage_bytes((), 14336) == 28672
    assert ok.x_stage_bytes(("-DX_STAGE=0",), 14336) == 0
    assert ok.x_stage_bytes(("-DATT_FILL=2", "-DX_STAGE=1"), 2048) == 4096


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed on this machine")
def test_norm_in_proj_copies_the_gain_before_the_wait_and_the_residual_after(tmp_path):
    """NORM_IN_PROJ=1: gemv_qkv and gemv_swiglu issue the gain's cp.async (a weight) before
    griddepcontrol.wait and the residual's after it, wait for both, and reduce (bar.sync) before the
    products; the other GEMVs stage x as before. Without X_STAGE the build refuses to compile."""
    bodies = _ptx_bodies(tmp_path, (ok.NORM_DEFINE,))
    for name in ("gemv_qkv", "gemv_swiglu"):
        body = bodies[name]
        wait = body.index("griddepcontrol.wait")
        first, last = body.find("cp.async.cg.shared.global"), body.rfind("cp.async.cg.shared.global")
        assert 0 <= first < wait < last < body.index("cp.async.wait_all") < body.index("bar.sync"), name
        assert "rsqrt" in body, name
    for name in ("gemv", "gemv_residual"):
        assert "rsqrt" not in bodies[name] and bodies[name].index("griddepcontrol.wait") < bodies[name].find(
            "cp.async.cg.shared.global"), name
    refused = subprocess.run(["nvcc", "--ptx", "-arch=sm_90", ok.NORM_DEFINE, "-DX_STAGE=0", "-o",
                              str(tmp_path / "refused.ptx"), str(ok.SOURCE)], capture_output=True, text=True)
    assert refused.returncode != 0 and "needs X_STAGE" in refused.stderr


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed on this machine")
def test_norm_in_residual_takes_a_ticket_after_its_rows_and_reads_the_residual_past_l1(tmp_path):
    """NORM_IN_RESID=1: gemv_residual fences its rows, takes a ticket (one atomic add) and only then, in the
    block with the last ticket, copies the gain where x was staged, loads the residual past L1
    (ld.global.cg), reduces (rsqrt) and resets the ticket; without the define it takes no ticket. Without
    X_STAGE the build refuses to compile (the gain goes where x was staged)."""
    body = _ptx_bodies(tmp_path, (ok.NORM_RESID_DEFINE,))["gemv_residual"]
    fence, atom = body.index("membar.gl"), body.index("atom.global.add.u32")
    assert body.index("griddepcontrol.wait") < fence < atom < body.rindex("cp.async.cg.shared.global")
    assert atom < body.index("ld.global.cg.f32") < body.index("rsqrt") < body.rindex("st.global.u32")
    plain = _ptx_bodies(tmp_path, ())
    assert "atom." not in plain["gemv_residual"] and "rsqrt" not in plain["gemv_residual"]
    refused = subprocess.run(["nvcc", "--ptx", "-arch=sm_90", ok.NORM_RESID_DEFINE, "-DX_STAGE=0", "-o",
                              str(tmp_path / "refused.ptx"), str(ok.SOURCE)], capture_output=True, text=True)
    assert refused.returncode != 0 and "needs X_STAGE" in refused.stderr


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed on this machine")
@pytest.mark.parametrize("hoisted", [False, True])
def test_merge_last_takes_a_ticket_after_the_partials_and_merges_past_l1(tmp_path, hoisted):
    """MERGE_LAST=1 (attn_merge_last): attn_split fences its partials, takes a ticket a head (one atomic
    add), and only the block with the last ticket reads the partials, past L1 (ld.global.cg: other blocks
    of the same launch wrote them), stores the head's fp16 output and resets the ticket; attn_combine is
    still built (the other configs launch it) and is the same code as without the define."""
    extra = (ok.EARLY_DEFINE, ok.HOIST_DEFINE) if hoisted else ()
    merged, plain = _ptx_bodies(tmp_path, (ok.MERGE_LAST_DEFINE, *extra)), _ptx_bodies(tmp_path, extra)
    body = merged["attn_split"]
    fence, atom = body.index("membar.gl"), body.index("atom.global.add.u32")
    assert body.index("griddepcontrol.wait") < fence < atom < body.index("ld.global.cg.f32")
    assert atom < body.rindex("st.global.u16") and atom < body.rindex("st.global.u32")
    assert "atom." not in plain["attn_split"] and "ld.global.cg" not in plain["attn_split"]
    assert merged["attn_combine"] == plain["attn_combine"]
    assert {k: v for k, v in merged.items() if k != "attn_split"} == {k: v for k, v in plain.items()
                                                                       if k != "attn_split"}


def test_norm_in_proj_sizes_the_normed_gemvs_for_x_gain_and_residual():
    """2 + 2 + 4 bytes a column for the GEMVs that read the norm's output in the NORM_IN_PROJ build, x
    alone for the others and in the other builds; the build is off unless asked for."""
    assert ok.x_stage_bytes((ok.NORM_DEFINE,), 2048, normed=True) == 16384
    assert ok.x_stage_bytes((ok.NORM_DEFINE,), 8192) == 16384
    assert ok.x_stage_bytes((), 2048, normed=True) == 4096
    assert ok.x_stage_bytes((ok.NORM_DEFINE, "-DX_STAGE=0"), 2048, normed=True) == 0
    assert "#define NORM_IN_PROJ 0" in ok.SOURCE.read_text()


@pytest.mark.parametrize("fold,bound", [("norm_in_dot", 1e-5), ("norm_as_scale", 2e-3)])
def test_norm_folds_scale_the_product_as_the_norm_before_it_would(fold, bound):
    """A fold's arithmetic equals W RMSNorm(x) * gain in float64: norm_in_dot's (each lane's chunks of x * gain
    and x * x, the product scaled at the end) within fp32 rounding, closer than the launched norm's path
    (rmsnorm's fp16 output, then the GEMV); norm_as_scale's (x * gain rounded to fp16 by the residual's writer,
    the product scaled by the inv of the blocks' partial sums of squares) as closely as that path (one fp16
    rounding of the vector each). The fold moves the norm, not the math, and neither is rmsnorm's bits (the
    checks on the GPU use float64)."""
    rng = np.random.default_rng(11)
    cols, rows, eps = 2048, 64, 1e-5
    w = (rng.standard_normal((rows, cols)) * cols ** -0.5).astype(np.float16)
    x = (rng.standard_normal(cols) * 3).astype(np.float32)
    gain = (1 + 0.1 * rng.standard_normal(cols)).astype(np.float16)
    exact = w.astype(np.float64) @ (x / np.sqrt((x.astype(np.float64) ** 2).mean() + eps) * gain)
    folded = getattr(ok, f"{fold}_reference")(w, x, gain, eps)
    launched = w.astype(np.float32) @ ok.rmsnorm_reference(x, gain, eps).astype(np.float32)
    err = lambda a: np.abs(a - exact).max() / np.abs(exact).max()  # noqa: E731
    assert err(folded) < bound and err(launched) < 2e-3
    if fold == "norm_in_dot":
        assert err(folded) < err(launched)
    with pytest.raises(AssertionError):
        np.testing.assert_array_equal(folded.astype(np.float16), launched.astype(np.float16))


def test_norm_as_scale_partials_add_to_the_squares_in_every_order_the_kernels_use():
    """gemv_residual's partials (a block of 8 rows, in row order) and the GEMVs' lane-wise sum of them give the
    residual's mean square to fp32 rounding; rmsnorm's first-norm form (the whole sum in partial 0, zeros after)
    gives the same inv; the partials of a width not a multiple of 8 cover every row once."""
    rng = np.random.default_rng(13)
    x = (rng.standard_normal(2048) * 3).astype(np.float32)
    parts = ok.scale_parts_reference(x)
    assert parts.shape == (256,) and parts.dtype == np.float32
    exact = 1 / np.sqrt((x.astype(np.float64) ** 2).mean() + 1e-5)
    assert abs(ok.parts_inv_reference(parts, x.size, 1e-5) / exact - 1) < 1e-6
    first = np.zeros_like(parts)
    first[0] = np.float32((x.astype(np.float64) ** 2).sum())
    assert abs(ok.parts_inv_reference(first, x.size, 1e-5) / exact - 1) < 1e-6
    odd = ok.scale_parts_reference(x[:20])
    assert odd.shape == (3,) and np.isclose(odd.sum(), (x[:20].astype(np.float64) ** 2).sum(), rtol=1e-6)


def test_norm_as_scale_stages_x_and_the_partials_and_refuses_what_it_cannot_feed():
    """2 bytes a column of x plus a float a block of 8 rows for QKV and gate/up in the norm_as_scale build; the
    switch sets mode 3 of NORM_IN_PROJ and is in optimized, where another placement of the norm asked for on top
    (norm_in_proj, norm_in_dot, norm_in_residual) or the merge in o_proj (no sums of squares) replaces it."""
    from runner import config as cfg

    assert ok.x_stage_bytes((ok.NORM_SCALE_DEFINE,), 2048, normed=True) == 4096 + 1024
    assert ok.x_stage_bytes((ok.NORM_SCALE_DEFINE,), 8192) == 16384
    assert ok.define_value((ok.NORM_SCALE_DEFINE,), "NORM_IN_PROJ", 0) == 3
    def defines(side: str) -> tuple[str, ...]:
        return cfg.kernel_defines(cfg.effective(cfg.parse_side(side), gpu=True))

    assert ok.NORM_SCALE_DEFINE in defines("optimized") and ok.NORM_SCALE_DEFINE in cfg.gpu_kernel_defines("optimized")
    all_three = defines("optimized,norm_in_proj=on,norm_in_dot=on,norm_as_scale=on")
    assert ok.NORM_DOT_DEFINE in all_three and ok.NORM_SCALE_DEFINE not in all_three and ok.NORM_DEFINE not in all_three
    for other, define in (("norm_in_proj", ok.NORM_DEFINE), ("norm_in_residual", ok.NORM_RESID_DEFINE),
                          ("attn_merge_in_oproj", ok.MERGE_DEFINE)):
        built = defines(f"optimized,{other}=on")
        assert define in built and ok.NORM_SCALE_DEFINE not in built, other
    assert ok.NORM_SCALE_DEFINE not in defines("optimized,norm_as_scale=off")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed on this machine")
def test_norm_as_scale_adds_nothing_before_the_products_but_the_partials(tmp_path):
    """NORM_IN_PROJ=3 (norm_as_scale): gemv_qkv and gemv_swiglu copy x and the partials after griddepcontrol.wait
    (cp.async, one barrier, no gain copy before the wait), add the partials by a butterfly and take rsqrt; no
    block reduction. gemv_residual loads its row's gain before the wait and writes the partial of its block
    after one barrier; rmsnorm takes the partials' pointer. The plain build's gemv_residual has no barrier."""
    scaled, plain = _ptx_bodies(tmp_path, (ok.NORM_SCALE_DEFINE,)), _ptx_bodies(tmp_path, ())
    for name in ("gemv_qkv", "gemv_swiglu"):
        body = scaled[name]
        wait = body.index("griddepcontrol.wait")
        assert wait < body.find("cp.async.cg.shared.global") < body.index("cp.async.wait_all"), name
        assert body.count("bar.sync") == 1 == plain[name].count("bar.sync"), name
        assert body.index("bar.sync") < body.index("shfl.sync.bfly") < body.index("rsqrt"), name
    resid = scaled["gemv_residual"]
    assert resid.index("ld.global.nc.b16") < resid.index("griddepcontrol.wait")  # the gain: a weight
    assert "ld.global.nc.b16" not in plain["gemv_residual"]
    assert resid.count("bar.sync") == plain["gemv_residual"].count("bar.sync") + 1
    assert "rsqrt" not in resid


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed on this machine")
def test_norm_in_dot_reduces_in_the_warp_not_the_block(tmp_path):
    """NORM_IN_PROJ=2 (norm_in_dot): gemv_qkv and gemv_swiglu copy the gain before griddepcontrol.wait and
    the residual after it, then one barrier (the copy's) and no other before the products: the sums of
    squares go through warp shuffles to rsqrt; mode 1 has the block reduction's barriers. The other GEMVs
    stage x as before."""
    dot, block = _ptx_bodies(tmp_path, (ok.NORM_DOT_DEFINE,)), _ptx_bodies(tmp_path, (ok.NORM_DEFINE,))
    for name in ("gemv_qkv", "gemv_swiglu"):
        body = dot[name]
        wait = body.index("griddepcontrol.wait")
        first, last = body.find("cp.async.cg.shared.global"), body.rfind("cp.async.cg.shared.global")
        assert 0 <= first < wait < last < body.index("cp.async.wait_all") < body.index("bar.sync"), name
        assert body.count("bar.sync") == 1 < block[name].count("bar.sync"), name
        assert body.index("bar.sync") < body.index("shfl.sync.bfly") < body.index("rsqrt"), name
    for name in ("gemv", "gemv_residual"):
        assert "rsqrt" not in dot[name], name


def test_norm_in_dot_stages_the_residual_and_the_gain():
    """4 + 2 bytes a column for QKV and gate/up in the norm_in_dot build (no fp16 x), x alone elsewhere; the
    switch sets mode 2 of the define norm_in_proj sets to 1, and supersedes it when both are on."""
    from runner import config as cfg

    assert ok.x_stage_bytes((ok.NORM_DOT_DEFINE,), 2048, normed=True) == 12288
    assert ok.x_stage_bytes((ok.NORM_DOT_DEFINE,), 8192) == 16384
    assert ok.define_value((ok.NORM_DOT_DEFINE,), "NORM_IN_PROJ", 0) == 2
    both = cfg.parse_side("optimized,norm_in_proj=on,norm_in_dot=on")
    defines = cfg.kernel_defines(cfg.effective(both, gpu=True))
    assert ok.NORM_DOT_DEFINE in defines and ok.NORM_DEFINE not in defines


def _cuobjdump() -> str | None:
    """cuobjdump from PATH or from the nvidia-cuda-cuobjdump wheel (the dev extra, with nvidia-cuda-nvdisasm)."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    try:
        import nvidia
    except ImportError:
        return None
    paths = [p for base in getattr(nvidia, "__path__", []) for p in sorted(Path(base).glob("cu*/bin/cuobjdump"))]
    return str(paths[0]) if paths else None


def _sass(tmp_path, *defines: str) -> dict[str, list[str]]:
    """Each kernel's SASS instructions in order, as ptxas for sm_90 schedules them (what the GPU runs)."""
    cubin = tmp_path / "decode.cubin"
    done = subprocess.run(["nvcc", "-cubin", "-arch=sm_90", "--std=c++17", *defines, "-o", str(cubin),
                           str(ok.SOURCE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    tool = _cuobjdump()  # it runs nvdisasm, which the nvidia-cuda-nvdisasm wheel puts beside it
    env = {**os.environ, "PATH": f"{Path(tool).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    text = subprocess.run([tool, "-sass", str(cubin)], capture_output=True, text=True, check=True, env=env).stdout
    kernels: dict[str, list[str]] = {}
    for name, body in re.findall(r"Function : (\w+)(.*?)(?=Function : |\Z)", text, flags=re.S):
        kernels[name] = re.findall(r"/\*[0-9a-f]{4}\*/\s+(.*?)\s*;", body)
    return kernels


def _is(ins: str, opcode: str) -> bool:
    """``ins`` is an ``opcode`` instruction (any modifiers, any predicate): LDG is not LDGSTS."""
    words = ins.split()
    return (words[1] if words[0].startswith("@") else words[0]).split(".")[0] == opcode


def _first(code: list[str], text: str, after: int = -1) -> int:
    """Where the first instruction past ``after`` that contains ``text`` is."""
    return next(i for i, ins in enumerate(code) if i > after and text in ins)


def _before_wait(code: list[str], opcode: str) -> int:
    """How many ``opcode`` instructions come before the kernel's griddepcontrol.wait (SASS ACQBULK)."""
    return sum(_is(ins, opcode) for ins in code[:_first(code, "ACQBULK")])


SASS = pytest.mark.skipif(shutil.which("nvcc") is None or _cuobjdump() is None,
                          reason="nvcc or cuobjdump not installed on this machine")


@SASS
def test_early_loads_keep_the_row_heads_before_the_wait(tmp_path):
    """EARLY_LOADS=1 (optimized's build): ptxas keeps every GEMV's row head (PRE_* 16-byte loads a lane,
    both rows of gate/up), rmsnorm's gain and, with HOIST_LOADS, attn_combine's pos before
    griddepcontrol.wait, so they overlap the kernel before. Non-coherent loads (__ldg) it moves after the
    wait; the cache rows of attn_split, coherent loads, stay before it in every build."""
    pre = _source_define("PRE")
    expected = {"gemv_qkv": _source_define("PRE_QKV"), "gemv_swiglu": 2 * _source_define("PRE_SWIGLU"),
                "gemv_residual": pre, "gemv": pre, "rmsnorm": _source_define("NORM_PER_THREAD")}
    early = _sass(tmp_path, ok.ATT_FILL_DEFINE, ok.EARLY_DEFINE, ok.HOIST_DEFINE)
    assert {k: _before_wait(early[k], "LDG") for k in expected} == expected
    assert _before_wait(early["attn_combine"], "LDG") == 1
    assert _before_wait(_sass(tmp_path, ok.ATT_FILL_DEFINE)["attn_split"], "LDG") >= 2 * ok.ATT_POS


@SASS
def test_short_oproj_loads_its_whole_row_before_the_wait_and_down_keeps_16(tmp_path):
    """oproj_short_prefetch in optimized's 1b build (resid_depth: 16 a lane): ptxas keeps gemv_residual_short's
    8 row-head loads a lane (a 2048-wide row whole) and its row's gain (norm_as_scale) before griddepcontrol.wait,
    and down's gemv_residual its 16 and the gain; the fewer registers cost o_proj none of its early loads."""
    code = _sass(tmp_path, *_cfg_defines("optimized", oproj_short_prefetch="on"))
    assert _before_wait(code["gemv_residual_short"], "LDG") == 8 + 1
    assert _before_wait(code["gemv_residual"], "LDG") == 16 + 1


@SASS
def test_hoisted_loads_leave_one_trip_after_the_wait(tmp_path):
    """HOIST_LOADS=1: gemv_residual's load of resid[row] is issued before the row's products, not
    between its warp_sum and the store; attn_split makes its RoPE table (the inv_freq loads and the
    table's shared stores) before the wait and after it copies this token's k, v and q with cp.async, no
    load of its own before the scores; attn_combine issues its first COMBINE_AHEAD split outputs
    with the (m, l) loads, before its barrier."""
    code = _sass(tmp_path, ok.ATT_FILL_DEFINE, ok.EARLY_DEFINE, ok.HOIST_DEFINE)
    resid = code["gemv_residual"]
    reduce = _first(resid, "SHFL.BFLY")  # the warp_sum (then its divergent copy)
    store = _first(resid, "STG", after=reduce)
    assert not any(_is(ins, "LDG") for ins in resid[reduce:store])
    assert _before_wait(code["attn_split"], "STS") >= 1
    split = code["attn_split"]
    after = split[_first(split, "ACQBULK"):_first(split, "SHFL.BFLY")]
    assert not any(_is(ins, "LDG") for ins in after) and any(_is(ins, "LDGSTS") for ins in after)
    assert _combine_loads_before_barrier(code) >= _source_define("COMBINE_AHEAD") + 2


def _combine_loads_before_barrier(code: dict[str, list[str]]) -> int:
    """attn_combine's global loads between its PDL wait and its barrier: the (m, l) and the outputs it loads ahead."""
    combine = code["attn_combine"]
    return sum(_is(ins, "LDG") for ins in combine[_first(combine, "ACQBULK"):_first(combine, "BAR.SYNC")])


@SASS
def test_the_merge_ahead_build_loads_16_split_outputs_before_its_barrier(tmp_path):
    """attn_merge_ahead (COMBINE_AHEAD 16): attn_combine issues 16 split outputs with the (m, l) loads,
    before its barrier, where optimized's build issues 8: from 512 positions (9 splits of 64) on, no second
    trip after the wait until 1024."""
    (tmp_path / "o").mkdir(), (tmp_path / "m").mkdir()
    base = _combine_loads_before_barrier(_sass(tmp_path / "o", *_cfg_defines("optimized")))
    more = _combine_loads_before_barrier(_sass(tmp_path / "m", *_cfg_defines("optimized", attn_merge_ahead="on")))
    assert base >= _source_define("COMBINE_AHEAD") + 2
    assert more >= 16 + 2 and more - base == 16 - _source_define("COMBINE_AHEAD")


def test_optimized_builds_with_the_early_and_hoisted_loads():
    """EARLY_LOADS and HOIST_LOADS are decode.cu's options, off in the source (the own_kernels, cuda_graph
    and graph_pdl steps keep the build they were measured with); the early_loads switch sets both and
    optimized turns it on (measured faster on the H100), with the optimized build's defines."""
    from runner import config as cfg

    assert cfg.KERNEL_DEFINES["early_loads"] == (ok.EARLY_DEFINE, ok.HOIST_DEFINE)
    optimized = cfg.resolve("optimized")
    assert optimized.switches.get("early_loads") and not cfg.resolve("baseline").switches.get("early_loads")
    assert {ok.EARLY_DEFINE, ok.HOIST_DEFINE} <= set(cfg.kernel_defines(optimized.switches))
    assert _source_define("EARLY_LOADS") == 0 and _source_define("HOIST_LOADS") == 0
    assert (ok.EARLY_DEFINE, ok.HOIST_DEFINE) == ("-DEARLY_LOADS=1", "-DHOIST_LOADS=1")


def test_optimized_tunes_prefetch_and_triggers_for_early_weights_and_deepens_the_residual_gemv_within_one_wave():
    """overlap_tuning (in optimized) sets the deeper QKV and gate/up prefetch and the norm and merge
    triggering at start, decode.cu's options that the source keeps off; its residual-GEMV depth is OwnForward's
    rule: 16 a lane where the rows' blocks fit one wave at 2 an SM (the 1b's 2048 rows on 132 SMs), the
    source's 8 where they do not (the 8b's 4096), and nothing where the switch is off."""
    from runner import config as cfg

    optimized = cfg.gpu_kernel_defines("optimized")
    assert cfg.KERNEL_DEFINES["overlap_tuning"] == (*ok.OVERLAP_DEFINES, ok.RESID_DEEP_WHERE_ONE_WAVE)
    assert set(cfg.KERNEL_DEFINES["overlap_tuning"]) <= set(optimized)
    assert not cfg.gpu_kernel_defines("baseline", {"cuda_graph": "on", "pdl": "on"})
    for name in ("PRE_QKV", "PRE_SWIGLU", "NORM_TRIGGER_START", "COMBINE_TRIGGER_START"):
        assert ok.define_value(ok.OVERLAP_DEFINES, name, -1) != _source_define(name)
    assert "#define PRE_RESID PRE\n" in ok.SOURCE.read_text() and _source_define("PRE") == 8
    one_wave = ok.resid_depth(optimized, rows=2048, sms=132)
    assert ok.RESID_DEEP_WHERE_ONE_WAVE not in one_wave and ok.define_value(one_wave, "PRE_RESID", 8) == 16
    two_waves = ok.resid_depth(optimized, rows=4096, sms=132)
    assert two_waves == tuple(x for x in optimized if x != ok.RESID_DEEP_WHERE_ONE_WAVE)
    assert ok.define_value(two_waves, "PRE_RESID", 8) == 8
    assert ok.resid_depth(("-DATT_FILL=2",), rows=2048, sms=132) == ("-DATT_FILL=2",)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed on this machine")
def test_overlap_build_triggers_early_only_where_no_kernel_writes_before_its_wait(tmp_path):
    """overlap_tuning lets the next projection launch at the start of RMSNorm and of the merge, so up to three
    kernels run at once: each must read only weights before its griddepcontrol.wait and write nothing there
    (a store before the wait could land while the kernel before it still reads that buffer). In optimized's
    PTX (the 1b's residual depth) no kernel stores to global memory before its wait, and rmsnorm and
    attn_combine trigger before it."""
    from runner import config as cfg

    defines = ok.resid_depth(cfg.gpu_kernel_defines("optimized"), 2048, 132)
    bodies = _ptx_bodies(tmp_path, defines)
    for name, body in bodies.items():
        before = body[:body.index("griddepcontrol.wait")]
        assert not re.search(r"\b(st|red|atom)\.global", before), name
    for name in ("rmsnorm", "attn_combine"):
        body = bodies[name]
        assert body.index("griddepcontrol.launch_dependents") < body.index("griddepcontrol.wait"), name


def test_smem_carveout_is_in_optimized_and_sets_one_share_for_every_kernel():
    """The smem_carveout switch (in optimized) asks OwnForward for 75% of L1 as shared memory in every kernel;
    without it the driver chooses (-1)."""
    from runner import config as cfg

    assert ok.SMEM_CARVEOUT_DEFINE in cfg.gpu_kernel_defines("optimized")
    off = cfg.gpu_kernel_defines("optimized", {"smem_carveout": "off"})
    assert ok.SMEM_CARVEOUT_DEFINE not in off
    assert ok.define_value((ok.SMEM_CARVEOUT_DEFINE,), "SMEM_CARVEOUT", -1) == 75
    assert ok.define_value((), "SMEM_CARVEOUT", -1) == -1


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed on this machine")
def test_smem_carveout_changes_no_code(tmp_path):
    """The switch is a launch attribute, not a change of decode.cu: every kernel's PTX is the same with its define."""
    assert _ptx_bodies(tmp_path, (ok.SMEM_CARVEOUT_DEFINE,)) == _ptx_bodies(tmp_path, ())
