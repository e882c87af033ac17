"""Correctness: every config against the float64 reference, under teacher forcing.

Configs change scheduling, not math. For each config: feed the same token sequence, keep the
logits of every step, compare with :func:`runner.model.reference_logits` (fp16 tolerance), and
check that free-running generation gives the same tokens in every config.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from runner import config as cfg
from runner.model import check_logits, reference_logits
from runner.loop import Session, generate


def teacher_forced(session: Session, config: cfg.Config, tokens: list[int]) -> np.ndarray:
    """Logits (steps, vocab) of ``config`` fed ``tokens`` one by one from position 0."""
    pipe, _ = session.pipeline(config, "tokens")
    pipe.reset()
    out = []
    for pos, tok in enumerate(tokens):
        pipe.step(tok, pos, keep_logits=True)
        logits = pipe.logits
        out.append(np.asarray(logits.get() if hasattr(logits, "get") else logits, dtype=np.float64))
    return np.stack(out)


def reference(session: Session, tokens: list[int], xp: Any = None) -> np.ndarray:
    """float64 reference logits. NumPy on the host by default; pass CuPy for models whose
    float64 weights do not fit in host memory comfortably (the arithmetic stays float64)."""
    w = session.weights
    if xp is None:
        if session.device.is_gpu:
            w = _to_host(w)
        xp = np
    ref = reference_logits(session.preset, w, np.asarray(tokens), xp)
    return np.asarray(ref.get() if hasattr(ref, "get") else ref)


def _to_host(w: Any) -> Any:
    if isinstance(w, dict):
        return {k: _to_host(v) for k, v in w.items()}
    if isinstance(w, list):
        return [_to_host(v) for v in w]
    return w.get() if hasattr(w, "get") else w


def check_configs(session: Session, configs: list[cfg.Config], n_steps: int, n_generate: int,
                  prompt_tokens: int = 8, ref_xp: Any = None,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Generate with the first config to get a realistic sequence, then teacher-force every config
    on it against the reference; then free-run every config: configs of one kernel family must
    give identical tokens (``same_tokens``); agreement across families is reported."""
    prompt = session.prompt(prompt_tokens)
    first, _ = session.pipeline(configs[0], "tokens")
    seq = prompt + generate(first, prompt, max(0, n_steps - prompt_tokens))
    seq = seq[:n_steps]
    ref = reference(session, seq, ref_xp)
    results: dict[str, Any] = {"steps": len(seq), "configs": {}}
    tokens_by_config = {}
    for done, config in enumerate(configs, start=1):
        logits = teacher_forced(session, config, seq)
        res = check_logits(logits, ref)
        pipe, _ = session.pipeline(config, "tokens")
        tokens_by_config[config.label] = generate(pipe, prompt, n_generate)
        results["configs"][config.label] = res
        if progress:
            progress(done, len(configs))
    gpu = session.device.is_gpu
    families: dict[str, list[list[int]]] = {}
    for config in configs:
        families.setdefault(cfg.kernel_family(config, gpu), []).append(tokens_by_config[config.label])
    results["same_tokens"] = all(all(t == ts[0] for t in ts) for ts in families.values())
    base = next(iter(tokens_by_config.values()))
    results["agreement_with_first"] = {
        label: sum(a == b for a, b in zip(toks, base)) / max(1, len(base)) for label, toks in tokens_by_config.items()}
    results["generated"] = tokens_by_config
    results["ok"] = results["same_tokens"] and all(r["ok"] for r in results["configs"].values())
    return results
