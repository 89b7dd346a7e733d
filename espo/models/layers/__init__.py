"""The layers every model family composes: norms, rotary embeddings, SwiGLU, grouped-query attention, the one
key/value cache protocol, the pre-norm decoder layer, the tied head and the initialisation.

Families (``llada``, ``dream``, ``sdar``, ``llada2``) import from here and never from each other; each keeps its
own module and parameter names (the published state-dict keys) and chooses the numerics flags of its official code.
"""

from espo.models.layers.attention import SelfAttention, grouped_query_attention, split_heads
from espo.models.layers.decoder import PreNormDecoderLayer
from espo.models.layers.init import init_weights_
from espo.models.layers.kv_cache import CachedNetwork, LayerKV
from espo.models.layers.mlp import SwiGLU, swiglu
from espo.models.layers.norm import RMSNorm
from espo.models.layers.rotary import RotaryEmbedding
from espo.models.layers.tied_head import TiedHead, lm_head

__all__ = [
    "CachedNetwork", "LayerKV", "PreNormDecoderLayer", "RMSNorm", "RotaryEmbedding", "SelfAttention", "SwiGLU",
    "TiedHead",
    "grouped_query_attention", "init_weights_", "lm_head", "split_heads", "swiglu",
]
