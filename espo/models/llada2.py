"""Native LLaDA2 (inclusionAI LLaDA2.0/2.1-mini, ``model_type: llada2_moe``): a block-diffusion mixture of experts.

Module names follow the hub ``modeling_llada2_moe.py``: ``model.word_embeddings``, ``model.layers.{i}.attention.
query_key_value`` (fused q/k/v), ``attention.query_layernorm``/``key_layernorm`` (per-head RMSNorm),
``attention.dense``, ``input_layernorm``, ``post_attention_layernorm``, ``mlp`` (a dense SwiGLU for the first
``first_k_dense_replace`` layers, else the sparse block: ``mlp.gate.weight``, the ``mlp.gate.expert_bias`` buffer,
``mlp.experts.{e}.gate_proj/up_proj/down_proj``, ``mlp.shared_experts.*``), ``model.norm`` and ``lm_head``.

Router, as the official gate: logits in float32, sigmoid scores; ``scores + expert_bias`` choose the experts
(group-limited: the ``topk_group`` groups of ``n_group`` with the best top-2 sums, then the top
``num_experts_per_tok``), the unbiased scores of the chosen experts weight them, normalised to sum 1 when more
than one is chosen, times ``routed_scaling_factor``. Shared experts add to every token. The model computes no
auxiliary loss (``aux_loss`` is None in the official forward; balancing is the aux-loss-free ``expert_bias``,
a buffer, never trained here). Each sparse block records its last expert load (:meth:`LLaDA2MoeModelLM.
expert_load`). RoPE is partial (``partial_rotary_factor`` of each head, rotate-half), cos/sin cast to the
activation dtype; RMSNorm normalises in float32 and casts back before the weight. Logits are not shifted.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from espo.models import layers
from espo.models.block_attention import BlockDiffusionNetwork
from espo.models.config_fields import ConfigFile, official_values, reject_unsupported


@dataclass
class LLaDA2Config(ConfigFile):
    """The fields of LLaDA2's ``config.json`` that define the network, with the official defaults.

    A key missing from ``config.json`` takes the default of the official ``LLaDA2MoeConfig``
    (``configuration_llada2_moe.py`` of inclusionAI/LLaDA2.0-mini, copied in ZHZisZZ/dllm as
    ``dllm/pipelines/llada2/models/configuration_llada2_moe.py``): ``rms_norm_eps`` 1e-5, ``rope_theta`` 10000,
    ``num_experts_per_tok`` 2, ``num_experts`` 16, no shared experts ... A null means what it means in the official
    ``modeling_llada2_moe.py``: ``num_experts: null`` is a dense model (every layer a layers.SwiGLU of
    ``intermediate_size``), ``num_shared_experts: null`` no shared expert (0 builds one of width 0, whose
    zero-size weights the official code saves and espo loads), ``head_dim: null`` is ``hidden_size //
    num_attention_heads``. The official default ``num_key_value_heads`` 0 cannot build attention (the official
    code divides by it): espo asks for the key instead.

    Args:
        hidden_size: Model width.
        intermediate_size: Width of the dense MLP layers (None: no dense layer may be built).
        num_hidden_layers: Decoder layers.
        num_attention_heads: Query heads.
        num_key_value_heads: Key/value heads.
        head_dim: Per-head width; None: ``hidden_size // num_attention_heads``.
        vocab_size: Rows of the embedding and of the head.
        rope_theta: RoPE base.
        partial_rotary_factor: Fraction of each head that RoPE rotates.
        rms_norm_eps: layers.RMSNorm epsilon.
        max_position_embeddings: Longest trained position (informational).
        use_qkv_bias: Bias on the fused q/k/v projection.
        use_bias: Bias on the attention output projection (``dense``).
        use_qk_norm: Per-head layers.RMSNorm on queries and keys.
        num_experts: Routed experts per sparse layer; None: a dense model.
        num_shared_experts: Shared experts (one layers.SwiGLU ``num_shared_experts`` times as wide); None: none.
        num_experts_per_tok: Experts chosen per token.
        n_group: Expert groups of the group-limited router.
        topk_group: Groups a token may choose from.
        routed_scaling_factor: Scale of the routed experts' weights.
        moe_intermediate_size: Width of each expert (None: no sparse layer may be built).
        first_k_dense_replace: Leading layers with a dense MLP instead of experts.
        tie_word_embeddings: Head shares the embedding matrix.
        block_size: Block length of the block-diffusion attention. Not a field of the official class (LLaDA2 passes
            ``block_length`` to ``generate``, default 32); None: not stated (``load_model`` then needs
            ``block_size=``).
        mask_token_id: The mask id.
        eos_token_id: End-of-sequence id.
        pad_token_id: Padding id (its embedding row gets no gradient); None: no padding row.
    """

    hidden_size: int = 1024
    intermediate_size: int | None = None
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    num_key_value_heads: int = 0
    head_dim: int | None = None
    vocab_size: int = 30592
    rope_theta: float = 10000.0
    partial_rotary_factor: float = 0.5
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 16384
    use_qkv_bias: bool = False
    use_bias: bool = True
    use_qk_norm: bool = True
    num_experts: int | None = 16
    num_shared_experts: int | None = 0
    num_experts_per_tok: int = 2
    n_group: int = 8
    topk_group: int = 4
    routed_scaling_factor: float = 2.5
    moe_intermediate_size: int | None = None
    first_k_dense_replace: int = 0
    tie_word_embeddings: bool = False
    block_size: int | None = None
    mask_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = 126081

    def __post_init__(self) -> None:
        if self.head_dim is None:  # the official class's reading of a missing or null head_dim
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_key_value_heads <= 0 or self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"LLaDA2 config: num_key_value_heads {self.num_key_value_heads} must be positive and "
                             f"divide num_attention_heads {self.num_attention_heads} (the official default 0 cannot "
                             "build attention: set the key).")
        if self.rotary_dim % 2:
            raise ValueError(f"LLaDA2 config: the rotary width {self.rotary_dim} must be even.")
        sparse = self.num_experts is not None and self.num_hidden_layers > self.first_k_dense_replace
        dense = self.num_experts is None or self.first_k_dense_replace > 0
        if sparse and (self.moe_intermediate_size is None or self.num_experts % self.n_group
                       or self.topk_group > self.n_group):
            raise ValueError(f"LLaDA2 config: sparse layers need moe_intermediate_size (got "
                             f"{self.moe_intermediate_size}) and num_experts {self.num_experts} divisible into "
                             f"n_group {self.n_group} >= topk_group {self.topk_group}.")
        if dense and self.intermediate_size is None:
            raise ValueError("LLaDA2 config: dense layers (num_experts null or first_k_dense_replace > 0) need "
                             "intermediate_size.")

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def is_sparse(self) -> bool:
        """Whether any layer is a mixture of experts (``num_experts`` not null)."""
        return self.num_experts is not None

    @classmethod
    def from_dict(cls, raw: dict) -> LLaDA2Config:
        """Builds a config from ``config.json`` as the official class reads it; rejects what is not implemented."""
        reject_unsupported(raw, "LLaDA2", {"hidden_act": "silu", "score_function": "sigmoid", "norm_head": False,
                                           "use_rmsnorm": True, "use_sliding_window": False})
        nullable = {"intermediate_size", "head_dim", "num_experts", "num_shared_experts", "moe_intermediate_size",
                    "block_size", "mask_token_id", "eos_token_id", "pad_token_id"}
        return cls(**official_values(cls, raw, nullable, "LLaDA2"))

    def to_dict(self) -> dict:
        """``config.json`` in the layout of the published LLaDA2 checkpoints."""
        out = {
            "architectures": ["LLaDA2MoeModelLM"], "attention_dropout": 0.0,
            "auto_map": {"AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig",
                         "AutoModel": "modeling_llada2_moe.LLaDA2MoeModel",
                         "AutoModelForCausalLM": "modeling_llada2_moe.LLaDA2MoeModelLM"},
            "embedding_dropout": 0.0, "hidden_act": "silu", "initializer_range": 0.02, "max_window_layers": 28,
            "model_type": "llada2_moe", "moe_router_enable_expert_bias": True, "norm_head": False,
            "norm_softmax": False, "norm_topk_prob": True, "output_dropout": 0.0, "output_router_logits": False,
            "rope_scaling": None, "rotary_dim": self.rotary_dim, "router_dtype": "fp32",
            "score_function": "sigmoid", "use_cache": False, "use_rmsnorm": True,
            "using_split_qkv_in_self_attention": False,
        }
        out.update({f.name: getattr(self, f.name) for f in fields(self)})
        if self.block_size is None:  # not an official field: written only when stated
            del out["block_size"]
        return dict(sorted(out.items()))


class LLaDA2Attention(nn.Module):
    """``attention``: fused ``query_key_value``, per-head q/k layers.RMSNorm, partial RoPE, grouped SDPA, ``dense``."""

    def __init__(self, cfg: LLaDA2Config, rotary: layers.RotaryEmbedding) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.rotary = rotary
        width = (self.heads + 2 * self.kv_heads) * self.head_dim
        self.query_key_value = nn.Linear(cfg.hidden_size, width, bias=cfg.use_qkv_bias)
        self.use_qk_norm = cfg.use_qk_norm
        if cfg.use_qk_norm:
            self.query_layernorm = layers.RMSNorm(self.head_dim, cfg.rms_norm_eps)
            self.key_layernorm = layers.RMSNorm(self.head_dim, cfg.rms_norm_eps)
        self.dense = nn.Linear(self.heads * self.head_dim, cfg.hidden_size, bias=cfg.use_bias)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                kv: layers.LayerKV | None) -> torch.Tensor:
        b, t, _ = h.shape
        qkv = self.query_key_value(h).view(b, t, self.heads + 2 * self.kv_heads, self.head_dim)
        q, k, v = (part.transpose(1, 2) for part in qkv.split([self.heads, self.kv_heads, self.kv_heads], dim=2))
        if self.use_qk_norm:
            q, k = self.query_layernorm(q), self.key_layernorm(k)
        q, k = self.rotary.rotate(q, cos, sin), self.rotary.rotate(k, cos, sin)
        return self.dense(layers.grouped_query_attention(q, k, v, mask, kv))


class LLaDA2Gate(nn.Module):
    """``mlp.gate``: the sigmoid, group-limited, bias-balanced router (see the module docstring)."""

    def __init__(self, cfg: LLaDA2Config) -> None:
        super().__init__()
        self.top_k, self.n_group, self.topk_group = cfg.num_experts_per_tok, cfg.n_group, cfg.topk_group
        self.scale = cfg.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(cfg.num_experts, cfg.hidden_size))
        self.register_buffer("expert_bias", torch.zeros(cfg.num_experts))  # in the checkpoint; never trained

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Expert ids [N, k] and float32 weights [N, k] for token states h [N, D]."""
        scores = torch.sigmoid(F.linear(h.float(), self.weight.float()))  # [N, E]
        routing = scores + self.expert_bias.float()  # the bias picks experts, it never weights them
        n = routing.shape[0]
        groups = routing.view(n, self.n_group, -1).topk(2, dim=-1).values.sum(-1)  # [N, G]
        keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(
            1, groups.topk(self.topk_group, dim=-1).indices, True)  # [N, G]
        keep = keep[:, :, None].expand(n, self.n_group, routing.shape[1] // self.n_group).reshape(n, -1)
        chosen = routing.masked_fill(~keep, float("-inf")).topk(self.top_k, dim=-1).indices  # [N, k]
        weights = scores.gather(1, chosen)  # [N, k]
        if self.top_k > 1:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        return chosen, weights * self.scale


class LLaDA2SparseMoeBlock(nn.Module):
    """``mlp`` of a sparse layer: routed experts plus shared experts; records the last expert load."""

    def __init__(self, cfg: LLaDA2Config) -> None:
        super().__init__()
        self.experts = nn.ModuleList(layers.SwiGLU(cfg.hidden_size, cfg.moe_intermediate_size)
                                     for _ in range(cfg.num_experts))
        self.gate = LLaDA2Gate(cfg)
        # As the official block: present unless null, so 0 gives a zero-width expert (zero-size saved weights).
        self.shared_experts = (layers.SwiGLU(cfg.hidden_size, cfg.moe_intermediate_size * cfg.num_shared_experts)
                               if cfg.num_shared_experts is not None else None)
        self.last_load: torch.Tensor | None = None  # tokens per expert in the last forward (detached)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        flat = h.reshape(-1, h.shape[-1])  # [N, D]
        chosen, weights = self.gate(flat)  # [N, k], [N, k]
        out = torch.zeros(flat.shape, dtype=torch.float32, device=flat.device)  # [N, D]
        for e, expert in enumerate(self.experts):
            rows, slot = (chosen == e).nonzero(as_tuple=True)  # tokens routed to e, and in which of k slots
            if rows.numel():
                out.index_add_(0, rows, expert(flat[rows]).float() * weights[rows, slot, None])
        self.last_load = torch.bincount(chosen.flatten(), minlength=len(self.experts)).detach()
        out = out.to(h.dtype).view_as(h)
        return out if self.shared_experts is None else out + self.shared_experts(h)


class LLaDA2DecoderLayer(layers.PreNormDecoderLayer):
    """One pre-norm layer, experts included: the FSDP wrap and activation-checkpointing unit."""

    def __init__(self, cfg: LLaDA2Config, index: int, rotary: layers.RotaryEmbedding) -> None:
        mlp = (LLaDA2SparseMoeBlock(cfg) if cfg.is_sparse and index >= cfg.first_k_dense_replace
               else layers.SwiGLU(cfg.hidden_size, cfg.intermediate_size))
        super().__init__(cfg.hidden_size, cfg.rms_norm_eps, LLaDA2Attention(cfg, rotary), mlp,
                         attention_name="attention")


class LLaDA2BaseModel(nn.Module):
    """``model``: embeddings, layers, final norm."""

    def __init__(self, cfg: LLaDA2Config, rotary: layers.RotaryEmbedding) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.layers = nn.ModuleList(LLaDA2DecoderLayer(cfg, i, rotary) for i in range(cfg.num_hidden_layers))
        self.norm = layers.RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LLaDA2MoeModelLM(BlockDiffusionNetwork):
    """The LLaDA2 network with the published names; ``lm_head`` maps any [..., hidden] states to logits."""

    block_class = LLaDA2DecoderLayer

    def __init__(self, cfg: LLaDA2Config) -> None:
        super().__init__(cfg.block_size, "LLaDA2")
        self.config = cfg
        self.rotary = layers.RotaryEmbedding(cfg.rotary_dim, cfg.rope_theta)  # partial; tables in the activation dtype
        self.model = LLaDA2BaseModel(cfg, self.rotary)
        self.lm_head = layers.lm_head(self.model.word_embeddings, cfg.vocab_size, cfg.tie_word_embeddings)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.word_embeddings(input_ids)

    def expert_load(self) -> torch.Tensor | None:
        """Tokens routed to each expert in the last forward, per sparse layer [layers, E] (None before any)."""
        loads = [m.mlp.last_load for m in self.model.layers if isinstance(m.mlp, LLaDA2SparseMoeBlock)]
        return None if not loads or any(x is None for x in loads) else torch.stack(loads)

    def reset_parameters(self, generator: torch.Generator, std: float = 0.02) -> None:
        """Random init from ``generator`` only: normal(std) matrices, zero biases, unit norms, zero expert bias."""
        layers.init_weights_(self, generator, std=std, num_layers=self.config.num_hidden_layers,
                      residual=r"(dense|down_proj)\.weight$", zero_bias=True)
        for name, buf in self.named_buffers():
            if name.endswith("expert_bias"):
                buf.zero_()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.lm_head(self.hidden_states(input_ids, attention_mask))
