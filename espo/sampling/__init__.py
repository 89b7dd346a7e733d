"""Samplers: LLaDA's block-wise masked-diffusion ``generate`` and config-level sampler classes."""

from espo.sampling.llada import LLaDASampler, Sampler, generate

__all__ = ["LLaDASampler", "Sampler", "generate"]
