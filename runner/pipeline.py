"""One decode step of a Llama-style model, written once over ``xp`` (NumPy or CuPy).

Per token, as llama.cpp does it: host-side inputs (token id, position, KV slot, attention
mask) are copied to the device, the layers run, the greedy pick is copied back, the host
synchronises. The switches change how that is scheduled, never the arithmetic:

* baseline: pageable host buffers, every copy followed by a stream synchronize, one stream.
* ``async_copies``: pinned staging buffers, async copies on the compute stream, one sync a token.
* ``qkv_streams``: Q, K, V projections forked onto three streams and joined with events.
* ``own_kernels``: our fused kernels (runner/kernels/decode.cu) instead of cuBLAS + CuPy ops.
* ``cuda_graph``: the token's launches captured once as a CUDA graph, replayed every token.
* ``run_ahead``: decode tokens queued without waiting: the token's last kernel turns its greedy
  pick into the next token's input on the device, so the host copies nothing in and waits once,
  after the last token (the prompt still goes in token by token from the host).
* ``pdl``: our kernels launched with programmatic dependent launch (each may start while the
  previous one drains; in a captured graph the edges stay programmatic).
* ``inject_delay_us`` / ``inject_slowdown_pct``: a busy wait on the device every token (the
  percentage is turned into nanoseconds by the loop, which times the token first).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from perfreview.trace.schema import Kind
from runner.arena import Arena, kv_caches
from runner.arena import capacity as arena_capacity
from runner.config import kernel_defines
from runner.device import capture_graph
from runner.model import rope_inv_freq
from runner.own_kernels import NormPlacement
from runner.presets import Preset
from runner.recorder import Recorder

MASK_PAD = 256  # attention runs over the context rounded up to this (llama.cpp pads its mask too)
NEG_INF = np.float32(-1e30)


class Pipeline:
    def __init__(self, preset: Preset, weights: dict[str, Any], device: Any,
                 switches: dict[str, Any], recorder: Recorder) -> None:
        self.p, self.dev, self.rec = preset, device, recorder
        self.xp = xp = device.xp
        self.act = device.compute_dtype
        self.sw = switches
        up = device.upload
        self.w = {k: up(weights[k]) for k in ("embed", "final_norm")}
        self.w["lm_head"] = self.w["embed"] if preset.tied_embeddings else up(weights["lm_head"])
        self.lm_scale = weights.get("lm_scale")
        self.layers = [{k: up(v) for k, v in layer.items()} for layer in weights["layers"]]
        self.inv_freq = xp.asarray(rope_inv_freq(preset, np, np.float32))
        self.main = device.streams[0]
        self.qkv_streams = bool(switches.get("qkv_streams"))
        if self.qkv_streams:
            self.side = [device.new_stream() for _ in range(3)]
            self.fork = device.event()
            self.joins = [device.event() for _ in range(3)]
        p = preset
        shape = (p.n_layers, p.n_kv_heads, p.max_ctx, p.head_dim)
        # own_reset: nothing but our module's kernels between our tokens, the arena's zeroing too (below, by
        # fill_words once the module is loaded): with fresh instances a memset at each one's making would land
        # between the tokens of the instance before
        self.own_reset = bool(switches.get("own_kernels") and switches.get("own_reset"))
        # one allocation: the same layout in every instance
        self.arena = mem = Arena(xp, arena_capacity(p), zeroed=not self.own_reset)
        # buffers_first: the caches at its end, the token's small buffers from its start
        self.cache_k, self.cache_v = kv_caches(mem, shape, self.act, at_end=bool(switches.get("buffers_first")))
        pinned = bool(switches.get("async_copies"))
        self.mem_kind = "pinned->device" if pinned else "pageable->device"
        self.out_kind = "device->pinned" if pinned else "device->pageable"
        host = device.empty_host
        self.h_tok, self.h_pos, self.h_slot = (host((1,), np.int32, pinned) for _ in range(3))
        self.h_mask = host((p.max_ctx,), np.float32, pinned)
        self.h_out = host((1,), np.int64, pinned)
        self.run_ahead = bool(switches.get("run_ahead"))  # effective switches: implies cuda_graph
        self.h_hist = host((p.max_ctx,), np.int64, pinned) if self.run_ahead else None
        self._queue_from = self._queued = 0
        self.d_tok, self.d_pos, self.d_slot = (mem.zeros((1,), np.int32) for _ in range(3))
        self.d_mask = mem.zeros((p.max_ctx,), np.float32)
        self.logits = None
        self.own = None
        self.graph = None
        self.reset_graph = None  # own_reset: the caches' emptying, captured at the first reset
        self.delay_ns = int(self.sw.get("inject_delay_us") or 0) * 1000
        self.captures = 0
        if switches.get("own_kernels"):  # effective switches: cuda_graph and pdl imply it (config.effective)
            from runner.own_kernels import L2_AHEAD_MB, OwnForward

            self.own = OwnForward(xp, preset, self.w, self.layers, self.lm_scale, self.inv_freq,
                                  self.cache_k, self.cache_v, self.d_tok, self.d_pos, self.d_slot,
                                  pdl=bool(switches.get("pdl")), defines=kernel_defines(switches),
                                  zeros=mem.zeros, l2_ahead_mb=L2_AHEAD_MB if switches.get("l2_ahead") else 0.0)
            if self.own_reset:  # before anything reads the buffers carved from it (the caches, tickets, partials)
                with device.use(self.main):
                    self.own.zero(mem.buf)
        device.synchronize_all()

    def set_delay_ns(self, ns: int) -> None:
        """The injected delay per token; before the first token (a captured graph holds it)."""
        if self.graph is not None:
            raise RuntimeError("the delay must be set before the token graph is captured")
        self.delay_ns = int(ns)

    def reset(self) -> None:
        """Empty the KV cache (a new sequence), on the compute stream so it orders with the tokens: by CuPy's fill
        (a memset), or with own_reset by our own kernel launched as a graph (captured at the first reset: between
        our tokens only graphs of our module's kernels are launched, whether the step follows a kernel of another
        module or any launch outside a graph); with sm_config_reset, then every SM set to our kernels'
        shared-memory configuration."""
        with self.dev.use(self.main):
            if self.own_reset:
                if self.reset_graph is None:
                    self.reset_graph = capture_graph(self.main, self._zero_caches)
                self.reset_graph.launch(self.main)
            else:
                self.cache_k.fill(0)
                self.cache_v.fill(0)
            if self.own is not None and self.sw.get("sm_config_reset"):
                self.own.configure_sms()

    def _zero_caches(self) -> None:
        self.own.zero(self.cache_k)
        self.own.zero(self.cache_v)

    # --- the token -------------------------------------------------------------------------
    def step(self, token: int, pos: int, keep_logits: bool = False) -> int:
        """Run one token at position ``pos``; returns the greedy next token id."""
        rec, dev, s = self.rec, self.dev, self.main
        n_ctx = min(self.p.max_ctx, -(-(pos + 1) // MASK_PAD) * MASK_PAD)
        with rec.span("token", kind=Kind.TOKEN.value):
            rec.mark("token_start", s)
            self._copy_inputs(token, pos, n_ctx)
            rec.mark("compute_start", s)
            with dev.use(s):
                if self.own is None:
                    logits = self._forward(n_ctx)
                    with rec.span("sample", s):
                        d_next = logits.argmax()
                elif self.sw.get("cuda_graph"):
                    if self.graph is None:
                        self._capture()
                    with rec.span("graph_launch"):
                        self.graph.launch(s)
                    logits, d_next = self.own.logits, self.own.next_id
                else:
                    self._forward_own()
                    logits, d_next = self.own.logits, self.own.next_id
            self.logits = logits if keep_logits else None
            with rec.span("output_copy", s):
                with rec.span("memcpy_d2h", nbytes=8, copy_kind="DtoH", mem_kind=self.out_kind):
                    dev.copy_d2h(self.h_out, d_next.reshape(1), s)
            rec.mark("token_end", s)
            with rec.span("sync"):
                dev.synchronize(s)
        return int(self.h_out[0])

    def queue(self, last: bool) -> list[int] | None:
        """``run_ahead``: queue the next decode token (its input is the previous token's pick, already
        on the device); nothing is copied in and nothing waited for until ``last``, which copies the
        picks of the queued tokens out, waits for them, and returns them in order."""
        rec, dev, s = self.rec, self.dev, self.main
        if self.graph is None:
            raise RuntimeError("queue() follows at least one step() (the prompt), which captures the graph")
        with rec.span("token", kind=Kind.TOKEN.value):
            rec.mark("token_start", s)  # no input copies: the compute starts with the token
            with dev.use(s), rec.span("graph_launch"):
                self.graph.launch(s)
            rec.mark("token_end", s)
            self._queued += 1
            if not last:
                return None
            first = self._queue_from
            picks = self.own.hist[first: first + self._queued]
            out = self.h_hist[: self._queued]
            with rec.span("output_copy", s):
                with rec.span("memcpy_d2h", nbytes=picks.nbytes, copy_kind="DtoH", mem_kind=self.out_kind):
                    dev.copy_d2h(out, picks, s)
            with rec.span("sync"):
                dev.synchronize(s)
        self._queued = 0
        return [int(t) for t in out]

    def start_queue(self, pos: int) -> None:
        """The next queued token runs at ``pos`` (the prompt's last step left its inputs on the device)."""
        self._queue_from, self._queued = pos, 0

    def _copy_inputs(self, token: int, pos: int, n_ctx: int) -> None:
        rec, dev, s = self.rec, self.dev, self.main
        sync_each = not self.sw.get("async_copies")
        with rec.span("input_copy"):
            self.h_tok[0], self.h_pos[0], self.h_slot[0] = token, pos, pos
            mask = self.h_mask[:n_ctx]
            mask[: pos + 1] = 0.0
            mask[pos + 1:] = NEG_INF
            for dst, src in ((self.d_tok, self.h_tok), (self.d_pos, self.h_pos),
                             (self.d_slot, self.h_slot), (self.d_mask, mask)):
                with rec.span("memcpy_h2d", nbytes=src.nbytes, copy_kind="HtoD", mem_kind=self.mem_kind):
                    dev.copy_h2d(dst, src, s)
                if sync_each:
                    with rec.span("sync"):
                        dev.synchronize(s)

    def _forward(self, n_ctx: int) -> Any:
        rec, xp, s, p = self.rec, self.xp, self.main, self.p
        f32, act = np.float32, self.act
        with rec.span("embedding", s):
            x = self.w["embed"][self.d_tok].astype(f32)  # (1, hidden) fp32 residual stream
        with rec.span("rope_table", s):
            ang = self.d_pos.astype(f32) * self.inv_freq
            cos, sin = xp.cos(ang), xp.sin(ang)
        if self.delay_ns:
            with rec.span("inject_delay", s):
                self.dev.spin_ns(self.delay_ns, s)
        mask = self.d_mask[:n_ctx]
        for li, layer in enumerate(self.layers):
            with rec.span("rmsnorm", s):
                hn = self._rmsnorm(x, layer["attn_norm"])
            with rec.span("qkv"):
                q, k, v = self._qkv(hn, layer)
            with rec.span("rope", s):
                q = self._rope(q.reshape(p.n_heads, p.head_dim), cos, sin)
                k = self._rope(k.reshape(p.n_kv_heads, p.head_dim), cos, sin)
            with rec.span("kv_write", s):
                self.cache_k[li][:, self.d_slot] = k.reshape(p.n_kv_heads, 1, p.head_dim)
                self.cache_v[li][:, self.d_slot] = v.reshape(p.n_kv_heads, 1, p.head_dim)
            with rec.span("attention", s):
                attn = self._attention(q, li, n_ctx, mask)
            with rec.span("o_proj", s):
                x = x + (attn @ layer["wo"].T).astype(f32)
            with rec.span("rmsnorm", s):
                hn = self._rmsnorm(x, layer["ffn_norm"])
            with rec.span("ffn", s):
                gate = (hn @ layer["w_gate"].T).astype(f32)
                upv = (hn @ layer["w_up"].T).astype(f32)
                a = (gate / (1.0 + xp.exp(-gate)) * upv).astype(act)
                x = x + (a @ layer["w_down"].T).astype(f32)
        with rec.span("rmsnorm", s):
            xn = self._rmsnorm(x, self.w["final_norm"])
        with rec.span("lm_head", s):
            logits = xn @ self.w["lm_head"].T
            if self.lm_scale is not None:
                logits = logits * act(self.lm_scale)
        return logits[0]

    def _capture(self) -> None:
        """Capture one token's launches on the (non-blocking) compute stream; replayed from then
        on. Lengths come from device memory, so one capture serves every position."""
        rec, s = self.rec, self.main
        saved, rec.gpu_functions = rec.gpu_functions, False  # no timing events inside the graph
        kernels = self.own.k
        # Which function launched each kernel of the graph: a replay's i-th kernel is the i-th launch here.
        self.own.k = {n: _Logged(f, n, rec) for n, f in kernels.items()}
        rec.capture_log = []
        try:
            self.graph = capture_graph(s, self._forward_own)
        finally:
            rec.gpu_functions = saved
            self.own.k = kernels
        self.captures += 1

    def _forward_own(self) -> None:
        rec, s, own = self.rec, self.main, self.own
        with rec.span("embedding", s):
            own.embed()
        if self.delay_ns:
            with rec.span("inject_delay", s):
                own.spin_ns(self.delay_ns)
        # Our kernels fold RoPE + the KV-cache write into attention: the range is named for what it holds.
        def norm(gain: Any, scale: bool = False) -> None:
            with rec.span("rmsnorm", s):
                own.rmsnorm(gain, scale)

        # the norms no kernel of this build computes or leaves (the Q/K/V fork's GEMVs read a launched one)
        place = NormPlacement(own.norm_in_proj, own.norm_in_resid, own.norm_in_oproj, own.norm_as_scale,
                              self.qkv_streams)
        for li, layer in enumerate(self.layers):
            if (scaled := place.before_qkv(li)) is not None:
                norm(layer["attn_norm"], scaled)
            if self.qkv_streams:
                with rec.span("qkv"):
                    self._fork_join(lambda name, which: own.proj(which, layer))
            else:
                with rec.span("qkv", s):
                    own.qkv(layer, li)
            with rec.span("rope_kv_attention", s):
                own.attention(li)
            with rec.span("o_proj", s):
                own.o_proj(layer, li)
            if place.before_ffn():
                norm(layer["ffn_norm"])
            with rec.span("ffn", s):
                own.ffn(layer, li)
        if place.final():
            norm(self.w["final_norm"])
        with rec.span("lm_head", s):
            own.lm_head()
        with rec.span("sample", s):
            own.sample()
        if self.run_ahead:
            with rec.span("advance", s):
                own.advance()

    def _fork_join(self, launch: Any) -> list[Any]:
        """PR 16991's pattern: fork Q, K, V onto three streams with an event, join with three."""
        dev, rec = self.dev, self.rec
        dev.record(self.fork, self.main)
        outs = []
        for (name, which), st, join in zip((("q_proj", "wq"), ("k_proj", "wk"), ("v_proj", "wv")),
                                           self.side, self.joins):
            dev.wait(st, self.fork)
            with dev.use(st), rec.span(name, st):
                outs.append(launch(name, which))
            dev.record(join, st)
        for join in self.joins:
            dev.wait(self.main, join)
        return outs

    def _rmsnorm(self, x: Any, gain: Any) -> Any:
        inv = 1.0 / self.xp.sqrt((x * x).mean(axis=-1, keepdims=True) + self.p.norm_eps)
        return (x * inv * gain.astype(np.float32)).astype(self.act)

    def _qkv(self, hn: Any, layer: dict) -> tuple[Any, Any, Any]:
        names = ("q_proj", "k_proj", "v_proj")
        mats = (layer["wq"], layer["wk"], layer["wv"])
        if not self.qkv_streams:
            outs = []
            for name, w in zip(names, mats):
                with self.rec.span(name, self.main):
                    outs.append(hn @ w.T)
            return tuple(outs)
        return tuple(self._fork_join(lambda name, which: hn @ layer[which].T))

    def _rope(self, x: Any, cos: Any, sin: Any) -> Any:
        half = self.p.head_dim // 2
        xf = x.astype(np.float32)
        a, b = xf[:, :half], xf[:, half:]
        return self.xp.concatenate([a * cos - b * sin, a * sin + b * cos], axis=1).astype(self.act)

    def _attention(self, q: Any, li: int, n_ctx: int, mask: Any) -> Any:
        p, xp = self.p, self.xp
        group = p.n_heads // p.n_kv_heads
        keys = self.cache_k[li][:, :n_ctx]  # (kv, n, d)
        vals = self.cache_v[li][:, :n_ctx]
        qh = q.reshape(p.n_kv_heads, group, p.head_dim)
        scores = (qh @ keys.transpose(0, 2, 1)).astype(np.float32) * np.float32(p.head_dim ** -0.5)
        scores = scores + mask
        scores = xp.exp(scores - scores.max(axis=-1, keepdims=True))
        probs = (scores / scores.sum(axis=-1, keepdims=True)).astype(self.act)
        return (probs @ vals).reshape(1, p.hidden)


class _Logged:
    """A kernel whose launches during capture are logged with the function that made them."""

    def __init__(self, fn: Any, name: str, rec: Recorder) -> None:
        self.fn, self.name, self.rec = fn, name, rec

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.rec.capture_log.append((self.rec.stack[-1] if self.rec.stack else "", self.name))
        return self.fn(*args, **kwargs)
