"""Samplers: LLaDA's block-wise remasking, Dream's algorithms, parallel decoding, prefix cache, early exit."""

from espo.sampling.base import Sampler
from espo.sampling.engine import Stats
from espo.sampling.llada import LLaDASampler, generate

__all__ = ["LLaDASampler", "Sampler", "Stats", "generate"]
