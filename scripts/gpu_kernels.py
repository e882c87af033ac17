"""GPU task for our own kernels (issue 3), in one device call:

1. every kernel against a float64 NumPy reference on fresh random inputs (outputs poisoned with
   NaN first, so an unwritten element fails), relative error printed;
   each check runs twice: plain launches, and through cuLaunchKernelEx with programmatic dependent
   launch (the ``pdl`` switch);
2. GEMV bandwidth on the 1b and 8b shapes against a device copy measured in the same run
   (weights rotated over > 200 MB so L2 does not serve them).

Exits non-zero if a check fails. Writes gpu_kernels.json/.md under --out; prints the tables last.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perfreview.report import render  # noqa: E402
from runner import config as cfg  # noqa: E402
from runner import own_kernels as ok_  # noqa: E402
from runner.own_kernels import CHUNK, OwnForward  # noqa: E402
from runner.presets import get_preset  # noqa: E402
from scripts.gpu_runner import copy_bandwidth_gbs  # noqa: E402

TOL = 5e-3  # fp16 storage, fp32 accumulation: errors near 1e-3


def rel(out, ref) -> float:
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    if not np.isfinite(out).all():
        return float("inf")
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def make_forward(cp, preset, pdl: bool = False, defines: tuple[str, ...] = (), l2_ahead_mb: float = 0.0):
    """An OwnForward over random weights (fp16) for one layer, plus the host copies."""
    rng = np.random.default_rng()
    p = preset
    h, kv, f = p.hidden, p.kv_dim, p.ffn

    def mat(r, c, std):
        return (rng.standard_normal((r, c)) * std).astype(np.float16)

    host = {"wq": mat(h, h, h ** -0.5), "wk": mat(kv, h, h ** -0.5), "wv": mat(kv, h, h ** -0.5),
            "wo": mat(h, h, h ** -0.5), "w_gate": mat(f, h, h ** -0.5), "w_up": mat(f, h, h ** -0.5),
            "w_down": mat(h, f, f ** -0.5), "attn_norm": (1 + 0.1 * rng.standard_normal(h)).astype(np.float16),
            "ffn_norm": (1 + 0.1 * rng.standard_normal(h)).astype(np.float16)}
    vocab = min(p.vocab, 32768)
    emb = mat(vocab, h, 1.0)
    layer = {k: cp.asarray(v) for k, v in host.items()}
    w = {"embed": cp.asarray(emb), "lm_head": cp.asarray(emb), "final_norm": layer["attn_norm"]}
    shape = (1, p.n_kv_heads, p.max_ctx, p.head_dim)
    ck = cp.asarray(rng.standard_normal(shape).astype(np.float16))
    cv = cp.asarray(rng.standard_normal(shape).astype(np.float16))
    inv = cp.asarray((1.0 / p.rope_theta ** (np.arange(0, p.head_dim, 2) / p.head_dim)).astype(np.float32))
    toks = [cp.zeros(1, np.int32) for _ in range(3)]
    fw = OwnForward(cp, p, w, [layer], None, inv, ck, cv, *toks, pdl=pdl, defines=defines, l2_ahead_mb=l2_ahead_mb)
    return fw, host, emb, rng, vocab


def check_kernels(cp, preset_name: str, pdl: bool = False, defines: tuple[str, ...] = (),
                  l2_ahead_mb: float = 0.0) -> list[dict]:
    """Every kernel once; ``pdl``: launched through cuLaunchKernelEx with programmatic serialization;
    ``defines``: decode.cu built with them (-DATT_GROUP=1: the attn_group_heads switch, -DATT_FILL=2:
    attn_fill_split, 3 with -DATT_POS=5: attn_fit_wave, 1: filled at every position; -DMERGE_IN_OPROJ=1:
    attn_merge_in_oproj, o_proj checked with the merge; -DMERGE_LAST=1: attn_merge_last, the merge in attn_split;
    ATT_SHARE_DEFINES: attn_share_kv); ``l2_ahead_mb``:
    the GEMVs pull that many MB of later weights into L2 after their rows (l2_ahead)."""
    p = get_preset(preset_name)
    fw, host, emb, rng, vocab = make_forward(cp, p, pdl, defines, l2_ahead_mb)
    tag = defines + ((f"l2_ahead={l2_ahead_mb:g}MB",) if l2_ahead_mb else ())
    grouped = ok_.ATT_GROUP_DEFINE in defines
    fw.p = _with_vocab(p, vocab)
    results = []

    def record(name, err, extra=""):
        results.append({"preset": preset_name, "kernel": ("pdl " if pdl else "") + " ".join(tag + (name,)),
                        "rel_err": err,
                        "ok": err < TOL, "note": extra})

    def poison(*arrs):
        for a in arrs:
            a.fill(np.nan) if a.dtype.kind == "f" else a.fill(-1)

    h, kv, d = p.hidden, p.kv_dim, p.head_dim
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    layer = {k: cp.asarray(v) for k, v in host.items()}
    gain = f64(host["attn_norm"])

    def normed(xr):  # float64 RMSNorm * gain
        return f64(xr) / np.sqrt((f64(xr) ** 2).mean() + p.norm_eps) * gain

    xr = (rng.standard_normal(h) * 3).astype(np.float32)
    hn = normed(xr)
    # rmsnorm, then the projections that read its output
    fw.x[...] = cp.asarray(xr)
    poison(fw.hn, fw.q, fw.kk, fw.v)
    fw.rmsnorm(layer["attn_norm"])
    record("rmsnorm", rel(fw.hn.get(), hn))
    hn16 = f64(fw.hn.get())  # what the projections read (fp16)
    normed16 = fw.hn.copy()
    if fw.norm_in_proj:  # the build computes it in gemv_qkv from x and the gain, and must not read hn
        fw.hn.fill(np.nan)
    if fw.norm_as_scale:  # the first norm as the build launches it: x * gain and the sum of squares
        poison(fw.hn, fw.parts)
        fw.rmsnorm(layer["attn_norm"], scale=True)
        record("rmsnorm (scale: x * gain)", rel(fw.hn.get(), f64(xr) * gain))
        record("rmsnorm (scale: sum of squares)", rel(fw.parts.get().sum(), (f64(xr) ** 2).sum()))
    fw.qkv(layer, 0)
    for name, out, wname in (("gemv_qkv:q", fw.q, "wq"), ("gemv_qkv:k", fw.kk, "wk"), ("gemv_qkv:v", fw.v, "wv")):
        record(name, rel(out.get(), f64(host[wname]) @ hn16))
    fw.hn[...] = normed16  # the fork's projections read hn in every build
    poison(fw.kk)
    fw.proj("wk", layer)  # one projection alone (the qkv_streams fork)
    record("gemv (proj k)", rel(fw.kk.get(), f64(host["wk"]) @ hn16))
    # gemv: plain, scaled (lm_head's form)
    x = rng.standard_normal(h).astype(np.float16)
    xd = cp.asarray(x)
    poison(fw.q)
    fw._gemv(layer["wq"], xd, fw.q, h, h, 0.5)
    record("gemv", rel(fw.q.get(), 0.5 * f64(host["wq"]) @ f64(x)))
    # gemv_swiglu + gemv_residual (down), of the ffn norm's output (norm_in_proj: computed by gemv_swiglu
    # from x; x still holds xr)
    fw.rmsnorm(layer["ffn_norm"])
    hn16 = f64(fw.hn.get())
    if fw.norm_in_proj:
        fw.hn.fill(np.nan)  # the build must not read hn
    if fw.norm_as_scale:  # what o_proj would leave: x * gain and the partials (checked below, from o_proj)
        fw.rmsnorm(layer["ffn_norm"], scale=True)
    poison(fw.ff)
    fw.ffn(layer, 0)
    g, u = f64(host["w_gate"]) @ hn16, f64(host["w_up"]) @ hn16
    record("gemv_swiglu", rel(fw.ff.get(), g / (1 + np.exp(-g)) * u))
    record("gemv_residual", rel(fw.x.get() - xr, f64(host["w_down"]) @ f64(fw.ff.get())))
    if fw.norm_in_resid:  # down also wrote the norm after it (one layer: the final norm, whose gain is attn_norm's)
        record("gemv_residual+norm (down)", rel(fw.hn.get(), normed(fw.x.get())))
        folded = fw.hn.get()
        fw.rmsnorm(fw.w["final_norm"])  # the launch it replaces, on the same residual: the same bits
        same = bool((folded.view(np.uint16) == fw.hn.get().view(np.uint16)).all())
        record("gemv_residual+norm (down) = rmsnorm, bit for bit", 0.0 if same else 1.0)
    if fw.norm_as_scale:  # down left the next norm's x * gain (its gain: attn_norm's) and its blocks' squares
        xd = fw.x.get()
        record("gemv_residual+scale (down): x * gain", rel(fw.hn.get(), f64(xd) * f64(host["attn_norm"])))
        record("gemv_residual+scale (down): partial sums of squares",
               rel(fw.parts.get(), ok_.scale_parts_reference(xd).astype(np.float64)))
    if fw.norm_in_oproj or fw.norm_as_scale:  # o_proj likewise, with the ffn norm's gain, from a residual of its own
        xb = (rng.standard_normal(h) * 3).astype(np.float32)
        fw.x[...] = cp.asarray(xb)
        fw.attn[...] = cp.asarray(rng.standard_normal(h).astype(np.float16))
        poison(fw.hn, fw.parts)
        fw.o_proj(layer, 0)
        xo = fw.x.get()
        ffn64 = f64(xo) / np.sqrt((f64(xo) ** 2).mean() + p.norm_eps) * f64(host["ffn_norm"])  # its norm, float64
        record("gemv_residual+scale (o_proj)" if fw.norm_as_scale else "gemv_residual (o_proj)",
               rel(xo - xb, f64(host["wo"]) @ f64(fw.attn.get())))
        if fw.norm_in_oproj:
            record("gemv_residual+norm (o_proj)", rel(fw.hn.get(), ffn64))
        else:  # x * gain, and gate/up of what o_proj left against the float64 norm of its residual
            record("gemv_residual+scale (o_proj): x * gain", rel(fw.hn.get(), f64(xo) * f64(host["ffn_norm"])))
            poison(fw.ff)
            fw.ffn(layer, 0)
            g, u = f64(host["w_gate"]) @ ffn64, f64(host["w_up"]) @ ffn64
            record("gemv_swiglu (scale, from o_proj's)", rel(fw.ff.get(), g / (1 + np.exp(-g)) * u))
    # embed
    tok = int(rng.integers(0, vocab))
    fw.d_tok[...] = tok
    poison(fw.x)
    fw.embed()
    record("embed", rel(fw.x.get(), f64(emb[tok])))
    # attention with RoPE and the cache write folded in, at three lengths (the cache row at pos written)
    inv_freq = 1.0 / p.rope_theta ** (np.arange(0, d, 2) / d)
    # grouped: at the device's own slots (a block per head up to a wave) and with att_slots=1 (every
    # block takes a KV head's whole group of query heads); 600 positions: 2 heads a block on an H200
    adaptive = fw.adaptive  # attn_split decides from the position and the resident blocks
    lengths = (1, 300, 513, 600, p.max_ctx) if adaptive or fw.chunk != CHUNK else (1, 300, p.max_ctx)
    lengths = tuple(dict.fromkeys(n for n in lengths if n <= p.max_ctx))  # tiny holds 512
    for slots, n in [(s, n) for s in ((fw.att_slots, 1) if adaptive else (fw.att_slots,)) for n in lengths]:
        fw.att_slots = slots
        pos = n - 1
        fw.d_pos[...] = pos
        fw.d_slot[...] = pos
        qa = rng.standard_normal(h).astype(np.float16)
        ka = rng.standard_normal(kv).astype(np.float16)
        va = rng.standard_normal(kv).astype(np.float16)
        fw.q[...], fw.kk[...], fw.v[...] = cp.asarray(qa), cp.asarray(ka), cp.asarray(va)
        K, V = f64(fw.cache_k[0].get()), f64(fw.cache_v[0].get())
        fw.cache_k[0][:, pos] = np.nan  # the row this token writes: an unwritten row fails
        fw.cache_v[0][:, pos] = np.nan
        poison(fw.attn)
        fw.attention(0)
        if fw.merge_last:  # the blocks that merged left every head's ticket at 0 for the next layer
            record(f"attn_split tickets back to 0 n={n}", float(bool(fw.att_tickets.get().any())))
        if fw.merge_in_oproj:  # the merge is o_proj's (block 0 stores it in attn): resid += Wo merged
            xb = rng.standard_normal(h).astype(np.float32)
            fw.x[...] = cp.asarray(xb)
            fw.o_proj(layer, 0)
            record(f"gemv_residual_merge n={n}" + (", slots=1" if slots == 1 else ""),
                   rel(fw.x.get() - xb, f64(host["wo"]) @ f64(fw.attn.get())))
        ref = ok_.attention_rope_reference(f64(qa).reshape(p.n_heads, d), f64(ka).reshape(p.n_kv_heads, d),
                                           f64(va).reshape(p.n_kv_heads, d), K, V, pos, pos, inv_freq)
        chunk = ok_.split_at(d, p.n_heads, pos, slots, fw.fill, fw.att_pos)
        hpb = ok_.heads_per_block(p.n_heads, p.n_kv_heads, pos, fw.att_grid, slots, chunk) if grouped else 1
        hpb = p.n_heads // p.n_kv_heads if fw.share else hpb  # attn_share: a KV head's query heads together
        record(f"attn_split+combine n={n}" + (", slots=1" if slots == 1 else ""), rel(fw.attn.get(), ref.ravel()),
               f"{-(-n // chunk)} splits of {chunk} used, {hpb} heads a block ({slots} slots)")
        if n == 300:
            record("attn_split:cache_k", rel(fw.cache_k[0][:, pos].get(), K[:, pos]))
            record("attn_split:cache_v", rel(fw.cache_v[0][:, pos].get(), V[:, pos]))
    # own_reset's fill_words (exact): every word of an array zeroed, an odd count past a full grid (the loop's tail),
    # the words after it kept; then the KV caches as the pipeline's reset empties them
    n = 3 * ok_.FILL_BLOCKS * ok_.FILL_THREADS + 7
    buf = cp.full(n + 64, 0xFFFFFFFF, cp.uint32)
    fw.zero(buf[:n])
    fw.zero(fw.cache_k)
    fw.zero(fw.cache_v)
    words = buf.get()
    ok = not words[:n].any() and bool((words[n:] == 0xFFFFFFFF).all())
    ok = ok and not bool(fw.cache_k.any()) and not bool(fw.cache_v.any())
    results.append({"preset": preset_name, "kernel": ("pdl " if pdl else "") + "fill_words", "rel_err": 0.0 if ok
                    else 1.0, "ok": ok, "note": f"{n} words zeroed and the 64 after them kept; both KV caches zeroed"})
    # argmax (exact)
    logits = rng.standard_normal(vocab).astype(np.float16)
    fw.logits[:vocab] = cp.asarray(logits)
    fw.next_id.fill(-1)
    fw.sample()
    got = int(fw.next_id.get()[0])
    ok = got == int(np.argmax(logits))
    results.append({"preset": preset_name, "kernel": ("pdl " if pdl else "") + "argmax", "rel_err": 0.0 if ok else 1.0,
                    "ok": got == int(np.argmax(logits)), "note": f"index {got} vs numpy {int(np.argmax(logits))}"})
    return results


def _with_vocab(p, vocab):
    from dataclasses import replace

    return replace(p, vocab=vocab)


def bandwidth(cp, preset_name: str, copy_bw: float) -> list[dict]:
    """GEMV time per shape (median of 50, weights rotated), achieved GB/s (weight bytes / time)."""
    p = get_preset(preset_name)
    fw, _, _, rng, _ = make_forward(cp, p)
    h, kv, f, V = p.hidden, p.kv_dim, p.ffn, p.vocab
    shapes = [("qkv (fused)", h + 2 * kv, h), ("o_proj", h, h), ("gate+up (swiglu)", 2 * f, h), ("down", h, f),
              ("lm_head", V, h)]
    rows = []
    for name, r, c in shapes:
        nbytes = r * c * 2
        copies = max(1, -(-200_000_000 // nbytes))
        mats = [cp.asarray(rng.standard_normal((r, c), dtype=np.float32).astype(np.float16)) for _ in range(copies)]
        x = cp.asarray(rng.standard_normal(c).astype(np.float16))
        y = cp.zeros(r, np.float16)
        if name.startswith("gate"):
            half = f

            def run(m):
                fw.k["gemv_swiglu"](((half + 7) // 8,), (256,), (m[:half], m[half:], x, y, np.int32(half), np.int32(c),
                                                               fw.x, fw.w["final_norm"], np.float32(p.norm_eps)),
                                    shared_mem=ok_.x_stage_bytes(fw.defines, c, normed=True))
        else:
            def run(m):
                fw._gemv(m, x, y, r, c)
        for m in mats[:3]:
            run(m)
        times = []
        for i in range(50):
            s, e = cp.cuda.Event(), cp.cuda.Event()
            s.record()
            run(mats[i % copies])
            e.record()
            e.synchronize()
            times.append(cp.cuda.get_elapsed_time(s, e) / 1e3)
        t = float(np.median(times))
        gbs = nbytes / t / 1e9
        rows.append({"preset": preset_name, "shape": name, "rows": r, "cols": c, "mb": nbytes / 1e6, "us": t * 1e6,
                     "gbs": gbs, "fraction_of_copy": gbs / copy_bw})
        del mats
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--builds", choices=("all", "switches"), default="all",
                    help="switches: only the builds of the kernel-tuning switches, no GEMV bandwidth")
    ap.add_argument("--switch", action="append", default=[], choices=cfg.KERNEL_TUNING,
                    help="only optimized's build with this kernel-tuning switch on too (repeatable), no bandwidth")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import cupy as cp

    results = []
    if args.switch:  # a switch measured for optimized, checked in the build it would give it
        side = cfg.parse_side(",".join(["optimized", *(f"{n}=on" for n in args.switch)]))
        defines = cfg.kernel_defines(cfg.effective(side, gpu=True))
        results += [r for name in ("1b", "8b", "tiny") for r in check_kernels(cp, name, True, defines)]
        return _write(args.out, results, copy_bandwidth_gbs(cp), [])
    if args.builds == "all":
        results += [r for name in ("1b", "8b", "tiny") for pdl in (False, True) for r in check_kernels(cp, name, pdl)]
    results += [r for name in ("1b", "8b") for r in check_kernels(cp, name, True, (ok_.ATT_GROUP_DEFINE,))]
    results += [r for name in ("1b", "8b", "tiny") for r in check_kernels(cp, name, True, (ok_.ATT_FILL_DEFINE,))]
    results += check_kernels(cp, "1b", True, (ok_.ATT_FILL_DEFINE, ok_.ATT_GROUP_DEFINE))
    results += [r for name in ("1b", "8b", "tiny") for r in check_kernels(cp, name, True, ok_.ATT_FIT_DEFINES)]
    results += [r for name in ("1b", "8b", "tiny") for r in check_kernels(cp, name, True, (ok_.ATT_FILL_DEFINE,
                                                                                          ok_.MERGE_DEFINE))]
    results += [r for name in ("1b", "8b", "tiny") for r in check_kernels(cp, name, True, ok_.ATT_SHARE_DEFINES)]
    results += [r for name in ("1b", "8b", "tiny") for r in check_kernels(cp, name, True, (ok_.ATT_FILL_DEFINE,
                                                                                          ok_.NORM_DEFINE))]
    results += [r for name in ("1b", "8b", "tiny") for r in check_kernels(cp, name, True, (ok_.ATT_FILL_DEFINE,),
                                                                          l2_ahead_mb=ok_.L2_AHEAD_MB)]
    results += [r for name in ("1b", "8b", "tiny") for r in check_kernels(cp, name, True, (ok_.ATT_FILL_DEFINE,
                                                                          ok_.EARLY_DEFINE, ok_.HOIST_DEFINE))]
    results += [r for name in ("1b", "8b", "tiny") for r in check_kernels(cp, name, True, (ok_.ATT_FILL_DEFINE,
                                                                          ok_.NORM_RESID_DEFINE))]
    results += [r for name in ("1b", "8b", "tiny") for r in check_kernels(cp, name, True, (ok_.ATT_FILL_DEFINE,
                                                                          ok_.MERGE_LAST_DEFINE))]
    results += [r for name in ("1b", "8b", "tiny") for r in check_kernels(cp, name, True, (ok_.NORM_SCALE_DEFINE,))]
    # optimized's build as the pipeline compiles it (overlap_tuning: prefetch depths and triggers at start; OwnForward
    # resolves the residual GEMVs' 16 a lane per preset)
    optimized = cfg.gpu_kernel_defines("optimized")
    results += [r for name in ("1b", "8b", "tiny") for r in check_kernels(cp, name, True, optimized)]
    copy_bw = copy_bandwidth_gbs(cp)
    bw = bandwidth(cp, "1b", copy_bw) + bandwidth(cp, "8b", copy_bw) if args.builds == "all" else []
    return _write(args.out, results, copy_bw, bw)


def _write(out: Path, results: list[dict], copy_bw: float, bw: list[dict]) -> int:
    """gpu_kernels.json/.md under ``out``, the table printed; 0 when every check passed."""
    render.write(out / "gpu_kernels.json", json.dumps({"checks": results, "copy_gbs": copy_bw, "gemv": bw}, indent=1))
    text = render.render("gpu_kernels.md.j2", checks=results, copy_bw=copy_bw, gemv=bw)
    render.write(out / "gpu_kernels.md", text)
    print(text)
    ok = all(r["ok"] for r in results)
    print("KERNELS", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
