"""Samplers: LLaDA's block-wise remasking, Dream's algorithms, parallel decoding, KV caches, early exit."""

from espo.sampling.base import Sampler
from espo.sampling.cache import CACHE_MODES, CacheMode
from espo.sampling.dream import DreamSampler, dream_generate
from espo.sampling.engine import Stats
from espo.sampling.llada import LLaDASampler, generate

__all__ = ["CACHE_MODES", "CacheMode", "DreamSampler", "LLaDASampler", "Sampler", "Stats", "dream_generate",
           "generate"]
