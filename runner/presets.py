"""Model shapes. Random weights from a seed, so no downloads; shapes follow real Llama models."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Preset:
    name: str
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    ffn: int
    vocab: int
    tied_embeddings: bool
    max_ctx: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def n_params(self) -> int:
        h, kv, f = self.hidden, self.kv_dim, self.ffn
        per_layer = h * h + 2 * h * kv + h * h + 3 * h * f + 2 * h
        head = 0 if self.tied_embeddings else self.vocab * h
        return self.vocab * h + head + self.n_layers * per_layer + h

    def weight_bytes_per_token(self, bytes_per_param: int = 2) -> int:
        """Bytes of weights one decode token reads: every matrix once, one embedding row."""
        h = self.hidden
        embed_row = h
        lm_head = self.vocab * h
        per_layer = h * h + 2 * h * self.kv_dim + h * h + 3 * h * self.ffn + 2 * h
        return bytes_per_param * (embed_row + lm_head + self.n_layers * per_layer + h)

    def kv_bytes_per_token(self, n_ctx: int, bytes_per_elem: int = 2) -> int:
        """Bytes of KV cache one decode token reads at context length ``n_ctx``."""
        return bytes_per_elem * self.n_layers * 2 * self.kv_dim * n_ctx

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(head_dim=self.head_dim, params=self.n_params())
        return d


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        # For tests: runs in seconds on a CPU.
        Preset("tiny", n_layers=2, hidden=64, n_heads=4, n_kv_heads=2, ffn=160, vocab=512,
               tied_embeddings=False, max_ctx=512),
        # ~125M parameters (GPT-2-small sized Llama).
        Preset("small", n_layers=12, hidden=768, n_heads=12, n_kv_heads=4, ffn=2048, vocab=32000,
               tied_embeddings=False, max_ctx=2048),
        # Llama-3.2-1B shapes (tied embeddings, as that model has).
        Preset("1b", n_layers=16, hidden=2048, n_heads=32, n_kv_heads=8, ffn=8192, vocab=128256,
               tied_embeddings=True, max_ctx=2048, rope_theta=500000.0),
        # Llama-3-8B shapes.
        Preset("8b", n_layers=32, hidden=4096, n_heads=32, n_kv_heads=8, ffn=14336, vocab=128256,
               tied_embeddings=False, max_ctx=2048, rope_theta=500000.0),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})") from None
