"""Samplers: LLaDA's block-wise remasking, Dream's algorithms, parallel decoding, KV caches, early exit, and
block diffusion (SDAR, LLaDA2) with an exact KV cache."""

from espo.sampling.base import Sampler
from espo.sampling.block import BlockDiffusionSampler
from espo.sampling.cache import CACHE_MODES, CacheMode
from espo.sampling.dream import DreamSampler, dream_generate
from espo.sampling.engine import Stats
from espo.sampling.llada import LLaDASampler, generate

__all__ = ["CACHE_MODES", "BlockDiffusionSampler", "CacheMode", "DreamSampler", "LLaDASampler", "Sampler", "Stats",
           "dream_generate", "generate"]
