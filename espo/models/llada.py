"""Native LLaDA: a Llama-style bidirectional transformer, sized by config.

Module and parameter names follow the published LLaDA checkpoints (``model.transformer.wte``,
``blocks.{i}.q_proj`` ... ``ff_out``, ``ln_f``, the untied head ``model.transformer.ff_out``), so the same
code loads LLaDA-8B's safetensors and the tiny checkpoints this project trains itself.

Numerics follow the official forward pass: RMSNorm normalises in float32 and casts back before the weight,
RoPE tables are built and applied in float32 (rotate-half layout), attention is
``scaled_dot_product_attention`` without a causal mask, and ``ff_proj`` is the SiLU gate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from espo.models import layers
from espo.models.config_fields import ConfigFile, reject_unsupported
from espo.models.layers import LayerKV


@dataclass
class LLaDAConfig(ConfigFile):
    """The fields of LLaDA's ``config.json`` that define the network.

    Args:
        d_model: Hidden size.
        n_heads: Query heads.
        n_kv_heads: Key/value heads (``n_heads`` for plain multi-head attention).
        n_layers: Number of transformer blocks.
        mlp_hidden_size: Width of the SwiGLU feed-forward layer.
        vocab_size: Tokenizer vocabulary size.
        embedding_size: Rows of the embedding and of the head (may pad ``vocab_size``).
        rope_theta: RoPE base.
        rms_norm_eps: layers.RMSNorm epsilon.
        max_sequence_length: Length the RoPE table is pre-built for (longer inputs rebuild it).
        mask_token_id: Id of the ``[MASK]`` token that diffusion corrupts tokens into.
        eos_token_id: End-of-sequence id (also LLaDA's padding id).
        pad_token_id: Padding id.
    """

    d_model: int = 4096
    n_heads: int = 32
    n_kv_heads: int | None = 32
    n_layers: int = 32
    mlp_hidden_size: int = 12288
    vocab_size: int = 126464
    embedding_size: int | None = 126464
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5
    max_sequence_length: int = 4096
    mask_token_id: int | None = 126336
    eos_token_id: int | None = 126081
    pad_token_id: int | None = 126081

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def rows(self) -> int:
        return self.embedding_size or self.vocab_size

    @classmethod
    def from_dict(cls, raw: dict) -> LLaDAConfig:
        """Builds a config from a ``config.json`` dict, ignoring fields that do not shape the network."""
        unsupported = {
            "alibi": False, "rope": True, "weight_tying": False, "scale_logits": False,
            "include_bias": False, "include_qkv_bias": False, "input_emb_norm": False,
            "rope_full_precision": True, "attention_layer_norm": False, "clip_qkv": None,
            "activation_type": "silu", "layer_norm_type": "rms", "block_type": "llama",
        }
        reject_unsupported(raw, "LLaDA", unsupported)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def to_dict(self) -> dict:
        """The ``config.json`` content, in the layout of the published checkpoints."""
        out = asdict(self)
        out.update(
            model_type="llada", architectures=["LLaDAModelLM"], block_type="llama", activation_type="silu",
            layer_norm_type="rms", rope=True, alibi=False, weight_tying=False, include_bias=False,
            include_qkv_bias=False, scale_logits=False, rope_full_precision=True,
        )
        return out


class LLaDABlock(nn.Module):
    """One pre-norm block: bidirectional attention, then a SwiGLU feed-forward (``ff_proj`` is the gate)."""

    def __init__(self, cfg: LLaDAConfig, rotary: layers.RotaryEmbedding) -> None:
        super().__init__()
        self.n_heads, self.kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.rotary = rotary
        self.attn_norm = layers.RMSNorm(cfg.d_model, cfg.rms_norm_eps)
        self.q_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim, bias=False)
        self.attn_out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.ff_norm = layers.RMSNorm(cfg.d_model, cfg.rms_norm_eps)
        self.ff_proj = nn.Linear(cfg.d_model, cfg.mlp_hidden_size, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(cfg.mlp_hidden_size, cfg.d_model, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn_mask: torch.Tensor | None,
        kv: LayerKV | None = None,
    ) -> torch.Tensor:
        h = self.attn_norm(x)
        q = layers.split_heads(self.q_proj(h), self.n_heads, self.head_dim)  # [B, H, T, D]
        k = layers.split_heads(self.k_proj(h), self.kv_heads, self.head_dim)  # [B, Hkv, T, D]
        v = layers.split_heads(self.v_proj(h), self.kv_heads, self.head_dim)
        q, k = self.rotary.rotate(q, cos, sin), self.rotary.rotate(k, cos, sin)
        x = x + self.attn_out(layers.grouped_query_attention(q, k, v, attn_mask, kv))
        return x + layers.swiglu(self.ff_norm(x), self.ff_proj, self.up_proj, self.ff_out)


class LLaDATransformer(nn.Module):
    """``model.transformer``: embeddings, blocks, final norm and the untied head (``ff_out``)."""

    def __init__(self, cfg: LLaDAConfig, rotary: layers.RotaryEmbedding) -> None:
        super().__init__()
        self.wte = nn.Embedding(cfg.rows, cfg.d_model)
        self.blocks = nn.ModuleList(LLaDABlock(cfg, rotary) for _ in range(cfg.n_layers))
        self.ln_f = layers.RMSNorm(cfg.d_model, cfg.rms_norm_eps)
        self.ff_out = nn.Linear(cfg.d_model, cfg.rows, bias=False)


class _Inner(nn.Module):
    def __init__(self, cfg: LLaDAConfig, rotary: layers.RotaryEmbedding) -> None:
        super().__init__()
        self.transformer = LLaDATransformer(cfg, rotary)


class LLaDAModelLM(layers.CachedNetwork):
    """The LLaDA network with the published parameter names (``model.transformer.*``).

    ``forward`` returns logits [B, T, V] where position i predicts token i (no shift). ``hidden_states``
    and ``lm_head`` split the two so callers can apply the head at chosen positions only.
    """

    block_class = LLaDABlock

    def __init__(self, cfg: LLaDAConfig) -> None:
        super().__init__()
        if cfg.d_model % cfg.n_heads or cfg.n_heads % cfg.kv_heads:
            raise ValueError(f"d_model={cfg.d_model}, n_heads={cfg.n_heads}, n_kv_heads={cfg.kv_heads} "
                             "do not divide evenly.")
        self.config = cfg
        # rope_full_precision: tables and rotation in float32, whatever the activation dtype.
        self.rotary = layers.RotaryEmbedding(cfg.head_dim, cfg.rope_theta, full_precision=True)
        self.model = _Inner(cfg, self.rotary)
        # Not a buffer: kept in float32 and out of dtype casts, FSDP and the state dict, as in LLaDA.
        self._rope: dict[str, torch.Tensor] = {}

    def layer_list(self) -> nn.ModuleList:
        return self.model.transformer.blocks

    def reset_parameters(self, generator: torch.Generator, std: float = 0.02) -> None:
        """Random init (normal std 0.02, unit norms); the residual outputs are scaled by 1/sqrt(2L).

        Args:
            generator: The only source of randomness (the global RNG is never used).
            std: Standard deviation of the weight matrices.
        """
        layers.init_weights_(self, generator, std=std, num_layers=self.config.n_layers,
                      residual=r"blocks\.\d+\.(attn_out|ff_out)\.weight$", zero_bias=False)

    def _tables(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        cached = self._rope.get("cos")
        if cached is None or cached.shape[0] < length or cached.device != device:
            size = max(length, self.config.max_sequence_length)
            # Built on CPU in float32, then moved, as the reference does (GPU sin/cos can differ by an ulp).
            cos, sin = self.rotary.cos_sin(torch.arange(size), torch.float32)  # [size, D]
            self._rope["cos"], self._rope["sin"] = cos.to(device), sin.to(device)
        return self._rope["cos"][:length], self._rope["sin"][:length]

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final-norm hidden states [B, T, d_model].

        Args:
            input_ids: Token ids [B, T].
            attention_mask: Optional [B, T] with 1 for real tokens and 0 for padding; padded keys are
                masked out and attention stays bidirectional (the post-2025-10 LLaDA behaviour).
        """
        return self._run(input_ids, attention_mask, None, 0)

    def hidden_states_cached(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                             cache: list[LayerKV], offset: int = 0) -> torch.Tensor:
        """``hidden_states`` for a window of positions ``offset..`` only, attending through the cache.

        With ``LayerKV(keep=P)`` entries and ``offset=0`` this is exactly ``hidden_states`` and records the
        keys/values of positions ``< P``. With recorded entries and ``offset=P`` only the window is computed:
        prefix cache (read mode): the window is the suffix and its queries attend to the recorded prefix plus
        its own keys/values; dual cache (``at=offset``, all T positions recorded): the window's keys/values
        replace the recorded ones at its positions and its queries attend to all T.

        Args:
            input_ids: Token ids [B, W] of positions ``offset..offset+W-1``.
            attention_mask: Optional [B, T] padding mask over all T key positions.
            cache: One ``LayerKV`` per block.
            offset: Position of ``input_ids[:, 0]``.

        Returns:
            Final-norm hidden states [B, W, d_model].
        """
        return self._run(input_ids, attention_mask, cache, offset)

    def _run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache: list[LayerKV] | None,
             offset: int) -> torch.Tensor:
        tr = self.model.transformer
        x = tr.wte(input_ids)
        cos, sin = self._tables(offset + input_ids.shape[1], input_ids.device)
        cos, sin = cos[offset:], sin[offset:]
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, T] over keys
        for block, kv in zip(tr.blocks, cache or [None] * len(tr.blocks), strict=True):
            x = block(x, cos, sin, mask, kv)
        return tr.ln_f(x)

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits for any [..., d_model] hidden states."""
        return self.model.transformer.ff_out(hidden)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.lm_head(self.hidden_states(input_ids, attention_mask))
