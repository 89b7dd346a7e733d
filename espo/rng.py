"""Explicit random streams.

Every random draw in espo (rollout noise, ELBO masks, SFT masking) comes from a ``torch.Generator`` whose
seed is a 63-bit hash of (run seed, stream name, step, ...). Nothing here or elsewhere reseeds the global
RNG, so two streams never share noise and a resumed run can rebuild any stream from its keys.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*keys: int | str) -> int:
    """A 63-bit seed from any tuple of ints and strings (stable across processes and platforms)."""
    digest = hashlib.blake2b(repr(tuple(keys)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def make_generator(*keys: int | str, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded from ``keys`` (see :func:`derive_seed`)."""
    return torch.Generator(device=device).manual_seed(derive_seed(*keys))
