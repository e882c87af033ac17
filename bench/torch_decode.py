"""The peer baseline of issue 12: a plain PyTorch Llama decode step on the same shapes and the same
random weights as the runner (shared through DLPack, no copy, no download), with a static KV cache,
run eagerly or replayed as a CUDA graph (one graph per 256-token context bucket, as the runner
pads its attention). The math follows runner/pipeline.py (fp16 weights and activations, fp32
residual stream and softmax), so greedy tokens can be compared.
"""

from __future__ import annotations

from typing import Any

import torch

MASK_PAD = 256


class TorchDecode:
    def __init__(self, preset: Any, weights: dict[str, Any]) -> None:
        t = torch.from_dlpack
        self.p = p = preset
        self.embed = t(weights["embed"])
        self.lm_head = t(weights["lm_head"])
        self.lm_scale = weights.get("lm_scale")
        self.final_norm = t(weights["final_norm"])
        self.layers = [{k: t(v) for k, v in layer.items()} for layer in weights["layers"]]
        dev = self.embed.device
        self.cache_k = torch.zeros(p.n_layers, p.n_kv_heads, p.max_ctx, p.head_dim, dtype=torch.float16, device=dev)
        self.cache_v = torch.zeros_like(self.cache_k)
        self.inv_freq = 1.0 / (p.rope_theta ** (torch.arange(0, p.head_dim, 2, device=dev, dtype=torch.float64)
                                                / p.head_dim)).float()
        self.tok = torch.zeros(1, dtype=torch.long, device=dev)
        self.pos = torch.zeros(1, dtype=torch.long, device=dev)
        self.out = torch.zeros(1, dtype=torch.long, device=dev)
        self.stream = torch.cuda.Stream()
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}

    def _rms(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        inv = torch.rsqrt((x * x).mean(-1, keepdim=True) + self.p.norm_eps)
        return (x * inv * g.float()).half()

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = self.p.head_dim // 2
        xf = x.float()
        a, b = xf[:, :half], xf[:, half:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=1).half()

    @torch.no_grad()
    def forward(self, n_ctx: int) -> None:
        """One token from ``self.tok`` at ``self.pos``; the greedy pick lands in ``self.out``."""
        p = self.p
        x = self.embed[self.tok].float()
        ang = self.pos.float()[:, None] * self.inv_freq
        cos, sin = torch.cos(ang), torch.sin(ang)
        ctx = torch.arange(n_ctx, device=x.device)
        mask = torch.where(ctx <= self.pos, 0.0, -1e30).float()
        group = p.n_heads // p.n_kv_heads
        for li, w in enumerate(self.layers):
            hn = self._rms(x, w["attn_norm"])
            q = self._rope((hn @ w["wq"].T).view(p.n_heads, p.head_dim), cos, sin)
            k = self._rope((hn @ w["wk"].T).view(p.n_kv_heads, p.head_dim), cos, sin)
            v = (hn @ w["wv"].T).view(p.n_kv_heads, p.head_dim)
            self.cache_k[li].index_copy_(1, self.pos, k[:, None])
            self.cache_v[li].index_copy_(1, self.pos, v[:, None])
            keys, vals = self.cache_k[li][:, :n_ctx], self.cache_v[li][:, :n_ctx]
            qh = q.view(p.n_kv_heads, group, p.head_dim)
            scores = (qh @ keys.transpose(1, 2)).float() * p.head_dim ** -0.5 + mask
            probs = torch.softmax(scores, dim=-1).half()
            attn = (probs @ vals).reshape(1, p.hidden)
            x = x + (attn @ w["wo"].T).float()
            hn = self._rms(x, w["ffn_norm"])
            gate = (hn @ w["w_gate"].T).float()
            up = (hn @ w["w_up"].T).float()
            a = (gate * torch.sigmoid(gate) * up).half()
            x = x + (a @ w["w_down"].T).float()
        logits = self._rms(x, self.final_norm) @ self.lm_head.T
        if self.lm_scale is not None:
            logits = logits * self.lm_scale
        self.out.copy_(logits[0].argmax().view(1))

    def step(self, token: int, pos: int, graph: bool) -> int:
        """Host loop as llama.cpp's: inputs in, the token (graph or eager), the pick back, a sync."""
        n_ctx = min(self.p.max_ctx, -(-(pos + 1) // MASK_PAD) * MASK_PAD)
        with torch.cuda.stream(self.stream):
            self.tok.fill_(token)
            self.pos.fill_(pos)
            if not graph:
                self.forward(n_ctx)
            else:
                g = self.graphs.get(n_ctx)
                if g is None:
                    g = self.graphs[n_ctx] = self._capture(n_ctx)
                g.replay()
            return int(self.out.item())

    def _capture(self, n_ctx: int) -> torch.cuda.CUDAGraph:
        self.forward(n_ctx)  # warm (allocator, kernels) on this stream before capture
        torch.cuda.current_stream().synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=self.stream):
            self.forward(n_ctx)
        return g

    def reset(self) -> None:
        self.cache_k.zero_()
        self.cache_v.zero_()

    def generate(self, prompt: list[int], n: int, graph: bool) -> list[int]:
        self.reset()
        nxt = 0
        for pos, tok in enumerate(prompt):
            nxt = self.step(tok, pos, graph)
        out = []
        for i in range(n):
            nxt = self.step(nxt, len(prompt) + i, graph)
            out.append(nxt)
        return out
