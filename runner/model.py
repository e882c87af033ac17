"""Weights from a seed, and the float64 reference that every config is checked against.

The reference is written on its own (whole sequence at once, causal mask, no KV cache), so it
shares no code with the decode pipeline it checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from runner.presets import Preset


def init_weights(preset: Preset, seed: int, xp: Any = np) -> dict[str, Any]:
    """fp16 weights; matrices are (out, in). Scaled so activations stay O(1) through the layers
    and the logits are spread wide enough that greedy picks are not near-ties everywhere."""
    rng = xp.random.default_rng(seed)
    h, kv, f = preset.hidden, preset.kv_dim, preset.ffn

    def normal(shape: tuple[int, ...], std: float) -> Any:
        # float32 draws then a cast: CuPy's generator has no float16 normal.
        return (rng.standard_normal(shape, dtype=xp.float32) * std).astype(xp.float16)

    def gain(n: int) -> Any:
        return (1.0 + 0.1 * rng.standard_normal((n,), dtype=xp.float32)).astype(xp.float16)

    w: dict[str, Any] = {"embed": normal((preset.vocab, h), 1.0)}
    layers = []
    for _ in range(preset.n_layers):
        layers.append({
            "attn_norm": gain(h),
            "wq": normal((h, h), h ** -0.5),
            "wk": normal((kv, h), h ** -0.5),
            "wv": normal((kv, h), h ** -0.5),
            # Residual branches scaled down with depth so the stream does not blow up.
            "wo": normal((h, h), (h * 2 * preset.n_layers) ** -0.5),
            "ffn_norm": gain(h),
            "w_gate": normal((f, h), h ** -0.5),
            "w_up": normal((f, h), h ** -0.5),
            "w_down": normal((h, f), (f * 2 * preset.n_layers) ** -0.5),
        })
    w["layers"] = layers
    w["final_norm"] = gain(h)
    # Logit std ~ 3: wide enough for clear greedy picks, far from fp16 range limits.
    w["lm_head"] = w["embed"] if preset.tied_embeddings else normal((preset.vocab, h), 3.0 * h ** -0.5)
    if preset.tied_embeddings:
        w["lm_scale"] = 3.0 * h ** -0.5  # tied head: scale the logits instead of the matrix
    return w


def rope_inv_freq(preset: Preset, xp: Any = np, dtype: Any = np.float64) -> Any:
    d = preset.head_dim
    return 1.0 / (preset.rope_theta ** (xp.arange(0, d, 2, dtype=dtype) / d))


def reference_logits(preset: Preset, weights: dict[str, Any], tokens: Any, xp: Any = np) -> Any:
    """Teacher-forced float64 logits: row i predicts token i+1 given tokens[:i+1].

    ``xp`` is NumPy (or CuPy for models too large for host float64; the arithmetic is float64
    either way). Weights are upcast one matrix at a time so float64 copies never all coexist.
    """
    f64 = xp.float64
    toks = xp.asarray(tokens)
    n = int(toks.shape[0])
    d, nh, nkv = preset.head_dim, preset.n_heads, preset.n_kv_heads
    group = nh // nkv

    def up(a: Any) -> Any:
        return xp.asarray(a).astype(f64)

    def rmsnorm(x: Any, g: Any) -> Any:
        return x / xp.sqrt((x * x).mean(axis=-1, keepdims=True) + preset.norm_eps) * up(g)

    pos = xp.arange(n, dtype=f64)
    ang = pos[:, None] * rope_inv_freq(preset, xp)[None, :]  # (n, d/2)
    cos, sin = xp.cos(ang)[:, None, :], xp.sin(ang)[:, None, :]

    def rope(x: Any) -> Any:  # x: (n, heads, d), rotate-half convention
        a, b = x[..., : d // 2], x[..., d // 2:]
        return xp.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)

    causal = xp.triu(xp.full((n, n), -xp.inf, dtype=f64), k=1)
    x = up(weights["embed"][toks])
    for layer in weights["layers"]:
        hn = rmsnorm(x, layer["attn_norm"])
        q = rope((hn @ up(layer["wq"]).T).reshape(n, nh, d))
        k = rope((hn @ up(layer["wk"]).T).reshape(n, nkv, d))
        v = (hn @ up(layer["wv"]).T).reshape(n, nkv, d)
        k = xp.repeat(k, group, axis=1)
        v = xp.repeat(v, group, axis=1)
        scores = xp.einsum("qhd,khd->hqk", q, k) / np.sqrt(d) + causal[None]
        scores -= scores.max(axis=-1, keepdims=True)
        p = xp.exp(scores)
        p /= p.sum(axis=-1, keepdims=True)
        attn = xp.einsum("hqk,khd->qhd", p, v).reshape(n, nh * d)
        x = x + attn @ up(layer["wo"]).T
        hn = rmsnorm(x, layer["ffn_norm"])
        gate = hn @ up(layer["w_gate"]).T
        ff = (gate / (1.0 + xp.exp(-gate))) * (hn @ up(layer["w_up"]).T)
        x = x + ff @ up(layer["w_down"]).T
    x = rmsnorm(x, weights["final_norm"])
    logits = x @ up(weights["lm_head"]).T
    return logits * weights.get("lm_scale", 1.0)


def check_logits(logits: Any, ref: Any, rtol: float = 5e-2, l2_tol: float = 1e-2) -> dict[str, Any]:
    """Compare teacher-forced logits (steps, vocab) with the float64 reference.

    fp16 tolerance: the relative L2 error of all logits within ``l2_tol`` (fp16 storage with fp32
    accumulation lands near 1e-3), every step's max |out - ref| within ``rtol`` times that step's
    logit spread (std) -- the worst of 128k logits after 16+ fp16 layers -- and greedy tokens
    equal wherever the reference's top-2 margin exceeds twice that bound (random weights can
    make near-ties, where either pick is right).
    """
    out = np.asarray(logits, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if out.shape != ref.shape:
        raise ValueError(f"logits shape {out.shape} != reference {ref.shape}")
    if not np.isfinite(out).all():
        return {"ok": False, "reason": "non-finite logits", "max_err_over_std": float("inf")}
    scale = ref.std(axis=1)
    err = np.abs(out - ref).max(axis=1) / scale
    top2 = np.sort(ref, axis=1)[:, -2:]
    margin = (top2[:, 1] - top2[:, 0]) / scale
    decisive = margin > 2 * rtol
    agree = out.argmax(axis=1) == ref.argmax(axis=1)
    rel_l2 = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
    ok = bool((err <= rtol).all() and rel_l2 <= l2_tol and agree[decisive].all())
    return {
        "ok": ok,
        "steps": int(out.shape[0]),
        "max_err_over_std": float(err.max()),
        "rel_l2": rel_l2,
        "rtol": rtol,
        "l2_tol": l2_tol,
        "decisive_steps": int(decisive.sum()),
        "greedy_agree_decisive": int(agree[decisive].sum()),
    }
