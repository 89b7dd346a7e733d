"""Objectives: the ``Objective`` base, likelihood estimators, advantages, KL, ESPO and masked SFT.

Every built-in objective is imported here so configs and the CLI can name it by class name alone
(``--model.objective ESPO``); third-party objectives use their full ``class_path``.
"""

from espo.objectives.advantages import group_advantages
from espo.objectives.base import Objective, Rollout
from espo.objectives.espo import ESPO, espo_loss
from espo.objectives.kl import kl_estimate
from espo.objectives.mc_elbo import elbo, elbo_from_masks, sample_masks
from espo.objectives.sft import MaskedSFT

__all__ = [
    "ESPO", "MaskedSFT", "Objective", "Rollout", "elbo", "elbo_from_masks", "espo_loss", "group_advantages",
    "kl_estimate", "sample_masks",
]
